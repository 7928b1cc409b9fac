//! Writing responses: framing choice and byte layout, matching Condure 1.9.1.
//!
//! # What Condure 1.9.1 writes
//!
//! Observed by running Debian's condure 1.9.1 on loopback with a Python ZHTTP handler and
//! reading the raw bytes from a socket (and confirmed in its `src/http1.rs` and
//! `src/connection.rs`). The test vectors in `tests/response.rs` are these captures.
//!
//! - Status line: `HTTP/1.1` (or `HTTP/1.0` when the request was 1.0), SP, the code in
//!   decimal, SP, the handler's reason as is, CRLF. An empty reason leaves the SP:
//!   `HTTP/1.1 200 \r\n`.
//! - Then the handler's headers in the handler's order as `Name: value` CRLF, minus
//!   `Content-Length`, `Transfer-Encoding` and (except on 101) `Connection`, all matched
//!   case-insensitively. Every other header passes through, hop-by-hop or not
//!   (`Keep-Alive`, `Upgrade`, `TE`, `Trailer`, `Proxy-Connection`).
//! - Then, in this order: `Connection: keep-alive` (1.0 request that asked for it) or
//!   `Connection: close` (1.1 request that will not be kept alive);
//!   `Connection: Transfer-Encoding` when chunked (a second Connection field if there was a
//!   close); `Content-Length: n` when the length is known; `Transfer-Encoding: chunked` when
//!   chunked; CRLF.
//! - Framing from the first response packet: 1xx, 204 and 304 have no body and get no
//!   framing headers (body bytes from the handler are dropped); else a handler
//!   `Content-Length` is honoured (the body then streams raw); else `more` absent gives
//!   `Content-Length: len(body)`; else chunked for a 1.1 request, close-delimited for 1.0.
//! - A response sent before the request body was read in full closes the connection
//!   (`Connection: close` on 1.1).
//! - Chunks are `{:x}` lower-case hex size, CRLF, data, CRLF, at most `0xffff` bytes each;
//!   empty data writes no chunk; the end is `0\r\n\r\n`. `100 Continue` is the fixed
//!   `HTTP/1.1 100 Continue\r\n\r\n`.
//!
//! # Where zring differs, because Condure is wrong there
//!
//! - HEAD (RFC 9110 §9.3.2): Condure writes the handler's body after the head, and chunk
//!   framing too. zring writes the same head but no body ([`Framing::send_body`] is false).
//!   When the handler answers HEAD with an empty body, no `Content-Length` and no `more`,
//!   Condure writes `Content-Length: 0`, which claims a GET would return nothing
//!   (RFC 9110 §8.6 forbids a differing value); zring writes no framing header then.
//! - A streamed (close-delimited) response to an HTTP/1.0 keep-alive request: Condure says
//!   `Connection: keep-alive` and leaves the connection open, so the client cannot find the
//!   end of the body. zring omits the header and closes (RFC 9112 §6.3 item 8).
//! - 101: Condure appends `Connection: close` after the WebSocket headers when the request
//!   said `Connection: Upgrade, close`. zring adds no keep-alive field to a 101; the
//!   caller's `Connection: Upgrade` stands alone.
//! - Header names, values and reasons that would break the framing (CR, LF, NUL, a name
//!   that is not a token) and codes outside 100..=999 are refused with
//!   [`Error::BadResponse`] (502) instead of being written.
//! - Differing handler `Content-Length` values are refused (Condure takes the last one).

use super::syntax::{is_field_value_byte, is_token, parse_content_length, push_decimal, push_hex};
use super::{Error, Version, HEADERS_MAX, RESPONSE_CHUNK_BYTES_MAX};

/// How the response head frames the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// `Content-Length: n`; the body is written raw.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 only): write with [`encode_chunk`] and end
    /// with [`encode_last_chunk`].
    Chunked,
    /// No length (HTTP/1.0 streaming): the body is written raw and ends when the connection
    /// closes.
    CloseDelimited,
    /// No body and no framing headers: 1xx, 204, 304.
    None,
}

/// A response head to write.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// The version of the request being answered (Condure answers 1.0 with 1.0).
    pub version: Version,
    /// Status code, 100..=999.
    pub code: u16,
    /// Reason phrase, possibly empty.
    pub reason: &'a [u8],
    /// Handler headers in order. `Content-Length`, `Transfer-Encoding` and (except on 101)
    /// `Connection` are skipped: the writer adds its own from `body` and `keep_alive`.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// Which framing headers to write.
    pub body: ResponseBody,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
}

/// What [`choose_framing`] needs to know about the request being answered
/// (see [`super::Request::response_context`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseContext {
    /// The request's version.
    pub version: Version,
    /// The request method was HEAD: the response has a head only.
    pub head_request: bool,
    /// The request allows keeping the connection open, and its body has been read in full.
    pub keep_alive: bool,
}

/// The framing of one response, decided from the first response packet.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The framing headers to write: put this in [`ResponseHead::body`].
    pub body: ResponseBody,
    /// Whether body bytes go on the wire. False for HEAD and for [`ResponseBody::None`]:
    /// the caller drops the handler's body bytes (and writes no chunks and no last chunk).
    pub send_body: bool,
    /// Whether the connection stays open after the response: put this in
    /// [`ResponseHead::keep_alive`].
    pub keep_alive: bool,
}

/// Chooses the framing of a response the way Condure 1.9.1 does (see the module docs),
/// from the request, the handler's status code and headers, whether more body packets
/// follow (`more`) and the body length in this first packet.
///
/// Fails with [`Error::BadResponse`] when the handler's `Content-Length` fields are not all
/// the same valid number, or there are more than [`HEADERS_MAX`] headers.
pub fn choose_framing(
    context: ResponseContext,
    code: u16,
    headers: &[(&[u8], &[u8])],
    more: bool,
    body_len: u64,
) -> Result<Framing, Error> {
    // Condure's limit on handler headers too.
    if headers.len() > HEADERS_MAX {
        return Err(Error::BadResponse);
    }
    let mut handler_length = None;
    for &(name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_content_length(value).ok_or(Error::BadResponse)?;
            if handler_length.is_some_and(|previous| previous != length) {
                return Err(Error::BadResponse);
            }
            handler_length = Some(length);
        }
    }
    let body = match (code, handler_length) {
        // RFC 9110 §6.4.1: these never have content.
        (100..=199 | 204 | 304, _) => ResponseBody::None,
        (_, Some(length)) => ResponseBody::Length(length),
        // An empty, unframed answer to HEAD says nothing about the length a GET would
        // have, and RFC 9110 §8.6 forbids a Content-Length that differs from it.
        _ if !more && context.head_request && body_len == 0 => ResponseBody::None,
        _ if !more => ResponseBody::Length(body_len),
        _ => match context.version {
            Version::Http11 => ResponseBody::Chunked,
            Version::Http10 => ResponseBody::CloseDelimited,
        },
    };
    let send_body = !context.head_request && body != ResponseBody::None;
    // A close-delimited body ends only when the connection does (RFC 9112 §6.3 item 8).
    let keep_alive = context.keep_alive && !(send_body && body == ResponseBody::CloseDelimited);
    Ok(Framing {
        body,
        send_body,
        keep_alive,
    })
}

/// Appends a response head to `out`, laid out byte for byte as Condure 1.9.1 does (see the
/// module docs), ending with the blank line.
///
/// Fails with [`Error::BadResponse`], leaving `out` as it was, when the code is outside
/// 100..=999 or a reason, header name or header value holds a byte that would break the
/// framing (the names must be tokens; values and reason exclude controls but HTAB).
pub fn encode_response_head(out: &mut Vec<u8>, head: &ResponseHead) -> Result<(), Error> {
    let start = out.len();
    let result = write_head(out, head);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_head(out: &mut Vec<u8>, head: &ResponseHead) -> Result<(), Error> {
    if !(100..=999).contains(&head.code) || !head.reason.iter().all(|&b| is_field_value_byte(b)) {
        return Err(Error::BadResponse);
    }
    debug_assert!(head.body != ResponseBody::Chunked || head.version == Version::Http11);
    let switching = head.code == 101;
    out.extend_from_slice(head.version.as_bytes());
    out.push(b' ');
    push_decimal(out, u64::from(head.code));
    out.push(b' ');
    out.extend_from_slice(head.reason);
    out.extend_from_slice(b"\r\n");
    for &(name, value) in head.headers {
        if !is_token(name) || !value.iter().all(|&b| is_field_value_byte(b)) {
            return Err(Error::BadResponse);
        }
        let replaced = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || (!switching && name.eq_ignore_ascii_case(b"connection"));
        if !replaced {
            push_field(out, name, value);
        }
    }
    if !switching {
        match (head.version, head.keep_alive) {
            (Version::Http10, true) => push_field(out, b"Connection", b"keep-alive"),
            (Version::Http11, false) => push_field(out, b"Connection", b"close"),
            _ => {}
        }
    }
    match head.body {
        ResponseBody::Length(length) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, length);
            out.extend_from_slice(b"\r\n");
        }
        ResponseBody::Chunked => {
            push_field(out, b"Connection", b"Transfer-Encoding");
            push_field(out, b"Transfer-Encoding", b"chunked");
        }
        ResponseBody::CloseDelimited | ResponseBody::None => {}
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `data` as chunks of at most [`RESPONSE_CHUNK_BYTES_MAX`] bytes. Empty `data`
/// writes nothing, since an empty chunk would end the body.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    for piece in data.chunks(RESPONSE_CHUNK_BYTES_MAX) {
        push_hex(out, piece.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends the last chunk and the empty trailer section: `0\r\n\r\n`.
pub fn encode_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Appends the interim response that tells a client waiting on `Expect: 100-continue` to
/// send its body: `HTTP/1.1 100 Continue\r\n\r\n`.
pub fn encode_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

/// Appends a complete short response that zring itself answers with (400, 413, 414, 431,
/// 501, 502, 503, 505, ...): `Content-Type: text/plain`, `Content-Length`,
/// `Connection: close` (for 1.0 too, to be explicit), then `body`. Close the connection
/// after writing it. `reason` must be a valid reason phrase (no CR or LF).
pub fn encode_error_response(
    out: &mut Vec<u8>,
    version: Version,
    code: u16,
    reason: &[u8],
    body: &[u8],
) {
    write_error_head(out, version, code, reason, b"", body.len());
    out.extend_from_slice(body);
}

/// Appends the `503` a connection gets when zring is at its connection limit: `Retry-After`
/// tells the client when to try again (RFC 9110 §10.2.3).
pub fn encode_overload_response(out: &mut Vec<u8>, retry_after_s: u32, body: &[u8]) {
    let mut extra = [0u8; 32];
    let n = {
        let mut w = &mut extra[..];
        use std::io::Write;
        let _ = write!(w, "Retry-After: {retry_after_s}\r\n");
        32 - w.len()
    };
    write_error_head(
        out,
        Version::Http11,
        503,
        b"Service Unavailable",
        &extra[..n],
        body.len(),
    );
    out.extend_from_slice(body);
}

/// Appends the error response for `error`: its [`Error::status`], with its
/// [`Error::description`] and a newline as the body. Use [`Version::Http11`] when the
/// request line could not be read.
pub fn encode_error(out: &mut Vec<u8>, version: Version, error: Error) {
    let (code, reason) = error.status();
    let description = error.description().as_bytes();
    write_error_head(
        out,
        version,
        code,
        reason.as_bytes(),
        b"",
        description.len() + 1,
    );
    out.extend_from_slice(description);
    out.push(b'\n');
}

fn write_error_head(
    out: &mut Vec<u8>,
    version: Version,
    code: u16,
    reason: &[u8],
    extra_headers: &[u8],
    body_len: usize,
) {
    debug_assert!((100..=999).contains(&code));
    debug_assert!(reason.iter().all(|&b| is_field_value_byte(b)));
    out.extend_from_slice(version.as_bytes());
    out.push(b' ');
    push_decimal(out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nConnection: close\r\n");
    out.extend_from_slice(extra_headers);
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body_len as u64);
    out.extend_from_slice(b"\r\n\r\n");
}
