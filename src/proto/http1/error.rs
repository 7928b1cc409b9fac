//! The one error type of the HTTP/1 codec and its one mapping to an HTTP status.

use std::fmt;

/// Why the codec rejected its input. Every request-side variant is fatal for the connection:
/// answer with [`super::encode_error`] (which says `Connection: close`) and close after
/// writing it, since the framing of anything after the error is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The request line is not `method SP request-target SP HTTP-version CRLF`: a bad byte in
    /// the method or target, a bad version token, a bare CR (RFC 9112 §3). 400.
    BadRequestLine,
    /// A header field line is malformed: a bad byte in the name or value, whitespace before
    /// the colon (RFC 9112 §5.1), obsolete line folding (§5.2), a bare CR (§2.2). 400.
    BadHeaderField,
    /// More than [`super::HEADERS_MAX`] header fields (or more than the caller's header
    /// array holds). 431 (RFC 6585 §5).
    TooManyHeaders,
    /// The head did not end within the caller's `head_bytes_max`. 431 (RFC 6585 §5).
    HeadTooLarge,
    /// The request-target is longer than [`super::URI_BYTES_MAX`]. 414 (RFC 9112 §3,
    /// RFC 9110 §15.5.15).
    UriTooLong,
    /// A well-formed `HTTP/x.y` version other than 1.0 and 1.1, such as the HTTP/2 preface
    /// `PRI * HTTP/2.0` or `HTTP/1.2`. 505 (RFC 9110 §15.6.6).
    VersionNotSupported,
    /// `Transfer-Encoding` names a coding zring cannot decode (anything but `chunked`,
    /// e.g. `gzip, chunked`). 501 (RFC 9112 §6.1).
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` whose final coding is not `chunked` although `chunked` appears,
    /// `chunked` more than once, or an empty list: the body length cannot be determined.
    /// 400 (RFC 9112 §6.3 item 4, §6.1).
    BadTransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request, which RFC 9112 §6.1 lets a server treat
    /// as faulty framing. 400.
    TransferEncodingInHttp10,
    /// Both `Transfer-Encoding` and `Content-Length`: the classic request-smuggling shape,
    /// rejected rather than guessed (RFC 9112 §6.1, §6.3 item 3, §11.2). 400.
    TransferEncodingWithContentLength,
    /// `Content-Length` that is not `1*DIGIT`, overflows `u64`, or has differing values
    /// across fields or list elements (RFC 9112 §6.3 item 5, RFC 9110 §8.6). 400.
    BadContentLength,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2). 400.
    MissingHost,
    /// More than one `Host` field, or a value with bytes outside an authority's
    /// `host[:port]` (RFC 9112 §3.2, RFC 3986 §3.2.2). 400.
    BadHost,
    /// A chunk-size that is empty, has a non-hex byte, or has more than
    /// [`super::CHUNK_SIZE_DIGITS_MAX`] digits (RFC 9112 §7.1). 400.
    BadChunkSize,
    /// Chunk extensions longer than [`super::CHUNK_EXT_BYTES_MAX`] or with a control byte
    /// (RFC 9112 §7.1.1). 400.
    BadChunkExtension,
    /// Chunked framing that is not CRLF where CRLF is required, a bare LF included
    /// (RFC 9112 §7.1). 400.
    BadChunkFraming,
    /// A malformed trailer field line (RFC 9112 §7.1.2). 400.
    BadTrailer,
    /// A trailer section longer than [`super::TRAILER_BYTES_MAX`]. 431 (RFC 6585 §5).
    TrailerTooLarge,
    /// The request body is larger than the caller's limit: from [`super::check_body_length`]
    /// or a [`super::ChunkedDecoder`] built with a limit. 413 (RFC 9110 §15.5.14).
    BodyTooLarge,
    /// A handler response that cannot be written: a bad `Content-Length`, a status code
    /// outside 100..=999, or a byte in a header name, header value or reason that would
    /// break the framing (CR, LF, NUL). 502 (RFC 9110 §15.6.3).
    BadResponse,
}

impl Error {
    /// The HTTP status code and reason phrase to answer this error with. The only place
    /// errors meet status codes.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Error::BadRequestLine
            | Error::BadHeaderField
            | Error::BadTransferEncoding
            | Error::TransferEncodingInHttp10
            | Error::TransferEncodingWithContentLength
            | Error::BadContentLength
            | Error::MissingHost
            | Error::BadHost
            | Error::BadChunkSize
            | Error::BadChunkExtension
            | Error::BadChunkFraming
            | Error::BadTrailer => (400, "Bad Request"),
            Error::TooManyHeaders | Error::HeadTooLarge | Error::TrailerTooLarge => {
                (431, "Request Header Fields Too Large")
            }
            Error::UriTooLong => (414, "URI Too Long"),
            Error::VersionNotSupported => (505, "HTTP Version Not Supported"),
            Error::UnsupportedTransferCoding => (501, "Not Implemented"),
            Error::BodyTooLarge => (413, "Content Too Large"),
            Error::BadResponse => (502, "Bad Gateway"),
        }
    }

    /// A one-line description, fit for a log line or a `text/plain` error body.
    pub fn description(self) -> &'static str {
        match self {
            Error::BadRequestLine => "malformed request line",
            Error::BadHeaderField => "malformed header field",
            Error::TooManyHeaders => "too many header fields",
            Error::HeadTooLarge => "request head too large",
            Error::UriTooLong => "request-target too long",
            Error::VersionNotSupported => "HTTP version not supported",
            Error::UnsupportedTransferCoding => "unsupported transfer coding",
            Error::BadTransferEncoding => "chunked is not the final transfer coding",
            Error::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            Error::TransferEncodingWithContentLength => "both Transfer-Encoding and Content-Length",
            Error::BadContentLength => "invalid Content-Length",
            Error::MissingHost => "missing Host header",
            Error::BadHost => "invalid Host header",
            Error::BadChunkSize => "invalid chunk size",
            Error::BadChunkExtension => "invalid chunk extension",
            Error::BadChunkFraming => "invalid chunked framing",
            Error::BadTrailer => "malformed trailer field",
            Error::TrailerTooLarge => "trailer section too large",
            Error::BodyTooLarge => "request body too large",
            Error::BadResponse => "invalid response from handler",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.description())
    }
}

impl std::error::Error for Error {}
