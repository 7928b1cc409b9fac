//! Request heads: httparse does the syntax; this module adds limits, framing and
//! connection semantics (RFC 9112 §3, §6, §9.3) and turns httparse's errors into [`Error`]s.

use super::syntax::{is_host, list_contains, list_elements, parse_content_length};
use super::{Error, ResponseContext, Status, Version};
use super::{HEADERS_MAX, HEAD_BYTES_MAX_DEFAULT, URI_BYTES_MAX};

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No `Content-Length` and no `Transfer-Encoding`: no body (RFC 9112 §6.3 item 7).
    None,
    /// `Content-Length: n`, possibly 0. The next `n` bytes after the head are the body.
    Length(u64),
    /// `Transfer-Encoding: chunked`: decode the bytes after the head with a
    /// [`super::ChunkedDecoder`].
    Chunked,
}

impl BodyKind {
    /// Whether body bytes follow the head.
    pub fn has_body(self) -> bool {
        !matches!(self, BodyKind::None | BodyKind::Length(0))
    }
}

/// A parsed request head. Borrows the input buffer (`'b`) and the caller's header array
/// (`'h`); nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct Request<'h, 'b> {
    /// The method token, e.g. `GET`; case-sensitive (RFC 9110 §9.1).
    pub method: &'b str,
    /// The request-target exactly as sent (origin-form, absolute-form, authority-form or
    /// `*`). At most [`URI_BYTES_MAX`] bytes.
    pub target: &'b str,
    /// The protocol version.
    pub version: Version,
    /// All header fields in order, as httparse found them (values without surrounding
    /// whitespace). At most [`HEADERS_MAX`].
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, from the first byte of `buf` through the final CRLFCRLF (leading
    /// empty lines included). The body, or the next request, starts here.
    pub head_len: usize,
    /// How the body is framed.
    pub body: BodyKind,
    /// Whether the client wants the connection kept open after the response: on by default
    /// in 1.1 unless `Connection: close`; in 1.0 only with `Connection: keep-alive` and no
    /// `close` (RFC 9112 §9.3). Connection options are case-insensitive tokens in a list.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request that has a body: the client may wait
    /// for [`super::encode_continue`] before sending it (RFC 9110 §10.1.1). Always false for
    /// HTTP/1.0, whose clients do not know 100 (RFC 9110 §15.2).
    pub expect_continue: bool,
    /// The `Upgrade` field lists the `websocket` protocol (case-insensitive, RFC 6455
    /// §4.2.1). The WebSocket layer checks the rest of the handshake.
    pub upgrade_websocket: bool,
    /// The `Host` field value, if present. Validated as `host[:port]` bytes; may be empty
    /// (RFC 9112 §3.2 allows an empty Host when the target has no authority).
    pub host: Option<&'b [u8]>,
}

impl Request<'_, '_> {
    /// What [`super::choose_framing`] needs to know about this request. When the response
    /// goes out before the body has been read completely, set `keep_alive` to false: the
    /// rest of the body would be read as the next request.
    pub fn response_context(&self) -> ResponseContext {
        ResponseContext {
            version: self.version,
            head_request: self.method == "HEAD",
            keep_alive: self.keep_alive,
        }
    }
}

/// Parses a request head with the default head limit, [`HEAD_BYTES_MAX_DEFAULT`]. See
/// [`parse_request_limited`].
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
) -> Result<Status<Request<'h, 'b>>, Error> {
    parse_request_limited(buf, headers, HEAD_BYTES_MAX_DEFAULT)
}

/// Parses a request head from the start of `buf`.
///
/// Pass `headers` as `[httparse::EMPTY_HEADER; HEADERS_MAX]`; only the first
/// [`HEADERS_MAX`] entries are used. Returns [`Status::Partial`] until `buf` holds the whole
/// head; call again with the grown buffer. Only the first `head_bytes_max` bytes are
/// looked at, so the cost of a call is bounded: once `buf` holds that many bytes without a
/// complete head the result is [`Error::HeadTooLarge`] (or [`Error::UriTooLong`] when the
/// request-target alone is too long). A complete head is never longer than
/// `head_bytes_max`. `head_bytes_max` must be greater than zero.
///
/// The returned request's framing has been checked for request smuggling shapes; see the
/// [`Error`] variants for each rule and its RFC section.
pub fn parse_request_limited<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    head_bytes_max: usize,
) -> Result<Status<Request<'h, 'b>>, Error> {
    debug_assert!(head_bytes_max > 0);
    let window = &buf[..buf.len().min(head_bytes_max)];
    let header_count = headers.len().min(HEADERS_MAX);
    let mut parsed = httparse::Request::new(&mut headers[..header_count]);
    let head_len = match parsed.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => return partial(window, buf.len() >= head_bytes_max),
        // A streaming reader sees the long target before any later error: report it the
        // same way whichever split the bytes arrive in.
        Err(_) if target_too_long(window) => return Err(Error::UriTooLong),
        Err(httparse::Error::Version) => {
            return match classify_version(window) {
                VersionShape::Unsupported => Err(Error::VersionNotSupported),
                VersionShape::Prefix => partial(window, buf.len() >= head_bytes_max),
                VersionShape::Malformed => Err(Error::BadRequestLine),
            };
        }
        Err(error) => return Err(map_httparse_error(error, window)),
    };
    debug_assert!(head_len <= window.len());
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        // httparse sets all three before it can report Complete.
        return Err(Error::BadRequestLine);
    };
    if target.len() > URI_BYTES_MAX {
        return Err(Error::UriTooLong);
    }
    let version = match version {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(Error::VersionNotSupported),
    };
    let headers: &'h [httparse::Header<'b>] = parsed.headers;
    let fields = Fields::scan(headers)?;
    let request = fields.into_request(method, target, version, headers, head_len)?;
    Ok(Status::Complete(request))
}

/// Partial input: still Partial unless a limit is already exceeded.
fn partial<T>(window: &[u8], window_full: bool) -> Result<Status<T>, Error> {
    if target_too_long(window) {
        Err(Error::UriTooLong)
    } else if window_full {
        Err(Error::HeadTooLarge)
    } else {
        Ok(Status::Partial)
    }
}

/// Start of the request line: RFC 9112 §2.2 lets a server skip empty lines before it, and
/// httparse does (CRLF or bare LF).
fn request_line_start(window: &[u8]) -> usize {
    let mut index = 0;
    loop {
        match window.get(index..) {
            Some([b'\r', b'\n', ..]) => index += 2,
            Some([b'\n', ..]) => index += 1,
            _ => return index,
        }
    }
}

/// Whether the request line already shows a request-target longer than [`URI_BYTES_MAX`],
/// so that a long target is reported as 414 even before the head ends or fills the limit.
fn target_too_long(window: &[u8]) -> bool {
    if window.len() <= URI_BYTES_MAX {
        return false;
    }
    let line = &window[request_line_start(window)..];
    let Some(method_end) = line.iter().position(|&byte| byte == b' ') else {
        return false;
    };
    let target = &line[method_end + 1..];
    let target_len = target
        .iter()
        .position(|&byte| matches!(byte, b' ' | b'\r' | b'\n'))
        .unwrap_or(target.len());
    target_len > URI_BYTES_MAX
}

enum VersionShape {
    /// `HTTP/d.d` followed by the line end, but not 1.0 or 1.1.
    Unsupported,
    /// The input ends inside something that may still become a version.
    Prefix,
    /// Anything else.
    Malformed,
}

/// Tells an unsupported version (505) from a malformed request line (400), after httparse
/// rejected the version token. httparse accepts exactly `HTTP/1.0` and `HTTP/1.1`.
fn classify_version(window: &[u8]) -> VersionShape {
    let line = &window[request_line_start(window)..];
    // httparse reports Version only after the method and the target, each ended by one SP.
    let mut parts = line.splitn(3, |&byte| byte == b' ');
    let (Some(_method), Some(_target), Some(rest)) = (parts.next(), parts.next(), parts.next())
    else {
        return VersionShape::Malformed;
    };
    let token_len = rest
        .iter()
        .position(|&byte| matches!(byte, b' ' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    let token = &rest[..token_len];
    const SHAPE: &[u8; 8] = b"HTTP/0.0";
    let shape_ok = token.len() <= SHAPE.len()
        && token.iter().zip(SHAPE).all(|(&byte, &shape)| match shape {
            b'0' => byte.is_ascii_digit(),
            _ => byte == shape,
        });
    match rest.get(token_len) {
        None if shape_ok => VersionShape::Prefix,
        Some(b'\r' | b'\n') if shape_ok && token.len() == SHAPE.len() => VersionShape::Unsupported,
        _ => VersionShape::Malformed,
    }
}

fn map_httparse_error(error: httparse::Error, window: &[u8]) -> Error {
    match error {
        httparse::Error::TooManyHeaders => Error::TooManyHeaders,
        httparse::Error::HeaderName | httparse::Error::HeaderValue => Error::BadHeaderField,
        httparse::Error::NewLine if request_line_is_valid(window) => Error::BadHeaderField,
        _ => Error::BadRequestLine,
    }
}

/// Whether the request line, up to its LF, parses on its own: then httparse's NewLine
/// error lies in a header field. Error path only.
fn request_line_is_valid(window: &[u8]) -> bool {
    let start = request_line_start(window);
    let Some(line_len) = window[start..].iter().position(|&byte| byte == b'\n') else {
        return false;
    };
    let line = &window[..start + line_len + 1];
    // No header array: a valid request line then reads as Partial, waiting for headers.
    let mut request = httparse::Request::new(&mut []);
    matches!(request.parse(line), Ok(httparse::Status::Partial))
}

/// What the header fields say about framing and the connection, gathered in one pass.
#[derive(Default)]
struct Fields<'b> {
    content_length: Option<u64>,
    transfer_encoding: TransferEncoding,
    connection_close: bool,
    connection_keep_alive: bool,
    expect_continue: bool,
    upgrade_websocket: bool,
    host: Option<&'b [u8]>,
    host_count: usize,
}

/// The `Transfer-Encoding` list, accumulated over all its fields in order (RFC 9110 §5.3).
#[derive(Default)]
struct TransferEncoding {
    present: bool,
    chunked_count: usize,
    last_is_chunked: bool,
    other_coding: bool,
}

impl<'b> Fields<'b> {
    fn scan(headers: &[httparse::Header<'b>]) -> Result<Self, Error> {
        let mut fields = Fields::default();
        for header in headers {
            let name = header.name.as_bytes();
            let value = header.value;
            if name.eq_ignore_ascii_case(b"content-length") {
                let length = parse_content_length(value).ok_or(Error::BadContentLength)?;
                if fields
                    .content_length
                    .is_some_and(|previous| previous != length)
                {
                    return Err(Error::BadContentLength);
                }
                fields.content_length = Some(length);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                fields.transfer_encoding.add(value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                fields.connection_close |= list_contains(value, b"close");
                fields.connection_keep_alive |= list_contains(value, b"keep-alive");
            } else if name.eq_ignore_ascii_case(b"expect") {
                fields.expect_continue |= list_contains(value, b"100-continue");
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                fields.upgrade_websocket |= list_contains(value, b"websocket");
            } else if name.eq_ignore_ascii_case(b"host") {
                if !is_host(value) {
                    return Err(Error::BadHost);
                }
                fields.host = Some(value);
                fields.host_count += 1;
            }
        }
        Ok(fields)
    }

    fn into_request<'h>(
        self,
        method: &'b str,
        target: &'b str,
        version: Version,
        headers: &'h [httparse::Header<'b>],
        head_len: usize,
    ) -> Result<Request<'h, 'b>, Error> {
        let body = self.body(version)?;
        // RFC 9112 §3.2: 400 for a 1.1 request without Host and for any request with more
        // than one Host field line.
        if self.host_count > 1 {
            return Err(Error::BadHost);
        }
        if version == Version::Http11 && self.host.is_none() {
            return Err(Error::MissingHost);
        }
        let keep_alive = match version {
            Version::Http11 => !self.connection_close,
            Version::Http10 => self.connection_keep_alive && !self.connection_close,
        };
        Ok(Request {
            method,
            target,
            version,
            headers,
            head_len,
            body,
            keep_alive,
            expect_continue: self.expect_continue && version == Version::Http11 && body.has_body(),
            upgrade_websocket: self.upgrade_websocket,
            host: self.host,
        })
    }

    /// Body framing, RFC 9112 §6.1 and §6.3, strictest reading where the RFC gives a choice.
    fn body(&self, version: Version) -> Result<BodyKind, Error> {
        if !self.transfer_encoding.present {
            return Ok(match self.content_length {
                Some(length) => BodyKind::Length(length),
                None => BodyKind::None,
            });
        }
        if version == Version::Http10 {
            return Err(Error::TransferEncodingInHttp10);
        }
        if self.content_length.is_some() {
            return Err(Error::TransferEncodingWithContentLength);
        }
        self.transfer_encoding.check()?;
        Ok(BodyKind::Chunked)
    }
}

impl TransferEncoding {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list_elements(value) {
            // Transfer coding names are case-insensitive (RFC 9112 §7). A coding with
            // parameters is not plain `chunked`, so it counts as one we cannot decode.
            self.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if self.last_is_chunked {
                self.chunked_count += 1;
            } else {
                self.other_coding = true;
            }
        }
    }

    /// `Ok` only for exactly one `chunked`, applied last, and nothing else.
    fn check(&self) -> Result<(), Error> {
        // chunked twice (RFC 9112 §6.1 "MUST NOT apply chunked more than once"), chunked
        // not final (§6.3 item 4 "MUST respond with 400"), or no coding at all.
        let chunked_misplaced = self.chunked_count > 1
            || (self.chunked_count == 1 && !self.last_is_chunked)
            || (self.chunked_count == 0 && !self.other_coding);
        if chunked_misplaced {
            return Err(Error::BadTransferEncoding);
        }
        // A coding we cannot decode, chunked last or not (§6.1 "SHOULD respond with 501").
        if self.other_coding {
            return Err(Error::UnsupportedTransferCoding);
        }
        Ok(())
    }
}
