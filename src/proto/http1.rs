//! HTTP/1.0 and HTTP/1.1 codec, sans-IO: bytes in, values out; values in, bytes out.
//!
//! Owns the HTTP/1 wire format on the client side of zring: parsing request heads
//! ([`parse_request`], [`parse_request_limited`]), decoding chunked request bodies
//! ([`ChunkedDecoder`]), choosing response framing the way Condure 1.9.1 does
//! ([`choose_framing`]) and writing responses ([`encode_response_head`], [`encode_chunk`],
//! [`encode_last_chunk`], [`encode_continue`], [`encode_error_response`]).
//!
//! Must not know: sockets, clocks, threads, ZHTTP, WebSocket framing. The connection core
//! (`conn/`) feeds bytes in and copies bytes out; it decides when a connection closes.
//!
//! Parsing follows httparse: the caller owns the header array, results borrow the input,
//! nothing is allocated, and incomplete input is [`Status::Partial`], not an error. Every
//! rejection is one [`Error`] variant, and [`Error::status`] is the one place that maps it to
//! an HTTP status. Every bound is a named constant below.

mod chunked;
mod error;
mod request;
mod response;
mod syntax;

#[cfg(test)]
mod tests;

pub use chunked::{check_body_length, ChunkedDecoder, Decoded};
pub use error::Error;
/// The header type [`parse_request`] fills, and the value to initialize an array of them
/// with: `[EMPTY_HEADER; HEADERS_MAX]`.
pub use httparse::{Header, EMPTY_HEADER};
pub use request::{parse_request, parse_request_limited, BodyKind, Request};
pub use response::{
    choose_framing, encode_chunk, encode_continue, encode_error, encode_error_response,
    encode_last_chunk, encode_overload_response, encode_response_head, Framing, ResponseBody,
    ResponseContext, ResponseHead,
};

/// Header fields per request (more gives [`Error::TooManyHeaders`], 431) and bytes of a
/// request-target (more gives [`Error::UriTooLong`], 414): Condure's limits, defined once
/// in `limits`.
pub use crate::limits::{HEADERS_MAX, URI_BYTES_MAX};
/// Head size limit used by [`parse_request`]: Condure's default `--buffer-size`, which the
/// whole request head must fit in.
pub const HEAD_BYTES_MAX_DEFAULT: usize = 8192;
/// Hex digits in a chunk size, leading zeros included: 16 digits is the most a `u64` holds,
/// so counting digits alone rules out overflow.
pub const CHUNK_SIZE_DIGITS_MAX: usize = 16;
/// Bytes of chunk extensions (and whitespace) on one chunk-size line. Nobody sends chunk
/// extensions in practice; the bound stops a client from streaming an endless size line
/// that costs CPU and never yields a body byte.
pub const CHUNK_EXT_BYTES_MAX: usize = 1024;
/// Bytes of the trailer section of a chunked request body, final CRLF included. Trailers
/// are skipped, not forwarded, so the bound only has to admit what real clients send.
pub const TRAILER_BYTES_MAX: usize = 8192;
/// Largest chunk [`encode_chunk`] writes; longer data is split. Condure 1.9.1 writes at most
/// `0xffff` bytes per chunk, so its chunk-size lines are at most four hex digits.
pub const RESPONSE_CHUNK_BYTES_MAX: usize = 0xffff;

const _: () = assert!(URI_BYTES_MAX < HEAD_BYTES_MAX_DEFAULT);
const _: () = assert!(CHUNK_SIZE_DIGITS_MAX * 4 == u64::BITS as usize);
const _: () = assert!(RESPONSE_CHUNK_BYTES_MAX <= 0xffff);

/// The result of a parse step that may need more input.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The input ends before the item does: read more and call again with all of it.
    Partial,
    /// The item is complete.
    Complete(T),
}

impl<T> Status<T> {
    /// The completed item, if any.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Partial => None,
            Status::Complete(item) => Some(item),
        }
    }

    /// Whether more input is needed.
    pub fn is_partial(&self) -> bool {
        matches!(self, Status::Partial)
    }
}

/// An HTTP/1 protocol version. Other versions are rejected while parsing
/// ([`Error::VersionNotSupported`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// `HTTP/1.0`: connections close after each response unless the client asks for
    /// `Connection: keep-alive`; no chunked coding.
    Http10,
    /// `HTTP/1.1`: persistent by default (RFC 9112 §9.3), chunked coding, `Host` required.
    Http11,
}

impl Version {
    /// The version as it appears on the wire, e.g. `b"HTTP/1.1"`.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        }
    }
}
