//! Debian's Pushpin 1.36 running its Mongrel2 stack (`services=mongrel2,m2adapter,zurl,
//! pushpin-proxy,pushpin-handler`), first with `mongrel2_bin` pointing at zring through a
//! symlink named `mongrel2`, then with the real `mongrel2-core` 1.12.2, in one test: plain
//! proxying to a local origin, a GRIP HTTP stream receiving a publish, and a GRIP long-poll
//! answered by a publish must work with both. Pushpin runs with `--merge-output`, so its
//! runner reads the server's log lines itself (`Mongrel2Service::formatLogLine`): none may
//! come out as "Can't parse mongrel2 log" (or "Can't parse severity"). m2adapter polls the
//! server's control port (`status what=net`) and must report it working with both.
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use support::net::LoopbackServer;
use support::peers::{self, Proc, TempDir};

const PLAIN_BODY: &str = "hello from origin\n";
const STREAM_BODY: &str = "stream open\n";
const PUBLISHED: &str = "published message\n";
const POLL_DONE: &str = "long-poll done\n";
const ECHO_PREFIX: &str = "echo: ";
const WS_PUBLISHED: &str = "published to the WebSocket";

/// The origin (run by `LoopbackServer`): `/plain`, `/stream` (GRIP stream), `/poll` (GRIP
/// long-poll), `/ws` (GRIP WebSocket-over-HTTP).
fn serve(mut c: TcpStream) {
    c.set_nonblocking(false).ok();
    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let head_len = loop {
        if let Some(i) = peers::find(&req, b"\r\n\r\n") {
            break i + 4;
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&req[..head_len]).into_owned();
    let body_len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while req.len() < head_len + body_len {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let body = &req[head_len..head_len + body_len];
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let grip = |hold: &str, channel: &str, body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nGrip-Hold: {hold}\r\nGrip-Channel: {channel}\r\nGrip-Timeout: 60\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let resp = match path.as_str() {
        "/plain" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_BODY}",
            PLAIN_BODY.len()
        )
        .into_bytes(),
        "/stream" => grip("stream", "test", STREAM_BODY),
        "/poll" => grip("response", "lp", "timed out\n"),
        "/ws" if header(&head, "content-type") == Some("application/websocket-events") => {
            ws_over_http(body)
        }
        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    };
    let _ = c.write_all(&resp);
}

/// A header's value in a request head (first match, case-insensitive name).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The events of a WebSocket-over-HTTP body: `TYPE[ HEXLEN]\r\n[CONTENT\r\n]` each.
fn ws_events(mut body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(eol) = peers::find(body, b"\r\n") {
        let line = String::from_utf8_lossy(&body[..eol]).into_owned();
        body = &body[eol + 2..];
        let (kind, len) = match line.split_once(' ') {
            Some((k, l)) => (k.to_string(), usize::from_str_radix(l, 16).unwrap_or(0)),
            None => (line.clone(), 0),
        };
        let content = if line.contains(' ') {
            let c = body[..len.min(body.len())].to_vec();
            body = &body[(len + 2).min(body.len())..];
            c
        } else {
            Vec::new()
        };
        out.push((kind, content));
    }
    out
}

/// One event in WebSocket-over-HTTP's encoding.
fn ws_event(out: &mut Vec<u8>, kind: &str, content: Option<&[u8]>) {
    match content {
        Some(c) => {
            out.extend_from_slice(format!("{kind} {:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(format!("{kind}\r\n").as_bytes()),
    }
}

/// The GRIP WebSocket-over-HTTP origin (Pushpin's `over_http` route): `OPEN` is accepted
/// with the `grip` extension and a control message subscribing the connection to channel
/// `ws`; a `TEXT` is echoed with `ECHO_PREFIX` (as content: `m:`); a `CLOSE` is answered with
/// the same code.
fn ws_over_http(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, content) in ws_events(body) {
        match kind.as_str() {
            "OPEN" => {
                ws_event(&mut out, "OPEN", None);
                let sub = br#"c:{"type":"subscribe","channel":"ws"}"#;
                ws_event(&mut out, "TEXT", Some(sub));
            }
            "TEXT" => {
                // With the `grip` extension every origin message is prefixed: `c:` control,
                // `m:` content (Pushpin drops an unprefixed one).
                let mut echo = format!("m:{ECHO_PREFIX}").into_bytes();
                echo.extend_from_slice(&content);
                ws_event(&mut out, "TEXT", Some(&echo));
            }
            "CLOSE" => ws_event(&mut out, "CLOSE", Some(&content)),
            _ => {}
        }
    }
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/websocket-events\r\nSec-WebSocket-Extensions: grip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        out.len()
    )
    .into_bytes();
    resp.extend_from_slice(&out);
    resp
}

/// `/etc/pushpin/pushpin.conf` with `overrides` applied (existing keys replaced in place,
/// others appended to their section).
fn rewrite_ini(src: &str, overrides: &[(&str, &str, String)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut done = vec![false; overrides.len()];
    let mut section = String::new();
    let flush = |section: &str, out: &mut Vec<String>, done: &mut Vec<bool>| {
        for (i, (s, k, v)) in overrides.iter().enumerate() {
            if *s == section && !done[i] {
                out.push(format!("{k}={v}"));
                done[i] = true;
            }
        }
    };
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            flush(&section, &mut out, &mut done);
            section = t[1..t.len() - 1].to_string();
            out.push(line.to_string());
            continue;
        }
        if let Some((k, _)) = t.split_once('=').filter(|_| !t.starts_with('#')) {
            if let Some(i) = overrides
                .iter()
                .position(|(s, kk, _)| *s == section && *kk == k.trim())
            {
                out.push(format!("{}={}", k.trim(), overrides[i].2));
                done[i] = true;
                continue;
            }
        }
        out.push(line.to_string());
    }
    flush(&section, &mut out, &mut done);
    out.join("\n") + "\n"
}

struct Pushpin {
    runner: Proc,
    dir: TempDir,
    http: u16,
    publish: u16,
}

impl Pushpin {
    fn start(tag: &str, mongrel2_bin: &Path, origin: u16) -> Pushpin {
        let src = std::fs::read_to_string("/etc/pushpin/pushpin.conf")
            .expect("pushpin is not installed (scripts/setup.sh test installs it)");
        for bin in ["pushpin", "m2adapter", "m2sh", "zurl", "mongrel2"] {
            peers::require_bin(bin);
        }
        let dir = TempDir::new(&format!("ppm2-{tag}"));
        let p = peers::free_ports(5);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let routes = dir.join("routes");
        // `over_http`: a WebSocket client reaches the origin as WebSocket-over-HTTP requests.
        std::fs::write(&routes, format!("* 127.0.0.1:{origin},over_http\n")).unwrap();
        let ov = vec![
            ("global", "rundir", dir.s("run")),
            ("global", "port_offset", "0".into()),
            (
                "runner",
                "services",
                "mongrel2,m2adapter,zurl,pushpin-proxy,pushpin-handler".into(),
            ),
            ("runner", "http_port", format!("127.0.0.1:{}", p[0])),
            ("runner", "log_level", "3".into()),
            (
                "runner",
                "mongrel2_bin",
                mongrel2_bin.to_string_lossy().into_owned(),
            ),
            ("proxy", "routesfile", routes.to_string_lossy().into_owned()),
            (
                "proxy",
                "zurl_out_specs",
                "ipc://{rundir}/{ipc_prefix}zurl-in".into(),
            ),
            (
                "proxy",
                "zurl_out_stream_specs",
                "ipc://{rundir}/{ipc_prefix}zurl-in-stream".into(),
            ),
            (
                "proxy",
                "zurl_in_specs",
                "ipc://{rundir}/{ipc_prefix}zurl-out".into(),
            ),
            (
                "handler",
                "push_in_spec",
                format!("tcp://127.0.0.1:{}", p[2]),
            ),
            (
                "handler",
                "push_in_sub_specs",
                format!("tcp://127.0.0.1:{}", p[3]),
            ),
            ("handler", "push_in_http_addr", "127.0.0.1".into()),
            ("handler", "push_in_http_port", p[1].to_string()),
            (
                "handler",
                "command_spec",
                format!("tcp://127.0.0.1:{}", p[4]),
            ),
        ];
        let conf = dir.join("pushpin.conf");
        std::fs::write(&conf, rewrite_ini(&src, &ov)).unwrap();
        let mut cmd = std::process::Command::new(peers::require_bin("pushpin"));
        cmd.arg("--merge-output")
            .arg(format!("--config={}", conf.display()))
            .env("LOGNAME", "zring")
            .current_dir(&dir.path);
        let mut runner = Proc::spawn("pushpin", &mut cmd, &dir.path);
        runner.term_first = true;
        runner.grace = Duration::from_secs(10);
        Pushpin {
            runner,
            http: p[0],
            publish: p[1],
            dir,
        }
    }
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.runner.log_tail(60));
        }
        self.runner.stop();
    }
}

fn request(port: u16, path: &str, timeout: Duration) -> Result<(String, String), String> {
    let mut c = peers::Client::connect(port)?;
    let host = c.host();
    c.send(format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ))?;
    let r = c.read_response(false, timeout)?;
    let text = String::from_utf8_lossy(&r).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

fn publish(port: u16, item: &str) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let r = agent
        .post(&format!("http://127.0.0.1:{port}/publish/"))
        .set("Content-Type", "application/json")
        .send_string(&format!("{{\"items\":[{item}]}}"))
        .map_err(|e| format!("publish: {e}"))?;
    match r.status() {
        200 => Ok(()),
        s => Err(format!("publish: status {s}")),
    }
}

fn json_text(s: &str) -> String {
    s.replace('\n', "\\n")
}

/// The checks, against one server. Returns the runner's output.
fn run_stack(tag: &str, mongrel2_bin: &Path, want_exe: &Path) -> String {
    let origin = LoopbackServer::start(serve);
    let pp = Pushpin::start(tag, mongrel2_bin, origin.port);
    let http = pp.http;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match request(http, "/plain", Duration::from_secs(3)) {
            Ok((s, _)) if s.contains(" 200 ") => break,
            other => assert!(
                Instant::now() < deadline,
                "{tag}: not serving /plain within 30 s: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The server Pushpin started is the one under test.
    let pid: i32 = std::fs::read_to_string(pp.dir.join(&format!("run/mongrel2_{http}.pid")))
        .expect("mongrel2 pid file")
        .trim()
        .parse()
        .unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("server process");
    assert_eq!(
        std::fs::canonicalize(&exe).unwrap(),
        std::fs::canonicalize(want_exe).unwrap(),
        "{tag}: Pushpin's mongrel2 is not the binary under test"
    );
    // Plain proxying.
    let (status, body) = request(http, "/plain", Duration::from_secs(5)).unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{tag}");
    assert_eq!(body, PLAIN_BODY, "{tag}");
    // GRIP HTTP streaming with a publish.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        let mut c = peers::Client::connect(http).unwrap();
        let host = c.host();
        c.send(format!("GET /stream HTTP/1.1\r\nHost: {host}\r\n\r\n"))
            .unwrap();
        let head = String::from_utf8_lossy(&c.head().expect("stream head")).into_owned();
        if head.starts_with("HTTP/1.1 500 ") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200)); // pushpin-handler still starting
            continue;
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{tag}: {head:?}");
        break c;
    };
    c.part(STREAM_BODY.as_bytes())
        .unwrap_or_else(|e| panic!("{tag}: initial stream body: {e}"));
    let item = format!(
        "{{\"channel\":\"test\",\"formats\":{{\"http-stream\":{{\"content\":\"{}\"}}}}}}",
        json_text(PUBLISHED)
    );
    let mut got = Err(String::new());
    for _ in 0..3 {
        publish(pp.publish, &item).unwrap();
        got = c.read_until(PUBLISHED.as_bytes(), Duration::from_secs(3));
        if got.is_ok() {
            break;
        }
    }
    got.unwrap_or_else(|e| panic!("{tag}: published message not received: {e}"));
    // The control port of Pushpin's config answers `status what=net` (m2adapter's poll)
    // with the open stream's connection, under the id m2adapter uses.
    let context = zmq::Context::new();
    let ctl = context.socket(zmq::REQ).unwrap();
    ctl.set_linger(0).unwrap();
    ctl.connect(&format!(
        "ipc://{}/pushpin-m2-control-{http}",
        pp.dir.join("run").display()
    ))
    .unwrap();
    ctl.send(&b"26:6:status,13:4:what,3:net,}]"[..], 0).unwrap();
    assert!(
        ctl.poll(zmq::POLLIN, 5000).unwrap() > 0,
        "{tag}: no control reply"
    );
    let table = peers::tn::decode(&ctl.recv_bytes(0).unwrap()).unwrap();
    let Some(peers::Value::List(rows)) = table.get("rows") else {
        panic!("{tag}: {table:?}")
    };
    let served = rows.iter().any(|r| {
        matches!(r, peers::Value::List(c) if c[0].as_int().is_some_and(|id| id >= 0)
            && c[2].as_int() == Some(1) && c[7].as_int().is_some_and(|w| w > 0))
    });
    assert!(served, "{tag}: no served HTTP connection in {rows:?}");
    drop(c);
    // GRIP long-poll answered by a publish.
    let poll = std::thread::spawn(move || request(http, "/poll", Duration::from_secs(20)));
    let item = format!(
        "{{\"channel\":\"lp\",\"formats\":{{\"http-response\":{{\"body\":\"{}\"}}}}}}",
        json_text(POLL_DONE)
    );
    let end = Instant::now() + Duration::from_secs(15);
    while !poll.is_finished() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        publish(pp.publish, &item).unwrap();
    }
    let (status, body) = poll.join().unwrap().unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{tag}: long-poll");
    assert_eq!(body, POLL_DONE, "{tag}: long-poll");
    websocket_over_http(tag, http, pp.publish);
    std::thread::sleep(Duration::from_millis(500));
    pp.runner.log_text()
}

/// A WebSocket client through the stack to the WebSocket-over-HTTP origin: the upgrade
/// answered, a text message echoed by the origin, a publish to the channel the origin
/// subscribed the connection to, then a clean close (close frame answered, then EOF).
fn websocket_over_http(tag: &str, http: u16, publish_port: u16) {
    let mut c = peers::Client::connect(http).unwrap();
    let host = c.host();
    c.send(format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        support::ws::KEY
    ))
    .unwrap();
    let head = String::from_utf8_lossy(&c.head().expect("upgrade response")).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 101 "),
        "{tag}: WebSocket upgrade: {head:?}"
    );
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some(support::ws::ACCEPT),
        "{tag}: {head:?}"
    );
    c.ws_send(true, support::ws::TEXT, b"hello").unwrap();
    let (op, data) = c
        .ws_message()
        .unwrap_or_else(|e| panic!("{tag}: echo: {e}"));
    assert_eq!(
        (op, String::from_utf8_lossy(&data).into_owned()),
        (support::ws::TEXT, format!("{ECHO_PREFIX}hello")),
        "{tag}: echo"
    );
    // The origin's `c:` subscribe applies once the OPEN response is handled: publish until
    // the message arrives (a publish before the subscription is not delivered).
    let item = format!(
        "{{\"channel\":\"ws\",\"formats\":{{\"ws-message\":{{\"content\":\"{WS_PUBLISHED}\"}}}}}}"
    );
    let mut got = None;
    for _ in 0..5 {
        publish(publish_port, &item).unwrap();
        match c.ws_message() {
            Ok(m) => {
                got = Some(m);
                break;
            }
            Err(e) if e.contains("timed out") => continue,
            Err(e) => panic!("{tag}: waiting for the publish: {e}"),
        }
    }
    let (op, data) = got.unwrap_or_else(|| panic!("{tag}: published message not received"));
    assert_eq!(
        (op, String::from_utf8_lossy(&data).into_owned()),
        (support::ws::TEXT, WS_PUBLISHED.to_string()),
        "{tag}: publish"
    );
    c.ws_send(true, support::ws::CLOSE, &1000u16.to_be_bytes())
        .unwrap();
    let (op, data) = loop {
        // Publishes that raced the first one may still arrive before the close.
        let m = c
            .ws_message()
            .unwrap_or_else(|e| panic!("{tag}: close reply: {e}"));
        if m.0 != support::ws::TEXT {
            break m;
        }
    };
    assert_eq!(op, support::ws::CLOSE, "{tag}: close reply");
    assert_eq!(
        data.get(..2),
        Some(&1000u16.to_be_bytes()[..]),
        "{tag}: close code"
    );
    c.closed_or_open(Duration::from_secs(10)).unwrap();
    let last = c.events.last().map(|e| e.0.clone());
    assert_eq!(
        last.as_deref(),
        Some("closed"),
        "{tag}: no EOF after the close"
    );
}

#[test]
fn pushpin_mongrel2_stack_with_zring_and_with_mongrel2() {
    let dir = TempDir::new("ppm2-bin");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let link = dir.join("bin/mongrel2");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_zring"), &link).unwrap();
    let zring_log = run_stack("zring", &link, Path::new(env!("CARGO_BIN_EXE_zring")));
    let real = peers::require_bin("mongrel2");
    let m2_log = run_stack("mongrel2", &real, &real);
    for (tag, log) in [("zring", &zring_log), ("mongrel2", &m2_log)] {
        for bad in ["Can't parse mongrel2 log", "Can't parse severity"] {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(bad)).collect();
            assert!(lines.is_empty(), "{tag}: {lines:#?}");
        }
        assert!(
            log.contains("[m2 http:"),
            "{tag}: the runner printed none of the server's lines"
        );
        // Pushpin's config turns download.flow_control on: m2adapter then takes credits from
        // DOWNLOAD_CREDITS and the notices, and never needs the control port.
        assert!(
            !log.contains("activating control port"),
            "{tag}: m2adapter fell back to polling (no DOWNLOAD_CREDITS?)"
        );
    }
    assert!(
        zring_log.contains("(zring/"),
        "zring's own lines went through the runner"
    );
}
