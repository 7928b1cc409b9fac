//! `Stack`: zring (either runtime, or Condure) and the example handler as real processes on
//! loopback, for the HTTP, WebSocket and TLS suites.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::http::exchange;
use super::net::{free_port, temp_dir, try_wait_port};
use super::proc::Proc;

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
            let mut zring = Proc::start(
                if runtime == "condure" {
                    "condure"
                } else {
                    "zring"
                },
                &mut cmd,
            );
            match try_wait_port(port, &mut zring, Duration::from_secs(10)) {
                Ok(()) => {
                    // Ours, not another test's server that took the port: still running.
                    std::thread::sleep(Duration::from_millis(50));
                    if zring.exited().is_none() {
                        break (zring, port, req_port);
                    }
                }
                Err(e) if zring.exited().is_none() => panic!("{e}"),
                Err(_) => {}
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
        let h = Proc::start(
            "example handler",
            Command::new(env!("CARGO_BIN_EXE_zring-example-handler"))
                .args([
                    "--stream",
                    &s.base,
                    "--req",
                    &format!("ipc://{}/zring-req", s.dir.display()),
                ])
                .stdout(Stdio::null()),
        );
        s.handler = Some(h);
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
