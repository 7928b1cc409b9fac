//! HTTP/1 codec benchmarks with realistic inputs: request-head parsing (a browser
//! navigation and a curl request), chunked body decoding throughput, and response-head
//! encoding.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use zring::proto::http1::{
    choose_framing, encode_chunk, encode_response_head, parse_request, ChunkedDecoder,
    ResponseContext, ResponseHead, Version, EMPTY_HEADER, HEADERS_MAX,
};

/// A Firefox-like navigation request: 14 headers, cookies, a query string.
const BROWSER: &[u8] =
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

/// What curl sends by default.
const CURL: &[u8] =
    b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:18000\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

fn parse(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("http1_parse_request");
    for (name, input) in [("browser", BROWSER), ("curl", CURL)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                let mut headers = [EMPTY_HEADER; HEADERS_MAX];
                let status = parse_request(black_box(input), &mut headers);
                black_box(
                    status
                        .ok()
                        .and_then(|status| status.complete())
                        .map(|r| r.head_len),
                )
            })
        });
    }
    group.finish();
}

/// A 64 KiB body in chunks of `chunk_bytes`: 4 KiB as a streaming upload client sends it,
/// 64 B to weigh the framing itself (the data is borrowed, not copied).
fn chunked_body(chunk_bytes: usize) -> Vec<u8> {
    let data = vec![b'x'; chunk_bytes];
    let mut body = Vec::new();
    for _ in 0..(64 * 1024 / chunk_bytes) {
        encode_chunk(&mut body, &data);
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

fn decode(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("http1_chunked_decode");
    for chunk_bytes in [4096, 64] {
        let body = chunked_body(chunk_bytes);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("64KiB_in_{chunk_bytes}B_chunks"), |bencher| {
            bencher.iter(|| {
                let mut decoder = ChunkedDecoder::new();
                let mut rest = black_box(&body[..]);
                let mut data_bytes = 0;
                loop {
                    let decoded = decoder.decode(rest).expect("valid body");
                    data_bytes += decoded.data.map_or(0, <[u8]>::len);
                    rest = &rest[decoded.consumed..];
                    if decoded.done {
                        break;
                    }
                }
                black_box(data_bytes)
            })
        });
    }
    group.finish();
}

fn encode(criterion: &mut Criterion) {
    let headers: &[(&[u8], &[u8])] = &[
        (b"Content-Type", b"text/html; charset=utf-8"),
        (b"Date", b"Mon, 23 Nov 2026 16:44:43 GMT"),
        (b"Cache-Control", b"no-cache"),
        (
            b"Set-Cookie",
            b"session=5f2b8c1e9a7d4e3f8b6a; Path=/; HttpOnly",
        ),
        (b"Vary", b"Accept-Encoding"),
    ];
    let context = ResponseContext {
        version: Version::Http11,
        head_request: false,
        keep_alive: true,
    };
    let mut out = Vec::with_capacity(1024);
    criterion.bench_function("http1_encode_response_head", |bencher| {
        bencher.iter(|| {
            out.clear();
            let framing =
                choose_framing(context, 200, black_box(headers), false, 1234).expect("valid");
            let head = ResponseHead {
                version: context.version,
                code: 200,
                reason: b"OK",
                headers,
                body: framing.body,
                keep_alive: framing.keep_alive,
            };
            encode_response_head(&mut out, &head).expect("valid");
            black_box(out.len())
        })
    });
}

criterion_group!(benches, parse, decode, encode);
criterion_main!(benches);
