//! Startup behaviour: malformed flags, and `--runtime auto` falling back to epoll where
//! io_uring is blocked the way container profiles block it (seccomp makes
//! `io_uring_setup` fail with EPERM).
mod support;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn malformed_flags_print_one_line_and_exit_2() {
    let cases: [&[&str]; 8] = [
        &["--workers", "x"],
        &["--bogus"],
        &["--listen", "8000,nope"],
        &["--listen", "8000,mode=600"],
        &["--listen", "/tmp/x.sock,local,mode=999"],
        &["--runtime", "kqueue"],
        &["--zclient-stream", "udp://x"],
        &["--buffer-size"],
    ];
    for args in cases {
        let out =
            support::proc::output(Command::new(env!("CARGO_BIN_EXE_zring")).args(args)).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("zring: "), "{args:?}: {err}");
    }
}

#[test]
fn version_and_sizes() {
    let out = support::proc::output(Command::new(env!("CARGO_BIN_EXE_zring")).arg("-V")).unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("zring "));
    let out =
        support::proc::output(Command::new(env!("CARGO_BIN_EXE_zring")).arg("--sizes")).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let conn: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("connection: "))
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .expect("--sizes prints the connection size");
    assert!(
        conn <= 512,
        "connection state grew past the 512-byte budget: {conn}"
    );
}

/// Installs a seccomp filter that fails io_uring_setup with EPERM, as Docker's default
/// profile does, then lets the program run.
fn block_io_uring() -> std::io::Result<()> {
    const IO_URING_SETUP: u32 = 425;
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let filter = [
        // load the syscall number
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: eperm,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: runs in the forked child before exec; prctl only reads `prog`.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_blocked() {
    let dir = temp_dir("fallback");
    let port = free_port();
    let base = format!("ipc://{}/z", dir.display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zring"));
    cmd.args(["--runtime", "auto", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--zclient-stream", &base]);
    cmd.stdout(Stdio::piped());
    // SAFETY: block_io_uring only makes async-signal-safe syscalls.
    unsafe { cmd.pre_exec(block_io_uring) };
    let mut zring = Proc::start("zring", &mut cmd);
    let mut handler = Command::new(env!("CARGO_BIN_EXE_zring-example-handler"));
    let _handler = Proc::start(
        "handler",
        handler.args(["--stream", &base]).stdout(Stdio::null()),
    );
    wait_port(port, &mut zring, Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = curl(&[&format!("http://127.0.0.1:{port}/hello")]);
        if body == "hello\n" || Instant::now() > end {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(body, "hello\n", "zring did not serve on the epoll fallback");
    let mut stdout = zring.take_stdout().unwrap();
    zring
        .terminate(Duration::from_secs(5))
        .expect("zring exits on SIGTERM");
    let mut log = String::new();
    stdout.read_to_string(&mut log).unwrap();
    assert!(
        log.contains("io_uring unavailable") && log.contains("using epoll"),
        "{log}"
    );
    // And asking for io_uring explicitly there is a clear startup error.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zring"));
    cmd.args(["--runtime", "uring", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()));
    // SAFETY: as above.
    unsafe { cmd.pre_exec(block_io_uring) };
    let out = support::proc::output(&mut cmd).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("io_uring unavailable"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether a process running as `nobody` can connect to the Unix socket at `path`.
fn nobody_connects(path: &std::path::Path) -> bool {
    let out = support::proc::output(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
            ])
            .arg(path)
            .uid(65534)
            .gid(65534),
    )
    .unwrap();
    out.status.success()
}

#[test]
fn a_local_listener_takes_mode_user_and_group() {
    // Goal: pushpin-connmgr's `mode=` (octal), `user=` and `group=` on a local --listen, as
    // Pushpin's runner passes them: the socket file gets them, so another user may connect.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = TempDir::new("local-perms");
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = format!("ipc://{}", dir.s("z"));
    let run = |sock: &std::path::Path, params: &str| {
        let mut zring = Proc::start(
            "zring",
            Command::new(env!("CARGO_BIN_EXE_zring"))
                .arg(format!("--listen={},local,stream{params}", sock.display()))
                .args(["--zclient-stream", &base, "--log-level", "1"])
                .stdout(Stdio::null()),
        );
        let end = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            assert!(zring.exited().is_none(), "zring exited at start ({params})");
            assert!(Instant::now() < end, "zring did not listen ({params})");
            std::thread::sleep(Duration::from_millis(5));
        }
        zring
    };
    let owned = dir.path.join("owned.sock");
    let _a = run(&owned, ",mode=600,user=nobody,group=nogroup");
    let m = std::fs::metadata(&owned).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert!(nobody_connects(&owned), "the socket's owner may connect");

    // The same mode without user=: root's socket, closed to nobody (so the check above
    // could fail).
    let closed = dir.path.join("closed.sock");
    let _b = run(&closed, ",mode=600");
    assert_eq!(std::fs::metadata(&closed).unwrap().mode() & 0o7777, 0o600);
    assert!(!nobody_connects(&closed));

    // A name that does not resolve stops zring at start, naming it.
    let out = support::proc::output(
        Command::new(env!("CARGO_BIN_EXE_zring"))
            .arg(format!(
                "--listen={},local,user=zring-no-such-user",
                dir.path.join("bad.sock").display()
            ))
            .args(["--zclient-stream", &base]),
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stdout); // zring's log goes to stdout
    assert!(log.contains("no user \"zring-no-such-user\""), "{log}");
}
