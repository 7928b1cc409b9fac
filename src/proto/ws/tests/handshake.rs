//! The opening handshake: the RFC's accept example, each rejection and the answer it
//! gets, offered subprotocols and extensions, and the exact bytes of the 101 and refusals.

use crate::proto::http1::{self, Version};
use crate::proto::ws::{
    encode_accept, encode_rejection, validate_request, AcceptKey, HandshakeError,
};

/// RFC 6455 §1.3 and §4.2.2: the sample nonce and its accept value.
const SAMPLE_KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// What a browser sends (Firefox, trimmed), in its order and case.
const BROWSER: &[(&[u8], &[u8])] = &[
    (b"Host", b"server.example.com"),
    (b"User-Agent", b"Mozilla/5.0"),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Origin", b"http://example.com"),
    (b"Sec-WebSocket-Protocol", b"chat, superchat"),
    (
        b"Sec-WebSocket-Extensions",
        b"permessage-deflate; client_max_window_bits",
    ),
    (b"Sec-WebSocket-Key", SAMPLE_KEY),
    (b"Connection", b"keep-alive, Upgrade"),
    (b"Upgrade", b"websocket"),
];

type Headers = Vec<(&'static [u8], &'static [u8])>;

/// `BROWSER` with the field `name` removed and `extra` fields added.
fn with(name: &[u8], extra: &[(&'static [u8], &'static [u8])]) -> Headers {
    let mut headers: Vec<(&[u8], &[u8])> = BROWSER
        .iter()
        .copied()
        .filter(|(field, _)| !field.eq_ignore_ascii_case(name))
        .collect();
    headers.extend_from_slice(extra);
    headers
}

#[test]
fn accept_key_of_the_rfc_sample() {
    assert_eq!(AcceptKey::from_key(SAMPLE_KEY).as_bytes(), SAMPLE_ACCEPT);
    // Another vector: the key is hashed as sent, so a different key differs.
    assert_ne!(
        AcceptKey::from_key(b"AQIDBAUGBwgJCgsMDQ4PEA==").as_bytes(),
        SAMPLE_ACCEPT
    );
    assert_eq!(
        format!("{:?}", AcceptKey::from_key(SAMPLE_KEY)),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn accepts_a_browser_request() {
    let handshake = validate_request(b"GET", Version::Http11, BROWSER).unwrap();
    assert_eq!(handshake.accept.as_bytes(), SAMPLE_ACCEPT);
    assert_eq!(handshake.key, SAMPLE_KEY);
    let protocols: Vec<&[u8]> = handshake.protocols().collect();
    assert_eq!(protocols, [&b"chat"[..], b"superchat"]);
    let extensions: Vec<&[u8]> = handshake.extensions().collect();
    assert_eq!(
        extensions,
        [&b"permessage-deflate; client_max_window_bits"[..]]
    );
}

/// Tokens are case-insensitive list members; fields may repeat; names match in any case.
#[test]
fn accepts_variants() {
    let variants: [&[(&[u8], &[u8])]; 5] = [
        &[
            (b"upgrade", b"WebSocket"),
            (b"connection", b"UPGRADE"),
            (b"sec-websocket-key", SAMPLE_KEY),
            (b"sec-websocket-version", b"13"),
        ],
        &[
            (b"Upgrade", b"h2c, websocket"),
            (b"Connection", b"keep-alive"),
            (b"Connection", b"upgrade"),
            (b"Sec-WebSocket-Key", SAMPLE_KEY),
            (b"Sec-WebSocket-Version", b"13"),
        ],
        &[
            (b"Upgrade", b" websocket ,"),
            (b"Connection", b",Upgrade,"),
            (b"Sec-WebSocket-Key", b" dGhlIHNhbXBsZSBub25jZQ== "),
            (b"Sec-WebSocket-Version", b" 13"),
        ],
        &[
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", SAMPLE_KEY),
            (b"Sec-WebSocket-Version", b"13"),
            (b"Sec-WebSocket-Protocol", b"a"),
            (b"Sec-WebSocket-Protocol", b" b ,, c"),
        ],
        BROWSER,
    ];
    for headers in variants {
        let handshake = validate_request(b"GET", Version::Http11, headers).unwrap();
        assert_eq!(handshake.accept.as_bytes(), SAMPLE_ACCEPT, "{headers:?}");
    }
    let handshake = validate_request(b"GET", Version::Http11, variants[3]).unwrap();
    let protocols: Vec<&[u8]> = handshake.protocols().collect();
    assert_eq!(protocols, [&b"a"[..], b"b", b"c"]);
    assert_eq!(handshake.extensions().count(), 0);
}

/// Each fault, the error it gives, and the HTTP answer.
#[test]
fn rejections() {
    type Case = (
        &'static str,
        &'static [u8],
        Version,
        Headers,
        HandshakeError,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            b"POST",
            Version::Http11,
            BROWSER.to_vec(),
            HandshakeError::MethodNotGet,
        ),
        (
            "lower-case get",
            b"get",
            Version::Http11,
            BROWSER.to_vec(),
            HandshakeError::MethodNotGet,
        ),
        (
            "HTTP/1.0",
            b"GET",
            Version::Http10,
            BROWSER.to_vec(),
            HandshakeError::VersionNotHttp11,
        ),
        (
            "no Upgrade",
            b"GET",
            Version::Http11,
            with(b"upgrade", &[]),
            HandshakeError::MissingUpgrade,
        ),
        (
            "Upgrade: h2c",
            b"GET",
            Version::Http11,
            with(b"upgrade", &[(b"Upgrade", b"h2c")]),
            HandshakeError::MissingUpgrade,
        ),
        (
            "Upgrade: websocket2",
            b"GET",
            Version::Http11,
            with(b"upgrade", &[(b"Upgrade", b"websocket2")]),
            HandshakeError::MissingUpgrade,
        ),
        (
            "no Connection",
            b"GET",
            Version::Http11,
            with(b"connection", &[]),
            HandshakeError::MissingConnectionUpgrade,
        ),
        (
            "Connection: keep-alive",
            b"GET",
            Version::Http11,
            with(b"connection", &[(b"Connection", b"keep-alive")]),
            HandshakeError::MissingConnectionUpgrade,
        ),
        (
            "Connection: upgrades",
            b"GET",
            Version::Http11,
            with(b"connection", &[(b"Connection", b"upgrades")]),
            HandshakeError::MissingConnectionUpgrade,
        ),
        (
            "no version",
            b"GET",
            Version::Http11,
            with(b"sec-websocket-version", &[]),
            HandshakeError::UnsupportedVersion,
        ),
        (
            "version 8",
            b"GET",
            Version::Http11,
            with(
                b"sec-websocket-version",
                &[(b"Sec-WebSocket-Version", b"8")],
            ),
            HandshakeError::UnsupportedVersion,
        ),
        (
            "version 13, 8",
            b"GET",
            Version::Http11,
            with(
                b"sec-websocket-version",
                &[(b"Sec-WebSocket-Version", b"13, 8")],
            ),
            HandshakeError::UnsupportedVersion,
        ),
        (
            "two versions",
            b"GET",
            Version::Http11,
            with(b"x", &[(b"Sec-WebSocket-Version", b"13")]),
            HandshakeError::DuplicateVersion,
        ),
        (
            "no key",
            b"GET",
            Version::Http11,
            with(b"sec-websocket-key", &[]),
            HandshakeError::MissingKey,
        ),
        (
            "two keys",
            b"GET",
            Version::Http11,
            with(b"x", &[(b"Sec-WebSocket-Key", SAMPLE_KEY)]),
            HandshakeError::DuplicateKey,
        ),
        (
            "15-byte key",
            b"GET",
            Version::Http11,
            with(
                b"sec-websocket-key",
                &[(b"Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAA")],
            ),
            HandshakeError::BadKey,
        ),
        (
            "17-byte key",
            b"GET",
            Version::Http11,
            with(
                b"sec-websocket-key",
                &[(b"Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAAAAA=")],
            ),
            HandshakeError::BadKey,
        ),
        (
            "key not base64",
            b"GET",
            Version::Http11,
            with(
                b"sec-websocket-key",
                &[(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ!!")],
            ),
            HandshakeError::BadKey,
        ),
        (
            "key non-canonical",
            b"GET",
            Version::Http11,
            with(
                b"sec-websocket-key",
                &[(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZR==")],
            ),
            HandshakeError::BadKey,
        ),
        (
            "key unpadded",
            b"GET",
            Version::Http11,
            with(
                b"sec-websocket-key",
                &[(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ")],
            ),
            HandshakeError::BadKey,
        ),
        (
            "empty key",
            b"GET",
            Version::Http11,
            with(b"sec-websocket-key", &[(b"Sec-WebSocket-Key", b"")]),
            HandshakeError::BadKey,
        ),
    ];
    for (name, method, version, headers, error) in cases {
        assert_eq!(
            validate_request(method, version, &headers).err(),
            Some(error),
            "{name}"
        );
        let expected_code = if error == HandshakeError::UnsupportedVersion {
            426
        } else {
            400
        };
        assert_eq!(error.status().0, expected_code, "{name}");
    }
    // A bad key with a bad version: the version is reported, so the client learns it.
    let headers = with(b"sec-websocket-key", &[]);
    let headers: Vec<_> = headers
        .into_iter()
        .filter(|(name, _)| *name != b"Sec-WebSocket-Version")
        .collect();
    assert_eq!(
        validate_request(b"GET", Version::Http11, &headers).err(),
        Some(HandshakeError::UnsupportedVersion)
    );
}

#[test]
fn rejection_bytes() {
    let mut out = Vec::new();
    encode_rejection(
        &mut out,
        Version::Http11,
        HandshakeError::UnsupportedVersion,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\nContent-Length: 34\r\n\r\nunsupported Sec-WebSocket-Version\n"
    );
    let mut out = Vec::new();
    encode_rejection(&mut out, Version::Http11, HandshakeError::BadKey);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 26\r\n\r\ninvalid Sec-WebSocket-Key\n"
    );
    let mut out = Vec::new();
    encode_rejection(&mut out, Version::Http10, HandshakeError::VersionNotHttp11);
    assert!(out.starts_with(b"HTTP/1.0 400 Bad Request\r\n"));
    assert!(out.ends_with(b"\r\n\r\nWebSocket upgrade requires HTTP/1.1\n"));
}

/// The 101: handler headers in order minus the replaced ones, then zring's own.
#[test]
fn accept_bytes() {
    let accept = AcceptKey::from_key(SAMPLE_KEY);
    let handler: &[(&[u8], &[u8])] = &[
        (b"Server", b"handler/1.0"),
        (b"upgrade", b"h2c"),
        (b"Sec-WebSocket-Protocol", b"chat"),
        (b"CONNECTION", b"close"),
        (b"Sec-WebSocket-Accept", b"forged"),
        (b"Sec-WebSocket-Extensions", b"forged"),
        (b"Content-Length", b"5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Date", b"Mon, 23 Nov 2026 16:47:04 GMT"),
    ];
    let mut out = Vec::new();
    encode_accept(&mut out, &accept, None, None, handler).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nServer: handler/1.0\r\nSec-WebSocket-Protocol: chat\r\nDate: Mon, 23 Nov 2026 16:47:04 GMT\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    // A chosen protocol replaces the handler's; an extension response is appended.
    let mut out = Vec::new();
    encode_accept(
        &mut out,
        &accept,
        Some(b"superchat"),
        Some(b"permessage-deflate"),
        handler,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nServer: handler/1.0\r\nDate: Mon, 23 Nov 2026 16:47:04 GMT\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: superchat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    );
    // The head Condure writes for a handler with no headers (condure-zhttp.md §5.4).
    let mut out = Vec::new();
    encode_accept(&mut out, &accept, None, None, &[]).unwrap();
    assert_eq!(out, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
}

#[test]
fn accept_refuses_bad_handler_headers() {
    let accept = AcceptKey::from_key(SAMPLE_KEY);
    let bad: [&[(&[u8], &[u8])]; 3] = [
        &[(b"X-Evil", b"a\r\nSet-Cookie: x")],
        &[(b"Bad Name", b"x")],
        &[(b"", b"x")],
    ];
    for headers in bad {
        let mut out = b"kept".to_vec();
        assert_eq!(
            encode_accept(&mut out, &accept, None, None, headers),
            Err(http1::Error::BadResponse)
        );
        assert_eq!(out, b"kept", "out is left as it was");
    }
    let mut out = Vec::new();
    assert_eq!(
        encode_accept(&mut out, &accept, Some(b"bad\nprotocol"), None, &[]),
        Err(http1::Error::BadResponse)
    );
    let many = vec![(&b"X-A"[..], &b"1"[..]); http1::HEADERS_MAX + 1];
    assert_eq!(
        encode_accept(&mut out, &accept, None, None, &many),
        Err(http1::Error::BadResponse)
    );
    let enough = vec![(&b"X-A"[..], &b"1"[..]); http1::HEADERS_MAX];
    assert_eq!(
        encode_accept(&mut out, &accept, None, None, &enough),
        Ok(())
    );
}
