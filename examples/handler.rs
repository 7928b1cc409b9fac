//! zring's example ZHTTP handler: what the README runs and the benchmarks measure.
//!
//! HTTP routes: `/` and `/hello` answer `hello`; `/echo` answers with the request it received
//! (method, uri, headers, body; bodies are taken under credits); `/stream` streams five
//! chunks 100 ms apart; `POST /broadcast` sends its body as a text message to every
//! WebSocket on `/ws/broadcast` and answers `sent to N`; anything else is 404.
//!
//! A broadcast message (from `POST /broadcast` or the `broadcast` command) has every `{ts}`
//! in it replaced by the handler's send time, CLOCK_REALTIME in nanoseconds (19 digits),
//! taken once before the first packet goes out: zring-load measures fan-out latency as its
//! receipt time minus this.
//!
//! WebSocket routes (any `ws://`/`wss://` request; the connection manager has already checked
//! the handshake and adds `Upgrade`, `Connection` and `Sec-WebSocket-Accept` itself):
//! * `/ws`: echo. Every text or binary message comes back whole with the same type (fragments
//!   are re-assembled, up to 64 MiB; more gets a close 1009); a ping gets a pong with the same
//!   body; a close gets a close with the same code (none if it had none).
//! * `/ws/broadcast`: echo as above, and a member of the broadcast set. The text message
//!   `broadcast <text>` sends `<text>` to every member (one list-form packet per 128 ids);
//!   `close <code> [reason]` makes the handler close the connection with that code.
//! * `/ws/headers`: echo, but the 101 also carries `Upgrade`, `Connection`,
//!   `Sec-WebSocket-Accept` and `Sec-WebSocket-Extensions` of the handler's own (which the
//!   connection manager must drop) and `X-Handler: example` (which it must pass on).
//! * `/ws/reject`: refused with `error`/`rejected`: 403, `X-Rejected: 1`, body `rejected by
//!   handler`. Any other WebSocket path is refused the same way with 404.
//!
//! On every WebSocket route the first subprotocol the client offers is accepted
//! (`Sec-WebSocket-Protocol` in the 101).
//!
//! Flow control, as Condure defines it: the 101 grants the connection manager 1 MiB of
//! credits for client messages, returned as messages are taken in (held back while more than
//! 1 MiB of echoes wait to go out); the handler's own sends stay within the credits of the
//! request plus the `credit` packets that come back, so a message larger than that goes out
//! in fragments (`more`) as credits arrive. Pongs spend credits too; a close does not. An
//! HTTP response larger than the request's credits goes out the same way: its head with a
//! `Content-Length` and what the credits allow, the rest as `credit` packets come back (the
//! connection manager fails a session whose handler sends past its credits).
//! (Empty messages cost no credits, so a client that floods empty messages without reading
//! can push more than `--messages-max` queued echoes at the connection manager.)
//!
//! Every session, HTTP or WebSocket, gets a keep-alive every 20 s (the connection manager
//! drops sessions silent for 60 s), sent in list form, 128 ids a packet, so a million
//! sessions cost ~400 packets a second rather than 50,000.
//!
//! With `--stats SECS` it prints one line every SECS seconds: sessions, broadcast members,
//! packets in (and the connection manager's keep-alive packets and the ids they carried)
//! and packets out, as running totals: `handler_stats secs=… sessions=… members=…
//! in_packets=… in_keepalive_packets=… in_keepalive_ids=… out_packets=…`.
//!
//! Sockets, as a Condure/zring handler connects them: PULL at `<base>-out` (first packets),
//! ROUTER with identity = our `from` at `<base>-out-stream` (later packets), PUB at
//! `<base>-in` (everything we send, prefixed with the instance's id). With `--req SPEC` it
//! also serves req mode through a ROUTER connected to zring's DEALER.
//!
//! Sessions expire as Condure's handlers expire them: one the connection manager has sent
//! nothing about (no packet, no keep-alive) for `--session-expiry SECS` (default 60, the
//! connection manager's own expiry; it sends a keep-alive for each session every 45 s) is
//! forgotten, so the sessions of a connection manager instance that died go away on their
//! own. `--stats` counts them (`expired=`) and gives the sessions per instance
//! (`instances=ID:N,...`).
//!
//! `--bind` binds the three sockets at the `--stream` spec instead of connecting them, for
//! connection managers started with `--zclient-connect`: many instances (each its own
//! `--id`) then share this one handler (scripts/cluster.sh, docs/scale-out.md).
//!
//! `--reconnect-ms MS` sets how soon its sockets retry a connection that failed or went
//! away (ZeroMQ's default is 100 ms); tests that restart zring often set it lower.
//!
//! Usage: zring-example-handler [--stream ipc://client] [--bind] [--req ipc://client-req]
//!        [--id NAME] [--stats SECS] [--reconnect-ms MS] [--session-expiry SECS]
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use zring::proto::tnetstring::{self, Value, Writer};

#[path = "members.rs"]
mod members;
use members::Members;

const STREAM_CHUNKS: u32 = 5;
const STREAM_INTERVAL: Duration = Duration::from_millis(100);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Body bytes granted at a time; bodies larger than BODY_MAX get a 413.
const BODY_CREDITS: u32 = 65_536;
const BODY_MAX: usize = 16 << 20;
const PUB_HWM: i32 = 100_000;
/// Credits for client messages granted with the 101.
const WS_CREDITS: u32 = 1 << 20;
/// Credits for client messages are held back while more echo bytes than this wait for the
/// connection manager's credits (unless a message is half in: it must be able to complete).
const WS_BACKLOG_MAX: usize = 1 << 20;
/// Largest message the echo re-assembles; a bigger one gets close 1009.
const WS_MESSAGE_MAX: usize = 64 << 20;
/// Ids per list-form broadcast packet (Condure's limit).
const BROADCAST_IDS_MAX: usize = 128;
/// A session the handler closed is forgotten this long after, if the close never completes.
const CLOSING_LINGER: Duration = Duration::from_secs(60);

struct Session {
    /// The zring instance (its `from`), which prefixes our PUB messages.
    to: Vec<u8>,
    seq: u32,
    /// The last packet from the connection manager about this session (keep-alives
    /// included): the session expires `--session-expiry` after it.
    seen: Instant,
    echo: Option<Vec<u8>>,
    /// `POST /broadcast`: the collected body is broadcast, not echoed.
    post_broadcast: bool,
    stream_next: Option<(u32, Instant)>,
    ws: Option<Ws>,
    /// HTTP: response body bytes we may still send (the request's credits plus `credit`
    /// packets; the connection manager fails a response that sends more).
    credits: u64,
    /// HTTP: a response larger than the credits and how much of it went, the rest sent as
    /// credits come back.
    body_left: Option<(Vec<u8>, usize)>,
}

/// A WebSocket session's state in the handler.
#[derive(Default)]
struct Ws {
    /// `/ws/broadcast`: member of the broadcast set, takes commands.
    member: bool,
    /// Body bytes we may still send (the request's credits plus `credit` packets).
    credits: u64,
    /// What waits to go out, in order.
    queue: VecDeque<Out>,
    /// Unsent body bytes in `queue`.
    queued: usize,
    /// The client message being re-assembled: (binary, bytes so far).
    msg: Option<(bool, Vec<u8>)>,
    /// Client bytes taken in whose credits have not been returned yet.
    owed: u64,
    /// A close is queued; later client data is dropped.
    close_queued: bool,
    /// The client closed first: forget the session once our close is out.
    peer_closed: bool,
    /// We sent a close (and wait for the client's) since then.
    closing: Option<Instant>,
}

enum Out {
    Msg {
        binary: bool,
        body: Vec<u8>,
        sent: usize,
    },
    Pong(Vec<u8>),
    Close(Option<i64>, Vec<u8>),
}

struct Handler {
    me: Vec<u8>,
    pub_sock: zmq::Socket,
    sessions: HashMap<Vec<u8>, Session>,
    /// Ids of the `/ws/broadcast` sessions.
    members: Members,
    /// Ids of the `/stream` sessions, so `tick` does not walk every session each turn.
    streams: HashSet<Vec<u8>>,
    out: Vec<u8>,
    stats: Stats,
    /// Sessions silent this long are forgotten (`--session-expiry`).
    expiry: Duration,
}

/// Running totals for `--stats`.
#[derive(Default)]
struct Stats {
    in_packets: u64,
    in_keepalive_packets: u64,
    in_keepalive_ids: u64,
    out_packets: u64,
    /// Sessions forgotten at expiry.
    expired: u64,
}

fn get<'a>(d: &tnetstring::Dict<'a>, key: &[u8]) -> Option<Value<'a>> {
    d.get(key)
}

fn bytes<'a>(v: Option<Value<'a>>) -> &'a [u8] {
    match v {
        Some(Value::Bytes(b)) => b,
        _ => b"",
    }
}

/// The value of the first request header called `name` (case-insensitive).
fn header<'a>(d: &tnetstring::Dict<'a>, name: &[u8]) -> Option<&'a [u8]> {
    let Some(Value::List(hs)) = get(d, b"headers") else {
        return None;
    };
    hs.iter().find_map(|h| {
        let mut it = h.as_list()?.iter();
        let (n, v) = (it.next()?.as_bytes()?, it.next()?.as_bytes()?);
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

fn write_headers(w: &mut Writer, hs: &[(&[u8], &[u8])]) {
    w.bytes(b"headers");
    w.begin_list();
    for (n, v) in hs {
        w.begin_list();
        w.bytes(n);
        w.bytes(v);
        w.end_list();
    }
    w.end_list();
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |i| i + 1);
    &b[s..e.max(s)]
}

impl Handler {
    /// Sends one packet for session `id`; `fields` writes the packet-specific keys.
    fn send(&mut self, id: &[u8], fields: impl FnOnce(&mut Writer)) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        self.out.clear();
        self.out.extend_from_slice(&s.to);
        self.out.extend_from_slice(b" T");
        let mut w = Writer::new(&mut self.out);
        w.begin_dict();
        w.bytes(b"from");
        w.bytes(&self.me);
        w.bytes(b"id");
        w.bytes(wire_id(id, &s.to));
        w.bytes(b"seq");
        w.int(s.seq as i64);
        fields(&mut w);
        w.end_dict();
        s.seq += 1;
        self.stats.out_packets += 1;
        let _ = self.pub_sock.send(&self.out[..], 0);
    }

    fn respond(
        &mut self,
        id: &[u8],
        code: i64,
        reason: &[u8],
        ctype: &[u8],
        body: &[u8],
        more: bool,
    ) {
        self.send(id, |w| {
            w.bytes(b"code");
            w.int(code);
            w.bytes(b"reason");
            w.bytes(reason);
            write_headers(w, &[(b"Content-Type", ctype)]);
            w.bytes(b"body");
            w.bytes(body);
            if more {
                w.bytes(b"more");
                w.bool(true);
            }
        });
    }

    fn credit(&mut self, id: &[u8], n: u64) {
        self.send(id, |w| {
            w.bytes(b"type");
            w.bytes(b"credit");
            w.bytes(b"credits");
            w.int(n as i64);
        });
    }

    fn remove(&mut self, id: &[u8]) {
        self.sessions.remove(id);
        self.members.remove(id);
        self.streams.remove(id);
    }

    fn first_packet(&mut self, d: &tnetstring::Dict, now: Instant) {
        let to = bytes(get(d, b"from")).to_vec();
        let id = session_key(&to, bytes(get(d, b"id")));
        let uri = bytes(get(d, b"uri"));
        let path = path_of(uri);
        let more = matches!(get(d, b"more"), Some(Value::Bool(true)));
        let credits = get(d, b"credits").and_then(|v| v.as_int()).unwrap_or(0);
        self.sessions.insert(
            id.clone(),
            Session {
                to,
                seq: 0,
                seen: now,
                echo: None,
                post_broadcast: false,
                stream_next: None,
                ws: None,
                credits: credits.max(0) as u64,
                body_left: None,
            },
        );
        if uri.starts_with(b"ws://") || uri.starts_with(b"wss://") {
            return self.ws_open(&id, d, path);
        }
        match path {
            b"/" | b"/hello" => self.finish(&id, 200, b"OK", b"hello\n"),
            b"/echo" | b"/broadcast" => {
                let echo = if path == b"/echo" {
                    describe_request(d)
                } else {
                    Vec::new()
                };
                let s = self.sessions.get_mut(&id).unwrap();
                s.post_broadcast = path == b"/broadcast";
                if more {
                    s.echo = Some(echo);
                    self.credit(&id, BODY_CREDITS as u64);
                } else {
                    self.body_done(&id, echo);
                }
            }
            b"/stream" => {
                self.respond(&id, 200, b"OK", b"text/plain", b"", true);
                self.sessions.get_mut(&id).unwrap().stream_next = Some((0, now));
                self.streams.insert(id.clone());
            }
            _ => self.finish(&id, 404, b"Not Found", b"not found\n"),
        }
    }

    /// A request body is complete: echo it, or broadcast it for `POST /broadcast`.
    fn body_done(&mut self, id: &[u8], body: Vec<u8>) {
        if self.sessions.get(id).is_some_and(|s| s.post_broadcast) {
            let n = self.broadcast(&body);
            self.finish(id, 200, b"OK", format!("sent to {n}\n").as_bytes());
        } else {
            self.finish(id, 200, b"OK", &body);
        }
    }

    /// A whole response: at once if the credits allow, else the head with what they allow
    /// and a `Content-Length` (so the connection manager frames it as one sized body), the
    /// rest as `credit` packets come back (`more_credits`).
    fn finish(&mut self, id: &[u8], code: i64, reason: &[u8], body: &[u8]) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if body.len() as u64 <= s.credits {
            self.respond(id, code, reason, b"text/plain", body, false);
            return self.remove(id);
        }
        let n = s.credits as usize;
        s.credits = 0;
        s.body_left = Some((body.to_vec(), n));
        let length = body.len().to_string();
        self.send(id, |w| {
            w.bytes(b"code");
            w.int(code);
            w.bytes(b"reason");
            w.bytes(reason);
            write_headers(
                w,
                &[
                    (b"Content-Type", b"text/plain"),
                    (b"Content-Length", length.as_bytes()),
                ],
            );
            w.bytes(b"body");
            w.bytes(&body[..n]);
            w.bytes(b"more");
            w.bool(true);
        });
    }

    /// Credits for an HTTP session: the next piece of a response larger than its credits.
    fn more_credits(&mut self, id: &[u8], n: u64) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.credits += n;
        let Some((body, sent)) = s.body_left.take() else {
            return;
        };
        let n = ((body.len() - sent) as u64).min(s.credits) as usize;
        if n == 0 {
            s.body_left = Some((body, sent));
            return;
        }
        s.credits -= n as u64;
        let last = sent + n == body.len();
        let piece = body[sent..sent + n].to_vec();
        if !last {
            s.body_left = Some((body, sent + n));
        }
        self.send(id, |w| {
            w.bytes(b"body");
            w.bytes(&piece);
            if !last {
                w.bytes(b"more");
                w.bool(true);
            }
        });
        if last {
            self.remove(id);
        }
    }

    /// A WebSocket request: accept it with a 101 (and credits) or refuse it.
    fn ws_open(&mut self, id: &[u8], d: &tnetstring::Dict, path: &[u8]) {
        let refuse = match path {
            b"/ws" | b"/ws/broadcast" | b"/ws/headers" => None,
            b"/ws/reject" => Some((403, &b"Forbidden"[..], &b"rejected by handler\n"[..])),
            _ => Some((404, &b"Not Found"[..], &b"no such WebSocket endpoint\n"[..])),
        };
        if let Some((code, reason, body)) = refuse {
            self.send(id, |w| {
                w.bytes(b"type");
                w.bytes(b"error");
                w.bytes(b"condition");
                w.bytes(b"rejected");
                w.bytes(b"code");
                w.int(code);
                w.bytes(b"reason");
                w.bytes(reason);
                write_headers(
                    w,
                    &[(b"Content-Type", b"text/plain"), (b"X-Rejected", b"1")],
                );
                w.bytes(b"body");
                w.bytes(body);
            });
            return self.remove(id);
        }
        let mut hs: Vec<(&[u8], &[u8])> = Vec::new();
        if let Some(offer) = header(d, b"Sec-WebSocket-Protocol") {
            let first = trim(offer.split(|&c| c == b',').next().unwrap_or(b""));
            if !first.is_empty() {
                hs.push((b"Sec-WebSocket-Protocol", first));
            }
        }
        if path == b"/ws/headers" {
            hs.extend_from_slice(&[
                (&b"Upgrade"[..], &b"websocket"[..]),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Accept", b"bm90IHRoZSByaWdodCBrZXk="),
                (b"Sec-WebSocket-Extensions", b"x-example"),
                (b"X-Handler", b"example"),
            ]);
        }
        let credits = get(d, b"credits").and_then(|v| v.as_int()).unwrap_or(0);
        self.send(id, |w| {
            w.bytes(b"code");
            w.int(101);
            w.bytes(b"reason");
            w.bytes(b"Switching Protocols");
            write_headers(w, &hs);
            w.bytes(b"credits");
            w.int(WS_CREDITS as i64);
        });
        let member = path == b"/ws/broadcast";
        if member {
            self.members.insert(id.to_vec());
        }
        self.sessions.get_mut(id).unwrap().ws = Some(Ws {
            member,
            credits: credits.max(0) as u64,
            ..Ws::default()
        });
    }

    fn later_packet(&mut self, d: &tnetstring::Dict) {
        let Some(Value::Bytes(id)) = get(d, b"id") else {
            return;
        }; // list form: keep-alives
        let id = session_key(bytes(get(d, b"from")), id);
        let typ = bytes(get(d, b"type"));
        if matches!(typ, b"cancel" | b"error") {
            return self.remove(&id);
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(ws) = s.ws.as_mut() {
            ws.credits += get(d, b"credits")
                .and_then(|v| v.as_int())
                .unwrap_or(0)
                .max(0) as u64;
            return self.ws_packet(&id, typ, d);
        }
        if typ == b"credit" {
            let n = get(d, b"credits").and_then(|v| v.as_int()).unwrap_or(0);
            return self.more_credits(&id, n.max(0) as u64);
        }
        if typ != b"" {
            return; // keep-alive, handoff: nothing to do here
        }
        let body = bytes(get(d, b"body"));
        let more = matches!(get(d, b"more"), Some(Value::Bool(true)));
        let Some(echo) = s.echo.as_mut() else { return };
        if echo.len() + body.len() > BODY_MAX {
            return self.finish(&id, 413, b"Payload Too Large", b"body too large\n");
        }
        echo.extend_from_slice(body);
        if !more {
            let echo = s.echo.take().unwrap();
            self.body_done(&id, echo);
        } else if !body.is_empty() {
            self.credit(&id, body.len() as u64);
        }
    }

    fn ws(&mut self, id: &[u8]) -> Option<&mut Ws> {
        self.sessions.get_mut(id)?.ws.as_mut()
    }

    /// A packet for a WebSocket session (its credits are already counted).
    fn ws_packet(&mut self, id: &[u8], typ: &[u8], d: &tnetstring::Dict) {
        let ws = self.ws(id).unwrap();
        match typ {
            b"" => {
                let body = bytes(get(d, b"body"));
                let more = matches!(get(d, b"more"), Some(Value::Bool(true)));
                let binary = bytes(get(d, b"content-type")) == b"binary";
                ws.owed += body.len() as u64;
                if ws.close_queued || ws.closing.is_some() {
                    ws.msg = None;
                } else {
                    let (_, m) = ws.msg.get_or_insert_with(|| (binary, Vec::new()));
                    if m.len() + body.len() > WS_MESSAGE_MAX {
                        ws.msg = None;
                        ws.close_queued = true;
                        ws.queue
                            .push_back(Out::Close(Some(1009), b"message too big".to_vec()));
                    } else {
                        m.extend_from_slice(body);
                        if !more {
                            let (binary, m) = ws.msg.take().unwrap();
                            self.ws_message(id, binary, m);
                        }
                    }
                }
            }
            b"ping" => {
                let body = bytes(get(d, b"body")).to_vec();
                if !ws.close_queued && ws.closing.is_none() {
                    ws.queued += body.len();
                    ws.queue.push_back(Out::Pong(body));
                }
            }
            b"close" => {
                if ws.closing.is_some() {
                    // The client answered our close: done.
                    return self.remove(id);
                }
                ws.peer_closed = true;
                if !ws.close_queued {
                    ws.close_queued = true;
                    let code = get(d, b"code").and_then(|v| v.as_int());
                    ws.queue.push_back(Out::Close(code, Vec::new()));
                }
            }
            _ => {} // credit, pong, keep-alive
        }
        self.ws_flush(id);
    }

    /// A whole client message: a command (on `/ws/broadcast`) or an echo.
    fn ws_message(&mut self, id: &[u8], binary: bool, m: Vec<u8>) {
        let ws = self.ws(id).unwrap();
        if ws.member && !binary {
            if let Some(text) = m.strip_prefix(b"broadcast ") {
                self.broadcast(text);
                return;
            }
            if let Some(args) = m.strip_prefix(b"close ") {
                let (code, reason) = match args.iter().position(|&c| c == b' ') {
                    Some(i) => (&args[..i], &args[i + 1..]),
                    None => (args, &b""[..]),
                };
                let code = std::str::from_utf8(code).ok().and_then(|c| c.parse().ok());
                ws.close_queued = true;
                ws.queue.push_back(Out::Close(code, reason.to_vec()));
                return;
            }
        }
        ws.queued += m.len();
        ws.queue.push_back(Out::Msg {
            binary,
            body: m,
            sent: 0,
        });
    }

    /// Sends what the credits allow from the session's queue, then returns credits for
    /// what was taken in unless too much waits to go out.
    fn ws_flush(&mut self, id: &[u8]) {
        loop {
            let Some(ws) = self.ws(id) else { return };
            let Some(item) = ws.queue.pop_front() else {
                break;
            };
            match item {
                Out::Msg { binary, body, sent } => {
                    let left = body.len() - sent;
                    let n = (left as u64).min(ws.credits) as usize;
                    if left > 0 && n == 0 {
                        ws.queue.push_front(Out::Msg { binary, body, sent });
                        break;
                    }
                    ws.credits -= n as u64;
                    ws.queued -= n;
                    let last = sent + n == body.len();
                    self.send(id, |w| {
                        w.bytes(b"content-type");
                        w.bytes(if binary { b"binary" } else { b"text" });
                        w.bytes(b"body");
                        w.bytes(&body[sent..sent + n]);
                        if !last {
                            w.bytes(b"more");
                            w.bool(true);
                        }
                    });
                    if !last {
                        let sent = sent + n;
                        let ws = self.ws(id).unwrap();
                        ws.queue.push_front(Out::Msg { binary, body, sent });
                    }
                }
                Out::Pong(body) => {
                    if ws.credits < body.len() as u64 {
                        ws.queue.push_front(Out::Pong(body));
                        break;
                    }
                    ws.credits -= body.len() as u64;
                    ws.queued -= body.len();
                    self.send(id, |w| {
                        w.bytes(b"type");
                        w.bytes(b"pong");
                        w.bytes(b"body");
                        w.bytes(&body);
                    });
                }
                Out::Close(code, reason) => {
                    let peer_closed = ws.peer_closed;
                    ws.queue.clear();
                    ws.queued = 0;
                    ws.closing = Some(Instant::now());
                    self.members.remove(id);
                    self.send(id, |w| {
                        w.bytes(b"type");
                        w.bytes(b"close");
                        if let Some(c) = code {
                            w.bytes(b"code");
                            w.int(c);
                        }
                        if !reason.is_empty() {
                            w.bytes(b"body");
                            w.bytes(&reason);
                        }
                    });
                    if peer_closed {
                        return self.remove(id);
                    }
                    break;
                }
            }
        }
        let Some(ws) = self.ws(id) else { return };
        if ws.owed > 0 && (ws.msg.is_some() || ws.queued <= WS_BACKLOG_MAX) {
            let n = std::mem::take(&mut ws.owed);
            self.credit(id, n);
        }
    }

    /// Sends `text` to every `/ws/broadcast` session: one list-form packet per 128 ids (per
    /// connection manager) to those with the credits for it and nothing queued, the rest
    /// through their queues. Returns how many sessions it went to.
    fn broadcast(&mut self, text: &[u8]) -> usize {
        let stamped = stamp(text);
        let text = &stamped[..];
        let Handler {
            me,
            pub_sock,
            sessions,
            members,
            out,
            stats,
            ..
        } = self;
        // Ids for each connection manager, sent as soon as 128 are collected: the first
        // packet leaves at once instead of after a pass over every member.
        let mut batches: Vec<Batch> = Vec::new();
        let mut queued = Vec::new();
        let mut count = 0;
        for id in members.iter() {
            let Some(s) = sessions.get_mut(id) else {
                continue;
            };
            let Some(ws) = s.ws.as_mut() else { continue };
            if ws.close_queued || ws.closing.is_some() {
                continue;
            }
            count += 1;
            if !(ws.queue.is_empty() && ws.credits >= text.len() as u64) {
                ws.queued += text.len();
                ws.queue.push_back(Out::Msg {
                    binary: false,
                    body: text.to_vec(),
                    sent: 0,
                });
                queued.push(id.clone());
                continue;
            }
            ws.credits -= text.len() as u64;
            let seq = s.seq;
            s.seq += 1;
            let i = match batches.iter().position(|(to, _)| *to == s.to) {
                Some(i) => i,
                None => {
                    batches.push((s.to.clone(), Vec::with_capacity(BROADCAST_IDS_MAX)));
                    batches.len() - 1
                }
            };
            let (to, ids) = &mut batches[i];
            ids.push((wire_id(id, &s.to), seq));
            if ids.len() == BROADCAST_IDS_MAX {
                send_list(out, me, pub_sock, to, ids, text);
                stats.out_packets += 1;
                ids.clear();
            }
        }
        for (to, ids) in batches.iter().filter(|(_, ids)| !ids.is_empty()) {
            send_list(out, me, pub_sock, to, ids, text);
            stats.out_packets += 1;
        }
        for id in queued {
            self.ws_flush(&id);
        }
        count
    }

    /// Emits due stream chunks; returns the next time something is due.
    fn tick(&mut self, now: Instant) -> Option<Instant> {
        if self.streams.is_empty() {
            return None;
        }
        let due: Vec<(Vec<u8>, u32)> = self
            .streams
            .iter()
            .filter_map(|id| {
                let s = self.sessions.get(id)?;
                s.stream_next
                    .filter(|(_, t)| *t <= now)
                    .map(|(n, _)| (id.clone(), n))
            })
            .collect();
        for (id, n) in due {
            let chunk = format!("chunk {n}\n");
            let last = n + 1 == STREAM_CHUNKS;
            self.send(&id, |w| {
                w.bytes(b"body");
                w.bytes(chunk.as_bytes());
                if !last {
                    w.bytes(b"more");
                    w.bool(true);
                }
            });
            if last {
                self.remove(&id);
            } else if let Some(s) = self.sessions.get_mut(&id) {
                s.stream_next = Some((n + 1, now + STREAM_INTERVAL));
            }
        }
        let sessions = &self.sessions;
        self.streams
            .retain(|id| sessions.get(id).is_some_and(|s| s.stream_next.is_some()));
        self.streams
            .iter()
            .filter_map(|id| sessions.get(id)?.stream_next.map(|(_, t)| t))
            .min()
    }

    /// A keep-alive for every session, except WebSockets we closed (those are forgotten
    /// once their close has waited CLOSING_LINGER): list-form packets of up to 128 ids per
    /// connection manager instance.
    fn keep_alives(&mut self, now: Instant) {
        let mut by_to: HashMap<Vec<u8>, Vec<(Vec<u8>, u32)>> = HashMap::new();
        let mut stale = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            match s.ws.as_ref().and_then(|ws| ws.closing) {
                Some(t) if now.duration_since(t) >= CLOSING_LINGER => stale.push(id.clone()),
                Some(_) => {}
                None => {
                    by_to
                        .entry(s.to.clone())
                        .or_default()
                        .push((id.clone(), s.seq));
                    s.seq += 1;
                }
            }
        }
        for id in stale {
            self.remove(&id);
        }
        for (to, ids) in by_to {
            for chunk in ids.chunks(BROADCAST_IDS_MAX) {
                self.out.clear();
                self.out.extend_from_slice(&to);
                self.out.extend_from_slice(b" T");
                let mut w = Writer::new(&mut self.out);
                w.begin_dict();
                w.bytes(b"from");
                w.bytes(&self.me);
                w.bytes(b"id");
                write_ids(
                    &mut w,
                    chunk.iter().map(|(key, seq)| (wire_id(key, &to), *seq)),
                );
                w.bytes(b"type");
                w.bytes(b"keep-alive");
                w.end_dict();
                self.stats.out_packets += 1;
                let _ = self.pub_sock.send(&self.out[..], 0);
            }
        }
    }

    /// Marks the sessions a later packet names (one id, or a list-form keep-alive's ids) as
    /// seen now.
    fn refresh(&mut self, d: &tnetstring::Dict, now: Instant) {
        let from = bytes(get(d, b"from"));
        match get(d, b"id") {
            Some(Value::Bytes(id)) => {
                if let Some(s) = self.sessions.get_mut(&session_key(from, id)) {
                    s.seen = now;
                }
            }
            Some(Value::List(l)) => {
                let mut key = Vec::new();
                for v in l.iter() {
                    let Value::Dict(e) = v else { continue };
                    key.clear();
                    key.extend_from_slice(from);
                    key.push(b' ');
                    key.extend_from_slice(bytes(get(&e, b"id")));
                    if let Some(s) = self.sessions.get_mut(&key) {
                        s.seen = now;
                    }
                }
            }
            _ => {}
        }
    }

    /// Forgets the sessions the connection manager has said nothing about for `expiry`
    /// (its instance died, or lost them): Condure's handler-side session expiry.
    fn expire(&mut self, now: Instant) {
        let expiry = self.expiry;
        let stale: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.seen) >= expiry)
            .map(|(id, _)| id.clone())
            .collect();
        self.stats.expired += stale.len() as u64;
        for id in stale {
            self.remove(&id);
        }
    }

    /// Counts a packet from the connection manager for `--stats`.
    fn count_in(&mut self, d: &tnetstring::Dict) {
        self.stats.in_packets += 1;
        if bytes(get(d, b"type")) == b"keep-alive" {
            self.stats.in_keepalive_packets += 1;
            self.stats.in_keepalive_ids += match get(d, b"id") {
                Some(Value::List(l)) => l.iter().count() as u64,
                _ => 1,
            };
        }
    }

    /// Sessions per connection manager instance, `ID:N,...` sorted by id (`none` if no
    /// session): the handler's view of which instances it serves.
    fn instances(&self) -> String {
        let mut by_to: std::collections::BTreeMap<&[u8], u64> = Default::default();
        for s in self.sessions.values() {
            *by_to.entry(&s.to[..]).or_default() += 1;
        }
        let parts: Vec<String> = by_to
            .iter()
            .map(|(to, n)| format!("{}:{n}", String::from_utf8_lossy(to)))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(",")
        }
    }

    fn print_stats(&self, secs: f64) {
        use std::io::Write;
        let s = &self.stats;
        println!(
            "handler_stats secs={secs:.1} sessions={} members={} in_packets={} \
             in_keepalive_packets={} in_keepalive_ids={} out_packets={} expired={} instances={}",
            self.sessions.len(),
            self.members.len(),
            s.in_packets,
            s.in_keepalive_packets,
            s.in_keepalive_ids,
            s.out_packets,
            s.expired,
            self.instances()
        );
        let _ = std::io::stdout().flush();
    }
}

/// The handler's key for a session: its connection manager's address (`from`), a space,
/// and its id. Ids are unique only per instance (zring's and Condure's are `W-S-N`), so many
/// instances sharing this handler (docs/scale-out.md) need the pair, as ZHTTP defines it.
fn session_key(from: &[u8], id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(from.len() + 1 + id.len());
    key.extend_from_slice(from);
    key.push(b' ');
    key.extend_from_slice(id);
    key
}

/// The id on the wire of the session with `key`, whose connection manager is `to`.
fn wire_id<'a>(key: &'a [u8], to: &[u8]) -> &'a [u8] {
    debug_assert!(key.starts_with(to) && key.get(to.len()) == Some(&b' '));
    &key[to.len() + 1..]
}

/// `text` with every `{ts}` replaced by the current CLOCK_REALTIME in nanoseconds.
/// A connection manager's address (`to`) and the ids (with their seq) collected for it.
/// The list form of `id`: one `{id, seq}` dict per target.
fn write_ids<'a>(w: &mut Writer, ids: impl ExactSizeIterator<Item = (&'a [u8], u32)>) {
    w.begin_list_sized(ids.len() * 40);
    for (id, seq) in ids {
        w.begin_dict();
        w.bytes(b"id");
        w.bytes(id);
        w.bytes(b"seq");
        w.int(i64::from(seq));
        w.end_dict();
    }
    w.end_list();
}

type Batch<'a> = (Vec<u8>, Vec<(&'a [u8], u32)>);

/// One list-form text message to `ids` (at most `BROADCAST_IDS_MAX`) of connection manager
/// `to`.
fn send_list(
    out: &mut Vec<u8>,
    me: &[u8],
    pub_sock: &zmq::Socket,
    to: &[u8],
    ids: &[(&[u8], u32)],
    text: &[u8],
) {
    out.clear();
    out.extend_from_slice(to);
    out.extend_from_slice(b" T");
    let mut w = Writer::new(out);
    w.begin_dict_sized(text.len() + ids.len() * 40 + 64);
    w.bytes(b"from");
    w.bytes(me);
    w.bytes(b"id");
    write_ids(&mut w, ids.iter().copied());
    w.bytes(b"content-type");
    w.bytes(b"text");
    w.bytes(b"body");
    w.bytes(text);
    w.end_dict();
    let _ = pub_sock.send(&out[..], 0);
}

fn stamp(text: &[u8]) -> Vec<u8> {
    const MARK: &[u8] = b"{ts}";
    if !text.windows(MARK.len()).any(|w| w == MARK) {
        return text.to_vec();
    }
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let ns = ns.to_string();
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(MARK) {
            out.extend_from_slice(ns.as_bytes());
            i += MARK.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

fn path_of(uri: &[u8]) -> &[u8] {
    let after_scheme = uri
        .windows(3)
        .position(|w| w == b"://")
        .map(|i| &uri[i + 3..])
        .unwrap_or(uri);
    let path = after_scheme
        .iter()
        .position(|&b| b == b'/')
        .map(|i| &after_scheme[i..])
        .unwrap_or(b"/");
    let end = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
    &path[..end]
}

fn describe_request(d: &tnetstring::Dict) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(bytes(get(d, b"method")));
    s.push(b' ');
    s.extend_from_slice(bytes(get(d, b"uri")));
    s.push(b'\n');
    if let Some(Value::List(hs)) = get(d, b"headers") {
        for h in hs.iter() {
            if let Value::List(pair) = h {
                let mut it = pair.iter();
                if let (Some(Value::Bytes(n)), Some(Value::Bytes(v))) = (it.next(), it.next()) {
                    s.extend_from_slice(n);
                    s.extend_from_slice(b": ");
                    s.extend_from_slice(v);
                    s.push(b'\n');
                }
            }
        }
    }
    s.push(b'\n');
    s.extend_from_slice(bytes(get(d, b"body")));
    s
}

/// req mode: one request, one response, on a ROUTER connected to zring's DEALER.
fn serve_req(sock: &zmq::Socket, out: &mut Vec<u8>) {
    while let Ok(parts) = sock.recv_multipart(zmq::DONTWAIT) {
        let [peer, empty, msg] = &parts[..] else {
            continue;
        };
        let Some(payload) = msg.strip_prefix(b"T") else {
            continue;
        };
        let Ok((Value::Dict(d), _)) = tnetstring::parse(payload) else {
            continue;
        };
        let id = bytes(get(&d, b"id"));
        let (code, reason, body): (i64, &[u8], Vec<u8>) = match path_of(bytes(get(&d, b"uri"))) {
            b"/" | b"/hello" => (200, b"OK", b"hello\n".to_vec()),
            b"/echo" => (200, b"OK", describe_request(&d)),
            _ => (404, b"Not Found", b"not found\n".to_vec()),
        };
        out.clear();
        out.push(b'T');
        let mut w = Writer::new(out);
        w.begin_dict();
        w.bytes(b"id");
        w.bytes(id);
        w.bytes(b"code");
        w.int(code);
        w.bytes(b"reason");
        w.bytes(reason);
        w.bytes(b"headers");
        w.begin_list();
        w.begin_list();
        w.bytes(b"Content-Type");
        w.bytes(b"text/plain");
        w.end_list();
        w.end_list();
        w.bytes(b"body");
        w.bytes(&body);
        w.end_dict();
        let _ = sock.send_multipart([&peer[..], &empty[..], &out[..]], 0);
    }
}

fn main() {
    let mut stream = "ipc://client".to_string();
    let mut req: Option<String> = None;
    let mut me = "zring-example-handler".to_string();
    let mut stats_every: Option<Duration> = None;
    let mut reconnect_ms: Option<i32> = None;
    let mut bind = false;
    let mut expiry = Duration::from_millis(zring::limits::SESSION_EXPIRY_MS);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--stream" => stream = val(),
            "--bind" => bind = true,
            "--session-expiry" => {
                expiry = Duration::from_secs_f64(
                    val()
                        .parse()
                        .unwrap_or_else(|_| usage("bad --session-expiry")),
                )
            }
            "--req" => req = Some(val()),
            "--id" => me = val(),
            "--stats" => {
                stats_every = Some(Duration::from_secs_f64(
                    val().parse().unwrap_or_else(|_| usage("bad --stats")),
                ))
            }
            "--reconnect-ms" => {
                reconnect_ms = Some(
                    val()
                        .parse()
                        .unwrap_or_else(|_| usage("bad --reconnect-ms")),
                )
            }
            "-h" | "--help" => usage(""),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let (push_ep, router_ep, sub_ep) =
        zring::config::stream_endpoints(&stream).unwrap_or_else(|e| usage(&e));
    let ctx = zmq::Context::new();
    let socket = |kind: zmq::SocketType| {
        let s = ctx.socket(kind).unwrap();
        if let Some(ms) = reconnect_ms {
            s.set_reconnect_ivl(ms).unwrap();
        }
        s
    };
    // Connect to one connection manager's bound sockets, or (`--bind`) bind for many that
    // connect (`--zclient-connect`).
    let attach = |s: &zmq::Socket, ep: &str| {
        if bind { s.bind(ep) } else { s.connect(ep) }
            .unwrap_or_else(|e| usage(&format!("{ep}: {e}")))
    };
    let pull = socket(zmq::PULL);
    attach(&pull, &push_ep);
    let router = socket(zmq::ROUTER);
    router.set_identity(me.as_bytes()).unwrap();
    attach(&router, &router_ep);
    // XPUB, not PUB: it tells us when zring's SUB has subscribed. A reply published before
    // that is dropped (ZeroMQ's slow joiner), and zring's PUSH can hand us requests well
    // before our PUB connection and its subscription are up (a busy box, or a new zring
    // after a takeover), so requests are taken only while a subscription is known.
    let pub_sock = socket(zmq::XPUB);
    // A PUB socket drops what its subscriber can't take yet; room for a burst of
    // responses (thousands of clients answered at once) keeps them from being lost.
    pub_sock.set_sndhwm(PUB_HWM).unwrap();
    attach(&pub_sock, &sub_ep);
    let req_sock = req.map(|spec| {
        let s = socket(zmq::ROUTER);
        s.connect(&spec).unwrap();
        s
    });
    // Let the subscription and the ROUTER identity reach zring before we take requests.
    std::thread::sleep(Duration::from_millis(200));
    println!("example handler {me}: {push_ep} {router_ep} {sub_ep}");
    let mut h = Handler {
        me: me.into_bytes(),
        pub_sock,
        sessions: HashMap::new(),
        streams: HashSet::new(),
        members: Members::default(),
        out: Vec::new(),
        stats: Stats::default(),
        expiry,
    };
    // Expired sessions are looked for 12 times per expiry period (every 5 s at 60 s).
    let expiry_check = expiry / 12;
    let mut next_expiry_check = Instant::now() + expiry_check;
    let started = Instant::now();
    let mut next_stats = stats_every.map(|e| started + e);
    let mut req_out = Vec::new();
    let mut next_keep_alive = Instant::now() + KEEP_ALIVE_INTERVAL;
    let mut next_tick: Option<Instant> = None;
    let (mut subscriptions, mut subscribed) = (0u32, false);
    loop {
        let now = Instant::now();
        let mut wake = next_tick.map_or(next_keep_alive, |t| t.min(next_keep_alive));
        wake = wake.min(next_expiry_check);
        if let Some(t) = next_stats {
            wake = wake.min(t);
        }
        let timeout = wake.saturating_duration_since(now).as_millis() as i64 + 1;
        // Requests wait in the PULL queue until zring has subscribed (see `pub_sock`).
        let pull_events = match subscribed {
            true => zmq::POLLIN,
            false => zmq::PollEvents::empty(),
        };
        let mut items = vec![
            pull.as_poll_item(pull_events),
            router.as_poll_item(zmq::POLLIN),
            h.pub_sock.as_poll_item(zmq::POLLIN),
        ];
        if let Some(s) = &req_sock {
            items.push(s.as_poll_item(zmq::POLLIN));
        }
        zmq::poll(&mut items, timeout).unwrap();
        let now = Instant::now();
        // (Un)subscriptions: 1 or 0, then the topic. Without XPUB_VERBOSE a 0 comes only
        // when the last subscriber of a topic has gone (its zring exited).
        while let Ok(msg) = h.pub_sock.recv_bytes(zmq::DONTWAIT) {
            match msg.first() {
                Some(1) => subscriptions += 1,
                Some(0) => subscriptions = subscriptions.saturating_sub(1),
                _ => {}
            }
            subscribed = subscriptions > 0;
        }
        while let Some(Ok(msg)) = subscribed.then(|| pull.recv_bytes(zmq::DONTWAIT)) {
            if let Some(Ok((Value::Dict(d), _))) = msg.strip_prefix(b"T").map(tnetstring::parse) {
                h.stats.in_packets += 1;
                h.first_packet(&d, now);
            }
        }
        while let Ok(parts) = router.recv_multipart(zmq::DONTWAIT) {
            let Some(msg) = parts.last() else { continue };
            if let Some(Ok((Value::Dict(d), _))) = msg.strip_prefix(b"T").map(tnetstring::parse) {
                h.count_in(&d);
                h.refresh(&d, now);
                h.later_packet(&d);
            }
        }
        if let Some(s) = &req_sock {
            serve_req(s, &mut req_out);
        }
        next_tick = h.tick(now);
        if now >= next_expiry_check {
            h.expire(now);
            next_expiry_check = now + expiry_check;
        }
        if now >= next_keep_alive {
            h.keep_alives(now);
            next_keep_alive = now + KEEP_ALIVE_INTERVAL;
        }
        if let (Some(t), Some(every)) = (next_stats, stats_every) {
            if now >= t {
                h.print_stats(now.duration_since(started).as_secs_f64());
                next_stats = Some(t + every);
            }
        }
    }
}

fn usage(err: &str) -> ! {
    if !err.is_empty() {
        eprintln!("zring-example-handler: {err}");
    }
    eprintln!(
        "usage: zring-example-handler [--stream ipc://client] [--bind] [--req SPEC] [--id NAME] \
         [--stats SECS] [--reconnect-ms MS] [--session-expiry SECS]"
    );
    std::process::exit(2);
}
