//! Fuzz permessage-deflate. Input: a seed byte, a header length byte, that many bytes of
//! `Sec-WebSocket-Extensions` values (split into fields at `\n`), then a payload. Every input
//! runs:
//! - `negotiate` under three configs: an answer's windows are in range, and its response,
//!   read back as an offer, is accepted (with the same parameters when the server asks for
//!   nothing of its own);
//! - the payload as one compressed message, fed whole with no output bound and in
//!   seed-chosen pieces with a seed-chosen output bound: the outcomes must be identical, no
//!   message may exceed the limit, and no call may write or reserve past its bound;
//! - the payload as plain data through a `Compressor` (seed-chosen window, level, memory
//!   level, takeover and what it keeps, pieces and flushes) twice: a strict inflater with exactly the agreed
//!   window, and the `Decompressor`, both give the payload back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zlib_rs::{Inflate, InflateFlush};
use zring::proto::ws_deflate::{
    negotiate, Compressor, Config, DecompressError, Decompressor, Params, TakeoverMemory, TRAILER,
};

fuzz_target!(|input: &[u8]| {
    let Some((&seed, rest)) = input.split_first() else {
        return;
    };
    let Some((&header_length, rest)) = rest.split_first() else {
        return;
    };
    let (header, payload) = rest.split_at(usize::from(header_length).min(rest.len()));
    negotiation(header);
    decompression(seed, payload);
    round_trip(seed, payload);
});

const PLAIN: Config = Config {
    server_no_context_takeover: false,
    client_no_context_takeover: false,
    server_max_window_bits: 15,
    client_max_window_bits: 15,
    compression_level: 6,
    memory_level: 8,
    server_takeover_memory: TakeoverMemory::State,
};

const SMALL: Config = Config {
    server_no_context_takeover: true,
    client_no_context_takeover: false,
    server_max_window_bits: 9,
    client_max_window_bits: 10,
    compression_level: 1,
    memory_level: 1,
    server_takeover_memory: TakeoverMemory::Window,
};

fn negotiation(header: &[u8]) {
    for config in [PLAIN, Config::default(), SMALL] {
        let fields = header.split(|&byte| byte == b'\n');
        let Some(params) = negotiate(&config, fields) else {
            continue;
        };
        assert!((8..=15).contains(&params.server_window_bits()));
        assert!((8..=15).contains(&params.client_window_bits()));
        assert!(params.server_window_bits() <= config.server_max_window_bits);
        let mut response = Vec::new();
        params.encode_response(&mut response);
        assert!(response.starts_with(b"permessage-deflate"));
        let again = negotiate(&config, [response.as_slice()]).expect("a response is an offer");
        if config == PLAIN {
            assert_eq!(again, params, "{}", String::from_utf8_lossy(&response));
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    output: Vec<u8>,
    error: Option<DecompressError>,
}

/// Feeds one message as `pieces`, `fin` on the last, writing each call's output into a
/// fresh vector to check that its capacity stays within the call's bound.
fn feed(decompressor: &mut Decompressor, pieces: &[&[u8]], bound: usize, limit: u64) -> Outcome {
    let mut output = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        let fin = index + 1 == pieces.len();
        let mut rest: &[u8] = piece;
        loop {
            let mut out = Vec::new();
            let inflated = match decompressor.decompress(rest, fin, &mut out, bound) {
                Ok(inflated) => inflated,
                Err(error) => {
                    assert!(out.is_empty() || out.len() <= bound);
                    output.extend_from_slice(&out);
                    assert!(output.len() as u64 <= limit);
                    return Outcome {
                        // Output before an error depends on the bound; the error does not.
                        output: Vec::new(),
                        error: Some(error),
                    };
                }
            };
            assert_eq!(out.len(), inflated.produced);
            assert!(out.len() <= bound);
            assert!(out.capacity() as u64 <= limit.min(bound as u64));
            output.extend_from_slice(&out);
            assert!(output.len() as u64 <= limit);
            rest = &rest[inflated.consumed..];
            if inflated.done {
                assert!(fin && rest.is_empty());
                return Outcome {
                    output,
                    error: None,
                };
            }
            if rest.is_empty() && !inflated.output_full {
                assert!(!fin, "a fin piece fed whole ends the message");
                break;
            }
            assert!(inflated.consumed > 0 || inflated.produced > 0);
        }
    }
    unreachable!("the last piece has fin");
}

fn params(context_takeover: bool, server_window_bits: u8) -> Params {
    Params {
        server_no_context_takeover: !context_takeover,
        client_no_context_takeover: !context_takeover,
        server_max_window_bits: Some(server_window_bits),
        client_max_window_bits: None,
    }
}

fn decompression(seed: u8, payload: &[u8]) {
    let params = params(seed & 1 != 0, 15);
    let limit = [0, 1, 100, 4096, 1 << 20][usize::from(seed >> 1) % 5];
    let bound = [1, 7, 64, 4096, usize::MAX][usize::from(seed >> 4) % 5];
    let whole = feed(
        &mut Decompressor::new(&params, limit),
        &[payload],
        usize::MAX,
        limit,
    );
    let step = usize::from(seed % 13) + 1;
    let mut pieces: Vec<&[u8]> = payload.chunks(step).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let split = feed(
        &mut Decompressor::new(&params, limit),
        &pieces,
        bound,
        limit,
    );
    assert_eq!(whole, split, "step {step} bound {bound} limit {limit}");
}

fn round_trip(seed: u8, payload: &[u8]) {
    let window_bits = 8 + (seed % 8);
    let context_takeover = seed & 0x08 != 0;
    let config = Config {
        compression_level: 1 + (seed >> 4) % 9,
        memory_level: 1 + (seed >> 1) % 9,
        server_takeover_memory: if seed & 0x20 != 0 {
            TakeoverMemory::State
        } else {
            TakeoverMemory::Window
        },
        ..Config::default()
    };
    let params = params(context_takeover, window_bits);
    let mut compressor = Compressor::new(&params, &config);
    let mut decompressor = Decompressor::new(&params, payload.len() as u64);
    let mut reference = Inflate::new(false, window_bits);
    let step = usize::from(seed) * 7 + 1;
    for round in 0..2 {
        let mut compressed = Vec::new();
        let mut pieces: Vec<&[u8]> = payload.chunks(step).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        for (index, piece) in pieces.iter().enumerate() {
            let fin = index + 1 == pieces.len();
            compressor.compress(piece, fin, &mut compressed);
            if !fin && (index + round) % 3 == 0 {
                compressor.flush(&mut compressed);
            }
        }
        // The strict reference: exactly the agreed window.
        if !context_takeover {
            reference = Inflate::new(false, window_bits);
        }
        let mut data = compressed.clone();
        data.extend_from_slice(&TRAILER);
        let mut plain = vec![0; payload.len() + 64];
        let out_before = reference.total_out();
        reference
            .decompress(&data, &mut plain, InflateFlush::SyncFlush)
            .expect("valid within the agreed window");
        plain.truncate((reference.total_out() - out_before) as usize);
        assert_eq!(plain, payload);
        let outcome = feed(
            &mut decompressor,
            &[&compressed],
            usize::MAX,
            payload.len() as u64,
        );
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.output, payload);
    }
}
