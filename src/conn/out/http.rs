//! The HTTP/1.1 session of an outbound exchange: the request written to the origin (head,
//! then a body fixed-length or chunked, the requester's later body packets under the
//! credits zring grants), the response read back (head after any 1xx, body framed by
//! `Transfer-Encoding: chunked`, `Content-Length`, or the end of the connection; none for
//! HEAD, 204 and 304) and handed to the requester under its credits, redirects followed.
use super::{Condition, Shell, Target};
use crate::conn::{Ctx, Pool};
use crate::limits;
use crate::proto::http1::ChunkedDecoder;
use crate::proto::zhttp_client::{self as zc, Request, Response};

/// How the request body goes to the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqFraming {
    None,
    Length,
    Chunked,
}

/// How the response body is delimited.
enum Framing {
    None,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    Eof,
}

/// Hop-by-hop and framing headers zring writes itself (`Host` from the URI, framing from
/// the body) or leaves out (the connection is zring's to keep alive: HTTP/1.1's default).
const DROPPED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
    "trailer",
];

pub(super) struct HttpOut {
    method: String,
    headers: Vec<(String, Vec<u8>)>,
    /// The first packet's body (kept for a redirect).
    body0: Vec<u8>,
    /// The requester's `Content-Length`, if it gave one.
    length: Option<u64>,
    /// The requester sends more body packets (`more`).
    more: bool,
    framing_out: ReqFraming,
    /// Request-body credits granted and not used yet.
    granted: u64,
    credit_started: bool,
    /// Whole response in one packet (req mode, `stream: false`).
    whole: bool,
    follow_redirects: bool,
    max_size: Option<u64>,
    // The response.
    head_buf: Vec<u8>,
    framing: Option<Framing>,
    code: u16,
    reason: Vec<u8>,
    resp_headers: Vec<(Vec<u8>, Vec<u8>)>,
    head_sent: bool,
    /// The requester's credits for response-body bytes.
    credits: u64,
    /// Decoded response body not yet sent to the requester.
    carry: Vec<u8>,
    body_total: u64,
    body_done: bool,
    /// The origin lets the connection live after this response (HTTP/1.1 without
    /// `Connection: close`, HTTP/1.0 with `keep-alive`).
    persistent: bool,
    /// Bytes came after the response's end: the connection is not reused.
    excess: bool,
}

impl HttpOut {
    /// The session for a first packet; `None` when it cannot be a request (no method).
    pub fn new(pkt: &Request, buf: &[u8], req_mode: bool) -> Option<HttpOut> {
        let method = std::str::from_utf8(pkt.method?.get(buf)).ok()?;
        if method.is_empty()
            || !method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return None;
        }
        let mut length = None;
        let mut headers = Vec::with_capacity(pkt.headers.len());
        for (n, v) in &pkt.headers {
            let name = String::from_utf8_lossy(n.get(buf)).into_owned();
            let value = v.get(buf);
            if value.iter().any(|&b| b == b'\r' || b == b'\n')
                || name.contains([':', ' ', '\r', '\n'])
            {
                return None;
            }
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    std::str::from_utf8(value)
                        .ok()?
                        .trim()
                        .parse::<u64>()
                        .ok()?,
                );
            }
            if !DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d)) {
                headers.push((name, value.to_vec()));
            }
        }
        Some(HttpOut {
            method: method.to_string(),
            headers,
            body0: pkt.body.get(buf).to_vec(),
            length,
            more: pkt.more && !req_mode,
            framing_out: ReqFraming::None,
            granted: 0,
            credit_started: false,
            whole: req_mode || pkt.stream == Some(false),
            follow_redirects: pkt.follow_redirects,
            max_size: pkt.max_size,
            head_buf: Vec::new(),
            framing: None,
            code: 0,
            reason: Vec::new(),
            resp_headers: Vec::new(),
            head_sent: false,
            credits: u64::from(pkt.credits.unwrap_or(0)),
            carry: Vec::new(),
            body_total: 0,
            body_done: false,
            persistent: false,
            excess: false,
        })
    }

    /// The request may be sent again on a fresh connection: an idempotent method (RFC 9110
    /// 9.2.2) whose whole body came in the first packet.
    pub fn retryable(&self) -> bool {
        let idempotent = matches!(
            self.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        idempotent && !self.more
    }

    /// The exchange ends here: may its connection serve another? The response was
    /// delimited and read exactly, the origin keeps it alive, the request went whole.
    fn reusable(&self) -> bool {
        let delimited = !matches!(self.framing, Some(Framing::Eof) | None);
        delimited && self.body_done && self.persistent && !self.excess && !self.more
    }

    pub fn head_sent(&self) -> bool {
        self.head_sent
    }

    /// Before the next hop of a redirect: the response so far is dropped.
    pub fn restart(&mut self) {
        self.head_buf.clear();
        self.framing = None;
        self.resp_headers.clear();
        self.credit_started = false;
        self.persistent = false;
        self.excess = false;
        self.body_done = false;
    }

    /// Connected: the request head and the first packet's body go out.
    pub fn handle_connected(&mut self, sh: &mut Shell, pool: &mut Pool) {
        sh.write_buf(pool);
        let out = &mut sh.out;
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(sh.target.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(sh.target.host_header().as_bytes());
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        let bodyless = matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "DELETE");
        self.framing_out = match (self.length, self.more) {
            (Some(n), _) => {
                out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
                ReqFraming::Length
            }
            (None, false) if self.body0.is_empty() && bodyless => ReqFraming::None,
            (None, false) => {
                let n = self.body0.len();
                out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
                ReqFraming::Length
            }
            (None, true) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                ReqFraming::Chunked
            }
        };
        out.extend_from_slice(b"\r\n");
        let body0 = std::mem::take(&mut self.body0);
        self.write_body(sh, &body0, !self.more);
        self.body0 = body0;
    }

    /// Appends request-body bytes for the origin (`last`: the body ends here).
    fn write_body(&self, sh: &mut Shell, body: &[u8], last: bool) {
        match self.framing_out {
            ReqFraming::Chunked => {
                if !body.is_empty() {
                    sh.out
                        .extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    sh.out.extend_from_slice(body);
                    sh.out.extend_from_slice(b"\r\n");
                }
                if last {
                    sh.out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            ReqFraming::Length | ReqFraming::None => sh.out.extend_from_slice(body),
        }
    }

    /// A requester packet after the first: request body and credits.
    pub fn handle_packet(&mut self, sh: &mut Shell, cx: &mut Ctx, pkt: &Request, buf: &[u8]) {
        if let Some(c) = pkt.credits {
            self.credits += u64::from(c);
        }
        let body = pkt.body.get(buf);
        if pkt.kind.get() == zc::Kind::Data && self.more {
            if body.len() as u64 > self.granted {
                // More than zring granted (pushpin-connmgr: BufferExceeded).
                sh.fail(cx, Condition::Undefined, self.head_sent);
                return;
            }
            self.granted -= body.len() as u64;
            if !pkt.more {
                self.more = false;
            }
            if sh.is_open() {
                sh.write_buf(cx.pool);
                self.write_body(sh, body, !self.more);
                sh.out_body += body.len() as u64;
            }
        }
        self.deliver(sh, cx);
    }

    /// A send to the origin completed, `body` bytes of it request body: credit them back.
    pub fn handle_sent(&mut self, sh: &mut Shell, cx: &mut Ctx, body: u64) {
        if !self.more {
            return;
        }
        let grant = match self.credit_started {
            false => cx.settings.buffer_size as u64,
            true => body,
        };
        self.credit_started = true;
        if grant > 0 {
            self.granted += grant;
            sh.send_packet(cx, |o, r| zc::encode_credit(o, r, grant as u32));
        }
    }

    pub fn handle_recv(&mut self, sh: &mut Shell, cx: &mut Ctx, data: &[u8]) {
        if self.framing.is_none() {
            if self.head_buf.len() + data.len() > limits::OUT_RESPONSE_HEAD_BYTES_MAX {
                sh.fail(cx, Condition::Undefined, false);
                return;
            }
            self.head_buf.extend_from_slice(data);
            let head = std::mem::take(&mut self.head_buf);
            let used = match self.read_head(sh, cx, &head) {
                Some(n) => n,
                None => {
                    self.head_buf = head;
                    return;
                }
            };
            if sh.ended || !sh.is_open() {
                return;
            }
            self.take_body(sh, cx, &head[used..]);
        } else {
            self.take_body(sh, cx, data);
        }
        if !sh.ended {
            self.deliver(sh, cx);
        }
    }

    /// Parses the response head(s) at the start of `buf`, skipping 1xx interim responses.
    /// Returns the bytes used once a final head is read (`None`: incomplete).
    fn read_head(&mut self, sh: &mut Shell, cx: &mut Ctx, buf: &[u8]) -> Option<usize> {
        let mut start = 0;
        // Bounded: each round consumes one whole head of the bounded buffer.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; limits::HEADERS_MAX];
            let mut resp = httparse::Response::new(&mut headers);
            let n = match resp.parse(&buf[start..]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return None,
                Err(_) => {
                    sh.fail(cx, Condition::Undefined, false);
                    return Some(buf.len());
                }
            };
            let code = resp.code.unwrap_or(0);
            if (100..200).contains(&code) && code != 101 {
                start += n; // interim (100 Continue, 103 Early Hints): not the answer
                continue;
            }
            if code == 101 || code < 100 {
                sh.fail(cx, Condition::Undefined, false);
                return Some(buf.len());
            }
            self.code = code;
            self.persistent = persistent(&resp);
            self.reason = resp.reason.unwrap_or("").as_bytes().to_vec();
            self.resp_headers = resp
                .headers
                .iter()
                .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                .collect();
            if self.redirect(sh, cx) {
                return Some(buf.len());
            }
            let Some(framing) = self.framing_of(&resp) else {
                sh.fail(cx, Condition::Undefined, false);
                return Some(buf.len());
            };
            // zurl answers a Content-Length over `max-size` before any head.
            if let (Framing::Length(n), Some(max)) = (&framing, self.max_size) {
                if *n > max {
                    sh.fail(cx, Condition::MaxSizeExceeded, false);
                    return Some(buf.len());
                }
            }
            self.framing = Some(framing);
            if !self.whole {
                let done = matches!(self.framing, Some(Framing::None | Framing::Length(0)));
                self.send_head(sh, cx, !done);
                if done {
                    self.body_done = true;
                }
            }
            return Some(start + n);
        }
    }

    /// The response body's delimitation (RFC 9112 6.3). `None`: a bad `Content-Length`.
    fn framing_of(&self, resp: &httparse::Response) -> Option<Framing> {
        if self.method == "HEAD" || self.code == 204 || self.code == 304 {
            return Some(Framing::None);
        }
        let te: Vec<&[u8]> = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            .map(|h| h.value)
            .collect();
        if let Some(last) = te.last() {
            let last = last.rsplit(|&b| b == b',').next().unwrap_or_default();
            return Some(match last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                true => Framing::Chunked(Box::default()),
                false => Framing::Eof,
            });
        }
        let mut length = None;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()?;
                if length.is_some_and(|l| l != n) {
                    return None;
                }
                length = Some(n);
            }
        }
        Some(length.map_or(Framing::Eof, Framing::Length))
    }

    /// Follows a 3xx when asked to. True when the exchange left for the next hop (or failed).
    fn redirect(&mut self, sh: &mut Shell, cx: &mut Ctx) -> bool {
        if !self.follow_redirects || !(300..400).contains(&self.code) || self.more {
            return false;
        }
        let location = self
            .resp_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"location"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok());
        let Some(next) = location.and_then(|l| sh.target.resolve(l)) else {
            return false;
        };
        if !sh.may_follow(&next) {
            return false; // hand the 3xx to the requester
        }
        if sh.redirects >= limits::REDIRECTS_MAX {
            sh.fail(cx, Condition::TooManyRedirects, false);
            return true;
        }
        // Browser-like, as pushpin-connmgr: 303 (and 301/302 after a POST) become a GET.
        if self.code == 303 || (matches!(self.code, 301 | 302) && self.method == "POST") {
            if self.method != "HEAD" {
                self.method = "GET".into();
            }
            self.body0.clear();
            self.length = None;
            self.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        }
        self.redirect_to(sh, cx, next);
        true
    }

    fn redirect_to(&mut self, sh: &mut Shell, cx: &mut Ctx, next: Target) {
        crate::log!(crate::log::DEBUG, "client", "redirect to {}", next.uri());
        sh.redirect(cx, next);
    }

    fn send_head(&mut self, sh: &mut Shell, cx: &mut Ctx, more: bool) {
        let headers: Vec<(&[u8], &[u8])> = self
            .resp_headers
            .iter()
            .map(|(n, v)| (&n[..], &v[..]))
            .collect();
        let (code, reason) = (self.code, &self.reason[..]);
        sh.send_packet(cx, |o, r| {
            zc::encode_response(
                o,
                r,
                &Response {
                    code: Some(code),
                    reason,
                    headers: &headers,
                    body: b"",
                    more,
                },
            )
        });
        self.head_sent = true;
    }

    /// Decodes response-body bytes into `carry`.
    fn take_body(&mut self, sh: &mut Shell, cx: &mut Ctx, mut data: &[u8]) {
        let before = self.carry.len();
        match self.framing.as_mut() {
            None | Some(Framing::None) => self.excess |= !data.is_empty(),
            Some(Framing::Length(left)) => {
                let n = (*left).min(data.len() as u64) as usize;
                self.excess |= n < data.len();
                self.carry.extend_from_slice(&data[..n]);
                *left -= n as u64;
                if *left == 0 {
                    self.body_done = true;
                }
            }
            Some(Framing::Eof) => self.carry.extend_from_slice(data),
            Some(Framing::Chunked(d)) => {
                // Bounded: each round consumes input or ends.
                while !data.is_empty() && !d.is_done() {
                    match d.decode(data) {
                        Ok(dec) => {
                            if let Some(b) = dec.data {
                                self.carry.extend_from_slice(b);
                            }
                            data = &data[dec.consumed..];
                            if dec.consumed == 0 && dec.data.is_none() {
                                break;
                            }
                        }
                        Err(_) => {
                            sh.fail(cx, Condition::Undefined, self.head_sent);
                            return;
                        }
                    }
                }
                if d.is_done() {
                    self.body_done = true;
                    self.excess |= !data.is_empty();
                }
            }
        }
        self.body_total += (self.carry.len() - before) as u64;
        if self.max_size.is_some_and(|m| self.body_total > m) {
            // zurl's field and zurl's answer: always `error`, even after the head.
            self.head_sent = false;
            sh.fail(cx, Condition::MaxSizeExceeded, false);
            return;
        }
        if self.whole
            && self.carry.len()
                > cx.settings
                    .body_buffer_size
                    .max(self.max_size.unwrap_or(0) as usize)
        {
            sh.fail(cx, Condition::Undefined, false);
        }
    }

    /// The origin closed: the end of a read-to-EOF body (over TLS only a `clean` one, after
    /// the origin's `close_notify`), else a failure.
    pub fn handle_eof(&mut self, sh: &mut Shell, cx: &mut Ctx, clean: bool) {
        match self.framing {
            Some(Framing::Eof) if clean => self.body_done = true,
            Some(Framing::Eof) => {
                crate::log!(
                    crate::log::DEBUG,
                    "client",
                    "tls: body cut without close_notify"
                );
                sh.fail(cx, Condition::Undefined, self.head_sent);
                return;
            }
            _ if self.body_done => {}
            _ => {
                sh.fail(cx, Condition::Undefined, self.head_sent);
                return;
            }
        }
        self.deliver(sh, cx);
    }

    /// Hands the requester what its credits allow; ends the replies once all is out.
    fn deliver(&mut self, sh: &mut Shell, cx: &mut Ctx) {
        if sh.ended || self.framing.is_none() {
            return;
        }
        if self.whole {
            if self.body_done {
                let headers: Vec<(&[u8], &[u8])> = self
                    .resp_headers
                    .iter()
                    .map(|(n, v)| (&n[..], &v[..]))
                    .collect();
                let (code, reason, body) = (self.code, &self.reason[..], &self.carry[..]);
                sh.send_packet(cx, |o, r| {
                    let resp = Response {
                        code: Some(code),
                        reason,
                        headers: &headers,
                        body,
                        more: false,
                    };
                    zc::encode_response(o, r, &resp)
                });
                self.carry = Vec::new();
                sh.keep = self.reusable();
                sh.end(cx);
            }
            return;
        }
        let max = cx.settings.buffer_size as u64;
        // Bounded: each round sends at least one byte of the bounded carry.
        while self.credits > 0 && !self.carry.is_empty() {
            let n = self.credits.min(max).min(self.carry.len() as u64) as usize;
            let last = self.body_done && n == self.carry.len();
            let body = &self.carry[..n];
            sh.send_packet(cx, |o, r| {
                let resp = Response {
                    body,
                    more: !last,
                    ..Response::default()
                };
                zc::encode_response(o, r, &resp)
            });
            self.carry.drain(..n);
            self.credits -= n as u64;
            if last {
                self.carry = Vec::new();
                sh.keep = self.reusable();
                sh.end(cx);
                return;
            }
        }
        if self.body_done && self.carry.is_empty() {
            if self.head_sent && !matches!(self.framing, Some(Framing::None | Framing::Length(0))) {
                sh.send_packet(cx, |o, r| zc::encode_response(o, r, &Response::default()));
            }
            sh.keep = self.reusable();
            sh.end(cx);
            return;
        }
        sh.want_paused(self.carry.len() >= cx.settings.buffer_size);
        crate::log!(
            crate::log::TRACE,
            "client",
            "deliver: credits {} carry {} total {}",
            self.credits,
            self.carry.len(),
            self.body_total
        );
    }
}

/// Whether the origin keeps the connection open after this response (RFC 9112 9.3).
fn persistent(resp: &httparse::Response) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    match resp.version {
        Some(1) => !close,
        Some(0) => keep_alive && !close,
        _ => false,
    }
}
