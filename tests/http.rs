//! HTTP/1.x through zring to ZHTTP handlers, on both runtimes: curl, ureq and raw sockets
//! against zring and the example handler (or a scripted handler), over real loopback and
//! real ZeroMQ.
#[macro_use]
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

const SECOND: Duration = Duration::from_secs(1);

fn status_line(r: &[u8]) -> String {
    String::from_utf8_lossy(r)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

both_runtimes! {
    curl_get(rt) {
        let s = Stack::with_example(rt, &[]);
        let (code, body) = curl(&["-i", &s.url("/hello?x=1")]);
        assert_eq!(code, 0);
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
        assert!(body.ends_with("\r\n\r\nhello\n"), "{body}");
        assert!(body.to_ascii_lowercase().contains("content-length: 6\r\n"), "{body}");
    }

    ureq_post_echo(rt) {
        let s = Stack::with_example(rt, &[]);
        // Bigger than the 8 KiB credits zring offers: the body flows under the handler's credits.
        let body: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let r = ureq::post(&s.url("/echo")).send_bytes(&body).expect("post");
        assert_eq!(r.status(), 200);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut got).unwrap();
        assert!(got.starts_with(b"POST http://127.0.0.1:"), "{:?}", String::from_utf8_lossy(&got[..80]));
        assert!(got.ends_with(&body), "echoed body differs");
    }

    chunked_request_body(rt) {
        let s = Stack::with_example(rt, &[]);
        let req = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        let r = exchange(s.port, req, 5 * SECOND);
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK");
        assert!(r.ends_with(b"\n\nhello, world"), "{:?}", String::from_utf8_lossy(&r));
    }

    pipelined_requests(rt) {
        let s = Stack::with_example(rt, &[]);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(5 * SECOND)).unwrap();
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /echo HTTP/1.1\r\nHost: t\r\nX-N: 2\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        // The responses may share segments: one buffer carries the rest over.
        let mut rest = Vec::new();
        let (h1, b1) = read_response_from(&mut c, &mut rest);
        let (h2, b2) = read_response_from(&mut c, &mut rest);
        let (h3, _) = read_response_from(&mut c, &mut rest);
        assert!(rest.is_empty(), "{} bytes after three responses", rest.len());
        assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
        assert_eq!(b1, b"hello\n");
        assert!(h2.starts_with("HTTP/1.1 200") && String::from_utf8_lossy(&b2).contains("X-N: 2"), "{h2}");
        assert!(h3.starts_with("HTTP/1.1 404"), "{h3}");
    }

    byte_by_byte(rt) {
        let s = Stack::with_example(rt, &[]);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(5 * SECOND)).unwrap();
        for b in b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" {
            c.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let (h, b) = read_response(&mut c);
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert!(b.ends_with(b"\n\nabc"));
    }

    keep_alive_many(rt) {
        let s = Stack::with_example(rt, &[]);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(5 * SECOND)).unwrap();
        for _ in 0..200 {
            c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let (h, b) = read_response(&mut c);
            assert!(h.starts_with("HTTP/1.1 200"));
            assert_eq!(b, b"hello\n");
        }
    }

    http10_close(rt) {
        let s = Stack::with_example(rt, &[]);
        let r = exchange(s.port, b"GET /hello HTTP/1.0\r\n\r\n", 5 * SECOND);
        assert!(r.starts_with(b"HTTP/1.0 200 OK\r\n") || r.starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&r));
        assert!(r.ends_with(b"hello\n"));
        // Streamed to 1.0: close-delimited, the close ends the body.
        let r = exchange(s.port, b"GET /stream HTTP/1.0\r\n\r\n", 5 * SECOND);
        assert!(r.ends_with(b"chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n"), "{:?}", String::from_utf8_lossy(&r));
    }

    streamed_response(rt) {
        let s = Stack::with_example(rt, &[]);
        let (code, body) = curl(&["-N", "-i", &s.url("/stream")]);
        assert_eq!(code, 0);
        assert!(body.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{body}");
        assert!(body.ends_with("chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n"), "{body}");
    }

    head_has_no_body(rt) {
        let s = Stack::with_example(rt, &[]);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(2 * SECOND)).unwrap();
        c.write_all(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let all = read_all(&mut c);
        let text = String::from_utf8_lossy(&all);
        // The HEAD answer carries the length of the body it omits; the next response follows directly.
        let second = text.find("HTTP/1.1 200 OK\r\n").and_then(|i| text[i + 1..].find("HTTP/1.1 200 OK").map(|j| i + 1 + j));
        let second = second.unwrap_or_else(|| panic!("two responses expected: {text}"));
        assert!(text[..second].ends_with("\r\n\r\n"), "HEAD response had a body: {text}");
        assert!(text.ends_with("hello\n"));
    }

    expect_continue(rt) {
        let s = Stack::with_example(rt, &[]);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(5 * SECOND)).unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut c, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
        c.write_all(b"wxyz").unwrap();
        let (h, b) = read_response(&mut c);
        assert!(h.starts_with("HTTP/1.1 200"));
        assert!(b.ends_with(b"\n\nwxyz"));
    }

    bad_requests(rt) {
        let s = Stack::with_example(rt, &["--buffer-size", "4096", "--body-buffer-size", "1000"]);
        let cases: [(&[u8], &str, u16); 5] = [
            (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", "malformed header", 400),
            (b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n", "bad request line", 400),
            (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "gzip coding", 501),
            (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", "two lengths", 400),
            (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "length and chunked", 400),
        ];
        for (req, what, code) in cases {
            let r = exchange(s.port, req, 5 * SECOND);
            assert!(status_line(&r).starts_with(&format!("HTTP/1.1 {code} ")), "{what}: {:?}", String::from_utf8_lossy(&r));
            assert!(String::from_utf8_lossy(&r).contains("Connection: close"), "{what}");
        }
        let mut big = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', 5000));
        big.extend_from_slice(b"\r\n\r\n");
        let r = exchange(s.port, &big, 5 * SECOND);
        assert!(status_line(&r).starts_with("HTTP/1.1 431 "), "{:?}", status_line(&r));
        // req mode holds the whole body: over --body-buffer-size is 413.
        let mut post = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n".to_vec();
        post.extend(std::iter::repeat_n(b'y', 2000));
        let r = exchange(s.req_port, &post, 5 * SECOND);
        assert!(status_line(&r).starts_with("HTTP/1.1 413 "), "{:?}", status_line(&r));
        // And zring still serves.
        let (_, body) = curl(&[&s.url("/hello")]);
        assert_eq!(body, "hello\n");
    }

    req_mode(rt) {
        let s = Stack::with_example(rt, &[]);
        let (code, body) = curl(&["-d", "req body", &format!("http://127.0.0.1:{}/echo", s.req_port)]);
        assert_eq!(code, 0);
        assert!(body.starts_with("POST http://127.0.0.1:"), "{body}");
        assert!(body.ends_with("\n\nreq body"), "{body}");
        let r = exchange(s.req_port, b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 5 * SECOND);
        assert!(status_line(&r).starts_with("HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&r));
    }

    client_leaves_mid_body(rt) {
        let s = Stack::with_example(rt, &[]);
        // Warm up so lazily opened fds exist before the baseline.
        let _ = curl(&[&s.url("/hello")]);
        let before = s.fd_count();
        for _ in 0..50 {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\npartial").unwrap();
        }
        // The clients may still sit in the accept backlog at the first look, so the count
        // must stay at the baseline for half a second, not touch it once.
        let end = Instant::now() + 5 * SECOND;
        let mut settled = 0;
        while settled < 10 && Instant::now() < end {
            settled = if s.fd_count() <= before { settled + 1 } else { 0 };
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(s.fd_count() <= before, "fds leaked: {} > {before}", s.fd_count());
        let (_, body) = curl(&[&s.url("/hello")]);
        assert_eq!(body, "hello\n");
    }

    no_handler_gets_503_and_is_never_delivered(rt) {
        let s = Stack::zring_only(rt, &["--handler-wait", "300"]);
        let t0 = Instant::now();
        let r = exchange(s.port, b"GET /lost HTTP/1.1\r\nHost: t\r\n\r\n", 5 * SECOND);
        assert!(status_line(&r).starts_with("HTTP/1.1 503 "), "{:?}", String::from_utf8_lossy(&r));
        assert!(t0.elapsed() < 4 * SECOND);
        // A handler connecting now must not receive the abandoned request.
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.connect(&format!("{}-out", s.base)).unwrap();
        pull.set_rcvtimeo(1000).unwrap();
        assert!(pull.recv_bytes(0).is_err(), "a late handler received the abandoned request");
    }

    handler_cancel_gives_502(rt) {
        let s = Stack::zring_only(rt, &[]);
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.connect(&format!("{}-out", s.base)).unwrap();
        let publ = ctx.socket(zmq::PUB).unwrap();
        publ.connect(&format!("{}-in", s.base)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let port = s.port;
        let client = std::thread::spawn(move || exchange(port, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", 5 * SECOND));
        pull.set_rcvtimeo(5000).unwrap();
        let first = pull.recv_bytes(0).expect("first packet");
        let id = tn_field(&first, b"id");
        let mut msg = b"condure T".to_vec();
        let dict = format!("4:from,1:h,2:id,{}:{},3:seq,1:0#4:type,6:cancel,", id.len(), String::from_utf8_lossy(&id));
        msg.extend_from_slice(format!("{}:{}}}", dict.len(), dict).as_bytes());
        publ.send(&msg[..], 0).unwrap();
        let r = client.join().unwrap();
        assert!(status_line(&r).starts_with("HTTP/1.1 502 "), "{:?}", String::from_utf8_lossy(&r));
    }
}

/// The value of a top-level string key in a `T`-prefixed tnetstring dict (test-side, naive).
fn tn_field(packet: &[u8], key: &[u8]) -> Vec<u8> {
    let mut pat = format!("{}:", key.len()).into_bytes();
    pat.extend_from_slice(key);
    pat.push(b',');
    let i = find(packet, &pat).expect("key present") + pat.len();
    let colon = i + packet[i..].iter().position(|&b| b == b':').unwrap();
    let n: usize = std::str::from_utf8(&packet[i..colon])
        .unwrap()
        .parse()
        .unwrap();
    packet[colon + 1..colon + 1 + n].to_vec()
}

/// A test-side tnetstring value (independent of zring's codec).
enum Tn<'a> {
    S(&'a [u8]),
    I(i64),
    B(bool),
    L(Vec<Tn<'a>>),
    D(Vec<(&'a str, Tn<'a>)>),
}

fn tn(v: &Tn) -> Vec<u8> {
    let (body, tag): (Vec<u8>, u8) = match v {
        Tn::S(s) => (s.to_vec(), b','),
        Tn::I(i) => (i.to_string().into_bytes(), b'#'),
        Tn::B(b) => (b.to_string().into_bytes(), b'!'),
        Tn::L(l) => (l.iter().flat_map(tn).collect(), b']'),
        Tn::D(d) => (
            d.iter()
                .flat_map(|(k, v)| [tn(&Tn::S(k.as_bytes())), tn(v)].concat())
                .collect(),
            b'}',
        ),
    };
    let mut out = format!("{}:", body.len()).into_bytes();
    out.extend(body);
    out.push(tag);
    out
}

/// A scripted handler: PULL for first packets, PUB for replies (to zring's default id).
struct Script {
    _ctx: zmq::Context,
    pull: zmq::Socket,
    publ: zmq::Socket,
}

impl Script {
    fn connect(base: &str) -> Script {
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.connect(&format!("{base}-out")).unwrap();
        pull.set_rcvtimeo(5000).unwrap();
        let publ = ctx.socket(zmq::PUB).unwrap();
        publ.connect(&format!("{base}-in")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Script {
            _ctx: ctx,
            pull,
            publ,
        }
    }
    fn first_id(&self) -> Vec<u8> {
        tn_field(&self.pull.recv_bytes(0).expect("first packet"), b"id")
    }
    fn send(&self, fields: Vec<(&str, Tn)>) {
        let mut all = vec![("from", Tn::S(b"script"))];
        all.extend(fields);
        let mut msg = b"condure T".to_vec();
        msg.extend(tn(&Tn::D(all)));
        self.publ.send(&msg[..], 0).unwrap();
    }
    fn start_stream(&self, id: &[u8]) {
        let headers = Tn::L(vec![Tn::L(vec![
            Tn::S(b"Content-Type"),
            Tn::S(b"text/plain"),
        ])]);
        self.send(vec![
            ("id", Tn::S(id)),
            ("seq", Tn::I(0)),
            ("code", Tn::I(200)),
            ("reason", Tn::S(b"OK")),
            ("headers", headers),
            ("more", Tn::B(true)),
        ]);
    }
}

both_runtimes! {
    list_form_ids_reach_every_connection(rt) {
        let s = Stack::zring_only(rt, &[]);
        let h = Script::connect(&s.base);
        let mut clients = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            c.set_read_timeout(Some(5 * SECOND)).unwrap();
            c.write_all(b"GET /sub HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let id = h.first_id();
            h.start_stream(&id);
            ids.push(id);
            clients.push(c);
        }
        // One packet, three ids: one decode in zring, the same body to every connection.
        let list = |seq: i64| Tn::L(ids.iter().map(|i| Tn::D(vec![("id", Tn::S(i)), ("seq", Tn::I(seq))])).collect());
        h.send(vec![("id", list(1)), ("body", Tn::S(b"to all\n")), ("more", Tn::B(true))]);
        h.send(vec![("id", list(2)), ("body", Tn::S(b"bye\n"))]);
        for c in &mut clients {
            let (head, body) = read_response(c);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, b"to all\nbye\n");
        }
    }

    handler_seq_is_checked(rt) {
        let s = Stack::zring_only(rt, &[]);
        let h = Script::connect(&s.base);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(5 * SECOND)).unwrap();
        c.write_all(b"GET /sub HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let id = h.first_id();
        h.start_stream(&id);
        h.send(vec![("id", Tn::S(&id)), ("seq", Tn::I(1)), ("body", Tn::S(b"in order\n")), ("more", Tn::B(true))]);
        // seq 2 is due; 5 means packets were lost: zring ends the session (as Condure).
        h.send(vec![("id", Tn::S(&id)), ("seq", Tn::I(5)), ("body", Tn::S(b"out of order\n")), ("more", Tn::B(true))]);
        let t0 = Instant::now();
        let got = String::from_utf8_lossy(&read_all(&mut c)).into_owned();
        assert!(t0.elapsed() < 4 * SECOND, "the connection was not closed");
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.contains("in order\n"), "{got}");
        assert!(!got.contains("out of order"), "{got}");
    }

    silent_handler_session_expires_after_60s(rt) {
        let s = Stack::zring_only(rt, &[]);
        let h = Script::connect(&s.base);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(b"GET /sub HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let t0 = Instant::now();
        let id = h.first_id();
        h.start_stream(&id);
        // The handler now says nothing: zring drops the session 60 s after its last packet.
        c.set_read_timeout(Some(90 * SECOND)).unwrap();
        let got = read_all(&mut c);
        let waited = t0.elapsed();
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"));
        assert!(waited >= 59 * SECOND && waited < 75 * SECOND, "closed after {waited:?}");
    }
}

/// The body of a packet a handler's ROUTER received (the last frame), or panics on timeout.
fn router_packet(r: &zmq::Socket) -> Vec<u8> {
    let parts = r
        .recv_multipart(0)
        .expect("a packet on the handler's ROUTER");
    parts.last().cloned().unwrap_or_default()
}

both_runtimes! {
    websocket_handoff(rt) {
        // Handler 1 accepts a WebSocket, then hands the session off; zring answers
        // handoff-proceed, holds the client's next message, and gives it to handler 2 once
        // handler 2 claims the session with a keep-alive of its own.
        let s = Stack::zring_only(rt, &[]);
        let ctx = zmq::Context::new();
        let router = |ident: &[u8]| {
            let r = ctx.socket(zmq::ROUTER).unwrap();
            r.set_identity(ident).unwrap();
            r.set_rcvtimeo(5000).unwrap();
            r.connect(&format!("{}-out-stream", s.base)).unwrap();
            r
        };
        let (r1, r2) = (router(b"script"), router(b"h2"));
        let h = Script::connect(&s.base);
        let port = s.port;
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut c = support::ws::Ws::connect(port, "/ws");
            c.text(b"one");
            go_rx.recv().unwrap();
            c.text(b"two");
            go_rx.recv().unwrap();
        });
        let id = h.first_id();
        h.send(vec![
            ("id", Tn::S(&id)),
            ("seq", Tn::I(0)),
            ("code", Tn::I(101)),
            ("reason", Tn::S(b"Switching Protocols")),
            ("headers", Tn::L(vec![])),
            ("credits", Tn::I(1000)),
        ]);
        let one = router_packet(&r1);
        assert_eq!(tn_field(&one, b"body"), b"one");
        h.send(vec![("id", Tn::S(&id)), ("seq", Tn::I(1)), ("type", Tn::S(b"handoff-start"))]);
        let proceed = router_packet(&r1);
        assert_eq!(tn_field(&proceed, b"type"), b"handoff-proceed");
        go_tx.send(()).unwrap();
        // During the handoff nothing goes to either handler.
        r1.set_rcvtimeo(500).unwrap();
        r2.set_rcvtimeo(500).unwrap();
        assert!(r1.recv_multipart(0).is_err(), "data sent during a handoff");
        assert!(r2.recv_multipart(0).is_err(), "data sent during a handoff");
        // Handler 2 claims the session (continuing its seq) and gets the held message.
        let mut msg = b"condure T".to_vec();
        msg.extend(tn(&Tn::D(vec![
            ("from", Tn::S(b"h2")),
            ("id", Tn::S(&id)),
            ("seq", Tn::I(2)),
            ("type", Tn::S(b"keep-alive")),
        ])));
        h.publ.send(&msg[..], 0).unwrap();
        r2.set_rcvtimeo(5000).unwrap();
        let two = router_packet(&r2);
        assert_eq!(tn_field(&two, b"body"), b"two");
        go_tx.send(()).unwrap();
        client.join().unwrap();
    }
}
