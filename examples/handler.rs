//! zring's example ZHTTP handler: what the README runs and the benchmarks measure.
//!
//! Routes: `/` and `/hello` answer `hello`; `/echo` answers with the request it received
//! (method, uri, headers, body; bodies are taken under credits); `/stream` streams five
//! chunks 100 ms apart; anything else is 404.
//!
//! Sockets, as a Condure/zring handler connects them: PULL at `<base>-out` (first packets),
//! ROUTER with identity = our `from` at `<base>-out-stream` (later packets), PUB at
//! `<base>-in` (everything we send, prefixed with the instance's id). With `--req SPEC` it
//! also serves req mode through a ROUTER connected to zring's DEALER.
//!
//! Usage: zring-example-handler [--stream ipc://client] [--req ipc://client-req] [--id NAME]
use std::collections::HashMap;
use std::time::{Duration, Instant};

use zring::proto::tnetstring::{self, Value, Writer};

const STREAM_CHUNKS: u32 = 5;
const STREAM_INTERVAL: Duration = Duration::from_millis(100);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Body bytes granted at a time; bodies larger than BODY_MAX get a 413.
const BODY_CREDITS: u32 = 65_536;
const BODY_MAX: usize = 16 << 20;
const PUB_HWM: i32 = 100_000;

struct Session {
    /// The zring instance (its `from`), which prefixes our PUB messages.
    to: Vec<u8>,
    seq: u32,
    echo: Option<Vec<u8>>,
    stream_next: Option<(u32, Instant)>,
}

struct Handler {
    me: Vec<u8>,
    pub_sock: zmq::Socket,
    sessions: HashMap<Vec<u8>, Session>,
    out: Vec<u8>,
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
        w.bytes(id);
        w.bytes(b"seq");
        w.int(s.seq as i64);
        fields(&mut w);
        w.end_dict();
        s.seq += 1;
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
            w.bytes(b"headers");
            w.begin_list();
            w.begin_list();
            w.bytes(b"Content-Type");
            w.bytes(ctype);
            w.end_list();
            w.end_list();
            w.bytes(b"body");
            w.bytes(body);
            if more {
                w.bytes(b"more");
                w.bool(true);
            }
        });
    }

    fn first_packet(&mut self, d: &tnetstring::Dict, now: Instant) {
        let id = bytes(get(d, b"id")).to_vec();
        let to = bytes(get(d, b"from")).to_vec();
        let uri = bytes(get(d, b"uri"));
        let path = path_of(uri);
        let more = matches!(get(d, b"more"), Some(Value::Bool(true)));
        self.sessions.insert(
            id.clone(),
            Session {
                to,
                seq: 0,
                echo: None,
                stream_next: None,
            },
        );
        match path {
            b"/" | b"/hello" => self.finish(&id, 200, b"OK", b"hello\n"),
            b"/echo" => {
                let echo = describe_request(d);
                if more {
                    self.sessions.get_mut(&id).unwrap().echo = Some(echo);
                    self.send(&id, |w| {
                        w.bytes(b"type");
                        w.bytes(b"credit");
                        w.bytes(b"credits");
                        w.int(BODY_CREDITS as i64);
                    });
                } else {
                    self.finish(&id, 200, b"OK", &echo);
                }
            }
            b"/stream" => {
                self.respond(&id, 200, b"OK", b"text/plain", b"", true);
                self.sessions.get_mut(&id).unwrap().stream_next = Some((0, now));
            }
            _ => self.finish(&id, 404, b"Not Found", b"not found\n"),
        }
    }

    fn finish(&mut self, id: &[u8], code: i64, reason: &[u8], body: &[u8]) {
        self.respond(id, code, reason, b"text/plain", body, false);
        self.sessions.remove(id);
    }

    fn later_packet(&mut self, d: &tnetstring::Dict) {
        let Some(Value::Bytes(id)) = get(d, b"id") else {
            return;
        }; // list form: keep-alives
        let id = id.to_vec();
        match bytes(get(d, b"type")) {
            b"cancel" | b"error" => {
                self.sessions.remove(&id);
            }
            b"" => {
                let body = bytes(get(d, b"body"));
                let more = matches!(get(d, b"more"), Some(Value::Bool(true)));
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                let Some(echo) = s.echo.as_mut() else { return };
                if echo.len() + body.len() > BODY_MAX {
                    return self.finish(&id, 413, b"Payload Too Large", b"body too large\n");
                }
                echo.extend_from_slice(body);
                if !more {
                    let echo = s.echo.take().unwrap();
                    self.finish(&id, 200, b"OK", &echo);
                } else if !body.is_empty() {
                    let n = body.len() as i64;
                    self.send(&id, |w| {
                        w.bytes(b"type");
                        w.bytes(b"credit");
                        w.bytes(b"credits");
                        w.int(n);
                    });
                }
            }
            _ => {} // credit, keep-alive, handoff: nothing to do here
        }
    }

    /// Emits due stream chunks; returns the next time something is due.
    fn tick(&mut self, now: Instant) -> Option<Instant> {
        let due: Vec<(Vec<u8>, u32)> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
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
                self.sessions.remove(&id);
            } else if let Some(s) = self.sessions.get_mut(&id) {
                s.stream_next = Some((n + 1, now + STREAM_INTERVAL));
            }
        }
        self.sessions
            .values()
            .filter_map(|s| s.stream_next.map(|(_, t)| t))
            .min()
    }

    fn keep_alives(&mut self) {
        let ids: Vec<Vec<u8>> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.send(&id, |w| {
                w.bytes(b"type");
                w.bytes(b"keep-alive");
            });
        }
    }
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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--stream" => stream = val(),
            "--req" => req = Some(val()),
            "--id" => me = val(),
            "-h" | "--help" => usage(""),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let (push_ep, router_ep, sub_ep) =
        zring::config::stream_endpoints(&stream).unwrap_or_else(|e| usage(&e));
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.connect(&push_ep).unwrap();
    let router = ctx.socket(zmq::ROUTER).unwrap();
    router.set_identity(me.as_bytes()).unwrap();
    router.connect(&router_ep).unwrap();
    let pub_sock = ctx.socket(zmq::PUB).unwrap();
    // A PUB socket drops what its subscriber can't take yet; room for a burst of
    // responses (thousands of clients answered at once) keeps them from being lost.
    pub_sock.set_sndhwm(PUB_HWM).unwrap();
    pub_sock.connect(&sub_ep).unwrap();
    let req_sock = req.map(|spec| {
        let s = ctx.socket(zmq::ROUTER).unwrap();
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
        out: Vec::new(),
    };
    let mut req_out = Vec::new();
    let mut next_keep_alive = Instant::now() + KEEP_ALIVE_INTERVAL;
    let mut next_tick: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = next_tick.map_or(next_keep_alive, |t| t.min(next_keep_alive));
        let timeout = wake.saturating_duration_since(now).as_millis() as i64 + 1;
        let mut items = vec![
            pull.as_poll_item(zmq::POLLIN),
            router.as_poll_item(zmq::POLLIN),
        ];
        if let Some(s) = &req_sock {
            items.push(s.as_poll_item(zmq::POLLIN));
        }
        zmq::poll(&mut items, timeout).unwrap();
        let now = Instant::now();
        while let Ok(msg) = pull.recv_bytes(zmq::DONTWAIT) {
            if let Some(Ok((Value::Dict(d), _))) = msg.strip_prefix(b"T").map(tnetstring::parse) {
                h.first_packet(&d, now);
            }
        }
        while let Ok(parts) = router.recv_multipart(zmq::DONTWAIT) {
            let Some(msg) = parts.last() else { continue };
            if let Some(Ok((Value::Dict(d), _))) = msg.strip_prefix(b"T").map(tnetstring::parse) {
                h.later_packet(&d);
            }
        }
        if let Some(s) = &req_sock {
            serve_req(s, &mut req_out);
        }
        next_tick = h.tick(now);
        if now >= next_keep_alive {
            h.keep_alives();
            next_keep_alive = now + KEEP_ALIVE_INTERVAL;
        }
    }
}

fn usage(err: &str) -> ! {
    if !err.is_empty() {
        eprintln!("zring-example-handler: {err}");
    }
    eprintln!("usage: zring-example-handler [--stream ipc://client] [--req SPEC] [--id NAME]");
    std::process::exit(2);
}
