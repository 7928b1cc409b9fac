//! Codec throughput on realistic packets: tnetstring decode and encode, ZHTTP request-head
//! encoding and handler-packet decoding. Run with `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zring::proto::tnetstring::{self, Value, Writer};
use zring::proto::zhttp::{self, Kind, RequestHead};

/// The headers a desktop browser sends with a page request.
const BROWSER_HEADERS: [(&[u8], &[u8]); 10] = [
    (b"Host", b"app.example.com"),
    (
        b"User-Agent",
        b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        b"Accept",
        b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    (b"Accept-Language", b"en-US,en;q=0.5"),
    (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
    (b"Referer", b"https://app.example.com/dashboard"),
    (
        b"Cookie",
        b"session=3f9a1c2b7d4e8f60a1b2c3d4e5f60718; theme=dark; _ga=GA1.2.123456789.1700000000",
    ),
    (b"Connection", b"keep-alive"),
    (b"Upgrade-Insecure-Requests", b"1"),
    (b"Sec-Fetch-Mode", b"navigate"),
];

fn browser_head() -> RequestHead<'static> {
    RequestHead {
        from: b"condure",
        id: b"1-2f-9c41",
        seq: 0,
        method: b"GET",
        uri: b"https://app.example.com/api/v1/items?page=2&sort=-updated",
        headers: &BROWSER_HEADERS,
        credits: 8192,
        stream: true,
        more: false,
        body: b"",
        peer: Some((b"203.0.113.54", 51234)),
    }
}

/// A handler's first response packet as it arrives on the SUB socket: status, six headers,
/// 1 KiB of JSON, more to follow.
fn response_message() -> Vec<u8> {
    let body = vec![b'x'; 1024];
    let headers: [(&[u8], &[u8]); 6] = [
        (b"Content-Type", b"application/json; charset=utf-8"),
        (b"Cache-Control", b"no-store"),
        (b"Date", b"Mon, 23 Nov 2026 16:47:04 GMT"),
        (b"Server", b"handler/1.0"),
        (b"X-Request-Id", b"c0ffee00-1234-4abc-9def-0123456789ab"),
        (b"Vary", b"Accept-Encoding"),
    ];
    let mut out = b"condure T".to_vec();
    let mut writer = Writer::new(&mut out);
    writer.begin_dict_sized(2000);
    for (key, value) in [
        (&b"from"[..], &b"pushpin-proxy_4242"[..]),
        (b"id", b"1-2f-9c41"),
    ] {
        writer.bytes(key);
        writer.bytes(value);
    }
    writer.bytes(b"seq");
    writer.int(3);
    writer.bytes(b"ext");
    writer.begin_dict();
    writer.bytes(b"multi");
    writer.bool(true);
    writer.end_dict();
    writer.bytes(b"code");
    writer.int(200);
    writer.bytes(b"reason");
    writer.bytes(b"OK");
    writer.bytes(b"headers");
    writer.begin_list();
    for (name, value) in headers {
        writer.begin_list();
        writer.bytes(name);
        writer.bytes(value);
        writer.end_list();
    }
    writer.end_list();
    writer.bytes(b"body");
    writer.bytes(&body);
    writer.bytes(b"more");
    writer.bool(true);
    writer.bytes(b"credits");
    writer.int(200_000);
    writer.end_dict();
    writer.finish();
    out
}

/// Counts every value, so the lazy iterators do their work.
fn walk(value: Value<'_>) -> usize {
    match value {
        Value::List(list) => 1 + list.iter().map(walk).sum::<usize>(),
        Value::Dict(dict) => 1 + dict.iter().map(|(_, value)| 1 + walk(value)).sum::<usize>(),
        _ => 1,
    }
}

fn tnetstring_benches(criterion: &mut Criterion) {
    let mut head = Vec::new();
    zhttp::encode_request_head(&mut head, &browser_head());
    let payload = &head[1..];

    let mut group = criterion.benchmark_group("tnetstring");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("parse_request_head", |bencher| {
        bencher.iter(|| tnetstring::parse(black_box(payload)).map(|(value, _)| value))
    });
    group.bench_function("parse_and_walk_request_head", |bencher| {
        bencher.iter(|| walk(tnetstring::parse(black_box(payload)).unwrap().0))
    });

    // The cost of a wrong length guess: the payload moves once. An 8 KiB body in a dict
    // opened with the default (two-digit) guess, against one opened with the right size.
    let body = vec![b'x'; 8192];
    group.throughput(Throughput::Bytes(body.len() as u64));
    let mut out = Vec::with_capacity(16384);
    for (name, size_hint) in [("write_8k_guessed", None), ("write_8k_sized", Some(8300))] {
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                out.clear();
                let mut writer = Writer::new(&mut out);
                match size_hint {
                    Some(size_hint) => writer.begin_dict_sized(size_hint),
                    None => writer.begin_dict(),
                }
                writer.bytes(b"id");
                writer.bytes(b"1-2f-9c41");
                writer.bytes(b"body");
                writer.bytes(black_box(&body));
                writer.end_dict();
                writer.finish()
            })
        });
    }
    group.finish();
}

fn zhttp_benches(criterion: &mut Criterion) {
    let head = browser_head();
    let mut out = Vec::with_capacity(16384);
    zhttp::encode_request_head(&mut out, &head);

    let mut group = criterion.benchmark_group("zhttp");
    group.throughput(Throughput::Bytes(out.len() as u64));
    group.bench_function("encode_request_head", |bencher| {
        bencher.iter(|| {
            out.clear();
            zhttp::encode_request_head(&mut out, black_box(&head));
            out.len()
        })
    });

    let body = vec![b'x'; 8192];
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("encode_body_8k", |bencher| {
        bencher.iter(|| {
            out.clear();
            zhttp::encode_body(
                &mut out,
                b"condure",
                b"1-2f-9c41",
                4,
                black_box(&body),
                true,
            );
            out.len()
        })
    });

    let response = response_message();
    group.throughput(Throughput::Bytes(response.len() as u64));
    group.bench_function("decode_response", |bencher| {
        bencher.iter(|| zhttp::decode_addressed(black_box(&response)).unwrap())
    });

    let names: Vec<String> = (0..zhttp::IDS_MAX)
        .map(|slot| format!("0-{slot:x}-{:x}", slot * 7))
        .collect();
    let ids: Vec<(&[u8], u32)> = names.iter().map(|name| (name.as_bytes(), 12)).collect();
    let mut batch = Vec::new();
    zhttp::encode_multi(&mut batch, b"pushpin-handler_4242", &ids, Kind::KeepAlive);
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("encode_keep_alive_batch_128", |bencher| {
        bencher.iter(|| {
            out.clear();
            zhttp::encode_multi(&mut out, b"condure", black_box(&ids), Kind::KeepAlive)
        })
    });
    group.bench_function("decode_keep_alive_batch_128", |bencher| {
        bencher.iter(|| zhttp::decode(black_box(&batch)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, tnetstring_benches, zhttp_benches);
criterion_main!(benches);
