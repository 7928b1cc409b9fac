//! Restart and upgrade without dropping a connection attempt (issue 15, item 4): a new zring
//! takes the running one's listening sockets (`--takeover`), or systemd passes them
//! (socket activation), and the old one drains.
//!
//! - `takeover_under_load_drops_nothing`: wrk with keep-alive and wrk with
//!   `Connection: close` run through three takeovers; no request fails, no connection is
//!   reset, and a WebSocket on each old process gets close 1001.
//! - `m2_takeover_under_load_drops_nothing`: the same load through three takeovers of a
//!   zring serving a Mongrel2 config (its listeners are the config's servers), with
//!   Mongrel2's pid file handed from each process to the next.
//! - `m2_failed_takeover_leaves_the_running_zring_and_its_pid_file`: a successor that fails
//!   after writing its pid file puts the running zring's pid back.
//! - `m2_socket_activation_serves_the_config_port`: a socket systemd passes serves the
//!   Mongrel2 server whose port it is bound to.
//! - `queued_connections_survive_a_takeover`: connections that wait in the backlog of a
//!   draining zring (it no longer accepts) are served by the one that takes over.
//! - `reuseport_alone_resets_queued_connections`: why it must be the same socket: with
//!   `SO_REUSEPORT` a new socket is a second queue, and closing the old one resets what
//!   waits in it.
//! - `socket_activation_serves_what_queued_before_start`: systemd's own
//!   `systemd-socket-activate` binds, waits for the first connection, and starts zring on
//!   the socket: that connection is served.
//!
//! Needs wrk and systemd-socket-activate (`scripts/setup.sh test`).
#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const START_BOUND: Duration = Duration::from_secs(20);
const EXIT_BOUND: Duration = Duration::from_secs(15);
const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// One zring generation, logging to `<dir>/<name>.log`.
fn zring(rt: &str, name: &str, dir: &Path, port: u16, base: &str, extra: &[&str]) -> Proc {
    Proc::spawn(
        name,
        Command::new(env!("CARGO_BIN_EXE_zring"))
            .args(["--runtime", rt, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--zclient-stream", base, "--workers", "2"])
            .arg("--takeover-socket")
            .arg(dir.join("takeover.sock"))
            .args(extra),
        dir,
    )
}

fn example_handler(base: &str) -> Proc {
    Proc::start(
        "example handler",
        Command::new(env!("CARGO_BIN_EXE_zring-example-handler"))
            // Reconnect to the new zring within milliseconds once the old one is gone.
            .args(["--stream", base, "--reconnect-ms", "5"])
            .stdout(std::process::Stdio::null()),
    )
}

/// Waits until `GET /hello` on `port` is answered 200 (zring up and a handler connected).
fn wait_hello(port: u16, z: &mut Proc) {
    let end = Instant::now() + START_BOUND;
    loop {
        let r = http::exchange(port, HELLO, Duration::from_secs(2));
        if r.starts_with(b"HTTP/1.1 200") {
            return;
        }
        assert!(
            z.exited().is_none(),
            "{} exited: {}",
            z.name,
            z.log_tail(20)
        );
        assert!(
            Instant::now() < end,
            "no answer on {port}: {}",
            z.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// wrk's totals: requests, socket errors (connect, read, write, timeout), non-2xx/3xx.
#[derive(Debug)]
struct Wrk {
    requests: u64,
    socket_errors: u64,
    non_2xx: u64,
    text: String,
}

fn parse_wrk(text: String) -> Wrk {
    let mut w = Wrk {
        requests: 0,
        socket_errors: 0,
        non_2xx: 0,
        text: String::new(),
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            w.socket_errors = rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = rest.trim().parse().unwrap();
        } else if line.contains(" requests in ") {
            w.requests = line.split_whitespace().next().unwrap().parse().unwrap();
        }
    }
    w.text = text;
    w
}

fn wrk(port: u16, seconds: u64, extra: &[&str]) -> std::thread::JoinHandle<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c8", "--timeout", "10s"])
        .arg(format!("-d{seconds}s"))
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}/hello"));
    std::thread::spawn(move || {
        let out = proc::output(&mut cmd).expect("wrk (scripts/setup.sh test installs it)");
        assert!(out.status.success(), "wrk: {out:?}");
        parse_wrk(String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

/// A WebSocket on the example handler's echo, checked to work.
fn ws_echo(port: u16) -> ws::Ws {
    let mut w = ws::Ws::connect(port, "/ws");
    assert_eq!(w.status(), 101, "{}", w.head);
    w.text(b"ping me");
    w.expect_echo(0x1, b"ping me");
    w
}

/// A Mongrel2 config: one server on `port`, every path to one handler on `ipc://` specs
/// relative to the working directory (the same place inside the chroot, `./`, that a zring
/// started as root enters, and outside it).
fn m2_config(port: u16) -> String {
    format!(
        "hello = Handler(send_spec='ipc://send', send_ident='6b1f0b1e-0000-4000-8000-000000000001',\n\
         \x20   recv_spec='ipc://recv', recv_ident='')\n\
         main = Server(uuid='6b1f0b1e-0000-4000-8000-000000000002', access_log='/logs/access.log',\n\
         \x20   error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',\n\
         \x20   pid_file='/run/zring.pid', bind_addr='127.0.0.1', port={port},\n\
         \x20   hosts=[Host(name='localhost', routes={{'/': hello}})])\n\
         settings = {{'server.daemonize': 0}}\n\
         servers = [main]\n"
    )
}

/// One zring generation serving `m2.conf` in `dir`, its takeover socket there too (the
/// chroot's working directory when it chroots).
/// A Mongrel2-mode test's directory (`run`, `logs`, `tmp` as the config names them), its
/// port, `m2.conf` for it, and the zring-m2-handler serving the config's ipc specs.
fn m2_setup(tag: &str) -> (std::path::PathBuf, u16, Proc) {
    let dir = temp_dir(tag);
    for d in ["run", "logs", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let port = free_port();
    std::fs::write(dir.join("m2.conf"), m2_config(port)).unwrap();
    let handler = Proc::start(
        "m2 handler",
        Command::new(env!("CARGO_BIN_EXE_zring-m2-handler"))
            .arg(format!("ipc://{}/send", dir.display()))
            .arg(format!("ipc://{}/recv", dir.display()))
            .stdout(std::process::Stdio::null()),
    );
    (dir, port, handler)
}

fn m2_zring(rt: &str, name: &str, dir: &Path, extra: &[&str]) -> Proc {
    Proc::spawn(
        name,
        Command::new(env!("CARGO_BIN_EXE_zring"))
            .current_dir(dir)
            .args(["--m2-config", "m2.conf", "--runtime", rt, "--workers", "2"])
            .args(["--takeover-socket", "takeover.sock"])
            .args(extra),
        dir,
    )
}

/// What a Mongrel2-mode zring logged: its own file until it chroots (as root), then the
/// server's `error_log`, which every generation appends to.
fn m2_logs(dir: &Path, z: &Proc) -> String {
    let error_log = std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
    format!("{}{error_log}", z.log_text())
}

/// The pid in Mongrel2's pid file (none when it is absent).
fn pid_in(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

both_runtimes! {
    takeover_under_load_drops_nothing(rt) {
        // Goal: three takeovers under a keep-alive load and a connection-per-request load
        // lose no request and reset no connection, and the WebSocket of each old zring is
        // closed with 1001. Method: wrk (keep-alive, and `Connection: close`) runs
        // throughout; every 2.5 s a new zring starts with `--takeover`; each old one must
        // say it handed over, close its WebSocket with 1001 and exit cleanly on its own.
        const RESTARTS: usize = 3;
        let dir = temp_dir(&format!("restart-{rt}"));
        let base = format!("ipc://{}/z", dir.display());
        let port = free_port();
        let _handler = example_handler(&base);
        let mut old = zring(rt, "zring-0", &dir, port, &base, &[]);
        wait_hello(port, &mut old);
        let mut socket = ws_echo(port);
        let seconds = 2 + 3 * RESTARTS as u64;
        let keep_alive = wrk(port, seconds, &[]);
        let per_request = wrk(port, seconds, &["-H", "Connection: close"]);
        for generation in 1..=RESTARTS {
            std::thread::sleep(Duration::from_millis(2_500));
            let started = Instant::now();
            let new = zring(rt, &format!("zring-{generation}"), &dir, port, &base, &["--takeover"]);
            let frame = socket
                .read_frame(EXIT_BOUND)
                .unwrap_or_else(|e| panic!("no close frame: {e:?}; {}", old.log_tail(20)));
            assert_eq!(frame.close_code(), Some(1001), "{:?}", frame.raw);
            socket.close(Some(1001), b"");
            let status = old
                .wait_exit(EXIT_BOUND)
                .unwrap_or_else(|| panic!("the old zring did not exit: {}", old.log_tail(20)));
            assert!(status.success(), "{status:?}: {}", old.log_tail(20));
            eprintln!("{rt}: takeover {generation}: old exited {:?} after the new started", started.elapsed());
            let log = old.log_text();
            assert!(log.contains("took the listeners; draining"), "{log}");
            old = new;
            assert!(old.exited().is_none(), "{}", old.log_tail(20));
            assert!(old.log_text().contains("listening on 127.0.0.1"), "{}", old.log_tail(20));
            assert!(old.log_text().contains("(taken over)"), "{}", old.log_tail(20));
            socket = ws_echo(port);
        }
        for (name, load) in [("keep-alive", keep_alive), ("Connection: close", per_request)] {
            let w = load.join().unwrap();
            eprintln!("{rt}: {name}: {} requests, {} socket errors, {} non-2xx", w.requests, w.socket_errors, w.non_2xx);
            assert!(w.requests > 100, "{name}: too few requests to mean anything: {}", w.text);
            assert_eq!(w.socket_errors, 0, "{name}: {}", w.text);
            assert_eq!(w.non_2xx, 0, "{name}: {}", w.text);
        }
        assert!(old.log_text().contains("takeover: serving"), "{}", old.log_tail(20));
        drop(socket);
        let _ = std::fs::remove_dir_all(&dir);
    }

    m2_takeover_under_load_drops_nothing(rt) {
        // Goal: in Mongrel2 mode (listeners named by the config's servers, not --listen) three
        // takeovers under a keep-alive and a connection-per-request load lose no request and
        // reset no connection, and Mongrel2's pid file names the serving process throughout.
        // Method: as the ZHTTP case, with zring-m2-handler on ipc:// specs; each old zring
        // must exit cleanly on its own, leaving the pid file to its successor; the last one,
        // stopped with SIGTERM, removes it.
        const RESTARTS: usize = 3;
        let (dir, port, _handler) = m2_setup(&format!("restart-m2-{rt}"));
        let pid_file = dir.join("run/zring.pid");
        let mut old = m2_zring(rt, "zring-0", &dir, &[]);
        wait_hello(port, &mut old);
        assert_eq!(pid_in(&pid_file), Some(old.pid()), "{}", m2_logs(&dir, &old));
        let seconds = 2 + 3 * RESTARTS as u64;
        let keep_alive = wrk(port, seconds, &[]);
        let per_request = wrk(port, seconds, &["-H", "Connection: close"]);
        for generation in 1..=RESTARTS {
            std::thread::sleep(Duration::from_millis(2_500));
            let started = Instant::now();
            let mut new = m2_zring(rt, &format!("zring-{generation}"), &dir, &["--takeover"]);
            let status = old
                .wait_exit(EXIT_BOUND)
                .unwrap_or_else(|| panic!("the old zring did not exit: {}", m2_logs(&dir, &old)));
            assert!(status.success(), "{status:?}: {}", m2_logs(&dir, &old));
            eprintln!("{rt}: m2 takeover {generation}: old exited {:?} after the new started", started.elapsed());
            assert!(new.exited().is_none(), "{}", m2_logs(&dir, &new));
            // The old one left the pid file alone: the successor's pid is in it.
            assert_eq!(pid_in(&pid_file), Some(new.pid()), "{}", m2_logs(&dir, &new));
            old = new;
        }
        for (name, load) in [("keep-alive", keep_alive), ("Connection: close", per_request)] {
            let w = load.join().unwrap();
            eprintln!("{rt}: m2: {name}: {} requests, {} socket errors, {} non-2xx", w.requests, w.socket_errors, w.non_2xx);
            assert!(w.requests > 100, "{name}: too few requests to mean anything: {}", w.text);
            assert_eq!(w.socket_errors, 0, "{name}: {}", w.text);
            assert_eq!(w.non_2xx, 0, "{name}: {}", w.text);
        }
        let log = m2_logs(&dir, &old);
        assert_eq!(log.matches("took the listeners; draining").count(), RESTARTS, "{log}");
        assert!(log.contains(&format!("listening on 127.0.0.1:{port} (taken over)")), "{log}");
        assert!(log.contains("takeover: serving"), "{log}");
        old.signal(libc::SIGTERM);
        let status = old.wait_exit(EXIT_BOUND).expect("the last zring exits");
        assert!(status.success(), "{status:?}: {}", m2_logs(&dir, &old));
        assert_eq!(pid_in(&pid_file), None, "the last zring removes its pid file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    m2_socket_activation_serves_the_config_port(rt) {
        // Goal: in Mongrel2 mode a socket systemd passes (LISTEN_FDS) serves the server
        // whose bind_addr/port it is bound to, and the connection that made systemd start
        // zring is served. Method: systemd-socket-activate binds the config's port and
        // starts zring on the first connection; that connection's request, sent once the
        // handler is up, gets the handler's answer, and zring says the socket came from
        // systemd.
        let (dir, port, _handler) = m2_setup(&format!("activate-m2-{rt}"));
        let mut activator = Proc::spawn(
            "zring",
            Command::new("systemd-socket-activate")
                .current_dir(&dir)
                .arg("-l")
                .arg(format!("127.0.0.1:{port}"))
                .arg(env!("CARGO_BIN_EXE_zring"))
                .args(["--m2-config", "m2.conf", "--runtime", rt, "--workers", "2"]),
            &dir,
        );
        wait_port(port, &mut activator, START_BOUND);
        let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Its request only once the handler answers others: a handler that connects its
        // PULL before its PUB would lose the reply (Mongrel2's PUB/SUB, docs/mongrel2.md).
        wait_hello(port, &mut activator);
        first.write_all(HELLO).unwrap();
        first.set_read_timeout(Some(START_BOUND)).unwrap();
        // Mongrel2 handlers keep the connection: the response is read by its length.
        let (head, body) = read_response(&mut first);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}: {}", m2_logs(&dir, &activator));
        assert_eq!(body, b"hello\n");
        let log = m2_logs(&dir, &activator);
        assert!(log.contains(&format!("listening on 127.0.0.1:{port} (from systemd)")), "{log}");
        activator.signal(libc::SIGTERM);
        let status = activator.wait_exit(EXIT_BOUND).expect("zring exits");
        assert!(status.success(), "{status:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    socket_activation_serves_what_queued_before_start(rt) {
        // Goal: zring serves on a socket systemd passes (LISTEN_FDS), matched to its
        // --listen by address, and a connection made before zring ran is served.
        // Method: systemd-socket-activate binds the port and starts zring only once a
        // connection comes; that first client's request must get its 200.
        let dir = temp_dir(&format!("activate-{rt}"));
        let base = format!("ipc://{}/z", dir.display());
        let port = free_port();
        let _handler = example_handler(&base);
        let mut activator = Proc::spawn(
            "zring",
            Command::new("systemd-socket-activate")
                .arg("-l")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--fdname=web")
                .arg(env!("CARGO_BIN_EXE_zring"))
                .args(["--runtime", rt, "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["--zclient-stream", &base, "--workers", "2"]),
            &dir,
        );
        wait_port(port, &mut activator, START_BOUND);
        let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
        first.write_all(HELLO).unwrap();
        first.set_read_timeout(Some(START_BOUND)).unwrap();
        let mut got = Vec::new();
        let r = first.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(r.is_ok() && text.starts_with("HTTP/1.1 200 OK\r\n"), "{r:?} {text:?}: {}", activator.log_tail(20));
        let log = activator.log_text();
        assert!(log.contains(&format!("listening on 127.0.0.1:{port} (from systemd)")), "{log}");
        activator.signal(libc::SIGTERM);
        let status = activator.wait_exit(EXIT_BOUND).expect("zring exits");
        assert!(status.success(), "{status:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn m2_failed_takeover_leaves_the_running_zring_and_its_pid_file() {
    // Goal: a successor that fails after it has replaced Mongrel2's pid file (here: its
    // --access-log cannot be opened, which comes after the pid file) leaves the pid file
    // naming the running zring, which goes on serving. Method: start a Mongrel2-mode zring,
    // start a failing successor with --takeover, check its exit, the pid file and a request.
    let (dir, port, _handler) = m2_setup("restart-m2-failed");
    let pid_file = dir.join("run/zring.pid");
    let mut old = m2_zring("epoll", "zring-0", &dir, &[]);
    wait_hello(port, &mut old);
    assert_eq!(pid_in(&pid_file), Some(old.pid()));
    let mut new = m2_zring(
        "epoll",
        "zring-1",
        &dir,
        &["--takeover", "--access-log", "/nonexistent/access.log"],
    );
    let status = new
        .wait_exit(EXIT_BOUND)
        .expect("the failing successor exits");
    assert!(!status.success(), "{status:?}");
    assert!(
        m2_logs(&dir, &new).contains("--access-log"),
        "{}",
        m2_logs(&dir, &new)
    );
    assert_eq!(
        pid_in(&pid_file),
        Some(old.pid()),
        "{}",
        m2_logs(&dir, &old)
    );
    assert!(old.exited().is_none(), "{}", m2_logs(&dir, &old));
    wait_hello(port, &mut old);
    let _ = std::fs::remove_dir_all(&dir);
}

mod queued_connections_survive_a_takeover {
    use super::*;

    fn run(rt: &str) {
        // Goal: connections queued in the listen backlog of a zring that no longer accepts
        // are served by its successor, not reset. Method: the old zring drains (SIGTERM)
        // while a request held by a test handler keeps it alive, so it accepts nothing;
        // clients connect and send requests, which wait in the backlog; a new zring takes
        // the socket over and the example handler serves it; every client gets its 200;
        // the old one exits once its held request is answered.
        use support::peers::{CM_ID, H1};
        use support::zhttp::{int, Handler};
        const QUEUED: usize = 20;
        let dir = temp_dir(&format!("restart-queued-{rt}"));
        let base = format!("ipc://{}/z", dir.display());
        let port = free_port();
        let mut old = zring(
            rt,
            "zring-old",
            &dir,
            port,
            &base,
            &[
                "--id",
                CM_ID,
                "--handler-wait",
                "60000",
                "--shutdown-timeout",
                "60000",
            ],
        );
        wait_port(port, &mut old, START_BOUND);
        let mut h = Handler::connect_to(&base, None, &[H1], true);
        let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
        held.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let req = h.expect("pull", "data").unwrap();
        old.signal(libc::SIGTERM);
        // Past the drain's idle grace: the old zring accepts nothing now.
        std::thread::sleep(Duration::from_millis(300));
        let mut queued: Vec<TcpStream> = (0..QUEUED)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(HELLO).unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // Still unanswered: they wait in the backlog.
        queued[0]
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(
            queued[0].read(&mut [0u8; 64]).is_err(),
            "a queued connection was served by the draining zring"
        );
        let mut new = zring(
            rt,
            "zring-new",
            &dir,
            port,
            &base,
            &["--id", CM_ID, "--handler-wait", "60000", "--takeover"],
        );
        // The handler starts once the new zring has bound the ipc paths (it logs this after
        // its bridge is up). Started earlier, it connects to the old zring's files and stays
        // with it until that one exits, which the held request prevents here: the queued
        // requests would then wait for a handler, not for an accept (docs/operations.md,
        // "Handlers").
        assert!(
            new.wait_log("takeover: serving", START_BOUND),
            "{}",
            new.log_tail(20)
        );
        let _handler = example_handler(&base);
        for (i, s) in queued.iter_mut().enumerate() {
            s.set_read_timeout(Some(START_BOUND)).unwrap();
            let mut got = Vec::new();
            let r = s.read_to_end(&mut got);
            let text = String::from_utf8_lossy(&got);
            assert!(
                r.is_ok(),
                "queued client {i}: {r:?} after {text:?}; {}; {}",
                new.log_tail(20),
                old.log_tail(20)
            );
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("hello\n"),
                "queued client {i}: {text:?}"
            );
        }
        assert!(
            old.exited().is_none(),
            "the old zring waits for its held request"
        );
        h.reply(
            &req,
            vec![
                ("code", int(200)),
                ("reason", "OK".into()),
                ("body", "late\n".into()),
            ],
        );
        let mut got = Vec::new();
        held.set_read_timeout(Some(EXIT_BOUND)).unwrap();
        let _ = held.read_to_end(&mut got);
        assert!(String::from_utf8_lossy(&got).ends_with("late\n"), "{got:?}");
        drop(held);
        let status = old.wait_exit(EXIT_BOUND).expect("the old zring exits");
        assert!(status.success(), "{status:?}");
        assert!(new.exited().is_none(), "{}", new.log_tail(20));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn epoll() {
        run("epoll")
    }

    #[test]
    fn uring() {
        run("uring")
    }
}

#[test]
fn reuseport_alone_resets_queued_connections() {
    // Goal: show why the takeover passes the socket itself. Two sockets bound to one port
    // with SO_REUSEPORT are two queues: connections the kernel put in the first one's
    // backlog are reset when it closes, and the second one never sees them. The same
    // socket passed on (another fd for it, as SCM_RIGHTS makes) keeps them.
    const QUEUED: usize = 8;
    let a = reuseport_listener(0);
    let port = local_port(a);
    let mut clients: Vec<TcpStream> = (0..QUEUED)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(HELLO).unwrap();
            s
        })
        .collect();
    let b = reuseport_listener(port);
    // SAFETY: closing our own socket.
    unsafe { libc::close(a) };
    let mut reset = 0;
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        match c.read(&mut [0u8; 16]) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset += 1,
            other => panic!("expected a reset, got {other:?}"),
        }
    }
    assert_eq!(reset, QUEUED);
    assert_eq!(accept_now(b), None, "the new socket never had them");

    // The same socket under another fd: closing the first fd loses nothing.
    let a = reuseport_listener(0);
    let port = local_port(a);
    let queued: Vec<TcpStream> = (0..QUEUED)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // SAFETY: dup of our own socket.
    let passed = unsafe { libc::dup(a) };
    // SAFETY: closing our own fd; the socket lives on in `passed`.
    unsafe { libc::close(a) };
    let mut accepted = 0;
    while let Some(peer) = accept_now(passed) {
        assert!(queued
            .iter()
            .any(|q| q.local_addr().unwrap().port() == peer));
        accepted += 1;
    }
    assert_eq!(accepted, QUEUED);
    // SAFETY: closing our own sockets.
    unsafe {
        libc::close(passed);
        libc::close(b);
    }
}

/// A listening socket on 127.0.0.1:`port` (0: any) with SO_REUSEPORT, as a restart
/// without a takeover would bind it.
fn reuseport_listener(port: u16) -> i32 {
    // SAFETY: plain socket calls on a socket we own; pointers to live locals.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let r = libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        assert_eq!(libc::listen(fd, 128), 0);
        fd
    }
}

fn local_port(fd: i32) -> u16 {
    // SAFETY: getsockname into a local of the right size.
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len);
        u16::from_be(sa.sin_port)
    }
}

/// Accepts one waiting connection (non-blocking): its peer port, or `None`.
fn accept_now(fd: i32) -> Option<u16> {
    // SAFETY: accept into a local of the right size; the fd we get is closed at once.
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let c = libc::accept(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len);
        if c < 0 {
            return None;
        }
        libc::close(c);
        Some(u16::from_be(sa.sin_port))
    }
}
