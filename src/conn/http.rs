//! An HTTP exchange over ZHTTP: one request with its handler. The request body goes to the
//! handler under its credits (fixed-length as it arrives, chunked one chunk per packet);
//! the response comes back as packets, framed for the client (Content-Length, chunked, or
//! until close) and credited back as it is written. When the response is written the
//! exchange ends: the connection reads the next request (keep-alive) or drains.
use arrayvec::ArrayVec;

use super::transport::{Timer, Transport};
use super::zhttp_session::ZhttpSession;
use super::{Ctx, HandlerPacket};
use crate::config::Mode;
use crate::limits;
use crate::proto::http1::{self, BodyKind, ChunkedDecoder};
use crate::proto::zhttp::{self, Kind};

/// How the request body arrives.
#[derive(Debug)]
enum Body {
    None,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    /// The chunked body is fully decoded; `Transport::carry` holds what is not sent yet.
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

/// Invariants: `body_done` exactly when `body` is `None` (every body byte went to the
/// handler); a response is written only after `z.response_started`; `framing` is chosen
/// once, by the response's first packet.
pub(super) struct HttpExchange {
    pub z: ZhttpSession,
    body: Body,
    framing: Framing,
    /// The connection can carry another request after this one.
    keep_alive: bool,
    head_request: bool,
    /// `Expect: 100-continue` not yet answered (answered when the handler grants credits).
    expect_continue: bool,
    body_done: bool,
    /// Body bytes received in the current `--body-timeout` period (`Timer::Request`).
    body_window: u32,
}

/// What a finished response means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Still going (or the connection is draining).
    Stay,
    /// Written in full on a keep-alive connection: read the next request.
    NextRequest,
}

impl HttpExchange {
    /// The exchange for request `req` (its ZHTTP session already made).
    pub fn new(z: ZhttpSession, req: &http1::Request) -> HttpExchange {
        let body = match req.body {
            BodyKind::None | BodyKind::Length(0) => Body::None,
            BodyKind::Length(n) => Body::Length(n),
            BodyKind::Chunked => Body::Chunked(Box::default()),
        };
        HttpExchange {
            z,
            body_done: matches!(body, Body::None),
            body,
            framing: Framing::None,
            keep_alive: req.keep_alive,
            head_request: req.method == "HEAD",
            expect_continue: req.expect_continue && req.version == http1::Version::Http11,
            body_window: 0,
        }
    }

    /// Whether a req-mode body fits `--body-buffer-size` (always true in stream mode).
    pub fn new_len_ok(req: &http1::Request, mode: Mode, s: &super::Settings) -> bool {
        match req.body {
            BodyKind::Length(n) => mode == Mode::Stream || n <= s.body_buffer_size as u64,
            _ => true,
        }
    }

    /// A req-mode request goes whole in its first packet: nothing more to send.
    pub fn body_sent_whole(&mut self) {
        self.body_done = true;
        self.body = Body::None;
    }

    pub fn body_done(&self) -> bool {
        self.body_done
    }

    // ---- request body (stream mode) ----

    /// `n` bytes arrived while the exchange is open: enough of them start a new period of
    /// the body rate.
    pub fn body_progress(&mut self, t: &mut Transport, cx: &Ctx, n: usize) {
        if self.body_done {
            return;
        }
        self.body_window = self
            .body_window
            .saturating_add(n.min(u32::MAX as usize) as u32);
        if self.body_window >= cx.settings.body_min_bytes {
            self.restart_body_period(t, cx);
        }
    }

    /// A new `--body-timeout` period begins (none when the rate check is off).
    pub fn restart_body_period(&mut self, t: &mut Transport, cx: &Ctx) {
        self.body_window = 0;
        if cx.settings.body_min_bytes > 0 && !self.body_done {
            t.set_timer(
                cx.settings,
                Timer::Request,
                cx.now + cx.settings.body_timeout,
            );
        }
    }

    /// A `--body-timeout` period ended short of `--body-min-bytes`. If zring was the one
    /// holding the body back (bytes wait for the handler's credits, reading is paused, or
    /// the client waits for `100 Continue`), a new period starts; else the client is too
    /// slow: 408, or a close if the response has begun.
    pub fn body_timeout(&mut self, t: &mut Transport, cx: &mut Ctx) {
        if self.body_done {
            return;
        }
        if !t.spill.is_empty() || !t.carry.is_empty() || t.paused || self.expect_continue {
            return self.restart_body_period(t, cx);
        }
        crate::log!(crate::log::DEBUG, "conn", "request body too slow: 408");
        self.z.fail(
            t,
            cx,
            408,
            "Request Timeout",
            "The request body did not arrive in time.\n",
        );
    }

    /// Client bytes while the exchange is open: body bytes as far as credits allow; the
    /// rest (more body, a pipelined request) stays with the caller. Returns bytes used;
    /// all of them once the connection stopped being open (the rest is discarded).
    pub fn feed(&mut self, t: &mut Transport, cx: &mut Ctx, input: &[u8]) -> usize {
        let mut used = 0;
        // Bounded: each turn consumes input, or returns.
        loop {
            if !t.is_open() {
                return input.len();
            }
            let before = used;
            used += self.feed_body(t, cx, &input[used..]);
            if !t.is_open() {
                return input.len();
            }
            if used == before || used == input.len() {
                return used;
            }
        }
    }

    /// Runs what waits in `spill` (body bytes that waited for credits).
    fn reprocess(&mut self, t: &mut Transport, cx: &mut Ctx) {
        let mut input = std::mem::take(&mut t.spill);
        let n = self.feed(t, cx, &input);
        input.drain(..n);
        if input.is_empty() || t.link == super::transport::Link::Closed {
            cx.pool.give(input);
        } else {
            t.spill = input;
        }
    }

    /// Takes request-body bytes from `input` as far as the handler's credits allow.
    fn feed_body(&mut self, t: &mut Transport, cx: &mut Ctx, input: &[u8]) -> usize {
        if self.body_done {
            return 0; // pipelined input waits for the response
        }
        match &mut self.body {
            Body::None | Body::ChunkedDone => 0,
            Body::Length(_) => self.pump_length(t, cx, input),
            Body::Chunked(_) => {
                let used = self.decode_chunked(t, cx, input);
                self.pump(t, cx);
                used
            }
        }
    }

    fn pump_length(&mut self, t: &Transport, cx: &mut Ctx, input: &[u8]) -> usize {
        let Body::Length(remaining) = self.body else {
            return 0;
        };
        if !self.may_send_body(t) {
            return 0;
        }
        let n = remaining.min(self.z.credits).min(input.len() as u64);
        if n == 0 {
            return 0;
        }
        let left = remaining - n;
        self.z.credits -= n;
        self.body = if left == 0 {
            Body::None
        } else {
            Body::Length(left)
        };
        self.body_done = left == 0;
        let chunk = &input[..n as usize];
        self.z.send_packet(cx, Kind::Data, |out, from, id, seq| {
            zhttp::encode_body(out, from, id, seq, chunk, left > 0)
        });
        n as usize
    }

    /// Decodes the next chunk's data (or the end of the body) into `carry`. One chunk at a
    /// time, and only once `carry` is sent: Condure forwards each chunk as its own packet.
    fn decode_chunked(&mut self, t: &mut Transport, cx: &mut Ctx, input: &[u8]) -> usize {
        if !t.carry.is_empty() || !self.may_send_body(t) {
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
                    self.z.fail(t, cx, code, reason, &format!("{reason}\n"));
                    return input.len();
                }
                Ok(d) => {
                    used += d.consumed;
                    if let Some(data) = d.data.filter(|d| !d.is_empty()) {
                        if t.carry.capacity() == 0 {
                            t.carry = cx.pool.take();
                        }
                        t.carry.extend_from_slice(data);
                    }
                    if d.done {
                        self.body = Body::ChunkedDone;
                        break;
                    }
                    if d.consumed == 0 || !t.carry.is_empty() {
                        break;
                    }
                }
            }
        }
        used
    }

    fn may_send_body(&self, t: &Transport) -> bool {
        // Condure waits for the handler's first packet (its address and credits) before
        // sending any body, and sends nothing while a handoff is pending.
        t.is_open() && self.z.handler.is_some() && !self.z.handoff
    }

    /// Sends decoded chunked body from `carry` under the credits; the last packet has no
    /// `more`. Answers `Expect: 100-continue` once the handler granted credits.
    fn pump(&mut self, t: &mut Transport, cx: &mut Ctx) {
        if self.expect_continue && self.z.credits > 0 && !self.z.response_started && !self.body_done
        {
            self.expect_continue = false;
            t.write_out(cx.pool, http1::encode_continue);
            self.restart_body_period(t, cx); // the client starts sending only now
        }
        if !self.may_send_body(t) || self.body_done {
            return;
        }
        match self.body {
            // Body bytes wait in `spill`; feed them again. Once they are all taken, zring
            // waits on the client again: its rate counts from now.
            Body::Length(n) if n > 0 && !t.spill.is_empty() => {
                self.reprocess(t, cx);
                if t.spill.is_empty() {
                    self.restart_body_period(t, cx);
                }
            }
            Body::Chunked(_) | Body::ChunkedDone => {
                // Each chunk goes with `more` (split further if credits are short); the end
                // of the body is a packet of its own without body or `more`, as Condure.
                let n = (t.carry.len() as u64).min(self.z.credits) as usize;
                if n > 0 {
                    self.z.credits -= n as u64;
                    let carry = std::mem::take(&mut t.carry);
                    self.z.send_packet(cx, Kind::Data, |out, from, id, seq| {
                        zhttp::encode_body(out, from, id, seq, &carry[..n], true)
                    });
                    t.carry = carry;
                    t.carry.drain(..n);
                    if t.carry.is_empty() {
                        cx.pool.give(std::mem::take(&mut t.carry));
                    }
                }
                if matches!(self.body, Body::ChunkedDone) && t.carry.is_empty() {
                    self.z.send_packet(cx, Kind::Data, |out, from, id, seq| {
                        zhttp::encode_body(out, from, id, seq, b"", false)
                    });
                    self.body_done = true;
                    self.body = Body::None;
                } else if t.carry.is_empty() && !t.spill.is_empty() {
                    self.reprocess(t, cx);
                    if t.spill.is_empty() && t.carry.is_empty() {
                        self.restart_body_period(t, cx);
                    }
                }
            }
            _ => {}
        }
    }

    // ---- handler packets and the response ----

    /// A handler packet naming this exchange (`seq` from the packet's id entry).
    pub fn handle_packet(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        pkt: HandlerPacket<'_>,
        seq: Option<u32>,
    ) -> Next {
        if !self.z.accept_packet(t, cx, pkt, seq) {
            return Next::Stay;
        }
        let p = pkt.packet;
        match p.kind {
            Kind::Data => self.handle_data(t, cx, pkt),
            Kind::Credit => {
                self.z.credits += u64::from(p.credits.unwrap_or(0));
                self.pump(t, cx);
            }
            Kind::KeepAlive => {}
            Kind::HandoffStart => {
                self.z
                    .send_packet(cx, Kind::HandoffProceed, |out, from, id, seq| {
                        zhttp::encode_control(out, from, id, seq, Kind::HandoffProceed)
                    });
                self.z.handoff = true;
            }
            Kind::Cancel | Kind::Error => {
                // The handler ended the session itself: nothing goes back to it (no
                // handler address means `cancel` sends nothing).
                self.z.handler = None;
                if self.z.response_started {
                    t.close(cx.pool);
                } else {
                    self.z.fail_no_response(t, cx);
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
            self.z.credits += u64::from(c);
            self.pump(t, cx);
        }
        self.maybe_finish(t, cx)
    }

    /// The handler is gone: 502, or the response so far then a clean close; a response
    /// already complete is left to finish.
    pub fn handler_gone(&mut self, t: &mut Transport, cx: &mut Ctx) {
        if self.z.response_done {
            return;
        }
        self.z.handler_gone(t, cx);
    }

    fn handle_data(&mut self, t: &mut Transport, cx: &mut Ctx, pkt: HandlerPacket<'_>) {
        let p = pkt.packet;
        let buf = pkt.buf;
        let body = p.body.get(buf);
        if self.z.response_done {
            return;
        }
        if t.mode == Mode::Stream && body.len() as u64 > self.z.budget {
            // Every data packet is held to the credits zring granted (the request's, then
            // what it returned as bytes went out), the first and the last one too, as in
            // Condure (whose write buffer refuses it): so a response waiting for a slow
            // client holds at most `--buffer-size` body bytes here, whatever the handler
            // sends. No status yet: 502; else what was queued goes out, then the close.
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "received too much data from handler (size={}, credits={})",
                body.len(),
                self.z.budget
            );
            self.z.handler = None; // it broke the rules: no cancel goes back (as for `seq`)
            return self.z.fail(
                t,
                cx,
                502,
                "Bad Gateway",
                "The handler sent more than zring's credits allowed.\n",
            );
        }
        if !self.z.response_started {
            let Some(code) = p.code.filter(|c| (100..=999).contains(c)).map(|c| c as u16) else {
                return self.z.fail(
                    t,
                    cx,
                    502,
                    "Bad Gateway",
                    "The handler sent a response without a status.\n",
                );
            };
            let more = p.more && t.mode == Mode::Stream;
            let mut headers: ArrayVec<(&[u8], &[u8]), { limits::HEADERS_MAX }> = ArrayVec::new();
            for (n, v) in &p.headers {
                headers.push((n.get(buf), v.get(buf)));
            }
            let reason = p.reason.map(|r| r.get(buf)).unwrap_or(b"");
            // Body still unread means this connection cannot carry another request.
            let context = http1::ResponseContext {
                version: self.z.version,
                head_request: self.head_request,
                keep_alive: self.keep_alive
                    && (self.body_done || t.mode == Mode::Req)
                    && !t.last_exchange,
            };
            let Ok(framing) =
                http1::choose_framing(context, code, &headers, more, body.len() as u64)
            else {
                return self.z.fail_invalid_response(t, cx);
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
                version: self.z.version,
                code,
                reason,
                headers: &headers,
                body: framing.body,
                keep_alive: framing.keep_alive,
            };
            let mut written = true;
            t.write_out(cx.pool, |out| {
                written = http1::encode_response_head(out, &head).is_ok()
            });
            if !written {
                return self.z.fail_invalid_response(t, cx);
            }
            cx.stats.response(code);
            if let Some(a) = &mut self.z.access {
                a.status = code;
            }
            self.z.response_started = true;
        }
        if t.mode == Mode::Stream {
            self.z.spend_budget(body.len() as u64);
        }
        self.write_body(t, cx, body);
        if !p.more || t.mode == Mode::Req {
            self.end_body(t, cx);
            self.z.response_done = true;
            t.clear_timer(Timer::Expiry);
        }
    }

    fn write_body(&mut self, t: &mut Transport, cx: &mut Ctx, body: &[u8]) {
        if body.is_empty() {
            return;
        }
        match self.framing {
            Framing::None => {}
            Framing::Length(left) => {
                // A handler that sends more than its Content-Length would corrupt the stream.
                let n = (body.len() as u64).min(left);
                self.framing = Framing::Length(left - n);
                t.write_out(cx.pool, |out| out.extend_from_slice(&body[..n as usize]));
            }
            Framing::Chunked => t.write_out(cx.pool, |out| http1::encode_chunk(out, body)),
            Framing::CloseDelimited => t.write_out(cx.pool, |out| out.extend_from_slice(body)),
        }
        t.out_body += body.len() as u64;
        if let (Some(a), false) = (&mut self.z.access, matches!(self.framing, Framing::None)) {
            a.bytes += body.len() as u64;
        }
    }

    fn end_body(&mut self, t: &mut Transport, cx: &mut Ctx) {
        match self.framing {
            Framing::Chunked => t.write_out(cx.pool, http1::encode_last_chunk),
            Framing::Length(left) if left > 0 => self.keep_alive = false, // short body: close
            _ => {}
        }
    }

    /// zring is draining (`t.last_exchange` is set): the exchange goes on; a response
    /// already written in full ends the connection now.
    pub fn drain(&mut self, t: &mut Transport, cx: &mut Ctx) {
        let next = self.maybe_finish(t, cx);
        debug_assert_eq!(next, Next::Stay);
    }

    /// A send completed: return the credits it earned, and end the exchange if the
    /// response is now written in full.
    pub fn sent(&mut self, t: &mut Transport, cx: &mut Ctx) -> Next {
        if !t.is_open() {
            return Next::Stay;
        }
        self.z.credits_earned(t, cx);
        self.maybe_finish(t, cx)
    }

    /// After a response is complete and written: reuse the connection or drain it.
    fn maybe_finish(&mut self, t: &mut Transport, cx: &mut Ctx) -> Next {
        if !t.is_open() || !self.z.response_done || t.sending.is_some() || !t.out.is_empty() {
            return Next::Stay;
        }
        if !self.keep_alive || !self.body_done || t.eof || t.last_exchange {
            t.drain(cx);
            return Next::Stay;
        }
        Next::NextRequest
    }
}
