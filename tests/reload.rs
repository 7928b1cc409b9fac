//! SIGHUP reloads without a restart, and the access log (issue 15, items 5 and 6), with real
//! processes and clients.
//!
//! - `sighup_serves_a_rotated_certificate_and_keeps_an_open_wss`: a certificate replaced on
//!   disk with its files' old mtimes (which the once-a-second check cannot see) is served to
//!   new clients after SIGHUP, while a WebSocket over TLS opened before goes on working.
//! - `sighup_applies_the_config_files_log_level`: `--config`'s `log-level` read again.
//! - `access_log_lines_and_rotation`: real requests (curl, a WebSocket) give common log
//!   format lines with the duration and the handler; rename + SIGHUP moves new lines to a
//!   new file.
//! - `a_stuck_access_log_never_holds_a_worker`: the log is a FIFO nobody reads; wrk is served
//!   in full, and the lines that could not be written are counted as dropped.
//!
//! Needs openssl, curl, wrk, /usr/bin/python3 (`scripts/setup.sh test`).
#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use support::tls::{s_client, served_fingerprint, Pki};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// The (.crt, .key) mtimes of identity `name`.
fn mtimes(dir: &Path, name: &str) -> (SystemTime, SystemTime) {
    let m = |ext: &str| {
        std::fs::metadata(dir.join(format!("{name}.{ext}")))
            .unwrap()
            .modified()
            .unwrap()
    };
    (m("crt"), m("key"))
}

fn set_mtimes(dir: &Path, name: &str, (crt, key): (SystemTime, SystemTime)) {
    for (ext, t) in [("crt", crt), ("key", key)] {
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join(format!("{name}.{ext}")))
            .unwrap();
        f.set_modified(t).unwrap();
    }
}

fn fingerprint_served(port: u16, ca: &Path) -> Option<String> {
    let out = s_client(
        port,
        &[
            "-CAfile",
            &ca.display().to_string(),
            "-servername",
            "r.test",
        ],
        "",
        Duration::from_millis(200),
    );
    served_fingerprint(&out)
}

/// Waits until `path` has `n` lines; returns them.
fn lines_of(path: &Path, n: usize) -> Vec<String> {
    let end = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > end {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks one `--access-log` line: `IP - - [dd/Mon/yyyy:hh:mm:ss +0000] "REQUEST" STATUS
/// BYTES SECONDS HANDLER`; returns (request, status, bytes, handler).
fn parse_line(line: &str) -> (String, String, String, String) {
    let (ip, rest) = line
        .split_once(" - - [")
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(ip, "127.0.0.1", "{line}");
    let (date, rest) = rest.split_once("] \"").unwrap();
    assert_eq!(date.len(), 26, "{line}");
    assert!(date.ends_with(" +0000"), "{line}");
    let (request, rest) = rest.split_once("\" ").unwrap();
    let f: Vec<&str> = rest.split(' ').collect();
    assert_eq!(f.len(), 4, "{line}");
    let seconds: f64 = f[2]
        .parse()
        .unwrap_or_else(|_| panic!("duration in {line}"));
    assert!((0.0..10.0).contains(&seconds), "{line}");
    assert_eq!(f[2].split('.').nth(1).map(str::len), Some(6), "{line}");
    (request.into(), f[0].into(), f[1].into(), f[3].into())
}

both_runtimes! {
    sighup_serves_a_rotated_certificate_and_keeps_an_open_wss(rt) {
        // Goal: SIGHUP re-reads the TLS identities now, whatever their mtimes, and touches
        // no open connection. Method: a wss client holds a WebSocket; the certificate is
        // replaced and its files given back their old mtimes, so the automatic check (once
        // a second, by mtime) cannot see it: after 1.5 s the old certificate is still
        // served; after SIGHUP new clients get the new one, and the open WebSocket still
        // echoes on the old session, then closes normally.
        let pki = Pki::new(&format!("hup-{rt}"));
        let old = pki.identity("r.test", "r.test", &["r.test"], false);
        let port = free_port();
        let s = Stack::with_example(rt, &[
            "--tls-identities-dir", &pki.ids().display().to_string(),
            "--listen", &format!("127.0.0.1:{port},tls,default-cert=r.test"),
        ]);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls_clients/wss_hold.py");
        let mut held = Proc::start(
            "wss_hold.py",
            Command::new("/usr/bin/python3")
                .arg(&script)
                .arg(port.to_string())
                .arg("r.test")
                .arg(&pki.ca)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let mut lines = BufReader::new(held.take_stdout().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), format!("echo first fp {old}"));
        let before = mtimes(&pki.ids(), "r.test");
        let new = pki.identity("r.test", "r.test", &["r.test"], false);
        assert_ne!(old, new);
        set_mtimes(&pki.ids(), "r.test", before);
        std::thread::sleep(Duration::from_millis(1_500));
        assert_eq!(fingerprint_served(port, &pki.ca).as_deref(), Some(old.as_str()), "the mtimes hide the change");
        let mut s = s;
        s.zring.signal(libc::SIGHUP);
        let end = Instant::now() + WAIT;
        while fingerprint_served(port, &pki.ca).as_deref() != Some(new.as_str()) {
            assert!(Instant::now() < end, "the new certificate is not served after SIGHUP");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut stdin = held.take_stdin().unwrap();
        writeln!(stdin, "after the reload").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), "echo after the reload");
        drop(stdin);
        assert_eq!(lines.next().unwrap().unwrap(), "closed 1000");
        assert!(held.wait_exit(WAIT).expect("wss_hold.py exits").success());
        assert!(s.zring.exited().is_none(), "zring still runs");
    }

    access_log_lines_and_rotation(rt) {
        // Goal: each request gives one line (common log format, duration, the handler's
        // address), a WebSocket one at its end (101); after `mv` + SIGHUP the new lines go
        // to a new file and the moved one gets none.
        let dir = TempDir::new(&format!("access-{rt}"));
        let log = dir.join("access.log");
        let s = Stack::with_example(rt, &["--access-log", &log.display().to_string()]);
        // with_example's readiness probes are logged too: start from what is there.
        let probes = lines_of(&log, 1).len();
        assert!(probes >= 1);
        let port = s.port;
        let out = get(&["-s", &s.url("/hello")]);
        assert_eq!(out, "hello\n");
        let out = get(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &s.url("/nope")]);
        assert_eq!(out, "404");
        let _ = get(&["-s", "-d", "abc", &s.url("/echo?x=\"1\"")]);
        let mut w = ws::Ws::connect(port, "/ws");
        w.text(b"hi");
        w.expect_echo(0x1, b"hi");
        w.close(Some(1000), b"");
        let _ = w.read_rest(Duration::from_secs(2));
        let lines = lines_of(&log, probes + 4);
        let ours: Vec<_> = lines[probes..].iter().map(|l| parse_line(l)).collect();
        assert_eq!(ours.len(), 4, "{lines:?}");
        let handler = "zring-example-handler";
        assert_eq!(ours[0], ("GET /hello HTTP/1.1".into(), "200".into(), "6".into(), handler.into()));
        assert_eq!((ours[1].0.as_str(), ours[1].1.as_str()), ("GET /nope HTTP/1.1", "404"));
        assert_eq!(ours[2].0, "POST /echo?x=\\x221\\x22 HTTP/1.1", "quotes escaped");
        assert_eq!(ours[3].0, "GET /ws HTTP/1.1");
        assert_eq!((ours[3].1.as_str(), ours[3].3.as_str()), ("101", handler));

        std::fs::rename(&log, dir.join("access.log.1")).unwrap();
        let mut s = s;
        s.zring.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..2 {
            assert_eq!(get(&["-s", &format!("http://127.0.0.1:{port}/hello")]), "hello\n");
        }
        let after = lines_of(&log, 2);
        assert_eq!(after.len(), 2, "{after:?}");
        assert!(after.iter().all(|l| parse_line(l).0 == "GET /hello HTTP/1.1"));
        assert_eq!(lines_of(&dir.join("access.log.1"), 0).len(), probes + 4, "nothing more in the moved file");
        assert!(s.zring.exited().is_none());
    }

    a_stuck_access_log_never_holds_a_worker(rt) {
        // Goal: a writer that cannot write (the log is a FIFO whose reader never reads)
        // costs no request: workers drop what the bounded queue cannot hold and count it.
        let dir = TempDir::new(&format!("access-fifo-{rt}"));
        let fifo = dir.join("access.log");
        let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // The reader end, opened and never read: zring's open does not block, its writes do.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let mport = free_port();
        let s = Stack::with_example(rt, &[
            "--access-log", &fifo.display().to_string(),
            "--prometheus", &format!("127.0.0.1:{mport}"),
        ]);
        let out = proc::output(
            Command::new("wrk")
                .args(["-t1", "-c8", "-d4s", "--timeout", "5s"])
                .arg(s.url("/hello")),
        )
        .expect("wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("Socket errors") && !text.contains("Non-2xx"), "{text}");
        let requests: u64 = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let metrics = get(&["-s", &format!("http://127.0.0.1:{mport}/metrics")]);
        let dropped: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("connmgr_access_log_dropped_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no dropped counter: {metrics}"));
        eprintln!("{rt}: {requests} requests, {dropped} access log lines dropped");
        // A FIFO holds 64 KiB (~700 lines), the queue 1,024 batches: the rest is dropped.
        assert!(requests > 3_000, "too few requests to fill the queue: {text}");
        assert!(dropped > 0, "{requests} requests and nothing dropped");
        assert!(dropped < requests);
        // Nor does it hold the exit: SIGTERM with the writer still stuck.
        let mut s = s;
        s.zring.signal(libc::SIGTERM);
        let status = s.zring.wait_exit(Duration::from_secs(5)).expect("zring exits with its log stuck");
        assert!(status.success(), "{status:?}");
    }
}

#[test]
fn sighup_applies_the_config_files_log_level() {
    // Goal: SIGHUP reads `--config` again and applies its log level. Method: start at level
    // 1 (no INFO lines); a SIGHUP with the file unchanged logs nothing; with `log-level 2`
    // in the file, the SIGHUP's own INFO line appears; a broken file changes nothing and
    // says so (an error line, seen at any level).
    let dir = TempDir::new("config-hup");
    let conf = dir.join("zring.conf");
    std::fs::write(&conf, "# zring options\nlog-level 1\nworkers = 1\n").unwrap();
    let port = free_port();
    let mut z = Proc::spawn(
        "zring",
        Command::new(env!("CARGO_BIN_EXE_zring"))
            .arg("--config")
            .arg(&conf)
            .args(["--runtime", "epoll", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--zclient-stream",
                &format!("ipc://{}/z", dir.join("").display()),
            ]),
        &dir.path,
    );
    wait_port(port, &mut z, WAIT);
    assert!(!z.log_text().contains("[INFO]"), "{}", z.log_text());
    z.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!z.log_text().contains("[INFO]"), "{}", z.log_text());
    std::fs::write(&conf, "log-level = 2\n").unwrap();
    z.signal(libc::SIGHUP);
    let end = Instant::now() + WAIT;
    while !z.log_text().contains("read again; log level 2") {
        assert!(Instant::now() < end, "{}", z.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&conf, "log-level 2\nworkers many\n").unwrap();
    z.signal(libc::SIGHUP);
    let end = Instant::now() + WAIT;
    while !z.log_text().contains("the running options stay") {
        assert!(Instant::now() < end, "{}", z.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(z.exited().is_none());
}

use std::os::unix::fs::OpenOptionsExt;

/// curl's output (`-sS`, 10 s at most).
fn get(args: &[&str]) -> String {
    curl(args).1
}
