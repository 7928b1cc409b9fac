//! The codecs: RFC 7692 §7.2.3 vectors both ways, round trips with and without context
//! takeover at every window and level, every split of the compressed input, every output
//! bound, empty messages, corrupt input, the message limit and decompression bombs.

use zlib_rs::{Inflate, InflateFlush, Status};

use crate::proto::ws_deflate::{
    Compressor, Config, DecompressError, Decompressor, Params, SharedCompressor, TakeoverMemory,
    TRAILER, WINDOW_BITS_MAX,
};

const MESSAGE_BYTES_MAX: u64 = 1 << 24;

fn params(context_takeover: bool, server_window_bits: u8) -> Params {
    Params {
        server_no_context_takeover: !context_takeover,
        client_no_context_takeover: !context_takeover,
        server_max_window_bits: (server_window_bits < WINDOW_BITS_MAX)
            .then_some(server_window_bits),
        client_max_window_bits: None,
    }
}

fn config(level: u8) -> Config {
    Config {
        compression_level: level,
        ..Config::default()
    }
}

const TAKEOVER_MEMORIES: [TakeoverMemory; 2] = [TakeoverMemory::State, TakeoverMemory::Window];

/// Compresses one message fed as `pieces`, `fin` on the last, into one payload.
fn compress(compressor: &mut Compressor, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let (last, init) = pieces.split_last().expect("at least one piece");
    for piece in init {
        compressor.compress(piece, false, &mut out);
        assert!(compressor.is_in_message());
    }
    compressor.compress(last, true, &mut out);
    assert!(!compressor.is_in_message());
    out
}

/// Decompresses one message fed as `pieces`, `fin` on the last, calling the way the frame
/// layer will: the unconsumed rest again, and again while `output_full`.
fn decompress(
    decompressor: &mut Decompressor,
    pieces: &[&[u8]],
    out_bytes_max: usize,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        let fin = index + 1 == pieces.len();
        let mut rest: &[u8] = piece;
        loop {
            let before = out.len();
            let inflated = decompressor.decompress(rest, fin, &mut out, out_bytes_max)?;
            assert_eq!(out.len() - before, inflated.produced);
            assert!(inflated.produced <= out_bytes_max);
            assert!(!inflated.done || fin, "done only with fin");
            rest = &rest[inflated.consumed..];
            if inflated.done {
                assert!(rest.is_empty());
                assert!(!decompressor.is_in_message());
                return Ok(out);
            }
            if rest.is_empty() && !inflated.output_full {
                assert!(!fin, "a fin piece fed whole ends the message");
                break;
            }
            assert!(inflated.consumed > 0 || inflated.produced > 0, "progress");
        }
        assert!(decompressor.is_in_message());
    }
    panic!("no pieces");
}

fn decompressor(context_takeover: bool) -> Decompressor {
    Decompressor::new(&params(context_takeover, 15), MESSAGE_BYTES_MAX)
}

/// zlib-rs as a strict reference: a raw inflater with exactly `window_bits`, fed each
/// payload plus the trailer, as RFC 7692 §7.2.2 describes.
struct Reference {
    inflate: Inflate,
    context_takeover: bool,
    window_bits: u8,
}

impl Reference {
    fn new(window_bits: u8, context_takeover: bool) -> Self {
        Self {
            inflate: Inflate::new(false, window_bits),
            context_takeover,
            window_bits,
        }
    }

    fn message(&mut self, payload: &[u8], size_hint: usize) -> Vec<u8> {
        if !self.context_takeover {
            self.inflate = Inflate::new(false, self.window_bits);
        }
        let mut data = payload.to_vec();
        data.extend_from_slice(&TRAILER);
        let mut out = vec![0; size_hint + 64];
        let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
        let status = self
            .inflate
            .decompress(&data, &mut out, InflateFlush::SyncFlush)
            .expect("valid within the agreed window");
        assert_eq!(status, Status::Ok);
        assert_eq!(self.inflate.total_in() - in_before, data.len() as u64);
        let made = usize::try_from(self.inflate.total_out() - out_before).unwrap();
        out.truncate(made);
        out
    }
}

/// Deterministic test data: words from a small vocabulary, so that it compresses like text,
/// with numbers that do not repeat.
fn text(length: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 12] = [
        b"\"id\":",
        b"\"name\":",
        b"\"value\":",
        b"\"items\":[",
        b"],",
        b"{",
        b"}",
        b"true,",
        b"\"status\":\"ok\",",
        b"\"updated\":",
        b"null,",
        b" ",
    ];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(length + 32);
    while out.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if state % 5 == 0 {
            out.extend_from_slice((state % 100_000).to_string().as_bytes());
        } else {
            out.extend_from_slice(WORDS[(state % 12) as usize]);
        }
    }
    out.truncate(length);
    out
}

/// Bytes that do not compress.
fn noise(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

// RFC 7692 §7.2.3: payloads of "Hello" (bytes checked against zlib 1.2.13 with Python).
const HELLO: &[u8] = b"Hello";
const HELLO_FIXED: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
const HELLO_AGAIN_SHARED: &[u8] = &[0xf2, 0x00, 0x11, 0x00, 0x00];
const HELLO_STORED: &[u8] = &[
    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
];
const HELLO_BFINAL: &[u8] = &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
const HELLO_TWO_BLOCKS: &[u8] = &[
    0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
];

#[test]
fn rfc7692_vectors_decompress() {
    let cases: &[(&str, &[&[u8]])] = &[
        ("7.2.3.1 one block", &[HELLO_FIXED]),
        (
            "7.2.3.1 fragmented",
            &[&HELLO_FIXED[..3], &HELLO_FIXED[3..]],
        ),
        ("7.2.3.3 stored block", &[HELLO_STORED]),
        ("7.2.3.4 BFINAL", &[HELLO_BFINAL]),
        ("7.2.3.5 two blocks", &[HELLO_TWO_BLOCKS]),
        (
            "7.2.3.6 empty last fragment",
            &[
                &[
                    0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff,
                ],
                &[0x00],
            ],
        ),
    ];
    for context_takeover in [false, true] {
        let mut shared = decompressor(context_takeover);
        for (name, pieces) in cases {
            let mut fresh = decompressor(context_takeover);
            assert_eq!(
                decompress(&mut fresh, pieces, 1 << 20).as_deref(),
                Ok(HELLO),
                "{name}"
            );
            // The same vectors one after another on one connection: every one leaves the
            // stream ready for the next message (BFINAL restarts it).
            assert_eq!(
                decompress(&mut shared, pieces, 1 << 20).as_deref(),
                Ok(HELLO),
                "{name}"
            );
        }
    }
}

#[test]
fn rfc7692_shared_window_decompresses() {
    // §7.2.3.2: the second "Hello" is one back-reference into the first.
    let mut decompressor = decompressor(true);
    assert_eq!(
        decompress(&mut decompressor, &[HELLO_FIXED], 64).as_deref(),
        Ok(HELLO)
    );
    assert!(
        decompressor.holds_state(),
        "context takeover keeps the window"
    );
    assert_eq!(
        decompress(&mut decompressor, &[HELLO_AGAIN_SHARED], 64).as_deref(),
        Ok(HELLO)
    );
    // Without the first message, the back-reference points before the stream.
    let mut fresh = decompressor_without_context();
    assert_eq!(
        decompress(&mut fresh, &[HELLO_AGAIN_SHARED], 64),
        Err(DecompressError::Corrupt)
    );
}

fn decompressor_without_context() -> Decompressor {
    decompressor(false)
}

#[test]
fn rfc7692_vectors_compress() {
    let config = Config {
        server_max_window_bits: 15,
        ..Config::default()
    };
    for memory in TAKEOVER_MEMORIES {
        let config = Config {
            server_takeover_memory: memory,
            ..config
        };
        let mut compressor = Compressor::new(&params(true, 15), &config);
        assert_eq!(compress(&mut compressor, &[HELLO]), HELLO_FIXED);
        assert_eq!(compress(&mut compressor, &[HELLO]), HELLO_AGAIN_SHARED);
        assert_eq!(compressor.holds_state(), memory == TakeoverMemory::State);
        assert_eq!(
            compressor.history_bytes() > 0,
            memory == TakeoverMemory::Window
        );
    }
    let mut compressor = Compressor::new(&params(false, 15), &config);
    assert_eq!(compress(&mut compressor, &[HELLO]), HELLO_FIXED);
    assert!(!compressor.holds_state(), "freed after the message");
    assert_eq!(compress(&mut compressor, &[HELLO]), HELLO_FIXED);
}

#[test]
fn empty_messages() {
    for context_takeover in [false, true] {
        let mut compressor = Compressor::new(&params(context_takeover, 15), &Config::default());
        let mut decompressor = decompressor(context_takeover);
        for _ in 0..3 {
            // §7.2.3.6: an empty message compresses to one byte, 00.
            let payload = compress(&mut compressor, &[b""]);
            assert_eq!(payload, [0x00]);
            assert_eq!(
                decompress(&mut decompressor, &[&payload], 16),
                Ok(Vec::new())
            );
            let payload = compress(&mut compressor, &[HELLO]);
            assert_eq!(
                decompress(&mut decompressor, &[&payload], 16).as_deref(),
                Ok(HELLO)
            );
        }
        // An empty payload is the empty message, and leaves the stream as it was.
        assert_eq!(decompress(&mut decompressor, &[b""], 16), Ok(Vec::new()));
        assert_eq!(
            decompress(&mut decompressor, &[b"", b"", b""], 16),
            Ok(Vec::new())
        );
        let payload = compress(&mut compressor, &[HELLO]);
        assert_eq!(
            decompress(&mut decompressor, &[&payload], 16).as_deref(),
            Ok(HELLO)
        );
    }
}

#[test]
fn flushed_message_ends_with_an_empty_fragment() {
    // §7.2.3.6: when everything was flushed with earlier fragments, the last is 00.
    for context_takeover in [false, true] {
        let mut compressor = Compressor::new(&params(context_takeover, 15), &Config::default());
        let mut first = Vec::new();
        compressor.compress(HELLO, false, &mut first);
        compressor.flush(&mut first);
        assert!(
            first.ends_with(&TRAILER),
            "a flushed fragment keeps its trailer"
        );
        let mut last = Vec::new();
        compressor.compress(b"", true, &mut last);
        assert_eq!(last, [0x00]);
        let mut decompressor = decompressor(context_takeover);
        assert_eq!(
            decompress(&mut decompressor, &[&first, &last], 8).as_deref(),
            Ok(HELLO)
        );
        // The stream goes on normally.
        let payload = compress(&mut compressor, &[HELLO, HELLO]);
        assert_eq!(
            decompress(&mut decompressor, &[&payload], 8),
            Ok(b"HelloHello".to_vec())
        );
    }
}

#[test]
fn flush_between_messages_does_nothing() {
    let mut compressor = Compressor::new(&params(true, 15), &Config::default());
    let mut out = Vec::new();
    compressor.flush(&mut out);
    assert!(out.is_empty());
    assert!(
        !compressor.holds_state(),
        "allocated by the first message, not before"
    );
}

/// Messages for round trips: empty, tiny, text, noise, one long run, and text long enough
/// to reach back across several windows.
fn messages() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"x".to_vec(),
        text(1024, 1),
        text(1024, 1),
        noise(3000, 2),
        vec![b'a'; 100_000],
        text(70_000, 3),
        text(5, 4),
    ]
}

#[test]
fn round_trips_at_every_window_and_level() {
    // Goal: whatever window and level, the receiver decodes every message, and a strict
    // inflater with exactly the agreed window accepts the stream (no distance beyond it).
    let messages = messages();
    let modes = [
        (false, TakeoverMemory::State),
        (true, TakeoverMemory::State),
        (true, TakeoverMemory::Window),
    ];
    for (context_takeover, memory) in modes {
        for window_bits in 8..=15 {
            for level in [1, 6, 9] {
                let params = params(context_takeover, window_bits);
                let config = Config {
                    server_takeover_memory: memory,
                    ..config(level)
                };
                let mut compressor = Compressor::new(&params, &config);
                let mut decompressor = Decompressor::new(&params, MESSAGE_BYTES_MAX);
                let mut reference = Reference::new(window_bits, context_takeover);
                for message in &messages {
                    let payload = compress(&mut compressor, &[message]);
                    let label = format!(
                        "takeover {context_takeover} {memory:?} window {window_bits} level {level} len {}",
                        message.len()
                    );
                    assert_eq!(
                        reference.message(&payload, message.len()),
                        *message,
                        "{label}"
                    );
                    let pieces = [payload.as_slice()];
                    assert_eq!(
                        decompress(&mut decompressor, &pieces, 1 << 20).as_ref(),
                        Ok(message),
                        "{label}"
                    );
                }
            }
        }
    }
}

#[test]
fn shared_compressor_gives_the_bytes_of_a_fresh_compressor_at_every_window() {
    // Goal: the worker's compressor (state reset between messages, one per window size)
    // makes exactly what a connection's own compressor without context takeover makes, so
    // its output can go to any target of that window; a strict inflater with the window
    // decodes it; and it holds one state per window size used, whatever the message count.
    let messages = messages();
    let mut shared = SharedCompressor::default();
    for window_bits in 8..=15 {
        let params = params(false, window_bits);
        let config = config(6);
        let mut own = Compressor::new(&params, &config);
        let mut reference = Reference::new(window_bits, false);
        for message in &messages {
            let mut out = Vec::new();
            shared.compress(&config, window_bits, message, true, &mut out);
            assert_eq!(out, compress(&mut own, &[message]), "window {window_bits}");
            assert_eq!(reference.message(&out, message.len()), *message);
        }
        assert_eq!(shared.states_held(), usize::from(window_bits - 7));
    }
}

#[test]
fn shared_compressor_fragments_continue_one_message() {
    // Goal: fragments compressed independently (each ends with its sync flush, kept) make
    // one payload a single inflater decodes as the whole message; only the last loses its
    // 00 00 ff ff.
    let message = text(5000, 11);
    let mut shared = SharedCompressor::default();
    let config = config(6);
    for cuts in [[1usize, 2], [10, 4000], [2500, 2500], [0, 0]] {
        let (a, rest) = message.split_at(cuts[0]);
        let (b, c) = rest.split_at(cuts[1].min(rest.len()));
        let mut payload = Vec::new();
        for (piece, fin) in [(a, false), (b, false), (c, true)] {
            let start = payload.len();
            shared.compress(&config, 12, piece, fin, &mut payload);
            assert_eq!(payload[start..].ends_with(&TRAILER), !fin);
        }
        let mut decompressor = Decompressor::new(&params(false, 12), MESSAGE_BYTES_MAX);
        let got = decompress(&mut decompressor, &[payload.as_slice()], 1 << 20);
        assert_eq!(got.as_ref(), Ok(&message), "cuts {cuts:?}");
    }
}

#[test]
fn context_takeover_compresses_repeated_messages_better() {
    let message = text(1024, 9);
    let mut sizes = Vec::new();
    let modes = [
        (false, TakeoverMemory::State),
        (true, TakeoverMemory::State),
        (true, TakeoverMemory::Window),
    ];
    for (context_takeover, memory) in modes {
        let config = Config {
            server_takeover_memory: memory,
            ..Config::default()
        };
        let mut compressor = Compressor::new(&params(context_takeover, 15), &config);
        let first = compress(&mut compressor, &[&message]);
        let second = compress(&mut compressor, &[&message]);
        sizes.push((first.len(), second.len()));
    }
    assert_eq!(sizes[0].0, sizes[0].1, "no takeover: the same bytes again");
    assert_eq!(sizes[0].0, sizes[1].0);
    // Four matches of at most 258 bytes each cover the repeat.
    assert!(
        sizes[1].1 < 24,
        "takeover: a few back-references, {sizes:?}"
    );
    assert_eq!(
        sizes[1], sizes[2],
        "the window alone does as well as the state"
    );
}

#[test]
fn compressor_input_split_anywhere_decodes_the_same() {
    let message = text(3000, 5);
    for context_takeover in [false, true] {
        let mut compressor = Compressor::new(&params(context_takeover, 15), &Config::default());
        let mut decompressor = decompressor(context_takeover);
        for split in [0, 1, 7, 1000, 2999, 3000] {
            let (head, tail) = message.split_at(split);
            let mut first = Vec::new();
            compressor.compress(head, false, &mut first);
            if split % 2 == 1 {
                compressor.flush(&mut first);
            }
            let mut last = Vec::new();
            compressor.compress(tail, true, &mut last);
            let result = decompress(&mut decompressor, &[&first, &last], 1 << 16);
            assert_eq!(result.as_ref(), Ok(&message), "split {split}");
        }
        for step in [1, 3, 100] {
            let pieces: Vec<&[u8]> = message.chunks(step).collect();
            let payload = compress(&mut compressor, &pieces);
            assert_eq!(
                decompress(&mut decompressor, &[&payload], 1 << 16).as_ref(),
                Ok(&message)
            );
        }
    }
}

#[test]
fn every_split_of_the_payload_decodes_the_same() {
    // Goal: the output does not depend on where frames split the payload, nor on the output
    // bound. Method: every two-piece split, one-byte pieces, and bounds from 1 byte up.
    let message = text(700, 6);
    let mut compressor = Compressor::new(&params(true, 15), &Config::default());
    let warm = compress(&mut compressor, &[&message]);
    let payload = compress(&mut compressor, &[&message]);
    for split in 0..=payload.len() {
        let (head, tail) = payload.split_at(split);
        let mut decompressor = decompressor(true);
        decompress(&mut decompressor, &[&warm], 1 << 16).unwrap();
        let result = decompress(&mut decompressor, &[head, tail], 1 << 16);
        assert_eq!(result.as_ref(), Ok(&message), "split {split}");
    }
    let bytes: Vec<&[u8]> = payload.chunks(1).collect();
    for out_bytes_max in [1, 2, 7, 255, 700, 701, 1 << 16] {
        let mut decompressor = decompressor(true);
        decompress(&mut decompressor, &[&warm], out_bytes_max).unwrap();
        let result = decompress(&mut decompressor, &bytes, out_bytes_max);
        assert_eq!(result.as_ref(), Ok(&message), "bound {out_bytes_max}");
        let mut decompressor = self::decompressor(true);
        decompress(&mut decompressor, &[&warm], out_bytes_max).unwrap();
        let result = decompress(&mut decompressor, &[&payload], out_bytes_max);
        assert_eq!(
            result.as_ref(),
            Ok(&message),
            "whole, bound {out_bytes_max}"
        );
    }
}

#[test]
fn output_stops_at_the_call_bound_and_resumes() {
    let message = vec![b'z'; 10_000];
    let mut compressor = Compressor::new(&params(false, 15), &Config::default());
    let payload = compress(&mut compressor, &[&message]);
    let mut decompressor = decompressor(false);
    let mut out = Vec::new();
    let first = decompressor
        .decompress(&payload, true, &mut out, 1000)
        .unwrap();
    assert_eq!(first.produced, 1000);
    assert!(first.output_full);
    assert!(!first.done);
    assert!(
        out.capacity() <= 1000,
        "capacity {} beyond the bound",
        out.capacity()
    );
    let mut rest = &payload[first.consumed..];
    let mut calls = 1;
    loop {
        out.clear();
        let next = decompressor.decompress(rest, true, &mut out, 1000).unwrap();
        rest = &rest[next.consumed..];
        calls += 1;
        assert!(next.produced <= 1000);
        if next.done {
            break;
        }
        assert!(next.output_full);
    }
    // Ten full calls, then one that finds nothing more and ends the message: a call that
    // fills its bound cannot know whether output is left without taking it.
    assert_eq!(calls, 11);
}

#[test]
fn message_limit_is_exact() {
    let message = text(5000, 7);
    let mut compressor = Compressor::new(&params(false, 15), &Config::default());
    let payload = compress(&mut compressor, &[&message]);
    for out_bytes_max in [1, 100, 5000, 1 << 20] {
        let mut at_limit = Decompressor::new(&params(false, 15), 5000);
        let result = decompress(&mut at_limit, &[&payload], out_bytes_max);
        assert_eq!(result.as_ref(), Ok(&message), "bound {out_bytes_max}");
        let mut below = Decompressor::new(&params(false, 15), 4999);
        let result = decompress(&mut below, &[&payload], out_bytes_max);
        assert_eq!(
            result,
            Err(DecompressError::MessageTooLarge),
            "bound {out_bytes_max}"
        );
        assert_eq!(result.unwrap_err().close_code(), 1009);
    }
    // The limit is per message: many messages below it pass.
    let mut decompressor = Decompressor::new(&params(true, 15), 5000);
    let mut compressor = Compressor::new(&params(true, 15), &Config::default());
    for _ in 0..5 {
        let payload = compress(&mut compressor, &[&message]);
        assert_eq!(
            decompress(&mut decompressor, &[&payload], 1 << 20).as_ref(),
            Ok(&message)
        );
    }
}

#[test]
fn decompression_bomb_stops_at_the_limit_without_allocating_past_it() {
    // 16 MiB of zeros compress to ~16 KiB; the limit is 1 MiB.
    let bomb_message = vec![0u8; 16 << 20];
    let mut compressor = Compressor::new(&params(false, 15), &config(9));
    let payload = compress(&mut compressor, &[&bomb_message]);
    assert!(payload.len() < 32 << 10, "{} bytes", payload.len());
    let limit = 1 << 20;
    for pieces in [vec![payload.as_slice()], payload.chunks(1000).collect()] {
        let mut decompressor = Decompressor::new(&params(false, 15), limit as u64);
        let mut out = Vec::new();
        let mut result = Ok(());
        for (index, piece) in pieces.iter().enumerate() {
            let fin = index + 1 == pieces.len();
            match decompressor.decompress(piece, fin, &mut out, usize::MAX) {
                Ok(inflated) => assert_eq!(inflated.consumed, piece.len()),
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        assert_eq!(result, Err(DecompressError::MessageTooLarge));
        assert!(out.len() <= limit);
        assert!(out.capacity() <= limit, "capacity {}", out.capacity());
        assert!(!decompressor.holds_state(), "freed on error");
        // Sticky.
        let again = decompressor.decompress(&[0x00], true, &mut out, 10);
        assert_eq!(again, Err(DecompressError::MessageTooLarge));
    }
}

#[test]
fn the_limit_breaks_before_corrupt_data_that_follows() {
    // Found by fuzzing: zlib can write a byte and then fail on the bytes after it in one
    // call. Fixed Huffman "\x7f" "P", then a stored block whose lengths do not match.
    let payload = [0xaa, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    for pieces in [vec![&payload[..]], payload.chunks(2).collect()] {
        let mut one = Decompressor::new(&params(false, 15), 1);
        let result = decompress(&mut one, &pieces, 1 << 16);
        assert_eq!(result, Err(DecompressError::MessageTooLarge), "{pieces:?}");
        let mut two = Decompressor::new(&params(false, 15), 2);
        let result = decompress(&mut two, &pieces, 1 << 16);
        assert_eq!(result, Err(DecompressError::Corrupt), "{pieces:?}");
    }
}

#[test]
fn corrupt_input_fails_and_stays_failed() {
    let cases: &[(&str, &[u8])] = &[
        ("reserved block type 11", &[0xff, 0xff, 0xff]),
        ("stored length check", &[0x00, 0x05, 0x00, 0x00, 0x00, b'H']),
        ("distance before the stream", HELLO_AGAIN_SHARED),
        ("bad dynamic table", &[0x04, 0x00, 0xfe, 0xff]),
    ];
    for (name, payload) in cases {
        let mut decompressor = decompressor_without_context();
        let result = decompress(&mut decompressor, &[payload], 1 << 16);
        assert_eq!(result, Err(DecompressError::Corrupt), "{name}");
        assert_eq!(DecompressError::Corrupt.close_code(), 1002);
        let mut out = Vec::new();
        let again = decompressor.decompress(HELLO_FIXED, true, &mut out, 100);
        assert_eq!(again, Err(DecompressError::Corrupt), "{name}: sticky");
        assert!(out.is_empty());
    }
}

#[test]
fn states_are_allocated_lazily_and_freed_without_context_takeover() {
    let modes = [
        (false, TakeoverMemory::State),
        (false, TakeoverMemory::Window),
        (true, TakeoverMemory::State),
        (true, TakeoverMemory::Window),
    ];
    for (context_takeover, memory) in modes {
        let params = params(context_takeover, 12);
        let config = Config {
            server_takeover_memory: memory,
            ..Config::default()
        };
        let mut compressor = Compressor::new(&params, &config);
        let mut decompressor = Decompressor::new(&params, MESSAGE_BYTES_MAX);
        assert!(!compressor.holds_state());
        assert!(!decompressor.holds_state());
        let mut out = Vec::new();
        compressor.compress(b"part", false, &mut out);
        assert!(
            compressor.holds_state(),
            "held while a message is under way"
        );
        compressor.compress(b"end", true, &mut out);
        let keeps_window = context_takeover && memory == TakeoverMemory::Window;
        assert_eq!(
            compressor.holds_state(),
            context_takeover && memory == TakeoverMemory::State
        );
        assert_eq!(
            compressor.history_bytes(),
            if keeps_window { 1 << 12 } else { 0 }
        );
        let mut plain = Vec::new();
        let first = decompressor
            .decompress(&out[..2], false, &mut plain, 100)
            .unwrap();
        assert!(!first.done);
        assert!(decompressor.holds_state());
        let last = decompressor
            .decompress(&out[2..], true, &mut plain, 100)
            .unwrap();
        assert!(last.done);
        assert_eq!(plain, b"partend");
        assert_eq!(decompressor.holds_state(), context_takeover);
    }
}

#[test]
fn window_history_keeps_the_last_window_of_every_message() {
    // Goal: with TakeoverMemory::Window the dictionary is the receiver's window, whatever
    // the sizes of the messages and pieces. Method: messages shorter and longer than the
    // window, fed in pieces of many sizes, each decoded by a strict 9-bit reference.
    let params = params(true, 9);
    let config = Config {
        server_max_window_bits: 9,
        ..Config::default()
    };
    let mut compressor = Compressor::new(&params, &config);
    let mut reference = Reference::new(9, true);
    for (index, length) in [10, 300, 511, 512, 513, 5000, 3, 0, 700]
        .into_iter()
        .enumerate()
    {
        let message = text(length, index as u64 + 20);
        let pieces: Vec<&[u8]> = message.chunks(97 + index).collect();
        let pieces = if pieces.is_empty() {
            vec![&[][..]]
        } else {
            pieces
        };
        let payload = compress(&mut compressor, &pieces);
        assert_eq!(
            reference.message(&payload, length),
            message,
            "message {index}"
        );
        assert!(compressor.history_bytes() <= 512);
    }
}
