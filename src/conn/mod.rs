//! One client connection's life, sans-IO. No sockets, threads or clocks here: the worker
//! feeds bytes, handler packets and `now`, and carries out what comes back. The same code
//! runs under both runtimes, the tests, the fuzzers and the benches.
//!
//! # Shape
//! A [`Conn`] is a protocol-neutral shell, [`transport::Transport`] (the socket's state as
//! the connection sees it: open, draining, lingering, closed; TLS; buffers; the send in
//! flight; timers), holding one [`Session`]: what the bytes mean right now.
//! - `Idle`: ZHTTP, between requests: reading the next request head.
//! - `Http` ([`http::HttpExchange`]): one request with its ZHTTP handler, body under the
//!   handler's credits, response framed and credited back; then `Idle` again or drain.
//! - `Ws` ([`ws::WsSession`]): an upgrade and the WebSocket that follows, to the end.
//! - `M2` ([`m2::M2Conn`]): a Mongrel2 connection for its whole life, with its `Proxy`
//!   backend (`m2proxy`) when a route needs one.
//!
//! HTTP exchanges and WebSocket sessions share their ZHTTP part ([`zhttp::ZhttpSession`]:
//! id, seq, credits, the handler's address, failure rules).
//!
//! # Contract with the worker
//! Inputs are the `handle_*` methods. Every output goes, in the order produced, into
//! `Ctx::out` as an [`Output`]: packets for handlers, I/O commands for the runtime, and a
//! Mongrel2 proxy's request for a backend slot. After each input the worker calls
//! [`Conn::flush`] (which emits the I/O the connection's state calls for: the next send,
//! shutdown or close, pause or resume), then carries out `out` in order (answering
//! `Output::Backend` with [`Conn::handle_backend_slot`] and flushing again), then re-arms
//! the slot's timer from [`Conn::poll_timeout`].
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use crate::bridge::{Addr, OutPacket, Route};
use crate::config::Mode;
use crate::limits;
use crate::metrics::{ConnClass, ConnState, ErrorKind, Protocol, WorkerStats};
use crate::proto::http1::{self, BodyKind, ChunkedDecoder, Version};
use crate::proto::m2::ReplyKind;
use crate::proto::zhttp;
use crate::runtime::Command;

mod fanout;
mod http;
mod id;
// The in-process harness (a fake runtime and a scripted handler around a real `Worker`):
// for `conn::tests` and, with feature `harness`, the `conn_script` fuzz target.
#[cfg(any(test, feature = "harness"))]
pub mod harness;
pub mod m2;
mod m2_drain;
mod m2proxy;
pub mod out;
pub mod pool;
#[cfg(test)]
mod tests;
mod tls;
mod transport;
mod ws;
mod zhttp_session;
pub use fanout::SharedFrame;
pub use id::{ConnId, CONN_ID_BYTES_MAX};
pub use pool::{Handlers, Pool, PoolCounters};

use http::{HttpExchange, Next};
use m2::M2Conn;
use transport::{Link, Timer, Transport};
use ws::WsSession;
use zhttp_session::ZhttpSession;

/// Heap bytes of a WebSocket's decoder, held only mid-frame or mid-message (`--sizes`).
pub const WS_DECODER_BYTES: usize = std::mem::size_of::<ws::WsRx>();

/// Per-worker settings every connection reads.
pub struct Settings {
    /// This instance's `from`.
    pub instance_id: Addr,
    pub worker: u16,
    pub buffer_size: usize,
    pub body_buffer_size: usize,
    pub req_timeout: Duration,
    pub stream_timeout: Duration,
    pub handler_wait: Duration,
    pub tls_handshake_timeout: Duration,
    /// `--head-timeout`, `--keepalive-timeout`, `--body-timeout`, `--body-min-bytes`.
    pub head_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    pub body_min_bytes: u32,
    /// Most WebSocket frames queued for one client (`--messages-max`).
    pub messages_max: usize,
    /// `--compression`: offer permessage-deflate.
    pub compression: bool,
    pub deflate: crate::proto::ws_deflate::Config,
    /// The instant connection deadlines count from (the worker's start).
    pub epoch: Instant,
    /// Wall-clock time at `epoch`, in ms since the Unix epoch (access log times derive
    /// from `now`: a connection never reads a clock).
    pub epoch_unix_ms: u64,
    /// Mongrel2 mode (`--m2-config`): the loaded config; `None` in ZHTTP mode.
    pub m2: Option<Arc<crate::m2serve::Setup>>,
    /// `--access-log`: ZHTTP sessions emit `Output::AccessLog` lines (server 0).
    pub access_log: bool,
    /// Client mode's `--deny-out-internal` (`conn::out::is_internal`).
    pub deny_out_internal: bool,
    /// Client mode's `--ws-out-buffer-size` (`--buffer-size` unless given): an outbound
    /// WebSocket's window each way (`conn::out::ws`).
    pub ws_out_buffer_size: usize,
    /// Client mode's TLS configurations (`https` origins); `None` outside client mode.
    pub out_tls: Option<Arc<crate::tls::client::ClientTls>>,
}

/// A handler packet as a connection sees it: the decoded fields, whose spans index `buf`.
/// (The bridge's `InPacket` owns the ZeroMQ message; connections only borrow this view.)
#[derive(Clone, Copy)]
pub struct HandlerPacket<'a> {
    pub packet: &'a zhttp::Packet,
    pub buf: &'a [u8],
}

/// What a connection asks of the world, in the order the worker must carry it out.
#[must_use]
#[derive(Debug)]
pub enum Output {
    /// A packet for a handler, through the bridge.
    Packet(OutPacket),
    /// An I/O command for the runtime (for this connection's slot, or its backend's).
    Io(Command),
    /// A Mongrel2 `Proxy` route needs a backend connection to this address: the worker
    /// picks a slot, issues the `Connect`, and answers with `Conn::handle_backend_slot`.
    Backend(SocketAddr),
    /// A Mongrel2 access log line (`proto::m2::access`) for server `server`'s `access_log`,
    /// in a pooled buffer the worker gives back.
    AccessLog { server: u16, line: Vec<u8> },
    /// zring is stopping (drain or shutdown): this session's `cancel` for its handler (the
    /// handler's address, the session's counter and the `seq` it takes). The worker sends
    /// them batched, one packet per handler of up to `limits::PACKET_IDS_MAX` ids, as the
    /// keep-alive sweep batches keep-alives (pushpin-connmgr batches its shutdown cancels
    /// the same way).
    Cancel(Arc<Addr>, u64, u32),
    /// Client mode: a name to resolve for this outbound exchange (`resolver`); the answer
    /// comes back to it as `OutConn::handle_resolved`.
    Resolve(crate::resolver::Query),
}

/// Everything a `handle_*` call may touch besides the connection itself.
pub struct Ctx<'a> {
    pub now: Instant,
    pub settings: &'a Settings,
    pub slot: u32,
    pub pool: &'a mut Pool,
    pub handlers: &'a mut Handlers,
    /// The worker's request counter (the `N` of new session ids).
    pub counter: &'a mut u64,
    /// The worker's counters: what only the connection can tell (statuses, protocol
    /// errors by kind, packet types). See `metrics`.
    pub stats: &'a WorkerStats,
    /// Where the connection's outputs go, in order.
    pub out: &'a mut Vec<Output>,
}

impl Ctx<'_> {
    /// Queues a packet for a handler.
    fn packet(&mut self, p: OutPacket) {
        self.out.push(Output::Packet(p));
    }
}

/// What the connection's bytes mean now (see the module's docs). Illegal combinations of
/// protocol state are unrepresentable: each variant holds only its own.
enum Session {
    /// ZHTTP between requests. `Version`: the last request's, for an error response to
    /// what follows it.
    Idle(Version, Wait),
    Http(HttpExchange),
    Ws(WsSession),
    M2(Box<M2Conn>),
}

/// What an idle ZHTTP connection waits for from its client, and so what its
/// `Timer::Request` deadline means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// A whole request head: `--head-timeout` from accept, or from the first byte of a
    /// request on a kept-alive connection.
    Head,
    /// A kept-alive connection before any byte of its next request: `--keepalive-timeout`.
    KeepAlive,
    /// req mode: the head is here and the body is held until it is whole; it must progress
    /// by `--body-min-bytes` (`window`: the bytes so far in this period) per `--body-timeout`.
    Body { window: u32 },
    /// Accepted while the worker was at its connection limit with nothing idle to close: a
    /// TLS connection gets its `503` once its handshake is done (`Conn::reject_overload`).
    Reject,
}

/// A client connection: the shell and its session.
pub struct Conn {
    t: Transport,
    session: Session,
}

impl Conn {
    pub fn new(
        now: Instant,
        s: &Settings,
        mode: Mode,
        tls: Option<&Arc<rustls::ServerConfig>>,
        peer: Option<SocketAddr>,
    ) -> Conn {
        let mut c = Conn {
            t: Transport::new(s, mode, tls.map(tls::TlsConn::new), peer),
            session: Session::Idle(Version::Http11, Wait::Head),
        };
        match c.t.tls {
            Some(_) => c.t.tls_handshake_deadline(now, s),
            None => c.t.touch_client(now, s, true),
        }
        // The head deadline runs from accept (a TLS handshake spends from it too).
        c.t.set_timer(s, Timer::Request, now + s.head_timeout);
        c
    }

    /// Makes this a Mongrel2 connection of server `server` with id `id` (the worker, at
    /// accept).
    pub fn m2_attach(
        &mut self,
        setup: &Arc<crate::m2serve::Setup>,
        server: u16,
        id: u32,
        now_ms: u64,
    ) {
        self.t.clear_timer(Timer::Request); // Mongrel2 keeps its own limits (`m2::timeout`)
        self.session = Session::M2(M2Conn::new(&mut self.t, setup, server, id, now_ms));
    }

    /// A Mongrel2 connection's server and `status what=net` row (`fd`: what the row shows
    /// in Mongrel2's fd column); `None` for other connections.
    pub fn m2_net_row(
        &self,
        now_ms: u64,
        fd: i64,
    ) -> Option<(u16, crate::proto::m2::control::NetRow)> {
        match &self.session {
            Session::M2(m) => Some((m.server(), m.net_row(now_ms, fd))),
            _ => None,
        }
    }

    /// The Mongrel2 id, for the worker's id table.
    pub fn m2_id(&self) -> Option<u32> {
        match &self.session {
            Session::M2(m) => Some(m.id),
            _ => None,
        }
    }

    /// Open and waiting for a request that has not begun: a kept-alive connection between
    /// requests, or a new one that has sent nothing (a TLS one past its handshake). The
    /// worker may close it to make room (`evict`); never a request, WebSocket or Mongrel2.
    pub fn is_idle(&self) -> bool {
        if !self.t.is_open() || self.t.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            return false;
        }
        match self.session {
            Session::Idle(_, Wait::KeepAlive) => true,
            Session::Idle(_, Wait::Head) => self.t.spill.is_empty(),
            _ => false,
        }
    }

    /// Its protocol, TLS and state, for the worker's gauges (`metrics::ConnClass`).
    pub fn class(&self) -> ConnClass {
        let protocol = match self.session {
            Session::Ws(_) => Protocol::Ws,
            Session::M2(_) => Protocol::Mongrel2,
            Session::Idle(..) | Session::Http(_) => Protocol::Http,
        };
        let state = if !self.t.is_open() {
            ConnState::Closing
        } else if self.t.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            ConnState::TlsHandshake
        } else if self.is_idle() {
            ConnState::Idle
        } else {
            ConnState::Active
        };
        ConnClass::new(protocol, self.t.tls.is_some(), state)
    }

    /// The worker needs this idle connection's slot: close it (a FIN; nothing is in flight
    /// either way, so nothing is lost but the connection).
    pub fn evict(&mut self, cx: &mut Ctx) {
        debug_assert!(self.is_idle());
        self.t.close(cx.pool);
    }

    /// The worker is at its connection limit with nothing idle to close: answer `503` with
    /// `Retry-After` and close, instead of leaving the client in the backlog with no answer.
    /// A TLS client gets it once its handshake is done.
    pub fn reject_overload(&mut self, cx: &mut Ctx) {
        if self.t.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            self.session = Session::Idle(Version::Http11, Wait::Reject);
            return;
        }
        cx.stats.response(503);
        self.t.write_out(cx.pool, |out| {
            http1::encode_overload_response(
                out,
                limits::OVERLOAD_RETRY_AFTER_S,
                b"zring is at its connection limit; retry shortly.\n",
            )
        });
        self.t.drain(cx);
    }

    /// True once `Close` was issued: the slot waits for `handle_closed`.
    pub fn is_closed(&self) -> bool {
        self.t.link == Link::Closed
    }

    /// Bytes held for this connection: received and not consumed (`spill`, `carry`, TLS
    /// ciphertext), and for the client and not handed to the runtime yet (`out`, TLS
    /// records). For the harness's bounds.
    #[cfg(any(test, feature = "harness"))]
    pub fn buffered(&self) -> (usize, usize) {
        let (tail, wire) = self.t.tls.as_ref().map_or((0, 0), |t| t.buffered());
        (
            self.t.spill.len() + self.t.carry.len() + tail,
            self.t.out.len() + wire,
        )
    }

    /// The counter part of the current session id, while a ZHTTP session is open.
    pub fn session_counter(&self) -> Option<u64> {
        if !self.t.is_open() {
            return None;
        }
        match &self.session {
            Session::Http(x) => Some(x.z.counter),
            Session::Ws(w) => Some(w.z.counter),
            _ => None,
        }
    }

    /// When the worker must call `handle_timeout` next.
    pub fn poll_timeout(&self, s: &Settings) -> Option<Instant> {
        self.t.deadline(s)
    }

    /// Restarts the client's inactivity timer.
    fn touch_client(&mut self, cx: &Ctx) {
        let between = self.t.is_open() && matches!(self.session, Session::Idle(..));
        self.t.touch_client(cx.now, cx.settings, between);
    }

    /// Tells the handler of an open ZHTTP session that the client is gone.
    fn cancel_session(&mut self, cx: &mut Ctx) {
        if let Some(z) = zhttp_of(&mut self.session) {
            z.cancel(&self.t, cx);
        }
    }

    // ---- inputs ----

    /// Bytes from the client.
    pub fn handle_recv(&mut self, cx: &mut Ctx, data: &mut [u8]) {
        // Closed: the runtime may still deliver this batch's reads before it runs `Close`.
        // Lingering/Draining: the response that ends the connection is queued; discard.
        if !self.t.is_open() {
            return;
        }
        if self.t.tls.is_some() {
            return self.tls_recv(cx, data);
        }
        self.recv_plain(cx, data);
    }

    /// Plaintext from the client (decrypted first on a TLS connection).
    fn recv_plain(&mut self, cx: &mut Ctx, data: &mut [u8]) {
        self.touch_client(cx);
        let Conn { t, session } = self;
        match session {
            Session::M2(m) => return m.recv(t, cx, data),
            Session::Ws(w) => return w.recv(t, cx, data),
            Session::Idle(_, wait) => wait.progress(t, cx, data.len()),
            Session::Http(x) => x.body_progress(t, cx, data.len()),
        }
        if self.t.spill.is_empty() {
            let n = self.process(cx, data);
            if n < data.len() && self.t.link != Link::Closed {
                self.t.spill = cx.pool.take();
                self.t.spill.extend_from_slice(&data[n..]);
            }
        } else {
            self.t.spill.extend_from_slice(data);
            self.reprocess(cx);
        }
    }

    /// The client closed its side or the socket failed.
    pub fn handle_eof(&mut self, cx: &mut Ctx) {
        if let Session::M2(m) = &mut self.session {
            m.eof(&mut self.t, cx);
        }
        self.t.eof = true;
        match self.t.link {
            Link::Closed | Link::Draining => {} // draining: keep flushing; close when done
            Link::Lingering => self.t.close(cx.pool),
            Link::Open => {
                self.cancel_session(cx);
                self.t.close(cx.pool);
            }
        }
    }

    /// The runtime wrote the last `Send` completely.
    pub fn handle_sent(&mut self, cx: &mut Ctx, buf: Vec<u8>) {
        let body = self
            .t
            .sending
            .take()
            .expect("handle_sent without a send in flight");
        if let Session::M2(m) = &mut self.session {
            m.sent(cx, buf.len());
        }
        cx.pool.give(buf);
        if let Some(z) = zhttp_of(&mut self.session) {
            // At most what the handler sent under its budget, itself at most
            // `--buffer-size` plus what was returned: well within u32.
            z.credits_owed = z.credits_owed.saturating_add(body as u32);
        }
        self.touch_client(cx);
        let Conn { t, session } = self;
        let next = match session {
            Session::Http(x) => x.sent(t, cx),
            Session::Ws(w) if t.is_open() => {
                w.z.credits_earned(t, cx);
                Next::Stay
            }
            _ => Next::Stay,
        };
        if next == Next::NextRequest {
            self.next_request(cx);
        }
    }

    /// A handler packet naming this connection's session (`seq` from the packet's id entry).
    pub fn handle_packet(&mut self, cx: &mut Ctx, pkt: HandlerPacket<'_>, seq: Option<u32>) {
        let Conn { t, session } = self;
        let next = match session {
            Session::Http(x) => x.handle_packet(t, cx, pkt, seq),
            Session::Ws(w) => {
                w.handle_packet(t, cx, pkt, seq);
                Next::Stay
            }
            // The session ended; a late packet is dropped as Condure does.
            Session::Idle(..) | Session::M2(_) => Next::Stay,
        };
        if next == Next::NextRequest {
            self.next_request(cx);
        }
    }

    /// A handler data packet for many ids, from which `frame` was built: an open WebSocket
    /// that can take the shared frame as it is sends it from there (no copy); anything else
    /// handles the packet as `handle_packet` does. True when the shared frame was taken.
    pub fn handle_packet_shared(
        &mut self,
        cx: &mut Ctx,
        pkt: HandlerPacket<'_>,
        seq: Option<u32>,
        frame: &SharedFrame,
    ) -> bool {
        if let Session::Ws(w) = &mut self.session {
            if w.handle_packet_shared(&mut self.t, cx, pkt, seq, frame) {
                return true;
            }
        }
        self.handle_packet(cx, pkt, seq);
        false
    }

    /// A Mongrel2 handler reply naming this connection: what it asks, and its raw body.
    pub fn handle_m2_reply(&mut self, cx: &mut Ctx, kind: ReplyKind, body: &[u8]) {
        if let Session::M2(m) = &mut self.session {
            m.handle_reply(&mut self.t, cx, kind, body);
        }
    }

    /// A deadline of this connection may have passed.
    pub fn handle_timeout(&mut self, cx: &mut Ctx) {
        let (s, now) = (cx.settings, cx.now);
        let Conn { t, session } = self;
        if let Session::M2(m) = session {
            m.timeout(t, cx);
        }
        if t.due(s, now, Timer::Linger) {
            return t.close(cx.pool);
        }
        if t.due(s, now, Timer::HandlerWait) {
            t.clear_timer(Timer::HandlerWait);
            match session {
                Session::Ws(w) if t.is_open() && w.flags.phase == ws::Phase::Open => {
                    return w.close_wait_expired(t, cx);
                }
                Session::Http(HttpExchange { z, .. }) | Session::Ws(WsSession { z, .. })
                    if t.is_open() && !z.handler_seen =>
                {
                    cx.stats.handler_wait_expired.inc();
                    return z.fail(
                        t,
                        cx,
                        503,
                        "Service Unavailable",
                        "No handler is available to answer this request.\n",
                    );
                }
                _ => {}
            }
        }
        if t.due(s, now, Timer::Credit) {
            t.clear_timer(Timer::Credit);
            if let (true, Some(z)) = (t.is_open(), zhttp_of(session)) {
                z.return_credits(t, cx);
            }
        }
        if t.due(s, now, Timer::Expiry) {
            if let Session::M2(m) = session {
                if m.proxy_timeout(t, cx) {
                    return;
                }
            }
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "session expired: no packet from the handler for 60 s"
            );
            return t.close(cx.pool);
        }
        if t.due(s, now, Timer::Request) {
            t.clear_timer(Timer::Request);
            if t.is_open() {
                match session {
                    Session::Idle(..) => return self.request_timeout(cx),
                    Session::Http(x) => return x.body_timeout(t, cx),
                    Session::M2(m) => return m.grace_over(t, cx),
                    _ => {}
                }
            }
        }
        if t.due(s, now, Timer::Client) {
            t.clear_timer(Timer::Client);
            self.cancel_session(cx);
            self.t.close(cx.pool);
        }
    }

    /// An idle connection's `Timer::Request` fired: no next request (close), no byte of a
    /// first request (close: nothing was asked, so nothing is answered, as Apache's
    /// mod_reqtimeout), or a head or req-mode body still incomplete (408, RFC 9110 §15.5.9).
    fn request_timeout(&mut self, cx: &mut Ctx) {
        let Session::Idle(_, wait) = self.session else {
            return;
        };
        if wait == Wait::KeepAlive || self.t.spill.is_empty() {
            crate::log!(crate::log::DEBUG, "conn", "{wait:?} deadline: closing");
            // Draining: nothing is owed, so no lingering close to hold up the exit.
            self.t.eof |= self.t.last_exchange;
            return self.t.drain(cx);
        }
        crate::log!(crate::log::DEBUG, "conn", "{wait:?} deadline: 408");
        self.fail_idle(
            cx,
            408,
            "Request Timeout",
            "The request did not arrive in time.\n",
        );
    }

    /// Whether this is an open ZHTTP session owned by handler `addr` (its latest `from`).
    pub fn handler_is(&self, addr: &Addr) -> bool {
        let z = match &self.session {
            Session::Http(x) => &x.z,
            Session::Ws(w) => &w.z,
            _ => return false,
        };
        self.t.is_open() && z.handler.as_deref() == Some(addr)
    }

    /// Handler `addr` is gone (its connection to zring went away; see `bridge::notify`): a
    /// session it owns can't go on, since a restarted handler knows nothing of it. A request
    /// with no response yet gets a 502, a response under way ends with a clean close (what
    /// was queued is delivered, then FIN), an open WebSocket gets a close frame 1011. A
    /// session no handler has taken yet is not its: it waits for `--handler-wait` as usual.
    pub fn handle_handler_gone(&mut self, cx: &mut Ctx, addr: &Addr) {
        if !self.handler_is(addr) {
            return;
        }
        let Conn { t, session } = self;
        match session {
            Session::Http(x) => x.handler_gone(t, cx),
            Session::Ws(w) => w.handler_gone(t, cx),
            _ => {}
        }
    }

    /// zring is draining (the first SIGTERM or a takeover; see `docs/operations.md`), or a
    /// connection was accepted during the drain. An idle connection waits
    /// `DRAIN_IDLE_GRACE_MS` for a request (served with `Connection: close`), then closes;
    /// an HTTP exchange with its handler goes on, and the connection closes
    /// when its response is written (`Connection: close` on a response that starts now); an
    /// open WebSocket gets a close 1001 and its handshake (bounded by the close wait); an
    /// upgrade still with its handler, and a Mongrel2 connection, are cut as at shutdown.
    /// A connection already ending is left to end. The worker cuts what is left at
    /// `--shutdown-timeout` with `handle_shutdown`.
    pub fn handle_drain(&mut self, cx: &mut Ctx) {
        if !self.t.is_open() {
            return;
        }
        self.t.last_exchange = true;
        let Conn { t, session } = self;
        match session {
            Session::Idle(..) => {
                // Nothing is asked of a handler yet, but a request may be on its way (a
                // kept-alive client writes its next one as soon as it has read a response;
                // a new one right after connecting): it is served, the last one. With none
                // by `DRAIN_IDLE_GRACE_MS` the connection closes (`request_timeout`: a FIN,
                // a TLS close_notify first, no linger).
                let grace = cx.now + Duration::from_millis(limits::DRAIN_IDLE_GRACE_MS);
                t.cap_timer(cx.settings, Timer::Request, grace);
            }
            Session::Http(x) => x.drain(t, cx),
            // A close handshake already under way goes on.
            Session::Ws(w) if w.flags.phase == ws::Phase::Open && w.flags.close_sent => {}
            Session::Ws(w) if w.flags.phase == ws::Phase::Open => {
                push_cancel(&mut w.z, t, cx);
                w.going_away(t, cx);
            }
            // A plain HTTP connection serves its last request (`m2_drain`).
            Session::M2(m) => {
                if !m.handle_drain(t, cx) {
                    self.handle_shutdown(cx);
                }
            }
            Session::Ws(_) => self.handle_shutdown(cx),
        }
    }

    /// zring is shutting down: tell the handler (a batched `cancel`, as pushpin-connmgr
    /// sends at shutdown) and close.
    pub fn handle_shutdown(&mut self, cx: &mut Ctx) {
        if let Some(z) = zhttp_of(&mut self.session) {
            push_cancel(z, &self.t, cx);
        }
        // Reading is over: what is queued is flushed, then the connection closes without
        // lingering (a lingering `shutdown` per connection would hold up the exit).
        self.t.eof = true;
        if let Session::Ws(w) = &mut self.session {
            if self.t.is_open() && w.flags.phase == ws::Phase::Open {
                // A WebSocket client is told why (1001), then the close drains as usual.
                let code = crate::proto::ws::close_code::GOING_AWAY;
                return w.fail(&mut self.t, cx, code, "");
            }
        }
        self.cancel_session(cx);
        self.t.close(cx.pool);
    }

    /// Returns the keep-alive this session owes its handler, consuming a `seq`.
    pub fn keep_alive(&mut self) -> Option<(&Addr, u64, u32)> {
        let Conn { t, session } = self;
        zhttp_of(session)?.keep_alive(t)
    }

    // ---- Mongrel2 proxy backends ----

    /// Backend slots this connection still holds (the worker closes them if the client
    /// slot goes without `flush` having done it).
    pub fn backend_slots(&self) -> ArrayVec<u32, 5> {
        match &self.session {
            Session::M2(m) => m.backend_slots(),
            _ => ArrayVec::new(),
        }
    }

    /// The worker's answer to `Output::Backend`: the slot it connects (`None`: none free).
    pub fn handle_backend_slot(&mut self, cx: &mut Ctx, slot: Option<u32>) {
        if let Session::M2(m) = &mut self.session {
            m.backend_assign(&mut self.t, cx, slot);
        }
    }

    pub fn handle_backend_connected(&mut self, cx: &mut Ctx, slot: u32, ok: bool) {
        if let Session::M2(m) = &mut self.session {
            m.backend_connected(&mut self.t, cx, slot, ok);
        }
    }

    pub fn handle_backend_sent(&mut self, cx: &mut Ctx, slot: u32, buf: Vec<u8>) {
        match &mut self.session {
            Session::M2(m) => m.backend_sent(&mut self.t, cx, slot, buf),
            _ => cx.pool.give(buf),
        }
    }

    pub fn handle_backend_recv(&mut self, cx: &mut Ctx, slot: u32, data: &[u8]) {
        if let Session::M2(m) = &mut self.session {
            m.backend_recv(&mut self.t, cx, slot, data);
        }
    }

    pub fn handle_backend_eof(&mut self, cx: &mut Ctx, slot: u32) {
        if let Session::M2(m) = &mut self.session {
            m.backend_eof(&mut self.t, cx, slot);
        }
    }

    // ---- output ----

    /// Emits the I/O this connection's state calls for now (see the module's contract).
    /// `paused_by_worker`: the worker's outbox is full, so reading pauses.
    pub fn flush(&mut self, cx: &mut Ctx, paused_by_worker: bool) {
        self.log_access(cx);
        if let Session::M2(m) = &mut self.session {
            m.proxy_flush(&self.t, cx);
            if let Some(addr) = m.backend_wanted(&self.t) {
                cx.out.push(Output::Backend(addr));
            }
        }
        let sent = self.t.flush(cx, paused_by_worker);
        if let (true, Session::Ws(w)) = (sent, &mut self.session) {
            w.frames_sent();
        }
    }

    // ---- ZHTTP requests ----

    /// `--access-log`: a session's line goes out once zring has its whole response (HTTP),
    /// or once the connection stops being open (a WebSocket; an exchange cut short, with
    /// the status written so far or none).
    fn log_access(&mut self, cx: &mut Ctx) {
        let (z, done) = match &mut self.session {
            Session::Http(x) => {
                let done = x.z.response_done;
                (&mut x.z, done)
            }
            Session::Ws(w) => (&mut w.z, false),
            _ => return,
        };
        if z.access.is_none() || (!done && self.t.is_open()) {
            return;
        }
        let Some(entry) = z.access.take() else {
            return;
        };
        let handler = z.handler.clone();
        let line = (*entry).line(cx, self.t.peer, handler.as_deref().map(|a| &a[..]));
        cx.out.push(Output::AccessLog { server: 0, line });
    }

    /// The response is written and the connection is kept: read the next request.
    fn next_request(&mut self, cx: &mut Ctx) {
        let version = match &self.session {
            Session::Http(x) => x.z.version,
            _ => Version::Http11,
        };
        let (wait, d) = if self.t.spill.is_empty() {
            (Wait::KeepAlive, cx.settings.keepalive_timeout)
        } else {
            (Wait::Head, cx.settings.head_timeout) // the next request began already
        };
        self.session = Session::Idle(version, wait);
        self.t.set_timer(cx.settings, Timer::Request, cx.now + d);
        self.t.clear_timer(Timer::HandlerWait);
        self.t.clear_timer(Timer::Expiry);
        self.touch_client(cx);
        if !self.t.spill.is_empty() {
            self.reprocess(cx); // the next pipelined request
        }
    }

    fn reprocess(&mut self, cx: &mut Ctx) {
        let mut input = std::mem::take(&mut self.t.spill);
        let n = self.process(cx, &input);
        input.drain(..n);
        if input.is_empty() || self.t.link == Link::Closed {
            cx.pool.give(input);
        } else {
            self.t.spill = input;
        }
    }

    /// Consumes what it can of `input` (heads, and bodies under the credits); returns the
    /// bytes consumed.
    fn process(&mut self, cx: &mut Ctx, input: &[u8]) -> usize {
        let mut used = 0;
        // Bounded: each turn consumes input or starts an exchange, and an exchange ends only
        // after its response, which needs an outside event.
        loop {
            if !self.t.is_open() {
                return input.len(); // draining: the rest is discarded
            }
            let Conn { t, session } = self;
            match session {
                Session::Idle(..) => {
                    let n = self.parse_head(cx, &input[used..]);
                    if n == 0 && matches!(self.session, Session::Idle(..)) {
                        return used;
                    }
                    used += n;
                }
                Session::Http(x) => return used + x.feed(t, cx, &input[used..]),
                // What follows an upgrade head is frames: they wait in `spill` until the
                // handler accepts the upgrade.
                Session::Ws(_) => return used,
                Session::M2(_) => unreachable!("Mongrel2 connections read through m2"),
            }
            if used == input.len() {
                return used;
            }
        }
    }

    /// A request head from `input` (and, in req mode, its whole body): starts the exchange
    /// and returns the bytes it took; 0 until the head (and body) are all here.
    fn parse_head(&mut self, cx: &mut Ctx, input: &[u8]) -> usize {
        if input.is_empty() {
            return 0;
        }
        let mut headers = [httparse::EMPTY_HEADER; limits::HEADERS_MAX];
        let req = match http1::parse_request_limited(input, &mut headers, cx.settings.buffer_size) {
            Ok(http1::Status::Partial) => return 0,
            Ok(http1::Status::Complete(r)) => r,
            Err(e) => {
                let (code, reason) = e.status();
                self.fail_idle(cx, code, reason, &format!("{reason}\n"));
                return input.len();
            }
        };
        let head_len = req.head_len;
        if self.t.mode == Mode::Stream || req.upgrade_websocket {
            self.start_request(cx, &req, b"");
            return head_len;
        }
        // req mode sends the head and the whole body in one packet: wait until all of it is
        // here, then send from the input itself (no copy of the head to keep).
        let limit = cx.settings.body_buffer_size;
        let rest = &input[head_len..];
        match req.body {
            BodyKind::Length(n) if n > limit as u64 => {
                self.fail_idle(
                    cx,
                    413,
                    "Payload Too Large",
                    "Request body exceeds the limit.\n",
                );
                input.len()
            }
            BodyKind::Length(n) if (rest.len() as u64) < n => {
                self.await_req_body(cx);
                0
            }
            BodyKind::Length(n) => {
                self.start_request(cx, &req, &rest[..n as usize]);
                head_len + n as usize
            }
            BodyKind::None => {
                self.start_request(cx, &req, b"");
                head_len
            }
            BodyKind::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                let mut body = cx.pool.take();
                let mut used = 0;
                let outcome = loop {
                    match decoder.decode(&rest[used..]) {
                        Err(e) => break Err(e.status()),
                        Ok(d) => {
                            used += d.consumed;
                            if let Some(data) = d.data {
                                if body.len() + data.len() > limit {
                                    break Err((413, "Payload Too Large"));
                                }
                                body.extend_from_slice(data);
                            }
                            if d.done {
                                break Ok(true);
                            }
                            if d.consumed == 0 {
                                break Ok(false);
                            }
                        }
                    }
                };
                let used = match outcome {
                    Ok(true) => {
                        self.start_request(cx, &req, &body);
                        head_len + used
                    }
                    Ok(false) => {
                        self.await_req_body(cx);
                        0
                    }
                    Err((code, reason)) => {
                        self.fail_idle(cx, code, reason, &format!("{reason}\n"));
                        input.len()
                    }
                };
                cx.pool.give(body);
                used
            }
        }
    }

    /// req mode: a whole head is here and its body is not: from now on the head deadline
    /// gives way to the body rate.
    fn await_req_body(&mut self, cx: &mut Ctx) {
        if let Session::Idle(_, wait @ (Wait::Head | Wait::KeepAlive)) = &mut self.session {
            *wait = Wait::Body { window: 0 };
            // With the rate check off, the head deadline goes on bounding the request.
            if cx.settings.body_min_bytes > 0 {
                let at = cx.now + cx.settings.body_timeout;
                self.t.set_timer(cx.settings, Timer::Request, at);
            }
        }
    }

    /// An error response to input that starts no exchange, then drain.
    fn fail_idle(&mut self, cx: &mut Ctx, code: u16, reason: &str, body: &str) {
        let version = match self.session {
            Session::Idle(v, _) => v,
            _ => Version::Http11,
        };
        if let Some(kind) = ErrorKind::from_status(code) {
            cx.stats.protocol_error(kind);
        }
        zhttp_session::write_error(&mut self.t, cx, version, code, reason, body);
        self.t.drain(cx);
    }

    /// A request head was read: its exchange (or WebSocket session) starts, and its first
    /// packet goes to a handler.
    fn start_request(&mut self, cx: &mut Ctx, req: &http1::Request, body: &[u8]) {
        self.t.clear_timer(Timer::Credit);
        self.t.clear_timer(Timer::Request);
        cx.stats.requests.inc();
        let mut z = ZhttpSession::new(cx, req.version);
        if cx.settings.access_log {
            z.access = Some(zhttp_session::AccessEntry::new(cx, req));
        }
        if !req.upgrade_websocket {
            // req mode's bodies were held to `--body-buffer-size` before (`parse_head`).
            debug_assert!(HttpExchange::new_len_ok(req, self.t.mode, cx.settings));
            let mut x = HttpExchange::new(z, req);
            if self.t.mode == Mode::Stream {
                x.restart_body_period(&mut self.t, cx);
            }
            self.session = Session::Http(x);
            return self.send_first_packet(cx, req, body);
        }
        if self.t.mode == Mode::Req {
            // Condure's answer, word for word.
            self.session = Session::Idle(req.version, Wait::Head);
            return self.fail_idle(
                cx,
                400,
                "Bad Request",
                "WebSockets not supported on req mode interface.\n",
            );
        }
        let mut w = WsSession::new(z);
        let ok = w.begin(&mut self.t, cx, req);
        self.session = Session::Ws(w);
        if ok {
            self.send_first_packet(cx, req, body);
        }
    }

    /// The first packet of the session just started: the request head (stream mode, PUSH;
    /// the body follows under credits) or the whole request (req mode, DEALER).
    fn send_first_packet(&mut self, cx: &mut Ctx, req: &http1::Request, body: &[u8]) {
        let websocket = req.upgrade_websocket;
        let mut uri: ArrayVec<u8, { limits::URI_BYTES_MAX + 300 }> = ArrayVec::new();
        build_uri(&mut uri, self.t.tls.is_some(), req, websocket);
        let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
        for h in req.headers {
            headers.push((h.name.as_bytes(), h.value));
        }
        let mut peer_text: ArrayVec<u8, { limits::PEER_TEXT_BYTES_MAX }> = ArrayVec::new();
        let peer = self.t.peer.map(|p| {
            use std::io::Write;
            let _ = write!(ArrayWriter(&mut peer_text), "{}", p.ip());
            p.port()
        });
        let peer = peer.map(|port| (&peer_text[..], port));
        let now = cx.now;
        self.t.set_timer(
            cx.settings,
            Timer::HandlerWait,
            now + cx.settings.handler_wait,
        );
        let expires = Some(now + cx.settings.handler_wait);
        let mode = self.t.mode;
        let mut deflate = false;
        let Conn { session, .. } = self;
        let (z, body_done) = match session {
            Session::Http(x) => {
                if mode == Mode::Req {
                    x.body_sent_whole();
                }
                let done = x.body_done();
                (&mut x.z, done)
            }
            Session::Ws(w) => {
                deflate = w.deflate.is_some();
                (&mut w.z, true)
            }
            _ => unreachable!("a request starts an HTTP exchange or a WebSocket session"),
        };
        let id = z.id(cx);
        let mut data = Vec::with_capacity(512);
        cx.stats.zhttp_out(zhttp::Kind::Data);
        if mode == Mode::Req {
            zhttp::encode_req_request(
                &mut data,
                &id,
                req.method.as_bytes(),
                &uri,
                &headers,
                body,
                peer,
            );
            cx.packet(OutPacket {
                route: Route::Dealer,
                data,
                expires,
            });
            return;
        }
        zhttp::encode_request_head(
            &mut data,
            &zhttp::RequestHead {
                from: &cx.settings.instance_id,
                id: &id,
                seq: 0,
                method: req.method.as_bytes(),
                uri: &uri,
                headers: &headers,
                // Condure offers 3/4 of its buffer when deflate is on (inflated data grows).
                credits: if deflate {
                    (cx.settings.buffer_size * 3 / 4) as u32
                } else {
                    cx.settings.buffer_size as u32
                },
                stream: !websocket,
                more: !body_done,
                body: b"",
                peer,
            },
        );
        z.seq_out = 1;
        cx.packet(OutPacket {
            route: Route::Push,
            data,
            expires,
        });
    }
}

impl Wait {
    /// `n` bytes arrived on an idle connection: a kept-alive connection's next request has
    /// begun (its head deadline starts), or a req-mode body progressed.
    fn progress(&mut self, t: &mut Transport, cx: &Ctx, n: usize) {
        match self {
            Wait::Head | Wait::Reject => {}
            Wait::KeepAlive => {
                *self = Wait::Head;
                t.set_timer(
                    cx.settings,
                    Timer::Request,
                    cx.now + cx.settings.head_timeout,
                );
            }
            Wait::Body { window } => {
                *window = window.saturating_add(n.min(u32::MAX as usize) as u32);
                if *window >= cx.settings.body_min_bytes && cx.settings.body_min_bytes > 0 {
                    *window = 0;
                    t.set_timer(
                        cx.settings,
                        Timer::Request,
                        cx.now + cx.settings.body_timeout,
                    );
                }
            }
        }
    }
}

/// The session's `cancel` as an `Output::Cancel` for the worker's batch; the session then
/// has no handler, so nothing else goes to it (no individual cancel after this one).
fn push_cancel(z: &mut ZhttpSession, t: &Transport, cx: &mut Ctx) {
    if let Some((addr, counter, seq)) = z.take_cancel(t) {
        cx.out.push(Output::Cancel(addr, counter, seq));
    }
}

/// The ZHTTP part of an HTTP or WebSocket session.
fn zhttp_of(session: &mut Session) -> Option<&mut ZhttpSession> {
    match session {
        Session::Http(x) => Some(&mut x.z),
        Session::Ws(w) => Some(&mut w.z),
        _ => None,
    }
}

/// `fmt::Write`-style adapter over a fixed array (ids and addresses never allocate).
pub(super) struct ArrayWriter<'a, const N: usize>(&'a mut ArrayVec<u8, N>);

impl<const N: usize> std::io::Write for ArrayWriter<'_, N> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .try_extend_from_slice(b)
            .map_err(|_| std::io::ErrorKind::WriteZero)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `scheme://host/target`, as Condure rebuilds it.
fn build_uri<const N: usize>(
    uri: &mut ArrayVec<u8, N>,
    tls: bool,
    req: &http1::Request,
    websocket: bool,
) {
    let target = req.target.as_bytes();
    if target.starts_with(b"http://") || target.starts_with(b"https://") {
        let _ = uri.try_extend_from_slice(target);
        return;
    }
    let scheme: &[u8] = match (websocket, tls) {
        (true, _) => ws::scheme(tls),
        (false, true) => b"https://",
        (false, false) => b"http://",
    };
    let _ = uri.try_extend_from_slice(scheme);
    let _ = uri.try_extend_from_slice(req.host.unwrap_or(b"localhost"));
    let _ = uri.try_extend_from_slice(target);
}
