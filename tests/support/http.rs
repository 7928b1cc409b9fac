//! Raw HTTP over std sockets: one-shot exchanges, response readers, a recording client
//! (`Client`, which the parity harness uses), and `curl`. Nothing here uses zring's code.
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::tn;

/// Default bound on any single wait of `Client`.
pub const WAIT: Duration = Duration::from_secs(5);

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
    let out = super::proc::output(
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args),
    )
    .expect("curl must be installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// A raw TCP HTTP client that records the exact bytes of every response it reads.
pub struct Client {
    pub s: TcpStream,
    pub port: u16,
    buf: Vec<u8>,
    /// (label, bytes) in order: `response`, `closed`, `open`, ...
    pub events: Vec<(String, Vec<u8>)>,
}

impl Client {
    pub fn connect(port: u16) -> Result<Client, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).ok();
        Ok(Client {
            s,
            port,
            buf: Vec::new(),
            events: Vec::new(),
        })
    }

    /// `127.0.0.1:<port>`, the Host header value.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn send(&mut self, b: impl AsRef<[u8]>) -> Result<(), String> {
        self.s
            .write_all(b.as_ref())
            .map_err(|e| format!("client write: {e}"))
    }

    /// Reads more bytes into the buffer; Ok(false) on EOF.
    fn fill(&mut self, deadline: Instant, what: &str) -> Result<bool, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "client timed out waiting for {what}; have {:?}",
                tn::escape(&self.buf)
            ));
        }
        self.s.set_read_timeout(Some(left)).unwrap();
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(format!(
                    "client timed out waiting for {what}; have {:?}",
                    tn::escape(&self.buf)
                ))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(format!("client read: {e}")),
        }
    }

    /// Reads until the buffer holds `pat`; returns and consumes the bytes up to its end.
    pub fn read_until(&mut self, pat: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = find(&self.buf, pat) {
                return Ok(self.buf.drain(..i + pat.len()).collect());
            }
            if !self.fill(deadline, &format!("{:?}", tn::escape(pat)))? {
                return Err(format!(
                    "connection closed before {:?}; have {:?}",
                    tn::escape(pat),
                    tn::escape(&self.buf)
                ));
            }
        }
    }

    fn read_n(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if !self.fill(deadline, &format!("{n} body bytes"))? {
                return Err(format!(
                    "connection closed after {} of {n} bytes",
                    self.buf.len()
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one complete response (an interim 1xx counts as one) and records it as
    /// `response`. `head_request` = the request was HEAD (no body follows).
    pub fn response(&mut self, head_request: bool) -> Result<Vec<u8>, String> {
        let r = self.read_response(head_request, WAIT)?;
        self.events.push(("response".into(), r.clone()));
        Ok(r)
    }

    /// Reads only the head of a response (recorded as `head`).
    pub fn head(&mut self) -> Result<Vec<u8>, String> {
        let h = self.read_until(b"\r\n\r\n", WAIT)?;
        self.events.push(("head".into(), h.clone()));
        Ok(h)
    }

    /// Reads until `pat` (recorded as `part`).
    pub fn part(&mut self, pat: &[u8]) -> Result<Vec<u8>, String> {
        let p = self.read_until(pat, WAIT)?;
        self.events.push(("part".into(), p.clone()));
        Ok(p)
    }

    pub fn read_response(
        &mut self,
        head_request: bool,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        let head = self.read_until(b"\r\n\r\n", timeout)?;
        let text = String::from_utf8_lossy(&head).into_owned();
        let code: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line in {text:?}"))?;
        let header = |name: &str| {
            text.split("\r\n").skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let mut out = head.clone();
        if (100..200).contains(&code) || code == 204 || code == 304 || head_request {
            return Ok(out);
        }
        if let Some(cl) = header("content-length") {
            let n: usize = cl.parse().map_err(|_| format!("bad content-length {cl}"))?;
            out.extend(self.read_n(n, deadline)?);
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line =
                    self.read_until(b"\r\n", deadline.saturating_duration_since(Instant::now()))?;
                out.extend_from_slice(&line);
                let size_txt = String::from_utf8_lossy(&line);
                let size_txt = size_txt.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_txt, 16)
                    .map_err(|_| format!("bad chunk size line {size_txt:?}"))?;
                if size == 0 {
                    // Trailers end with an empty line.
                    loop {
                        let l = self.read_until(b"\r\n", WAIT)?;
                        out.extend_from_slice(&l);
                        if l == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                out.extend(self.read_n(size + 2, deadline)?);
            }
        } else {
            // Close-delimited.
            while self.fill(deadline, "end of a close-delimited body")? {}
            out.append(&mut self.buf);
        }
        Ok(out)
    }

    /// Waits up to `timeout` for EOF: records `closed` (EOF or reset), `open` (nothing came),
    /// or `extra` with unexpected bytes.
    pub fn closed_or_open(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        if !self.buf.is_empty() {
            let b = std::mem::take(&mut self.buf);
            self.events.push(("extra".into(), b));
            return Ok(());
        }
        let ev = match self.fill(deadline, "eof") {
            Ok(false) => ("closed".to_string(), Vec::new()),
            Ok(true) => ("extra".to_string(), std::mem::take(&mut self.buf)),
            Err(e) if e.contains("timed out") => ("open".to_string(), Vec::new()),
            Err(e) => return Err(e),
        };
        self.events.push(ev);
        Ok(())
    }

    /// Reads one response and records it as `response`, or, if the CM closes the connection
    /// first, records `closed` with whatever partial bytes came.
    pub fn response_or_close(&mut self) -> Result<(), String> {
        match self.read_response(false, WAIT) {
            Ok(r) => {
                self.events.push(("response".into(), r));
                Ok(())
            }
            Err(e) if e.starts_with("connection closed") => {
                let b = std::mem::take(&mut self.buf);
                self.events.push(("closed".into(), b));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads everything until EOF (recorded as `rest`).
    pub fn rest(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        while self.fill(deadline, "eof")? {}
        let b = std::mem::take(&mut self.buf);
        self.events.push(("rest".into(), b.clone()));
        Ok(b)
    }

    /// Keeps the connection open, reading, until `done` is set (or `max` passes); anything
    /// the CM sends meanwhile is recorded (`extra` bytes, `closed`).
    pub fn idle_until(
        &mut self,
        done: &std::sync::atomic::AtomicBool,
        max: Duration,
    ) -> Result<(), String> {
        let end = Instant::now() + max;
        while !done.load(Ordering::Acquire) {
            if Instant::now() > end {
                return Err(format!("client idled for {max:?} without being released"));
            }
            match self.fill(Instant::now() + Duration::from_millis(100), "idle") {
                Ok(true) => {
                    let b = std::mem::take(&mut self.buf);
                    self.events.push(("extra".into(), b));
                }
                Ok(false) => {
                    self.events.push(("closed".into(), Vec::new()));
                    return Ok(());
                }
                Err(e) if e.contains("timed out") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn record(&mut self, label: &str, b: &[u8]) {
        self.events.push((label.into(), b.to_vec()));
    }

    // --------------------------------------------------------------------------------------
    // WebSocket (RFC 6455) framing, written here so the harness trusts nothing of zring's

    /// Sends one client frame, masked with a fixed key.
    pub fn ws_send(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Result<(), String> {
        const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        self.send(super::ws::frame(fin, 0, opcode, payload, Some(MASK)))
    }

    /// Reads one server frame: (fin, opcode, payload). Server frames must be unmasked with
    /// RSV bits clear.
    pub fn ws_frame(&mut self) -> Result<(bool, u8, Vec<u8>), String> {
        let deadline = Instant::now() + WAIT;
        let h = self.read_n(2, deadline)?;
        if h[1] & 0x80 != 0 || h[0] & 0x70 != 0 {
            return Err(format!("bad server frame header {:02x} {:02x}", h[0], h[1]));
        }
        let len = match h[1] & 0x7f {
            126 => {
                let b = self.read_n(2, deadline)?;
                u16::from_be_bytes([b[0], b[1]]) as usize
            }
            127 => {
                let b = self.read_n(8, deadline)?;
                u64::from_be_bytes(b.try_into().unwrap()) as usize
            }
            n => n as usize,
        };
        let payload = self.read_n(len, deadline)?;
        Ok((h[0] & 0x80 != 0, h[0] & 0x0f, payload))
    }

    /// Reads one message: a control frame, or a whole data message (its fragments joined,
    /// so how the CM frames what the handler sent does not matter). Records it as
    /// `ws <kind>` with the payload.
    pub fn ws_message(&mut self) -> Result<(u8, Vec<u8>), String> {
        let (mut fin, opcode, mut data) = self.ws_frame()?;
        while !fin {
            let (f, op, more) = self.ws_frame()?;
            if op != 0 {
                return Err(format!("opcode {op} inside a fragmented message"));
            }
            fin = f;
            data.extend(more);
        }
        let kind = match opcode {
            1 => "text",
            2 => "binary",
            8 => "close",
            9 => "ping",
            10 => "pong",
            _ => "other",
        };
        self.events.push((format!("ws {kind}"), data.clone()));
        Ok((opcode, data))
    }
}

/// Where `needle` first occurs in `hay` (None for an empty needle).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
