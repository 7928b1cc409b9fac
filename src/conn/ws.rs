//! A WebSocket session over ZHTTP, from the upgrade request on: the handshake with the
//! handler (101, or a rejection sent as plain HTTP), then client frames → ZHTTP packets under
//! the handler's credits and handler packets → frames under zring's, and the close
//! handshake. Same sans-IO rules as the rest of `conn`: bytes, packets and `now` in; bytes,
//! packets and deadlines out, through the connection's `Transport`.
//!
//! Client frames are decoded from `spill` (unmasked in place), so an idle WebSocket holds no
//! buffer; and its decoder (`ws::Session`) is dropped whenever it stands between frames with
//! no message open, so an idle WebSocket holds no decoder either.
use std::time::Duration;

use arrayvec::ArrayVec;

use super::transport::{Timer, Transport};
use super::zhttp_session::ZhttpSession;
use super::{Ctx, HandlerPacket};
use crate::limits;
use crate::metrics::ErrorKind;
use crate::proto::http1;
use crate::proto::ws::{self, AcceptKey, Event, MessageKind, Opcode, Utf8Validator};
use crate::proto::ws_deflate;
use crate::proto::zhttp::{self, ContentType, Kind};

/// The client side's decoder, boxed and held only mid-frame or mid-message (and while
/// upgrading, for the accept key).
pub(super) struct WsRx {
    /// The client's frames as far as they have been read.
    pub session: ws::Session,
    /// The `Sec-WebSocket-Accept` value, until the 101 is written.
    pub accept: Option<AcceptKey>,
}

/// permessage-deflate state of one connection, boxed and only there when negotiated. The
/// compressor and decompressor allocate their zlib state lazily (see `ws_deflate`).
pub(super) struct WsDeflate {
    pub params: ws_deflate::Params,
    /// Invariant: `Some` exactly when the agreed parameters keep the server's context
    /// (`--compression-context takeover`, and the client did not ask for
    /// `server_no_context_takeover`). Without context takeover the connection holds no
    /// compressor: its messages are compressed by the worker's `ws_deflate::SharedCompressor`
    /// (`Pool::deflate`), and a fan-out's by one compression shared by every target.
    pub tx: Option<ws_deflate::Compressor>,
    pub rx: ws_deflate::Decompressor,
    /// Inflated text is checked here: the frame session can't see inside compressed data.
    pub utf8: Utf8Validator,
}

/// Most bytes inflated per call: bounds the output buffer whatever the credits.
const INFLATE_CHUNK_BYTES: usize = 64 * 1024;

/// Where the handshake or the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) enum Phase {
    /// Not a WebSocket (plain HTTP).
    #[default]
    None,
    /// The upgrade request went to a handler; waiting for its 101 or its refusal.
    Upgrading,
    /// The 101 is written: frames both ways.
    Open,
}

/// Per-session WebSocket flags (a few bytes).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct WsFlags {
    pub phase: Phase,
    /// The client's current data message is binary (else text).
    pub rx_binary: bool,
    /// The last packet for the client's current message went out without `more`.
    pub rx_final_sent: bool,
    /// The client's current message is compressed (RSV1).
    pub rx_compressed: bool,
    /// Part of the client's current message waits for credits: in `carry` (as it came off
    /// the wire, compressed or not) and, for a compressed one, inside the inflater.
    pub rx_pending: bool,
    /// What `carry` holds ends the message.
    pub carry_fin: bool,
    /// A message from the handler is open (its last packet had `more`): next frames are
    /// continuations.
    pub tx_open: bool,
    /// A close frame went to the client.
    pub close_sent: bool,
    /// The client's close frame arrived.
    pub close_received: bool,
    /// Frames queued while `out` already held `--buffer-size` bytes: what Condure would
    /// hold in its message queue rather than its buffer, bounded by `--messages-max`.
    pub frames_over: u16,
}

/// Invariants: `rx` is `Some` while upgrading (it holds the accept key) and while a frame
/// or message is half decoded, `None` otherwise (an idle WebSocket holds no decoder);
/// `deflate` is `Some` exactly when permessage-deflate was negotiated; after `close_sent`
/// no frame but the close goes to the client.
pub(super) struct WsSession {
    pub z: ZhttpSession,
    /// WebSocket decoder and handshake state.
    pub rx: Option<Box<WsRx>>,
    /// permessage-deflate, when negotiated.
    pub deflate: Option<Box<WsDeflate>>,
    pub flags: WsFlags,
}

impl WsSession {
    /// A session for an upgrade request; `begin` checks the handshake.
    pub fn new(z: ZhttpSession) -> WsSession {
        WsSession {
            z,
            rx: None,
            deflate: None,
            flags: WsFlags::default(),
        }
    }

    pub(super) fn decoder_config(&self) -> ws::SessionConfig {
        ws::SessionConfig {
            message_bytes_max: limits::WS_MESSAGE_BYTES_MAX_DEFAULT,
            compression: self.deflate.is_some(),
        }
    }

    /// The upgrade request is valid so far as `http1` can tell: check the handshake, and
    /// either refuse it here or hand it to a handler (the caller sends the first packet).
    /// Returns false when the request was refused.
    pub(super) fn begin(&mut self, t: &mut Transport, cx: &mut Ctx, req: &http1::Request) -> bool {
        let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
        for h in req.headers {
            headers.push((h.name.as_bytes(), h.value));
        }
        if !matches!(req.body, http1::BodyKind::None | http1::BodyKind::Length(0)) {
            // After the head come frames; a body would make them ambiguous.
            self.z.fail(
                t,
                cx,
                400,
                "Bad Request",
                "A WebSocket handshake has no body.\n",
            );
            return false;
        }
        match ws::validate_request(req.method.as_bytes(), req.version, &headers) {
            Err(e) => {
                let version = req.version;
                let (code, _) = e.status();
                if let Some(kind) = ErrorKind::from_status(code) {
                    cx.stats.protocol_error(kind);
                }
                cx.stats.response(code);
                if let Some(a) = &mut self.z.access {
                    a.status = code;
                }
                t.write_out(cx.pool, |out| ws::encode_rejection(out, version, e));
                self.z.response_started = true;
                self.z.response_done = true;
                t.drain(cx);
                false
            }
            Ok(hs) => {
                self.deflate = None;
                if cx.settings.compression {
                    let offers = hs.extensions();
                    if let Some(params) = ws_deflate::negotiate(&cx.settings.deflate, offers) {
                        self.deflate = Some(Box::new(WsDeflate {
                            tx: (!params.server_no_context_takeover).then(|| {
                                ws_deflate::Compressor::new(&params, &cx.settings.deflate)
                            }),
                            rx: ws_deflate::Decompressor::new(
                                &params,
                                limits::WS_MESSAGE_BYTES_MAX_DEFAULT,
                            ),
                            params,
                            utf8: Utf8Validator::default(),
                        }));
                    }
                }
                let config = self.decoder_config();
                self.rx = Some(Box::new(WsRx {
                    session: ws::Session::new(config),
                    accept: Some(hs.accept),
                }));
                self.flags = WsFlags {
                    phase: Phase::Upgrading,
                    ..WsFlags::default()
                };
                true
            }
        }
    }

    /// A handler packet naming this session (`seq` from the packet's id entry).
    pub(super) fn handle_packet(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        pkt: HandlerPacket<'_>,
        seq: Option<u32>,
    ) {
        if !self.z.accept_packet(t, cx, pkt, seq) {
            return;
        }
        let p = pkt.packet;
        let buf = pkt.buf;
        match p.kind {
            // Any packet ends a handoff (the caller cleared it): resume reading the client.
            Kind::KeepAlive => self.pump(t, cx),
            Kind::HandoffStart => {
                self.z
                    .send_packet(cx, Kind::HandoffProceed, |out, from, id, seq| {
                        zhttp::encode_control(out, from, id, seq, Kind::HandoffProceed)
                    });
                self.z.handoff = true;
            }
            Kind::Credit => {
                self.z.credits += u64::from(p.credits.unwrap_or(0));
                self.pump(t, cx);
            }
            Kind::Error if self.flags.phase == Phase::Upgrading => {
                if p.condition.map(|c| c.get(buf)) == Some(b"rejected") {
                    self.z.handler = None;
                    self.reject(t, cx, pkt);
                } else {
                    self.z.handler = None;
                    self.z.fail_no_response(t, cx);
                }
            }
            Kind::Cancel | Kind::Error => {
                self.z.handler = None;
                match self.flags.phase {
                    Phase::Open => self.fail(t, cx, ws::close_code::INTERNAL_ERROR, ""),
                    _ => self.z.fail_no_response(t, cx),
                }
            }
            Kind::Data if self.flags.phase == Phase::Upgrading => self.accept(t, cx, pkt),
            Kind::Data => self.handler_message(t, cx, pkt),
            Kind::Ping | Kind::Pong if self.flags.phase == Phase::Open => {
                let body = p.body.get(buf);
                if let Some(c) = p.credits {
                    self.z.credits += u64::from(c);
                }
                let opcode = if p.kind == Kind::Ping {
                    Opcode::Ping
                } else {
                    Opcode::Pong
                };
                if !self.flags.close_sent {
                    // A control frame carries at most 125 bytes; a longer handler payload is
                    // cut rather than breaking the framing.
                    let body = &body[..body.len().min(ws::CONTROL_PAYLOAD_BYTES_MAX)];
                    self.z.spend_budget(body.len() as u64);
                    t.write_out(cx.pool, |out| {
                        ws::encode_frame(out, true, false, opcode, body)
                    });
                    t.out_body += body.len() as u64;
                }
                self.pump(t, cx);
            }
            Kind::Close if self.flags.phase == Phase::Open => {
                let code = p.code.map_or(ws::close_code::NORMAL, |c| c as u16);
                let reason = String::from_utf8_lossy(p.body.get(buf));
                self.send_close(t, cx, code, &reason);
            }
            _ => {
                crate::log!(
                    crate::log::DEBUG,
                    "conn",
                    "ignoring {:?} on a WebSocket session in {:?}",
                    p.kind,
                    self.flags.phase
                );
            }
        }
    }

    /// The handler is gone: an open WebSocket is failed with 1011 (its close frame, then
    /// the connection drains and closes, lingering for the client's close); an upgrade
    /// not answered yet gets a 502.
    pub(super) fn handler_gone(&mut self, t: &mut Transport, cx: &mut Ctx) {
        self.z.handler = None;
        if self.z.response_done {
            return;
        }
        match self.flags.phase {
            Phase::Open => self.fail(t, cx, ws::close_code::INTERNAL_ERROR, "handler gone"),
            _ => self.z.handler_gone(t, cx),
        }
    }

    /// The handler's answer to the upgrade: a 101 opens the WebSocket; any other status is
    /// sent as a plain HTTP response and the connection closes (Condure would switch to
    /// WebSocket framing whatever the status; the client could not know what it got).
    fn accept(&mut self, t: &mut Transport, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = &pkt.packet;
        let buf = pkt.buf;
        if p.code != Some(101) {
            return self.reject(t, cx, pkt);
        }
        let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
        for (n, v) in &p.headers {
            headers.push((n.get(buf), v.get(buf)));
        }
        // Nothing was decoded while upgrading: the decoder is fresh, so it goes too (an idle
        // WebSocket holds none; the first frame brings a new one).
        let accept = self
            .rx
            .take()
            .and_then(|w| w.accept)
            .expect("an upgrading session has its accept key");
        let mut extension = Vec::new();
        if let Some(d) = &self.deflate {
            d.params.encode_response(&mut extension);
        }
        let extension = (!extension.is_empty()).then_some(&extension[..]);
        let mut written = true;
        t.write_out(cx.pool, |out| {
            written = ws::encode_accept(out, &accept, None, extension, &headers).is_ok();
        });
        if !written {
            return self.z.fail_invalid_response(t, cx);
        }
        cx.stats.response(101);
        if let Some(a) = &mut self.z.access {
            a.status = 101;
        }
        self.z.response_started = true;
        self.flags.phase = Phase::Open;
        // Condure: a 101 with no credits means our own buffer size (pushpin-proxy sends none).
        self.z.credits = match p.credits {
            Some(c) if c > 0 => u64::from(c),
            _ => cx.settings.buffer_size as u64,
        };
        self.pump(t, cx);
    }

    /// Sends the handler's refusal (`error`/`rejected`, or a non-101 response) as plain
    /// HTTP without any upgrade headers, then closes.
    fn reject(&mut self, t: &mut Transport, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = &pkt.packet;
        let buf = pkt.buf;
        let Some(code) = p.code.filter(|c| (200..=999).contains(c)).map(|c| c as u16) else {
            return self.z.fail(
                t,
                cx,
                502,
                "Bad Gateway",
                "The handler refused the WebSocket without a status.\n",
            );
        };
        let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
        for (n, v) in &p.headers {
            let n = n.get(buf);
            let hop = [&b"upgrade"[..], b"connection", b"sec-websocket-accept"]
                .iter()
                .any(|h| n.eq_ignore_ascii_case(h));
            if !hop {
                headers.push((n, v.get(buf)));
            }
        }
        let body = p.body.get(buf);
        let reason = p.reason.map(|r| r.get(buf)).unwrap_or(b"");
        let context = http1::ResponseContext {
            version: self.z.version,
            head_request: false,
            keep_alive: false,
        };
        let Ok(framing) = http1::choose_framing(context, code, &headers, false, body.len() as u64)
        else {
            return self.z.fail_invalid_response(t, cx);
        };
        let head = http1::ResponseHead {
            version: self.z.version,
            code,
            reason,
            headers: &headers,
            body: framing.body,
            keep_alive: false,
        };
        let mut written = true;
        t.write_out(cx.pool, |out| {
            written = http1::encode_response_head(out, &head).is_ok();
            if written && framing.send_body {
                out.extend_from_slice(body);
            }
        });
        if !written {
            return self.z.fail_invalid_response(t, cx);
        }
        cx.stats.response(code);
        if let Some(a) = &mut self.z.access {
            a.status = code;
        }
        self.z.response_started = true;
        self.z.response_done = true;
        self.flags.phase = Phase::None;
        self.rx = None;
        t.drain(cx);
    }

    /// A data packet from the handler: one frame to the client.
    fn handler_message(&mut self, t: &mut Transport, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = &pkt.packet;
        let body = p.body.get(pkt.buf);
        if let Some(c) = p.credits {
            self.z.credits += u64::from(c);
        }
        if self.flags.close_sent {
            return; // nothing may follow our close frame
        }
        if body.len() as u64 > self.z.budget {
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "received too much data from handler"
            );
            return self.fail(t, cx, ws::close_code::INTERNAL_ERROR, "");
        }
        if t.out.len() >= cx.settings.buffer_size {
            self.flags.frames_over = self.flags.frames_over.saturating_add(1);
        }
        if usize::from(self.flags.frames_over) > cx.settings.messages_max {
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "more than --messages-max frames queued for the client"
            );
            return self.fail(t, cx, ws::close_code::INTERNAL_ERROR, "");
        }
        let opcode = if self.flags.tx_open {
            Opcode::Continuation
        } else if p.content_type == Some(ContentType::Binary) {
            Opcode::Binary
        } else {
            Opcode::Text
        };
        let first = !self.flags.tx_open;
        self.flags.tx_open = p.more;
        self.z.spend_budget(body.len() as u64);
        if let Some(d) = self.deflate.as_mut() {
            // One compressed message per handler message; a fragment is flushed so it goes
            // out now. RSV1 marks the first frame only (RFC 7692 §6).
            let mut z = cx.pool.take();
            match d.tx.as_mut() {
                Some(tx) => {
                    tx.compress(body, !p.more, &mut z);
                    if p.more {
                        tx.flush(&mut z);
                    }
                }
                None => {
                    let bits = d.params.server_window_bits();
                    let config = &cx.settings.deflate;
                    cx.pool
                        .deflate
                        .compress(config, bits, body, !p.more, &mut z);
                }
            }
            t.write_out(cx.pool, |out| {
                out.extend_from_slice(
                    ws::encode_header(!p.more, first, opcode, z.len() as u64).as_bytes(),
                );
                out.extend_from_slice(&z);
            });
            cx.pool.give(z);
        } else {
            t.write_out(cx.pool, |out| {
                out.extend_from_slice(
                    ws::encode_header(!p.more, false, opcode, body.len() as u64).as_bytes(),
                );
                out.extend_from_slice(body);
            });
        }
        t.out_body += body.len() as u64;
        self.pump(t, cx);
    }

    /// zring is draining: close 1001 and the close handshake (the connection closes once
    /// the client's close is in, or after `WS_CLOSE_WAIT_MS`). The caller took the
    /// handler's cancel first, so nothing more goes to the handler.
    pub(super) fn going_away(&mut self, t: &mut Transport, cx: &mut Ctx) {
        self.send_close(t, cx, ws::close_code::GOING_AWAY, "");
    }

    /// Queues our close frame; the connection closes once the client's close is in (or
    /// after a bounded wait for it).
    fn send_close(&mut self, t: &mut Transport, cx: &mut Ctx, code: u16, reason: &str) {
        if self.flags.close_sent {
            return;
        }
        self.flags.close_sent = true;
        let reason = truncate_utf8(reason, ws::CONTROL_PAYLOAD_BYTES_MAX - 2);
        t.write_out(cx.pool, |out| ws::encode_close(out, code, reason));
        if self.flags.close_received {
            self.finish(t, cx);
        } else {
            t.set_timer(
                cx.settings,
                Timer::HandlerWait,
                cx.now + Duration::from_millis(limits::WS_CLOSE_WAIT_MS),
            );
        }
    }

    /// The close handshake is complete (or given up): flush, then close the TCP connection.
    fn finish(&mut self, t: &mut Transport, cx: &mut Ctx) {
        self.z.response_done = true; // the session is over: no cancel
        if self.flags.close_received {
            // Nothing may follow the client's close frame, so there is nothing to drain:
            // close as soon as ours is flushed (RFC 6455 §7.1.1: the server closes the TCP
            // connection first), without a lingering `shutdown`, which io_uring runs on a
            // worker thread (a mass close would queue one per connection there).
            t.eof = true;
        }
        t.drain(cx);
    }

    /// Fail the WebSocket connection (RFC 6455 §7.1.7): a close frame with `code`, the
    /// handler told the client is gone, then close without waiting for the client.
    pub(super) fn fail(&mut self, t: &mut Transport, cx: &mut Ctx, code: u16, reason: &str) {
        if let Some(kind) = ErrorKind::from_close_code(code) {
            cx.stats.protocol_error(kind);
        }
        if t.is_open() && !self.z.response_done {
            self.z.cancel(t, cx);
        }
        if !self.flags.close_sent {
            self.flags.close_sent = true;
            let reason = truncate_utf8(reason, ws::CONTROL_PAYLOAD_BYTES_MAX - 2);
            t.write_out(cx.pool, |out| ws::encode_close(out, code, reason));
        }
        self.finish(t, cx);
    }

    /// Bytes from the client on an open (or opening) WebSocket: keep them in `spill` and
    /// decode what the handler's credits allow.
    pub(super) fn recv(&mut self, t: &mut Transport, cx: &mut Ctx, data: &mut [u8]) {
        if t.spill.is_empty() && self.ready(t) {
            // The common case: frames are decoded (unmasked in place) straight from the
            // runtime's buffer; only a tail the credits or a split frame leave is copied.
            let used = self.decode(t, cx, data);
            if used < data.len() && t.is_open() {
                t.spill = cx.pool.take();
                t.spill.extend_from_slice(&data[used..]);
            }
            return;
        }
        if t.spill.capacity() == 0 {
            t.spill = cx.pool.take();
        }
        t.spill.extend_from_slice(data);
        self.pump(t, cx);
    }

    /// Whether client frames can be decoded now: the session is open, nothing waits for
    /// credits, and the client has not closed.
    fn ready(&self, t: &Transport) -> bool {
        self.flags.phase == Phase::Open
            && t.is_open()
            && !self.z.handoff
            && !self.flags.rx_pending
            && !self.flags.close_received
    }

    /// Moves client frames to the handler as far as credits go: first what `carry` holds
    /// (a message piece the credits cut), then newly decoded frames from `spill`.
    pub(super) fn pump(&mut self, t: &mut Transport, cx: &mut Ctx) {
        if self.flags.phase != Phase::Open || !t.is_open() || self.z.handoff {
            return;
        }
        if self.flags.rx_pending {
            if let Err(code) = self.flush_carry(t, cx) {
                return self.fail(t, cx, code, "");
            }
            if self.flags.rx_pending || !t.is_open() {
                return;
            }
        }
        if t.spill.is_empty() || self.flags.close_received {
            return;
        }
        let mut input = std::mem::take(&mut t.spill);
        let used = self.decode(t, cx, &mut input);
        input.drain(..used);
        if input.is_empty() || !t.is_open() {
            cx.pool.give(input);
        } else {
            t.spill = input;
        }
    }

    /// Decodes client frames from `input` and forwards them as far as credits go; returns
    /// the bytes used (the rest is for later). Fails the connection on a protocol error.
    fn decode(&mut self, t: &mut Transport, cx: &mut Ctx, input: &mut [u8]) -> usize {
        let mut rx = self.rx.take().unwrap_or_else(|| {
            Box::new(WsRx {
                session: ws::Session::new(self.decoder_config()),
                accept: None,
            })
        });
        let mut used = 0;
        let mut error = None;
        let mut fail = None;
        // Bounded: every step consumes input or yields a zero-byte MessageEnd, which is
        // followed by a step that consumes input or ends the loop.
        let base = input.as_ptr() as usize;
        while t.is_open() && !self.flags.rx_pending && fail.is_none() {
            // The event borrows the session and the input; make it owned (data as a range
            // of `input`, control payloads ≤ 125 bytes copied) so both are free again.
            let event = match rx.session.decode(&mut input[used..]) {
                Err(e) => {
                    error = Some(e);
                    break;
                }
                Ok(step) => {
                    used += step.consumed;
                    match step.event {
                        None => break,
                        Some(event) => Owned::from(event, base),
                    }
                }
            };
            match event {
                Owned::Start(kind, compressed) => {
                    self.flags.rx_binary = kind == MessageKind::Binary;
                    self.flags.rx_final_sent = false;
                    self.flags.rx_compressed = compressed;
                    if let Some(d) = self.deflate.as_mut() {
                        d.utf8 = Utf8Validator::default();
                    }
                }
                Owned::Data(at, len) => {
                    let last = rx.session.message_ending();
                    fail = self.forward(t, cx, &input[at..at + len], last).err();
                }
                Owned::End => {
                    if !self.flags.rx_final_sent && !self.flags.rx_pending {
                        // An empty message, or one whose last frame had no payload.
                        fail = self.forward(t, cx, b"", true).err();
                    }
                }
                Owned::Control(kind, body) => {
                    self.z.send_packet(cx, kind, |out, from, id, seq| {
                        zhttp::encode_ping_pong(out, from, id, seq, kind, &body)
                    });
                }
                Owned::Close(code, reason) => {
                    self.flags.close_received = true;
                    let status = code.map(|c| (c, &reason[..]));
                    self.z.send_packet(cx, Kind::Close, |out, from, id, seq| {
                        zhttp::encode_close(out, from, id, seq, status)
                    });
                    if self.flags.close_sent {
                        self.finish(t, cx);
                    } else {
                        // The handler answers with its close; if it doesn't in time, we
                        // answer the client ourselves.
                        t.set_timer(
                            cx.settings,
                            Timer::HandlerWait,
                            cx.now + Duration::from_millis(limits::WS_CLOSE_WAIT_MS),
                        );
                    }
                    used = input.len(); // nothing after a close frame counts
                    break;
                }
            }
        }
        if let Some(e) = error {
            self.rx = None;
            self.fail(t, cx, e.close_code(), e.description());
            return input.len();
        }
        if let Some(code) = fail {
            self.rx = None;
            self.fail(t, cx, code, "");
            return input.len();
        }
        // Between frames with no message open the decoder is just its config: drop it.
        if !rx.session.is_idle() {
            self.rx = Some(rx);
        }
        used
    }

    /// Forwards what waits for credits (`carry`, and the inflater's pending output).
    fn flush_carry(&mut self, t: &mut Transport, cx: &mut Ctx) -> Result<(), u16> {
        let carry = std::mem::take(&mut t.carry);
        let fin = self.flags.carry_fin;
        self.flags.rx_pending = false;
        let r = self.forward(t, cx, &carry, fin);
        cx.pool.give(carry);
        r
    }

    /// Forwards `piece`, the next wire bytes of the client's current message (`last`: the
    /// message ends with it), to the handler as far as its credits go, inflating it if the
    /// message is compressed. What is left waits in `carry` (`rx_pending`). `Err` is the
    /// close code to fail the connection with.
    fn forward(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        piece: &[u8],
        last: bool,
    ) -> Result<(), u16> {
        let used = if !self.flags.rx_compressed {
            let n = (piece.len() as u64).min(self.z.credits) as usize;
            let done = last && n == piece.len();
            if n > 0 || done {
                self.send_data(cx, &piece[..n], !done);
            }
            if done || (n == piece.len() && !last) {
                return Ok(());
            }
            n
        } else {
            let mut used = 0;
            let mut out = cx.pool.take();
            let result = loop {
                let room = (self.z.credits as usize).min(INFLATE_CHUNK_BYTES);
                if room == 0 {
                    break Ok(false);
                }
                let d = self.deflate.as_mut().expect("compressed without deflate");
                out.clear();
                let r = match d.rx.decompress(&piece[used..], last, &mut out, room) {
                    Ok(r) => r,
                    Err(e) => break Err(e.close_code()),
                };
                used += r.consumed;
                if !self.flags.rx_binary
                    && (d.utf8.feed(&out).is_err() || r.done && !d.utf8.is_complete())
                {
                    break Err(ws::close_code::INVALID_PAYLOAD);
                }
                if r.produced > 0 || r.done {
                    self.send_data(cx, &out, !r.done);
                }
                if r.done {
                    break Ok(true);
                }
                if !r.output_full && used == piece.len() {
                    break Ok(true); // all taken; the next piece continues the message
                }
            };
            cx.pool.give(out);
            match result {
                Err(code) => return Err(code),
                Ok(true) => return Ok(()),
                Ok(false) => used,
            }
        };
        // Credits ran out: keep the rest (and, compressed, the inflater's output) for later.
        self.flags.rx_pending = true;
        self.flags.carry_fin = last;
        if used < piece.len() {
            if t.carry.capacity() == 0 {
                t.carry = cx.pool.take();
            }
            t.carry.extend_from_slice(&piece[used..]);
        }
        Ok(())
    }

    fn send_data(&mut self, cx: &mut Ctx, body: &[u8], more: bool) {
        self.z.credits -= body.len() as u64;
        let ct = if self.flags.rx_binary {
            ContentType::Binary
        } else {
            ContentType::Text
        };
        self.flags.rx_final_sent = !more;
        self.z.send_packet(cx, Kind::Data, |out, from, id, seq| {
            zhttp::encode_ws_message(out, from, id, seq, ct, body, more)
        });
    }

    /// `out` goes to the runtime: the frames counted against `--messages-max` left it.
    pub(super) fn frames_sent(&mut self) {
        self.flags.frames_over = 0;
    }

    /// The close-wait timer fired (it shares the handler-wait slot, unused once open).
    pub(super) fn close_wait_expired(&mut self, t: &mut Transport, cx: &mut Ctx) {
        if self.flags.close_received && !self.flags.close_sent {
            // The handler never answered the client's close: answer it ourselves.
            self.send_close(t, cx, ws::close_code::NORMAL, "");
        } else {
            // The client never answered our close.
            self.finish(t, cx);
        }
    }
}

/// A decoder event without its borrows.
enum Owned {
    Start(MessageKind, bool),
    /// Offset into the decoded input, and length.
    Data(usize, usize),
    End,
    Control(Kind, ArrayVec<u8, { ws::CONTROL_PAYLOAD_BYTES_MAX }>),
    Close(Option<u16>, ArrayVec<u8, { ws::CONTROL_PAYLOAD_BYTES_MAX }>),
}

impl Owned {
    fn from(event: Event<'_>, base: usize) -> Owned {
        let copy = |b: &[u8]| {
            let mut a = ArrayVec::new();
            let _ = a.try_extend_from_slice(&b[..b.len().min(ws::CONTROL_PAYLOAD_BYTES_MAX)]);
            a
        };
        match event {
            Event::MessageStart { kind, compressed } => Owned::Start(kind, compressed),
            Event::Data(piece) => Owned::Data(piece.as_ptr() as usize - base, piece.len()),
            Event::MessageEnd => Owned::End,
            Event::Ping(b) => Owned::Control(Kind::Ping, copy(b)),
            Event::Pong(b) => Owned::Control(Kind::Pong, copy(b)),
            Event::Close { code, reason } => Owned::Close(code, copy(reason.as_bytes())),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The scheme of a WebSocket request's `uri`.
pub(super) fn scheme(tls: bool) -> &'static [u8] {
    if tls {
        b"wss://"
    } else {
        b"ws://"
    }
}
