//! Pushpin end to end with the connection manager under test in Condure's place: Pushpin's
//! runner starts it itself (`condure_bin`) with its Condure-style command line, then plain
//! proxying, a WebSocket echo (Pushpin → zurl → a tungstenite origin), WebSocket-over-HTTP
//! (`over_http`, an origin speaking `application/websocket-events`) and a GRIP HTTP stream
//! with a publish must work through it. In client mode (zring also in zurl's place) the
//! outbound legs go through zring's client mode instead of zurl.
//!
//! Each test generates its own Pushpin config (from `/etc/pushpin/pushpin.conf`, as in
//! docs §6.4) in a temp dir: rundir/logdir there, zurl specs in the rundir, and every TCP port
//! Pushpin binds (HTTP, and the handler's 5560-5563 by default) moved to free ports, so tests
//! can run in parallel.
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::net::LoopbackServer;
use support::peers;
use support::peers::{Cm, Proc, TempDir};

const PLAIN_BODY: &str = "hello from origin\n";
const STREAM_BODY: &str = "stream open\n";
const PUBLISHED: &str = "published message\n";
/// `/big`: a response large enough to go through Pushpin's proxy in many credit steps.
const BIG_BYTES: usize = 1_000_000;
/// The largest WebSocket message `ws_echo` sends through a proxied WebSocket: one Pushpin
/// 1.36 carries with Condure and zurl (a 1 MB one stalls there too: Pushpin 1.36's
/// WebSocket proxy misses a wake-up when credits come back with nothing queued; see
/// docs/protocols.md).
const WS_BIG_BYTES: u32 = 100_000;
/// The same over WebSocket-over-HTTP: Pushpin 1.36 relays the origin's messages to the
/// client in frames of 16,384 bytes (`FRAME_SIZE_MAX`), and a message of more than one such
/// frame stalls the same way against Condure's 8,192 credits.
const WOH_BIG_BYTES: u32 = 16_384;

// ------------------------------------------------------------------------------------------
// The origin: a tiny HTTP/1.1 server on loopback

/// Answers one request: `/plain` normally, `/stream` with GRIP hold headers.
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
    let line = String::from_utf8_lossy(&req).into_owned();
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    if path == "/big" {
        let body: Vec<u8> = (0..BIG_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
        let head =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG_BYTES}\r\nConnection: close\r\n\r\n");
        let _ = c.write_all(head.as_bytes());
        let _ = c.write_all(&body);
        return;
    }
    if path == "/echo" || path.starts_with("/woh") {
        let head_end = peers::find(&req, b"\r\n\r\n").unwrap() + 4;
        let lower = line.to_ascii_lowercase();
        let length: usize = lower
            .split("content-length:")
            .nth(1)
            .and_then(|r| r.lines().next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while req.len() < head_end + length {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let body = &req[head_end..head_end + length];
        // WebSocket-over-HTTP: the events come back as they came (OPEN accepts the
        // connection, TEXT is echoed).
        let kind = match path.starts_with("/woh") {
            true => "Content-Type: application/websocket-events\r\n",
            false => "",
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\n{kind}Content-Length: {length}\r\nConnection: close\r\n\r\n"
        );
        let _ = c.write_all(head.as_bytes());
        let _ = c.write_all(body);
        return;
    }
    let resp = match path.as_str() {
        "/plain" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_BODY}",
            PLAIN_BODY.len()
        ),
        "/stream" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nGrip-Hold: stream\r\nGrip-Channel: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{STREAM_BODY}",
            STREAM_BODY.len()
        ),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    let _ = c.write_all(resp.as_bytes());
}

/// A WebSocket origin: echoes every text and binary message (tungstenite's server).
fn serve_ws(c: TcpStream) {
    c.set_nonblocking(false).ok();
    let Ok(mut ws) = tungstenite::accept(c) else {
        return;
    };
    while let Ok(m) = ws.read() {
        if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------------------------------------
// Pushpin

struct Ports {
    http: u16,
    publish: u16,
    push_in: u16,
    push_in_sub: u16,
    command: u16,
}

/// `/etc/pushpin/pushpin.conf` with `overrides` ((section, key) → value) applied: keys that
/// exist are replaced in place, the others appended to their section.
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
    for (i, (s, k, v)) in overrides.iter().enumerate() {
        assert!(done[i], "section [{s}] missing for {k}={v}");
    }
    out.join("\n") + "\n"
}

/// A running Pushpin (its runner) and what it started.
struct Pushpin {
    runner: Proc,
    dir: PathBuf,
    ports: Ports,
    stopped: bool,
}

impl Pushpin {
    /// `client`: the CM is also Pushpin's outbound connection manager (zring's client mode,
    /// `ZRING_CLIENT_BASE` in the rundir) in zurl's place, and zurl is not run.
    /// `extra`: route lines put before the catch-all route to `origin`.
    fn start(cm_bin: &Path, dir: &TempDir, origin: u16, client: bool, extra: &str) -> Pushpin {
        let src = std::fs::read_to_string("/etc/pushpin/pushpin.conf")
            .expect("pushpin is not installed (/etc/pushpin/pushpin.conf missing; scripts/setup.sh test installs it)");
        let pushpin = peers::require_bin("pushpin");
        peers::require_bin("zurl");
        let p = peers::free_ports(5);
        let ports = Ports {
            http: p[0],
            publish: p[1],
            push_in: p[2],
            push_in_sub: p[3],
            command: p[4],
        };
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        let routes = dir.join("routes");
        std::fs::write(&routes, format!("{extra}* 127.0.0.1:{origin}\n")).unwrap();
        let ov = vec![
            ("global", "rundir", dir.s("run")),
            ("global", "port_offset", "0".into()),
            (
                "runner",
                "services",
                match client {
                    false => "condure,zurl,pushpin-proxy,pushpin-handler".into(),
                    true => "condure,pushpin-proxy,pushpin-handler".into(),
                },
            ),
            ("runner", "http_port", format!("127.0.0.1:{}", ports.http)),
            ("runner", "logdir", dir.s("log")),
            ("runner", "log_level", "3".into()),
            (
                "runner",
                "condure_bin",
                cm_bin.to_string_lossy().into_owned(),
            ),
            (
                "runner",
                "zurl_bin",
                peers::require_bin("zurl").to_string_lossy().into_owned(),
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
                format!("tcp://127.0.0.1:{}", ports.push_in),
            ),
            (
                "handler",
                "push_in_sub_specs",
                format!("tcp://127.0.0.1:{}", ports.push_in_sub),
            ),
            ("handler", "push_in_http_addr", "127.0.0.1".into()),
            ("handler", "push_in_http_port", ports.publish.to_string()),
            (
                "handler",
                "command_spec",
                format!("tcp://127.0.0.1:{}", ports.command),
            ),
        ];
        let mut ov = ov;
        if client {
            for (key, suffix) in [
                ("zurl_out_specs", "in"),
                ("zurl_out_stream_specs", "in-stream"),
                ("zurl_in_specs", "out"),
            ] {
                let spec = format!("ipc://{}/{ZRING_CLIENT_BASE}-{suffix}", dir.s("run"));
                ov.retain(|(_, k, _)| *k != key);
                ov.push(("proxy", key, spec));
            }
        }
        let conf = dir.join("pushpin.conf");
        std::fs::write(&conf, rewrite_ini(&src, &ov)).unwrap();
        let mut cmd = std::process::Command::new(pushpin);
        cmd.arg(format!("--config={}", conf.display()))
            .current_dir(&dir.path);
        let mut runner = Proc::spawn("pushpin", &mut cmd, &dir.path);
        runner.term_first = true;
        runner.grace = Duration::from_secs(10);
        Pushpin {
            runner,
            dir: dir.path.clone(),
            ports,
            stopped: false,
        }
    }

    /// The pid the runner wrote for one of its services.
    fn service_pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("run").join(format!("{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The logs, for failure messages.
    fn logs(&self) -> String {
        let mut s = self.runner.log_tail(20);
        for f in ["condure", "pushpin-proxy", "pushpin-handler", "zurl"] {
            let t = std::fs::read_to_string(self.dir.join("log").join(format!("{f}.log")))
                .unwrap_or_default();
            s.push_str(&format!(
                "\n--- {f}.log (tail) ---\n{}",
                peers::tail(&t, 25)
            ));
        }
        s
    }

    /// SIGTERM to the runner (by pid), waits for it, then makes sure everything it started
    /// (the CM above all) is gone. Returns what was left running, if anything (after killing
    /// it by pid).
    fn shutdown(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let kids = peers::children_of(self.runner.pid());
        self.runner.stop();
        let mut left = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        for (pid, cmd) in kids {
            while peers::pid_alive(pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let same = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim() == cmd)
                .unwrap_or(false);
            if peers::pid_alive(pid) && same {
                left.push(format!("{pid} {cmd}"));
                // SAFETY: kill(2) on a process our runner started (same pid and cmdline).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        left
    }
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let left = self.shutdown();
        if !left.is_empty() {
            eprintln!("killed what Pushpin left running: {left:?}");
        }
    }
}

/// One HTTP request with a fresh connection; returns (status line, body) or an error.
fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(String, String), String> {
    let mut c = peers::Client::connect(port)?;
    let host = c.host();
    c.send(format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ))?;
    let r = c.read_response(false, timeout)?;
    let text = String::from_utf8_lossy(&r).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn publish(port: u16) -> Result<(), String> {
    let body = format!(
        "{{\"items\":[{{\"channel\":\"test\",\"formats\":{{\"http-stream\":{{\"content\":{}}}}}}}]}}",
        "\"published message\\n\""
    );
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let r = agent
        .post(&format!("http://127.0.0.1:{port}/publish/"))
        .set("Content-Type", "application/json")
        .send_string(&body)
        .map_err(|e| format!("publish: {e}"))?;
    if r.status() != 200 {
        return Err(format!("publish: status {}", r.status()));
    }
    Ok(())
}

/// The base of zring's client-mode endpoints in Pushpin's rundir (as Pushpin 1.37+'s runner
/// names its connmgr's: `<rundir>/connmgr-client`).
const ZRING_CLIENT_BASE: &str = "connmgr-client";

/// The binary Pushpin should run as `condure_bin` for `cm` (a wrapper script adding the
/// runtime flag for zring, and with `client` the client-mode flags Pushpin 1.37+ adds;
/// it execs, so the pid stays the CM's).
fn cm_bin_for(cm: Cm, dir: &TempDir, client: bool) -> PathBuf {
    if !cm.is_zring() {
        return cm.bin();
    }
    let w = dir.join("cm-wrapper");
    let mut args = cm.runtime_args().join(" ");
    if client {
        // `--ws-out-buffer-size`: zurl's window under Pushpin's runner (its zurl.conf
        // `buffer_size`), which Pushpin 1.36's WebSocket proxy needs (docs/protocols.md).
        args.push_str(&format!(
            " --zserver-stream=ipc://{}/{ZRING_CLIENT_BASE} --deny-out-internal --ws-out-buffer-size=200000",
            dir.s("run")
        ));
    }
    std::fs::write(
        &w,
        format!("#!/bin/sh\nexec '{}' {args} \"$@\"\n", cm.bin().display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    w
}

fn end_to_end(cm: Cm) {
    end_to_end_with(cm, false);
}

/// `client`: zring is Pushpin's only connection manager, inbound (server mode) and outbound
/// (client mode, in zurl's place) in one process, as Pushpin 1.37+ runs pushpin-connmgr.
fn end_to_end_with(cm: Cm, client: bool) {
    if !peers::enabled(cm) {
        return;
    }
    let dir = TempDir::new(&format!("pushpin-{cm:?}-{client}"));
    let origin = LoopbackServer::start(serve);
    let ws_origin = LoopbackServer::start(serve_ws);
    let routes = format!(
        "*,path_beg=/ws/ 127.0.0.1:{}\n*,path_beg=/woh/ 127.0.0.1:{},over_http\n",
        ws_origin.port, origin.port
    );
    let mut pp = Pushpin::start(
        &cm_bin_for(cm, &dir, client),
        &dir,
        origin.port,
        client,
        &routes,
    );
    let http = pp.ports.http;

    // Ready when a request goes all the way to the origin and back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last;
    loop {
        if let Some(st) = pp.runner.exited() {
            panic!("{}: pushpin exited ({st}) while starting", cm.name());
        }
        match http_get(http, "/plain", Duration::from_secs(2)) {
            Ok((s, _)) if s.contains(" 200 ") => break,
            Ok((s, b)) => last = format!("{s} {b:?}"),
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "{}: pushpin not serving /plain within 20 s; last: {last}",
            cm.name()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The CM Pushpin started is the one under test.
    let cm_pid = pp
        .service_pid("condure")
        .expect("no condure.pid in the rundir");
    let exe = std::fs::read_link(format!("/proc/{cm_pid}/exe")).expect("CM process");
    let want = std::fs::canonicalize(cm.bin()).unwrap();
    assert_eq!(
        std::fs::canonicalize(&exe).unwrap_or(exe.clone()),
        want,
        "Pushpin's CM is not the binary under test"
    );

    // Plain proxying.
    let (status, body) = http_get(http, "/plain", Duration::from_secs(5)).unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{}", cm.name());
    assert_eq!(body, PLAIN_BODY, "{}", cm.name());
    if client {
        // No zurl: the origin was reached through zring's client mode. The route target is
        // 127.0.0.1, allowed under --deny-out-internal because Pushpin marks route targets
        // trusted (`ignore-policies`).
        assert_eq!(pp.service_pid("zurl"), None, "zurl is running");
        let (status, body) = http_get(http, "/big", Duration::from_secs(20)).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body.len(), BIG_BYTES, "a streamed response, whole");
        assert!(body
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'a' + (i % 26) as u8));
        let big_post = "p".repeat(300_000);
        let mut c = peers::Client::connect(http).unwrap();
        let host = c.host();
        c.send(format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big_post}",
            big_post.len()
        ))
        .unwrap();
        let r = c.read_response(false, Duration::from_secs(20)).unwrap();
        let text = String::from_utf8_lossy(&r);
        assert!(
            text.starts_with("HTTP/1.1 200 OK"),
            "{}",
            &text[..text.len().min(200)]
        );
        assert!(
            text.ends_with(&big_post),
            "the POST body went through whole"
        );
    }
    ws_echo(http, "/ws/echo", WS_BIG_BYTES, cm, &pp);
    ws_echo(http, "/woh/echo", WOH_BIG_BYTES, cm, &pp);

    // GRIP HTTP streaming: the stream stays open and receives a published message.
    // pushpin-proxy hands held requests to pushpin-handler, which may still be starting
    // ("Accept service unavailable", a 500 from Pushpin itself): retry only that.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut c, head) = loop {
        let mut c = peers::Client::connect(http).unwrap();
        let host = c.host();
        c.send(format!("GET /stream HTTP/1.1\r\nHost: {host}\r\n\r\n"))
            .unwrap();
        let head = c
            .head()
            .unwrap_or_else(|e| panic!("{}: /stream head: {e}", cm.name()));
        let head = String::from_utf8_lossy(&head).into_owned();
        if head.starts_with("HTTP/1.1 500 ") && Instant::now() < deadline {
            let _ = c.read_until(b"Accept service unavailable", Duration::from_secs(1));
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        break (c, head);
    };
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}: {head:?}",
        cm.name()
    );
    c.part(STREAM_BODY.as_bytes())
        .unwrap_or_else(|e| panic!("{}: initial stream body: {e}", cm.name()));
    // The subscription is live once the initial body is out; publish (again if the first
    // one raced it) until the message arrives.
    let mut got = Err(String::new());
    for _ in 0..3 {
        publish(pp.ports.publish).unwrap_or_else(|e| panic!("{}: {e}", cm.name()));
        got = c.read_until(PUBLISHED.as_bytes(), Duration::from_secs(3));
        if got.is_ok() {
            break;
        }
    }
    got.unwrap_or_else(|e| panic!("{}: published message not received: {e}", cm.name()));
    c.read_until(b"\r\n", Duration::from_secs(1)).unwrap(); // the end of the chunk
    c.closed_or_open(Duration::from_millis(200)).unwrap();
    assert_eq!(
        c.events.last().unwrap().0,
        "open",
        "{}: the stream closed",
        cm.name()
    );
    drop(c);

    // Stop Pushpin: the runner and everything it started (the CM above all) must exit.
    let left = pp.shutdown();
    assert!(
        left.is_empty(),
        "{}: still running after Pushpin stopped: {left:?}",
        cm.name()
    );
    assert!(
        !peers::pid_alive(cm_pid),
        "{}: the CM outlived Pushpin",
        cm.name()
    );
}

/// `big`, or `PUSHPIN_WS_BYTES` from the environment (to try other sizes by hand, as for the
/// figures in docs/protocols.md).
fn big_bytes(big: u32) -> u32 {
    std::env::var("PUSHPIN_WS_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(big)
}

/// A WebSocket through Pushpin at `path`: a text, a 6 KB and a `big`-byte binary message
/// come back (each way through Pushpin under credits, in many steps).
fn ws_echo(http: u16, path: &str, big: u32, cm: Cm, pp: &Pushpin) {
    use tungstenite::Message;
    let url = format!("ws://127.0.0.1:{http}{path}");
    let (mut ws, resp) = tungstenite::connect(&url)
        .unwrap_or_else(|e| panic!("{}: WebSocket to {path}: {e}", cm.name()));
    assert_eq!(resp.status().as_u16(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let message = |n: u32| Message::binary((0..n).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    for m in [
        Message::text("hello through zring"),
        message(6_000),
        message(big_bytes(big)),
    ] {
        ws.send(m.clone()).unwrap();
        let back = loop {
            match ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(back) => break back,
                Err(e) => panic!("{}: {path}: no echo: {e}\n{}", cm.name(), pp.logs()),
            }
        };
        assert_eq!(back, m, "{}: {path}", cm.name());
    }
    ws.close(None).unwrap();
}

#[test]
fn condure() {
    end_to_end(Cm::Condure);
}

#[test]
fn zring_uring() {
    end_to_end(Cm::ZringUring);
}

#[test]
fn zring_epoll() {
    end_to_end(Cm::ZringEpoll);
}

#[test]
fn zring_uring_client_mode() {
    end_to_end_with(Cm::ZringUring, true);
}

#[test]
fn zring_epoll_client_mode() {
    end_to_end_with(Cm::ZringEpoll, true);
}

#[test]
fn ini_rewrite_keeps_layout() {
    let src = "[global]\nrundir=/x\n#c=1\n[runner]\nhttp_port=7999\n";
    let out = rewrite_ini(
        src,
        &[
            ("global", "rundir", "/y".into()),
            ("global", "port_offset", "0".into()),
            ("runner", "http_port", "1".into()),
        ],
    );
    assert_eq!(
        out,
        "[global]\nrundir=/y\n#c=1\nport_offset=0\n[runner]\nhttp_port=1\n"
    );
}
