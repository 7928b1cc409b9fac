//! Fuzz the WebSocket opening handshake. Input: one seed byte, then header lines
//! `name:value` separated by `\n`. The seed picks the method and version. Every input runs:
//! - `validate_request`, checking an accepted handshake against its key and headers;
//! - `encode_accept` with the lines as the handler's headers: whatever is written must parse
//!   as one 101 response with exactly one of each WebSocket field zring owns;
//! - `encode_rejection` for any error: it must parse as the error's status, and a 426 must
//!   name version 13.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::proto::http1::Version;
use zring::proto::ws::{encode_accept, encode_rejection, validate_request, AcceptKey, KEY_BYTES};

fuzz_target!(|input: &[u8]| {
    let Some((&seed, payload)) = input.split_first() else {
        return;
    };
    let headers: Vec<(&[u8], &[u8])> = payload
        .split(|&byte| byte == b'\n')
        .take(80)
        .map(|line| {
            let colon = line.iter().position(|&byte| byte == b':').unwrap_or(line.len());
            let (name, value) = line.split_at(colon);
            (name, value.get(1..).unwrap_or_default())
        })
        .collect();
    let method: &[u8] = if seed & 1 == 0 { b"GET" } else { b"POST" };
    let version = if seed & 2 == 0 { Version::Http11 } else { Version::Http10 };
    match validate_request(method, version, &headers) {
        Ok(handshake) => {
            assert_eq!(method, b"GET");
            assert_eq!(version, Version::Http11);
            assert_eq!(handshake.key.len(), KEY_BYTES);
            assert_eq!(handshake.accept, AcceptKey::from_key(handshake.key));
            for protocol in handshake.protocols() {
                assert!(!protocol.is_empty() && !protocol.contains(&b','));
            }
            assert!(handshake.extensions().count() <= headers.len());
            accept(seed, &handshake.accept, &headers);
        }
        Err(error) => reject(version, error),
    }
    accept(seed, &AcceptKey::from_key(payload), &headers);
});

fn parse(out: &[u8]) -> (u16, Vec<(String, Vec<u8>)>, usize) {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut fields);
    let status = response.parse(out).expect("written head parses");
    let httparse::Status::Complete(head_len) = status else {
        panic!("written head is complete");
    };
    let headers = response
        .headers
        .iter()
        .map(|header| (header.name.to_ascii_lowercase(), header.value.to_vec()))
        .collect();
    (response.code.expect("code"), headers, head_len)
}

fn count(headers: &[(String, Vec<u8>)], name: &str) -> usize {
    headers.iter().filter(|(field, _)| field == name).count()
}

fn accept(seed: u8, key: &AcceptKey, headers: &[(&[u8], &[u8])]) {
    let protocol = headers.first().map(|header| header.1).filter(|_| seed & 4 != 0);
    let extensions = headers.get(1).map(|header| header.1).filter(|_| seed & 8 != 0);
    let mut out = Vec::new();
    if encode_accept(&mut out, key, protocol, extensions, headers).is_err() {
        assert!(out.is_empty());
        return;
    }
    let (code, fields, head_len) = parse(&out);
    assert_eq!(code, 101);
    assert_eq!(head_len, out.len());
    for (name, expected) in [("upgrade", 1), ("sec-websocket-accept", 1)] {
        assert_eq!(count(&fields, name), expected, "{name}");
    }
    assert_eq!(count(&fields, "connection"), 1);
    assert_eq!(count(&fields, "content-length"), 0);
    assert_eq!(count(&fields, "transfer-encoding"), 0);
    assert_eq!(count(&fields, "sec-websocket-extensions"), usize::from(extensions.is_some()));
    if protocol.is_some() {
        assert_eq!(count(&fields, "sec-websocket-protocol"), 1);
    }
    let accept = fields.iter().find(|(name, _)| name == "sec-websocket-accept").unwrap();
    assert_eq!(accept.1, key.as_bytes());
}

fn reject(version: Version, error: zring::proto::ws::HandshakeError) {
    let mut out = Vec::new();
    encode_rejection(&mut out, version, error);
    let (code, fields, head_len) = parse(&out);
    assert_eq!(code, error.status().0);
    let body = &out[head_len..];
    assert_eq!(body, format!("{}\n", error.description()).as_bytes());
    let length = fields.iter().find(|(name, _)| name == "content-length").unwrap();
    assert_eq!(length.1, body.len().to_string().as_bytes());
    let versions = count(&fields, "sec-websocket-version");
    assert_eq!(versions, usize::from(code == 426));
}
