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

/// The origin (run by `LoopbackServer`): `/plain`, `/stream` (GRIP stream), `/poll` (GRIP
/// long-poll).
fn serve(mut c: TcpStream) {
    c.set_nonblocking(false).ok();
    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while peers::find(&req, b"\r\n\r\n").is_none() {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&req);
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let grip = |hold: &str, channel: &str, body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nGrip-Hold: {hold}\r\nGrip-Channel: {channel}\r\nGrip-Timeout: 60\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let resp = match path.as_str() {
        "/plain" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_BODY}",
            PLAIN_BODY.len()
        ),
        "/stream" => grip("stream", "test", STREAM_BODY),
        "/poll" => grip("response", "lp", "timed out\n"),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    let _ = c.write_all(resp.as_bytes());
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
        std::fs::write(&routes, format!("* 127.0.0.1:{origin}\n")).unwrap();
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
    std::thread::sleep(Duration::from_millis(500));
    pp.runner.log_text()
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
