//! Shared pieces of zring's integration tests: start zring (on a chosen runtime) and a
//! handler as real processes on loopback, talk to them over real sockets, stop them by pid.
#![allow(dead_code)]

pub mod tls;
pub mod ws;

/// Runs a test body once per runtime: `name(rt) { body }` becomes `name::uring` and
/// `name::epoll`. Test files that use it declare `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! both_runtimes {
    ($($name:ident($rt:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn run($rt: &str) $body
                #[test]
                fn uring() { run("uring") }
                #[test]
                fn epoll() { run("epoll") }
            }
        )*
    };
}

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const RUNTIMES: [&str; 2] = ["uring", "epoll"];

/// A child process killed (by its pid) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A free loopback port (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "zring-test-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn wait_port(port: u16) {
    wait_port_until(port, None);
}

/// Waits (10 s at most) for `port` to accept; false if `proc` exits first.
fn wait_port_while_running(port: u16, proc: &mut Proc) -> bool {
    wait_port_until(port, Some(proc))
}

fn wait_port_until(port: u16, mut proc: Option<&mut Proc>) -> bool {
    let exited = |p: &mut Option<&mut Proc>| {
        p.as_mut()
            .is_some_and(|p| matches!(p.0.try_wait(), Ok(Some(_))))
    };
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if exited(&mut proc) {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            if proc.is_none() {
                return true;
            }
            // Ours, not another test's server that took the port: zring is still running.
            std::thread::sleep(Duration::from_millis(50));
            return !exited(&mut proc);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("port {port} never opened");
}

/// zring plus the example handler, on one stream port and one req port.
pub struct Stack {
    pub zring: Proc,
    pub handler: Option<Proc>,
    pub port: u16,
    pub req_port: u16,
    pub dir: PathBuf,
    pub base: String,
}

impl Stack {
    /// zring on `runtime` (`uring` or `epoll`), or Condure 1.9.1 when `runtime` is
    /// `condure` (same flags, no `--runtime`; it must be installed: `apt-get install condure`).
    pub fn zring_only(runtime: &str, extra: &[&str]) -> Stack {
        Stack::zring_only_env(runtime, extra, &[])
    }

    /// As `zring_only`, with extra environment variables for zring.
    pub fn zring_only_env(runtime: &str, extra: &[&str], env: &[(&str, &str)]) -> Stack {
        let dir = temp_dir(runtime);
        let base = format!("ipc://{}/zring", dir.display());
        let req = format!("ipc://{}/zring-req", dir.display());
        // `free_port` releases the port before zring binds it, and tests run in parallel:
        // another may take it first. zring then exits (address in use): try new ports.
        let mut attempt = 0;
        let (zring, port, req_port) = loop {
            attempt += 1;
            let (port, req_port) = (free_port(), free_port());
            let mut cmd = if runtime == "condure" {
                Command::new("condure")
            } else {
                let mut c = Command::new(env!("CARGO_BIN_EXE_zring"));
                c.args(["--runtime", runtime]);
                c
            };
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--listen")
                .arg(format!("127.0.0.1:{req_port},req"))
                .args([
                    "--zclient-stream",
                    &base,
                    "--zclient-req",
                    &req,
                    "--log-level",
                    "1",
                    "--workers",
                    "2",
                ])
                .args(extra)
                .envs(env.iter().copied())
                .stdout(Stdio::null());
            let mut zring = Proc(cmd.spawn().expect("start zring"));
            if wait_port_while_running(port, &mut zring) {
                break (zring, port, req_port);
            }
            assert!(
                attempt < 3,
                "zring exited at start three times (ports taken?)"
            );
        };
        Stack {
            zring,
            handler: None,
            port,
            req_port,
            dir,
            base,
        }
    }

    /// zring and the example handler (`examples/handler.rs`).
    pub fn with_example(runtime: &str, extra: &[&str]) -> Stack {
        Stack::with_example_env(runtime, extra, &[])
    }

    /// As `with_example`, with extra environment variables for zring.
    pub fn with_example_env(runtime: &str, extra: &[&str], env: &[(&str, &str)]) -> Stack {
        let mut s = Stack::zring_only_env(runtime, extra, env);
        let h = Command::new(env!("CARGO_BIN_EXE_zring-example-handler"))
            .args([
                "--stream",
                &s.base,
                "--req",
                &format!("ipc://{}/zring-req", s.dir.display()),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start example handler");
        s.handler = Some(Proc(h));
        // The handler sleeps 200 ms so its subscription reaches zring; wait until it answers.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let r = exchange(
                s.port,
                b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                Duration::from_secs(2),
            );
            if r.starts_with(b"HTTP/1.1 200") {
                break;
            }
            assert!(
                Instant::now() < end,
                "example handler never answered: {:?}",
                String::from_utf8_lossy(&r)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Open fds of the zring process (for leak checks).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.zring.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.handler.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `req`, then reads until the server closes or `idle` passes without data.
pub fn exchange(port: u16, req: &[u8], idle: Duration) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    s.set_read_timeout(Some(idle)).unwrap();
    if s.write_all(req).is_err() {
        return Vec::new();
    }
    read_all(&mut s)
}

pub fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response (head and a Content-Length or chunked body) from `s`;
/// asserts nothing follows it (use `read_response_from` for pipelined responses).
pub fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut pending = Vec::new();
    let r = read_response_from(s, &mut pending);
    assert!(
        pending.is_empty(),
        "{} bytes after the response (pipelined data?)",
        pending.len()
    );
    r
}

/// Reads one response from `pending` and then `s`, leaving any bytes past it
/// (the next pipelined response, which may share a segment) in `pending`.
pub fn read_response_from(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut data = std::mem::take(pending);
    let mut buf = [0u8; 65536];
    let mut fill = |data: &mut Vec<u8>, what: &str| {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {what}: {e}"));
        assert!(
            n > 0,
            "closed mid-{what}: {:?}",
            String::from_utf8_lossy(data)
        );
        data.extend_from_slice(&buf[..n]);
    };
    let head_end = loop {
        if let Some(i) = find(&data, b"\r\n\r\n") {
            break i + 4;
        }
        fill(&mut data, "head");
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let lower = head.to_ascii_lowercase();
    let (body, end) = if let Some(cl) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
    {
        let n: usize = cl.trim().parse().unwrap();
        while data.len() < head_end + n {
            fill(&mut data, "body");
        }
        (data[head_end..head_end + n].to_vec(), head_end + n)
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            if let Some((body, n)) = chunked(&data[head_end..]) {
                break (body, head_end + n);
            }
            fill(&mut data, "chunks");
        }
    } else {
        // No framing (101, 204, 304, or close-delimited): callers read on.
        (data[head_end..].to_vec(), data.len())
    };
    pending.extend_from_slice(&data[end..]);
    (head, body)
}

pub fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// The body of a whole chunked message (no trailers).
pub fn dechunk(b: &[u8]) -> Vec<u8> {
    chunked(b).expect("a complete chunked body").0
}

/// A complete chunked body at the start of `b`, if it is all there: the body, and how many
/// bytes of `b` it took (no trailers from zring: the last chunk ends with one CRLF).
fn chunked(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let i = at + find(&b[at..], b"\r\n")?;
        let line = std::str::from_utf8(&b[at..i]).expect("chunk size line");
        let size =
            usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).expect("chunk size");
        at = i + 2;
        if b.len() < at + size + 2 {
            return None;
        }
        if size == 0 {
            return b[at..].starts_with(b"\r\n").then_some((out, at + 2));
        }
        out.extend_from_slice(&b[at..at + size]);
        at += size + 2;
    }
}

pub fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl must be installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}
