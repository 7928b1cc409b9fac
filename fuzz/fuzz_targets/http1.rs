//! Fuzz the HTTP/1 codec. Input: one seed byte, then the payload. Every input runs:
//! - `parse_request` on the payload, checking the invariants of a Complete head and that its
//!   proper prefix is Partial, and agreement with a smaller head limit;
//! - `ChunkedDecoder` on the payload fed whole, in seed-chosen pieces, and byte by byte: the
//!   outcomes must be identical;
//! - a chunked round trip: the payload encoded with `encode_chunk` decodes to itself;
//! - `choose_framing` + `encode_response_head` on headers cut from the payload: whatever is
//!   written must parse back as exactly one response head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::proto::http1::{
    choose_framing, encode_chunk, encode_last_chunk, encode_response_head, parse_request,
    parse_request_limited, ChunkedDecoder, Error, ResponseContext, ResponseHead, Status, Version,
    EMPTY_HEADER, HEADERS_MAX, URI_BYTES_MAX,
};

fuzz_target!(|input: &[u8]| {
    let Some((&seed, payload)) = input.split_first() else {
        return;
    };
    parse(seed, payload);
    chunked_splits(seed, payload);
    chunked_round_trip(seed, payload);
    response(seed, payload);
});

fn parse(seed: u8, payload: &[u8]) {
    let mut headers = [EMPTY_HEADER; HEADERS_MAX];
    let full = parse_request(payload, &mut headers);
    let full_head_len = match full {
        Ok(Status::Complete(request)) => {
            assert!(request.head_len <= payload.len());
            assert!(request.target.len() <= URI_BYTES_MAX);
            assert!(request.headers.len() <= HEADERS_MAX);
            assert!(request.head_len >= 4);
            if request.version == Version::Http10 {
                assert!(!request.expect_continue);
            }
            let mut prefix_headers = [EMPTY_HEADER; HEADERS_MAX];
            let prefix = parse_request(&payload[..request.head_len - 1], &mut prefix_headers);
            assert!(
                matches!(prefix, Ok(Status::Partial)),
                "prefix of a complete head"
            );
            Some(request.head_len)
        }
        Ok(Status::Partial) | Err(_) => None,
    };
    // What a prefix shows is final: its error or its complete head stays the same however
    // the input goes on.
    let prefix_len = usize::from(seed) * payload.len() / 255;
    let mut prefix_headers = [EMPTY_HEADER; HEADERS_MAX];
    match parse_request(&payload[..prefix_len], &mut prefix_headers) {
        Ok(Status::Complete(request)) => assert_eq!(Some(request.head_len), full_head_len),
        Ok(Status::Partial) => {}
        Err(error) => assert_eq!(full.err(), Some(error), "prefix {prefix_len}"),
    }
    // A smaller limit can only turn results into HeadTooLarge or UriTooLong.
    let limit = usize::from(seed) + 1;
    let mut limited_headers = [EMPTY_HEADER; HEADERS_MAX];
    match parse_request_limited(payload, &mut limited_headers, limit) {
        Ok(Status::Complete(request)) => {
            assert!(request.head_len <= limit);
            assert_eq!(Some(request.head_len), full_head_len);
        }
        Ok(Status::Partial) => assert!(payload.len() < limit),
        Err(_) => {}
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    consumed: usize,
    done: bool,
    error: Option<Error>,
}

/// Feeds `pieces` in order, keeping unconsumed bytes, as the connection core does.
fn feed(pieces: &mut dyn Iterator<Item = &[u8]>) -> Outcome {
    let mut decoder = ChunkedDecoder::with_body_limit(1 << 20);
    let mut pending = Vec::new();
    let mut outcome = Outcome {
        data: Vec::new(),
        consumed: 0,
        done: false,
        error: None,
    };
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            let decoded = match decoder.decode(&pending) {
                Ok(decoded) => decoded,
                Err(error) => {
                    // Bytes consumed before an error depend on the split; the error does not.
                    outcome.error = Some(error);
                    outcome.consumed = 0;
                    return outcome;
                }
            };
            assert!(decoded.consumed <= pending.len());
            if let Some(data) = decoded.data {
                assert!(!data.is_empty());
                outcome.data.extend_from_slice(data);
            }
            let (consumed, done) = (decoded.consumed, decoded.done);
            pending.drain(..consumed);
            outcome.consumed += consumed;
            if done {
                outcome.done = true;
                return outcome;
            }
            if consumed == 0 {
                break;
            }
        }
        assert!(pending.is_empty());
    }
    outcome
}

fn chunked_splits(seed: u8, payload: &[u8]) {
    let whole = feed(&mut std::iter::once(payload));
    let step = usize::from(seed % 31) + 1;
    assert_eq!(feed(&mut payload.chunks(step)), whole);
    if payload.len() <= 4096 {
        assert_eq!(feed(&mut payload.chunks(1)), whole);
    }
    let split = usize::from(seed) * payload.len() / 256;
    let (head, tail) = payload.split_at(split);
    assert_eq!(feed(&mut [head, tail].into_iter()), whole);
}

fn chunked_round_trip(seed: u8, payload: &[u8]) {
    let mut body = Vec::new();
    for piece in payload.chunks(usize::from(seed) + 1) {
        encode_chunk(&mut body, piece);
    }
    encode_last_chunk(&mut body);
    let outcome = feed(&mut body.chunks(usize::from(seed % 7) + 1));
    let expected = Outcome {
        data: payload.to_vec(),
        consumed: body.len(),
        done: true,
        error: None,
    };
    assert_eq!(outcome, expected);
}

fn response(seed: u8, payload: &[u8]) {
    let mut headers: Vec<(&[u8], &[u8])> = Vec::new();
    for line in payload.split(|&byte| byte == b'\n').take(HEADERS_MAX) {
        let colon = line
            .iter()
            .position(|&byte| byte == b':')
            .unwrap_or(line.len());
        let (name, value) = line.split_at(colon);
        headers.push((name, value.get(1..).unwrap_or_default()));
    }
    let version = if seed & 1 == 0 {
        Version::Http11
    } else {
        Version::Http10
    };
    let context = ResponseContext {
        version,
        head_request: seed & 2 != 0,
        keep_alive: seed & 4 != 0,
    };
    let code = [200, 101, 204, 304, 103, 404, 999, 0][usize::from(seed >> 5)];
    let Ok(framing) = choose_framing(context, code, &headers, seed & 8 != 0, payload.len() as u64)
    else {
        return;
    };
    let head = ResponseHead {
        version,
        code,
        reason: headers.first().map_or(b"", |header| header.1),
        headers: &headers,
        body: framing.body,
        keep_alive: framing.keep_alive,
    };
    let mut out = Vec::new();
    if encode_response_head(&mut out, &head).is_err() {
        assert!(out.is_empty());
        return;
    }
    let mut parsed_headers = [EMPTY_HEADER; HEADERS_MAX + 8];
    let mut parsed = httparse::Response::new(&mut parsed_headers);
    assert_eq!(
        parsed.parse(&out),
        Ok(httparse::Status::Complete(out.len())),
        "{out:?}"
    );
    assert_eq!(parsed.code, Some(code));
}
