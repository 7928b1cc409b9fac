//! Client mode (`--zserver-stream`, `--zserver-req`): one outbound exchange, sans-IO. A
//! requester's first packet starts an [`OutConn`]; it asks the worker for DNS
//! ([`Output::Resolve`]) and a connection (`Command::Connect` on its own slot), speaks
//! HTTP/1.1 to the origin and answers the requester with ZHTTP replies (keep-alive ack,
//! head, body under the requester's credits, `error`/`cancel`). No sockets, threads or
//! clocks: the worker feeds events and `now`, and carries out what comes back, as for
//! server-mode connections (`conn`'s contract: every output in `Ctx::out`, then `flush`).
//!
//! # Shape
//! An `OutConn` is a shell ([`Shell`]: whom to answer and how, `seq` both ways, the
//! socket's state, the bytes for the origin, the deadlines, where to connect and the
//! addresses left to try) plus one session per protocol (`OutSession`): [`http::HttpOut`]
//! for `http://`, [`ws::WsOut`] for `ws://`. TLS to origins goes under the shell as
//! `conn::tls` does for the server side (ciphertext in `handle_recv`, records sealed in
//! `flush`), so the sessions only see plaintext.
//!
//! # Life
//! `start` (ack at once) → `Resolving` (or straight on with an IP literal) → `Connecting`
//! to each allowed address in turn → `Open` (request out, response in) → `Close` →
//! `handle_closed`, which either ends the exchange (the worker frees the slot) or, for the
//! next address or a redirect, connects again on the same slot.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Ctx, Output, Settings};
use crate::bridge::{Addr, OutPacket, Route};
use crate::limits;
use crate::proto::zhttp_client::{self as zc, Kind, Reply, Request};
use crate::runtime::Command;

mod http;
mod target;
mod ws;

pub use target::{is_internal, Scheme, Target, HOST_BYTES_MAX, URI_BYTES_MAX};

/// How the requester reached zring, and so where replies go.
#[derive(Clone, Debug)]
pub enum Via {
    /// The stream sockets: replies on PUB (`"<from> T…"`), or out of the in-stream ROUTER
    /// with `router-resp`.
    Stream,
    /// The req ROUTER: one reply, sent back along this envelope (the routing frames).
    Req(Arc<Vec<Vec<u8>>>),
}

/// Why an exchange failed, as the requester is told (`condition`; note section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    PolicyViolation,
    RemoteConnectionFailed,
    ConnectionTimeout,
    TooManyRedirects,
    MaxSizeExceeded,
    SessionTimeout,
    /// A WebSocket rejection whose body is over `--buffer-size` (pushpin-connmgr).
    RejectionTooLarge,
    Undefined,
}

impl Condition {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Condition::BadRequest => b"bad-request",
            Condition::PolicyViolation => b"policy-violation",
            Condition::RemoteConnectionFailed => b"remote-connection-failed",
            Condition::ConnectionTimeout => b"connection-timeout",
            Condition::TooManyRedirects => b"too-many-redirects",
            Condition::MaxSizeExceeded => b"max-size-exceeded",
            Condition::SessionTimeout => b"session-timeout",
            Condition::RejectionTooLarge => b"rejection-too-large",
            Condition::Undefined => b"undefined-condition",
        }
    }
}

/// The socket as the exchange sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Socket {
    /// No socket: resolving, or between two connects.
    None,
    Connecting,
    Open,
    /// `Close` issued; waiting for `handle_closed`.
    Closing,
}

/// What `handle_closed` leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// The exchange is over: free the slot.
    Done,
    /// Connect to the next address (the last connect failed).
    NextAddress,
    /// Follow a redirect: resolve the new target.
    Redirect,
}

/// Deadlines, as ms since `Settings::epoch` (0: unset).
#[derive(Clone, Copy)]
enum Timer {
    /// No requester packet for `limits::SESSION_EXPIRY_MS`: drop silently.
    Expiry = 0,
    /// DNS, connect, or origin inactivity (`--stream-timeout`; req: `--req-timeout`).
    Io = 1,
    /// The request's own `timeout` field (zurl): `session-timeout`.
    Whole = 2,
}
const TIMERS: usize = 3;

/// Whom to answer and how. Invariant: `id.len() <= ADDRESS_BYTES_MAX` (checked at start).
pub(crate) struct ReplyTo {
    /// The requester's `from` (empty in req mode without one).
    pub from: Addr,
    pub id: Addr,
    pub via: Via,
    pub router_resp: bool,
    /// The requester takes list-form ids (`ext.multi`).
    pub multi: bool,
    pub user_data: Option<Box<[u8]>>,
}

/// The protocol-neutral half of an outbound exchange.
pub(crate) struct Shell {
    pub reply: ReplyTo,
    /// zring's next `seq` toward the requester.
    pub seq_out: u32,
    /// The requester's next `seq`.
    pub seq_in: u32,
    /// This session's token (answers for an earlier session on the slot are dropped).
    pub token: u64,
    socket: Socket,
    after: After,
    /// Bytes for the origin not yet handed to the runtime.
    pub out: Vec<u8>,
    /// Request-body bytes in `out` (credited back to the requester once written).
    pub out_body: u64,
    /// Request-body bytes of the send in flight; `Some` while a send is in flight.
    pub sending: Option<u64>,
    pub paused: bool,
    /// Pause or resume asked by the session, not yet issued.
    pause_want: bool,
    deadlines: [u64; TIMERS],
    /// When zring last sent the requester a packet (ms since epoch), for the keep-alives.
    sent_at: u64,
    pub target: Target,
    /// `connect-host`/`connect-port`: where to connect instead of the URI's host.
    connect: Option<(String, u16)>,
    /// The allowed addresses of the last resolution (≤ `limits::DNS_ADDRESSES_MAX`).
    addrs: Vec<SocketAddr>,
    addr_next: usize,
    /// Addresses refused by policy in the last resolution.
    denied: bool,
    pub redirects: u8,
    pub ignore_policies: bool,
    /// The replies are over (error, cancel, or the last body packet sent).
    pub ended: bool,
    /// req mode: `--req-timeout`, else `--stream-timeout`.
    io_timeout: Duration,
}

enum OutSession {
    Http(Box<http::HttpOut>),
    Ws(Box<ws::WsOut>),
}

/// One outbound exchange: the shell and its session.
pub struct OutConn {
    sh: Shell,
    session: OutSession,
}

/// A keep-alive due for one session: where it goes, its id and the `seq` it takes.
pub struct KeepAlive {
    pub route: Route,
    pub multi: bool,
    pub id: Addr,
    pub seq: u32,
}

fn ms(s: &Settings, now: Instant) -> u64 {
    now.saturating_duration_since(s.epoch).as_millis() as u64 + 1
}

impl Shell {
    /// The shell of a first packet's exchange, its deadlines set. `None`: a packet to skip
    /// (no single id, a stream packet without `seq 0`, an over-long `from` or id).
    fn new(cx: &mut Ctx, pkt: &Request, buf: &[u8], via: Via) -> Option<Shell> {
        let (id, seq) = match (&pkt.ids, &via) {
            (Some(_), _) => pkt.single_id()?,
            (None, Via::Req(_)) => (zc::Span::EMPTY, None),
            (None, Via::Stream) => return None,
        };
        let stream = matches!(via, Via::Stream);
        if stream && seq != Some(0) {
            return None; // pushpin-connmgr skips a first packet without seq 0
        }
        let from = pkt.from.map_or(&b""[..], |f| f.get(buf));
        let mut sh = Shell {
            reply: ReplyTo {
                from: Addr::try_from(from).ok()?,
                id: Addr::try_from(id.get(buf)).ok()?,
                via,
                router_resp: pkt.router_resp,
                multi: pkt.multi,
                user_data: pkt.user_data.map(|u| u.get(buf).into()),
            },
            seq_out: 0,
            seq_in: 1,
            token: {
                *cx.counter += 1;
                *cx.counter
            },
            socket: Socket::None,
            after: After::Done,
            out: Vec::new(),
            out_body: 0,
            sending: None,
            paused: false,
            pause_want: false,
            deadlines: [0; TIMERS],
            sent_at: ms(cx.settings, cx.now),
            target: Target {
                scheme: Scheme::Http,
                host: String::new(),
                port: 0,
                path: String::new(),
            },
            connect: None,
            addrs: Vec::new(),
            addr_next: 0,
            denied: false,
            redirects: 0,
            ignore_policies: pkt.ignore_policies,
            ended: false,
            io_timeout: match stream {
                true => cx.settings.stream_timeout,
                false => cx.settings.req_timeout,
            },
        };
        let now = cx.now;
        sh.set_timer(
            cx.settings,
            now,
            Timer::Expiry,
            Some(Duration::from_millis(limits::SESSION_EXPIRY_MS)),
        );
        if let Some(t) = pkt.timeout_ms.filter(|&t| t > 0) {
            sh.set_timer(
                cx.settings,
                now,
                Timer::Whole,
                Some(Duration::from_millis(t)),
            );
        }
        Some(sh)
    }

    fn reply_fields<'a>(&'a self, s: &'a Settings, seq: Option<u32>) -> Reply<'a> {
        let req = matches!(self.reply.via, Via::Req(_));
        Reply {
            from: if req { b"" } else { &s.instance_id },
            id: Some(&self.reply.id)
                .filter(|id| !id.is_empty())
                .map(|id| &id[..]),
            seq: if req { None } else { seq },
            ext: !req,
            user_data: self.reply.user_data.as_deref(),
        }
    }

    fn route(&self) -> Route {
        match &self.reply.via {
            Via::Req(envelope) => Route::ClientReq(envelope.clone()),
            Via::Stream if self.reply.router_resp => Route::ClientRouter(self.reply.from.clone()),
            Via::Stream => Route::Pub(self.reply.from.clone()),
        }
    }

    /// Queues one reply, written by `encode` with the next `seq`.
    pub fn send_packet(&mut self, cx: &mut Ctx, encode: impl FnOnce(&mut Vec<u8>, &Reply)) {
        if self.ended {
            return;
        }
        if matches!(self.reply.via, Via::Stream) && self.reply.from.is_empty() {
            return; // fire-and-forget (zurl: a stream request without `from` gets no replies)
        }
        let mut data = Vec::with_capacity(128);
        let seq = self.seq_out;
        encode(&mut data, &self.reply_fields(cx.settings, Some(seq)));
        self.seq_out = self.seq_out.wrapping_add(1);
        self.sent_at = ms(cx.settings, cx.now);
        cx.out.push(Output::Packet(OutPacket {
            route: self.route(),
            data,
            expires: None,
        }));
    }

    /// Ends the replies with `error{condition}` (nothing sent yet but the ack) or `cancel`
    /// (a head went out: pushpin-connmgr's rule), and closes the origin connection.
    pub fn fail(&mut self, cx: &mut Ctx, condition: Condition, head_sent: bool) {
        crate::log!(
            crate::log::DEBUG,
            "client",
            "{} {}: {}",
            String::from_utf8_lossy(&self.reply.id),
            self.target.uri(),
            String::from_utf8_lossy(condition.as_bytes())
        );
        match head_sent && matches!(self.reply.via, Via::Stream) {
            true => self.send_packet(cx, |o, r| zc::encode_control(o, r, Kind::Cancel)),
            false => self.send_packet(cx, |o, r| zc::encode_error(o, r, condition.as_bytes())),
        }
        self.end(cx);
    }

    /// Ends the exchange without a reply: closes the origin connection, if any.
    pub fn end(&mut self, cx: &mut Ctx) {
        self.ended = true;
        self.after = After::Done;
        self.close(cx);
        self.deadlines = [0; TIMERS];
    }

    fn close(&mut self, cx: &mut Ctx) {
        match self.socket {
            Socket::Connecting | Socket::Open => {
                cx.out.push(Output::Io(Command::Close { slot: cx.slot }));
                self.socket = Socket::Closing;
                self.sending = None;
                self.out.clear();
                self.out_body = 0;
                self.paused = false;
            }
            Socket::None | Socket::Closing => {}
        }
    }

    fn set_timer(&mut self, s: &Settings, now: Instant, t: Timer, after: Option<Duration>) {
        self.deadlines[t as usize] = after.map_or(0, |d| ms(s, now) + d.as_millis() as u64);
    }

    /// Asks the session's socket to stop (true) or resume (false) reading.
    pub fn want_paused(&mut self, paused: bool) {
        self.pause_want = paused;
    }

    /// Origin activity: the inactivity deadline moves on.
    pub fn touch(&mut self, cx: &Ctx) {
        let t = self.io_timeout;
        self.set_timer(cx.settings, cx.now, Timer::Io, Some(t));
    }

    pub fn is_open(&self) -> bool {
        self.socket == Socket::Open
    }

    /// Where to look the next target up: `connect-host` (and its port) or the URI's host.
    fn lookup(&self) -> (String, u16) {
        match &self.connect {
            Some((h, p)) => (h.clone(), *p),
            None => (self.target.host.clone(), self.target.port),
        }
    }

    /// Resolves the current target (or takes its IP literal as is). `Some`: it failed at
    /// once (a literal the policy refuses).
    fn resolve(&mut self, cx: &mut Ctx) -> Option<Condition> {
        let (host, port) = self.lookup();
        self.addrs.clear();
        self.addr_next = 0;
        let literal = host.parse::<IpAddr>().ok();
        if let Some(ip) = literal {
            return self.take_addresses(cx, &[SocketAddr::new(ip, port)]);
        }
        self.set_timer(
            cx.settings,
            cx.now,
            Timer::Io,
            Some(Duration::from_millis(limits::DNS_TIMEOUT_MS)),
        );
        cx.out.push(Output::Resolve(crate::resolver::Query {
            worker: cx.settings.worker,
            slot: cx.slot,
            token: self.token,
            host,
            port,
        }));
        None
    }

    /// Keeps the addresses the policy allows, then connects to the first.
    fn take_addresses(&mut self, cx: &mut Ctx, addrs: &[SocketAddr]) -> Option<Condition> {
        let deny = cx.settings.deny_out_internal && !self.ignore_policies;
        self.addrs.clear();
        self.addr_next = 0;
        self.denied = false;
        for &a in addrs {
            if deny && is_internal(a.ip()) {
                self.denied = true;
                continue;
            }
            if self.addrs.len() < limits::DNS_ADDRESSES_MAX {
                self.addrs.push(a);
            }
        }
        if self.addrs.is_empty() {
            return Some(match (addrs.is_empty(), self.denied) {
                (true, _) => Condition::RemoteConnectionFailed,
                (false, true) => Condition::PolicyViolation,
                (false, false) => Condition::RemoteConnectionFailed,
            });
        }
        self.connect_next(cx);
        None
    }

    /// Connects to the next address. False when none is left.
    fn connect_next(&mut self, cx: &mut Ctx) -> bool {
        let Some(&addr) = self.addrs.get(self.addr_next) else {
            return false;
        };
        debug_assert_eq!(self.socket, Socket::None);
        self.addr_next += 1;
        self.socket = Socket::Connecting;
        self.set_timer(
            cx.settings,
            cx.now,
            Timer::Io,
            Some(Duration::from_millis(limits::CONNECT_TIMEOUT_MS)),
        );
        cx.out.push(Output::Io(Command::Connect {
            slot: cx.slot,
            addr,
        }));
        true
    }

    /// Leaves this connection for a redirect to `target` (resolved once it is closed).
    pub fn redirect(&mut self, cx: &mut Ctx, target: Target) {
        // `connect-host` names where the first URI's host lives; a hop elsewhere is looked
        // up by its own name (and so checked by the policy under its own addresses).
        if (&target.host, target.port) != (&self.target.host, self.target.port) {
            self.connect = None;
        }
        self.target = target;
        self.redirects += 1;
        self.after = After::Redirect;
        self.close(cx);
    }

    /// Issues the I/O the state calls for: the next send, pause or resume.
    fn flush(&mut self, cx: &mut Ctx) {
        if self.socket != Socket::Open {
            return;
        }
        if self.sending.is_none() && !self.out.is_empty() {
            let fresh = cx.pool.take();
            let buf = std::mem::replace(&mut self.out, fresh);
            self.sending = Some(std::mem::take(&mut self.out_body));
            cx.out
                .push(Output::Io(Command::Send { slot: cx.slot, buf }));
        }
        if self.pause_want != self.paused {
            self.paused = self.pause_want;
            crate::log!(
                crate::log::TRACE,
                "client",
                "origin reads paused: {}",
                self.paused
            );
            let slot = cx.slot;
            cx.out.push(Output::Io(match self.paused {
                true => Command::PauseRecv { slot },
                false => Command::ResumeRecv { slot },
            }));
        }
    }
}

impl OutConn {
    /// A requester's first packet (`pkt`, spans into `buf`). Answers at once (the ack, or an
    /// error) and returns the exchange, or `None` when there is none to run (bad request:
    /// answered with `error`, or dropped when it cannot be answered).
    pub fn start(cx: &mut Ctx, pkt: &Request, buf: &[u8], via: Via) -> Option<OutConn> {
        let stream = matches!(via, Via::Stream);
        let mut sh = Shell::new(cx, pkt, buf, via)?;
        let uri = pkt.uri.map(|u| u.get(buf)).unwrap_or_default();
        let target = std::str::from_utf8(uri).ok().and_then(Target::parse);
        // https and wss come with TLS to origins; WebSocket only on the stream sockets
        // (zurl: `bad-request` on its req socket).
        let allowed = |t: &Target| t.scheme == Scheme::Http || (t.scheme == Scheme::Ws && stream);
        let Some(target) = target.filter(allowed) else {
            sh.fail(cx, Condition::BadRequest, false);
            return None;
        };
        sh.target = target;
        if let Some(host) = pkt.connect_host {
            let host = String::from_utf8_lossy(host.get(buf)).to_ascii_lowercase();
            let port = pkt.connect_port.unwrap_or(sh.target.port);
            sh.connect = Some((host, port));
        }
        let session = match sh.target.scheme {
            Scheme::Ws | Scheme::Wss => {
                let seed = (cx.settings.epoch_unix_ms.rotate_left(20)
                    ^ u64::from(cx.settings.worker) << 48
                    ^ sh.token)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                ws::WsOut::new(pkt, buf, seed).map(|w| OutSession::Ws(Box::new(w)))
            }
            Scheme::Http | Scheme::Https => {
                http::HttpOut::new(pkt, buf, !stream).map(|h| OutSession::Http(Box::new(h)))
            }
        };
        let Some(session) = session else {
            sh.fail(cx, Condition::BadRequest, false);
            return None;
        };
        if stream {
            // pushpin-connmgr's ack: at once, before DNS, so the requester learns `from`.
            sh.send_packet(cx, |o, r| zc::encode_control(o, r, Kind::KeepAlive));
        }
        if let Some(c) = sh.resolve(cx) {
            sh.fail(cx, c, false);
            return None;
        }
        Some(OutConn { sh, session })
    }

    /// The replies are over and no socket is left: the worker frees the exchange now
    /// (with a socket, `handle_closed` says so).
    pub fn is_released(&self) -> bool {
        self.sh.ended && self.sh.socket == Socket::None
    }

    /// The requester's id and `from`: the session's key.
    pub fn key(&self) -> (&Addr, &Addr) {
        (&self.sh.reply.from, &self.sh.reply.id)
    }

    /// The session's token (see `resolver::Query::token`).
    pub fn token(&self) -> u64 {
        self.sh.token
    }

    /// A follow-up packet from the requester (`seq`: its seq for this session, if given).
    pub fn handle_packet(&mut self, cx: &mut Ctx, pkt: &Request, buf: &[u8], seq: Option<u32>) {
        if self.sh.ended {
            return;
        }
        if seq.is_some_and(|s| s != self.sh.seq_in) {
            // pushpin-connmgr: a wrong seq drops the session silently ("bad seq").
            crate::log!(crate::log::DEBUG, "client", "bad seq from the requester");
            self.sh.end(cx);
            return;
        }
        self.sh.seq_in = self.sh.seq_in.wrapping_add(1);
        self.sh.set_timer(
            cx.settings,
            cx.now,
            Timer::Expiry,
            Some(Duration::from_millis(limits::SESSION_EXPIRY_MS)),
        );
        match pkt.kind.get() {
            Kind::Cancel | Kind::Error => self.sh.end(cx),
            Kind::KeepAlive => {}
            Kind::Credit | Kind::Data | Kind::Close | Kind::Ping | Kind::Pong => {
                match &mut self.session {
                    OutSession::Http(h) => h.handle_packet(&mut self.sh, cx, pkt, buf),
                    OutSession::Ws(w) => w.handle_packet(&mut self.sh, cx, pkt, buf),
                }
            }
            _ => {}
        }
    }

    /// The resolver's answer (empty: the name did not resolve).
    pub fn handle_resolved(&mut self, cx: &mut Ctx, addrs: &[SocketAddr]) {
        if self.sh.ended || self.sh.socket != Socket::None {
            return;
        }
        if let Some(c) = self.sh.take_addresses(cx, addrs) {
            self.fail(cx, c);
        }
    }

    pub fn handle_connected(&mut self, cx: &mut Ctx, ok: bool) {
        if self.sh.socket != Socket::Connecting {
            return;
        }
        if !ok {
            self.sh.after = After::NextAddress;
            self.sh.close(cx);
            return;
        }
        self.sh.socket = Socket::Open;
        self.sh.touch(cx);
        match &mut self.session {
            OutSession::Http(h) => h.handle_connected(&mut self.sh),
            OutSession::Ws(w) => w.handle_connected(&mut self.sh, cx),
        }
    }

    pub fn handle_recv(&mut self, cx: &mut Ctx, data: &mut [u8]) {
        if !self.sh.is_open() {
            return;
        }
        self.sh.touch(cx);
        match &mut self.session {
            OutSession::Http(h) => h.handle_recv(&mut self.sh, cx, data),
            OutSession::Ws(w) => w.handle_recv(&mut self.sh, cx, data),
        }
    }

    pub fn handle_eof(&mut self, cx: &mut Ctx) {
        if !self.sh.is_open() {
            return;
        }
        // The session ends the exchange (a failure, or the end of a read-to-EOF body); a
        // body read whole but not yet credited waits for the requester's credits.
        match &mut self.session {
            OutSession::Http(h) => h.handle_eof(&mut self.sh, cx),
            OutSession::Ws(w) => w.handle_eof(&mut self.sh, cx),
        }
    }

    pub fn handle_sent(&mut self, cx: &mut Ctx, buf: Vec<u8>) {
        cx.pool.give(buf);
        let Some(body) = self.sh.sending.take() else {
            return;
        };
        match &mut self.session {
            OutSession::Http(h) => h.handle_sent(&mut self.sh, cx, body),
            OutSession::Ws(w) => w.handle_sent(&mut self.sh, cx, body),
        }
    }

    /// The runtime closed the socket. True: the exchange is over and the slot free.
    pub fn handle_closed(&mut self, cx: &mut Ctx) -> bool {
        self.sh.socket = Socket::None;
        let after = std::mem::replace(&mut self.sh.after, After::Done);
        if self.sh.ended {
            return true;
        }
        match after {
            After::NextAddress if self.sh.connect_next(cx) => false,
            After::NextAddress => {
                self.fail(cx, Condition::RemoteConnectionFailed);
                true
            }
            After::Redirect => {
                if let OutSession::Http(h) = &mut self.session {
                    h.restart();
                }
                match self.sh.resolve(cx) {
                    Some(c) => {
                        self.fail(cx, c);
                        true
                    }
                    None => false,
                }
            }
            After::Done => {
                self.sh.end(cx);
                true
            }
        }
    }

    pub fn handle_timeout(&mut self, cx: &mut Ctx) {
        let now = ms(cx.settings, cx.now);
        let due = |t: Timer| {
            let d = self.sh.deadlines[t as usize];
            d != 0 && d <= now
        };
        if due(Timer::Expiry) {
            crate::log!(crate::log::DEBUG, "client", "session expired");
            self.sh.end(cx);
        } else if due(Timer::Whole) {
            self.fail(cx, Condition::SessionTimeout);
        } else if due(Timer::Io) {
            self.fail(cx, Condition::ConnectionTimeout);
        }
    }

    /// zring is stopping: `cancel` to the requester (pushpin-connmgr), close the origin.
    pub fn handle_shutdown(&mut self, cx: &mut Ctx) {
        if !self.sh.ended {
            self.sh
                .send_packet(cx, |o, r| zc::encode_control(o, r, Kind::Cancel));
        }
        self.sh.end(cx);
    }

    fn fail(&mut self, cx: &mut Ctx, c: Condition) {
        let head_sent = match &self.session {
            OutSession::Http(h) => h.head_sent(),
            OutSession::Ws(w) => w.head_sent(),
        };
        self.sh.fail(cx, c, head_sent);
    }

    /// Issues what the state calls for; the worker calls it after every input.
    pub fn flush(&mut self, cx: &mut Ctx) {
        self.sh.flush(cx);
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self, s: &Settings) -> Option<Instant> {
        let min = self
            .sh
            .deadlines
            .iter()
            .copied()
            .filter(|&d| d != 0)
            .min()?;
        Some(s.epoch + Duration::from_millis(min))
    }

    /// The keep-alive sweep's visit (every `KEEP_ALIVE_INTERVAL_MS / 2`: `worker::out`): a
    /// keep-alive for an open stream session that has had no packet from zring for half the
    /// interval; takes its `seq`. Visiting twice per interval is what bounds the gap by the
    /// interval: with one visit per interval, a session skipped for a recent packet would wait
    /// nearly two intervals, past the requester's 60 s expiry.
    pub fn keep_alive(&mut self, s: &Settings, now: Instant) -> Option<KeepAlive> {
        let open = !self.sh.ended && matches!(self.sh.reply.via, Via::Stream);
        let idle = ms(s, now).saturating_sub(self.sh.sent_at);
        if !open || self.sh.reply.from.is_empty() || idle < limits::KEEP_ALIVE_INTERVAL_MS / 2 {
            return None;
        }
        let seq = self.sh.seq_out;
        self.sh.seq_out = seq.wrapping_add(1);
        self.sh.sent_at = ms(s, now);
        Some(KeepAlive {
            route: self.sh.route(),
            multi: self.sh.reply.multi && self.sh.reply.user_data.is_none(),
            id: self.sh.reply.id.clone(),
            seq,
        })
    }

    /// The user-data echo of a keep-alive sent alone (`keep_alive` said not `multi`).
    pub fn encode_keep_alive(&self, s: &Settings, out: &mut Vec<u8>, seq: u32) {
        zc::encode_control(out, &self.sh.reply_fields(s, Some(seq)), Kind::KeepAlive);
    }
}

#[cfg(test)]
mod tests;
