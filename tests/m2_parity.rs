//! Parity with Mongrel2 1.12.2 (`mongrel2-core`): a real Mongrel2 runs a generated config;
//! these tests play client (raw TCP) and handler (ZeroMQ PULL + PUB, as a handler connects),
//! record every frame Mongrel2 sends, and require that zring's sans-IO codec
//! (`zring::proto::m2`) builds the same bytes from the same request, ids aside, and parses
//! what Mongrel2 parses. Router decisions are compared the same way (`zring::m2config`).
//!
//! Mongrel2 must be installed (`scripts/setup.sh test` installs `mongrel2-core`); a missing binary fails.
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::peers::require_bin;
use support::{free_ports, wait_port, Proc, TempDir};
use zring::proto::m2::notice::encode_disconnect;
use zring::proto::m2::reply::mongrel2_int_id;
use zring::proto::m2::request::{ws_flags, HEADER_COUNT_DEFAULT};
use zring::proto::m2::{
    encode_request, parse_reply, split_target, HeaderTable, Message, Protocol, Request, Scheme,
};

const JSON_IDENT: &str = "11111111-2222-3333-4444-555555555555";
const TNET_IDENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SERVER_UUID: &str = "f400bf85-4538-4f7a-8908-67e313d515c2";
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// The routes every test config has, besides the handler routes.
pub const ROUTES: &str = "'/json': json_handler, '/tnet': tnet_handler, \
    '/ws': json_handler, '/up': json_handler, \
    '/users/(\\d+)/x': json_handler, '/users/': tnet_handler, '/num(\\d+)/x': json_handler, \
    '/static/': Dir(base='static/', index_file='index.html', default_ctype='text/plain')";

struct Handler {
    _context: zmq::Context,
    pull: zmq::Socket,
    publ: zmq::Socket,
    ident: &'static str,
    protocol: Protocol,
}

impl Handler {
    fn connect(send_port: u16, recv_port: u16, ident: &'static str, protocol: Protocol) -> Self {
        let context = zmq::Context::new();
        let pull = context.socket(zmq::PULL).unwrap();
        pull.connect(&format!("tcp://127.0.0.1:{send_port}"))
            .unwrap();
        let publ = context.socket(zmq::PUB).unwrap();
        publ.connect(&format!("tcp://127.0.0.1:{recv_port}"))
            .unwrap();
        Handler {
            _context: context,
            pull,
            publ,
            ident,
            protocol,
        }
    }

    /// The next frame Mongrel2 pushes, or a panic after `FRAME_WAIT`.
    fn frame(&self) -> Vec<u8> {
        self.try_frame(FRAME_WAIT).expect("no frame from mongrel2")
    }

    fn try_frame(&self, wait: Duration) -> Option<Vec<u8>> {
        let ready = self
            .pull
            .poll(zmq::POLLIN, wait.as_millis() as i64)
            .unwrap();
        (ready > 0).then(|| self.pull.recv_bytes(0).unwrap())
    }

    fn reply(&self, ids: &str, body: &[u8]) {
        let mut message = format!("{} {}:{}, ", self.ident, ids.len(), ids).into_bytes();
        message.extend_from_slice(body);
        self.publ.send(message, 0).unwrap();
    }
}

struct Mongrel2 {
    dir: TempDir,
    port: u16,
    json: Handler,
    tnet: Handler,
    _proc: Proc,
}

impl Mongrel2 {
    fn start(tag: &str, settings: &str) -> Self {
        Self::start_with(tag, settings, ROUTES)
    }

    fn start_with(tag: &str, settings: &str, routes: &str) -> Self {
        let mongrel2 = require_bin("mongrel2");
        let m2sh = require_bin("m2sh");
        let dir = TempDir::new(tag);
        for sub in ["logs", "run", "tmp", "static"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("static/index.html"), "index\n").unwrap();
        let ports = free_ports(5);
        let config = format!(
            "json_handler = Handler(send_spec='tcp://127.0.0.1:{}', send_ident='{JSON_IDENT}',\n\
             \x20   recv_spec='tcp://127.0.0.1:{}', recv_ident='', protocol='json')\n\
             tnet_handler = Handler(send_spec='tcp://127.0.0.1:{}', send_ident='{TNET_IDENT}',\n\
             \x20   recv_spec='tcp://127.0.0.1:{}', recv_ident='', protocol='tnetstring')\n\
             main = Server(uuid='{SERVER_UUID}', access_log='/logs/access.log',\n\
             \x20   error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',\n\
             \x20   pid_file='/run/mongrel2.pid', bind_addr='127.0.0.1', port={},\n\
             \x20   hosts=[Host(name='localhost', routes={{{routes}}})])\n\
             settings = {{'server.daemonize': 0, 'upload.temp_store': '/tmp/upload.XXXXXX', {settings}}}\n\
             servers = [main]\n",
            ports[0], ports[1], ports[2], ports[3], ports[4]
        );
        std::fs::write(dir.join("m2.conf"), &config).unwrap();
        let status = Command::new(&m2sh)
            .args(["load", "-config", "m2.conf", "-db", "config.sqlite"])
            .current_dir(&dir.path)
            .env("LOGNAME", "zring")
            .output()
            .expect("running m2sh");
        assert!(status.status.success(), "m2sh load: {status:?}");
        let mut proc = Proc::spawn(
            "mongrel2",
            Command::new(&mongrel2)
                .args(["config.sqlite", SERVER_UUID])
                .current_dir(&dir.path),
            &dir.path,
        );
        wait_port(ports[4], &mut proc, Duration::from_secs(10));
        let json = Handler::connect(ports[0], ports[1], JSON_IDENT, Protocol::Json);
        let tnet = Handler::connect(ports[2], ports[3], TNET_IDENT, Protocol::Tnetstring);
        // PUB/SUB slow joiner: a reply published before the subscription lands is lost.
        std::thread::sleep(Duration::from_millis(400));
        Mongrel2 {
            dir,
            port: ports[4],
            json,
            tnet,
            _proc: proc,
        }
    }

    fn client(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

/// The connection id in a frame: the second space-separated field.
fn frame_id(frame: &[u8]) -> i64 {
    let text = String::from_utf8_lossy(frame);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Builds what zring sends for `raw` (a request head as the client sent it) and compares.
struct Expect<'a> {
    handler: &'a Handler,
    pattern: &'a str,
    method: Option<&'a str>,
    extra: Vec<(Vec<u8>, Vec<u8>)>,
    body: &'a [u8],
}

impl Expect<'_> {
    fn check(&self, raw: &[u8], frame: &[u8], table: &mut HeaderTable) {
        let mut headers = [httparse::EMPTY_HEADER; 300];
        let mut parsed = httparse::Request::new(&mut headers);
        let status = parsed.parse(raw).expect("test request parses");
        assert!(status.is_complete());
        let method = self.method.unwrap_or(parsed.method.unwrap());
        let version = if parsed.version == Some(0) {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        let request = Request {
            method: method.as_bytes(),
            version: version.as_bytes(),
            target: split_target(parsed.path.unwrap().as_bytes()),
            headers: parsed.headers,
            pattern: Some(self.pattern.as_bytes()),
            scheme: Scheme::Http,
            remote_addr: b"127.0.0.1",
            header_count_max: HEADER_COUNT_DEFAULT,
        };
        let mut extra: Vec<(&[u8], &[u8])> = vec![(b"x-forwarded-for", b"127.0.0.1")];
        extra.extend(self.extra.iter().map(|(k, v)| (&k[..], &v[..])));
        let message = Message {
            sender: self.handler.ident.as_bytes(),
            conn_id: frame_id(frame) as u32,
            protocol: self.handler.protocol,
            request: &request,
            extra: &extra,
            body: self.body,
        };
        let mut ours = Vec::new();
        encode_request(&message, table, &mut ours).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(frame),
            "zring (left) and Mongrel2 (right) differ"
        );
        assert_eq!(ours, frame);
    }
}

fn expect<'a>(handler: &'a Handler, pattern: &'a str) -> Expect<'a> {
    Expect {
        handler,
        pattern,
        method: None,
        extra: Vec::new(),
        body: b"",
    }
}

/// Reads until `want` has been seen or the peer closes; returns everything read.
fn read_until(stream: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && !contains(&got, want) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(_) => break,
        }
    }
    got
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn reply_ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn get_post_and_headers_match_byte_for_byte() {
    let m2 = Mongrel2::start("m2-get", "'limits.content_length': 1024");
    let cases: [(&Handler, &str, &str); 7] = [
        (&m2.json, "/json", "GET /json/hello?x=1&y=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nX-Custom: a\"b\\c\r\n\r\n"),
        (&m2.tnet, "/tnet", "GET /tnet/a?q=%20#frag HTTP/1.1\r\nHost: localhost:80\r\nCookie: a=1\r\ncookie: b=2\r\nCOOKIE: c=3\r\nX-Empty: \r\n\r\n"),
        (&m2.json, "/json", "GET /json?a HTTP/1.0\r\nX-A: 1\r\nX-A: 2\r\nX-A: 3\r\nX-A: 4\r\nX-A: 5\r\nX-A: 6\r\nX-A: 7\r\nHost: x\r\n\r\n"),
        (&m2.json, "/json", "GET /json/x HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\nx-mongrel2-upload-start: forged\r\nMETHOD: PUT\r\nHost: x\r\nTab: a\tb\r\n\r\n"),
        (&m2.tnet, "/users/", "GET /users/abc HTTP/1.1\r\nHost: x\r\n\r\n"),
        (&m2.json, "/num(\\d+)/x", "GET /num42/x/y HTTP/1.1\r\nHost: x\r\n\r\n"),
        // Same prefix as '/users/', inserted later: Mongrel2 never tries the pattern.
        (&m2.tnet, "/users/", "GET /users/42/x/y HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    for (handler, pattern, raw) in cases {
        let mut client = m2.client();
        client.write_all(raw.as_bytes()).unwrap();
        let frame = handler.frame();
        expect(handler, pattern).check(raw.as_bytes(), &frame, &mut HeaderTable::new());
        handler.reply(&frame_id(&frame).to_string(), &reply_ok("ok"));
        assert!(contains(&read_until(&mut client, b"ok"), b"200 OK"));
        // The client leaves: Mongrel2 tells the handler.
        drop(client);
        let notice = handler.frame();
        let mut ours = Vec::new();
        encode_disconnect(
            &mut ours,
            handler.ident.as_bytes(),
            frame_id(&frame) as i32,
            handler.protocol,
        );
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&notice)
        );
    }
    let post = "POST /tnet/form HTTP/1.1\r\nHost: 127.0.0.1:6767\r\nContent-Length: 10\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n";
    for handler in [&m2.json, &m2.tnet] {
        let prefix = if handler.protocol == Protocol::Json {
            "/json"
        } else {
            "/tnet"
        };
        let raw = post.replace("/tnet", prefix);
        let mut client = m2.client();
        client.write_all(raw.as_bytes()).unwrap();
        client.write_all(b"name=zring").unwrap();
        let frame = handler.frame();
        let mut check = expect(handler, prefix);
        check.body = b"name=zring";
        check.check(raw.as_bytes(), &frame, &mut HeaderTable::new());
    }
}

#[test]
fn keep_alive_keeps_the_id_and_the_grown_header_table() {
    let m2 = Mongrel2::start("m2-keep", "'limits.content_length': 1024");
    let mut client = m2.client();
    let mut table = HeaderTable::new();
    // 140 distinct names: the table doubles to 128 chains mid-request and stays that size
    // for the next request on this connection, which changes that request's order.
    let mut big = String::from("GET /json/big HTTP/1.1\r\nHost: x\r\n");
    for index in 0..140 {
        big.push_str(&format!("X-H{index}: v{index}\r\n"));
    }
    big.push_str("\r\n");
    let small = "GET /json/small HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nUser-Agent: u\r\nX-Custom: 1\r\nCookie: c\r\n\r\n";
    let mut id = None;
    for raw in [big.as_str(), small, small] {
        table.begin_request();
        client.write_all(raw.as_bytes()).unwrap();
        let frame = m2.json.frame();
        assert!(id.is_none() || id == Some(frame_id(&frame)), "id changed");
        id = Some(frame_id(&frame));
        expect(&m2.json, "/json").check(raw.as_bytes(), &frame, &mut table);
        m2.json
            .reply(&frame_id(&frame).to_string(), &reply_ok("done"));
        assert!(contains(&read_until(&mut client, b"done"), b"200 OK"));
    }
    assert_eq!(table.chains(), 128);
    // A fresh connection starts from 64 chains again.
    let mut fresh = m2.client();
    fresh.write_all(small.as_bytes()).unwrap();
    let frame = m2.json.frame();
    assert_ne!(Some(frame_id(&frame)), id);
    expect(&m2.json, "/json").check(small.as_bytes(), &frame, &mut HeaderTable::new());
}

#[test]
fn disconnects_fanout_and_bad_replies() {
    let m2 = Mongrel2::start("m2-fan", "'limits.content_length': 1024");
    let raw = "GET /json/hold HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut client = m2.client();
        client.write_all(raw.as_bytes()).unwrap();
        ids.push(frame_id(&m2.json.frame()).to_string());
        clients.push(client);
    }
    // Malformed replies are dropped; each must also be refused by zring's parser.
    let id = &ids[0];
    let bad: Vec<Vec<u8>> = vec![
        format!("{JSON_IDENT} 9:{id}, bad-length").into_bytes(),
        format!("{JSON_IDENT} {}:{id},no-space", id.len()).into_bytes(),
        format!("{JSON_IDENT} 3:a b, letters").into_bytes(),
        format!("{JSON_IDENT} 0:, none").into_bytes(),
        format!("bad_uuid {}:{id}, x", id.len()).into_bytes(),
    ];
    for message in &bad {
        assert!(parse_reply(message, 128).is_err());
        m2.json.publ.send(&message[..], 0).unwrap();
    }
    // One reply to all three ids, then one empty reply closes all three.
    let all = ids.join(" ");
    let good = format!("{JSON_IDENT} {}:{all}, ", all.len()).into_bytes();
    let parsed = parse_reply(&good, 128).unwrap();
    assert_eq!(parsed.id_count(), 3);
    m2.json.reply(&all, &reply_ok("fan"));
    for client in &mut clients {
        let got = read_until(client, b"fan");
        assert!(contains(&got, b"fan"), "{}", String::from_utf8_lossy(&got));
        assert!(!contains(&got, b"bad-length") && !contains(&got, b"letters"));
    }
    m2.json.reply(&all, b"");
    for client in &mut clients {
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
        assert!(rest.is_empty(), "closed without more bytes");
    }
    // No notice for a handler's own close (as the doc observed).
    assert_eq!(m2.json.try_frame(Duration::from_millis(300)), None);
    // An unknown id gets a notice, with the id as Mongrel2's `(int)` cast prints it.
    for unknown in ["99999", "99999999999"] {
        m2.json.reply(unknown, b"x");
        let frame = m2.json.frame();
        let value: u64 = unknown.parse().unwrap();
        let mut ours = Vec::new();
        encode_disconnect(
            &mut ours,
            JSON_IDENT.as_bytes(),
            mongrel2_int_id(value),
            Protocol::Json,
        );
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&frame)
        );
    }
    // A ctl cancel to an unknown id: no notice.
    let cancel = b"22:3:ctl,12:6:cancel,0:~}]";
    let message = [format!("{JSON_IDENT} 7:X 99999, ").as_bytes(), cancel].concat();
    assert!(parse_reply(&message, 128).unwrap().extended);
    m2.json.publ.send(&message[..], 0).unwrap();
    assert_eq!(m2.json.try_frame(Duration::from_millis(500)), None);
    // A client that goes away: a notice in the handler's protocol.
    for handler in [&m2.json, &m2.tnet] {
        let path = if handler.protocol == Protocol::Json {
            "/json"
        } else {
            "/tnet"
        };
        let mut client = m2.client();
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let id = frame_id(&handler.frame());
        drop(client);
        let frame = handler.frame();
        let mut ours = Vec::new();
        encode_disconnect(
            &mut ours,
            handler.ident.as_bytes(),
            id as i32,
            handler.protocol,
        );
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&frame)
        );
    }
}

/// A masked client frame.
fn ws_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    assert!(payload.len() < 126);
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[test]
fn websocket_messages_match_byte_for_byte() {
    let m2 = Mongrel2::start("m2-ws", "'limits.content_length': 1024");
    let raw = "GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: cBwMNtytxgTsJiW5ZNqhsA==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut client = m2.client();
    client.write_all(raw.as_bytes()).unwrap();
    let mut table = HeaderTable::new();
    let frame = m2.json.frame();
    let accept = zring::proto::ws::AcceptKey::from_key(b"cBwMNtytxgTsJiW5ZNqhsA==");
    let mut check = expect(&m2.json, "/ws");
    check.method = Some("WEBSOCKET_HANDSHAKE");
    check.body = accept.as_bytes();
    check.check(raw.as_bytes(), &frame, &mut table);
    let id = frame_id(&frame).to_string();
    let response = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n", String::from_utf8_lossy(accept.as_bytes()));
    m2.json.reply(&id, response.as_bytes());
    assert!(contains(&read_until(&mut client, b"\r\n\r\n"), b"101"));
    // text; fragments with a ping between them; close.
    let sent: Vec<Vec<u8>> = vec![
        ws_frame(0x81, b"hello"),
        ws_frame(0x01, b"frag1-"),
        ws_frame(0x89, b"ping!"),
        ws_frame(0x80, b"frag2"),
        ws_frame(0x82, &[0, 1, 2, 255]),
        ws_frame(0x88, &[3, 232]),
    ];
    let expected: [(u8, &[u8]); 5] = [
        (0x81, b"hello"),
        (0x89, b"ping!"),
        (0x01, b"frag1-frag2"),
        (0x82, &[0, 1, 2, 255]),
        (0x88, &[3, 232]),
    ];
    for bytes in &sent {
        client.write_all(bytes).unwrap();
    }
    for (first, body) in expected {
        let frame = m2.json.frame();
        let (flags, len) = ws_flags(first);
        let mut check = expect(&m2.json, "/ws");
        check.method = Some("WEBSOCKET");
        check.extra = vec![(b"FLAGS".to_vec(), flags[..len].to_vec())];
        check.body = body;
        check.check(raw.as_bytes(), &frame, &mut table);
    }
}

#[test]
fn upload_start_and_done_match_byte_for_byte() {
    let m2 = Mongrel2::start("m2-up", "'limits.content_length': 1024");
    let raw = "POST /up/file HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nContent-Type: application/octet-stream\r\n\r\n";
    let mut client = m2.client();
    client.write_all(raw.as_bytes()).unwrap();
    client.write_all(&[b'z'; 5000]).unwrap();
    let mut table = HeaderTable::new();
    let start = m2.json.frame();
    let text = String::from_utf8_lossy(&start).into_owned();
    let key = "\"x-mongrel2-upload-start\":\"";
    let at = text.find(key).expect("upload-start header") + key.len();
    let path = text[at..].split('"').next().unwrap().to_string();
    let mut check = expect(&m2.json, "/up");
    check.extra = vec![(
        b"x-mongrel2-upload-start".to_vec(),
        path.clone().into_bytes(),
    )];
    check.check(raw.as_bytes(), &start, &mut table);
    let done = m2.json.frame();
    check.extra.push((
        b"x-mongrel2-upload-done".to_vec(),
        path.clone().into_bytes(),
    ));
    check.check(raw.as_bytes(), &done, &mut table);
    let stored = std::fs::metadata(m2.dir.join(path.trim_start_matches('/'))).unwrap();
    assert_eq!(stored.len(), 5000);
}

#[test]
fn router_decisions_match_mongrel2() {
    let m2 = Mongrel2::start("m2-route", "'limits.content_length': 1024");
    let paths = [
        "/json",
        "/json/a",
        "/js",
        "/j",
        "/jx",
        "/tnet/x",
        "/t",
        "/users/42/x",
        "/users/",
        "/users",
        "/num42/x",
        "/num42/y",
        "/numx",
        "/nothing",
        "/",
        "/u",
        "/w",
        "/up",
        "/static/",
    ];
    same_routes(&m2, &paths);
}

#[test]
fn routes_without_a_literal_prefix_match_mongrel2() {
    // Patterns that start with `(` have an empty prefix: two of them once made zring panic
    // at load (found by the m2_config fuzz campaign). Routed as Mongrel2 routes them.
    let m2 = Mongrel2::start_with(
        "m2-route-empty",
        "'limits.content_length': 1024",
        "'(/a+)': json_handler, '(/b+)': tnet_handler, '/x': json_handler",
    );
    same_routes(&m2, &["/aaa", "/bbb", "/a", "/x", "/xy", "/", "/c"]);
}

/// Requests each of `paths` from the real Mongrel2 and checks it routes them as zring's
/// router does for the same config (loaded from the text and from m2sh's database).
fn same_routes(m2: &Mongrel2, paths: &[&str]) {
    let text = std::fs::read(m2.dir.join("m2.conf")).unwrap();
    let config = zring::m2config::load("m2.conf", &text).unwrap();
    // The database Mongrel2 runs from reads as the same config.
    let from_db = zring::m2config::db::load(&m2.dir.join("config.sqlite")).unwrap();
    assert_eq!(from_db, config);
    let server = &config.servers[0];
    let router = zring::m2config::route::Router::new(&server.hosts, &server.default_host);
    for &path in paths {
        let mut client = m2.client();
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: somewhere\r\n\r\n").as_bytes())
            .unwrap();
        let ours = router.resolve(Some(b"somewhere"), path.as_bytes());
        let target = ours.map(|found| router.target(&server.hosts, &found).clone());
        match target {
            Some(zring::m2config::Target::Handler(index)) => {
                let handler = if config.handlers[index].protocol == Protocol::Json {
                    &m2.json
                } else {
                    &m2.tnet
                };
                let frame = handler.frame();
                let pattern = ours.unwrap().pattern;
                let wanted = if handler.protocol == Protocol::Json {
                    format!("\"PATTERN\":\"{}\"", pattern.replace('\\', "\\\\"))
                } else {
                    format!("7:PATTERN,{}:{pattern},", pattern.len())
                };
                assert!(
                    contains(&frame, wanted.as_bytes()),
                    "{path}: {}",
                    String::from_utf8_lossy(&frame)
                );
                drop(client);
                let _notice = handler.frame();
            }
            Some(_) => {
                let got = read_until(&mut client, b"\r\n\r\n");
                assert!(got.starts_with(b"HTTP/1.1 "), "{path}: dir answers");
                assert_eq!(
                    m2.json.try_frame(Duration::from_millis(100)),
                    None,
                    "{path}"
                );
            }
            None => {
                let got = read_until(&mut client, b"\r\n\r\n");
                assert!(
                    got.starts_with(b"HTTP/1.1 404"),
                    "{path}: {}",
                    String::from_utf8_lossy(&got)
                );
            }
        }
    }
}

/// `m2sh load` of `text` in a fresh directory; the database's path.
fn m2sh_db(tag: &str, text: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    std::fs::write(dir.join("m2.conf"), text).unwrap();
    let out = Command::new(require_bin("m2sh"))
        .args(["load", "-config", "m2.conf", "-db", "config.sqlite"])
        .current_dir(&dir.path)
        .env("LOGNAME", "zring")
        .output()
        .expect("running m2sh");
    assert!(out.status.success(), "m2sh load: {out:?}");
    let db = dir.join("config.sqlite");
    (dir, db)
}

#[test]
fn the_database_reads_as_the_conf_text() {
    // Two servers, hosts with and without `matching`, every target kind, handlers shared
    // by spec (one merged), patterns, raw_payload, use_ssl, settings; m2sh writes it all.
    // (m2sh 1.12.2 aborts with a double free when a merged handler has raw_payload=1.)
    let text = r#"
a = Handler(send_spec='tcp://127.0.0.1:9001', send_ident='aaaa', recv_spec='tcp://127.0.0.1:9002', recv_ident='', protocol='tnetstring')
b = Handler(send_spec='ipc://run/b-send', send_ident='bbbb', recv_spec='ipc://run/b-recv', recv_ident='x', raw_payload=1)
same_as_a = Handler(send_spec='tcp://127.0.0.1:9001', send_ident='aaaa', recv_spec='tcp://127.0.0.1:9002', recv_ident='', protocol='tnetstring')
web = Dir(base='pub/', index_file='index.html', default_ctype='text/plain', cache_ttl=5)
one = Server(uuid='u-1', name='one', access_log='/logs/a.log', error_log='/logs/e.log', chroot='/var/www',
    pid_file='/run/one.pid', default_host='main', bind_addr='127.0.0.1', port=8081, use_ssl=1,
    hosts=[Host(name='main', routes={'/a/': a, '/b/(\d+)$': b, '/c': same_as_a, '/pub/': web,
                                     '/p/': Proxy(addr='127.0.0.1', port=8082), '@chat': b}),
           Host(name='other', matching='example.com', routes={'/': b})])
two = Server(uuid='u-2', name='two', access_log='/logs/a2.log', error_log='/logs/e2.log',
    pid_file='/run/two.pid', default_host='h', port=8083, hosts=[Host(name='h', routes={'/z': a})])
settings = {'limits.content_length': 2048, 'upload.temp_store': '/tmp/up.XXXXXX', 'certdir': 'certs/', 'zeromq.threads': 1}
servers = [one, two]
"#;
    let (_dir, db) = m2sh_db("m2p-db", text);
    let from_text = zring::m2config::load("m2.conf", text.as_bytes()).unwrap();
    let from_db = zring::m2config::db::load(&db).unwrap();
    assert_eq!(from_db, from_text);
    // A sanity check that the comparison saw the whole config.
    assert_eq!(from_db.servers.len(), 2);
    assert_eq!(from_db.handlers.len(), 2, "a and same_as_a are one handler");
    assert_eq!(from_db.servers[0].hosts[1].matching, "example.com");
    assert_eq!(from_db.setting("limits.content_length"), Some("2048"));
}

#[test]
fn database_errors_name_the_row() {
    // m2sh stores NULL for a parameter the text leaves out (it does not check): zring names
    // the table, the row and the column.
    let text = "h = Handler(send_spec='tcp://127.0.0.1:9001', send_ident='x', recv_spec='tcp://127.0.0.1:9002')
        main = Server(uuid='u', name='m', access_log='/a', error_log='/e', pid_file='/p', default_host='h', port=1,
            hosts=[Host(name='h', routes={'/': h})])
servers = [main]
";
    let (dir, db) = m2sh_db("m2p-dberr", text);
    let e = zring::m2config::db::load(&db).unwrap_err().to_string();
    assert!(e.contains("handler 1") && e.contains("recv_ident"), "{e}");
    // Not a database, and no file at all (never created: read-only).
    std::fs::write(dir.join("junk.sqlite"), b"junk").unwrap();
    assert!(zring::m2config::db::load(&dir.join("junk.sqlite")).is_err());
    assert!(zring::m2config::db::load(&dir.join("none.sqlite")).is_err());
    assert!(!dir.join("none.sqlite").exists());
}
