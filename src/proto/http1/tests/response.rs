//! Response writing. The `CONDURE` vectors are raw bytes captured from Debian's condure
//! 1.9.1 answering a Python ZHTTP handler (see the notes at the top of `response.rs`); zring
//! must produce them byte for byte. The `DEVIATIONS` vectors are the cases where Condure is
//! wrong, with what zring writes instead.

use crate::proto::http1::{
    choose_framing, encode_chunk, encode_continue, encode_error, encode_error_response,
    encode_last_chunk, encode_response_head, Error, Framing, ResponseBody, ResponseContext,
    ResponseHead, Version, HEADERS_MAX, RESPONSE_CHUNK_BYTES_MAX,
};

type Headers<'a> = &'a [(&'a [u8], &'a [u8])];

/// One handler response: status, headers, and the body of each packet (`more` on all but
/// the last).
struct Response<'a> {
    code: u16,
    reason: &'a [u8],
    headers: Headers<'a>,
    packets: &'a [&'a [u8]],
}

/// Writes `response` the way the connection core will: framing from the first packet, the
/// head, then each packet's body, then the last chunk.
fn render(context: ResponseContext, response: &Response) -> (Vec<u8>, Framing) {
    let (first, _) = response.packets.split_first().expect("at least one packet");
    let more = response.packets.len() > 1;
    let framing = choose_framing(
        context,
        response.code,
        response.headers,
        more,
        first.len() as u64,
    )
    .expect("valid framing");
    let head = ResponseHead {
        version: context.version,
        code: response.code,
        reason: response.reason,
        headers: response.headers,
        body: framing.body,
        keep_alive: framing.keep_alive,
    };
    let mut out = Vec::new();
    encode_response_head(&mut out, &head).expect("valid head");
    if framing.send_body {
        for body in response.packets {
            match framing.body {
                ResponseBody::Chunked => encode_chunk(&mut out, body),
                _ => out.extend_from_slice(body),
            }
        }
        if framing.body == ResponseBody::Chunked {
            encode_last_chunk(&mut out);
        }
    }
    (out, framing)
}

const HTTP11: ResponseContext = ResponseContext {
    version: Version::Http11,
    head_request: false,
    keep_alive: true,
};
const HTTP11_CLOSE: ResponseContext = ResponseContext {
    keep_alive: false,
    ..HTTP11
};
const HTTP11_HEAD: ResponseContext = ResponseContext {
    head_request: true,
    ..HTTP11
};
const HTTP10: ResponseContext = ResponseContext {
    version: Version::Http10,
    head_request: false,
    keep_alive: false,
};
const HTTP10_KEEP_ALIVE: ResponseContext = ResponseContext {
    keep_alive: true,
    ..HTTP10
};
const HTTP10_HEAD_KEEP_ALIVE: ResponseContext = ResponseContext {
    head_request: true,
    ..HTTP10_KEEP_ALIVE
};

const TEXT: Headers = &[(b"Content-Type", b"text/plain")];

const PLAIN: Response = Response {
    code: 200,
    reason: b"OK",
    headers: TEXT,
    packets: &[b"hello\n"],
};
const STREAM: Response = Response {
    code: 200,
    reason: b"OK",
    headers: TEXT,
    packets: &[b"part1\n", b"part2\n", b"part3\n"],
};
const STREAM_EMPTY: Response = Response {
    code: 200,
    reason: b"OK",
    headers: TEXT,
    packets: &[b"", b""],
};
const STREAM_LENGTH: Response = Response {
    code: 200,
    reason: b"OK",
    headers: &[(b"Content-Type", b"text/plain"), (b"Content-Length", b"12")],
    packets: &[b"part1\n", b"part2\n"],
};
const HOP_BY_HOP: Response = Response {
    code: 200,
    reason: b"OK",
    headers: &[
        (b"X-A", b"1"),
        (b"Connection", b"foo"),
        (b"content-length", b"6"),
        (b"Transfer-Encoding", b"gzip"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-B", b"2"),
        (b"Upgrade", b"h2c"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X"),
        (b"Proxy-Connection", b"x"),
    ],
    packets: &[b"hello\n"],
};
const fn status(code: u16, packets: &'static [&'static [u8]]) -> Response<'static> {
    Response {
        code,
        reason: b"Whatever",
        headers: TEXT,
        packets,
    }
}
/// The 101 as the WebSocket layer hands it over: the handler's headers minus its
/// Upgrade/Connection/Sec-WebSocket-Accept, plus zring's own. Content-Length still dropped.
const SWITCHING: Response = Response {
    code: 101,
    reason: b"Switching Protocols",
    headers: &[
        (b"Sec-WebSocket-Protocol", b"chat"),
        (b"Content-Length", b"5"),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ],
    packets: &[b""],
};

/// `(name, request, response, bytes on the wire)` captured from Condure 1.9.1.
const CONDURE: &[(&str, ResponseContext, Response, &[u8])] = &[
    ("plain 1.1", HTTP11, PLAIN, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"),
    ("plain 1.0", HTTP10, PLAIN, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"),
    ("plain 1.0 keep-alive", HTTP10_KEEP_ALIVE, PLAIN, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nContent-Length: 6\r\n\r\nhello\n"),
    ("plain 1.1 close", HTTP11_CLOSE, PLAIN, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 6\r\n\r\nhello\n"),
    ("hop-by-hop headers", HTTP11, HOP_BY_HOP, b"HTTP/1.1 200 OK\r\nX-A: 1\r\nKeep-Alive: timeout=5\r\nX-B: 2\r\nUpgrade: h2c\r\nTE: trailers\r\nTrailer: X\r\nProxy-Connection: x\r\nContent-Length: 6\r\n\r\nhello\n"),
    ("stream 1.1", HTTP11, STREAM, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n6\r\npart1\n\r\n6\r\npart2\n\r\n6\r\npart3\n\r\n0\r\n\r\n"),
    ("stream 1.1 close", HTTP11_CLOSE, STREAM, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n6\r\npart1\n\r\n6\r\npart2\n\r\n6\r\npart3\n\r\n0\r\n\r\n"),
    ("stream 1.0", HTTP10, STREAM, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart1\npart2\npart3\n"),
    ("stream empty 1.1", HTTP11, STREAM_EMPTY, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("stream with length 1.1", HTTP11, STREAM_LENGTH, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\npart1\npart2\n"),
    ("stream with length 1.0 keep-alive", HTTP10_KEEP_ALIVE, STREAM_LENGTH, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nContent-Length: 12\r\n\r\npart1\npart2\n"),
    ("empty reason", HTTP11, Response { code: 200, reason: b"", headers: &[], packets: &[b""] }, b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"),
    ("204 drops body", HTTP11, status(204, &[b"bodybytes"]), b"HTTP/1.1 204 Whatever\r\nContent-Type: text/plain\r\n\r\n"),
    ("304 drops body", HTTP11, status(304, &[b"bodybytes"]), b"HTTP/1.1 304 Whatever\r\nContent-Type: text/plain\r\n\r\n"),
    ("103 drops body", HTTP11, status(103, &[b"bodybytes"]), b"HTTP/1.1 103 Whatever\r\nContent-Type: text/plain\r\n\r\n"),
    ("204 1.0", HTTP10, status(204, &[b"bodybytes"]), b"HTTP/1.0 204 Whatever\r\nContent-Type: text/plain\r\n\r\n"),
    ("204 streamed", HTTP11, status(204, &[b"", b""]), b"HTTP/1.1 204 Whatever\r\nContent-Type: text/plain\r\n\r\n"),
    ("304 streamed 1.0 keep-alive", HTTP10_KEEP_ALIVE, status(304, &[b"", b""]), b"HTTP/1.0 304 Whatever\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\n"),
    ("unknown code", HTTP11, status(999, &[b"bodybytes"]), b"HTTP/1.1 999 Whatever\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nbodybytes"),
    ("early response", HTTP11_CLOSE, Response { packets: &[b"early\n"], ..PLAIN }, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 6\r\n\r\nearly\n"),
    ("101", HTTP11, SWITCHING, b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
];

#[test]
fn condure_vectors() {
    for (name, context, response, expected) in CONDURE {
        let (out, _) = render(*context, response);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expected),
            "{name}"
        );
    }
}

/// `(name, request, response, what Condure wrote, what zring writes, keep-alive)`.
type Deviation = (
    &'static str,
    ResponseContext,
    Response<'static>,
    &'static [u8],
    &'static [u8],
    bool,
);

const DEVIATIONS: &[Deviation] = &[
    (
        "HEAD with an empty unframed answer claims no length",
        HTTP11_HEAD,
        Response { code: 200, reason: b"OK", headers: &[], packets: &[b""] },
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        true,
    ),
    (
        "HEAD has no body",
        HTTP11_HEAD,
        PLAIN,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n",
        true,
    ),
    (
        "HEAD streamed has no chunks",
        HTTP11_HEAD,
        STREAM,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n6\r\npart1\n\r\n6\r\npart2\n\r\n6\r\npart3\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
        true,
    ),
    (
        "close-delimited 1.0 cannot keep alive",
        HTTP10_KEEP_ALIVE,
        STREAM,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\npart1\npart2\npart3\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart1\npart2\npart3\n",
        false,
    ),
    (
        "HEAD streamed 1.0 keeps alive",
        HTTP10_HEAD_KEEP_ALIVE,
        STREAM,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\npart1\npart2\npart3\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\n",
        true,
    ),
    (
        "101 gets no Connection: close",
        HTTP11_CLOSE,
        SWITCHING,
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        false,
    ),
];

#[test]
fn deviations_from_condure() {
    for (name, context, response, condure, expected, keep_alive) in DEVIATIONS {
        let (out, framing) = render(*context, response);
        assert_ne!(&out[..], *condure, "{name}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expected),
            "{name}"
        );
        assert_eq!(framing.keep_alive, *keep_alive, "{name}");
    }
}

#[test]
fn framing_table() {
    // (context, code, headers, more, body_len) -> (body, send_body, keep_alive)
    let length: Headers = &[(b"CONTENT-LENGTH", b"100")];
    let cases: &[(ResponseContext, u16, Headers, bool, u64, Framing)] = &[
        (
            HTTP11_HEAD,
            200,
            &[],
            false,
            0,
            framing(ResponseBody::None, false, true),
        ),
        (
            HTTP11_HEAD,
            200,
            &[],
            false,
            6,
            framing(ResponseBody::Length(6), false, true),
        ),
        (
            HTTP10_HEAD_KEEP_ALIVE,
            200,
            &[],
            false,
            0,
            framing(ResponseBody::None, false, true),
        ),
        (
            HTTP11,
            200,
            &[],
            false,
            5,
            framing(ResponseBody::Length(5), true, true),
        ),
        (
            HTTP11,
            200,
            &[],
            true,
            5,
            framing(ResponseBody::Chunked, true, true),
        ),
        (
            HTTP11,
            200,
            length,
            true,
            5,
            framing(ResponseBody::Length(100), true, true),
        ),
        (
            HTTP11,
            200,
            length,
            false,
            5,
            framing(ResponseBody::Length(100), true, true),
        ),
        (
            HTTP10,
            200,
            &[],
            true,
            5,
            framing(ResponseBody::CloseDelimited, true, false),
        ),
        (
            HTTP10_KEEP_ALIVE,
            200,
            &[],
            true,
            5,
            framing(ResponseBody::CloseDelimited, true, false),
        ),
        (
            HTTP10_KEEP_ALIVE,
            200,
            length,
            true,
            5,
            framing(ResponseBody::Length(100), true, true),
        ),
        (
            HTTP11_HEAD,
            200,
            &[],
            true,
            0,
            framing(ResponseBody::Chunked, false, true),
        ),
        (
            HTTP11_HEAD,
            200,
            length,
            false,
            0,
            framing(ResponseBody::Length(100), false, true),
        ),
        (
            HTTP11,
            204,
            length,
            false,
            5,
            framing(ResponseBody::None, false, true),
        ),
        (
            HTTP11,
            304,
            length,
            false,
            0,
            framing(ResponseBody::None, false, true),
        ),
        (
            HTTP11,
            100,
            &[],
            false,
            0,
            framing(ResponseBody::None, false, true),
        ),
        (
            HTTP11,
            101,
            &[],
            false,
            0,
            framing(ResponseBody::None, false, true),
        ),
        (
            HTTP11,
            199,
            &[],
            true,
            0,
            framing(ResponseBody::None, false, true),
        ),
        (
            HTTP11,
            205,
            &[],
            false,
            0,
            framing(ResponseBody::Length(0), true, true),
        ),
        (
            HTTP11_CLOSE,
            200,
            &[],
            true,
            0,
            framing(ResponseBody::Chunked, true, false),
        ),
    ];
    for (index, &(context, code, headers, more, body_len, expected)) in cases.iter().enumerate() {
        assert_eq!(
            choose_framing(context, code, headers, more, body_len),
            Ok(expected),
            "case {index}"
        );
    }
}

const fn framing(body: ResponseBody, send_body: bool, keep_alive: bool) -> Framing {
    Framing {
        body,
        send_body,
        keep_alive,
    }
}

#[test]
fn handler_content_length_must_be_valid() {
    let bad: &[Headers] = &[
        &[(b"Content-Length", b"abc")],
        &[(b"Content-Length", b"")],
        &[(b"Content-Length", b"-1")],
        &[(b"Content-Length", b"1"), (b"content-length", b"2")],
        &[(b"Content-Length", b"1, 2")],
    ];
    for headers in bad {
        assert_eq!(
            choose_framing(HTTP11, 200, headers, false, 0),
            Err(Error::BadResponse),
            "{headers:?}"
        );
    }
    let too_many = vec![(&b"X-A"[..], &b"1"[..]); HEADERS_MAX + 1];
    assert_eq!(
        choose_framing(HTTP11, 200, &too_many, false, 0),
        Err(Error::BadResponse)
    );
    assert!(choose_framing(HTTP11, 200, &too_many[1..], false, 0).is_ok());
    let same: Headers = &[(b"Content-Length", b"7"), (b"content-length", b"7, 7")];
    assert_eq!(
        choose_framing(HTTP11, 200, same, false, 0).map(|f| f.body),
        Ok(ResponseBody::Length(7))
    );
}

#[test]
fn heads_that_would_break_framing_are_refused() {
    let head = |code, reason, headers| ResponseHead {
        version: Version::Http11,
        code,
        reason,
        headers,
        body: ResponseBody::Length(0),
        keep_alive: true,
    };
    let cases: &[ResponseHead] = &[
        head(99, b"OK", &[]),
        head(1000, b"OK", &[]),
        head(200, b"OK\r\nX-Injected: 1", &[]),
        head(200, b"OK\n", &[]),
        head(200, b"OK", &[(b"X-A", b"1\r\nX-Injected: 1")]),
        head(200, b"OK", &[(b"X-A", b"a\x00b")]),
        head(200, b"OK", &[(b"X A", b"1")]),
        head(200, b"OK", &[(b"X-A:", b"1")]),
        head(200, b"OK", &[(b"", b"1")]),
        head(200, b"OK", &[(b"X-A\r\n", b"1")]),
    ];
    for case in cases {
        let mut out = b"kept".to_vec();
        assert_eq!(
            encode_response_head(&mut out, case),
            Err(Error::BadResponse),
            "{case:?}"
        );
        assert_eq!(out, b"kept", "nothing written on error");
    }
    // Everything else passes, obs-text and tabs included.
    let mut out = Vec::new();
    let fine = head(
        200,
        b"Fine \t\xe9",
        &[(b"X-A", b"\tv\xff al"), (b"!#$%&'*+-.^_`|~", b"")],
    );
    assert_eq!(encode_response_head(&mut out, &fine), Ok(()));
    assert_eq!(out, b"HTTP/1.1 200 Fine \t\xe9\r\nX-A: \tv\xff al\r\n!#$%&'*+-.^_`|~: \r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn chunks() {
    let mut out = Vec::new();
    encode_chunk(&mut out, b"");
    assert_eq!(out, b"", "empty data writes no chunk");
    encode_chunk(&mut out, b"0123456789abcdef0");
    encode_last_chunk(&mut out);
    assert_eq!(out, b"11\r\n0123456789abcdef0\r\n0\r\n\r\n");
    // Condure's largest chunk is 0xffff bytes; longer data becomes several chunks.
    let data = vec![b'x'; RESPONSE_CHUNK_BYTES_MAX * 2 + 1];
    let mut out = Vec::new();
    encode_chunk(&mut out, &data);
    let mut expected = Vec::new();
    for size in [RESPONSE_CHUNK_BYTES_MAX, RESPONSE_CHUNK_BYTES_MAX, 1] {
        expected.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        expected.extend_from_slice(&vec![b'x'; size]);
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(out, expected);
}

#[test]
fn continue_and_errors() {
    let mut out = Vec::new();
    encode_continue(&mut out);
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");

    let mut out = Vec::new();
    encode_error_response(
        &mut out,
        Version::Http11,
        503,
        b"Service Unavailable",
        b"no handler\n",
    );
    assert_eq!(out, &b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 11\r\n\r\nno handler\n"[..]);

    let mut out = Vec::new();
    encode_error(&mut out, Version::Http10, Error::UriTooLong);
    assert_eq!(out, &b"HTTP/1.0 414 URI Too Long\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 24\r\n\r\nrequest-target too long\n"[..]);

    let mut out = Vec::new();
    encode_error(&mut out, Version::Http11, Error::BodyTooLarge);
    assert!(out.starts_with(b"HTTP/1.1 413 Content Too Large\r\n"));
}
