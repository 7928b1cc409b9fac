//! SIGTERM under light load, a thousand times per runtime: every exit must come within
//! `EXIT_BOUND`.
//!
//! Goal: catch a lost wake-up between the workers' last "done" and the bridge's wait. The
//! bridge cleared its wake-pending flag when it took the outbox, after it had read
//! `workers_done`. So: a worker's batch sets the flag and writes the eventfd; the bridge
//! wakes and drains the eventfd (the flag still set) and reads `workers_done` (one short);
//! the last worker counts itself done and calls `wake_bridge`, which finds the flag set and
//! writes nothing; the bridge clears the flag, finds nothing to flush, and waits in
//! `zmq_poll` with no timeout. zring logged "stopping", its workers ended, and it never
//! exited (about 1 in 45 SIGTERMs on epoll in production).
//!
//! The window is a few instructions wide, so this process test hits it only now and then:
//! the old code hung here at iterations 362 (uring), 741 and 1365 (epoll) in three runs.
//! `bridge_exit_wake_is_never_lost` below drives the bridge alone through thousands of exits
//! and catches it every run (1 to 10 lost wake-ups in 6,000 exits with the old code).
//!
//! Since the drain (issue 15, item 3), SIGTERM waits for exchanges with their handlers:
//! even iterations run with the default `--shutdown-timeout` (10 s) and only `GET /hello`
//! loops, whose responses come in milliseconds, so an exit that waited for the deadline
//! fails the bound; odd ones add an endless `/stream` and `--shutdown-timeout 0`, so the
//! drain cuts it at once and the workers hand the bridge its cancel right before they end.
//! The drain itself is tested below (`sigterm_drains`, `second_sigterm_stops_at_once`).
//!
//! Method: one example handler for the whole run (it reconnects to each new zring on the same
//! ipc base); per iteration start zring, keep a few requests in flight from client threads
//! (keep-alive `GET /hello` loops and a `/stream`, so shutdown sends cancels to the handler
//! and the workers hand the bridge batches right before they finish), wait until the handler
//! has answered one, SIGTERM at a varying delay, and require the exit within the bound.
#[macro_use]
mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const ITERATIONS: usize = 1000;
/// Each exit's bound. zring's own longest legitimate wait at exit is the bridge's 2 s flush
/// of packets no socket could take (`bridge::SHUTDOWN_FLUSH`); the clients here read what
/// they are sent, so an exit takes milliseconds and 5 s leaves room for a loaded machine.
/// The hang this guards against lasted minutes.
const EXIT_BOUND: Duration = Duration::from_secs(5);
/// How long a zring may take to start and get its first answer from the handler.
const READY_BOUND: Duration = Duration::from_secs(10);
const GET_CLIENTS: usize = 2;

/// Keeps one request in flight on a keep-alive connection until zring goes away. A response
/// can be lost while the handler's PUB is still reconnecting to the new zring (a PUB drops
/// what no subscriber has asked for yet): after `ANSWER_WAIT` the client hangs up and asks
/// again on a new connection.
fn client_loop(
    listener: PathBuf,
    path: &'static str,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    const ANSWER_WAIT: Duration = Duration::from_millis(300);
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = UnixStream::connect(&listener) else {
            return; // zring is gone
        };
        s.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
        'requests: while !stop.load(Ordering::Relaxed) {
            if s.write_all(req.as_bytes()).is_err() {
                return;
            }
            // The responses are small: read until the end of one (the chunked terminator
            // or the whole `hello\n`), or until zring closes the connection.
            let mut got = Vec::new();
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got.is_empty() => {
                        break 'requests; // no answer yet: ask again on a new connection
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
                if got.ends_with(b"\r\n0\r\n\r\n") || got.ends_with(b"hello\n") {
                    break;
                }
            }
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Thread names and kernel wait channels of `pid`, for a failure message.
fn threads_of(pid: i32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let wchan = std::fs::read_to_string(p.join("wchan")).unwrap_or_default();
        out.push_str(&format!("{} in {wchan}; ", comm.trim()));
    }
    out
}

/// Starts zring listening on the Unix socket `listener` (a path no other test can take, as
/// it could take a TCP port between two iterations) and waits until it accepts.
fn start_zring(rt: &str, base: &str, listener: &Path, extra: &[&str]) -> Proc {
    let mut zring = Proc::start(
        "zring",
        Command::new(env!("CARGO_BIN_EXE_zring"))
            .args(["--runtime", rt, "--listen"])
            .arg(format!("{},local", listener.display()))
            .args(["--zclient-stream", base, "--log-level", "1"])
            .args(["--workers", "2"])
            .args(extra)
            .stdout(Stdio::null()),
    );
    let end = Instant::now() + READY_BOUND;
    loop {
        assert!(zring.exited().is_none(), "zring exited at start");
        if UnixStream::connect(listener).is_ok() {
            return zring;
        }
        assert!(Instant::now() < end, "zring did not start listening");
        std::thread::sleep(Duration::from_millis(1));
    }
}

both_runtimes! {
    sigterm_under_load_always_exits(rt) {
        let dir = temp_dir(&format!("shutdown-{rt}"));
        let base = format!("ipc://{}/z", dir.display());
        let listener = dir.join("http.sock");
        let _handler = Proc::start(
            "example handler",
            Command::new(env!("CARGO_BIN_EXE_zring-example-handler"))
                // Reconnect to each new zring within milliseconds, not ZeroMQ's 100 ms.
                .args(["--stream", &base, "--reconnect-ms", "5"])
                .stdout(Stdio::null()),
        );
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..ITERATIONS {
            let cut = i % 2 == 1;
            let extra: &[&str] = if cut { &["--shutdown-timeout", "0"] } else { &[] };
            let mut zring = start_zring(rt, &base, &listener, extra);
            let answered = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let mut clients = Vec::new();
            for c in 0..GET_CLIENTS + usize::from(cut) {
                let path = if c == GET_CLIENTS { "/stream" } else { "/hello" };
                let (l, a, s) = (listener.clone(), answered.clone(), stop.clone());
                clients.push(std::thread::spawn(move || client_loop(l, path, a, s)));
            }
            let ready_by = Instant::now() + READY_BOUND;
            while answered.load(Ordering::Relaxed) == 0 {
                assert!(Instant::now() < ready_by, "iteration {i}: the handler never answered");
                std::thread::sleep(Duration::from_millis(1));
            }
            // Vary where in the request cycle the signal lands.
            std::thread::sleep(Duration::from_micros((i as u64 * 997) % 5_000));
            let term = Instant::now();
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(zring.pid(), libc::SIGTERM) };
            let status = loop {
                if let Some(s) = zring.exited() {
                    break Some(s);
                }
                if term.elapsed() >= EXIT_BOUND {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let took = term.elapsed();
            if status.is_none() {
                panic!(
                    "iteration {i}: zring still running {EXIT_BOUND:?} after SIGTERM: {}",
                    threads_of(zring.pid())
                );
            }
            assert!(status.unwrap().success(), "iteration {i}: {status:?}");
            slowest = slowest.max(took);
            stop.store(true, Ordering::Relaxed);
            for c in clients {
                c.join().unwrap();
            }
        }
        eprintln!(
            "{rt}: {ITERATIONS} SIGTERMs in {:?}, slowest exit {slowest:?}",
            started.elapsed()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The lost wake-up itself, in process and without sockets, so thousands of exits cost a
/// second or two: a worker hands the bridge its last batch and, `delay` later, counts
/// itself done (as `worker::spawn` does). Sweeping `delay` over the bridge's wake-up latency
/// lands the "done" in every part of the bridge's turn, including the few instructions
/// between its reading `workers_done` and its clearing the wake-pending flag, which the
/// old code lost. The process test above hits that window only rarely.
#[test]
fn bridge_exit_wake_is_never_lost() {
    use zring::bridge::{self, OutPacket, Route, Shared};
    const EXITS: u32 = 6_000;
    /// A bridge with nothing held exits microseconds after the last worker is done; a lost
    /// wake-up leaves it asleep for good.
    const BRIDGE_EXIT_BOUND: Duration = Duration::from_secs(2);
    let cfg = zring::config::Config::default(); // no listeners: no ZeroMQ sockets
    let mut lost = Vec::new();
    let started = Instant::now();
    for i in 0..EXITS {
        let shared = Shared::new(1).unwrap();
        let b = bridge::start(&cfg, None, shared.clone()).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let bridge_thread = std::thread::spawn(move || {
            b.run();
            let _ = done_tx.send(());
        });
        // Let the bridge reach its wait, most of the time.
        std::thread::sleep(Duration::from_micros(50 + u64::from(i % 5) * 25));
        shared.send_batch(&mut vec![OutPacket {
            route: Route::Push,
            data: b"T".to_vec(),
            expires: None,
        }]);
        let delay = Duration::from_nanos(u64::from(i.wrapping_mul(7_919) % 150) * 200);
        let spin = Instant::now();
        while spin.elapsed() < delay {
            std::hint::spin_loop();
        }
        shared.workers_done.fetch_add(1, Ordering::AcqRel);
        shared.wake_bridge();
        if done_rx.recv_timeout(BRIDGE_EXIT_BOUND).is_err() {
            lost.push(i);
            // Release it: the flag is clear now, so this wake-up is written.
            shared.wake_bridge();
        }
        bridge_thread.join().unwrap();
    }
    eprintln!("{EXITS} bridge exits in {:?}", started.elapsed());
    assert!(
        lost.is_empty(),
        "the bridge missed the last worker's wake-up in {} of {EXITS} exits (first: {:?})",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

const SLOW_GET: &[u8] = b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n";
/// How soon the drain's immediate effects (idle closes after their 1 s grace, the 1001, the
/// WebSocket's cancel) must be seen, and how soon zring must exit once nothing is left.
const PROMPT: Duration = Duration::from_secs(2);

fn connect(port: u16) -> std::net::TcpStream {
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
}

/// Reads until EOF (or a reset) within `within`; the bytes, and whether the end came.
fn read_to_end(s: &mut std::net::TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

both_runtimes! {
    sigterm_drains(rt) {
        // Goal (issue 15, item 3): on SIGTERM an idle connection closes (after the drain's
        // 1 s grace for a request on its way, `DRAIN_IDLE_GRACE_MS`), an open
        // WebSocket gets close 1001 (and its handler a cancel), a new connection is not
        // served, a request the handler holds is answered after the signal (with
        // `Connection: close`), and zring exits as soon as that response is written.
        use support::peers::{CM_ID, H1};
        use support::ws::*;
        use support::zhttp::{hdrs, int, Handler};
        let mut s = Stack::zring_only(rt, &["--id", CM_ID, "--handler-wait", "60000"]);
        let port = s.port;
        let mut h = Handler::connect_to(&s.base, None, &[H1], true);
        let ws = std::thread::spawn(move || {
            Ws::raw_handshake(port, upgrade_request("/ws", "").as_bytes())
        });
        let upgrade = h.expect("pull", "data").unwrap();
        h.reply(
            &upgrade,
            vec![
                ("code", int(101)),
                ("reason", "Switching Protocols".into()),
                ("credits", int(65536)),
            ],
        );
        let mut ws = ws.join().unwrap().unwrap();
        assert_eq!(ws.status(), 101, "{}", ws.head);
        let mut slow = connect(port);
        slow.write_all(SLOW_GET).unwrap();
        let req = h.expect("pull", "data").unwrap();
        let mut idle = connect(port);
        std::thread::sleep(Duration::from_millis(100)); // accepted by now

        s.zring.signal(libc::SIGTERM);
        let (got, ended) = read_to_end(&mut idle, PROMPT);
        assert!(ended && got.is_empty(), "idle connection: {got:?}, ended: {ended}");
        let f = ws.read_frame(PROMPT).expect("a close frame");
        assert_eq!(f.close_code(), Some(1001), "{:?}", f.raw);
        // The client answers; zring then closes the connection (the server first).
        ws.close(Some(1001), b"");
        let (_, ended) = ws.read_rest(PROMPT);
        assert!(ended, "the WebSocket ends after the close handshake");
        let cancel = h
            .wait_for("the WebSocket's cancel", PROMPT, |r| r.kind() == "cancel")
            .unwrap();
        assert_eq!(cancel.id(), upgrade.id());
        // Not accepted: refused, or left in the backlog unanswered until zring exits.
        if let Ok(mut late) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = late.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
            let (got, _) = read_to_end(&mut late, Duration::from_millis(300));
            assert!(got.is_empty(), "a connection after SIGTERM was served: {got:?}");
        }
        assert!(s.zring.exited().is_none(), "zring left with a response in flight");

        h.reply(
            &req,
            vec![
                ("code", int(200)),
                ("reason", "OK".into()),
                ("headers", hdrs(&[("Content-Type", "text/plain")])),
                ("body", "late\n".into()),
            ],
        );
        let (got, ended) = read_to_end(&mut slow, PROMPT);
        let text = String::from_utf8_lossy(&got);
        assert!(ended, "the connection closes after the response: {text:?}");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
        assert!(text.contains("Connection: close\r\n"), "{text:?}");
        assert!(text.ends_with("\r\n\r\nlate\n"), "{text:?}");
        drop(slow); // as a client does after `Connection: close` (zring lingers till then)
        let status = s.zring.wait_exit(PROMPT).expect("zring exits once nothing is left");
        assert!(status.success(), "{status:?}");
    }

    second_sigterm_stops_at_once(rt) {
        // Goal: during a drain (a request held by its handler, the 10 s deadline far off),
        // a second SIGTERM exits at once: the request's connection closes unanswered and
        // the handler gets its cancel.
        use support::peers::{CM_ID, H1};
        use support::zhttp::{int, Handler};
        let mut s = Stack::zring_only(rt, &["--id", CM_ID, "--handler-wait", "60000"]);
        let mut h = Handler::connect_to(&s.base, None, &[H1], true);
        let mut slow = connect(s.port);
        slow.write_all(SLOW_GET).unwrap();
        let req = h.expect("pull", "data").unwrap();
        h.reply(&req, vec![("type", "credit".into()), ("credits", int(100))]);
        std::thread::sleep(Duration::from_millis(100)); // the handler's packet is in
        s.zring.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        assert!(s.zring.exited().is_none(), "the drain waits for the held request");
        let second = Instant::now();
        s.zring.signal(libc::SIGTERM);
        let status = s.zring.wait_exit(PROMPT).expect("a second SIGTERM exits at once");
        assert!(status.success(), "{status:?}");
        eprintln!("{rt}: exit {:?} after the second SIGTERM", second.elapsed());
        let (got, ended) = read_to_end(&mut slow, PROMPT);
        assert!(ended && got.is_empty(), "cut unanswered: {got:?}");
        let cancel = h
            .wait_for("the request's cancel", PROMPT, |r| r.kind() == "cancel")
            .unwrap();
        assert_eq!(cancel.id(), req.id());
    }

    sigint_stops_at_once(rt) {
        // Goal: SIGINT does not drain: a held request is cut at once, its handler told.
        use support::peers::{CM_ID, H1};
        use support::zhttp::{int, Handler};
        let mut s = Stack::zring_only(rt, &["--id", CM_ID, "--handler-wait", "60000"]);
        let mut h = Handler::connect_to(&s.base, None, &[H1], true);
        let mut slow = connect(s.port);
        slow.write_all(SLOW_GET).unwrap();
        let req = h.expect("pull", "data").unwrap();
        h.reply(&req, vec![("type", "credit".into()), ("credits", int(100))]);
        std::thread::sleep(Duration::from_millis(100));
        s.zring.signal(libc::SIGINT);
        let status = s.zring.wait_exit(PROMPT).expect("SIGINT exits at once");
        assert!(status.success(), "{status:?}");
        let (got, ended) = read_to_end(&mut slow, PROMPT);
        assert!(ended && got.is_empty(), "cut unanswered: {got:?}");
        let cancel = h
            .wait_for("the request's cancel", PROMPT, |r| r.kind() == "cancel")
            .unwrap();
        assert_eq!(cancel.id(), req.id());
    }
}
