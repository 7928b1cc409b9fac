//! The WebSocket session of an outbound exchange (`ws://`; `wss://` once TLS sits under the
//! shell: this session only ever sees plaintext). The opening handshake (RFC 6455 §4.1:
//! `Sec-WebSocket-Key`, the 101 checked, `Sec-WebSocket-Accept` compared exactly), then
//! frames both ways in the client role: the requester's `data`/`ping`/`pong`/`close`
//! packets go to the origin masked, each frame with a fresh key; the origin's frames must
//! be unmasked and come back as packets under the requester's credits, a message split
//! (`more`) where the credits run out. A non-101 answer becomes `error{rejected}` with its
//! code, reason, headers and body (body ≤ `--buffer-size`, as pushpin-connmgr), unless the
//! requester asked for `follow-redirects` and it is a 3xx whose `Location` (resolved against
//! the current URI) is a `ws`/`wss` URI: then the upgrade goes there, with a fresh key, up
//! to `limits::REDIRECTS_MAX` hops (pushpin-connmgr's rule; each hop resolved and
//! policy-checked anew by the shell).
//! permessage-deflate (`--compression`) reuses `proto::ws_deflate` with the roles mirrored.
//!
//! Bounds: the session's window is `--ws-out-buffer-size` (`--buffer-size` unless given).
//! The requester may send only what zring granted (the window, given back as sends to the
//! origin complete); what the origin sends waits in `carry` for the requester's credits, and
//! reading stops once `carry` holds a window or a whole message (the undecoded rest of the
//! read waits in `spill`). A compressed message inflates to at most
//! `limits::WS_MESSAGE_BYTES_MAX_DEFAULT`.
//!
//! Pieces toward the requester are whole: all of a message up to the window, else a window
//! or what the credits allow; a piece never ends where a read happened to end. zurl sends
//! each origin frame whole, and Pushpin 1.36 depends on it: its WebSocket proxy stalls once
//! a message it relays has a piece end at the very byte where the next hop's credits run
//! out (docs/protocols.md).
use super::{Condition, Shell, Timer};
use crate::conn::Ctx;
use crate::limits;
use crate::proto::http1::ChunkedDecoder;
use crate::proto::ws::{self, close_code, Event, MessageKind, Opcode, Role};
use crate::proto::ws_deflate;
use crate::proto::zhttp_client::{self as zc, Kind, Request, Response};
use std::time::Duration;

/// Requester headers zring writes itself or that name another connection's state
/// (pushpin-connmgr drops the same: `Upgrade`, `Connection`, the key and the version).
const DROPPED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "proxy-connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
];

/// How long zring waits for the origin to end the TCP connection once both close frames
/// passed (RFC 6455 §7.1.1: the server closes first), or for its close frame after an error.
const CLOSE_WAIT_MS: u64 = 5_000;

enum Phase {
    /// Waiting for the origin's answer to the upgrade request.
    Handshake,
    /// A non-101 answer: reading its body for the `rejected` reply.
    Rejecting(Box<Rejection>),
    /// Frames both ways.
    Open,
}

struct Rejection {
    code: u16,
    reason: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    framing: Body,
    body: Vec<u8>,
}

enum Body {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    Eof,
}

/// permessage-deflate, agreed with the origin: zring compresses what it sends and inflates
/// what it receives.
struct Deflate {
    tx: ws_deflate::Compressor,
    rx: ws_deflate::Decompressor,
}

pub(super) struct WsOut {
    /// The requester's headers to pass on: kept until the 101 (a redirect sends them again),
    /// then dropped.
    headers: Vec<(String, Vec<u8>)>,
    /// The requester's `follow-redirects`.
    follow_redirects: bool,
    key: [u8; ws::KEY_BYTES],
    /// xorshift64* state for mask keys and the key nonce (RFC 6455 §5.3 wants keys the
    /// application cannot predict; no browser script runs here, so a fast PRNG seeded per
    /// session from the worker's clock and counter is enough).
    rng: u64,
    phase: Phase,
    head_buf: Vec<u8>,
    /// zring offered permessage-deflate.
    offered: bool,
    /// The origin's frames as far as they have been read; held only mid-frame or
    /// mid-message (made again from the agreed parameters when bytes come).
    decoder: Option<Box<ws::Session>>,
    deflate: Option<Box<Deflate>>,
    /// The requester's credits for what zring sends it.
    credits: u64,
    /// Credits zring granted the requester and it has not used.
    granted: u64,
    /// The origin's message bytes waiting for credits. Invariant: one message's bytes.
    carry: Vec<u8>,
    carry_binary: bool,
    /// `carry` ends its message.
    carry_last: bool,
    /// The origin's message being decoded: (binary, compressed).
    rx_message: Option<(bool, bool)>,
    /// Undecoded origin bytes, kept while delivery waits for credits.
    spill: Vec<u8>,
    /// The origin's close, held until `carry` is delivered.
    close_in: Option<(Option<u16>, String)>,
    /// A message toward the origin is open (its first frame went).
    tx_open: bool,
    /// zring sent the origin a close frame.
    close_sent: bool,
    /// The origin's close frame came.
    close_received: bool,
    /// Close the connection once `out` is sent (after an error's close frame).
    end_after_send: bool,
}

impl WsOut {
    /// The session for a first packet with a ws/wss URI.
    pub fn new(pkt: &Request, buf: &[u8], seed: u64) -> Option<WsOut> {
        let mut headers = Vec::with_capacity(pkt.headers.len());
        for (n, v) in &pkt.headers {
            let name = String::from_utf8_lossy(n.get(buf)).into_owned();
            let value = v.get(buf);
            if value.iter().any(|&b| b == b'\r' || b == b'\n')
                || name.is_empty()
                || name.contains([':', ' ', '\r', '\n'])
            {
                return None;
            }
            if DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d)) {
                continue;
            }
            if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                // zring decodes the frames itself, so only it may agree on deflate; other
                // extensions (Pushpin's `grip`) pass on.
                let kept = without_deflate(value);
                if !kept.is_empty() {
                    headers.push((name, kept));
                }
                continue;
            }
            headers.push((name, value.to_vec()));
        }
        let mut rng = seed | 1;
        let key = fresh_key(&mut rng);
        Some(WsOut {
            headers,
            follow_redirects: pkt.follow_redirects,
            key,
            rng,
            phase: Phase::Handshake,
            head_buf: Vec::new(),
            offered: false,
            decoder: None,
            deflate: None,
            credits: u64::from(pkt.credits.unwrap_or(0)),
            granted: 0,
            carry: Vec::new(),
            carry_binary: false,
            carry_last: false,
            rx_message: None,
            spill: Vec::new(),
            close_in: None,
            tx_open: false,
            close_sent: false,
            close_received: false,
            end_after_send: false,
        })
    }

    /// The 101 went to the requester: later failures end with `cancel`.
    pub fn head_sent(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Connected: the upgrade request goes out.
    pub fn handle_connected(&mut self, sh: &mut Shell, cx: &mut Ctx) {
        sh.write_buf(cx.pool);
        let out = &mut sh.out;
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(sh.target.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(sh.target.host_header().as_bytes());
        out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
        out.extend_from_slice(&self.key);
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        self.offered = cx.settings.compression;
        if self.offered {
            out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
            out.extend_from_slice(ws_deflate::CLIENT_OFFER.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn handle_recv(&mut self, sh: &mut Shell, cx: &mut Ctx, data: &mut [u8]) {
        match self.phase {
            Phase::Handshake => {
                if self.head_buf.len() + data.len() > limits::OUT_RESPONSE_HEAD_BYTES_MAX {
                    sh.fail(cx, Condition::Undefined, false);
                    return;
                }
                self.head_buf.extend_from_slice(data);
                let mut head = std::mem::take(&mut self.head_buf);
                match self.read_head(sh, cx, &head) {
                    None => self.head_buf = head,
                    Some(used) if !sh.ended => {
                        let rest = &mut head[used..];
                        match self.phase {
                            Phase::Open => self.take_frames(sh, cx, rest),
                            _ => self.take_rejection(sh, cx, rest),
                        }
                    }
                    Some(_) => {}
                }
            }
            Phase::Rejecting(_) => self.take_rejection(sh, cx, data),
            Phase::Open => self.take_frames(sh, cx, data),
        }
    }

    /// Parses the answer's head; `Some(used)` once complete (or failed: then `sh.ended`).
    fn read_head(&mut self, sh: &mut Shell, cx: &mut Ctx, buf: &[u8]) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; limits::HEADERS_MAX];
        let mut resp = httparse::Response::new(&mut headers);
        let used = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return None,
            Err(e) => {
                crate::log!(
                    crate::log::DEBUG,
                    "client",
                    "bad answer to the upgrade: {e} in {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(200)])
                );
                sh.fail(cx, Condition::Undefined, false);
                return Some(buf.len());
            }
        };
        let code = resp.code.unwrap_or(0);
        let reason = resp.reason.unwrap_or("").as_bytes();
        if code != 101 {
            if self.redirect(sh, cx, code, resp.headers) {
                return Some(buf.len());
            }
            let Some(framing) = rejection_framing(code, resp.headers) else {
                sh.fail(cx, Condition::Undefined, false);
                return Some(buf.len());
            };
            self.phase = Phase::Rejecting(Box::new(Rejection {
                code,
                reason: reason.to_vec(),
                headers: resp
                    .headers
                    .iter()
                    .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                    .collect(),
                framing,
                body: Vec::new(),
            }));
            return Some(used);
        }
        let params = match self.check_101(resp.headers) {
            Ok(params) => params,
            Err(why) => {
                crate::log!(
                    crate::log::DEBUG,
                    "client",
                    "bad 101 from the origin: {why}"
                );
                sh.fail(cx, Condition::Undefined, false);
                return Some(buf.len());
            }
        };
        self.open(sh, cx, reason, resp.headers, params);
        Some(used)
    }

    /// Follows a 3xx when the requester asked to (pushpin-connmgr: any 3xx with a `Location`
    /// that resolves, against the current URI, to a `ws`/`wss` URI; zurl 1.11 takes only
    /// 301/302/303/307/308 and does not resolve a relative `Location`). True when the
    /// exchange left for the next hop (or failed: too many hops). The 3xx's body is not
    /// read: the connection is closed, never reused.
    fn redirect(
        &mut self,
        sh: &mut Shell,
        cx: &mut Ctx,
        code: u16,
        headers: &[httparse::Header],
    ) -> bool {
        if !self.follow_redirects || !(300..400).contains(&code) {
            return false;
        }
        let location = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("location"))
            .and_then(|h| std::str::from_utf8(h.value).ok());
        let Some(next) = location.and_then(|l| sh.target.resolve(l)) else {
            return false;
        };
        if !sh.may_follow(&next) {
            return false; // an http(s) Location, or TLS it cannot have: `rejected` with the 3xx
        }
        if sh.redirects >= limits::REDIRECTS_MAX {
            sh.fail(cx, Condition::TooManyRedirects, false);
            return true;
        }
        crate::log!(
            crate::log::DEBUG,
            "client",
            "upgrade redirected to {}",
            next.uri()
        );
        sh.redirect(cx, next);
        true
    }

    /// Before the next hop of a redirect: a new handshake with a fresh key.
    pub fn restart(&mut self) {
        debug_assert!(matches!(self.phase, Phase::Handshake));
        self.phase = Phase::Handshake;
        self.head_buf = Vec::new();
        self.key = fresh_key(&mut self.rng);
        self.offered = false;
    }

    /// RFC 6455 §4.1 (the client's checks of the server's handshake): `Upgrade` and
    /// `Connection`, the exact accept value, and an extension answer zring can honour.
    fn check_101(
        &self,
        headers: &[httparse::Header],
    ) -> Result<Option<ws_deflate::Params>, &'static str> {
        let values = |name: &'static str| {
            headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let has_token = |name: &'static str, token: &[u8]| {
            values(name).any(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
            })
        };
        if !has_token("upgrade", b"websocket") {
            return Err("no Upgrade: websocket");
        }
        if !has_token("connection", b"upgrade") {
            return Err("no Connection: upgrade");
        }
        let expected = ws::AcceptKey::from_key(&self.key);
        let mut accepts = values("sec-websocket-accept");
        match (accepts.next(), accepts.next()) {
            (Some(a), None) if a == expected.as_bytes() => {}
            _ => return Err("Sec-WebSocket-Accept mismatch"),
        }
        ws_deflate::parse_response(values("sec-websocket-extensions"), self.offered)
            .map_err(|_| "bad permessage-deflate answer")
    }

    /// The 101 is good: frames from here on; the requester learns the headers and its
    /// credits toward the origin.
    fn open(
        &mut self,
        sh: &mut Shell,
        cx: &mut Ctx,
        reason: &[u8],
        headers: &[httparse::Header],
        params: Option<ws_deflate::Params>,
    ) {
        self.deflate = params.map(|p| {
            let own = p.mirrored(cx.settings.deflate.server_max_window_bits);
            Box::new(Deflate {
                tx: ws_deflate::Compressor::new(&own, &cx.settings.deflate),
                rx: ws_deflate::Decompressor::new(&own, limits::WS_MESSAGE_BYTES_MAX_DEFAULT),
            })
        });
        self.phase = Phase::Open;
        self.headers = Vec::new(); // no redirect after a 101: the idle session holds none
        let grant = cx.settings.ws_out_buffer_size as u64;
        self.granted = grant;
        let headers: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|h| (h.name.as_bytes(), h.value))
            .collect();
        sh.send_packet(cx, |o, r| {
            zc::encode_ws_accepted(o, r, reason, &headers, grant as u32)
        });
    }

    fn take_rejection(&mut self, sh: &mut Shell, cx: &mut Ctx, mut data: &[u8]) {
        let Phase::Rejecting(rej) = &mut self.phase else {
            return;
        };
        let done = match &mut rej.framing {
            Body::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                rej.body.extend_from_slice(&data[..n]);
                *left -= n as u64;
                *left == 0
            }
            Body::Eof => {
                rej.body.extend_from_slice(data);
                false
            }
            Body::Chunked(d) => {
                // Bounded: each round consumes input or ends.
                while !data.is_empty() && !d.is_done() {
                    let Ok(dec) = d.decode(data) else {
                        sh.fail(cx, Condition::Undefined, false);
                        return;
                    };
                    if let Some(b) = dec.data {
                        rej.body.extend_from_slice(b);
                    }
                    data = &data[dec.consumed..];
                    if dec.consumed == 0 && dec.data.is_none() {
                        break;
                    }
                }
                d.is_done()
            }
        };
        if rej.body.len() > cx.settings.buffer_size {
            sh.fail(cx, Condition::RejectionTooLarge, false);
        } else if done {
            self.reject(sh, cx);
        }
    }

    fn reject(&mut self, sh: &mut Shell, cx: &mut Ctx) {
        let Phase::Rejecting(rej) = &self.phase else {
            return;
        };
        let headers: Vec<(&[u8], &[u8])> =
            rej.headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let resp = Response {
            code: Some(rej.code),
            reason: &rej.reason,
            headers: &headers,
            body: &rej.body,
            more: false,
        };
        sh.send_packet(cx, |o, r| zc::encode_ws_rejected(o, r, &resp));
        sh.end(cx);
    }

    /// Decodes the origin's frames from `spill` and then `data`, as far as delivery allows.
    fn take_frames(&mut self, sh: &mut Shell, cx: &mut Ctx, data: &mut [u8]) {
        if !self.spill.is_empty() || self.blocked(cx) {
            self.spill.extend_from_slice(data);
            self.drain_spill(sh, cx);
            return;
        }
        let used = self.decode(sh, cx, data);
        if used < data.len() && !sh.ended {
            if self.spill.capacity() == 0 {
                self.spill = cx.pool.take();
            }
            self.spill.extend_from_slice(&data[used..]);
        }
        self.settle(sh, cx);
    }

    fn drain_spill(&mut self, sh: &mut Shell, cx: &mut Ctx) {
        // A message's end is an event of its own, due after its last piece even when no
        // byte is left to decode.
        let end_due = self.decoder.as_ref().is_some_and(|d| d.message_ending());
        if (!self.spill.is_empty() || end_due) && !self.blocked(cx) {
            let mut spill = std::mem::take(&mut self.spill);
            let used = self.decode(sh, cx, &mut spill);
            spill.drain(..used);
            match spill.is_empty() {
                true => cx.pool.give(spill),
                false => self.spill = spill,
            }
        }
        self.settle(sh, cx);
    }

    /// Delivery waits: decoding stops until credits come.
    fn blocked(&self, cx: &Ctx) -> bool {
        self.carry_last
            || self.carry.len() >= cx.settings.ws_out_buffer_size
            || self.close_in.is_some()
    }

    /// Delivers what credits allow, then pauses reading while delivery waits.
    fn settle(&mut self, sh: &mut Shell, cx: &mut Ctx) {
        self.deliver(sh, cx);
        if !sh.ended {
            sh.want_paused(self.blocked(cx) || !self.spill.is_empty());
        }
    }

    /// Runs the decoder over `input` until it is used up, delivery blocks or the session
    /// fails. Returns the bytes used.
    fn decode(&mut self, sh: &mut Shell, cx: &mut Ctx, input: &mut [u8]) -> usize {
        let mut pos = 0;
        // Bounded: each round takes bytes or yields an event that takes none (a message
        // end), which is followed by one that does.
        while !sh.ended && !self.blocked(cx) {
            if !matches!(self.phase, Phase::Open) {
                return input.len();
            }
            let compression = self.deflate.is_some();
            let decoder = self.decoder.get_or_insert_with(|| {
                let config = ws::SessionConfig {
                    // Messages stream through in pieces: zring needs no whole message
                    // (connmgr sets no limit either); compressed ones are bounded when
                    // inflated.
                    message_bytes_max: ws::PAYLOAD_BYTES_MAX,
                    compression,
                };
                Box::new(ws::Session::with_role(config, Role::Client))
            });
            let step = match decoder.decode(&mut input[pos..]) {
                Ok(step) => step,
                Err(e) => {
                    self.protocol_error(sh, cx, e.close_code(), e.description());
                    return input.len();
                }
            };
            let consumed = step.consumed;
            let (data_len, ending) = match step.event {
                None => {
                    pos += consumed;
                    break;
                }
                Some(Event::Data(d)) => (d.len(), false),
                Some(Event::MessageStart { kind, compressed }) => {
                    self.rx_message = Some((kind == MessageKind::Binary, compressed));
                    self.carry_binary = kind == MessageKind::Binary;
                    (0, false)
                }
                Some(Event::MessageEnd) => (0, true),
                Some(Event::Ping(p)) => {
                    let p = p.to_vec();
                    sh.send_packet(cx, |o, r| zc::encode_ws_control(o, r, Kind::Ping, &p));
                    (0, false)
                }
                Some(Event::Pong(p)) => {
                    let p = p.to_vec();
                    sh.send_packet(cx, |o, r| zc::encode_ws_control(o, r, Kind::Pong, &p));
                    (0, false)
                }
                Some(Event::Close { code, reason }) => {
                    self.close_in = Some((code, reason.to_string()));
                    self.close_received = true;
                    (0, false)
                }
            };
            pos += consumed;
            if data_len > 0 {
                let piece = pos - data_len..pos;
                if !self.take_data(sh, cx, &input[piece], false) {
                    return input.len();
                }
            }
            if ending && !self.take_data(sh, cx, &[], true) {
                return input.len();
            }
        }
        // Between frames with no message open the decoder is just its config: drop it, so
        // an idle WebSocket holds none (as on the server side, `conn::ws`).
        if self.decoder.as_ref().is_some_and(|d| d.is_idle()) {
            self.decoder = None;
        }
        pos
    }

    /// A piece of the origin's message into `carry` (inflated when compressed). False: the
    /// session failed.
    fn take_data(&mut self, sh: &mut Shell, cx: &mut Ctx, piece: &[u8], last: bool) -> bool {
        if self.carry.capacity() == 0 {
            self.carry = cx.pool.take();
        }
        let compressed = self.rx_message.is_some_and(|(_, c)| c);
        if last {
            self.carry_last = true;
            self.rx_message = None;
        }
        if !compressed {
            self.carry.extend_from_slice(piece);
            return true;
        }
        let Some(deflate) = self.deflate.as_mut() else {
            return true;
        };
        let mut input = piece;
        // Bounded: the decompressor's message limit caps what all rounds produce, and each
        // round consumes input or fills its output.
        loop {
            match deflate
                .rx
                .decompress(input, last, &mut self.carry, 64 * 1024)
            {
                Ok(inflated) => {
                    input = &input[inflated.consumed..];
                    if inflated.done || (input.is_empty() && !inflated.output_full) {
                        return true;
                    }
                }
                Err(e) => {
                    self.protocol_error(sh, cx, e.close_code(), e.description());
                    return false;
                }
            }
        }
    }

    /// The origin broke the protocol: a close frame with `code` to it, `error` to the
    /// requester, and the connection closed once the close frame is out.
    fn protocol_error(&mut self, sh: &mut Shell, cx: &mut Ctx, code: u16, why: &str) {
        crate::log!(crate::log::DEBUG, "client", "origin WebSocket error: {why}");
        if !self.close_sent {
            sh.write_buf(cx.pool);
            self.send_close(sh, code, why);
        }
        sh.send_packet(cx, |o, r| {
            zc::encode_error(o, r, Condition::Undefined.as_bytes())
        });
        sh.ended = true;
        self.end_after_send = true;
        self.carry.clear();
        self.spill.clear();
        sh.set_timer(
            cx.settings,
            cx.now,
            Timer::Io,
            Some(Duration::from_millis(CLOSE_WAIT_MS)),
        );
    }

    /// Hands the requester what its credits allow in whole pieces (the message's rest, a
    /// window, or the credits), and the origin's close after it.
    fn deliver(&mut self, sh: &mut Shell, cx: &mut Ctx) {
        let max = cx.settings.ws_out_buffer_size as u64;
        // Bounded: each round sends bytes of the bounded carry, or its empty last piece.
        while !sh.ended && (self.credits > 0 && !self.carry.is_empty() || self.carry_last) {
            let whole = self.credits.min(max);
            let n = whole.min(self.carry.len() as u64) as usize;
            let last = self.carry_last && n == self.carry.len();
            if n == 0 && !last {
                break;
            }
            if !last && (n as u64) < whole && self.close_in.is_none() {
                // Neither the message's end nor a full piece, and more of the message may
                // come: wait for it (decoding goes on, as `carry` is below the window).
                break;
            }
            let body = &self.carry[..n];
            let binary = self.carry_binary;
            sh.send_packet(cx, |o, r| zc::encode_ws_data(o, r, binary, body, !last));
            self.carry.drain(..n);
            self.credits -= n as u64;
            if last {
                self.carry_last = false;
            }
        }
        // Delivered: the buffer goes back to the pool, so an idle session holds none.
        if self.carry.is_empty() && self.carry.capacity() > 0 {
            cx.pool.give(std::mem::take(&mut self.carry));
        }
        if self.carry.is_empty() && !self.carry_last {
            if let Some((code, reason)) = self.close_in.take() {
                sh.send_packet(cx, |o, r| {
                    zc::encode_ws_close(o, r, code, reason.as_bytes())
                });
                self.closing(sh, cx);
            }
        }
    }

    /// A requester packet after the first.
    pub fn handle_packet(&mut self, sh: &mut Shell, cx: &mut Ctx, pkt: &Request, buf: &[u8]) {
        if let Some(c) = pkt.credits {
            self.credits += u64::from(c);
        }
        let body = pkt.body.get(buf);
        if matches!(self.phase, Phase::Open) && !self.close_sent {
            sh.write_buf(cx.pool);
        }
        match pkt.kind.get() {
            Kind::Data if matches!(self.phase, Phase::Open) && !self.close_sent => {
                if body.len() as u64 > self.granted {
                    // More than zring granted (pushpin-connmgr: BufferExceeded).
                    sh.fail(cx, Condition::Undefined, true);
                    return;
                }
                self.granted -= body.len() as u64;
                self.send_data(sh, body, pkt.binary, !pkt.more);
            }
            Kind::Ping | Kind::Pong if matches!(self.phase, Phase::Open) && !self.close_sent => {
                let opcode = match pkt.kind.get() {
                    Kind::Ping => Opcode::Ping,
                    _ => Opcode::Pong,
                };
                let n = body.len().min(ws::CONTROL_PAYLOAD_BYTES_MAX);
                let mask = self.mask();
                ws::encode_masked_frame(&mut sh.out, true, false, opcode, &body[..n], mask);
            }
            Kind::Close if matches!(self.phase, Phase::Open) && !self.close_sent => {
                let code = pkt.code.unwrap_or(close_code::NORMAL);
                let reason = String::from_utf8_lossy(body);
                self.send_close(sh, code, &reason);
                self.closing(sh, cx);
            }
            _ => {}
        }
        self.drain_spill(sh, cx);
    }

    /// A message piece from the requester, framed (and compressed) for the origin.
    fn send_data(&mut self, sh: &mut Shell, body: &[u8], binary: bool, fin: bool) {
        let opcode = match (self.tx_open, binary) {
            (true, _) => Opcode::Continuation,
            (false, true) => Opcode::Binary,
            (false, false) => Opcode::Text,
        };
        let first = !self.tx_open;
        self.tx_open = !fin;
        sh.out_body += body.len() as u64;
        let mask = self.mask();
        match self.deflate.as_mut() {
            None => ws::encode_masked_frame(&mut sh.out, fin, false, opcode, body, mask),
            Some(d) => {
                let mut packed = Vec::with_capacity(body.len() / 2 + 16);
                d.tx.compress(body, fin, &mut packed);
                if !fin {
                    // The piece goes now, as a fragment (RFC 7692 §7.2.1 allows a flush).
                    d.tx.flush(&mut packed);
                }
                ws::encode_masked_frame(&mut sh.out, fin, first, opcode, &packed, mask);
            }
        }
    }

    fn send_close(&mut self, sh: &mut Shell, code: u16, reason: &str) {
        let code = match close_code::is_valid(code) {
            true => code,
            false => close_code::NORMAL,
        };
        let payload = ws::ClosePayload::new(code, reason);
        let mask = self.mask();
        ws::encode_masked_frame(
            &mut sh.out,
            true,
            false,
            Opcode::Close,
            payload.as_bytes(),
            mask,
        );
        self.close_sent = true;
    }

    /// After a close frame either way: once both went, wait for the origin to end the TCP
    /// connection (a bounded wait).
    fn closing(&mut self, sh: &mut Shell, cx: &mut Ctx) {
        if self.close_sent && self.close_received {
            sh.ended = true; // the requester has had everything
        }
        sh.set_timer(
            cx.settings,
            cx.now,
            Timer::Io,
            Some(Duration::from_millis(CLOSE_WAIT_MS)),
        );
    }

    /// A send to the origin completed, `body` bytes of it message payload: credit them back.
    pub fn handle_sent(&mut self, sh: &mut Shell, cx: &mut Ctx, body: u64) {
        if self.end_after_send && sh.out.is_empty() {
            sh.end(cx);
            return;
        }
        if body > 0 && !sh.ended {
            self.granted += body;
            sh.send_packet(cx, |o, r| zc::encode_credit(o, r, body as u32));
        }
    }

    /// Heap bytes the session holds beyond its box (buffers, decoder, compression state):
    /// 0 for an idle open session without permessage-deflate.
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        self.headers.capacity()
            + self.head_buf.capacity()
            + self.carry.capacity()
            + self.spill.capacity()
            + self
                .decoder
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<ws::Session>())
            + self
                .deflate
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Deflate>())
    }

    /// The origin ended the connection.
    pub fn handle_eof(&mut self, sh: &mut Shell, cx: &mut Ctx) {
        match &self.phase {
            Phase::Rejecting(rej) if matches!(rej.framing, Body::Eof) => self.reject(sh, cx),
            Phase::Open if self.close_received || self.end_after_send => sh.end(cx),
            // Closed without a close frame (1006): the requester hears `cancel` after the
            // 101, `error` before it.
            _ => {
                crate::log!(
                    crate::log::DEBUG,
                    "client",
                    "origin closed: handshake bytes {}, open {}",
                    self.head_buf.len(),
                    self.head_sent()
                );
                sh.fail(cx, Condition::Undefined, self.head_sent())
            }
        }
    }

    /// A fresh mask key.
    fn mask(&mut self) -> [u8; 4] {
        let word = next(&mut self.rng);
        (word >> 32).to_le_bytes()[..4].try_into().expect("4 bytes")
    }
}

/// A `Sec-WebSocket-Key` from 16 fresh bytes of `rng`.
fn fresh_key(rng: &mut u64) -> [u8; ws::KEY_BYTES] {
    let mut nonce = [0u8; ws::KEY_NONCE_BYTES];
    nonce[..8].copy_from_slice(&next(rng).to_le_bytes());
    nonce[8..].copy_from_slice(&next(rng).to_le_bytes());
    ws::client_key(nonce)
}

/// xorshift64* (Vigna): a full-period generator for a non-zero state.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The body's delimitation of a non-101 answer. `None`: a bad `Content-Length`.
fn rejection_framing(code: u16, headers: &[httparse::Header]) -> Option<Body> {
    if code == 204 || code == 304 || (100..200).contains(&code) {
        return Some(Body::Length(0));
    }
    let chunked = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    if chunked {
        return Some(Body::Chunked(Box::default()));
    }
    match headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        Some(h) => {
            let n = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            Some(Body::Length(n))
        }
        None => Some(Body::Eof),
    }
}

/// A `Sec-WebSocket-Extensions` value without its `permessage-deflate` elements.
fn without_deflate(value: &[u8]) -> Vec<u8> {
    let mut kept = Vec::with_capacity(value.len());
    for element in value.split(|&b| b == b',') {
        let name = element
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if name.is_empty() || name.eq_ignore_ascii_case(ws_deflate::EXTENSION_NAME.as_bytes()) {
            continue;
        }
        if !kept.is_empty() {
            kept.extend_from_slice(b", ");
        }
        kept.extend_from_slice(element.trim_ascii());
    }
    kept
}
