//! Mongrel2 `Proxy` routes, sans-IO: the client's request goes to an HTTP backend over a
//! second slot (an outbound connection the worker opens with `Command::Connect`), and the
//! backend's response comes back to the client byte for byte, as Mongrel2 1.12.2 does it
//! (src/connection.c `connection_proxy_*`, src/proxy.c):
//!
//! - the request head is forwarded exactly as the client sent it (Host kept, nothing
//!   added: Mongrel2 only sends a rewritten head when a filter made one), then the body
//!   (`Content-Length`, or a chunked body forwarded raw up to its end);
//! - the response is read just far enough to find its end (head, then `Content-Length`,
//!   chunked framing, nothing for 204/304/HEAD/1xx, or until the backend closes) and
//!   streamed to the client unchanged; one request at a time (Mongrel2 reads the next
//!   request only after the response);
//! - keep-alive: the next request on the client connection for the same backend reuses the
//!   backend connection; one for another route closes it and is routed as usual;
//! - a response with `Connection: close` (or read until close) closes the client after it;
//!   so does a request with `Connection: close` (Mongrel2 leaves that to the backend's
//!   answer, which a backend that ignores it never gives);
//! - connect failure, or the backend closing before a response head: Mongrel2's canned
//!   `502 Bad Gateway` and close.
//!
//! Bounds: at most [`PROXY_QUEUE_BYTES`] wait for the backend (request bytes past it stay in
//! the client's read buffer, which pauses the client), and the backend is paused while the
//! client's output holds more than that; a response head is at most
//! [`PROXY_HEAD_BYTES_MAX`]; a connect has [`PROXY_CONNECT_TIMEOUT`].
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use arrayvec::ArrayVec;
use std::time::Duration;

use super::m2::M2Conn;
use super::transport::{Link, Timer, Transport};
use super::Ctx;
use crate::proto::http1::ChunkedDecoder;
use crate::runtime::Command;

/// Bytes queued toward either side before the other side's reading pauses.
pub const PROXY_QUEUE_BYTES: usize = 64 * 1024;
/// Largest backend response head.
pub const PROXY_HEAD_BYTES_MAX: usize = 64 * 1024;
/// Longest a backend connect may take (Mongrel2's blocking `netdial` has none).
pub const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 11\r\nServer: zring\r\n\r\nBad Gateway";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A backend slot is wanted: the worker assigns one and issues the connect.
    Wanted,
    Connecting,
    Open,
}

/// The request body still to forward.
#[derive(Debug)]
enum ReqBody {
    None,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// Where the backend's response is.
#[derive(Debug)]
enum Resp {
    /// No request outstanding.
    Idle,
    /// Reading the head (kept until complete).
    Head(Vec<u8>),
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    /// Until the backend closes.
    ToClose,
}

/// A client connection's backend (boxed in `M2Conn`), on a slot of its own. Invariants:
/// `slot` is `Some` from `backend_assign` until the backend is dropped (the slot then goes to
/// `backend_close`); commands go to it only in `Phase::Open`; at most one send in flight
/// (`sending`); `to_backend` holds at most `PROXY_QUEUE_BYTES` plus one read.
pub(super) struct Proxy {
    addr: SocketAddr,
    slot: Option<u32>,
    phase: Phase,
    /// Request bytes not yet handed to the runtime. Bounded by [`PROXY_QUEUE_BYTES`] plus
    /// one read.
    to_backend: Vec<u8>,
    sending: bool,
    paused: bool,
    eof: bool,
    req: ReqBody,
    resp: Resp,
    head_request: bool,
    /// The backend said `Connection: close` (or HTTP/1.0 without keep-alive).
    close_after: bool,
    /// The client asked for the connection to close after this response.
    client_close: bool,
    /// Bytes of the current response already queued for the client.
    resp_bytes: u64,
}

impl Proxy {
    fn new(addr: SocketAddr) -> Proxy {
        Proxy {
            addr,
            slot: None,
            phase: Phase::Wanted,
            to_backend: Vec::new(),
            sending: false,
            paused: false,
            eof: false,
            req: ReqBody::None,
            resp: Resp::Idle,
            head_request: false,
            close_after: false,
            client_close: false,
            resp_bytes: 0,
        }
    }
}

/// What one step of response parsing found.
enum Step {
    /// Consumed bytes (all forwarded).
    Used(usize),
    /// The response ended after this many bytes.
    Done(usize),
    /// The backend's response is not HTTP: 502 (or close if bytes went out).
    Bad,
}

impl M2Conn {
    /// A request for a `Proxy` route: `input` holds at least its head (`head_len` bytes).
    /// Returns the bytes used (the head).
    pub(super) fn proxy_start(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        addr: SocketAddr,
        req: &crate::proto::http1::Request,
        input: &[u8],
    ) -> usize {
        // Another backend, or a dead connection to this one: let it go (Mongrel2's
        // `proxy_exit_routing` closes it too).
        if let Some(p) = self.proxy.as_ref() {
            if p.addr != addr || p.eof {
                self.proxy_drop();
            }
        }
        let m = &mut *self;
        let p = m.proxy.get_or_insert_with(|| Box::new(Proxy::new(addr)));
        if p.phase == Phase::Wanted {
            t.set_timer(cx.settings, Timer::Expiry, cx.now + PROXY_CONNECT_TIMEOUT);
        }
        let m = &mut *self;
        let p = m.proxy.as_mut().expect("proxy");
        if p.to_backend.capacity() == 0 {
            p.to_backend = cx.pool.take();
        }
        p.to_backend.extend_from_slice(&input[..req.head_len]);
        p.req = match req.body {
            crate::proto::http1::BodyKind::None => ReqBody::None,
            crate::proto::http1::BodyKind::Length(0) => ReqBody::None,
            crate::proto::http1::BodyKind::Length(n) => ReqBody::Length(n),
            crate::proto::http1::BodyKind::Chunked => ReqBody::Chunked(Box::default()),
        };
        p.resp = Resp::Head(Vec::new());
        p.head_request = req.method == "HEAD";
        p.close_after = false;
        p.client_close = !req.keep_alive;
        p.resp_bytes = 0;
        req.head_len
    }

    /// Feeds request body bytes (or waits). Returns `Some(bytes used)` while a proxied
    /// request or its response is in progress (`Some(0)`: wait), `None` when the connection
    /// may read its next request.
    pub(super) fn proxy_feed(&mut self, input: &[u8]) -> Option<usize> {
        let p = self.proxy.as_mut()?;
        let room = PROXY_QUEUE_BYTES.saturating_sub(p.to_backend.len());
        let n = match &mut p.req {
            ReqBody::None => {
                return (!matches!(p.resp, Resp::Idle)).then_some(0);
            }
            ReqBody::Length(left) => {
                let n = (input.len() as u64).min(*left).min(room as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    p.req = ReqBody::None;
                }
                n
            }
            ReqBody::Chunked(dec) => {
                // Forwarded raw; decoded only to find where the body ends.
                let limit = input.len().min(room);
                let mut used = 0;
                let mut done = false;
                while used < limit {
                    match dec.decode(&input[used..limit]) {
                        Ok(d) => {
                            used += d.consumed;
                            if d.done {
                                done = true;
                                break;
                            }
                            if d.consumed == 0 {
                                break;
                            }
                        }
                        Err(_) => {
                            // Forward what there is; the backend judges the framing.
                            used = limit;
                            done = true;
                            break;
                        }
                    }
                }
                if done {
                    p.req = ReqBody::None;
                }
                used
            }
        };
        p.to_backend.extend_from_slice(&input[..n]);
        Some(n)
    }

    /// Backend slots this connection still holds (the worker closes them if the client
    /// slot goes without `flush` having done it).
    pub(super) fn backend_slots(&self) -> ArrayVec<u32, 5> {
        let mut v = ArrayVec::new();
        v.extend(self.backend_close.iter().copied());
        if let Some(s) = self.proxy.as_ref().and_then(|p| p.slot) {
            v.push(s);
        }
        v
    }

    /// Whether this connection wants a backend slot (asked once per want: the worker
    /// answers with `backend_assign` before anything else happens).
    pub(super) fn backend_wanted(&self, t: &Transport) -> Option<SocketAddr> {
        let p = self.proxy.as_ref()?;
        (p.phase == Phase::Wanted && t.link != Link::Closed).then_some(p.addr)
    }

    /// The worker's answer: the slot it will connect (`None`: no backend slot free).
    pub(super) fn backend_assign(&mut self, t: &mut Transport, cx: &mut Ctx, slot: Option<u32>) {
        let Some(p) = self.proxy.as_mut() else {
            return;
        };
        match slot {
            Some(s) => {
                p.slot = Some(s);
                p.phase = Phase::Connecting;
            }
            None => {
                crate::log!(crate::log::WARN, "m2", "proxy: no backend slot free");
                self.proxy = None;
                self.bad_gateway(t, cx);
            }
        }
    }

    /// Whether `slot` is this connection's current backend.
    fn is_backend(&self, slot: u32) -> bool {
        self.proxy.as_ref().is_some_and(|p| p.slot == Some(slot))
    }

    pub(super) fn backend_connected(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        slot: u32,
        ok: bool,
    ) {
        if !self.is_backend(slot) {
            return;
        }
        t.clear_timer(Timer::Expiry);
        if !ok {
            self.proxy_drop();
            return self.bad_gateway(t, cx);
        }
        let p = self.proxy.as_mut().expect("proxy");
        p.phase = Phase::Open;
    }

    pub(super) fn backend_sent(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        slot: u32,
        buf: Vec<u8>,
    ) {
        cx.pool.give(buf);
        if !self.is_backend(slot) {
            return;
        }
        let p = self.proxy.as_mut().expect("proxy");
        p.sending = false;
        // Room again for body bytes waiting in the client's buffer.
        self.pump(t, cx);
    }

    /// Bytes from the backend: forwarded to the client up to the response's end.
    pub(super) fn backend_recv(&mut self, t: &mut Transport, cx: &mut Ctx, slot: u32, data: &[u8]) {
        if !self.is_backend(slot) || !t.is_open() {
            return;
        }
        let mut used = 0;
        // Bounded: each step consumes bytes or ends the loop.
        while used < data.len() {
            let p = self.proxy.as_mut().expect("proxy");
            if matches!(p.resp, Resp::Head(_)) {
                match head_step(p, &data[used..]) {
                    HeadStep::Partial => return,
                    HeadStep::Bad => return self.backend_broke(t, cx),
                    HeadStep::Complete {
                        used: n,
                        head,
                        done,
                    } => {
                        used += n;
                        self.forward(t, cx, &head);
                        if done {
                            return self.response_done(t, cx);
                        }
                        continue;
                    }
                }
            }
            let p = self.proxy.as_mut().expect("proxy");
            match proxy_step(p, &data[used..]) {
                Step::Used(0) => break,
                Step::Used(n) => {
                    self.forward(t, cx, &data[used..used + n]);
                    used += n;
                }
                Step::Done(n) => {
                    self.forward(t, cx, &data[used..used + n]);
                    return self.response_done(t, cx);
                }
                Step::Bad => return self.backend_broke(t, cx),
            }
        }
    }

    /// The backend closed (or failed).
    pub(super) fn backend_eof(&mut self, t: &mut Transport, cx: &mut Ctx, slot: u32) {
        if !self.is_backend(slot) {
            return;
        }
        let p = self.proxy.as_mut().expect("proxy");
        p.eof = true;
        match p.resp {
            Resp::Idle => self.proxy_drop(), // idle keep-alive ended: reconnect next time
            Resp::ToClose => {
                self.proxy_drop();
                t.drain(cx);
            }
            _ => self.backend_broke(t, cx),
        }
    }

    /// Connect timeout (`Timer::Expiry` while connecting).
    pub(super) fn proxy_timeout(&mut self, t: &mut Transport, cx: &mut Ctx) -> bool {
        let connecting = self.proxy.as_ref().is_some_and(|p| p.phase != Phase::Open);
        if !connecting {
            return false;
        }
        t.clear_timer(Timer::Expiry);
        self.proxy_drop();
        self.bad_gateway(t, cx);
        true
    }

    fn forward(&mut self, t: &mut Transport, cx: &mut Ctx, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(p) = self.proxy.as_mut() {
            p.resp_bytes += bytes.len() as u64;
        }
        t.write_out(cx.pool, |out| out.extend_from_slice(bytes));
    }

    fn response_done(&mut self, t: &mut Transport, cx: &mut Ctx) {
        let p = self.proxy.as_mut().expect("proxy");
        p.resp = Resp::Idle;
        if p.close_after || p.client_close || !matches!(p.req, ReqBody::None) {
            // Mongrel2: `client->close` → REMOTE_CLOSE, which closes the client too.
            self.proxy_drop();
            return t.drain(cx);
        }
        // The next pipelined request, if any.
        self.pump(t, cx);
    }

    /// The backend failed mid-request: 502 if the client got nothing yet, else close.
    fn backend_broke(&mut self, t: &mut Transport, cx: &mut Ctx) {
        let started = self.proxy.as_ref().is_some_and(|p| p.resp_bytes > 0);
        self.proxy_drop();
        if started {
            t.drain(cx);
        } else {
            self.bad_gateway(t, cx);
        }
    }

    fn bad_gateway(&mut self, t: &mut Transport, cx: &mut Ctx) {
        t.write_out(cx.pool, |out| out.extend_from_slice(BAD_GATEWAY));
        t.drain(cx);
    }

    /// Forgets the backend; its slot is closed by the next `flush`.
    pub(super) fn proxy_drop(&mut self) {
        let m = &mut *self;
        if let Some(p) = m.proxy.take() {
            if let Some(slot) = p.slot {
                m.backend_close.push(slot);
            }
        }
    }

    /// Backend commands (part of the connection's `flush`, before the client's own send).
    pub(super) fn proxy_flush(&mut self, t: &Transport, cx: &mut Ctx) {
        // A client that is going no longer needs its backend.
        let closed = !t.is_open();
        // The client's output waits only while a send is in flight.
        let out_len = if t.sending.is_some() { t.out.len() } else { 0 };
        let m = &mut *self;
        if closed {
            if let Some(p) = m.proxy.take() {
                if let Some(slot) = p.slot {
                    m.backend_close.push(slot);
                }
            }
        }
        for slot in m.backend_close.drain(..) {
            cx.io(Command::Close { slot });
        }
        let Some(p) = m.proxy.as_mut() else { return };
        let Some(slot) = p.slot else { return };
        if p.phase != Phase::Open {
            return;
        }
        if !p.sending && !p.to_backend.is_empty() {
            p.sending = true;
            let buf = std::mem::take(&mut p.to_backend);
            cx.io(Command::Send { slot, buf });
        }
        let want_pause = out_len >= PROXY_QUEUE_BYTES;
        if want_pause != p.paused && !p.eof {
            p.paused = want_pause;
            cx.io(if want_pause {
                Command::PauseRecv { slot }
            } else {
                Command::ResumeRecv { slot }
            });
        }
    }
}

/// What reading a response head found.
enum HeadStep {
    /// All of the bytes were taken; the head is not complete yet.
    Partial,
    /// The head is complete: `used` bytes of the input were part of it; `head` is the whole
    /// head to forward; `done`: the response has no body.
    Complete {
        used: usize,
        head: Vec<u8>,
        done: bool,
    },
    Bad,
}

/// Reads (part of) a response head from `data`.
fn head_step(p: &mut Proxy, data: &[u8]) -> HeadStep {
    let Resp::Head(buf) = &mut p.resp else {
        return HeadStep::Bad;
    };
    let before = buf.len();
    let take = data.len().min(PROXY_HEAD_BYTES_MAX + 1 - before);
    buf.extend_from_slice(&data[..take]);
    let mut headers = [httparse::EMPTY_HEADER; crate::limits::HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= PROXY_HEAD_BYTES_MAX => {
            return HeadStep::Partial;
        }
        _ => return HeadStep::Bad,
    };
    let code = resp.code.unwrap_or(0);
    let version = resp.version.unwrap_or(1);
    let mut length = None;
    let mut chunked = false;
    let mut close = version == 0;
    let mut keep_alive = false;
    for h in resp.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match v.parse::<u64>() {
                Ok(n) => length = Some(n),
                Err(_) => return HeadStep::Bad,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in v.split(',') {
                let t = t.trim();
                if t.eq_ignore_ascii_case("close") {
                    close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    if version == 0
        && keep_alive
        && !resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        })
    {
        close = false;
    }
    let mut head = std::mem::take(buf);
    head.truncate(head_len);
    let used = head_len - before;
    if (100..200).contains(&code) && code != 101 {
        // An interim response (100 Continue): forwarded; the real one follows.
        p.resp = Resp::Head(Vec::new());
        return HeadStep::Complete {
            used,
            head,
            done: false,
        };
    }
    p.close_after = close;
    p.resp = if p.head_request || code == 204 || code == 304 {
        Resp::Idle
    } else if chunked {
        Resp::Chunked(Box::default())
    } else if let Some(n) = length {
        if n == 0 {
            Resp::Idle
        } else {
            Resp::Length(n)
        }
    } else {
        p.close_after = true;
        Resp::ToClose
    };
    let done = matches!(p.resp, Resp::Idle);
    HeadStep::Complete { used, head, done }
}

/// One parsing step over backend bytes `data`.
fn proxy_step(p: &mut Proxy, data: &[u8]) -> Step {
    match &mut p.resp {
        Resp::Idle => Step::Used(data.len()), // unasked-for bytes: dropped
        Resp::Head(_) => Step::Bad,           // handled by `head_step`
        Resp::Length(left) => {
            let n = (data.len() as u64).min(*left) as usize;
            *left -= n as u64;
            if *left == 0 {
                Step::Done(n)
            } else {
                Step::Used(n)
            }
        }
        Resp::Chunked(dec) => {
            let mut used = 0;
            while used < data.len() {
                match dec.decode(&data[used..]) {
                    Ok(d) => {
                        used += d.consumed;
                        if d.done {
                            return Step::Done(used);
                        }
                        if d.consumed == 0 {
                            break;
                        }
                    }
                    Err(_) => return Step::Bad,
                }
            }
            Step::Used(used)
        }
        Resp::ToClose => Step::Used(data.len()),
    }
}
