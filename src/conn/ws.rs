//! The WebSocket side of a connection, after an upgrade request: the handshake with the
//! handler (101, or a rejection sent as plain HTTP), then client frames → ZHTTP packets under
//! the handler's credits and handler packets → frames under zring's, and the close
//! handshake. Same sans-IO rules as the rest of `Conn`: bytes, packets and `now` in; bytes,
//! packets and deadlines out.
//!
//! Client frames are decoded from `spill` (unmasked in place), so an idle WebSocket holds no
//! buffer; and its decoder (`ws::Session`) is dropped whenever it stands between frames with
//! no message open, so an idle WebSocket holds no decoder either.
use std::time::Duration;

use arrayvec::ArrayVec;

use super::{Conn, Ctx, HandlerPacket, State, Timer};
use crate::limits;
use crate::proto::http1;
use crate::proto::ws::{self, AcceptKey, Event, MessageKind, Opcode, Utf8Validator};
use crate::proto::ws_deflate;
use crate::proto::zhttp::{self, ContentType, Kind};

/// What a WebSocket connection keeps besides `Conn`'s own fields, boxed so HTTP
/// connections do not pay for it.
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
    pub tx: ws_deflate::Compressor,
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

/// Per-connection WebSocket flags, inline in `Conn` (a few bytes).
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

impl Conn {
    pub(super) fn ws_session_config(&self) -> ws::SessionConfig {
        ws::SessionConfig {
            message_bytes_max: limits::WS_MESSAGE_BYTES_MAX_DEFAULT,
            compression: self.deflate.is_some(),
        }
    }

    /// The upgrade request is valid so far as `http1` can tell: check the handshake, and
    /// either refuse it here or hand it to a handler (the caller sends the first packet).
    /// Returns false when the request was refused.
    pub(super) fn ws_begin(&mut self, cx: &mut Ctx, req: &http1::Request) -> bool {
        let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
        for h in req.headers {
            headers.push((h.name.as_bytes(), h.value));
        }
        if !matches!(req.body, http1::BodyKind::None | http1::BodyKind::Length(0)) {
            // After the head come frames; a body would make them ambiguous.
            self.fail(
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
                self.write_out(cx, |out| ws::encode_rejection(out, version, e));
                self.response_started = true;
                self.response_done = true;
                self.keep_alive = false;
                self.drain(cx);
                false
            }
            Ok(hs) => {
                self.deflate = None;
                if cx.settings.compression {
                    let offers = hs.extensions();
                    if let Some(params) = ws_deflate::negotiate(&cx.settings.deflate, offers) {
                        self.deflate = Some(Box::new(WsDeflate {
                            tx: ws_deflate::Compressor::new(&params, &cx.settings.deflate),
                            rx: ws_deflate::Decompressor::new(
                                &params,
                                limits::WS_MESSAGE_BYTES_MAX_DEFAULT,
                            ),
                            params,
                            utf8: Utf8Validator::default(),
                        }));
                    }
                }
                let config = self.ws_session_config();
                self.ws = Some(Box::new(WsRx {
                    session: ws::Session::new(config),
                    accept: Some(hs.accept),
                }));
                self.wsf = WsFlags {
                    phase: Phase::Upgrading,
                    ..WsFlags::default()
                };
                // No request body on an upgrade; what follows the head is frames.
                self.body_done = true;
                true
            }
        }
    }

    /// A handler packet for a WebSocket session (the common checks are done).
    pub(super) fn ws_packet(&mut self, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = &pkt.packet;
        let buf = pkt.buf;
        match p.kind {
            // Any packet ends a handoff (the caller cleared it): resume reading the client.
            Kind::KeepAlive => self.ws_pump(cx),
            Kind::HandoffStart => {
                self.send_packet(cx, |out, from, id, seq| {
                    zhttp::encode_control(out, from, id, seq, Kind::HandoffProceed)
                });
                self.handoff = true;
            }
            Kind::Credit => {
                self.credits += u64::from(p.credits.unwrap_or(0));
                self.ws_pump(cx);
            }
            Kind::Error if self.wsf.phase == Phase::Upgrading => {
                if p.condition.map(|c| c.get(buf)) == Some(b"rejected") {
                    self.handler = None;
                    self.ws_reject(cx, pkt);
                } else {
                    self.handler = None;
                    self.fail_no_response(cx);
                }
            }
            Kind::Cancel | Kind::Error => {
                self.handler = None;
                match self.wsf.phase {
                    Phase::Open => self.ws_fail(cx, ws::close_code::INTERNAL_ERROR, ""),
                    _ => self.fail_no_response(cx),
                }
            }
            Kind::Data if self.wsf.phase == Phase::Upgrading => self.ws_accept(cx, pkt),
            Kind::Data => self.ws_handler_message(cx, pkt),
            Kind::Ping | Kind::Pong if self.wsf.phase == Phase::Open => {
                let body = p.body.get(buf);
                if let Some(c) = p.credits {
                    self.credits += u64::from(c);
                }
                let opcode = if p.kind == Kind::Ping {
                    Opcode::Ping
                } else {
                    Opcode::Pong
                };
                if !self.wsf.close_sent {
                    // A control frame carries at most 125 bytes; a longer handler payload is
                    // cut rather than breaking the framing.
                    let body = &body[..body.len().min(ws::CONTROL_PAYLOAD_BYTES_MAX)];
                    self.spend_budget(body.len() as u64);
                    self.write_out(cx, |out| ws::encode_frame(out, true, false, opcode, body));
                    self.out_body += body.len() as u64;
                }
                self.ws_pump(cx);
            }
            Kind::Close if self.wsf.phase == Phase::Open => {
                let code = p.code.map_or(ws::close_code::NORMAL, |c| c as u16);
                let reason = String::from_utf8_lossy(p.body.get(buf));
                self.ws_send_close(cx, code, &reason);
            }
            _ => {
                crate::log!(
                    crate::log::DEBUG,
                    "conn",
                    "ignoring {:?} on a WebSocket session in {:?}",
                    p.kind,
                    self.wsf.phase
                );
            }
        }
    }

    /// The handler's answer to the upgrade: a 101 opens the WebSocket; any other status is
    /// sent as a plain HTTP response and the connection closes (Condure would switch to
    /// WebSocket framing whatever the status; the client could not know what it got).
    fn ws_accept(&mut self, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = &pkt.packet;
        let buf = pkt.buf;
        if p.code != Some(101) {
            return self.ws_reject(cx, pkt);
        }
        let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
        for (n, v) in &p.headers {
            headers.push((n.get(buf), v.get(buf)));
        }
        // Nothing was decoded while upgrading: the decoder is fresh, so it goes too (an idle
        // WebSocket holds none; the first frame brings a new one).
        let accept = self
            .ws
            .take()
            .and_then(|w| w.accept)
            .expect("an upgrading session has its accept key");
        let mut extension = Vec::new();
        if let Some(d) = &self.deflate {
            d.params.encode_response(&mut extension);
        }
        let extension = (!extension.is_empty()).then_some(&extension[..]);
        let mut written = true;
        self.write_out(cx, |out| {
            written = ws::encode_accept(out, &accept, None, extension, &headers).is_ok();
        });
        if !written {
            return self.fail_invalid_response(cx);
        }
        self.response_started = true;
        self.wsf.phase = Phase::Open;
        // Condure: a 101 with no credits means our own buffer size (pushpin-proxy sends none).
        self.credits = match p.credits {
            Some(c) if c > 0 => u64::from(c),
            _ => cx.settings.buffer_size as u64,
        };
        self.ws_pump(cx);
    }

    /// Sends the handler's refusal (`error`/`rejected`, or a non-101 response) as plain
    /// HTTP without any upgrade headers, then closes.
    fn ws_reject(&mut self, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = &pkt.packet;
        let buf = pkt.buf;
        let Some(code) = p.code.filter(|c| (200..=999).contains(c)).map(|c| c as u16) else {
            return self.fail(
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
            version: self.version,
            head_request: false,
            keep_alive: false,
        };
        let Ok(framing) = http1::choose_framing(context, code, &headers, false, body.len() as u64)
        else {
            return self.fail_invalid_response(cx);
        };
        let head = http1::ResponseHead {
            version: self.version,
            code,
            reason,
            headers: &headers,
            body: framing.body,
            keep_alive: false,
        };
        let mut written = true;
        self.write_out(cx, |out| {
            written = http1::encode_response_head(out, &head).is_ok();
            if written && framing.send_body {
                out.extend_from_slice(body);
            }
        });
        if !written {
            return self.fail_invalid_response(cx);
        }
        self.response_started = true;
        self.response_done = true;
        self.keep_alive = false;
        self.wsf.phase = Phase::None;
        self.ws = None;
        self.drain(cx);
    }

    /// A data packet from the handler: one frame to the client.
    fn ws_handler_message(&mut self, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = &pkt.packet;
        let body = p.body.get(pkt.buf);
        if let Some(c) = p.credits {
            self.credits += u64::from(c);
        }
        if self.wsf.close_sent {
            return; // nothing may follow our close frame
        }
        if body.len() as u64 > self.budget {
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "received too much data from handler"
            );
            return self.ws_fail(cx, ws::close_code::INTERNAL_ERROR, "");
        }
        if self.out.len() >= cx.settings.buffer_size {
            self.wsf.frames_over = self.wsf.frames_over.saturating_add(1);
        }
        if usize::from(self.wsf.frames_over) > cx.settings.messages_max {
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "more than --messages-max frames queued for the client"
            );
            return self.ws_fail(cx, ws::close_code::INTERNAL_ERROR, "");
        }
        let opcode = if self.wsf.tx_open {
            Opcode::Continuation
        } else if p.content_type == Some(ContentType::Binary) {
            Opcode::Binary
        } else {
            Opcode::Text
        };
        let first = !self.wsf.tx_open;
        self.wsf.tx_open = p.more;
        self.spend_budget(body.len() as u64);
        if let Some(d) = self.deflate.as_mut() {
            // One compressed message per handler message; a fragment is flushed so it goes
            // out now. RSV1 marks the first frame only (RFC 7692 §6).
            let mut z = cx.pool.take();
            d.tx.compress(body, !p.more, &mut z);
            if p.more {
                d.tx.flush(&mut z);
            }
            self.write_out(cx, |out| {
                out.extend_from_slice(
                    ws::encode_header(!p.more, first, opcode, z.len() as u64).as_bytes(),
                );
                out.extend_from_slice(&z);
            });
            cx.pool.give(z);
        } else {
            self.write_out(cx, |out| {
                out.extend_from_slice(
                    ws::encode_header(!p.more, false, opcode, body.len() as u64).as_bytes(),
                );
                out.extend_from_slice(body);
            });
        }
        self.out_body += body.len() as u64;
        self.ws_pump(cx);
    }

    /// Queues our close frame; the connection closes once the client's close is in (or
    /// after a bounded wait for it).
    fn ws_send_close(&mut self, cx: &mut Ctx, code: u16, reason: &str) {
        if self.wsf.close_sent {
            return;
        }
        self.wsf.close_sent = true;
        let reason = truncate_utf8(reason, ws::CONTROL_PAYLOAD_BYTES_MAX - 2);
        self.write_out(cx, |out| ws::encode_close(out, code, reason));
        if self.wsf.close_received {
            self.ws_finish(cx);
        } else {
            self.set_timer(
                cx.settings,
                Timer::HandlerWait,
                cx.now + Duration::from_millis(limits::WS_CLOSE_WAIT_MS),
            );
        }
    }

    /// The close handshake is complete (or given up): flush, then close the TCP connection.
    fn ws_finish(&mut self, cx: &mut Ctx) {
        self.response_done = true; // the session is over: no cancel
        self.keep_alive = false;
        if self.wsf.close_received {
            // Nothing may follow the client's close frame, so there is nothing to drain:
            // close as soon as ours is flushed (RFC 6455 §7.1.1: the server closes the TCP
            // connection first), without a lingering `shutdown`, which io_uring runs on a
            // worker thread (a mass close would queue one per connection there).
            self.eof = true;
        }
        self.drain(cx);
    }

    /// Fail the WebSocket connection (RFC 6455 §7.1.7): a close frame with `code`, the
    /// handler told the client is gone, then close without waiting for the client.
    pub(super) fn ws_fail(&mut self, cx: &mut Ctx, code: u16, reason: &str) {
        if self.state == State::Session && !self.response_done {
            self.cancel(cx);
        }
        if !self.wsf.close_sent {
            self.wsf.close_sent = true;
            let reason = truncate_utf8(reason, ws::CONTROL_PAYLOAD_BYTES_MAX - 2);
            self.write_out(cx, |out| ws::encode_close(out, code, reason));
        }
        self.ws_finish(cx);
    }

    /// Bytes from the client on an open (or opening) WebSocket: keep them in `spill` and
    /// decode what the handler's credits allow.
    pub(super) fn ws_recv(&mut self, cx: &mut Ctx, data: &mut [u8]) {
        if self.spill.is_empty() && self.ws_ready() {
            // The common case: frames are decoded (unmasked in place) straight from the
            // runtime's buffer; only a tail the credits or a split frame leave is copied.
            let used = self.ws_decode(cx, data);
            if used < data.len() && self.state == State::Session {
                self.spill = cx.pool.take();
                self.spill.extend_from_slice(&data[used..]);
            }
            return;
        }
        if self.spill.capacity() == 0 {
            self.spill = cx.pool.take();
        }
        self.spill.extend_from_slice(data);
        self.ws_pump(cx);
    }

    /// Whether client frames can be decoded now: the session is open, nothing waits for
    /// credits, and the client has not closed.
    fn ws_ready(&self) -> bool {
        self.wsf.phase == Phase::Open
            && self.state == State::Session
            && !self.handoff
            && !self.wsf.rx_pending
            && !self.wsf.close_received
    }

    /// Moves client frames to the handler as far as credits go: first what `carry` holds
    /// (a message piece the credits cut), then newly decoded frames from `spill`.
    pub(super) fn ws_pump(&mut self, cx: &mut Ctx) {
        if self.wsf.phase != Phase::Open || self.state != State::Session || self.handoff {
            return;
        }
        if self.wsf.rx_pending {
            if let Err(code) = self.ws_flush_carry(cx) {
                return self.ws_fail(cx, code, "");
            }
            if self.wsf.rx_pending || self.state != State::Session {
                return;
            }
        }
        if self.spill.is_empty() || self.wsf.close_received {
            return;
        }
        let mut input = std::mem::take(&mut self.spill);
        let used = self.ws_decode(cx, &mut input);
        input.drain(..used);
        if input.is_empty() || self.state != State::Session {
            cx.pool.give(input);
        } else {
            self.spill = input;
        }
    }

    /// Decodes client frames from `input` and forwards them as far as credits go; returns
    /// the bytes used (the rest is for later). Fails the connection on a protocol error.
    fn ws_decode(&mut self, cx: &mut Ctx, input: &mut [u8]) -> usize {
        let mut rx = self.ws.take().unwrap_or_else(|| {
            Box::new(WsRx {
                session: ws::Session::new(self.ws_session_config()),
                accept: None,
            })
        });
        let mut used = 0;
        let mut error = None;
        let mut fail = None;
        // Bounded: every step consumes input or yields a zero-byte MessageEnd, which is
        // followed by a step that consumes input or ends the loop.
        let base = input.as_ptr() as usize;
        while self.state == State::Session && !self.wsf.rx_pending && fail.is_none() {
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
                    self.wsf.rx_binary = kind == MessageKind::Binary;
                    self.wsf.rx_final_sent = false;
                    self.wsf.rx_compressed = compressed;
                    if let Some(d) = self.deflate.as_mut() {
                        d.utf8 = Utf8Validator::default();
                    }
                }
                Owned::Data(at, len) => {
                    let last = rx.session.message_ending();
                    fail = self.ws_forward(cx, &input[at..at + len], last).err();
                }
                Owned::End => {
                    if !self.wsf.rx_final_sent && !self.wsf.rx_pending {
                        // An empty message, or one whose last frame had no payload.
                        fail = self.ws_forward(cx, b"", true).err();
                    }
                }
                Owned::Control(kind, body) => {
                    self.send_packet(cx, |out, from, id, seq| {
                        zhttp::encode_ping_pong(out, from, id, seq, kind, &body)
                    });
                }
                Owned::Close(code, reason) => {
                    self.wsf.close_received = true;
                    let status = code.map(|c| (c, &reason[..]));
                    self.send_packet(cx, |out, from, id, seq| {
                        zhttp::encode_close(out, from, id, seq, status)
                    });
                    if self.wsf.close_sent {
                        self.ws_finish(cx);
                    } else {
                        // The handler answers with its close; if it doesn't in time, we
                        // answer the client ourselves.
                        self.set_timer(
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
            self.ws = None;
            self.ws_fail(cx, e.close_code(), e.description());
            return input.len();
        }
        if let Some(code) = fail {
            self.ws = None;
            self.ws_fail(cx, code, "");
            return input.len();
        }
        // Between frames with no message open the decoder is just its config: drop it.
        if !rx.session.is_idle() {
            self.ws = Some(rx);
        }
        used
    }

    /// Forwards what waits for credits (`carry`, and the inflater's pending output).
    fn ws_flush_carry(&mut self, cx: &mut Ctx) -> Result<(), u16> {
        let carry = std::mem::take(&mut self.carry);
        let fin = self.wsf.carry_fin;
        self.wsf.rx_pending = false;
        let r = self.ws_forward(cx, &carry, fin);
        cx.pool.give(carry);
        r
    }

    /// Forwards `piece`, the next wire bytes of the client's current message (`last`: the
    /// message ends with it), to the handler as far as its credits go, inflating it if the
    /// message is compressed. What is left waits in `carry` (`rx_pending`). `Err` is the
    /// close code to fail the connection with.
    fn ws_forward(&mut self, cx: &mut Ctx, piece: &[u8], last: bool) -> Result<(), u16> {
        let used = if !self.wsf.rx_compressed {
            let n = (piece.len() as u64).min(self.credits) as usize;
            let done = last && n == piece.len();
            if n > 0 || done {
                self.ws_send_data(cx, &piece[..n], !done);
            }
            if done || (n == piece.len() && !last) {
                return Ok(());
            }
            n
        } else {
            let mut used = 0;
            let mut out = cx.pool.take();
            let result = loop {
                let room = (self.credits as usize).min(INFLATE_CHUNK_BYTES);
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
                if !self.wsf.rx_binary
                    && (d.utf8.feed(&out).is_err() || r.done && !d.utf8.is_complete())
                {
                    break Err(ws::close_code::INVALID_PAYLOAD);
                }
                if r.produced > 0 || r.done {
                    self.ws_send_data(cx, &out, !r.done);
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
        self.wsf.rx_pending = true;
        self.wsf.carry_fin = last;
        if used < piece.len() {
            if self.carry.capacity() == 0 {
                self.carry = cx.pool.take();
            }
            self.carry.extend_from_slice(&piece[used..]);
        }
        Ok(())
    }

    fn ws_send_data(&mut self, cx: &mut Ctx, body: &[u8], more: bool) {
        self.credits -= body.len() as u64;
        let ct = if self.wsf.rx_binary {
            ContentType::Binary
        } else {
            ContentType::Text
        };
        self.wsf.rx_final_sent = !more;
        self.send_packet(cx, |out, from, id, seq| {
            zhttp::encode_ws_message(out, from, id, seq, ct, body, more)
        });
    }

    /// `out` goes to the runtime: the frames counted against `--messages-max` left it.
    pub(super) fn ws_sending(&mut self) {
        self.wsf.frames_over = 0;
    }

    /// The close-wait timer fired (it shares the handler-wait slot, unused once open).
    pub(super) fn ws_close_wait_expired(&mut self, cx: &mut Ctx) {
        if self.wsf.close_received && !self.wsf.close_sent {
            // The handler never answered the client's close: answer it ourselves.
            self.ws_send_close(cx, ws::close_code::NORMAL, "");
        } else {
            // The client never answered our close.
            self.ws_finish(cx);
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
