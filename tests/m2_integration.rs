//! Mongrel2 mode end to end: the SAME config and the SAME scripted client traffic run against
//! a real `mongrel2-core` 1.12.2 and against `zring --m2-config` (both runtimes). A recording
//! handler (ZeroMQ PULL + PUB, as Mongrel2 handlers connect) keeps every frame; frames must
//! match byte for byte apart from connection ids (and upload temp-file names), and what the
//! clients receive for the same handler replies must match too. Then zring-only checks:
//! fan-out to 128 held clients, bad replies, fd counts, and an unchanged python3 handler.
#[macro_use]
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::peers::require_bin;
use support::{free_ports, wait_port, Proc, TempDir};

const JSON_IDENT: &str = "11111111-2222-3333-4444-555555555555";
const TNET_IDENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SERVER_UUID: &str = "f400bf85-4538-4f7a-8908-67e313d515c2";
const QUIET: Duration = Duration::from_millis(400);

struct Handler {
    _context: zmq::Context,
    pull: zmq::Socket,
    publ: zmq::Socket,
    ident: &'static str,
}

impl Handler {
    fn connect(send_port: u16, recv_port: u16, ident: &'static str) -> Self {
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
        }
    }

    fn try_frame(&self, wait: Duration) -> Option<Vec<u8>> {
        let ready = self
            .pull
            .poll(zmq::POLLIN, wait.as_millis() as i64)
            .unwrap();
        (ready > 0).then(|| self.pull.recv_bytes(0).unwrap())
    }

    fn frame(&self) -> Vec<u8> {
        self.try_frame(Duration::from_secs(5))
            .expect("no frame from the server")
    }

    fn reply(&self, ids: &str, body: &[u8]) {
        let mut message = format!("{} {}:{}, ", self.ident, ids.len(), ids).into_bytes();
        message.extend_from_slice(body);
        self.publ.send(message, 0).unwrap();
    }
}

/// A server under test: Mongrel2 or zring, with its two handlers connected.
struct Server {
    dir: TempDir,
    port: u16,
    json: Handler,
    tnet: Handler,
    proc: Proc,
}

fn config(ports: &[u16], settings: &str) -> String {
    format!(
        "json_handler = Handler(send_spec='tcp://127.0.0.1:{}', send_ident='{JSON_IDENT}',\n\
         \x20   recv_spec='tcp://127.0.0.1:{}', recv_ident='', protocol='json')\n\
         tnet_handler = Handler(send_spec='tcp://127.0.0.1:{}', send_ident='{TNET_IDENT}',\n\
         \x20   recv_spec='tcp://127.0.0.1:{}', recv_ident='', protocol='tnetstring')\n\
         main = Server(uuid='{SERVER_UUID}', access_log='/logs/access.log',\n\
         \x20   error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',\n\
         \x20   pid_file='/run/mongrel2.pid', bind_addr='127.0.0.1', port={},\n\
         \x20   hosts=[Host(name='localhost', routes={{'/json': json_handler, '/tnet': tnet_handler,\n\
         \x20      '/ws': json_handler, '/up': json_handler,\n\
         \x20      '/static/': Dir(base='static/', index_file='index.html', default_ctype='text/plain')}})])\n\
         settings = {{'server.daemonize': 0, 'upload.temp_store': '/tmp/upload.XXXXXX', {settings}}}\n\
         servers = [main]\n",
        ports[0], ports[1], ports[2], ports[3], ports[4]
    )
}

/// Where zring reads the config from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `--m2-config m2.conf`.
    Conf,
    /// `m2sh load` into `config.sqlite`, then `mongrel2 config.sqlite UUID` where `mongrel2`
    /// is a symlink to zring (the command line Pushpin's `mongrel2_bin=` and init scripts use).
    Db,
}

/// `m2sh load -config m2.conf -db config.sqlite` in `dir`.
fn m2sh_load(dir: &TempDir, conf: &str, db: &str) {
    let out = Command::new(require_bin("m2sh"))
        .args(["load", "-config", conf, "-db", db])
        .current_dir(&dir.path)
        .env("LOGNAME", "zring")
        .output()
        .expect("running m2sh");
    assert!(out.status.success(), "m2sh load: {out:?}");
}

/// A symlink named `mongrel2` to the zring binary, in `dir/bin`.
fn mongrel2_symlink(dir: &TempDir) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("mongrel2");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_zring"), &link).unwrap();
    }
    link
}

impl Server {
    /// `kind`: `mongrel2`, or a zring runtime (`uring`, `epoll`).
    fn start(kind: &str, settings: &str) -> Server {
        Self::start_with(kind, settings, true)
    }

    /// `handlers: false` leaves the handler endpoints to another handler process (the
    /// recording handlers then connect to unused ports).
    fn start_with(kind: &str, settings: &str, handlers: bool) -> Server {
        Self::start_from(kind, settings, handlers, Source::Conf)
    }

    fn start_from(kind: &str, settings: &str, handlers: bool, source: Source) -> Server {
        let dir = TempDir::new(&format!("m2i-{kind}"));
        for sub in ["logs", "run", "tmp", "static"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("static/index.html"), "index\n").unwrap();
        let ports = free_ports(5);
        std::fs::write(dir.join("m2.conf"), config(&ports, settings)).unwrap();
        let mut proc = if kind == "mongrel2" {
            m2sh_load(&dir, "m2.conf", "config.sqlite");
            Proc::spawn(
                "mongrel2",
                Command::new(require_bin("mongrel2"))
                    .args(["config.sqlite", SERVER_UUID])
                    .current_dir(&dir.path),
                &dir.path,
            )
        } else if source == Source::Db {
            m2sh_load(&dir, "m2.conf", "config.sqlite");
            let mut command = Command::new(mongrel2_symlink(&dir));
            command
                .args(["config.sqlite", SERVER_UUID])
                .args(["--runtime", kind, "--workers", "2", "--log-level", "2"])
                .current_dir(&dir.path);
            Proc::spawn("zring", &mut command, &dir.path)
        } else {
            Proc::spawn(
                "zring",
                Command::new(env!("CARGO_BIN_EXE_zring"))
                    .args([
                        "--m2-config",
                        "m2.conf",
                        "--runtime",
                        kind,
                        "--workers",
                        "2",
                    ])
                    .args(["--log-level", "2"])
                    .current_dir(&dir.path),
                &dir.path,
            )
        };
        wait_port(ports[4], &mut proc, Duration::from_secs(10));
        let hp = if handlers {
            ports.clone()
        } else {
            free_ports(4)
        };
        let json = Handler::connect(hp[0], hp[1], JSON_IDENT);
        let tnet = Handler::connect(hp[2], hp[3], TNET_IDENT);
        // PUB/SUB slow joiner: a reply published before the subscription lands is lost.
        std::thread::sleep(Duration::from_millis(400));
        Server {
            dir,
            port: ports[4],
            json,
            tnet,
            proc,
        }
    }

    fn client(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proc.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.proc.stop();
    }
}

fn frame_id(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame)
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads until `want` has been seen, or the peer closes, or 5 s pass.
fn read_until(stream: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && !contains(&got, want) {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buffer[..n]),
        }
    }
    got
}

fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

fn reply_ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ws_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// What a scripted run saw, in order: frames (ids renumbered by first appearance, upload
/// names masked) and client bytes.
#[derive(Default)]
struct Transcript {
    items: Vec<(String, Vec<u8>)>,
    ids: HashMap<String, usize>,
}

impl Transcript {
    fn frame(&mut self, who: &str, frame: &[u8]) {
        let text = frame.to_vec();
        let first = text.iter().position(|&b| b == b' ').unwrap();
        let second = first + 1 + text[first + 1..].iter().position(|&b| b == b' ').unwrap();
        let id = String::from_utf8_lossy(&text[first + 1..second]).into_owned();
        let n = self.ids.len();
        let n = *self.ids.entry(id).or_insert(n);
        let mut out = text[..first + 1].to_vec();
        out.extend_from_slice(format!("#{n}").as_bytes());
        out.extend_from_slice(&text[second..]);
        // Temp-file names are random: keep their length, mask the letters.
        let key = b"/tmp/upload.";
        let mut at = 0;
        while let Some(p) = out[at..].windows(key.len()).position(|w| w == key) {
            let start = at + p + key.len();
            for b in out.iter_mut().skip(start).take(6) {
                *b = b'X';
            }
            at = start;
        }
        self.items.push((format!("frame to {who}"), out));
    }

    fn client(&mut self, what: &str, bytes: Vec<u8>) {
        self.items.push((format!("client {what}"), bytes));
    }

    /// Every frame either handler gets until both are quiet.
    fn drain(&mut self, s: &Server) {
        loop {
            let mut any = false;
            for (who, h) in [("json", &s.json), ("tnet", &s.tnet)] {
                while let Some(f) = h.try_frame(QUIET) {
                    self.frame(who, &f);
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }
}

/// The scripted traffic; the same for every server.
fn script(s: &Server) -> Transcript {
    let mut t = Transcript::default();
    // GET with a query and duplicate headers, then a POST form on the same connection.
    let mut c = s.client();
    c.write_all(b"GET /json/hello?x=1&y=2 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t/1\r\nX-Dup: a\r\nX-Dup: b\r\nX-Q: a\"b\\c\r\nAccept: */*\r\n\r\n").unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    s.json.reply(&frame_id(&f), &reply_ok("one"));
    t.client("get", read_until(&mut c, b"one"));
    c.write_all(b"POST /tnet/form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nname=zring").unwrap();
    let f = s.tnet.frame();
    t.frame("tnet", &f);
    s.tnet.reply(&frame_id(&f), &reply_ok("two"));
    t.client("post (keep-alive)", read_until(&mut c, b"two"));
    // The client goes: a disconnect notice.
    drop(c);
    t.drain(s);
    // HTTP/1.0: the handler replies and closes; no notice follows.
    let mut c = s.client();
    c.write_all(b"GET /json/close HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    let id = frame_id(&f);
    s.json.reply(&id, &reply_ok("bye"));
    s.json.reply(&id, b"");
    t.client("http/1.0 closed by handler", read_to_close(&mut c));
    let closed = id.clone();
    t.drain(s);
    // An upload over limits.content_length: start, then done.
    let mut c = s.client();
    c.write_all(b"POST /up/file HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\nContent-Type: application/octet-stream\r\n\r\n").unwrap();
    c.write_all(&[b'z'; 5000]).unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    let f2 = s.json.frame();
    t.frame("json", &f2);
    let id = frame_id(&f);
    // The handler owns the file (zring writes it to /tmp: it does not chroot).
    let text = String::from_utf8_lossy(&f2).into_owned();
    if let Some(at) = text.find("/tmp/upload.") {
        let _ = std::fs::remove_file(&text[at..at + 18]);
    }
    s.json.reply(&id, &reply_ok("stored"));
    s.json.reply(&id, b"");
    t.client("upload", read_to_close(&mut c));
    t.drain(s);
    // A chunked body goes to the upload path too, whatever its size.
    let mut c = s.client();
    c.write_all(b"POST /up/chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    let f2 = s.json.frame();
    t.frame("json", &f2);
    let text = String::from_utf8_lossy(&f2).into_owned();
    if let Some(at) = text.find("/tmp/upload.") {
        let stored = std::fs::read(&text[at..at + 18])
            .or_else(|_| std::fs::read(s.dir.join(&text[at + 1..at + 18])));
        let stored = stored.unwrap_or_default();
        assert_eq!(stored, b"hello world", "the decoded body is stored");
        t.client("chunked upload file", stored);
        let _ = std::fs::remove_file(&text[at..at + 18]);
    }
    let id = frame_id(&f);
    s.json.reply(&id, &reply_ok("stored"));
    s.json.reply(&id, b"");
    t.client("chunked upload", read_to_close(&mut c));
    t.drain(s);
    // WebSocket: handshake, text, fragments with a ping between, binary, close.
    let mut c = s.client();
    c.write_all(b"GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: cBwMNtytxgTsJiW5ZNqhsA==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    let id = frame_id(&f);
    let accept = String::from_utf8_lossy(&f[f.len() - 29..f.len() - 1]).into_owned();
    s.json.reply(&id, format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes());
    t.client("101", read_until(&mut c, b"\r\n\r\n"));
    for frame in [
        ws_frame(0x81, b"hello"),
        ws_frame(0x01, b"frag1-"),
        ws_frame(0x89, b"ping!"),
        ws_frame(0x80, b"frag2"),
        ws_frame(0x82, &[0, 1, 2, 255]),
    ] {
        c.write_all(&frame).unwrap();
    }
    for _ in 0..4 {
        let f = s.json.frame();
        t.frame("json", &f);
    }
    s.json.reply(&id, b"\x81\x0aecho:hello");
    t.client("ws echo", read_until(&mut c, b"echo:hello"));
    c.write_all(&ws_frame(0x88, &[3, 232])).unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    s.json.reply(&id, b"\x88\x02\x03\xe8");
    s.json.reply(&id, b"");
    t.client("ws close", read_to_close(&mut c));
    t.drain(s);
    let id = closed;
    // Bad replies are dropped; an unknown id and a closed id get notices; a cancel not.
    for bad in [
        format!("{JSON_IDENT} 9:{id}, bad-length"),
        format!("{JSON_IDENT} {}:{id},no-space", id.len()),
        format!("{JSON_IDENT} 3:a b, letters"),
        format!("{JSON_IDENT} 0:, none"),
    ] {
        s.json.publ.send(bad.as_bytes(), 0).unwrap();
    }
    // Mongrel2 sleeps 100 ms after each malformed reply: let it catch up.
    std::thread::sleep(Duration::from_millis(1500));
    s.json.reply("99999", b"x");
    t.drain(s);
    s.json.reply(&id, b"to a closed id");
    t.drain(s);
    let cancel = [
        format!("{JSON_IDENT} 7:X 99999, ").as_bytes(),
        b"22:3:ctl,12:6:cancel,0:~}]",
    ]
    .concat();
    s.json.publ.send(&cancel[..], 0).unwrap();
    t.drain(s);
    t
}

/// The server's fd count after one full request cycle (lazily opened fds included).
fn warm_fd_count(s: &Server) -> usize {
    let mut c = s.client();
    c.write_all(b"GET /json/warm HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let id = frame_id(&s.json.frame());
    s.json.reply(&id, &reply_ok("warm"));
    s.json.reply(&id, b"");
    read_to_close(&mut c);
    std::thread::sleep(Duration::from_millis(300));
    s.fd_count()
}

/// The items of one access log line (a tnetstring list), as text.
fn access_items(line: &str) -> Vec<String> {
    let (_, mut rest) = line.split_once(':').expect("a tnetstring");
    let mut items = Vec::new();
    while let Some((len, tail)) = rest.split_once(':') {
        let len: usize = len.parse().expect("a length");
        items.push(tail[..len].to_string());
        rest = &tail[len + 1..];
    }
    items
}

/// The server's access log with what varies masked: the client's port and the time.
fn access_log(s: &Server) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(s.dir.join("logs/access.log")).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut items = access_items(line);
            assert_eq!(items.len(), 9, "{line}");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let time: u64 = items[3].parse().unwrap();
            assert!(time <= now && time + 600 > now, "{line}");
            items[2] = "PORT".into();
            items[3] = "TIME".into();
            items
        })
        .collect()
}

fn compare(m2: &Transcript, z: &Transcript) {
    let show = |t: &Transcript| {
        t.items
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(&v[..v.len().min(90)])))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if m2.items != z.items {
        eprintln!("Mongrel2:\n{}\n\nzring:\n{}", show(m2), show(z));
    }
    for (i, (a, b)) in m2.items.iter().zip(&z.items).enumerate() {
        if a.1 != b.1 {
            let at = a.1.iter().zip(&b.1).position(|(x, y)| x != y);
            eprintln!(
                "item {i}: lengths {} / {}, first difference at {at:?}",
                a.1.len(),
                b.1.len()
            );
            if let Some(at) = at {
                let end = |v: &Vec<u8>| v.len().min(at + 40);
                eprintln!(
                    "  Mongrel2: {:?}\n  zring:    {:?}",
                    String::from_utf8_lossy(&a.1[at..end(&a.1)]),
                    String::from_utf8_lossy(&b.1[at..end(&b.1)])
                );
            }
        }
        assert_eq!(
            (a.0.as_str(), String::from_utf8_lossy(&a.1)),
            (b.0.as_str(), String::from_utf8_lossy(&b.1)),
            "item {i}: Mongrel2 (left) and zring (right) differ"
        );
    }
    let names = |t: &Transcript| t.items.iter().map(|i| i.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(m2), names(z), "different item lists");
}

both_runtimes! {
    same_traffic_same_frames_and_responses(rt) {
        let settings = "'limits.content_length': 1024";
        let m2 = Server::start("mongrel2", settings);
        let want = script(&m2);
        let want_log = access_log(&m2);
        drop(m2);
        let z = Server::start(rt, settings);
        let got = script(&z);
        compare(&want, &got);
        // The access log, in Mongrel2's format: the same lines (the client's port and the
        // time aside).
        assert!(want_log.len() >= 5, "{want_log:?}");
        assert_eq!(access_log(&z), want_log);
        drop(z);
        // The same config through `m2sh load`, served from the database by `mongrel2` (a
        // symlink to zring) with Mongrel2's command line.
        let z = Server::start_from(rt, settings, true, Source::Db);
        let got = script(&z);
        compare(&want, &got);
    }

    fan_out_to_128_held_clients(rt) {
        let z = Server::start(rt, "'limits.content_length': 1024");
        let base = warm_fd_count(&z);
        let mut clients = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..128 {
            let mut c = z.client();
            c.write_all(b"GET /json/hold HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
            ids.push(frame_id(&z.json.frame()));
            clients.push(c);
        }
        let all = ids.join(" ");
        z.json.reply(&all, &reply_ok("fan"));
        for c in &mut clients {
            assert!(contains(&read_until(c, b"fan"), b"fan"));
        }
        // 129 ids is over limits.handler_targets: dropped whole, as Mongrel2 drops it.
        let over = format!("{all} {}", ids[0]);
        z.json.reply(&over, &reply_ok("over"));
        z.json.reply(&all, b"");
        for c in &mut clients {
            let rest = read_to_close(c);
            assert!(!contains(&rest, b"over"), "{}", String::from_utf8_lossy(&rest));
        }
        // Nothing leaked: the fds go back to where they were.
        let end = Instant::now() + Duration::from_secs(5);
        while z.fd_count() > base && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(z.fd_count() <= base, "fds {} > {base}", z.fd_count());
    }

    bad_replies_are_handled_as_mongrel2_does(rt) {
        let z = Server::start(rt, "'limits.content_length': 1024");
        let base = warm_fd_count(&z);
        let mut c = z.client();
        c.write_all(b"GET /json/x HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let id = frame_id(&z.json.frame());
        // A length that lies, a bad grammar: dropped; the connection is unharmed.
        z.json.publ.send(format!("{JSON_IDENT} 99:{id}, lie").as_bytes(), 0).unwrap();
        z.json.publ.send(format!("{JSON_IDENT} {}:{id}x, grammar", id.len() + 1).as_bytes(), 0).unwrap();
        z.json.reply(&id, &reply_ok("fine"));
        let got = read_until(&mut c, b"fine");
        assert!(contains(&got, b"fine") && !contains(&got, b"lie"));
        // An extended reply naming an unknown key (no filter plugin): disconnects.
        z.json.publ.send([format!("{JSON_IDENT} {}:X {id}, ", id.len() + 2).as_bytes(), b"17:8:sendfile,3:abc,]"].concat(), 0).unwrap();
        assert!(read_to_close(&mut c).is_empty());
        // A body to the closed id: a disconnect notice.
        z.json.reply(&id, b"late");
        let f = z.json.frame();
        assert!(contains(&f, b"@*") && contains(&f, b"disconnect"), "{}", String::from_utf8_lossy(&f));
        let end = Instant::now() + Duration::from_secs(5);
        while z.fd_count() > base && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(z.fd_count() <= base);
    }

    python_handler_runs_unchanged(rt) {
        let z = Server::start_with(rt, "'limits.content_length': 1024", false);
        // The example handler takes the json handler's endpoints.
        let (send, recv) = {
            let conf = std::fs::read_to_string(z.dir.join("m2.conf")).unwrap();
            let ports: Vec<String> = conf
                .match_indices("tcp://127.0.0.1:")
                .map(|(i, m)| conf[i + m.len()..].chars().take_while(|c| c.is_ascii_digit()).collect())
                .collect();
            (format!("tcp://127.0.0.1:{}", ports[0]), format!("tcp://127.0.0.1:{}", ports[1]))
        };
        let mut py = Proc::spawn(
            "handler.py",
            Command::new("/usr/bin/python3").args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/m2/handler.py"),
                &send,
                &recv,
                "30",
            ]),
            &z.dir.path,
        );
        std::thread::sleep(Duration::from_millis(1500));
        // reply_http
        let mut c = z.client();
        c.write_all(b"GET /json/hello HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let got = read_until(&mut c, b"/json/hello");
        assert!(contains(&got, b"200 OK"), "{:?} {}", String::from_utf8_lossy(&got), py.log_text());
        // close
        c.write_all(b"GET /json/close HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let got = read_to_close(&mut c);
        assert!(contains(&got, b"/json/close"), "{}", String::from_utf8_lossy(&got));
        // deliver to many ids
        let mut held: Vec<TcpStream> = (0..5).map(|_| z.client()).collect();
        for h in &mut held {
            h.write_all(b"GET /json/hold HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut f = z.client();
        f.write_all(b"GET /json/fanout HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        assert!(contains(&read_until(&mut f, b"\r\n\r\n5"), b"\r\n\r\n5"));
        for h in &mut held {
            assert!(contains(&read_until(h, b"fanout"), b"fanout"));
        }
        py.stop();
    }
}

/// `zring --m2-config` with arguments; returns (exit code, stderr+stdout) once it exits.
fn zring_exits(dir: &TempDir, args: &[&str]) -> (i32, String) {
    let out = support::proc::output(
        Command::new(env!("CARGO_BIN_EXE_zring"))
            .args(args)
            .current_dir(&dir.path),
    )
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn config_errors_name_file_and_line() {
    let dir = TempDir::new("m2i-cfg");
    let ports = free_ports(5);
    let good = config(&ports, "'limits.content_length': 1024");
    // A typo in the first Handler (line 1).
    let bad = good.replacen("recv_spec", "recv_spek", 1);
    std::fs::write(dir.join("bad.conf"), bad).unwrap();
    let (code, text) = zring_exits(&dir, &["--m2-config", "bad.conf"]);
    assert_ne!(code, 0);
    assert!(
        text.contains("bad.conf:1:") && text.contains("recv_spec"),
        "{text}"
    );
    // ZHTTP flags do not mix with a Mongrel2 config.
    std::fs::write(dir.join("good.conf"), &good).unwrap();
    let (code, text) = zring_exits(&dir, &["--m2-config", "good.conf", "--listen", "1234"]);
    assert_eq!(code, 2, "{text}");
    // An unknown server name.
    std::fs::write(dir.join("good.conf"), &good).unwrap();
    let (code, text) = zring_exits(&dir, &["--m2-config", "good.conf", "--m2-server", "nope"]);
    assert_ne!(code, 0);
    assert!(text.contains("no server named"), "{text}");
}

both_runtimes! {
    tls_server_and_unsupported_settings_warning(rt) {
        let z = Server::start(
            rt,
            "'limits.content_length': 1024, 'certdir': 'certs/', 'net.tcp_keepalive': 1, \
             'control_port': 'ipc://run/settings-control'",
        );
        // The warning line names what zring does not do (not the control port setting, which
        // the control port reads).
        let log = z.proc.log_text();
        assert!(log.contains("net.tcp_keepalive") && !log.contains("server.daemonize"), "{log}");
        assert!(!log.contains("control_port"), "{log}");
        drop(z);
        // Same config with use_ssl=1: the certificate is certdir/<server uuid>.crt/.key.
        let dir = TempDir::new("m2i-tls");
        for sub in ["certs", "run", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let key = dir.s(&format!("certs/{SERVER_UUID}.key"));
        let crt = dir.s(&format!("certs/{SERVER_UUID}.crt"));
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                   "-keyout", &key, "-out", &crt])
            .output()
            .unwrap();
        assert!(ok.status.success());
        let ports = free_ports(5);
        let conf = config(&ports, "'certdir': 'certs/'").replace(", port=", ", use_ssl=1, port=");
        std::fs::write(dir.join("m2.conf"), conf).unwrap();
        let mut proc = Proc::spawn(
            "zring",
            Command::new(env!("CARGO_BIN_EXE_zring"))
                .args(["--m2-config", "m2.conf", "--runtime", rt])
                .current_dir(&dir.path),
            &dir.path,
        );
        wait_port(ports[4], &mut proc, Duration::from_secs(10));
        let json = Handler::connect(ports[0], ports[1], JSON_IDENT);
        std::thread::sleep(Duration::from_millis(400));
        let url = format!("https://localhost:{}/json/tls", ports[4]);
        let resolve = format!("localhost:{}:127.0.0.1", ports[4]);
        let curl = std::thread::spawn(move || {
            Command::new("curl")
                .args(["-s", "--max-time", "10", "--cacert", &crt, "--resolve", &resolve, &url])
                .output()
                .unwrap()
        });
        let f = json.frame();
        assert!(contains(&f, b"\"URL_SCHEME\":\"https\""), "{}", String::from_utf8_lossy(&f));
        json.reply(&frame_id(&f), &reply_ok("over tls"));
        let out = curl.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls");
        proc.stop();
    }
}

both_runtimes! {
    min_ping_kills_idle_connections_as_register_cleanout(rt) {
        // min_ping 1 s: an idle connection that moved few bytes is killed (3 of 3 > kill_limit
        // 2), with a disconnect notice to its handler.
        let z = Server::start(rt, "'limits.min_ping': 1, 'limits.tick_timer': 1");
        let mut c = z.client();
        c.write_all(b"GET /json/idle HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let id = frame_id(&z.json.frame());
        let start = Instant::now();
        assert!(read_to_close(&mut c).is_empty());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
        let f = z.json.frame();
        assert!(contains(&f, b"@*") && frame_id(&f) == id, "{}", String::from_utf8_lossy(&f));
        drop(z);
        // kill_limit 3: no combination is enough; the connection stays.
        let z = Server::start(rt, "'limits.min_ping': 1, 'limits.tick_timer': 1, 'limits.kill_limit': 3");
        let mut c = z.client();
        c.write_all(b"GET /json/idle HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let id = frame_id(&z.json.frame());
        std::thread::sleep(Duration::from_millis(2500));
        z.json.reply(&id, &reply_ok("still here"));
        assert!(contains(&read_until(&mut c, b"still here"), b"still here"));
    }
}

both_runtimes! {
    dir_routes_serve_files_safely(rt) {
        let z = Server::start(rt, "'limits.content_length': 1024");
        std::fs::write(z.dir.join("static/a.css"), "body{}\n").unwrap();
        std::fs::write(z.dir.join("secret.txt"), "secret\n").unwrap();
        std::os::unix::fs::symlink(z.dir.join("secret.txt"), z.dir.join("static/link.txt")).unwrap();
        let get = |path: &str, method: &str| {
            let mut c = z.client();
            c.write_all(format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
            String::from_utf8_lossy(&read_to_close(&mut c)).into_owned()
        };
        let index = get("/static/", "GET");
        assert!(index.starts_with("HTTP/1.1 200") && index.ends_with("index\n"), "{index}");
        assert!(index.contains("Content-Type: text/html"), "{index}");
        let css = get("/static/a.css", "GET");
        assert!(css.contains("Content-Type: text/css") && css.ends_with("body{}\n"), "{css}");
        let head = get("/static/a.css", "HEAD");
        assert!(head.contains("Content-Length: 7") && head.ends_with("\r\n\r\n"), "{head}");
        for escape in ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/link.txt", "/static/none"] {
            let r = get(escape, "GET");
            assert!(r.starts_with("HTTP/1.1 404") && !r.contains("secret"), "{escape}: {r}");
        }
        assert!(get("/static/a.css", "POST").starts_with("HTTP/1.1 405"));
    }

    flash_socket_messages_are_refused(rt) {
        let z = Server::start(rt, "'limits.content_length': 1024");
        for msg in [&b"@chat {\"type\":\"msg\"}\0"[..], b"<policy-file-request/>\0"] {
            let mut c = z.client();
            c.write_all(msg).unwrap();
            let got = read_to_close(&mut c);
            assert!(got.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&got));
        }
        assert_eq!(z.json.try_frame(Duration::from_millis(300)), None);
    }
}

/// `["ctl", {"credits": n}]` as an extended reply body.
fn credits(n: u32) -> Vec<u8> {
    let num = n.to_string();
    let dict = format!("7:credits,{}:{num}#", num.len());
    let list = format!("3:ctl,{}:{dict}}}", dict.len());
    format!("{}:{list}]", list.len()).into_bytes()
}

fn x_reply(h: &Handler, id: &str, body: &[u8]) {
    let ids = format!("X {id}");
    let mut message = format!("{} {}:{ids}, ", h.ident, ids.len()).into_bytes();
    message.extend_from_slice(body);
    h.publ.send(message, 0).unwrap();
}

/// `upload.stream`: the body goes to the handler as credits allow.
fn stream_script(s: &Server) -> Transcript {
    let mut t = Transcript::default();
    let mut c = s.client();
    let mut first =
        b"POST /up/stream HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n".to_vec();
    first.extend_from_slice(&[b'a'; 1000]);
    c.write_all(&first).unwrap();
    let f = s.json.frame();
    // Mongrel2 1.12.2 puts ~35 bytes of its own memory at the end of this first body in
    // place of the client's: compare the message up to its last 40 bytes, and require the
    // client's bytes from zring.
    t.frame("json", &f[..f.len() - 40]);
    if s.proc.name == "zring" {
        assert!(f.ends_with(&[&[b'a'; 40][..], b","].concat()));
    }
    let id = frame_id(&f);
    c.write_all(&[b'b'; 4000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    t.drain(s); // nothing without credits
                // Messages are at most limits.content_length bytes, as far as the credits go.
                // (At least one frame follows each grant: wait for it however loaded the machine is.)
    x_reply(&s.json, &id, &credits(1500));
    t.frame("json", &s.json.frame());
    t.drain(s);
    x_reply(&s.json, &id, &credits(2500));
    t.frame("json", &s.json.frame());
    t.drain(s);
    s.json.reply(&id, &reply_ok("streamed"));
    s.json.reply(&id, b"");
    t.client("stream", read_to_close(&mut c));
    t.drain(s);
    // Chunked: the first message carries no body; chunks follow under the credits.
    let mut c = s.client();
    c.write_all(b"POST /up/chunks HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    let id = frame_id(&f);
    std::thread::sleep(Duration::from_millis(300));
    x_reply(&s.json, &id, &credits(100));
    t.frame("json", &s.json.frame());
    t.drain(s);
    s.json.reply(&id, &reply_ok("chunks"));
    s.json.reply(&id, b"");
    t.client("chunked stream", read_to_close(&mut c));
    t.drain(s);
    t
}

both_runtimes! {
    upload_stream_matches_mongrel2(rt) {
        let settings = "'limits.content_length': 1024, 'upload.stream': 1";
        let m2 = Server::start("mongrel2", settings);
        let want = stream_script(&m2);
        drop(m2);
        let z = Server::start(rt, settings);
        let got = stream_script(&z);
        compare(&want, &got);
        drop(z);
        let z = Server::start_from(rt, settings, true, Source::Db);
        let got = stream_script(&z);
        compare(&want, &got);
    }
}

/// `download.flow_control=1` (Pushpin's setting): the first request of a connection, and
/// every message built on it (WebSocket frames), carries `DOWNLOAD_CREDITS`; later requests
/// do not; each reply written comes back to the handler as a credits notice (json and
/// tnetstring); `ctl` keep-alive and cancel still work; a reply past the 100 KiB budget
/// drops the connection.
fn flow_script(s: &Server) -> Transcript {
    let mut t = Transcript::default();
    let mut c = s.client();
    c.write_all(b"GET /json/a HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    let id = frame_id(&f);
    // One reply at a time, each read by the client before the next: one notice each.
    for body in ["first", "second reply"] {
        s.json.reply(&id, &reply_ok(body));
        t.client("reply", read_until(&mut c, body.as_bytes()));
        t.frame("json", &s.json.frame());
    }
    // The next request on the connection carries no credits.
    c.write_all(b"GET /json/b HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    t.frame("json", &s.json.frame());
    x_reply(&s.json, &id, b"20:3:ctl,10:10:keep-alive,4:true!}]");
    s.json.reply(&id, &reply_ok("third"));
    t.client("reply", read_until(&mut c, b"third"));
    t.drain(s);
    // tnetstring handler: its notices in tnetstring.
    let mut c2 = s.client();
    c2.write_all(b"GET /tnet/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let f = s.tnet.frame();
    t.frame("tnet", &f);
    let tid = frame_id(&f);
    s.tnet.reply(&tid, &reply_ok("tnet"));
    t.client("tnet reply", read_until(&mut c2, b"tnet"));
    t.frame("tnet", &s.tnet.frame());
    s.tnet.reply(&tid, b"");
    t.client("tnet close", read_to_close(&mut c2));
    t.drain(s);
    // WebSocket as the connection's first request: the handshake and frames carry it.
    let mut w = s.client();
    w.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let f = s.json.frame();
    t.frame("json", &f);
    let wid = frame_id(&f);
    w.write_all(&ws_frame(0x81, b"hello")).unwrap();
    t.frame("json", &s.json.frame());
    s.json.reply(&wid, b"\x81\x02ok");
    t.client("ws", read_until(&mut w, b"ok"));
    t.frame("json", &s.json.frame());
    // A reply over the 100 KiB budget: the connection is dropped, nothing written.
    s.json.reply(&id, &vec![b'x'; 150_000]);
    t.client("over budget", read_to_close(&mut c));
    t.drain(s);
    t
}

both_runtimes! {
    download_flow_control_matches_mongrel2(rt) {
        let settings = "'download.flow_control': 1";
        let m2 = Server::start("mongrel2", settings);
        let want = flow_script(&m2);
        drop(m2);
        assert!(
            want.items.iter().any(|(_, b)| contains(b, b"DOWNLOAD_CREDITS\":\"102400\"")),
            "Mongrel2 sent no DOWNLOAD_CREDITS"
        );
        assert!(want.items.iter().any(|(_, b)| contains(b, b"{\"type\":\"credits\"}")));
        let z = Server::start(rt, settings);
        let got = flow_script(&z);
        compare(&want, &got);
    }
}

/// The config of `config` with one more handler (ports `extra[0]`, `extra[1]`) routed at
/// `/new`: what a reload adds.
fn config_with_new_route(ports: &[u16], extra: &[u16]) -> String {
    config(ports, "'limits.content_length': 1024")
        .replace(
            "'/tnet': tnet_handler,",
            "'/tnet': tnet_handler, '/new': new_handler,",
        )
        .replace(
            "main = Server(",
            &format!(
                "new_handler = Handler(send_spec='tcp://127.0.0.1:{}', send_ident='{NEW_IDENT}',\n\
                 \x20   recv_spec='tcp://127.0.0.1:{}', recv_ident='', protocol='json')\n\
                 main = Server(",
                extra[0], extra[1]
            ),
        )
}

/// The pid file's text once written (zring listens first, then writes it, as Mongrel2).
fn wait_pid_file(path: &std::path::Path) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.is_empty() => return text,
            _ if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("no pid file {}: {other:?}", path.display()),
        }
    }
}

const NEW_IDENT: &str = "99999999-2222-3333-4444-555555555555";

/// The ports a server's config names: json send/recv, tnet send/recv, listener.
fn config_ports(s: &Server) -> Vec<u16> {
    let conf = std::fs::read_to_string(s.dir.join("m2.conf")).unwrap();
    let mut ports: Vec<u16> = conf
        .match_indices("tcp://127.0.0.1:")
        .map(|(i, m)| {
            conf[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap()
        })
        .collect();
    ports.push(s.port);
    ports
}

both_runtimes! {
    sighup_reloads_the_database_without_dropping_connections(rt) {
        let z = Server::start_from(rt, "'limits.content_length': 1024", true, Source::Db);
        let pid_file = z.dir.join("run/mongrel2.pid");
        assert_eq!(wait_pid_file(&pid_file), z.proc.pid().to_string());
        // An open keep-alive connection that has been served, and one whose request waits
        // for its reply across the reload.
        let mut served = z.client();
        served.write_all(b"GET /json/a HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let id = frame_id(&z.json.frame());
        z.json.reply(&id, &reply_ok("before"));
        assert!(contains(&read_until(&mut served, b"before"), b"before"));
        let mut waiting = z.client();
        waiting.write_all(b"GET /json/b HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let waiting_id = frame_id(&z.json.frame());
        // /new does not exist yet: Mongrel2's 404.
        let mut c = z.client();
        c.write_all(b"GET /new/x HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        assert!(read_to_close(&mut c).starts_with(b"HTTP/1.1 404"));
        // The changed config, loaded by m2sh and moved over the database, then SIGHUP.
        let extra = free_ports(2);
        let conf = config_with_new_route(&config_ports(&z), &extra);
        std::fs::write(z.dir.join("m2-new.conf"), conf).unwrap();
        m2sh_load(&z.dir, "m2-new.conf", "config-new.sqlite");
        std::fs::rename(z.dir.join("config-new.sqlite"), z.dir.join("config.sqlite")).unwrap();
        let new = Handler::connect(extra[0], extra[1], NEW_IDENT);
        let mut z = z;
        z.proc.signal(libc::SIGHUP);
        // The new route and its new handler serve new connections.
        let end = Instant::now() + Duration::from_secs(10);
        let frame = loop {
            let mut c = z.client();
            c.write_all(b"GET /new/x HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
            if let Some(f) = new.try_frame(Duration::from_millis(500)) {
                break (c, f);
            }
            assert!(Instant::now() < end, "/new never reached the new handler: {}", z.proc.log_text());
        };
        let (mut c, f) = frame;
        assert!(f.starts_with(NEW_IDENT.as_bytes()) && contains(&f, b"\"PATH\":\"/new/x\""), "{}", String::from_utf8_lossy(&f));
        std::thread::sleep(Duration::from_millis(400)); // the new handler's PUB joins
        new.reply(&frame_id(&f), &reply_ok("new route"));
        assert!(contains(&read_until(&mut c, b"new route"), b"new route"));
        // The connections opened before the reload are still there and served.
        z.json.reply(&waiting_id, &reply_ok("across"));
        assert!(contains(&read_until(&mut waiting, b"across"), b"across"));
        served.write_all(b"GET /json/c HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let f = z.json.frame();
        assert_eq!(frame_id(&f), id, "the same connection (its id is kept)");
        z.json.reply(&id, &reply_ok("after"));
        assert!(contains(&read_until(&mut served, b"after"), b"after"));
        assert!(z.proc.exited().is_none());
        // A database that does not load leaves the running config.
        std::fs::write(z.dir.join("config.sqlite"), b"not a database").unwrap();
        z.proc.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(500));
        let mut c = z.client();
        c.write_all(b"GET /new/y HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let f = new.frame();
        assert!(contains(&f, b"/new/y"));
        // Answered: a request still at its handler would hold SIGTERM's drain until its reply
        // or --shutdown-timeout (10 s, the bound below; docs/operations.md).
        new.reply(&frame_id(&f), &reply_ok("last one"));
        assert!(contains(&read_until(&mut c, b"last one"), b"last one"));
        // SIGTERM: a clean stop that removes the pid file, as Mongrel2's complete_shutdown.
        let status = z.proc.terminate(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        assert!(!pid_file.exists());
    }
}

#[test]
fn pid_file_stale_or_live_and_the_mongrel2_name() {
    let dir = TempDir::new("m2i-pid");
    for sub in ["logs", "run", "tmp", "static"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let ports = free_ports(5);
    std::fs::write(
        dir.join("m2.conf"),
        config(&ports, "'limits.content_length': 1024"),
    )
    .unwrap();
    m2sh_load(&dir, "m2.conf", "config.sqlite");
    let mongrel2 = mongrel2_symlink(&dir);
    // Under the name mongrel2 a config is required: never ZHTTP on port 8000.
    let out = support::proc::output(Command::new(&mongrel2).current_dir(&dir.path)).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("usage: mongrel2 config.sqlite server_uuid")
    );
    // A uuid the database does not have.
    let (code, text) = zring_exits(&dir, &["--m2-db", "config.sqlite", "--m2-uuid", "nope"]);
    assert_ne!(code, 0);
    assert!(text.contains("no server with uuid \"nope\""), "{text}");
    // A live process in the pid file (this test): refused.
    let pid_file = dir.join("run/mongrel2.pid");
    std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
    let (code, text) = zring_exits(&dir, &["config.sqlite", SERVER_UUID]);
    assert_ne!(code, 0);
    assert!(text.contains("still running"), "{text}");
    // A dead one: removed, and replaced by zring's pid.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(&pid_file, dead.to_string()).unwrap();
    let mut proc = Proc::spawn(
        "zring",
        Command::new(&mongrel2)
            .args(["config.sqlite", SERVER_UUID])
            .current_dir(&dir.path),
        &dir.path,
    );
    wait_port(ports[4], &mut proc, Duration::from_secs(10));
    assert_eq!(wait_pid_file(&pid_file), proc.pid().to_string());
    proc.signal(libc::SIGINT);
    assert!(proc
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(!pid_file.exists());
}

#[test]
fn daemonize_chroot_and_privileges_as_mongrel2() {
    // SAFETY: a getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: chroot and the privilege drop cannot be tested");
        return;
    }
    // The chroot belongs to `nobody`: zring must end up running as nobody, inside it.
    let dir = TempDir::new("m2i-chroot");
    for sub in ["logs", "run", "tmp", "static"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("static/index.html"), "inside\n").unwrap();
    let ports = free_ports(5);
    let conf = config(&ports, "'limits.content_length': 1024")
        .replace("'server.daemonize': 0", "'server.daemonize': 1");
    std::fs::write(dir.join("m2.conf"), conf).unwrap();
    m2sh_load(&dir, "m2.conf", "config.sqlite");
    let (nobody_uid, nobody_gid) = (65534u32, 65534u32);
    let chown = Command::new("chown")
        .args(["-R", "65534:65534", &dir.s("")])
        .status()
        .unwrap();
    assert!(chown.success());
    // Daemonized: the started process exits at once (the daemon keeps stdio, as Mongrel2's
    // `daemon(0, 1)`, so its output goes to a file), the daemon keeps serving.
    let logs = TempDir::new("m2i-chroot-out");
    let mut starter = Proc::spawn(
        "zring",
        Command::new(env!("CARGO_BIN_EXE_zring"))
            .args([
                "--m2-db",
                "config.sqlite",
                "--m2-uuid",
                SERVER_UUID,
                "--runtime",
                "epoll",
            ])
            .current_dir(&dir.path),
        &logs.path,
    );
    let started = starter.wait_exit(Duration::from_secs(10));
    assert!(
        started.is_some_and(|s| s.success()),
        "{started:?} {}",
        starter.log_text()
    );
    let pid_file = dir.join("run/mongrel2.pid");
    let error_log = dir.join("logs/error.log");
    // Its log goes to error_log inside the chroot once it runs as nobody there.
    let end = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&error_log)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(
            Instant::now() < end,
            "no start in error_log: {}",
            starter.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid: i32 = wait_pid_file(&pid_file).parse().unwrap();
    // From here on the daemon is ours to stop, by its pid.
    struct Daemon(i32);
    impl Drop for Daemon {
        fn drop(&mut self) {
            // SAFETY: the pid is the daemon this test started (read from its pid file).
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let daemon = Daemon(pid);
    assert_ne!(
        pid,
        starter.pid(),
        "the daemon is a child of the started process"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), [nobody_uid; 4], "{status}");
    assert_eq!(ids("Gid:"), [nobody_gid; 4], "{status}");
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(root, std::fs::canonicalize(&dir.path).unwrap());
    // It serves: a Dir route inside the chroot, and a handler route.
    let end = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match TcpStream::connect(("127.0.0.1", ports[4])) {
            Ok(c) => break c,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the daemon does not listen: {e}"),
        }
    };
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /static/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut c);
    assert!(
        got.starts_with(b"HTTP/1.1 200") && got.ends_with(b"inside\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // SIGTERM: it stops and removes its pid file.
    // SAFETY: as in Drop.
    unsafe { libc::kill(daemon.0, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(10);
    while pid_file.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pid_file.exists());
    // Stopped: its pid is no longer ours to signal.
    std::mem::forget(daemon);
}
