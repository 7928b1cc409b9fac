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
//! for `http(s)://`, [`ws::WsOut`] for `ws(s)://`. TLS to origins (`https`, `wss`) sits
//! under the shell ([`tls::OutTls`]) as `conn::tls` does for the server side: ciphertext in
//! `handle_recv`, records sealed in `flush`; sessions see plaintext only.
//!
//! # Reuse
//! An exchange that ends after a complete response the origin lets live (`Shell::keep`)
//! leaves its connection open: the worker parks it in its pool ([`pool`]) and a later
//! exchange with the same [`PoolKey`] starts on it ([`OutConn::begin`] with a
//! [`pool::Parked`]), skipping DNS, connect and the TLS handshake. A reused connection that
//! fails before any response byte (the origin closed it as the request went out) sends an
//! idempotent request once more on a fresh connection. WebSocket connections are never
//! pooled.
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
pub mod pool;
mod target;
mod tls;
mod ws;

pub use pool::{Parked, PoolKey};
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
    /// TLS setup, handshake or verification failed (pushpin-connmgr; zurl for a refused
    /// certificate). Pushpin tries the next route target.
    TlsError,
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
            Condition::TlsError => b"tls-error",
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
    /// Our TLS `close_notify` is being sent; `Close` follows its `handle_sent`.
    Finishing,
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
    /// A reused connection failed before any response byte: the request again, on a fresh
    /// connection (resolved anew).
    Retry,
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
    /// Bytes for the origin not yet handed to the runtime. Taken from the worker's pool by
    /// `write_buf` when there is something to write and given back (or sent) by `flush`,
    /// so an idle exchange holds no buffer.
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
    /// TLS to the origin, from connect (or from the pool) to close.
    tls: Option<Box<tls::OutTls>>,
    /// The TLS configuration of the current target (`None`: plain http).
    tls_config: Option<Arc<rustls::ClientConfig>>,
    /// The TLS configuration the request asked for, for `https` targets (also a redirect's).
    https_config: Option<Arc<rustls::ClientConfig>>,
    /// `https_config` also trusts `connect-host`'s name.
    trusted_connect: bool,
    /// Where the connection goes (the pool's key), once connected.
    peer: Option<SocketAddr>,
    /// The connection came from the pool and has not yet given a response byte.
    reused: bool,
    /// A stale reused connection was already retried once.
    retried: bool,
    /// The session may send its request again on a fresh connection (idempotent method,
    /// the whole body at hand).
    pub retryable: bool,
    /// The response is complete and the origin lets the connection live: `end` leaves it
    /// open for the pool.
    pub keep: bool,
    /// The send in flight holds handshake records only (no request byte to credit).
    handshake_send: bool,
}

enum OutSession {
    Http(Box<http::HttpOut>),
    Ws(Box<ws::WsOut>),
}

/// What an outbound WebSocket session holds while idle besides its `OutConn` slot (for
/// `--sizes`): its boxed state; no buffer, decoder or compressor.
pub const WS_SESSION_BYTES: usize = std::mem::size_of::<ws::WsOut>();

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
            tls: None,
            tls_config: None,
            https_config: None,
            trusted_connect: false,
            peer: None,
            reused: false,
            retried: false,
            retryable: false,
            keep: false,
            handshake_send: false,
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
        self.keep = false;
        match head_sent && matches!(self.reply.via, Via::Stream) {
            true => self.send_packet(cx, |o, r| zc::encode_control(o, r, Kind::Cancel)),
            false => self.send_packet(cx, |o, r| zc::encode_error(o, r, condition.as_bytes())),
        }
        self.end(cx);
    }

    /// Ends the exchange without a reply: closes the origin connection, if any, unless the
    /// session said it may live (`keep`) and nothing of it is left in flight: then it stays
    /// open, reading, for the worker to park (`OutConn::park`).
    pub fn end(&mut self, cx: &mut Ctx) {
        self.ended = true;
        self.after = After::Done;
        self.deadlines = [0; TIMERS];
        let quiet = self.sending.is_none()
            && self.out.is_empty()
            && self.tls.as_ref().is_none_or(|t| t.is_quiet());
        if self.keep && quiet && self.socket == Socket::Open && self.peer.is_some() {
            self.pause_want = false; // an idle connection is read: EOF or bytes close it
            return;
        }
        self.keep = false;
        self.close(cx);
    }

    /// Closes the origin connection: TLS says `close_notify` first when nothing else is in
    /// flight (`Finishing`); a send in flight is aborted.
    fn close(&mut self, cx: &mut Ctx) {
        self.keep = false;
        match self.socket {
            Socket::Open if self.sending.is_none() => {
                self.out.clear();
                self.out_body = 0;
                let notify = self.tls.as_mut().and_then(|t| t.close_notify(cx.pool));
                if let Some(buf) = notify {
                    self.socket = Socket::Finishing;
                    self.sending = Some(0);
                    let wait = Some(Duration::from_millis(limits::OUT_CLOSE_NOTIFY_MS));
                    self.set_timer(cx.settings, cx.now, Timer::Io, wait);
                    let slot = cx.slot;
                    cx.out.push(Output::Io(Command::Send { slot, buf }));
                    return;
                }
                self.close_now(cx);
            }
            Socket::Connecting | Socket::Open => self.close_now(cx),
            Socket::None | Socket::Finishing | Socket::Closing => {}
        }
    }

    fn close_now(&mut self, cx: &mut Ctx) {
        cx.out.push(Output::Io(Command::Close { slot: cx.slot }));
        self.socket = Socket::Closing;
        self.sending = None;
        self.out.clear();
        self.out_body = 0;
        self.paused = false;
        if let Some(t) = self.tls.as_mut() {
            t.release(cx.pool);
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
        self.peer = Some(addr);
        self.reused = false;
        cx.stats.out_connects.inc();
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
        self.apply_tls();
        self.redirects += 1;
        self.after = After::Redirect;
        self.close(cx);
    }

    /// Readies `out` for the session to write into: a buffer from the worker's pool when it
    /// holds none (`flush` gives it back once sent or unused).
    pub fn write_buf(&mut self, pool: &mut super::Pool) {
        if self.out.capacity() == 0 {
            self.out = pool.take();
        }
    }

    /// Issues the I/O the state calls for: the next send, pause or resume. Over TLS the
    /// queued plaintext is sealed into records here (held while the handshake runs).
    fn flush(&mut self, cx: &mut Ctx) -> Result<(), Condition> {
        if self.socket != Socket::Open {
            return Ok(());
        }
        if self.sending.is_none() {
            let (buf, handshake) = match self.tls.as_mut() {
                None if self.out.is_empty() => (None, false),
                None => (Some(std::mem::take(&mut self.out)), false),
                Some(t) => {
                    // While the handshake runs only its records go; the request waits.
                    let handshake = t.is_handshaking();
                    let sealed = t.seal(&mut self.out, cx.pool).map_err(|e| {
                        crate::log!(crate::log::DEBUG, "client", "tls: {e}");
                        Condition::TlsError
                    })?;
                    (sealed, handshake)
                }
            };
            if let Some(buf) = buf {
                self.handshake_send = handshake;
                self.sending = Some(match handshake {
                    true => 0,
                    false => std::mem::take(&mut self.out_body),
                });
                cx.out
                    .push(Output::Io(Command::Send { slot: cx.slot, buf }));
            }
        }
        if self.out.is_empty() {
            cx.pool.give(std::mem::take(&mut self.out));
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
        Ok(())
    }

    /// The TLS configuration an `https` target asks for (`ignore-tls-errors`,
    /// `trust-connect-host`, `client-cert`/`client-key`). `Err`: none can be had (no TLS
    /// support set up, or a client certificate rustls cannot use).
    /// Computed for `http` targets too, for a redirect to `https`.
    fn choose_tls(&mut self, cx: &Ctx, pkt: &Request, buf: &[u8]) -> Result<(), Condition> {
        // `wss` as `https`: without a configuration it must fail, not go out in plaintext.
        let https = matches!(self.target.scheme, Scheme::Https | Scheme::Wss);
        let Some(tls) = cx.settings.out_tls.as_ref() else {
            return match https {
                true => Err(Condition::TlsError),
                false => Ok(()),
            };
        };
        let trust_name = match (pkt.trust_connect_host, &self.connect) {
            (true, Some((host, _))) => Some(host.as_str()),
            _ => None,
        };
        let client_cert = match (pkt.client_cert, pkt.client_key) {
            (Some(c), Some(k)) => Some((c.get(buf), k.get(buf))),
            _ => None,
        };
        let wants = crate::tls::client::Wants {
            ignore_tls_errors: pkt.ignore_tls_errors,
            trust_name,
            client_cert,
        };
        self.trusted_connect = trust_name.is_some();
        match tls.config(&wants) {
            Ok(c) => {
                self.https_config = Some(c);
                self.apply_tls();
                Ok(())
            }
            Err(e) if https => {
                crate::log!(crate::log::DEBUG, "client", "tls: {e}");
                Err(Condition::TlsError)
            }
            Err(_) => Ok(()),
        }
    }

    /// TLS or not for the current target.
    fn apply_tls(&mut self) {
        self.tls_config = match self.target.scheme {
            Scheme::Https | Scheme::Wss => self.https_config.clone(),
            Scheme::Http | Scheme::Ws => None,
        };
    }

    /// Whether a redirect to `next` can be followed: an HTTP request goes to `http`/`https`
    /// only and an upgrade to `ws`/`wss` only (pushpin-connmgr's schemes per kind); TLS
    /// needs a configuration, and one that trusts `connect-host` is not carried to another
    /// host.
    pub fn may_follow(&self, next: &Target) -> bool {
        let upgrade = |s: Scheme| matches!(s, Scheme::Ws | Scheme::Wss);
        if upgrade(next.scheme) != upgrade(self.target.scheme) {
            return false;
        }
        match next.scheme {
            Scheme::Https | Scheme::Wss => {
                self.https_config.is_some()
                    && (!self.trusted_connect || next.host == self.target.host)
            }
            Scheme::Http | Scheme::Ws => true,
        }
    }

    /// The connection is up: over TLS the handshake starts (its ClientHello queued; the
    /// connect deadline still runs until it ends), else the origin's inactivity timer.
    fn connected(&mut self, cx: &mut Ctx) -> Result<(), Condition> {
        self.socket = Socket::Open;
        // The other addresses were for a failed connect only.
        self.addrs = Vec::new();
        self.addr_next = 0;
        let Some(config) = self.tls_config.clone() else {
            self.touch(cx);
            return Ok(());
        };
        match tls::OutTls::new(config, &self.target.host, cx.pool) {
            Ok(t) => {
                self.tls = Some(t);
                Ok(())
            }
            Err(e) => {
                crate::log!(crate::log::DEBUG, "client", "tls: {e}");
                Err(Condition::TlsError)
            }
        }
    }

    /// Ciphertext (or plaintext) from the origin, as plaintext for the session; `Err`: the
    /// TLS session failed. `Ok((plain, closed))`: `closed` when the origin sent
    /// `close_notify`.
    fn read<'a>(
        &mut self,
        cx: &mut Ctx,
        data: &'a mut [u8],
        plain: &'a mut Vec<u8>,
    ) -> Result<(bool, bool), Condition> {
        let Some(t) = self.tls.as_mut() else {
            return Ok((false, false));
        };
        let r = t.read(data, plain, cx.pool).map_err(|e| {
            crate::log!(crate::log::DEBUG, "client", "tls: {e}");
            Condition::TlsError
        })?;
        if r.established {
            self.touch(cx);
        }
        Ok((true, r.peer_closed))
    }

    /// A reused connection gave nothing (EOF, reset, `close_notify`) before any response
    /// byte: the origin closed it as the request went out. True: the request goes again,
    /// once, on a fresh connection.
    fn retry_stale(&mut self, cx: &mut Ctx) -> bool {
        if !self.reused || self.retried || !self.retryable {
            return false;
        }
        crate::log!(
            crate::log::DEBUG,
            "client",
            "stale pooled connection: retrying"
        );
        cx.stats.out_stale_retries.inc();
        self.retried = true;
        self.after = After::Retry;
        self.close_now(cx);
        true
    }
}

impl OutConn {
    /// A requester's first packet (`pkt`, spans into `buf`). Answers at once (the ack, or an
    /// error) and returns the exchange, or `None` when there is none to run (bad request:
    /// answered with `error`, or dropped when it cannot be answered). It has no connection
    /// yet: the worker picks its slot (a pooled connection's, or a free one) and calls
    /// [`OutConn::begin`]. Nothing here depends on `cx.slot`.
    pub fn start(cx: &mut Ctx, pkt: &Request, buf: &[u8], via: Via) -> Option<OutConn> {
        let stream = matches!(via, Via::Stream);
        let mut sh = Shell::new(cx, pkt, buf, via)?;
        let uri = pkt.uri.map(|u| u.get(buf)).unwrap_or_default();
        let target = std::str::from_utf8(uri).ok().and_then(Target::parse);
        // WebSocket only on the stream sockets (zurl: `bad-request` on its req socket).
        let allowed = |t: &Target| match t.scheme {
            Scheme::Http | Scheme::Https => true,
            Scheme::Ws | Scheme::Wss => stream,
        };
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
        if let Err(c) = sh.choose_tls(cx, pkt, buf) {
            sh.fail(cx, c, false);
            return None;
        }
        sh.retryable = match &session {
            OutSession::Http(h) => h.retryable(),
            OutSession::Ws(_) => false, // an upgrade is never sent twice
        };
        Some(OutConn { sh, session })
    }

    /// Sets the exchange going on its slot (`cx.slot`): on `parked`, a pooled connection
    /// with this exchange's [`PoolKey`] (the request goes out at once), else by resolving
    /// its target. False: it failed at once (answered; the worker frees it).
    pub fn begin(&mut self, cx: &mut Ctx, parked: Option<Parked>) -> bool {
        if let Some(p) = parked {
            debug_assert!(p.key == self.pool_key());
            cx.stats.out_reused.inc();
            self.sh.socket = Socket::Open;
            self.sh.peer = Some(p.peer);
            self.sh.tls = p.tls;
            self.sh.reused = true;
            self.sh.touch(cx);
            let OutSession::Http(h) = &mut self.session else {
                unreachable!("only HTTP exchanges take pooled connections (takes_pooled)")
            };
            h.handle_connected(&mut self.sh, cx.pool);
            return true;
        }
        match self.sh.resolve(cx) {
            Some(c) => {
                self.sh.fail(cx, c, false);
                false
            }
            None => true,
        }
    }

    /// Whether this exchange may start on a pooled connection: HTTP only. An upgrade is
    /// never retried, so a WebSocket would fail on a pooled connection the origin had
    /// just closed; it always connects afresh (and is never parked: it ends closed).
    pub fn takes_pooled(&self) -> bool {
        matches!(self.session, OutSession::Http(_))
    }

    /// The key this exchange's connections are shared under (`pool`).
    pub fn pool_key(&self) -> PoolKey {
        let (host, port) = match &self.sh.connect {
            Some((h, p)) => (h.as_str(), *p),
            None => (self.sh.target.host.as_str(), self.sh.target.port),
        };
        let tls = self.sh.tls_config.clone();
        PoolKey {
            host: host.into(),
            port,
            sni: match tls.is_some() {
                true => self.sh.target.host.as_str().into(),
                false => "".into(),
            },
            tls,
        }
    }

    /// Whether this request may use a connection to `peer` (`--deny-out-internal`, unless
    /// its `ignore-policies`).
    pub fn allows(&self, s: &Settings, peer: SocketAddr) -> bool {
        !(s.deny_out_internal && !self.sh.ignore_policies && is_internal(peer.ip()))
    }

    /// The exchange ended with its connection alive for reuse: hands it over (once).
    pub fn park(&mut self) -> Option<Parked> {
        if !(self.sh.ended && self.sh.keep && self.sh.socket == Socket::Open) {
            return None;
        }
        let key = self.pool_key();
        self.sh.keep = false;
        self.sh.socket = Socket::None;
        Some(Parked {
            key,
            peer: self.sh.peer?,
            tls: self.sh.tls.take(),
        })
    }

    /// The replies are over and no socket is left: the worker frees the exchange now
    /// (with a socket, `handle_closed` says so).
    pub fn is_released(&self) -> bool {
        self.sh.ended && self.sh.socket == Socket::None
    }

    /// How the metrics count its connection: `None` without one; else (TLS, state).
    pub fn class(&self) -> Option<(bool, crate::metrics::ConnState)> {
        use crate::metrics::ConnState;
        let tls = self.sh.tls_config.is_some();
        Some(match self.sh.socket {
            Socket::None => return None,
            Socket::Open if self.sh.tls.as_ref().is_some_and(|t| t.is_handshaking()) => {
                (tls, ConnState::TlsHandshake)
            }
            Socket::Connecting | Socket::Open => (tls, ConnState::Active),
            Socket::Finishing | Socket::Closing => (tls, ConnState::Closing),
        })
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
            Kind::Cancel | Kind::Error => {
                self.sh.keep = false; // a cancelled response is not read to its end
                self.sh.end(cx)
            }
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
        if let Err(c) = self.sh.connected(cx) {
            self.fail(cx, c);
            return;
        }
        match &mut self.session {
            OutSession::Http(h) => h.handle_connected(&mut self.sh, cx.pool),
            OutSession::Ws(w) => w.handle_connected(&mut self.sh, cx),
        }
    }

    pub fn handle_recv(&mut self, cx: &mut Ctx, data: &mut [u8]) {
        if !self.sh.is_open() {
            return;
        }
        if self.sh.tls.is_none() {
            self.sh.touch(cx);
            self.sh.reused = false; // a response byte: no longer a stale candidate
            match &mut self.session {
                OutSession::Http(h) => h.handle_recv(&mut self.sh, cx, data),
                OutSession::Ws(w) => w.handle_recv(&mut self.sh, cx, data),
            }
            return;
        }
        let mut plain = cx.pool.take();
        let read = self.sh.read(cx, data, &mut plain);
        let closed = match read {
            Ok((_, closed)) => closed,
            Err(c) => {
                cx.pool.give(plain);
                if !self.sh.retry_stale(cx) {
                    self.fail(cx, c);
                }
                return;
            }
        };
        if !plain.is_empty() {
            self.sh.touch(cx);
            self.sh.reused = false;
            match &mut self.session {
                OutSession::Http(h) => h.handle_recv(&mut self.sh, cx, &plain),
                OutSession::Ws(w) => w.handle_recv(&mut self.sh, cx, &mut plain),
            }
        }
        cx.pool.give(plain);
        if closed {
            self.handle_eof(cx);
        }
    }

    pub fn handle_eof(&mut self, cx: &mut Ctx) {
        if !self.sh.is_open() || self.sh.retry_stale(cx) {
            return;
        }
        if self.sh.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            self.fail(cx, Condition::TlsError);
            return;
        }
        // Over TLS a body read to the end of the connection ends only with the origin's
        // `close_notify`; without it the body may have been cut (RFC 8446 §6.1).
        let clean = self.sh.tls.as_ref().is_none_or(|t| t.peer_closed());
        self.sh.keep = false;
        // The session ends the exchange (a failure, or the end of a read-to-EOF body); a
        // body read whole but not yet credited waits for the requester's credits.
        match &mut self.session {
            OutSession::Http(h) => h.handle_eof(&mut self.sh, cx, clean),
            OutSession::Ws(w) => w.handle_eof(&mut self.sh, cx),
        }
    }

    pub fn handle_sent(&mut self, cx: &mut Ctx, buf: Vec<u8>) {
        cx.pool.give(buf);
        if self.sh.socket == Socket::Finishing {
            self.sh.close_now(cx);
            return;
        }
        let handshake = std::mem::take(&mut self.sh.handshake_send);
        let Some(body) = self.sh.sending.take() else {
            return;
        };
        if handshake {
            return; // handshake records only: no request byte went
        }
        match &mut self.session {
            OutSession::Http(h) => h.handle_sent(&mut self.sh, cx, body),
            OutSession::Ws(w) => w.handle_sent(&mut self.sh, cx, body),
        }
    }

    /// The runtime closed the socket. True: the exchange is over and the slot free.
    pub fn handle_closed(&mut self, cx: &mut Ctx) -> bool {
        self.sh.socket = Socket::None;
        if let Some(mut t) = self.sh.tls.take() {
            t.release(cx.pool);
        }
        self.sh.sending = None;
        self.sh.handshake_send = false;
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
            After::Redirect | After::Retry => {
                match &mut self.session {
                    OutSession::Http(h) => h.restart(),
                    OutSession::Ws(w) => w.restart(),
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
        if self.sh.socket == Socket::Finishing {
            if due(Timer::Io) {
                self.sh.close_now(cx); // close_notify not written in time
            }
            return;
        }
        if due(Timer::Expiry) {
            crate::log!(crate::log::DEBUG, "client", "session expired");
            self.sh.end(cx);
        } else if due(Timer::Whole) {
            self.fail(cx, Condition::SessionTimeout);
        } else if due(Timer::Io) {
            let handshaking = self.sh.tls.as_ref().is_some_and(|t| t.is_handshaking());
            self.fail(
                cx,
                match handshaking {
                    true => Condition::TlsError,
                    false => Condition::ConnectionTimeout,
                },
            );
        }
    }

    /// zring is stopping: `cancel` to the requester (pushpin-connmgr), close the origin.
    pub fn handle_shutdown(&mut self, cx: &mut Ctx) {
        if !self.sh.ended {
            self.sh
                .send_packet(cx, |o, r| zc::encode_control(o, r, Kind::Cancel));
        }
        self.sh.keep = false;
        self.sh.end(cx);
    }

    fn fail(&mut self, cx: &mut Ctx, c: Condition) {
        let head_sent = match &self.session {
            OutSession::Http(h) => h.head_sent(),
            OutSession::Ws(w) => w.head_sent(),
        };
        self.sh.keep = false;
        self.sh.fail(cx, c, head_sent);
    }

    /// Issues what the state calls for; the worker calls it after every input.
    pub fn flush(&mut self, cx: &mut Ctx) {
        if let Err(c) = self.sh.flush(cx) {
            self.fail(cx, c);
        }
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
