//! Handlers that die or misbehave (issue 17, item 3).
//!
//! 1. A handler killed with SIGKILL while it holds a request (no response yet), streams a
//!    response and serves a WebSocket: zring learns at once that its ROUTER connection went
//!    away (`ZMQ_ROUTER_NOTIFY`) and tells the clients: 502 for the request, a clean close
//!    (EOF, not a reset) of the stream, close code 1011 on the WebSocket. A handler
//!    restarted under the same identity then serves GETs, POST bodies and WebSocket
//!    messages.
//! 2. A handler that ignores credits toward 1,000 clients that do not read: each session
//!    is failed as documented (502 before a response, a response cut short after), and
//!    zring's memory stays within the bound docs/tuning.md states.
//!
//! Real zring processes and real ZeroMQ handlers: the example handler for (1), a scripted
//! one (`support::zhttp`) for (2).
#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::peers::{CM_ID, H1};
use support::tn::Value;
use support::ws::*;
use support::zhttp::{hdrs, int, Handler};
use support::*;

const HANDLER_ID: &str = "dying-handler";
/// How soon after the kill every client must have been told. The issue asks for "within a
/// second"; zring announces a death `HANDLER_GONE_GRACE_MS` (200 ms) after libzmq reports
/// it, and libzmq reports it as soon as the kernel closes the dead process's sockets. The
/// 0.5 s above the second is for a debug build on a loaded 2-core box; a zring that noticed
/// deaths only by session expiry (60 s) or `--handler-wait` (5 s) fails it by far.
const TOLD_WITHIN: Duration = Duration::from_millis(1500);
/// How long after a restart GET, POST and WebSocket must all work (as in handler_restart.rs:
/// the example handler sleeps 200 ms after connecting; the rest is ZeroMQ's reconnect).
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
const ANSWER_WAIT: Duration = Duration::from_secs(1);

fn start_handler(base: &str) -> Proc {
    Proc::start(
        "example handler",
        Command::new(env!("CARGO_BIN_EXE_zring-example-handler"))
            .args(["--stream", base, "--id", HANDLER_ID])
            .stdout(Stdio::null()),
    )
}

fn get(port: u16) -> Result<(), String> {
    let r = exchange(
        port,
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        ANSWER_WAIT,
    );
    let r = String::from_utf8_lossy(&r);
    if r.starts_with("HTTP/1.1 200") && r.ends_with("hello\n") {
        Ok(())
    } else {
        Err(format!("GET /hello: {r:?}"))
    }
}

/// A body larger than zring's credits both ways: it goes to the handler under the
/// handler's credits and comes back under zring's.
fn post_echo(port: u16, tag: &str) -> Result<(), String> {
    let body = format!("{tag} ").repeat(4000);
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = exchange(port, req.as_bytes(), ANSWER_WAIT);
    let r = String::from_utf8_lossy(&r);
    if r.starts_with("HTTP/1.1 200") && r.ends_with(&body) {
        Ok(())
    } else {
        Err(format!("POST /echo: {:?}", &r[..r.len().min(200)]))
    }
}

fn ws_echo(port: u16, text: &str) -> Result<(), String> {
    let mut ws = Ws::raw_handshake(port, upgrade_request("/ws", "").as_bytes())
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    if ws.status() != 101 {
        return Err(format!("WebSocket handshake: {:?}", ws.head));
    }
    ws.text(text.as_bytes());
    match ws.read_frame(ANSWER_WAIT) {
        Ok(f) if f.raw == server_frame(0x1, text.as_bytes()) => Ok(()),
        Ok(f) => Err(format!("WebSocket: not the echo: {:?}", f.raw)),
        Err(e) => Err(format!("WebSocket message not echoed: {e:?}")),
    }
}

fn all_work_within(port: u16, tag: &str, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let r = get(port)
            .and_then(|()| post_echo(port, tag))
            .and_then(|()| ws_echo(port, &format!("message {tag}")));
        match r {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) if start.elapsed() >= within => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Reads `s` until `pat` has arrived (true) or the connection ends or `deadline` passes.
fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, pat: &[u8], deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    while find(got, pat).is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// How the server ended a connection.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Reset,
    StillOpen,
}

/// Reads `s` to its end (before `deadline`): what came, and how it ended.
fn read_to_end_by(s: &mut TcpStream, deadline: Instant) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, End::StillOpen);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, End::Reset),
            Err(_) => return (got, End::StillOpen),
        }
    }
}

fn death_then_restart(rt: &str) {
    let s = Stack::zring_only(rt, &[]);
    let mut handler = start_handler(&s.base);
    all_work_within(s.port, "first", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the first handler never worked: {e}"));

    // An open WebSocket (its echo proves the handler owns it).
    let mut ws = Ws::connect(s.port, "/ws");
    ws.text(b"before");
    ws.expect_echo(TEXT, b"before");
    // A request the handler holds: `100 Continue` comes once it granted credits, so it has
    // taken the request; half the body follows, the rest never will.
    let mut held = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    held.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut held_got = Vec::new();
    let soon = Instant::now() + Duration::from_secs(5);
    assert!(
        read_until(&mut held, &mut held_got, b"100 Continue\r\n\r\n", soon),
        "no 100 Continue: {:?}",
        String::from_utf8_lossy(&held_got)
    );
    held.write_all(b"12345").unwrap();
    // A streamed response: its head and first chunk are here; four more would follow 100 ms
    // apart.
    let mut stream = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut stream_got = Vec::new();
    assert!(
        read_until(&mut stream, &mut stream_got, b"chunk 0\n\r\n", soon),
        "no first chunk: {:?}",
        String::from_utf8_lossy(&stream_got)
    );

    handler.signal(libc::SIGKILL);
    let killed = Instant::now();
    let deadline = killed + TOLD_WITHIN;

    let (rest, end) = read_to_end_by(&mut held, deadline);
    let rest = String::from_utf8_lossy(&rest).into_owned();
    assert!(
        rest.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{rt}: the held request, {:?} after the kill: {rest:?} ({end:?})",
        killed.elapsed()
    );
    assert_eq!(end, End::Eof, "{rt}: the held request's connection");
    let (rest, end) = read_to_end_by(&mut stream, deadline);
    assert_eq!(
        end,
        End::Eof,
        "{rt}: the stream must end with a FIN within {TOLD_WITHIN:?} ({:?} after the kill; got {:?})",
        killed.elapsed(),
        String::from_utf8_lossy(&rest)
    );
    assert!(
        find(&rest, b"0\r\n\r\n").is_none(),
        "{rt}: a cut stream has no last chunk: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let left = deadline.saturating_duration_since(Instant::now());
    match ws.read_frame(left) {
        Ok(f) => assert_eq!(
            (f.opcode, f.close_code()),
            (CLOSE, Some(1011)),
            "{rt}: the WebSocket's frame after the kill: {:?}",
            f.raw
        ),
        Err(e) => panic!(
            "{rt}: no close frame {:?} after the kill: {e:?}",
            killed.elapsed()
        ),
    }
    eprintln!(
        "{rt}: all three clients told {:?} after the kill",
        killed.elapsed()
    );

    let _ = handler.wait_exit(Duration::from_secs(10));
    let _handler = start_handler(&s.base);
    let took = all_work_within(s.port, "restarted", RECOVERY_BOUND)
        .unwrap_or_else(|e| panic!("{rt}: not working {RECOVERY_BOUND:?} after a restart: {e}"));
    eprintln!("{rt}: working again {took:?} after the restart");
}

// ---- credits ----

/// Clients that send a request and never read.
const SLOW_READERS: usize = 1000;
/// zring's `--buffer-size` (its default): the credits it grants per response.
const BUFFER_SIZE: usize = 8192;
/// What the handler sends each session at once, ignoring its credits: 16 times them.
const FLOOD_BYTES: usize = 128 * 1024;

/// A client socket with a small receive buffer, so that what zring sends it stays in
/// zring (or its kernel send buffer) rather than in this process's kernel buffers.
fn slow_reader(port: u16) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor we create and hand to TcpStream (which
    // then owns and closes it); the option and address are locals that outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// A line of /proc/PID/status, in KiB.
fn status_kib(pid: i32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn credits_ignored(rt: &str) {
    // The handler answers only once it has all the requests: a long `--handler-wait`, so a
    // slow box does not turn the first ones into 503s before it does.
    let s = Stack::zring_only(rt, &["--id", CM_ID, "--handler-wait", "60000"]);
    let pid = s.zring.pid();
    let mut h = Handler::connect_to(&s.base, None, &[H1], true);
    let mut clients: Vec<TcpStream> = (0..SLOW_READERS).map(|_| slow_reader(s.port)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        write!(c, "GET /big/{i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    }
    let mut ids = vec![Vec::new(); SLOW_READERS];
    for _ in 0..SLOW_READERS {
        let r = h
            .wait_for("a request", Duration::from_secs(30), |r| r.via == "pull")
            .unwrap();
        let uri = r.v.str_of("uri").unwrap_or_default();
        let i: usize = uri.rsplit('/').next().unwrap().parse().unwrap();
        ids[i] = r.id();
    }
    // The peak from here on (Linux resets VmHWM to the current RSS on "5").
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before_kib = status_kib(pid, "VmRSS:");

    // Even sessions: the whole response in one packet, 16 times the credits. Odd ones: the
    // credits' worth with the head (`more`), then the rest in one last packet.
    let flood = vec![b'x'; FLOOD_BYTES];
    for (i, id) in ids.iter().enumerate() {
        let head = |body: &[u8], more: bool| {
            let mut f: Vec<(&str, Value)> = vec![
                ("code", int(200)),
                ("reason", "OK".into()),
                ("headers", hdrs(&[("Content-Type", "text/plain")])),
                ("body", body.into()),
            ];
            if more {
                f.push(("more", true.into()));
            }
            f
        };
        if i % 2 == 0 {
            h.send(H1, id, head(&flood, false));
        } else {
            h.send(H1, id, head(&flood[..BUFFER_SIZE], true));
            h.send(H1, id, vec![("body", flood[BUFFER_SIZE..].into())]);
        }
        // Paced a little, so what is measured is what zring keeps, not a burst of packets
        // waiting in its SUB queue.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Every session ends as documented; read only now (the clients were slow until here).
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, c) in clients.iter_mut().enumerate() {
        let (got, end) = read_to_end_by(c, deadline);
        let text = String::from_utf8_lossy(&got);
        let shown = &text[..text.len().min(200)];
        assert_eq!(
            end,
            End::Eof,
            "{rt}: session {i} did not end ({} bytes): {shown:?}",
            got.len()
        );
        if i % 2 == 0 {
            assert!(
                text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
                "{rt}: session {i}: {shown:?}"
            );
        } else {
            let body_at = find(&got, b"\r\n\r\n").expect("a head") + 4;
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{rt}: session {i}");
            let want = format!("2000\r\n{}\r\n", "x".repeat(BUFFER_SIZE));
            assert!(
                got[body_at..] == *want.as_bytes(),
                "{rt}: session {i}: the credits' worth, then the close (no last chunk); got \
                 {} body bytes",
                got.len() - body_at
            );
        }
    }
    let peak_kib = status_kib(pid, "VmHWM:");
    // docs/tuning.md: at most `--buffer-size` response bytes per connection (plus its head
    // and framing); pooled buffers may hold twice that. 32 MiB is for libzmq's messages in
    // flight and the allocator. Had zring buffered what the handler sent, it would need
    // 1,000 × 128 KiB = 125 MiB more.
    let bound_kib = (SLOW_READERS * 2 * BUFFER_SIZE / 1024 + 32 * 1024) as u64;
    let grew_kib = peak_kib.saturating_sub(before_kib);
    eprintln!(
        "{rt}: RSS {before_kib} KiB before, peak {peak_kib} KiB (+{grew_kib}, bound {bound_kib})"
    );
    assert!(
        grew_kib <= bound_kib,
        "{rt}: zring's RSS grew by {grew_kib} KiB (bound {bound_kib} KiB)"
    );
}

both_runtimes! {
    handler_killed_clients_told_then_restart_serves(rt) {
        death_then_restart(rt);
    }
    handler_ignoring_credits_to_slow_readers_is_bounded(rt) {
        credits_ignored(rt);
    }
}
