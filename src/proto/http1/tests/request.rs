//! Request-head parsing: one `case!` per valid request with the fields it must yield, an
//! error table with the status each error maps to, and whole-table properties (every
//! proper prefix is Partial, every one-byte corruption is an error).

use crate::proto::http1::{
    parse_request, parse_request_limited, BodyKind, Error, Request, Status, Version, HEADERS_MAX,
    HEAD_BYTES_MAX_DEFAULT, URI_BYTES_MAX,
};

fn header_array<'b>() -> [httparse::Header<'b>; HEADERS_MAX] {
    [httparse::EMPTY_HEADER; HEADERS_MAX]
}

/// The head length of a complete parse.
fn parse(input: &[u8]) -> Result<Status<usize>, Error> {
    let mut headers = header_array();
    parse_request(input, &mut headers).map(|status| match status {
        Status::Partial => Status::Partial,
        Status::Complete(request) => Status::Complete(request.head_len),
    })
}

fn complete(input: &[u8]) -> Request<'_, '_> {
    // Leaked so that the request can borrow it past this helper; only `case!` uses it.
    let headers = Box::leak(Box::new(header_array()));
    match parse_request(input, headers) {
        Ok(Status::Complete(request)) => request,
        other => panic!(
            "{:?}: expected Complete, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

/// `case!(name, input, |request| { checks })`: `input` must parse completely and pass the
/// checks. The input also joins `VALID`'s whole-table properties through `valid_inputs`.
macro_rules! case {
    ($name:ident, $input:expr, |$request:ident| $checks:block) => {
        #[test]
        fn $name() {
            let $request = complete($input);
            $checks
        }
    };
}

case!(
    minimal_get,
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    |r| {
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/");
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.head_len, 37);
        assert_eq!(r.body, BodyKind::None);
        assert!(r.keep_alive);
        assert!(!r.expect_continue);
        assert!(!r.upgrade_websocket);
        assert_eq!(r.host, Some(&b"example.com"[..]));
    }
);

case!(curl_get, CURL, |r| {
    assert_eq!(r.target, "/hello?x=1");
    assert_eq!(r.headers.len(), 3);
    assert_eq!(r.headers[1].name, "User-Agent");
    assert_eq!(r.headers[1].value, b"curl/7.88.1");
    assert_eq!(r.head_len, CURL.len());
    assert_eq!(r.host, Some(&b"127.0.0.1:18000"[..]));
});

case!(browser_get, BROWSER, |r| {
    assert_eq!(r.headers.len(), 14);
    assert_eq!(r.head_len, BROWSER.len());
    assert!(r.keep_alive);
});

case!(http10_closes_by_default, b"GET / HTTP/1.0\r\n\r\n", |r| {
    assert_eq!(r.version, Version::Http10);
    assert!(!r.keep_alive);
    assert_eq!(r.host, None);
});

case!(
    http10_keep_alive_any_case,
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    |r| {
        assert!(r.keep_alive);
    }
);

case!(
    http10_close_beats_keep_alive,
    b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
    |r| {
        assert!(!r.keep_alive);
    }
);

case!(
    http11_close_any_case,
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n",
    |r| {
        assert!(!r.keep_alive);
    }
);

case!(
    http11_close_in_second_field,
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: te\r\nconnection: close\r\n\r\n",
    |r| {
        assert!(!r.keep_alive);
    }
);

case!(
    post_with_length_and_expect,
    b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\nhello",
    |r| {
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, BodyKind::Length(5));
        assert!(r.expect_continue);
        assert_eq!(r.head_len, 75);
    }
);

case!(
    expect_without_body_is_ignored,
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    |r| {
        assert!(!r.expect_continue);
    }
);

case!(
    expect_with_empty_body_is_ignored,
    b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n",
    |r| {
        assert_eq!(r.body, BodyKind::Length(0));
        assert!(!r.expect_continue);
    }
);

case!(
    expect_in_http10_is_ignored,
    b"POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
    |r| {
        assert!(!r.expect_continue);
    }
);

case!(
    chunked_body,
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    |r| {
        assert_eq!(r.body, BodyKind::Chunked);
        assert!(r.expect_continue);
    }
);

case!(
    chunked_any_case_with_empty_elements,
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , CHUNKED ,\r\n\r\n",
    |r| {
        assert_eq!(r.body, BodyKind::Chunked);
    }
);

case!(
    content_length_repeated_equal,
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7, 7\r\n\r\n",
    |r| {
        assert_eq!(r.body, BodyKind::Length(7));
    }
);

case!(
    content_length_leading_zeros,
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0012\r\n\r\n",
    |r| {
        assert_eq!(r.body, BodyKind::Length(12));
    }
);

case!(websocket_upgrade, b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", |r| {
    assert!(r.upgrade_websocket);
    assert!(r.keep_alive);
});

case!(
    upgrade_other_protocol,
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
    |r| {
        assert!(!r.upgrade_websocket);
    }
);

case!(
    leading_empty_lines_are_skipped,
    b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    |r| {
        assert_eq!(r.method, "GET");
        assert_eq!(r.head_len, 30);
    }
);

case!(
    bare_lf_head_is_accepted,
    b"GET / HTTP/1.1\nHost: a\n\n",
    |r| {
        // RFC 9112 §2.2 lets a recipient accept a bare LF as a line end in the head.
        assert_eq!(r.host, Some(&b"a"[..]));
        assert_eq!(r.head_len, 24);
    }
);

case!(empty_host, b"GET / HTTP/1.1\r\nHost:\r\n\r\n", |r| {
    assert_eq!(r.host, Some(&b""[..]));
});

case!(
    ipv6_host,
    b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    |r| {
        assert_eq!(r.host, Some(&b"[::1]:8080"[..]));
    }
);

case!(
    asterisk_form,
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    |r| {
        assert_eq!(r.target, "*");
    }
);

case!(
    absolute_form,
    b"GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n",
    |r| {
        assert_eq!(r.target, "http://example.com/x?y");
    }
);

case!(
    head_method_context,
    b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    |r| {
        let context = r.response_context();
        assert!(context.head_request);
        assert!(context.keep_alive);
        assert_eq!(context.version, Version::Http10);
    }
);

const CURL: &[u8] =
    b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:18000\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

/// A Firefox-like navigation request.
pub(crate) const BROWSER: &[u8] =
    b"GET /articles/2024/zero-copy-parsing?ref=home&utm_source=feed HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=5f2b8c1e9a7d4e3f8b6a; theme=dark; consent=1\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-User: ?1\r\n\
Priority: u=0, i\r\n\r\n";

/// Valid heads for the whole-table properties.
const VALID: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    CURL,
    BROWSER,
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
];

#[test]
fn valid_table_parses_to_its_full_length() {
    for &input in VALID {
        assert_eq!(
            complete(input).head_len,
            input.len(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_proper_prefix_is_partial() {
    // Goal: no prefix of a valid head is Complete or an error. Method: parse each prefix.
    for &input in VALID {
        for end in 0..input.len() {
            let result = parse(&input[..end]);
            assert_eq!(
                result.map(|status| status.is_partial()),
                Ok(true),
                "{:?}",
                String::from_utf8_lossy(&input[..end])
            );
        }
    }
}

#[test]
fn bytes_after_the_head_are_left_alone() {
    for &input in VALID {
        let mut buf = input.to_vec();
        buf.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(complete(&buf).head_len, input.len());
    }
}

#[test]
fn every_one_byte_corruption_is_an_error() {
    // Goal: a NUL or DEL anywhere in a valid head is rejected, never skipped over or taken
    // as the end of the head. Method: replace each byte in turn.
    for &input in VALID {
        for index in 0..input.len() {
            for bad in [0x00, 0x7f] {
                let mut broken = input.to_vec();
                broken[index] = bad;
                let result = parse(&broken);
                assert!(
                    result.is_err(),
                    "{:?} at {index}: {result:?}",
                    String::from_utf8_lossy(&broken)
                );
            }
        }
    }
}

/// `(input, error)`: the input must fail with exactly this error, and every prefix must be
/// Partial or the same error.
const ERRORS: &[(&[u8], Error)] = &[
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Error::VersionNotSupported),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Error::VersionNotSupported),
    (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Error::VersionNotSupported),
    (b"GET / HTTP/3.0\n\n", Error::VersionNotSupported),
    (b"GET / http/1.1\r\nHost: a\r\n\r\n", Error::BadRequestLine),
    (b"GET / HTTP/2.0 \r\nHost: a\r\n\r\n", Error::BadRequestLine),
    (b"GET / HTTP/22.0\r\nHost: a\r\n\r\n", Error::BadRequestLine),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Error::BadRequestLine),
    (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", Error::BadRequestLine),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadRequestLine),
    (b"GET /\r\n\r\n", Error::BadRequestLine),
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadRequestLine),
    (b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadRequestLine),
    (b"GET / HTTP/1.1\rHost: a\r\n\r\n", Error::BadRequestLine),
    (b"\rGET / HTTP/1.1\r\n\r\n", Error::BadRequestLine),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Error::BadHeaderField),
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", Error::BadHeaderField),
    (b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", Error::BadHeaderField),
    (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", Error::BadHeaderField),
    (b"GET / HTTP/1.1\r\n: a\r\n\r\n", Error::BadHeaderField),
    (b"GET / HTTP/1.1\r\n\r\r\n", Error::BadHeaderField),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Error::UnsupportedTransferCoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Error::UnsupportedTransferCoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", Error::UnsupportedTransferCoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", Error::UnsupportedTransferCoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Error::BadTransferEncoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Error::BadTransferEncoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Error::BadTransferEncoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", Error::BadTransferEncoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Error::TransferEncodingWithContentLength),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Error::TransferEncodingWithContentLength),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Error::TransferEncodingInHttp10),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Error::TransferEncodingInHttp10),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", Error::BadContentLength),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Error::BadContentLength),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Error::BadContentLength),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", Error::BadContentLength),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", Error::BadContentLength),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Error::BadContentLength),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", Error::BadContentLength),
    (b"GET / HTTP/1.1\r\n\r\n", Error::MissingHost),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Error::BadHost),
    (b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", Error::BadHost),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Error::BadHost),
    (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", Error::BadHost),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Error::BadHost),
    (b"GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", Error::BadHost),
];

#[test]
fn error_table() {
    for &(input, expected) in ERRORS {
        let name = String::from_utf8_lossy(input);
        assert_eq!(parse(input).map(|_| ()), Err(expected), "{name:?}");
        // Split points: each prefix is Partial or already the same error.
        for end in 0..input.len() {
            match parse(&input[..end]) {
                Ok(Status::Partial) => {}
                Err(error) if error == expected => {}
                other => panic!("{name:?} prefix {end}: {:?}", other.map(|_| ())),
            }
        }
    }
}

#[test]
fn statuses_of_request_errors() {
    let cases = [
        (Error::BadRequestLine, 400),
        (Error::BadHeaderField, 400),
        (Error::TooManyHeaders, 431),
        (Error::HeadTooLarge, 431),
        (Error::UriTooLong, 414),
        (Error::VersionNotSupported, 505),
        (Error::UnsupportedTransferCoding, 501),
        (Error::BadTransferEncoding, 400),
        (Error::TransferEncodingInHttp10, 400),
        (Error::TransferEncodingWithContentLength, 400),
        (Error::BadContentLength, 400),
        (Error::MissingHost, 400),
        (Error::BadHost, 400),
        (Error::BadChunkSize, 400),
        (Error::BadChunkExtension, 400),
        (Error::BadChunkFraming, 400),
        (Error::BadTrailer, 400),
        (Error::TrailerTooLarge, 431),
        (Error::BodyTooLarge, 413),
        (Error::BadResponse, 502),
    ];
    for (error, code) in cases {
        assert_eq!(error.status().0, code, "{error:?}");
        assert!(!error.description().is_empty());
        assert_eq!(error.to_string(), error.description());
    }
}

fn request_with_headers(count: usize) -> Vec<u8> {
    let mut input = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for index in 1..count {
        input.extend_from_slice(format!("X-{index}: v\r\n").as_bytes());
    }
    input.extend_from_slice(b"\r\n");
    input
}

#[test]
fn header_count_limit() {
    assert_eq!(
        complete(&request_with_headers(HEADERS_MAX)).headers.len(),
        HEADERS_MAX
    );
    let too_many = request_with_headers(HEADERS_MAX + 1);
    assert_eq!(parse(&too_many).map(|_| ()), Err(Error::TooManyHeaders));
    // A bigger caller array does not raise the limit.
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX * 2];
    assert_eq!(
        parse_request(&too_many, &mut headers).map(|_| ()),
        Err(Error::TooManyHeaders)
    );
    // A smaller one lowers it.
    let mut headers = [httparse::EMPTY_HEADER; 4];
    assert_eq!(
        parse_request(&request_with_headers(5), &mut headers).map(|_| ()),
        Err(Error::TooManyHeaders)
    );
}

fn request_with_target(target_len: usize) -> Vec<u8> {
    let mut input = b"GET /".to_vec();
    input.resize(4 + target_len, b'a');
    input.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    input
}

#[test]
fn target_length_limit() {
    assert_eq!(
        complete(&request_with_target(URI_BYTES_MAX)).target.len(),
        URI_BYTES_MAX
    );
    let too_long = request_with_target(URI_BYTES_MAX + 1);
    assert_eq!(parse(&too_long).map(|_| ()), Err(Error::UriTooLong));
    // Known before the request line ends: 414 as soon as the target passes the limit.
    assert_eq!(
        parse(&too_long[..URI_BYTES_MAX + 5]).map(|_| ()),
        Err(Error::UriTooLong)
    );
    assert_eq!(parse(&too_long[..URI_BYTES_MAX + 4]).map(|_| ()), Ok(()));
    // 414 wins over errors further on, as it does for every prefix that shows it.
    let mut bad_header = too_long.clone();
    let value_index = bad_header.len() - 5;
    bad_header[value_index] = 0;
    assert_eq!(parse(&bad_header).map(|_| ()), Err(Error::UriTooLong));
    let mut bad_version = request_with_target(URI_BYTES_MAX + 1);
    let version_index = URI_BYTES_MAX + 1 + 4 + 6;
    assert_eq!(bad_version[version_index], b'1');
    bad_version[version_index] = b'2';
    assert_eq!(parse(&bad_version).map(|_| ()), Err(Error::UriTooLong));
    // A target longer than the whole head limit is still 414, not 431.
    let huge = request_with_target(HEAD_BYTES_MAX_DEFAULT * 2);
    assert_eq!(parse(&huge).map(|_| ()), Err(Error::UriTooLong));
}

#[test]
fn head_size_limit() {
    // Goal: the limit counts every head byte, the final CRLFCRLF included. Method: a head
    // of exactly N bytes passes with limit N and fails with N - 1, complete or not.
    let input = request_with_headers(10);
    let mut headers = header_array();
    let request = parse_request_limited(&input, &mut headers, input.len());
    assert!(matches!(request, Ok(Status::Complete(_))));
    for limit in [1, 16, input.len() - 1] {
        let mut headers = header_array();
        let result = parse_request_limited(&input, &mut headers, limit).map(|_| ());
        assert_eq!(result, Err(Error::HeadTooLarge), "limit {limit}");
        // Below the limit a prefix is only Partial.
        let mut headers = header_array();
        let result = parse_request_limited(&input[..limit - 1], &mut headers, limit);
        assert_eq!(
            result.map(|status| status.is_partial()),
            Ok(true),
            "limit {limit}"
        );
    }
    // Endless empty lines before a request cannot get past the limit either.
    let blank = vec![b'\n'; HEAD_BYTES_MAX_DEFAULT];
    assert_eq!(parse(&blank).map(|_| ()), Err(Error::HeadTooLarge));
}
