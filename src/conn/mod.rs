//! One client connection's life, sans-IO: request head → ZHTTP session with a handler →
//! request body under the handler's credits → response (streamed, returning credits as it
//! is written) → next request on the same connection, or close. No sockets, threads or
//! clocks here: the worker feeds bytes, handler packets and `now`, and drains the I/O
//! commands and packets this produces. The same code runs under both runtimes, the tests,
//! the fuzzers and the benches.
//!
//! Inputs are `handle_*`; after every input the worker calls [`Conn::poll_io`] to collect
//! I/O commands and re-arms the slot's timer from [`Conn::deadline`]. Packets to handlers
//! go straight into the caller's batch (`Ctx::packets`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use crate::bridge::{Addr, OutPacket, Route};
use crate::config::Mode;
use crate::limits;
use crate::proto::http1::{self, BodyKind, ChunkedDecoder, Version};
use crate::proto::zhttp::{self, Kind};
use crate::runtime::Command;

mod fanout;
mod id;
pub mod m2;
mod m2proxy;
pub mod pool;
#[cfg(test)]
mod tests;
mod tls;
mod ws;
pub use fanout::SharedFrame;
pub use id::{ConnId, CONN_ID_BYTES_MAX};
pub use pool::{Handlers, Pool};

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
    /// Most WebSocket frames queued for one client (`--messages-max`).
    pub messages_max: usize,
    /// `--compression`: offer permessage-deflate.
    pub compression: bool,
    pub deflate: crate::proto::ws_deflate::Config,
    /// The instant connection deadlines count from (the worker's start).
    pub epoch: Instant,
    /// Mongrel2 mode (`--m2-config`): the loaded config; `None` in ZHTTP mode.
    pub m2: Option<Arc<crate::m2serve::Setup>>,
}

/// A handler packet as a connection sees it: the decoded fields, whose spans index `buf`.
/// (The bridge's `InPacket` owns the ZeroMQ message; connections only borrow this view.)
#[derive(Clone, Copy)]
pub struct HandlerPacket<'a> {
    pub packet: &'a zhttp::Packet,
    pub buf: &'a [u8],
}

/// Everything a `handle_*` call may touch besides the connection itself.
pub struct Ctx<'a> {
    pub now: Instant,
    pub settings: &'a Settings,
    pub slot: u32,
    pub packets: &'a mut Vec<OutPacket>,
    pub pool: &'a mut Pool,
    pub handlers: &'a mut Handlers,
    /// The worker's request counter (the `N` of new session ids).
    pub counter: &'a mut u64,
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a request head (or idle between requests).
    Head,
    /// A request is with a handler.
    Session,
    /// The last response is queued; flush, then shut down writing and linger.
    Draining,
    /// Writing is shut down; read and discard until the peer closes or the linger ends.
    Lingering,
    /// `Close` was issued; waiting for the runtime's `handle_closed`.
    Closed,
}

/// Deadlines a connection may have; the slot's timer is the earliest.
#[derive(Clone, Copy)]
enum Timer {
    /// Client inactivity (stream) or the whole cycle (req).
    Client = 0,
    /// No handler has taken the request yet: 503 when it fires.
    HandlerWait = 1,
    /// No packet from the handler for 60 s: drop the session.
    Expiry = 2,
    /// Lingering close.
    Linger = 3,
    /// Credits owed to the handler that were held back (`limits::CREDIT_RETURN_DELAY_MS`).
    Credit = 4,
}
const TIMERS: usize = 5;

/// How the request body arrives.
#[derive(Debug)]
enum Body {
    None,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    /// The chunked body is fully decoded; `carry` holds what is not sent yet.
    ChunkedDone,
}

/// The response being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    CloseDelimited,
    None,
}

pub struct Conn {
    mode: Mode,
    /// The TLS session of a connection on a tls listener.
    tls: Option<Box<tls::TlsConn>>,
    peer: Option<SocketAddr>,
    state: State,
    /// Per-worker request counter: the `N` of the session id `W-S-N`.
    counter: u64,
    seq_out: u32,
    seq_in: u32,
    /// The handler that owns the session: the `from` of its latest packet.
    handler: Option<Arc<Addr>>,
    /// Request-body bytes the handler has granted.
    credits: u64,
    /// Response-body bytes the handler may still send before we return credits.
    budget: u64,
    /// Credits earned by bytes written to the client, not yet returned.
    credits_owed: u32,
    /// The largest body the handler has sent in one packet this session: credits go back at
    /// once while its budget is below this, so a handler that waits for a whole message's
    /// worth of credits is not held back by the delayed return.
    packet_max: u32,
    body: Body,
    /// Decoded request body not yet sent (chunked bodies, and req mode's whole body).
    carry: Vec<u8>,
    /// Received bytes not consumed yet: a partial head, body past the credits, or the next
    /// pipelined request. Invariant: empty (no capacity) while the connection is idle.
    spill: Vec<u8>,
    /// Bytes for the client not yet handed to the runtime.
    out: Vec<u8>,
    /// Response-body bytes in `out` (credits to return once written).
    out_body: u64,
    /// Response-body bytes in the send in flight; `Some` while a send is in flight.
    sending: Option<u64>,
    framing: Framing,
    version: Version,
    keep_alive: bool,
    head_request: bool,
    expect_continue: bool,
    handler_seen: bool,
    response_started: bool,
    response_done: bool,
    body_done: bool,
    handoff: bool,
    /// The handler's latest data packet for this session named many ids (a fan-out): the
    /// credits its frames earn may be held back (`credits_earned`). Condure returns credits
    /// per write, and zring does so too for packets to one id, but a broadcast handler
    /// cannot pace on 100,000 credit packets and one round should not cost them.
    fanout: bool,
    paused: bool,
    eof: bool,
    shutdown_sent: bool,
    close_sent: bool,
    /// Received bytes kept before reading pauses: one request head (stream), or a head and
    /// a whole body (req).
    spill_max: u32,
    /// Milliseconds since `Settings::epoch`, 0 when unset.
    deadlines: [u64; TIMERS],
    /// WebSocket decoder and handshake state; `None` for HTTP and for an idle WebSocket.
    ws: Option<Box<ws::WsRx>>,
    /// permessage-deflate, when negotiated.
    deflate: Option<Box<ws::WsDeflate>>,
    wsf: ws::WsFlags,
    /// Mongrel2 mode (`--m2-config`): see `m2.rs`.
    m2: Option<Box<m2::M2Conn>>,
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
            mode,
            tls: tls.map(tls::TlsConn::new),
            peer,
            state: State::Head,
            counter: 0,
            seq_out: 0,
            seq_in: 0,
            handler: None,
            credits: 0,
            budget: 0,
            credits_owed: 0,
            packet_max: 0,
            body: Body::None,
            carry: Vec::new(),
            spill: Vec::new(),
            out: Vec::new(),
            out_body: 0,
            sending: None,
            framing: Framing::None,
            version: Version::Http11,
            keep_alive: false,
            head_request: false,
            expect_continue: false,
            handler_seen: false,
            response_started: false,
            response_done: false,
            body_done: false,
            handoff: false,
            fanout: false,
            paused: false,
            eof: false,
            shutdown_sent: false,
            close_sent: false,
            spill_max: (s.buffer_size
                + if mode == Mode::Req {
                    s.body_buffer_size
                } else {
                    0
                }) as u32,
            deadlines: [0; TIMERS],
            ws: None,
            deflate: None,
            wsf: ws::WsFlags::default(),
            m2: None,
        };
        match c.tls {
            Some(_) => c.tls_handshake_deadline(now, s),
            None => c.touch_client(now, s),
        }
        c
    }

    /// True once `Close` was issued: the slot waits for `handle_closed`.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The counter part of the current session id, when a session is open.
    pub fn session_counter(&self) -> Option<u64> {
        (self.state == State::Session).then_some(self.counter)
    }

    pub fn deadline(&self, s: &Settings) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let ms = self.deadlines.iter().filter(|&&d| d != 0).min()?;
        Some(s.epoch + Duration::from_millis(*ms))
    }

    fn set_timer(&mut self, s: &Settings, t: Timer, at: Instant) {
        // Whole milliseconds since the worker's epoch, rounded up so it never fires early;
        // half the size of an `Instant`. At least 1, since 0 means unset.
        let us = at.saturating_duration_since(s.epoch).as_micros();
        self.deadlines[t as usize] = (us.div_ceil(1000) as u64).max(1);
    }

    fn clear_timer(&mut self, t: Timer) {
        self.deadlines[t as usize] = 0;
    }

    fn touch_client(&mut self, now: Instant, s: &Settings) {
        if self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            return; // the handshake deadline stands
        }
        let d = match self.mode {
            Mode::Stream => s.stream_timeout,
            Mode::Req => s.req_timeout,
        };
        // req mode times the whole cycle: only (re)start it between requests.
        if self.mode == Mode::Stream || self.state == State::Head {
            self.set_timer(s, Timer::Client, now + d);
        }
    }

    /// The current session's id, as it goes on the wire.
    fn id(&self, s: &Settings, slot: u32) -> ArrayVec<u8, CONN_ID_BYTES_MAX> {
        ConnId {
            worker: s.worker,
            slot,
            counter: self.counter,
        }
        .encode()
    }

    // ---- inputs ----

    /// Bytes from the client.
    pub fn handle_recv(&mut self, cx: &mut Ctx, data: &mut [u8]) {
        // Closed: the runtime may still deliver this batch's reads before it runs `Close`.
        // Lingering/Draining: the response that ends the connection is queued; discard.
        if matches!(
            self.state,
            State::Closed | State::Lingering | State::Draining
        ) {
            return;
        }
        if self.tls.is_some() {
            return self.tls_recv(cx, data);
        }
        self.recv_plain(cx, data);
    }

    /// Plaintext from the client (decrypted first on a TLS connection).
    fn recv_plain(&mut self, cx: &mut Ctx, data: &mut [u8]) {
        self.touch_client(cx.now, cx.settings);
        if self.m2.is_some() {
            return self.m2_recv(cx, data);
        }
        if self.wsf.phase != ws::Phase::None {
            return self.ws_recv(cx, data);
        }
        if self.spill.is_empty() {
            let n = self.process(cx, data);
            if n < data.len() && self.state != State::Closed {
                self.spill = cx.pool.take();
                self.spill.extend_from_slice(&data[n..]);
            }
        } else {
            self.spill.extend_from_slice(data);
            self.reprocess(cx);
        }
    }

    /// The client closed its side or the socket failed.
    pub fn handle_eof(&mut self, cx: &mut Ctx) {
        if self.m2.is_some() {
            self.m2_eof(cx);
        }
        self.eof = true;
        match self.state {
            State::Closed => {}
            State::Lingering => self.close(cx),
            State::Draining => {} // keep flushing; close when done
            State::Head => self.close(cx),
            State::Session => {
                self.cancel(cx);
                self.close(cx);
            }
        }
    }

    /// The runtime wrote the last `Send` completely.
    pub fn handle_sent(&mut self, cx: &mut Ctx, buf: Vec<u8>) {
        let body = self
            .sending
            .take()
            .expect("handle_sent without a send in flight");
        if self.m2.is_some() {
            self.m2_sent(cx, buf.len());
        }
        cx.pool.give(buf);
        // At most what the handler sent under its budget, itself at most `--buffer-size`
        // plus what was returned: well within u32.
        self.credits_owed = self.credits_owed.saturating_add(body as u32);
        self.touch_client(cx.now, cx.settings);
        if self.state == State::Session {
            self.credits_earned(cx);
            self.maybe_finish_request(cx);
        }
    }

    /// A handler packet naming this connection's session (`seq` from the packet's id entry).
    pub fn handle_packet(&mut self, cx: &mut Ctx, pkt: HandlerPacket<'_>, seq: Option<u32>) {
        if !self.accept_packet(cx, pkt, seq) {
            return;
        }
        if self.wsf.phase != ws::Phase::None {
            return self.ws_packet(cx, pkt);
        }
        let p = &pkt.packet;
        match p.kind {
            Kind::Data => self.handle_data(cx, pkt),
            Kind::Credit => {
                self.credits += u64::from(p.credits.unwrap_or(0));
                self.pump(cx);
            }
            Kind::KeepAlive => {}
            Kind::HandoffStart => {
                self.send_packet(cx, |out, from, id, seq| {
                    zhttp::encode_control(out, from, id, seq, Kind::HandoffProceed)
                });
                self.handoff = true;
            }
            Kind::Cancel | Kind::Error => {
                // The handler ended the session itself: nothing goes back to it (no
                // handler address means `cancel` sends nothing).
                self.handler = None;
                if self.response_started {
                    self.close(cx);
                } else {
                    self.fail_no_response(cx);
                }
            }
            _ => {
                crate::log!(
                    crate::log::DEBUG,
                    "conn",
                    "ignoring {:?} on an HTTP session",
                    p.kind
                );
            }
        }
        if let Some(c) = p.credits.filter(|_| p.kind == Kind::Data) {
            self.credits += u64::from(c);
            self.pump(cx);
        }
        self.maybe_finish_request(cx);
    }

    /// What every handler packet for the session does first: drop it if the session is
    /// over, check its `seq` (failing the session if it is wrong), follow the handler's
    /// address, and refresh the session's timers. False when the packet goes no further.
    fn accept_packet(&mut self, cx: &mut Ctx, pkt: HandlerPacket<'_>, seq: Option<u32>) -> bool {
        if self.state != State::Session {
            return false; // the session ended; a late packet is dropped as Condure does
        }
        let p = &pkt.packet;
        let buf = pkt.buf;
        if p.kind == Kind::Data {
            self.fanout = p.ids.len() > 1;
        }
        if let Some(seq) = seq {
            if seq != self.seq_in {
                crate::log!(
                    crate::log::DEBUG,
                    "conn",
                    "bad seq {seq}, expected {}",
                    self.seq_in
                );
                // Packets were lost or reordered: the session can't go on. The handler
                // caused it, so no cancel goes back; the client keeps what was queued.
                self.handler = None;
                self.fail(
                    cx,
                    502,
                    "Bad Gateway",
                    "The handler's packets arrived out of order.\n",
                );
                return false;
            }
        }
        self.seq_in = self.seq_in.wrapping_add(1);
        if let Some(from) = p.from {
            let from = from.get(buf);
            if self.handler.as_deref().map(|a| &a[..]) != Some(from) {
                self.handler = cx.handlers.intern(from);
            }
        }
        if !self.handler_seen {
            self.handler_seen = true;
            self.clear_timer(Timer::HandlerWait);
        }
        if self.mode == Mode::Stream {
            self.set_timer(
                cx.settings,
                Timer::Expiry,
                cx.now + Duration::from_millis(limits::SESSION_EXPIRY_MS),
            );
        }
        self.handoff = false;
        true
    }

    /// A deadline of this connection may have passed.
    pub fn handle_timeout(&mut self, cx: &mut Ctx) {
        if self.m2.is_some() {
            self.m2_timeout(cx);
        }
        let now = cx.now;
        let now_ms = now.saturating_duration_since(cx.settings.epoch).as_millis() as u64;
        let due = |t: Timer, c: &Conn| {
            let d = c.deadlines[t as usize];
            d != 0 && d <= now_ms
        };
        if due(Timer::Linger, self) {
            return self.close(cx);
        }
        if due(Timer::HandlerWait, self) {
            self.clear_timer(Timer::HandlerWait);
            if self.state == State::Session && self.wsf.phase == ws::Phase::Open {
                return self.ws_close_wait_expired(cx);
            }
            if self.state == State::Session && !self.handler_seen {
                return self.fail(
                    cx,
                    503,
                    "Service Unavailable",
                    "No handler is available to answer this request.\n",
                );
            }
        }
        if due(Timer::Credit, self) {
            self.clear_timer(Timer::Credit);
            if self.state == State::Session {
                self.return_credits(cx);
            }
        }
        if due(Timer::Expiry, self) && self.m2.is_some() && self.m2_proxy_timeout(cx) {
            return;
        }
        if due(Timer::Expiry, self) {
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "session expired: no packet from the handler for 60 s"
            );
            return self.close(cx);
        }
        if due(Timer::Client, self) {
            self.clear_timer(Timer::Client);
            if self.state == State::Session {
                self.cancel(cx);
            }
            self.close(cx);
        }
    }

    /// zring is shutting down: tell the handler (Condure sends cancels) and close.
    pub fn handle_shutdown(&mut self, cx: &mut Ctx) {
        // Reading is over: what is queued is flushed, then the connection closes without
        // lingering (a lingering `shutdown` per connection would hold up the exit).
        self.eof = true;
        if self.state == State::Session && self.wsf.phase == ws::Phase::Open {
            // A WebSocket client is told why (1001), then the close drains as usual.
            return self.ws_fail(cx, crate::proto::ws::close_code::GOING_AWAY, "");
        }
        if self.state == State::Session {
            self.cancel(cx);
        }
        self.close(cx);
    }

    /// Returns the keep-alive this session owes its handler, consuming a `seq`.
    pub fn keep_alive(&mut self) -> Option<(&Addr, u64, u32)> {
        if self.state != State::Session || self.handoff || self.mode != Mode::Stream {
            return None;
        }
        let addr: &Addr = self.handler.as_ref()?;
        let seq = self.seq_out;
        self.seq_out += 1;
        Some((addr, self.counter, seq))
    }

    /// Collects the I/O commands this connection needs now.
    pub fn poll_io(
        &mut self,
        slot: u32,
        paused_by_worker: bool,
        cmds: &mut std::collections::VecDeque<Command>,
        pool: &mut Pool,
    ) {
        if self.m2.is_some() {
            self.m2_proxy_poll(cmds);
        }
        if self.state == State::Closed {
            if !self.close_sent {
                self.close_sent = true;
                cmds.push_back(Command::Close { slot });
            }
            return;
        }
        let wire_pending = self.tls.as_ref().is_some_and(|t| t.has_wire());
        if self.sending.is_none() && (!self.out.is_empty() || wire_pending) {
            let buf = match self.tls.as_mut() {
                None => std::mem::take(&mut self.out),
                Some(t) => match t.seal(&mut self.out, pool) {
                    Ok(wire) => wire,
                    Err(e) => {
                        crate::log!(crate::log::DEBUG, "tls", "{e}: closing");
                        self.close_with(pool);
                        self.close_sent = true;
                        cmds.push_back(Command::Close { slot });
                        return;
                    }
                },
            };
            self.ws_sending();
            self.sending = Some(std::mem::take(&mut self.out_body));
            cmds.push_back(Command::Send { slot, buf });
        }
        if self.sending.is_none() && self.state == State::Draining && self.eof {
            if let Some(buf) = self.tls.as_mut().and_then(|t| t.close_notify(pool)) {
                // No lingering, but TLS still ends with close_notify (RFC 8446 §6.1).
                self.sending = Some(0);
                cmds.push_back(Command::Send { slot, buf });
                return;
            }
            self.state = State::Closed;
            self.close_sent = true;
            cmds.push_back(Command::Close { slot });
            return;
        }
        if self.sending.is_none() && self.state == State::Draining && !self.shutdown_sent {
            if let Some(buf) = self.tls.as_mut().and_then(|t| t.close_notify(pool)) {
                // TLS ends with close_notify before the TCP shutdown (RFC 8446 §6.1).
                self.sending = Some(0);
                cmds.push_back(Command::Send { slot, buf });
                return;
            }
            self.shutdown_sent = true;
            self.state = State::Lingering;
            cmds.push_back(Command::ShutdownWrite { slot });
        }
        let want_pause = paused_by_worker || self.spill.len() >= self.spill_max as usize;
        if want_pause != self.paused && !self.eof {
            self.paused = want_pause;
            cmds.push_back(if want_pause {
                Command::PauseRecv { slot }
            } else {
                Command::ResumeRecv { slot }
            });
        }
    }

    // ---- request side ----

    fn reprocess(&mut self, cx: &mut Ctx) {
        let mut input = std::mem::take(&mut self.spill);
        let n = self.process(cx, &input);
        input.drain(..n);
        if input.is_empty() || self.state == State::Closed {
            cx.pool.give(input);
        } else {
            self.spill = input;
        }
    }

    /// Consumes what it can of `input`; returns the bytes consumed.
    fn process(&mut self, cx: &mut Ctx, input: &[u8]) -> usize {
        let mut used = 0;
        // Bounded: each turn either consumes input or changes state, and a request ends only
        // after its response, which needs an outside event.
        loop {
            let before = (used, self.state);
            match self.state {
                State::Head => used += self.parse_head(cx, &input[used..]),
                State::Session => used += self.feed_body(cx, &input[used..]),
                _ => return input.len(), // draining: the rest is discarded
            }
            if (used, self.state) == before || used == input.len() && self.state != State::Head {
                return used;
            }
            if used == input.len() {
                return used;
            }
        }
    }

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
                self.fail(cx, code, reason, &format!("{reason}\n"));
                return input.len();
            }
        };
        let head_len = req.head_len;
        if self.mode == Mode::Stream || req.upgrade_websocket {
            self.start_request(cx, &req, b"");
            return head_len;
        }
        // req mode sends the head and the whole body in one packet: wait until all of it is
        // here, then send from the input itself (no copy of the head to keep).
        let limit = cx.settings.body_buffer_size;
        let rest = &input[head_len..];
        match req.body {
            BodyKind::Length(n) if n > limit as u64 => {
                self.fail(
                    cx,
                    413,
                    "Payload Too Large",
                    "Request body exceeds the limit.\n",
                );
                input.len()
            }
            BodyKind::Length(n) if (rest.len() as u64) < n => 0,
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
                    Ok(false) => 0,
                    Err((code, reason)) => {
                        self.fail(cx, code, reason, &format!("{reason}\n"));
                        input.len()
                    }
                };
                cx.pool.give(body);
                used
            }
        }
    }

    fn start_request(&mut self, cx: &mut Ctx, req: &http1::Request, body: &[u8]) {
        self.version = req.version;
        self.keep_alive = req.keep_alive;
        self.head_request = req.method == "HEAD";
        self.expect_continue = req.expect_continue && req.version == Version::Http11;
        *cx.counter += 1;
        self.counter = *cx.counter;
        self.seq_out = 0;
        self.seq_in = 0;
        self.handler = None;
        self.handler_seen = false;
        self.credits = 0;
        self.budget = cx.settings.buffer_size as u64;
        self.credits_owed = 0;
        self.packet_max = 0;
        self.fanout = false;
        self.clear_timer(Timer::Credit);
        self.response_started = false;
        self.response_done = false;
        self.handoff = false;
        self.body = match req.body {
            BodyKind::None => Body::None,
            BodyKind::Length(0) => Body::None,
            BodyKind::Length(n) => Body::Length(n),
            BodyKind::Chunked => Body::Chunked(Box::default()),
        };
        self.body_done = matches!(self.body, Body::None);
        self.ws = None;
        self.deflate = None;
        self.wsf = ws::WsFlags::default();
        if req.upgrade_websocket {
            if self.mode == Mode::Req {
                // Condure's answer, word for word.
                return self.fail(
                    cx,
                    400,
                    "Bad Request",
                    "WebSockets not supported on req mode interface.\n",
                );
            }
            self.state = State::Session; // so a refusal drains like any response
            if !self.ws_begin(cx, req) {
                return;
            }
            self.body = Body::None;
        }
        if let Body::Length(n) = self.body {
            if self.mode == Mode::Req && n > cx.settings.body_buffer_size as u64 {
                return self.fail(
                    cx,
                    413,
                    "Payload Too Large",
                    "Request body exceeds the limit.\n",
                );
            }
        }
        let mut uri: ArrayVec<u8, { limits::URI_BYTES_MAX + 300 }> = ArrayVec::new();
        build_uri(
            &mut uri,
            self.tls.is_some(),
            req,
            self.wsf.phase != ws::Phase::None,
        );
        let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
        for h in req.headers {
            headers.push((h.name.as_bytes(), h.value));
        }
        let mut peer_text: ArrayVec<u8, { limits::PEER_TEXT_BYTES_MAX }> = ArrayVec::new();
        let peer = self.peer.map(|p| {
            use std::io::Write;
            let _ = write!(ArrayWriter(&mut peer_text), "{}", p.ip());
            p.port()
        });
        let peer = peer.map(|port| (&peer_text[..], port));
        self.state = State::Session;
        self.set_timer(
            cx.settings,
            Timer::HandlerWait,
            cx.now + cx.settings.handler_wait,
        );
        if self.mode == Mode::Req {
            let id = self.id(cx.settings, cx.slot);
            let mut data = Vec::with_capacity(512);
            zhttp::encode_req_request(
                &mut data,
                &id,
                req.method.as_bytes(),
                &uri,
                &headers,
                body,
                peer,
            );
            cx.packets.push(OutPacket {
                route: Route::Dealer,
                data,
                expires: Some(cx.now + cx.settings.handler_wait),
            });
            self.body_done = true;
            self.body = Body::None;
            return;
        }
        let id = self.id(cx.settings, cx.slot);
        let mut data = Vec::with_capacity(512);
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
                credits: if self.deflate.is_some() {
                    (cx.settings.buffer_size * 3 / 4) as u32
                } else {
                    cx.settings.buffer_size as u32
                },
                stream: self.wsf.phase == ws::Phase::None,
                more: !self.body_done,
                body: b"",
                peer,
            },
        );
        self.seq_out = 1;
        cx.packets.push(OutPacket {
            route: Route::Push,
            data,
            expires: Some(cx.now + cx.settings.handler_wait),
        });
    }
}

impl Conn {
    // ---- request body (stream mode) ----

    /// Takes request-body bytes from `input` as far as the handler's credits allow.
    fn feed_body(&mut self, cx: &mut Ctx, input: &[u8]) -> usize {
        if self.body_done {
            return 0; // pipelined input waits for the response
        }
        match &mut self.body {
            Body::None | Body::ChunkedDone => 0,
            Body::Length(_) => self.pump_length(cx, input),
            Body::Chunked(_) => {
                let used = self.decode_chunked(cx, input);
                self.pump(cx);
                used
            }
        }
    }

    fn pump_length(&mut self, cx: &mut Ctx, input: &[u8]) -> usize {
        let Body::Length(remaining) = self.body else {
            return 0;
        };
        if !self.may_send_body() {
            return 0;
        }
        let n = remaining.min(self.credits).min(input.len() as u64);
        if n == 0 {
            return 0;
        }
        let left = remaining - n;
        self.credits -= n;
        self.body = if left == 0 {
            Body::None
        } else {
            Body::Length(left)
        };
        self.body_done = left == 0;
        let chunk = &input[..n as usize];
        self.send_packet(cx, |out, from, id, seq| {
            zhttp::encode_body(out, from, id, seq, chunk, left > 0)
        });
        n as usize
    }

    /// Decodes the next chunk's data (or the end of the body) into `carry`. One chunk at a
    /// time, and only once `carry` is sent: Condure forwards each chunk as its own packet.
    fn decode_chunked(&mut self, cx: &mut Ctx, input: &[u8]) -> usize {
        if !self.carry.is_empty() || !self.may_send_body() {
            return 0;
        }
        let Body::Chunked(decoder) = &mut self.body else {
            return 0;
        };
        let mut used = 0;
        // Bounded: each step consumes input or ends the loop.
        while used < input.len() {
            match decoder.decode(&input[used..]) {
                Err(e) => {
                    let (code, reason) = e.status();
                    self.fail(cx, code, reason, &format!("{reason}\n"));
                    return input.len();
                }
                Ok(d) => {
                    used += d.consumed;
                    if let Some(data) = d.data.filter(|d| !d.is_empty()) {
                        if self.carry.capacity() == 0 {
                            self.carry = cx.pool.take();
                        }
                        self.carry.extend_from_slice(data);
                    }
                    if d.done {
                        self.body = Body::ChunkedDone;
                        break;
                    }
                    if d.consumed == 0 || !self.carry.is_empty() {
                        break;
                    }
                }
            }
        }
        used
    }

    fn may_send_body(&self) -> bool {
        // Condure waits for the handler's first packet (its address and credits) before
        // sending any body, and sends nothing while a handoff is pending.
        self.state == State::Session && self.handler.is_some() && !self.handoff
    }

    /// Sends decoded chunked body from `carry` under the credits; the last packet has no `more`.
    fn pump(&mut self, cx: &mut Ctx) {
        if self.expect_continue && self.credits > 0 && !self.response_started && !self.body_done {
            self.expect_continue = false;
            self.write_out(cx, http1::encode_continue);
        }
        if !self.may_send_body() || self.body_done {
            return;
        }
        match self.body {
            // Body bytes wait in `spill`; let `reprocess` feed them.
            Body::Length(n) if n > 0 && !self.spill.is_empty() => self.reprocess(cx),
            Body::Chunked(_) | Body::ChunkedDone => {
                // Each chunk goes with `more` (split further if credits are short); the end
                // of the body is a packet of its own without body or `more`, as Condure.
                let n = (self.carry.len() as u64).min(self.credits) as usize;
                if n > 0 {
                    self.credits -= n as u64;
                    let carry = std::mem::take(&mut self.carry);
                    self.send_packet(cx, |out, from, id, seq| {
                        zhttp::encode_body(out, from, id, seq, &carry[..n], true)
                    });
                    self.carry = carry;
                    self.carry.drain(..n);
                    if self.carry.is_empty() {
                        cx.pool.give(std::mem::take(&mut self.carry));
                    }
                }
                if matches!(self.body, Body::ChunkedDone) && self.carry.is_empty() {
                    self.send_packet(cx, |out, from, id, seq| {
                        zhttp::encode_body(out, from, id, seq, b"", false)
                    });
                    self.body_done = true;
                    self.body = Body::None;
                } else if self.carry.is_empty() && !self.spill.is_empty() {
                    self.reprocess(cx);
                }
            }
            _ => {}
        }
    }

    /// Encodes one packet for this session's handler (ROUTER) with the next `seq`.
    fn send_packet(&mut self, cx: &mut Ctx, f: impl FnOnce(&mut Vec<u8>, &[u8], &[u8], u32)) {
        // The address is copied into the route; no need to touch the Arc's count.
        let Some(addr) = self.handler.as_deref().cloned() else {
            return;
        };
        let id = self.id(cx.settings, cx.slot);
        let mut data = Vec::with_capacity(512);
        f(&mut data, &cx.settings.instance_id, &id, self.seq_out);
        self.seq_out += 1;
        cx.packets.push(OutPacket {
            route: Route::Router(addr),
            data,
            expires: None,
        });
    }

    /// Bytes written to the client earned credits: return them now (frames for one id, as
    /// Condure; or the handler is running low), else, for a fan-out, later together with
    /// what later frames earn.
    fn credits_earned(&mut self, cx: &mut Ctx) {
        if self.credits_owed == 0 {
            return;
        }
        let low = (cx.settings.buffer_size as u64 / 2).max(u64::from(self.packet_max));
        if !self.fanout || self.budget < low {
            return self.return_credits(cx);
        }
        if self.deadlines[Timer::Credit as usize] == 0 {
            self.set_timer(
                cx.settings,
                Timer::Credit,
                cx.now + Duration::from_millis(limits::CREDIT_RETURN_DELAY_MS),
            );
        }
    }

    /// The handler sent `n` body bytes under its credits.
    fn spend_budget(&mut self, n: u64) {
        self.budget = self.budget.saturating_sub(n);
        self.packet_max = self.packet_max.max(n.min(u64::from(u32::MAX)) as u32);
    }

    fn return_credits(&mut self, cx: &mut Ctx) {
        self.clear_timer(Timer::Credit);
        if self.credits_owed == 0 || self.response_done || self.handoff || self.handler.is_none() {
            return;
        }
        let n = std::mem::take(&mut self.credits_owed);
        self.budget += u64::from(n);
        self.send_packet(cx, |out, from, id, seq| {
            zhttp::encode_credit(out, from, id, seq, n)
        });
    }

    /// Tells the handler the client is gone (only if it has claimed the session: Condure).
    fn cancel(&mut self, cx: &mut Ctx) {
        if self.state == State::Session && !self.response_done && self.mode == Mode::Stream {
            self.send_packet(cx, |out, from, id, seq| {
                zhttp::encode_control(out, from, id, seq, Kind::Cancel)
            });
        }
    }

    // ---- response side ----

    fn handle_data(&mut self, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = &pkt.packet;
        let buf = pkt.buf;
        let body = p.body.get(buf);
        if self.response_done {
            return;
        }
        if !self.response_started {
            let Some(code) = p.code.filter(|c| (100..=999).contains(c)).map(|c| c as u16) else {
                return self.fail(
                    cx,
                    502,
                    "Bad Gateway",
                    "The handler sent a response without a status.\n",
                );
            };
            let more = p.more && self.mode == Mode::Stream;
            let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
            for (n, v) in &p.headers {
                headers.push((n.get(buf), v.get(buf)));
            }
            let reason = p.reason.map(|r| r.get(buf)).unwrap_or(b"");
            // Body still unread means this connection cannot carry another request.
            let context = http1::ResponseContext {
                version: self.version,
                head_request: self.head_request,
                keep_alive: self.keep_alive && (self.body_done || self.mode == Mode::Req),
            };
            let Ok(framing) =
                http1::choose_framing(context, code, &headers, more, body.len() as u64)
            else {
                return self.fail_invalid_response(cx);
            };
            self.keep_alive = framing.keep_alive;
            self.framing = match framing.body {
                _ if !framing.send_body => Framing::None,
                http1::ResponseBody::Length(n) => Framing::Length(n),
                http1::ResponseBody::Chunked => Framing::Chunked,
                http1::ResponseBody::CloseDelimited => Framing::CloseDelimited,
                http1::ResponseBody::None => Framing::None,
            };
            let head = http1::ResponseHead {
                version: self.version,
                code,
                reason,
                headers: &headers,
                body: framing.body,
                keep_alive: framing.keep_alive,
            };
            let mut written = true;
            self.write_out(cx, |out| {
                written = http1::encode_response_head(out, &head).is_ok()
            });
            if !written {
                return self.fail_invalid_response(cx);
            }
            self.response_started = true;
        } else if p.more && body.len() as u64 > self.budget {
            // Only streamed packets are held to the credits: a final packet is already in
            // memory whole, and handlers commonly send a whole response in one packet.
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "received too much data from handler"
            );
            return self.close(cx);
        }
        if self.mode == Mode::Stream {
            self.spend_budget(body.len() as u64);
        }
        self.write_body(cx, body);
        if !p.more || self.mode == Mode::Req {
            self.end_body(cx);
            self.response_done = true;
            self.clear_timer(Timer::Expiry);
        }
    }

    fn write_body(&mut self, cx: &mut Ctx, body: &[u8]) {
        if body.is_empty() {
            return;
        }
        match self.framing {
            Framing::None => {}
            Framing::Length(left) => {
                // A handler that sends more than its Content-Length would corrupt the stream.
                let n = (body.len() as u64).min(left);
                self.framing = Framing::Length(left - n);
                self.write_out(cx, |out| out.extend_from_slice(&body[..n as usize]));
            }
            Framing::Chunked => self.write_out(cx, |out| http1::encode_chunk(out, body)),
            Framing::CloseDelimited => self.write_out(cx, |out| out.extend_from_slice(body)),
        }
        self.out_body += body.len() as u64;
    }

    fn end_body(&mut self, cx: &mut Ctx) {
        match self.framing {
            Framing::Chunked => self.write_out(cx, http1::encode_last_chunk),
            Framing::Length(left) if left > 0 => self.keep_alive = false, // short body: close
            _ => {}
        }
    }

    fn write_out(&mut self, cx: &mut Ctx, f: impl FnOnce(&mut Vec<u8>)) {
        if self.out.capacity() == 0 {
            self.out = cx.pool.take();
        }
        f(&mut self.out);
    }

    /// After a response is complete and written: reuse the connection or close it.
    fn maybe_finish_request(&mut self, cx: &mut Ctx) {
        if self.state != State::Session
            || !self.response_done
            || self.sending.is_some()
            || !self.out.is_empty()
        {
            return;
        }
        if !self.keep_alive || !self.body_done || self.eof {
            return self.drain(cx);
        }
        self.state = State::Head;
        self.clear_timer(Timer::HandlerWait);
        self.clear_timer(Timer::Expiry);
        self.touch_client(cx.now, cx.settings);
        if !self.spill.is_empty() {
            self.reprocess(cx); // the next pipelined request
        }
    }

    /// 502 for a handler response zring cannot write (bad status, headers or framing).
    fn fail_invalid_response(&mut self, cx: &mut Ctx) {
        self.fail(
            cx,
            502,
            "Bad Gateway",
            "The handler sent an invalid response.\n",
        );
    }

    /// 502 for a handler that ended the session (cancel, error) before any response.
    fn fail_no_response(&mut self, cx: &mut Ctx) {
        self.fail(
            cx,
            502,
            "Bad Gateway",
            "The handler ended the request without a response.\n",
        );
    }

    /// Answers with an error response (unless a response already started) and closes.
    fn fail(&mut self, cx: &mut Ctx, code: u16, reason: &str, body: &str) {
        if self.state == State::Session && !self.handler_seen {
            // Nobody claimed the request; nothing to cancel.
        } else if self.state == State::Session && !self.response_done {
            self.cancel(cx);
        }
        if self.response_started {
            // Too late for a status: deliver what was queued, then close, so the client
            // sees a truncated response rather than losing bytes it was already owed.
            return self.drain(cx);
        }
        let version = self.version;
        self.write_out(cx, |out| {
            http1::encode_error_response(out, version, code, reason.as_bytes(), body.as_bytes())
        });
        self.response_started = true;
        self.response_done = true;
        self.drain(cx);
    }

    /// Flush what is queued, then shut down writing and linger before closing.
    fn drain(&mut self, cx: &mut Ctx) {
        if matches!(
            self.state,
            State::Closed | State::Draining | State::Lingering
        ) {
            return;
        }
        if self.eof {
            // The client will not read a lingering close; flush and close.
            self.state = State::Draining;
            self.set_timer(
                cx.settings,
                Timer::Linger,
                cx.now + Duration::from_millis(limits::LINGER_MS),
            );
            return;
        }
        self.state = State::Draining;
        self.clear_timer(Timer::HandlerWait);
        self.clear_timer(Timer::Expiry);
        self.set_timer(
            cx.settings,
            Timer::Linger,
            cx.now + Duration::from_millis(limits::LINGER_MS),
        );
        self.release_buffers(cx);
    }

    fn release_buffers(&mut self, cx: &mut Ctx) {
        cx.pool.give(std::mem::take(&mut self.spill));
        cx.pool.give(std::mem::take(&mut self.carry));
    }

    /// Closes at once (anything unsent is dropped).
    fn close(&mut self, cx: &mut Ctx) {
        self.close_with(cx.pool);
    }

    fn close_with(&mut self, pool: &mut Pool) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.deadlines = [0; TIMERS];
        pool.give(std::mem::take(&mut self.spill));
        pool.give(std::mem::take(&mut self.carry));
        pool.give(std::mem::take(&mut self.out));
        if let Some(t) = self.tls.as_mut() {
            t.release(pool);
        }
    }
}

/// `fmt::Write`-style adapter over a fixed array (ids and addresses never allocate).
struct ArrayWriter<'a, const N: usize>(&'a mut ArrayVec<u8, N>);

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
