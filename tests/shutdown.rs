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
fn start_zring(rt: &str, base: &str, listener: &Path) -> Proc {
    let mut zring = Proc::start(
        "zring",
        Command::new(env!("CARGO_BIN_EXE_zring"))
            .args(["--runtime", rt, "--listen"])
            .arg(format!("{},local", listener.display()))
            .args(["--zclient-stream", base, "--log-level", "1"])
            .args(["--workers", "2"])
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
            let mut zring = start_zring(rt, &base, &listener);
            let answered = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let mut clients = Vec::new();
            for c in 0..=GET_CLIENTS {
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
