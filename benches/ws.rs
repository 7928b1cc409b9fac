//! WebSocket codec throughput: client frames through the frame decoder and the session
//! (small and 64 KiB), server frame encoding, unmasking, and UTF-8 validation of ASCII and
//! multibyte text. Run with `cargo bench --bench ws`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zring::proto::ws::{
    encode_frame, encode_header, unmask, unmask_into, FrameDecoder, Opcode, Session, SessionConfig,
    Utf8Validator,
};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// A zero key leaves the payload as it is but costs the same work: text benches decode the
/// same buffer again and again, and a real key would turn it into garbage on the second pass.
const ZERO_MASK: [u8; 4] = [0; 4];
const SMALL_BYTES: usize = 20;
const LARGE_BYTES: usize = 64 * 1024;

/// A masked client frame.
fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = encode_header(
        first & 0x80 != 0,
        false,
        opcode(first),
        payload.len() as u64,
    )
    .as_bytes()
    .to_vec();
    frame[1] |= 0x80;
    frame.extend_from_slice(&mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    unmask(&mut frame[start..], mask, 0);
    frame
}

fn opcode(first: u8) -> Opcode {
    Opcode::from_bits(first & 0x0f).expect("known opcode")
}

/// Mixed text as chat traffic in several scripts has it: ASCII, Greek, CJK and emoji.
fn multibyte_text(len: usize) -> Vec<u8> {
    let sample = "Hello κόσμε, 你好世界! Ünïcödé 🎉🚀 text: ∑ € ☃ ";
    let mut text = sample.repeat(len / sample.len() + 1);
    let mut cut = len;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.into_bytes()
}

fn ascii_text(len: usize) -> Vec<u8> {
    (0..len).map(|index| b' ' + (index % 95) as u8).collect()
}

/// Decodes `input` to the end with `session`, touching every event.
fn drain(session: &mut Session, input: &mut [u8]) -> usize {
    let mut offset = 0;
    let mut events = 0;
    loop {
        let step = session.decode(&mut input[offset..]).expect("valid stream");
        offset += step.consumed;
        match step.event {
            Some(event) => {
                black_box(&event);
                events += 1;
            }
            None => return events,
        }
    }
}

fn decode_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("ws_decode");
    for (name, len) in [("20B", SMALL_BYTES), ("64KiB", LARGE_BYTES)] {
        let binary = client_frame(0x82, &vec![0xa5; len], MASK);
        group.throughput(Throughput::Bytes(binary.len() as u64));
        group.bench_function(format!("frame_decoder_binary_{name}"), |bencher| {
            let mut decoder = FrameDecoder::new();
            bencher.iter(|| {
                let mut rest = &binary[..];
                loop {
                    let decoded = decoder.decode(rest).expect("valid stream");
                    rest = &rest[decoded.consumed..];
                    match decoded.item {
                        Some(item) => black_box(item),
                        None => break,
                    };
                }
            });
        });
        let mut input = binary.clone();
        group.bench_function(format!("session_binary_{name}"), |bencher| {
            let mut session = Session::new(SessionConfig::default());
            bencher.iter(|| drain(&mut session, black_box(&mut input)));
        });
        let mut text = client_frame(0x81, &multibyte_text(len), ZERO_MASK);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("session_text_multibyte_{name}"), |bencher| {
            let mut session = Session::new(SessionConfig::default());
            bencher.iter(|| drain(&mut session, black_box(&mut text)));
        });
    }
    group.finish();
}

fn encode_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("ws_encode");
    for (name, len) in [("20B", SMALL_BYTES), ("64KiB", LARGE_BYTES)] {
        let payload = vec![b'x'; len];
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("header_{name}"), |bencher| {
            bencher.iter(|| encode_header(true, false, Opcode::Text, black_box(len as u64)));
        });
        group.throughput(Throughput::Bytes(len as u64));
        let mut out = Vec::with_capacity(len + 16);
        group.bench_function(format!("frame_to_vec_{name}"), |bencher| {
            bencher.iter(|| {
                out.clear();
                encode_frame(&mut out, true, false, Opcode::Binary, black_box(&payload));
                out.len()
            });
        });
    }
    group.finish();
}

fn unmask_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("ws_unmask");
    for (name, len) in [("20B", SMALL_BYTES), ("64KiB", LARGE_BYTES)] {
        let source = vec![0x5a; len];
        let mut buffer = source.clone();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("in_place_{name}"), |bencher| {
            bencher.iter(|| unmask(black_box(&mut buffer), MASK, 1));
        });
        group.bench_function(format!("into_{name}"), |bencher| {
            bencher.iter(|| unmask_into(black_box(&source), &mut buffer, MASK, 1));
        });
    }
    group.finish();
}

fn utf8_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("ws_utf8");
    for (name, text) in [
        ("ascii_64KiB", ascii_text(LARGE_BYTES)),
        ("multibyte_64KiB", multibyte_text(LARGE_BYTES)),
    ] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("whole_{name}"), |bencher| {
            bencher.iter(|| {
                let mut validator = Utf8Validator::new();
                validator.feed(black_box(&text)).expect("valid");
                validator.is_complete()
            });
        });
        // Pieces of 1500 bytes, as reads of one TCP segment: sequences cut at the edges.
        group.bench_function(format!("pieces_1500_{name}"), |bencher| {
            bencher.iter(|| {
                let mut validator = Utf8Validator::new();
                for piece in black_box(&text).chunks(1500) {
                    validator.feed(piece).expect("valid");
                }
                validator.is_complete()
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared; these numbers are for comparison, not records.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = decode_benches, encode_benches, unmask_benches, utf8_benches
}
criterion_main!(benches);
