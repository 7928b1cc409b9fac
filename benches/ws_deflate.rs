//! permessage-deflate throughput on a stream of similar messages: compress and decompress
//! 1 KiB JSON-like messages and 64 KiB text messages, with and without context takeover,
//! at the default config (window 12, memory level 5, level 6), plus level 1 for compressing
//! 1 KiB. Throughput counts uncompressed bytes. Compression runs in three modes: no context
//! takeover (every message allocates and frees its state), takeover keeping the state, and
//! takeover keeping only the window (every message allocates a state and loads the window).
//! Run with `cargo bench --bench ws_deflate`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use zring::proto::ws_deflate::{
    Compressor, Config, Decompressor, Params, SharedCompressor, TakeoverMemory,
    SERVER_WINDOW_BITS_DEFAULT,
};

/// Makes the message with the given index.
type MakeMessage = fn(usize) -> Vec<u8>;

/// Distinct messages cycled through, so that with context takeover each message finds its
/// predecessors in the window but never itself.
const MESSAGES: usize = 64;

/// A JSON message of about 1 KiB, as a handler pushes them: the same keys every time,
/// different numbers and names.
fn json_message(index: usize) -> Vec<u8> {
    let mut message = format!(
        r#"{{"type":"update","seq":{},"channel":"prices/eu-west","user":{{"id":{},"name":"user-{}","roles":["reader","trader"]}},"items":["#,
        100_000 + index * 7,
        5_000 + index * 13,
        index * 31 % 997
    );
    let mut item = 0;
    while message.len() < 1000 {
        message.push_str(&format!(
            r#"{{"id":{},"symbol":"SYM{}","price":{}.{:02},"qty":{},"side":"{}"}},"#,
            item * 17 + index,
            (item * 7 + index) % 50,
            100 + (item * 13 + index * 3) % 900,
            (item * 29 + index) % 100,
            1 + (item + index) % 40,
            if (item + index) % 2 == 0 {
                "buy"
            } else {
                "sell"
            }
        ));
        item += 1;
    }
    message.pop();
    message.push_str(r#"],"ts":"2026-11-23T16:47:04Z"}"#);
    message.into_bytes()
}

/// About 64 KiB of log-like text.
fn text_message(index: usize) -> Vec<u8> {
    let mut message = String::new();
    let mut line = 0;
    while message.len() < 64 * 1024 {
        message.push_str(&format!(
            "2026-11-23T16:{:02}:{:02}.{:03}Z worker-{} conn={} GET /api/v1/items?page={} status={} bytes={} ms={}\n",
            (line / 60) % 60,
            line % 60,
            (line * 37 + index) % 1000,
            line % 2,
            10_000 + line * 3 + index,
            line % 17,
            [200, 200, 200, 304, 404][line % 5],
            (line * 131 + index) % 65_536,
            (line * 7) % 250
        ));
        line += 1;
    }
    message.truncate(64 * 1024);
    message.into_bytes()
}

fn params(context_takeover: bool) -> Params {
    Params {
        server_no_context_takeover: !context_takeover,
        client_no_context_takeover: !context_takeover,
        server_max_window_bits: Some(12),
        client_max_window_bits: None,
    }
}

fn label(context_takeover: bool) -> &'static str {
    if context_takeover {
        "takeover"
    } else {
        "no-takeover"
    }
}

/// The compressor's three ways to go from one message to the next.
const COMPRESS_MODES: [(&str, bool, TakeoverMemory); 3] = [
    ("no-takeover", false, TakeoverMemory::State),
    ("takeover", true, TakeoverMemory::State),
    ("takeover-window", true, TakeoverMemory::Window),
];

fn compress_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("ws_deflate/compress");
    let cases: [(&str, MakeMessage, u8); 3] = [
        ("1KiB-json", json_message, 6),
        ("1KiB-json-level1", json_message, 1),
        ("64KiB-text", text_message, 6),
    ];
    for (name, make, level) in cases {
        let messages: Vec<Vec<u8>> = (0..MESSAGES).map(make).collect();
        for (mode, context_takeover, memory) in COMPRESS_MODES {
            let config = Config {
                compression_level: level,
                server_takeover_memory: memory,
                ..Config::default()
            };
            let mut compressor = Compressor::new(&params(context_takeover), &config);
            let mut out = Vec::with_capacity(128 * 1024);
            let mut compressed_bytes = 0;
            for message in &messages {
                out.clear();
                compressor.compress(message, true, &mut out);
                compressed_bytes += out.len();
            }
            let plain_bytes: usize = messages.iter().map(Vec::len).sum();
            eprintln!(
                "{name} {mode}: ratio {:.3} ({} → {} bytes over {MESSAGES} messages)",
                compressed_bytes as f64 / plain_bytes as f64,
                plain_bytes,
                compressed_bytes
            );
            group.throughput(Throughput::Bytes(messages[0].len() as u64));
            let mut index = 0;
            group.bench_function(BenchmarkId::new(name, mode), |bencher| {
                bencher.iter(|| {
                    out.clear();
                    compressor.compress(black_box(&messages[index % MESSAGES]), true, &mut out);
                    index += 1;
                    black_box(out.len())
                })
            });
        }
        // The worker's compressor of --compression-context shared: no context, its state
        // reset between messages instead of freed and allocated again.
        let config = Config {
            compression_level: level,
            ..Config::default()
        };
        let mut shared = SharedCompressor::default();
        let mut out = Vec::with_capacity(128 * 1024);
        let mut index = 0;
        group.bench_function(BenchmarkId::new(name, "shared"), |bencher| {
            bencher.iter(|| {
                out.clear();
                let message = black_box(&messages[index % MESSAGES]);
                shared.compress(&config, SERVER_WINDOW_BITS_DEFAULT, message, true, &mut out);
                index += 1;
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn decompress_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("ws_deflate/decompress");
    let cases: [(&str, MakeMessage); 2] =
        [("1KiB-json", json_message), ("64KiB-text", text_message)];
    for (name, make) in cases {
        let messages: Vec<Vec<u8>> = (0..MESSAGES).map(make).collect();
        for context_takeover in [false, true] {
            let params = params(context_takeover);
            // One stream of payloads, as one client would send them.
            let mut compressor = Compressor::new(&params, &Config::default());
            let payloads: Vec<Vec<u8>> = messages
                .iter()
                .map(|message| {
                    let mut out = Vec::new();
                    compressor.compress(message, true, &mut out);
                    out
                })
                .collect();
            let mut decompressor = Decompressor::new(&params, 1 << 20);
            let mut out = Vec::with_capacity(128 * 1024);
            let mut index = 0;
            group.throughput(Throughput::Bytes(messages[0].len() as u64));
            group.bench_function(BenchmarkId::new(name, label(context_takeover)), |bencher| {
                bencher.iter(|| {
                    if index % MESSAGES == 0 {
                        // The stream starts over: so does the receiver's window.
                        decompressor = Decompressor::new(&params, 1 << 20);
                    }
                    out.clear();
                    let payload = &payloads[index % MESSAGES];
                    let inflated = decompressor
                        .decompress(black_box(payload), true, &mut out, usize::MAX)
                        .expect("valid stream");
                    assert!(inflated.done);
                    index += 1;
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = compress_benches, decompress_benches
}
criterion_main!(benches);
