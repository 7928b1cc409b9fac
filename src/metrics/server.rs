//! The metrics listener (`--prometheus`): its own thread, a blocking std listener, one
//! connection at a time, minimal HTTP/1.1. `GET /metrics` is the Prometheus text format,
//! `GET /healthz` is 200 when zring is ready and 503 when not; anything else is 404 (405
//! for another method). Every answer closes the connection. A request head is read with a
//! timeout and a size bound, so a stuck or hostile client holds the thread for
//! `READ_TIMEOUT` at most. It reads nothing of the workers but their counters (`Metrics`)
//! and the shared flags: a scrape never waits for, or slows, a worker.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::render::{render, Info};
use crate::bridge::Shared;
use crate::log;

/// A request head larger than this is refused (431).
const REQUEST_BYTES_MAX: usize = 4096;
/// How long a client may take to send its request head, and to take the answer.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the thread looks whether a successor took the listener over.
const HANDOVER_CHECK_MS: libc::c_int = 100;

/// What the metrics thread serves.
pub struct Server {
    pub listener: TcpListener,
    /// Prepended to every metric name (`--prometheus …,prefix=NAME`).
    pub prefix: String,
    pub shared: Arc<Shared>,
    pub info: Info,
    /// zring has stream listeners: `/healthz` wants a handler connected.
    pub stream: bool,
}

impl Server {
    /// Serves until the process exits (the thread is not joined: it holds nothing that
    /// needs an orderly end).
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        // The process's one scrape buffer, reused: its size is fixed by the metric list.
        let mut body = String::new();
        let mut rendered = None;
        if let Err(e) = self.listener.set_nonblocking(true) {
            log!(log::WARN, "metrics", "listener: {e}");
        }
        // Ends only when a successor has taken the listener over (`takeover`): it may
        // then be shared with it, and scrapes are the successor's. Otherwise the process
        // exits around it.
        loop {
            if self.shared.handed_over.load(Ordering::Relaxed) {
                return;
            }
            let mut pfd = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; the timeout bounds how late a handover is seen.
            if unsafe { libc::poll(&mut pfd, 1, HANDOVER_CHECK_MS) } <= 0 {
                continue;
            }
            match self.listener.accept() {
                Ok((s, _)) => {
                    if let Err(e) = self.serve(s, &mut body, &mut rendered) {
                        log!(log::DEBUG, "metrics", "client: {e}");
                    }
                }
                // Another process sharing the listener took it.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    log!(log::WARN, "metrics", "accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Answers one request. `rendered`: the last scrape's render time (the next one shows
    /// it).
    fn serve(
        &self,
        mut s: TcpStream,
        body: &mut String,
        rendered: &mut Option<Duration>,
    ) -> std::io::Result<()> {
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut head = [0u8; REQUEST_BYTES_MAX];
        let Some(len) = read_head(&mut s, &mut head)? else {
            return respond(
                &mut s,
                431,
                "text/plain",
                b"request head too large\n",
                false,
            );
        };
        let line = head[..len].split(|&b| b == b'\n').next().unwrap_or(b"");
        let mut parts = line.split(|&b| b == b' ');
        let (method, target) = (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));
        let path = target.split(|&b| b == b'?').next().unwrap_or(b"");
        let head_only = method == b"HEAD";
        if method != b"GET" && !head_only {
            return respond(&mut s, 405, "text/plain", b"method not allowed\n", false);
        }
        match path {
            b"/metrics" => {
                body.clear();
                let started = Instant::now();
                render(body, &self.prefix, &self.shared, &self.info, *rendered);
                *rendered = Some(started.elapsed());
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                respond(&mut s, 200, ct, body.as_bytes(), head_only)
            }
            b"/healthz" => {
                let (code, text) = self.health();
                respond(&mut s, code, "text/plain", text.as_bytes(), head_only)
            }
            _ => respond(&mut s, 404, "text/plain", b"not found\n", head_only),
        }
    }

    /// Ready: listening (this thread starts once the listeners are open and the workers
    /// run), not shutting down, and in stream mode a handler connected to the ROUTER (when
    /// libzmq can tell).
    fn health(&self) -> (u16, &'static str) {
        if self.shared.shutdown.load(Ordering::Relaxed) || self.shared.drain.load(Ordering::Relaxed)
        {
            return (503, "stopping\n");
        }
        let b = &self.shared.metrics.bridge;
        let known = b.handlers_known.load(Ordering::Relaxed);
        if self.stream && known && b.handlers_connected.get() <= 0 {
            return (503, "no handler connected\n");
        }
        (200, "ok\n")
    }
}

/// Reads until the end of the request head. `None` when it does not fit in `buf`.
fn read_head(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    let mut len = 0;
    // Bounded: each read adds at least one byte to a fixed buffer.
    while len < buf.len() {
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[..len].windows(2).any(|w| w == b"\n\n")
        {
            return Ok(Some(len));
        }
    }
    Ok(None)
}

fn respond(
    s: &mut TcpStream,
    code: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if !head_only {
        s.write_all(body)?;
    }
    s.flush()
}
