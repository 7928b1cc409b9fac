//! The epoll runtime needs one process fd per connection: at `RLIMIT_NOFILE` it must stop
//! accepting (connections wait in the backlog) and say so, not crash; once fds free up it
//! accepts the waiting ones. (io_uring's connections are direct descriptors: no fd each.)
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, temp_dir, wait_port, Proc};

const FDS: u64 = 64;

/// Whether the client got an answer yet (non-blocking). No handler runs: zring answers 503
/// after `--handler-wait`; any answer means the connection was accepted.
fn answered(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

#[test]
fn epoll_at_the_fd_limit_waits_instead_of_crashing() {
    let dir = temp_dir("fdlimit");
    let port = free_port();
    let log = dir.join("zring.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zring"));
    cmd.args([
        "--runtime",
        "epoll",
        "--workers",
        "1",
        "--handler-wait",
        "100",
    ])
    .arg("--listen")
    .arg(format!("127.0.0.1:{port}"))
    .arg("--zclient-stream")
    .arg(format!("ipc://{}/z", dir.display()))
    .stdout(std::fs::File::create(&log).unwrap())
    .stderr(Stdio::null());
    // SAFETY: only async-signal-safe setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: FDS,
                rlim_max: FDS,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut zring = Proc::start("zring", &mut cmd);
    wait_port(port, &mut zring, Duration::from_secs(10));
    // Far more clients than fds: the first ones are served, the rest wait.
    let mut waiting: Vec<TcpStream> = (0..2 * FDS)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let before = waiting.len();
    waiting.retain_mut(|c| !answered(c));
    let served = before - waiting.len();
    assert!(
        served > 0 && !waiting.is_empty(),
        "served {served} of {before}"
    );
    assert!(zring.exited().is_none(), "zring exited");
    // The served ones were closed by zring after their 503, freeing fds: the waiting
    // clients get in.
    let end = Instant::now() + Duration::from_secs(10);
    while !waiting.is_empty() && Instant::now() < end {
        waiting.retain_mut(|c| !answered(c));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(waiting.is_empty(), "{} clients never served", waiting.len());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("RLIMIT_NOFILE"),
        "no warning about the fd limit in the log:\n{text}"
    );
    assert!(zring.terminate(Duration::from_secs(5)).is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
