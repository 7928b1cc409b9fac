//! A connection in Mongrel2 mode (`--m2-config`), as Mongrel2 1.12.2 runs one: read a
//! request, route it (`m2config::route`), send it to the handler (`proto::m2`), and go
//! straight back to reading the next request (Mongrel2's `Queueing: REQ_SENT -> Idle`):
//! Mongrel2 never learns where a response ends. Handler replies are written raw, whenever
//! they come; an empty one closes. A WebSocket upgrade is a `WEBSOCKET_HANDSHAKE` message;
//! later client frames (reassembled, unmasked, RFC 6455 rules enforced by `proto::ws`) are
//! `WEBSOCKET` messages. Large bodies go to an `upload.temp_store` file.
//!
//! The Mongrel2 session lives as long as its connection; the connection's `Transport`
//! (TLS, buffers, draining, timers) is the same as for ZHTTP.
use std::io::Write as _;
use std::sync::Arc;

use arrayvec::ArrayVec;

use super::m2_drain::{write_last_reply, Drain};
use super::transport::{Timer, Transport};
use super::Ctx;
use crate::bridge::{OutPacket, Route};
use crate::m2config::{dir, Target};
use crate::m2serve::Setup;
use crate::proto::http1::{self, BodyKind, Version};
use crate::proto::m2::{
    encode_request, encode_stream_chunk, notice::encode_disconnect, request::ws_flags,
    split_target, HeaderTable, Message, ReplyKind, Request, Scheme, DELIVER_OUTSTANDING_MSGS,
    DOWNLOAD_CREDITS_DEFAULT,
};

/// `DOWNLOAD_CREDITS`'s value on a connection's first request (`MAX_CREDITS`, `%d`).
const DOWNLOAD_CREDITS_TEXT: &[u8] = b"102400";
const _: () = assert!(DOWNLOAD_CREDITS_DEFAULT == 102_400);
use crate::proto::ws::{self, AcceptKey, Event, MessageKind};

/// Mongrel2's cap on a WebSocket message (`MAX_WS_LENGTH`, never enforced by Mongrel2).
pub const WS_MESSAGE_BYTES_MAX: u64 = 256 * 1024;
/// Largest file a `Dir` route serves (read whole, blocking, in the worker: see docs).
pub const DIR_FILE_BYTES_MAX: u64 = 1 << 20;

/// A Mongrel2 connection's session (boxed in `Session::M2`). Invariants: at most one of
/// `ws`, `upload`, `stream` is `Some` (what the bytes after a request head are); `proxy` is
/// the connection's backend for `Proxy` routes (its own slot, see `m2proxy`).
pub(super) struct M2Conn {
    /// The setup the connection was accepted under: it keeps it for its life, so a reload
    /// (SIGHUP) changes nothing under an open connection (handler indices included).
    setup: Arc<Setup>,
    server: u16,
    /// The id handlers see: stable for the connection's life.
    pub id: u32,
    /// The handler the connection last talked to (gets the disconnect notice).
    handler: Option<u16>,
    table: HeaderTable,
    /// Replies queued while a send is in flight (Mongrel2's deliver queue).
    pub outstanding: u8,
    /// `100 Continue` already sent for the request being read.
    continued: bool,
    ws: Option<Box<M2Ws>>,
    /// The backend of `Proxy` routes (see `m2proxy`).
    pub(super) proxy: Option<Box<super::m2proxy::Proxy>>,
    /// Backend slots given up, to `Close` at the next `flush`.
    pub(super) backend_close: ArrayVec<u32, 4>,
    upload: Option<Box<Upload>>,
    stream: Option<Box<UpStream>>,
    /// Mongrel2's registration counters (src/register.c) for the rate checks: bytes and the
    /// time (ms since the worker's epoch) of the last read and write.
    bytes_read: u64,
    bytes_written: u64,
    last_read_ms: u64,
    last_write_ms: u64,
    /// When the connection was accepted or last pinged (`ctl` keep-alive): Mongrel2's
    /// `last_ping` (ms since the worker's epoch), for `status what=net`.
    last_ping_ms: u64,
    /// Mongrel2's `CONN_TYPE_*` for `status what=net`: 0 before the first request, 1 HTTP,
    /// 3 WebSocket.
    kind: u8,
    /// `download.flow_control`: the connection's first request was seen (Mongrel2's
    /// `downloadCreditsInitialized`), and whether the request being served is that one (its
    /// messages, WebSocket frames included, carry `DOWNLOAD_CREDITS`).
    credits_initialized: bool,
    credits_header: bool,
    /// Reply bytes queued for the client and not yet written (Mongrel2's
    /// `deliverBytesPending`): credited back to the handler as they are written.
    credits_pending: u64,
    /// An HTTP request went to a handler and no reply has come since (the drain waits for
    /// that reply; see `m2_drain`).
    awaiting_reply: bool,
    drain: Drain,
}

/// An open Mongrel2 WebSocket: the handshake head every frame message repeats.
struct M2Ws {
    session: ws::Session,
    head: Vec<u8>,
    /// First byte of the message being reassembled, and its payload so far.
    first: u8,
    message: Vec<u8>,
}

/// A body going to an `upload.temp_store` file.
struct Upload {
    head: Vec<u8>,
    path: String,
    file: std::fs::File,
    left: u64,
    /// A chunked body (Mongrel2's `content_len = -1`): decoded into the file.
    chunked: Option<Box<http1::ChunkedDecoder>>,
}

/// A body going to the handler as `upload.stream` messages, under its credits
/// (src/upload.c `Upload_stream`).
struct UpStream {
    head: Vec<u8>,
    /// Body bytes still to read (`u64::MAX` for a chunked body).
    left: u64,
    /// Body bytes sent so far: each message's `UPLOAD_STREAM`.
    offset: u64,
    /// Granted by `["ctl", {"credits": N}]`; may go negative, as in Mongrel2.
    credits: i64,
    chunked: Option<Box<http1::ChunkedDecoder>>,
}

/// A body size as Mongrel2's `Request_content_length` gives it: -1 for a chunked body.
fn size(body_len: u64) -> i64 {
    i64::try_from(body_len).unwrap_or(-1)
}

fn version_text(v: Version) -> &'static [u8] {
    match v {
        Version::Http10 => b"HTTP/1.0",
        _ => b"HTTP/1.1",
    }
}

/// Mongrel2's canned error responses (src/response.c), `Server` aside.
fn canned(code: u16) -> &'static [u8] {
    match code {
        400 => b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 11\r\nServer: zring\r\n\r\nBad Request",
        403 | 404 => b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 9\r\nServer: zring\r\n\r\nNot Found",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 18\r\nServer: zring\r\n\r\nMethod Not Allowed",
        502 => b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 11\r\nServer: zring\r\n\r\nBad Gateway",
        413 => b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 16\r\nServer: zring\r\n\r\nEntity Too Large",
        417 => b"HTTP/1.1 417 Expectation Failed\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 18\r\nServer: zring\r\n\r\nExpectation Failed",
        _ => b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 21\r\nServer: zring\r\n\r\nInternal Server Error",
    }
}

impl M2Conn {
    /// The session of a Mongrel2 connection of server `server` with id `id` (the worker's,
    /// at accept).
    pub(super) fn new(
        t: &mut Transport,
        s: &Arc<Setup>,
        server: u16,
        id: u32,
        now_ms: u64,
    ) -> Box<M2Conn> {
        // A head plus an inline body is read before anything goes to the handler.
        let inline = s.limits.content_length.min(64 << 20) as u32;
        t.spill_max = t.spill_max.saturating_add(inline);
        Box::new(M2Conn {
            setup: Arc::clone(s),
            server,
            id,
            handler: None,
            table: HeaderTable::new(),
            outstanding: 0,
            continued: false,
            ws: None,
            proxy: None,
            backend_close: ArrayVec::new(),
            upload: None,
            stream: None,
            bytes_read: 0,
            bytes_written: 0,
            last_read_ms: 0,
            last_write_ms: 0,
            last_ping_ms: now_ms,
            kind: 0,
            credits_initialized: false,
            credits_header: false,
            credits_pending: 0,
            awaiting_reply: false,
            drain: Drain::Off,
        })
    }

    /// The server (index in the setup) this connection belongs to.
    pub(super) fn server(&self) -> u16 {
        self.server
    }

    /// This connection's `status what=net` row (`Register_info`): the id only once it has
    /// talked to a handler (Mongrel2 assigns ids then), times as seconds since (0: never).
    pub(super) fn net_row(&self, now_ms: u64, fd: i64) -> crate::proto::m2::control::NetRow {
        let since = |at: u64| match at {
            0 => 0,
            at => (now_ms.saturating_sub(at) / 1000) as i64,
        };
        crate::proto::m2::control::NetRow {
            id: match self.handler {
                Some(_) => i64::from(self.id),
                None => -1,
            },
            fd,
            kind: self.kind,
            last_ping_s: since(self.last_ping_ms),
            last_read_s: since(self.last_read_ms),
            last_write_s: since(self.last_write_ms),
            bytes_read: self.bytes_read as i64,
            bytes_written: self.bytes_written as i64,
        }
    }

    /// Bytes from the client (plaintext).
    pub(super) fn recv(&mut self, t: &mut Transport, cx: &mut Ctx, data: &mut [u8]) {
        let now_ms = cx
            .now
            .saturating_duration_since(cx.settings.epoch)
            .as_millis() as u64;
        let m = &mut *self;
        m.bytes_read += data.len() as u64;
        m.last_read_ms = now_ms;
        if t.spill.is_empty() {
            let n = self.process(t, cx, data);
            if n < data.len() && t.is_open() {
                t.spill = cx.pool.take();
                t.spill.extend_from_slice(&data[n..]);
            }
        } else {
            t.spill.extend_from_slice(data);
            let mut input = std::mem::take(&mut t.spill);
            let n = self.process(t, cx, &mut input);
            input.drain(..n);
            if input.is_empty() || !t.is_open() {
                cx.pool.give(input);
            } else {
                t.spill = input;
            }
        }
    }

    /// The client went away: tell the handler (Mongrel2 does, unless it closed the
    /// connection itself, which makes it drain here).
    pub(super) fn eof(&mut self, t: &mut Transport, cx: &mut Ctx) {
        self.abort_upload();
        if t.is_open() {
            self.notice(cx);
        }
    }

    /// The idle timer (`limits.min_ping`) fired. As Mongrel2's `Register_cleanout`: the
    /// connection dies when more than `limits.kill_limit` of (idle past `min_ping`, read rate
    /// under `min_read_rate`, write rate under `min_write_rate`) hold, rates being bytes over
    /// seconds since the last read/write + 1; otherwise it is checked again a tick later.
    pub(super) fn timeout(&mut self, t: &mut Transport, cx: &mut Ctx) {
        let now_ms = cx
            .now
            .saturating_duration_since(cx.settings.epoch)
            .as_millis() as u64;
        if !t.due(cx.settings, cx.now, Timer::Client) || !t.is_open() {
            return;
        }
        let l = &self.setup.limits;
        let m = &*self;
        let rate = |bytes: u64, last: u64| bytes / (now_ms.saturating_sub(last) / 1000 + 1);
        let mut kill = 1; // idle past min_ping
        if l.min_read_rate != 0 && rate(m.bytes_read, m.last_read_ms) < l.min_read_rate {
            kill += 1;
        }
        if l.min_write_rate != 0 && rate(m.bytes_written, m.last_write_ms) < l.min_write_rate {
            kill += 1;
        }
        if kill <= l.kill_limit {
            let at = cx.now + std::time::Duration::from_secs(l.tick_s);
            t.set_timer(cx.settings, Timer::Client, at);
            return;
        }
        self.abort_upload();
        self.notice(cx);
    }

    /// An upload that will not complete: its file goes, as Mongrel2 unlinks it.
    fn abort_upload(&mut self) {
        if let Some(up) = self.upload.take() {
            let _ = std::fs::remove_file(&up.path);
        }
    }

    /// A send completed: the deliver queue is empty again; count the bytes.
    pub(super) fn sent(&mut self, cx: &mut Ctx, n: usize) {
        let now_ms = cx
            .now
            .saturating_duration_since(cx.settings.epoch)
            .as_millis() as u64;
        let m = &mut *self;
        m.outstanding = 0;
        m.bytes_written += n as u64;
        m.last_write_ms = now_ms;
        // `Connection_deliver_raw_internal`: what was written of the handler's replies goes
        // back as credits (one notice per completed send: replies written together are
        // credited together).
        let credited = m.credits_pending.min(n as u64);
        if credited == 0 || !m.setup.limits.download_flow_control {
            return;
        }
        m.credits_pending -= credited;
        let Some(h) = m.handler else { return };
        let handler = &m.setup.handlers[h as usize];
        let mut data = Vec::with_capacity(128);
        crate::proto::m2::notice::encode_credits(
            &mut data,
            handler.send_ident.as_bytes(),
            m.id,
            credited.min(u64::from(u32::MAX)) as u32,
            handler.protocol,
        );
        cx.packet(OutPacket {
            route: Route::M2(h),
            data,
            expires: None,
        });
    }

    fn notice(&self, cx: &mut Ctx) {
        let m = self;
        let Some(h) = m.handler else { return };
        let handler = &self.setup.handlers[h as usize];
        let mut data = Vec::with_capacity(96);
        encode_disconnect(
            &mut data,
            handler.send_ident.as_bytes(),
            m.id as i32,
            handler.protocol,
        );
        cx.packet(OutPacket {
            route: Route::M2(h),
            data,
            expires: None,
        });
    }

    /// A handler reply naming this connection: what it asks, and its raw body.
    pub(super) fn handle_reply(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        kind: ReplyKind,
        body: &[u8],
    ) {
        if !t.is_open() {
            return; // closing: Mongrel2 drops what comes for a dying connection
        }
        match kind {
            ReplyKind::Data if self.setup.limits.download_flow_control => {
                // `Connection_deliver_enqueue` with flow control: a byte budget, not a count.
                let m = &mut *self;
                if m.credits_pending + body.len() as u64 > u64::from(DOWNLOAD_CREDITS_DEFAULT) {
                    crate::log!(
                        crate::log::DEBUG,
                        "m2",
                        "connection {}: too many outstanding bytes, dropped",
                        m.id
                    );
                    return t.close(cx.pool);
                }
                m.credits_pending += body.len() as u64;
                self.write_reply(t, cx, body);
            }
            ReplyKind::Data => {
                if t.sending.is_some() {
                    let m = &mut *self;
                    m.outstanding += 1;
                    if usize::from(m.outstanding) > DELIVER_OUTSTANDING_MSGS {
                        crate::log!(
                            crate::log::DEBUG,
                            "m2",
                            "connection {}: too many undelivered replies, dropped",
                            m.id
                        );
                        return t.close(cx.pool);
                    }
                }
                self.write_reply(t, cx, body);
            }
            ReplyKind::Close => t.drain(cx),
            ReplyKind::Control(c) => {
                if c.cancel {
                    return t.close(cx.pool);
                }
                if c.keep_alive {
                    t.touch_client(cx.now, cx.settings, true);
                    self.last_ping_ms = cx
                        .now
                        .saturating_duration_since(cx.settings.epoch)
                        .as_millis() as u64;
                }
                if let (Some(n), Some(st)) = (c.credits, self.stream.as_mut()) {
                    st.credits = st.credits.saturating_add(n);
                    self.pump(t, cx);
                }
            }
            ReplyKind::Kill => t.close(cx.pool),
            ReplyKind::Ignore => {}
        }
    }

    /// zring drains (`Conn::handle_drain`): a plain HTTP connection serves the request at
    /// its handler, or one arriving within the grace, then closes (`m2_drain`). Returns
    /// false for what is closed at once instead (WebSocket, upload, proxied).
    pub(super) fn handle_drain(&mut self, t: &mut Transport, cx: &mut Ctx) -> bool {
        let m = &mut *self;
        if m.ws.is_some() || m.upload.is_some() || m.stream.is_some() || m.proxy.is_some() {
            return false;
        }
        if m.drain != Drain::Off {
            return true; // already draining
        }
        m.drain = if m.awaiting_reply {
            Drain::Reply
        } else {
            let grace = std::time::Duration::from_millis(crate::limits::DRAIN_IDLE_GRACE_MS);
            t.cap_timer(cx.settings, Timer::Request, cx.now + grace);
            Drain::Grace
        };
        true
    }

    /// The drain's grace ended with no request: the connection closes (no lingering close:
    /// nothing is owed).
    pub(super) fn grace_over(&mut self, t: &mut Transport, cx: &mut Ctx) {
        if self.drain == Drain::Grace && t.is_open() {
            t.eof = true;
            t.drain(cx);
        }
    }

    /// An HTTP request went to its handler.
    fn request_sent(&mut self, t: &mut Transport) {
        self.awaiting_reply = true;
        if self.drain == Drain::Grace {
            self.drain = Drain::Reply;
            t.clear_timer(Timer::Request);
        }
    }

    /// Queues a handler's data reply; during a drain, the last reply's head says
    /// `Connection: close` and its end closes the connection (`m2_drain`).
    fn write_reply(&mut self, t: &mut Transport, cx: &mut Ctx, body: &[u8]) {
        self.awaiting_reply = false;
        let mut next = self.drain;
        t.write_out(cx.pool, |out| match next {
            Drain::Reply => next = write_last_reply(body, out),
            Drain::Body(left) => {
                next = Drain::Body(left.saturating_sub(body.len() as u64));
                out.extend_from_slice(body);
            }
            _ => out.extend_from_slice(body),
        });
        self.drain = next;
        if next == Drain::Body(0) {
            t.drain(cx); // flushed, then a write shutdown
        }
    }

    /// Consumes what it can of `input`; returns the bytes used.
    fn process(&mut self, t: &mut Transport, cx: &mut Ctx, input: &mut [u8]) -> usize {
        let mut used = 0;
        while used < input.len() && t.is_open() {
            if let Some(n) = self.proxy_feed(&input[used..]) {
                if n == 0 {
                    return used;
                }
                used += n;
                continue;
            }
            let m = &*self;
            if m.upload.is_some() {
                used += self.upload_feed(t, cx, &input[used..]);
                continue;
            }
            if m.stream.is_some() {
                match self.stream_feed(t, cx, &input[used..]) {
                    0 => return used,
                    n => used += n,
                }
                continue;
            }
            if m.ws.is_some() {
                return used + self.ws_feed(t, cx, &mut input[used..]);
            }
            if !matches!(m.drain, Drain::Off | Drain::Grace) {
                return used; // draining: the last request is at its handler
            }
            match self.request(t, cx, &input[used..]) {
                Some(n) => used += n,
                None => return used,
            }
        }
        if !t.is_open() {
            return input.len();
        }
        used
    }

    fn fail(&mut self, t: &mut Transport, cx: &mut Ctx, code: u16) {
        if let Some(kind) = crate::metrics::ErrorKind::from_status(code) {
            cx.stats.protocol_error(kind);
        }
        cx.stats.response(code);
        t.write_out(cx.pool, |out| out.extend_from_slice(canned(code)));
        t.drain(cx);
    }

    /// One request from `input`: `Some(bytes used)`, or `None` until more bytes come.
    /// Mongrel2's access log entry for a request (src/log.c `Log_request`), when the
    /// server logs: the worker appends it to the server's `access_log`.
    #[allow(clippy::too_many_arguments)] // the entry's fields
    fn access(
        &self,
        t: &Transport,
        cx: &mut Ctx,
        host: usize,
        req: &http1::Request,
        path: &[u8],
        status: u16,
        size: i64,
    ) {
        let server = &self.setup.servers[self.server as usize];
        if server.access_log.is_none() {
            return;
        }
        let mut remote: ArrayVec<u8, { crate::limits::PEER_TEXT_BYTES_MAX }> = ArrayVec::new();
        if let Some(p) = t.peer {
            let _ = write!(super::ArrayWriter(&mut remote), "{}", p.ip());
        }
        let elapsed_ms = cx
            .now
            .saturating_duration_since(cx.settings.epoch)
            .as_millis() as u64;
        let mut line = cx.pool.take();
        crate::proto::m2::access::encode(
            &mut line,
            &crate::proto::m2::access::Entry {
                host: server.server.hosts[host].name.as_bytes(),
                remote_addr: &remote,
                remote_port: t.peer.map_or(0, |p| p.port()),
                time_s: (cx.settings.epoch_unix_ms + elapsed_ms) / 1000,
                method: req.method.as_bytes(),
                path,
                version: version_text(req.version),
                status,
                size,
            },
        );
        cx.out.push(super::Output::AccessLog {
            server: self.server,
            line,
        });
    }

    fn request(&mut self, t: &mut Transport, cx: &mut Ctx, input: &[u8]) -> Option<usize> {
        let setup = Arc::clone(&self.setup);
        let s = &*setup;
        let mut headers = [httparse::EMPTY_HEADER; crate::limits::HEADERS_MAX];
        let req = match http1::parse_request_limited(input, &mut headers, cx.settings.buffer_size) {
            Ok(http1::Status::Partial) => return None,
            Ok(http1::Status::Complete(r)) => {
                cx.stats.requests.inc();
                if self.kind == 0 {
                    self.kind = 1; // CONN_TYPE_HTTP
                }
                // src/connection.c: set once per connection, on its first request.
                self.credits_header = false;
                if self.setup.limits.download_flow_control && !self.credits_initialized {
                    self.credits_initialized = true;
                    self.credits_header = true;
                }
                r
            }
            Err(e) => {
                // Includes Flash's `@path {…}\0` / `<tag>\0` socket messages: refused.
                let (code, _) = e.status();
                self.fail(t, cx, if code == 413 { 413 } else { 400 });
                return Some(input.len());
            }
        };
        let m = &mut *self;
        let server = &s.servers[m.server as usize];
        let target = split_target(req.target.as_bytes());
        let host = req.host.map(crate::proto::m2::host_name);
        let Some(found) = server.router.resolve(host, target.path) else {
            self.fail(t, cx, 404);
            return Some(input.len());
        };
        let target_kind = server.router.target(&server.server.hosts, &found);
        if !matches!(target_kind, Target::Proxy(_)) && m.proxy.is_some() {
            // Another kind of route: the backend connection goes (Mongrel2's
            // `proxy_exit_routing`).
            self.proxy_drop();
        }
        let hi = match target_kind {
            Target::Handler(h) => *h as u16,
            Target::Dir(d) => {
                let d = d.clone();
                let prefix = found.prefix.to_owned();
                let host = found.host;
                let used = self.dir(t, cx, &server.root, &d, &prefix, &req, target.path, host);
                return Some(used.min(input.len()));
            }
            Target::Proxy(p) => {
                let Some(addr) = s.proxy_addr(p) else {
                    self.fail(t, cx, 502); // resolved at load; unreachable
                    return Some(input.len());
                };
                return Some(self.proxy_start(t, cx, addr, &req, input));
            }
        };
        let head_len = req.head_len;
        let limit = s.limits.content_length;
        let (body_len, upload) = match req.body {
            BodyKind::None => (0, false),
            BodyKind::Length(n) if n <= limit => (n, false),
            BodyKind::Length(n) => (n, true),
            // Mongrel2 sends chunked bodies to the upload path whatever their size.
            BodyKind::Chunked => (u64::MAX, true),
        };
        if upload && s.limits.stream {
            let m = &mut *self;
            m.continued = false;
            m.handler = Some(hi);
            self.access(t, cx, found.host, &req, target.path, 200, size(body_len));
            return Some(self.stream_start(t, cx, &req, found.pattern, hi, body_len, input));
        }
        if upload && s.limits.temp_store.is_none() {
            self.fail(t, cx, 413);
            return Some(input.len());
        }
        let need = head_len as u64 + if upload { 0 } else { body_len };
        if (input.len() as u64) < need {
            let m = &mut *self;
            if req.expect_continue && !m.continued {
                m.continued = true;
                t.write_out(cx.pool, |out| {
                    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n")
                });
            }
            return None;
        }
        let m = &mut *self;
        if req.expect_continue && upload && !m.continued {
            t.write_out(cx.pool, |out| {
                out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n")
            });
        }
        let m = &mut *self;
        m.continued = false;
        m.handler = Some(hi);
        if req.upgrade_websocket {
            self.kind = 3; // CONN_TYPE_SOCKET
            return Some(self.ws_handshake(t, cx, &req, found.pattern, hi, input));
        }
        if upload {
            self.access(t, cx, found.host, &req, target.path, 200, size(body_len));
            return Some(self.upload_start(t, cx, &req, found.pattern, hi, body_len, input));
        }
        let body = &input[head_len..head_len + body_len as usize];
        self.send(
            t,
            cx,
            &req,
            found.pattern,
            hi,
            req.method.as_bytes(),
            &[],
            body,
        );
        self.request_sent(t);
        self.access(t, cx, found.host, &req, target.path, 200, size(body_len));
        Some(head_len + body_len as usize)
    }

    /// A WebSocket upgrade: the handshake message goes to the handler (the accept value as
    /// its body); the head is kept, since every frame message repeats it. Returns the bytes
    /// used.
    fn ws_handshake(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        req: &http1::Request,
        pattern: &str,
        hi: u16,
        input: &[u8],
    ) -> usize {
        let head_len = req.head_len;
        let Some(key) = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        else {
            self.fail(t, cx, 400);
            return input.len();
        };
        let accept = AcceptKey::from_key(key.value);
        self.send(
            t,
            cx,
            req,
            pattern,
            hi,
            b"WEBSOCKET_HANDSHAKE",
            &[],
            accept.as_bytes(),
        );
        let session = ws::Session::new(ws::SessionConfig {
            message_bytes_max: WS_MESSAGE_BYTES_MAX,
            compression: false,
        });
        self.ws = Some(Box::new(M2Ws {
            session,
            head: input[..head_len].to_vec(),
            first: 0,
            message: Vec::new(),
        }));
        head_len
    }

    /// Encodes and queues one request message for handler `hi`.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        req: &http1::Request,
        pattern: &str,
        hi: u16,
        method: &[u8],
        extra: &[(&[u8], &[u8])],
        body: &[u8],
    ) {
        let setup = Arc::clone(&self.setup);
        let s = &*setup;
        let handler = &s.handlers[hi as usize];
        let mut remote: ArrayVec<u8, { crate::limits::PEER_TEXT_BYTES_MAX }> = ArrayVec::new();
        if let Some(p) = t.peer {
            let _ = write!(super::ArrayWriter(&mut remote), "{}", p.ip());
        }
        let mut all: ArrayVec<(&[u8], &[u8]), 5> = ArrayVec::new();
        if !s.limits.no_clobber_xff {
            all.push((b"x-forwarded-for", &remote));
        }
        if self.credits_header {
            all.push((b"DOWNLOAD_CREDITS", DOWNLOAD_CREDITS_TEXT));
        }
        for e in extra.iter().take(3) {
            all.push(*e);
        }
        let request = Request {
            method,
            version: version_text(req.version),
            target: split_target(req.target.as_bytes()),
            headers: req.headers,
            pattern: Some(pattern.as_bytes()),
            scheme: if t.tls.is_some() {
                Scheme::Https
            } else {
                Scheme::Http
            },
            remote_addr: &remote,
            header_count_max: s.limits.header_count,
        };
        let m = &mut *self;
        let message = Message {
            sender: handler.send_ident.as_bytes(),
            conn_id: m.id,
            protocol: handler.protocol,
            request: &request,
            extra: &all,
            body,
        };
        let mut data = Vec::with_capacity(512 + body.len());
        if encode_request(&message, &mut m.table, &mut data).is_err() {
            return self.fail(t, cx, 400);
        }
        cx.packet(OutPacket {
            route: Route::M2(hi),
            data,
            expires: None,
        });
    }

    /// Re-parses a kept head (WebSocket handshake, upload) and sends a message built on it.
    fn resend(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        head: &[u8],
        method: Option<&[u8]>,
        extra: &[(&[u8], &[u8])],
        body: &[u8],
    ) {
        let setup = Arc::clone(&self.setup);
        let s = &*setup;
        let mut headers = [httparse::EMPTY_HEADER; crate::limits::HEADERS_MAX];
        let Ok(http1::Status::Complete(req)) =
            http1::parse_request_limited(head, &mut headers, usize::MAX)
        else {
            return;
        };
        let m = &*self;
        let server = &s.servers[m.server as usize];
        let target = split_target(req.target.as_bytes());
        let host = req.host.map(crate::proto::m2::host_name);
        let Some(found) = server.router.resolve(host, target.path) else {
            return;
        };
        let Target::Handler(hi) = server.router.target(&server.server.hosts, &found) else {
            return;
        };
        let method = method.unwrap_or(req.method.as_bytes());
        self.send(t, cx, &req, found.pattern, *hi as u16, method, extra, body);
    }

    // ---- WebSocket ----

    fn ws_feed(&mut self, t: &mut Transport, cx: &mut Ctx, input: &mut [u8]) -> usize {
        let mut wsx = self.ws.take().expect("ws");
        let mut used = 0;
        let mut failed = None;
        // Bounded: the session yields each event once; `None` means the input is used up.
        loop {
            let step = match wsx.session.decode(&mut input[used..]) {
                Ok(s) => s,
                Err(e) => {
                    failed = Some(e.close_code());
                    break;
                }
            };
            used += step.consumed;
            let Some(event) = step.event else { break };
            let mut send: Option<(u8, Vec<u8>)> = None;
            match event {
                Event::MessageStart { kind, .. } => {
                    wsx.first = match kind {
                        MessageKind::Text => 0x81,
                        MessageKind::Binary => 0x82,
                    };
                    wsx.message.clear();
                }
                Event::Data(d) => wsx.message.extend_from_slice(d),
                Event::MessageEnd => send = Some((wsx.first, std::mem::take(&mut wsx.message))),
                Event::Ping(p) => send = Some((0x89, p.to_vec())),
                Event::Pong(p) => send = Some((0x8A, p.to_vec())),
                Event::Close { code, reason } => {
                    let mut body = Vec::new();
                    if let Some(c) = code {
                        body.extend_from_slice(&c.to_be_bytes());
                        body.extend_from_slice(reason.as_bytes());
                    }
                    send = Some((0x88, body));
                }
            }
            if let Some((first, body)) = send {
                let (flags, n) = ws_flags(first);
                let head = std::mem::take(&mut wsx.head);
                self.resend(
                    t,
                    cx,
                    &head,
                    Some(b"WEBSOCKET"),
                    &[(b"FLAGS", &flags[..n])],
                    &body,
                );
                wsx.head = head;
            }
        }
        self.ws = Some(wsx);
        if let Some(code) = failed {
            // zring enforces RFC 6455 where Mongrel2 does not: close with the reason.
            t.write_out(cx.pool, |out| ws::encode_close(out, code, ""));
            t.drain(cx);
            return input.len();
        }
        used
    }

    // ---- uploads (upload.temp_store) ----

    #[allow(clippy::too_many_arguments)] // the route's parts, and the connection's
    fn upload_start(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        req: &http1::Request,
        pattern: &str,
        hi: u16,
        len: u64,
        input: &[u8],
    ) -> usize {
        let setup = Arc::clone(&self.setup);
        let s = &*setup;
        let template = s
            .limits
            .temp_store
            .as_deref()
            .unwrap_or("/tmp/upload.XXXXXX");
        let (path, file) = match crate::m2serve::mkstemp(template, s.limits.temp_store_mode) {
            Ok(x) => x,
            Err(e) => {
                crate::log!(crate::log::WARN, "m2", "upload.temp_store {template}: {e}");
                self.fail(t, cx, 500);
                return input.len();
            }
        };
        self.send(
            t,
            cx,
            req,
            pattern,
            hi,
            req.method.as_bytes(),
            &[(b"x-mongrel2-upload-start", path.as_bytes())],
            b"",
        );
        let head_len = req.head_len;
        self.upload = Some(Box::new(Upload {
            head: input[..head_len].to_vec(),
            path,
            file,
            left: len,
            chunked: (len == u64::MAX).then(Box::default),
        }));
        head_len
    }

    /// Writes body bytes to the upload file (blocking, at most one read's worth).
    fn upload_feed(&mut self, t: &mut Transport, cx: &mut Ctx, input: &[u8]) -> usize {
        let m = &mut *self;
        let up = m.upload.as_mut().expect("upload");
        let (n, result) = match up.chunked.as_mut() {
            None => {
                let n = (input.len() as u64).min(up.left) as usize;
                (n, up.file.write_all(&input[..n]).map(|_| n as u64))
            }
            Some(dec) => {
                // Bounded: each step consumes input or ends the loop.
                let mut used = 0;
                let mut result = Ok(0);
                while used < input.len() {
                    match dec.decode(&input[used..]) {
                        Err(_) => {
                            result = Err(std::io::ErrorKind::InvalidData.into());
                            break;
                        }
                        Ok(d) => {
                            used += d.consumed;
                            if let Some(data) = d.data {
                                if let Err(e) = up.file.write_all(data) {
                                    result = Err(e);
                                    break;
                                }
                            }
                            if d.done {
                                result = Ok(up.left);
                                break;
                            }
                            if d.consumed == 0 {
                                break;
                            }
                        }
                    }
                }
                (used, result)
            }
        };
        let result = result.map(|done| {
            up.left -= done;
        });
        if let Err(e) = result {
            crate::log!(crate::log::WARN, "m2", "upload {}: {e}", up.path);
            self.abort_upload();
            self.fail(t, cx, 500);
            return input.len();
        }
        if up.left == 0 {
            let up = m.upload.take().expect("upload");
            drop(up.file);
            self.resend(
                t,
                cx,
                &up.head,
                None,
                &[
                    (b"x-mongrel2-upload-start", up.path.as_bytes()),
                    (b"x-mongrel2-upload-done", up.path.as_bytes()),
                ],
                b"",
            );
        }
        n
    }

    // ---- uploads (upload.stream) ----

    /// Runs what waits in `spill` (body bytes that were waiting for credits).
    pub(super) fn pump(&mut self, t: &mut Transport, cx: &mut Ctx) {
        if t.spill.is_empty() || !t.is_open() {
            return;
        }
        let mut input = std::mem::take(&mut t.spill);
        let n = self.process(t, cx, &mut input);
        input.drain(..n);
        if input.is_empty() || !t.is_open() {
            cx.pool.give(input);
        } else {
            t.spill = input;
        }
    }

    /// The first `upload.stream` message: all headers, `UPLOAD_STREAM: 0`, and the body bytes
    /// already here (Mongrel2 sends "whatever's there"; none for a chunked body).
    #[allow(clippy::too_many_arguments)] // the route's parts, and the connection's
    fn stream_start(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        req: &http1::Request,
        pattern: &str,
        hi: u16,
        len: u64,
        input: &[u8],
    ) -> usize {
        let head_len = req.head_len;
        let chunked = len == u64::MAX;
        let avail = if chunked {
            0
        } else {
            // Mongrel2's read buffer is `limits.content_length` bytes: no message is larger.
            ((input.len() - head_len) as u64)
                .min(len)
                .min(self.setup.limits.content_length.max(1)) as usize
        };
        let done = !chunked && avail as u64 == len;
        let mut extra: ArrayVec<(&[u8], &[u8]), 2> = ArrayVec::new();
        extra.push((b"UPLOAD_STREAM", b"0"));
        if done {
            extra.push((b"UPLOAD_STREAM_DONE", b"1"));
        }
        let body = &input[head_len..head_len + avail];
        self.send(t, cx, req, pattern, hi, req.method.as_bytes(), &extra, body);
        if !done {
            self.stream = Some(Box::new(UpStream {
                head: input[..head_len].to_vec(),
                left: if chunked {
                    u64::MAX
                } else {
                    len - avail as u64
                },
                offset: avail as u64,
                credits: 0,
                chunked: chunked.then(Box::default),
            }));
        }
        head_len + avail
    }

    /// Later `upload.stream` messages, as credits allow; returns the bytes used (0: wait).
    fn stream_feed(&mut self, t: &mut Transport, cx: &mut Ctx, input: &[u8]) -> usize {
        let mut st = self.stream.take().expect("stream");
        if st.credits <= 0 {
            self.stream = Some(st);
            return 0;
        }
        let (used, body, done): (usize, &[u8], bool) = match st.chunked.as_mut() {
            None => {
                // Mongrel2 reads exactly min(credits, left) bytes; wait for them unless the
                // read buffer is full.
                let want = (st.credits as u64)
                    .min(st.left)
                    .min(self.setup.limits.content_length.max(1));
                let full = input.len() >= t.spill_max as usize / 2;
                if (input.len() as u64) < want && !full {
                    self.stream = Some(st);
                    return 0;
                }
                let n = want.min(input.len() as u64) as usize;
                st.left -= n as u64;
                (n, &input[..n], st.left == 0)
            }
            Some(dec) => match dec.decode(input) {
                Err(_) => {
                    self.fail(t, cx, 400);
                    return input.len();
                }
                Ok(d) => (d.consumed, d.data.unwrap_or(b""), d.done),
            },
        };
        if body.is_empty() && !done {
            self.stream = Some(st);
            return used;
        }
        let mut offset: ArrayVec<u8, 24> = ArrayVec::new();
        let _ = write!(super::ArrayWriter(&mut offset), "{}", st.offset);
        let mut extra: ArrayVec<(&[u8], &[u8]), 2> = ArrayVec::new();
        extra.push((b"UPLOAD_STREAM", &offset));
        if done {
            extra.push((b"UPLOAD_STREAM_DONE", b"1"));
        }
        self.send_chunk(cx, &st.head, &extra, body);
        st.credits -= body.len() as i64;
        st.offset += body.len() as u64;
        if !done {
            self.stream = Some(st);
        }
        used
    }

    /// An `upload.stream` message after the first: only the stream keys.
    fn send_chunk(&mut self, cx: &mut Ctx, head: &[u8], extra: &[(&[u8], &[u8])], body: &[u8]) {
        let setup = Arc::clone(&self.setup);
        let s = &*setup;
        let Some(hi) = self.handler else {
            return;
        };
        let handler = &s.handlers[hi as usize];
        let mut headers = [httparse::EMPTY_HEADER; crate::limits::HEADERS_MAX];
        let Ok(http1::Status::Complete(req)) =
            http1::parse_request_limited(head, &mut headers, usize::MAX)
        else {
            return;
        };
        let request = Request {
            method: req.method.as_bytes(),
            version: version_text(req.version),
            target: split_target(req.target.as_bytes()),
            headers: &[],
            pattern: None,
            scheme: Scheme::Http,
            remote_addr: b"",
            header_count_max: s.limits.header_count,
        };
        let m = &*self;
        let message = Message {
            sender: handler.send_ident.as_bytes(),
            conn_id: m.id,
            protocol: handler.protocol,
            request: &request,
            extra,
            body,
        };
        let mut data = Vec::with_capacity(128 + body.len());
        if encode_stream_chunk(&message, &mut data).is_ok() {
            cx.packet(OutPacket {
                route: Route::M2(hi),
                data,
                expires: None,
            });
        }
    }

    // ---- Dir ----

    /// Serves a static file; returns the bytes of `input` used (the head).
    #[allow(clippy::too_many_arguments)] // the route's parts, and the connection's
    fn dir(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        root: &std::path::Path,
        d: &crate::m2config::Dir,
        prefix: &str,
        req: &http1::Request,
        path: &[u8],
        host: usize,
    ) -> usize {
        let mut rel = Vec::new();
        if let Err(e) = dir::resolve(d, req.method.as_bytes(), prefix, path, &mut rel) {
            self.fail(t, cx, e.status());
            return usize::MAX;
        }
        use std::os::unix::ffi::OsStrExt;
        let base = root.join(d.base.trim_start_matches('/'));
        let file = base.join(std::ffi::OsStr::from_bytes(&rel));
        let (Ok(real_base), Ok(real)) = (base.canonicalize(), file.canonicalize()) else {
            self.access(t, cx, host, req, path, 404, 0);
            self.fail(t, cx, 404);
            return usize::MAX;
        };
        if !dir::is_within(&real_base, &real) {
            self.access(t, cx, host, req, path, 404, 0);
            self.fail(t, cx, 404);
            return usize::MAX;
        }
        let meta = match std::fs::metadata(&real) {
            Ok(m) if m.is_file() && m.len() <= DIR_FILE_BYTES_MAX => m,
            _ => {
                self.access(t, cx, host, req, path, 404, 0);
                self.fail(t, cx, 404);
                return usize::MAX;
            }
        };
        let data = if req.method == "HEAD" {
            Vec::new()
        } else {
            match std::fs::read(&real) {
                Ok(d) => d,
                Err(_) => {
                    self.fail(t, cx, 404);
                    return usize::MAX;
                }
            }
        };
        let ctype = self.setup.mime.content_type(&rel, &d.default_ctype);
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        // As `Dir_serve_file`: the file's size for GET, 0 for HEAD.
        self.access(t, cx, host, req, path, 200, data.len() as i64);
        let keep = req.keep_alive;
        t.write_out(cx.pool, |out| {
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nETag: {:x}-{:x}\r\nServer: zring\r\n{}\r\n",
                meta.len(),
                mtime,
                meta.len(),
                if keep { "" } else { "Connection: close\r\n" },
            );
            out.extend_from_slice(&data);
        });
        if !keep {
            t.drain(cx);
        }
        req.head_len
    }
}
