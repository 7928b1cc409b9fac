//! A raw RFC 6455 client for the WebSocket tests: builds frames byte by byte (masked or
//! not, any RSV bits and opcode, any length encoding), writes them whole, split at any
//! points or byte by byte, and reads the server's frames back as exact bytes. It trusts
//! nothing in zring: its own framing, masking and SHA-1 (for the accept key).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// RFC 6455 §1.3's example key and the accept value it must produce.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Bound on any single wait for the server.
pub const WAIT: Duration = Duration::from_secs(10);

/// A client frame: FIN, RSV bits (0-7, RSV1 = 4), opcode, payload masked with `mask` (None
/// = unmasked, which a server must refuse), with the minimal length encoding.
pub fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = header(fin, rsv, opcode, payload.len() as u64, mask);
    let start = f.len();
    f.extend_from_slice(payload);
    if let Some(m) = mask {
        for (i, b) in f[start..].iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    f
}

/// Just the header of a client frame declaring `len` payload bytes (minimal encoding).
pub fn header(fin: bool, rsv: u8, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        f.push(m | len as u8);
    } else if len < 65536 {
        f.push(m | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(k) = mask {
        f.extend_from_slice(&k);
    }
    f
}

/// The exact bytes a server must send for an unfragmented frame: unmasked, minimal length.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, payload, None)
}

/// The exact bytes of a server close frame with `code` and `reason`.
pub fn server_close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    server_frame(CLOSE, &p)
}

/// A close payload: the code (if any) and the reason.
pub fn close_payload(code: Option<u16>, reason: &[u8]) -> Vec<u8> {
    let mut p = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
    p.extend_from_slice(reason);
    p
}

/// A frame the server sent, as parsed from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
    /// The frame exactly as it came.
    pub raw: Vec<u8>,
}

impl Frame {
    /// The close code, if this is a close frame with one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// How a read for a frame ended without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFrame {
    /// The server closed the connection (EOF or reset); `partial` = bytes of an incomplete
    /// frame that came first.
    Closed { partial: Vec<u8> },
    /// Nothing complete within the time.
    Timeout { partial: Vec<u8> },
}

/// The SHA-1 of `data` (FIPS 180-4), for computing accept keys independently of zring.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// `Sec-WebSocket-Accept` for `key`.
pub fn accept_for(key: &str) -> String {
    base64(&sha1(
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    ))
}

/// A well-formed upgrade request for `path` with `extra` header lines (each ending `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The value of header `name` in a response head (first occurrence), and how many times it
/// occurs.
pub fn header_of(head: &str, name: &str) -> (Option<String>, usize) {
    let mut first = None;
    let mut n = 0;
    for l in head.split("\r\n").skip(1) {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case(name) {
                n += 1;
                first.get_or_insert_with(|| v.trim().to_string());
            }
        }
    }
    (first, n)
}

/// A connected client: the socket, what was read past the last frame, and a mask source.
pub struct Ws {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    /// The head of the 101 response.
    pub head: String,
    mask_n: u32,
}

impl Ws {
    /// Connects, sends `request`, reads the response head. Returns the client (whatever the
    /// status) with the head in `head`; bytes after the head stay in `buf`.
    pub fn raw_handshake(port: u16, request: &[u8]) -> Result<Ws, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        Self::handshake_on(s, request)
    }

    /// As `raw_handshake`, on a stream the caller connected (with its own socket options).
    pub fn handshake_on(s: TcpStream, request: &[u8]) -> Result<Ws, String> {
        s.set_nodelay(true).ok();
        let mut w = Ws {
            s,
            buf: Vec::new(),
            head: String::new(),
            mask_n: 0x5eed,
        };
        w.s.write_all(request).map_err(|e| format!("write: {e}"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = find(&w.buf, b"\r\n\r\n") {
                w.head = String::from_utf8_lossy(&w.buf[..i + 4]).into_owned();
                w.buf.drain(..i + 4);
                return Ok(w);
            }
            match w.fill(deadline) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "closed before a response head; got {:?}",
                        String::from_utf8_lossy(&w.buf)
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "no response head within {WAIT:?}; got {:?}",
                        String::from_utf8_lossy(&w.buf)
                    ))
                }
            }
        }
    }

    /// A WebSocket on `path` through the handshake; panics unless it is a 101 with the right
    /// accept key.
    pub fn connect(port: u16, path: &str) -> Ws {
        Self::connect_with(port, path, "")
    }

    pub fn connect_with(port: u16, path: &str, extra: &str) -> Ws {
        let w = Self::raw_handshake(port, upgrade_request(path, extra).as_bytes())
            .unwrap_or_else(|e| panic!("handshake for {path}: {e}"));
        assert!(
            w.head.starts_with("HTTP/1.1 101 "),
            "expected a 101 for {path}, got {:?}",
            w.head
        );
        assert_eq!(
            header_of(&w.head, "Sec-WebSocket-Accept").0.as_deref(),
            Some(ACCEPT),
            "{}",
            w.head
        );
        w
    }

    /// The status code of the response head.
    pub fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// The next masking key: varied, never all zero.
    pub fn next_mask(&mut self) -> [u8; 4] {
        self.mask_n = self.mask_n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let k = self.mask_n.to_be_bytes();
        if k == [0; 4] {
            [1, 2, 3, 4]
        } else {
            k
        }
    }

    /// A masked frame with a fresh key.
    pub fn masked(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let m = self.next_mask();
        frame(fin, rsv, opcode, payload, Some(m))
    }

    pub fn write(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("client write");
    }

    /// Writes `b` in pieces of `chunk` bytes, pausing `pause` between them. Stops at the
    /// first write error (the server may close the connection part way, which the caller
    /// checks by reading).
    pub fn write_split(&mut self, b: &[u8], chunk: usize, pause: Duration) {
        for c in b.chunks(chunk.max(1)) {
            if self.s.write_all(c).is_err() {
                return;
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }

    /// Everything that arrives (after what is buffered) until EOF or `idle` passes without
    /// data; `true` if the connection ended.
    pub fn read_rest(&mut self, idle: Duration) -> (Vec<u8>, bool) {
        loop {
            match self.fill(Instant::now() + idle) {
                Ok(true) => {}
                Ok(false) => return (std::mem::take(&mut self.buf), true),
                Err(()) => return (std::mem::take(&mut self.buf), false),
            }
        }
    }

    /// Writes ignoring errors (the server may already have closed).
    pub fn write_lenient(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// Sends one masked frame.
    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let f = self.masked(fin, 0, opcode, payload);
        self.write(&f);
    }

    pub fn text(&mut self, t: &[u8]) {
        self.send(true, TEXT, t);
    }

    pub fn binary(&mut self, b: &[u8]) {
        self.send(true, BINARY, b);
    }

    pub fn close(&mut self, code: Option<u16>, reason: &[u8]) {
        let p = close_payload(code, reason);
        let f = self.masked(true, 0, CLOSE, &p);
        self.write_lenient(&f);
    }

    /// Ok(false) on EOF or reset; Err on timeout.
    fn fill(&mut self, deadline: Instant) -> Result<bool, ()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(());
        }
        self.s.set_read_timeout(Some(left)).unwrap();
        let mut tmp = vec![0u8; 1 << 16];
        match self.s.read(&mut tmp) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(()),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(false)
            }
            Err(e) => panic!("client read: {e}"),
        }
    }

    /// Parses one frame off the front of `buf` if it is complete.
    fn take_frame(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let masked = b[1] & 0x80 != 0;
        let (mut at, len) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return None;
                }
                (4, u16::from_be_bytes([b[2], b[3]]) as u64)
            }
            127 => {
                if b.len() < 10 {
                    return None;
                }
                (10, u64::from_be_bytes(b[2..10].try_into().unwrap()))
            }
            n => (2, n as u64),
        };
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        let end = at + len as usize;
        if b.len() < end {
            return None;
        }
        let mut payload = b[at..end].to_vec();
        if let Some(m) = mask {
            for (i, x) in payload.iter_mut().enumerate() {
                *x ^= m[i % 4];
            }
        }
        let raw: Vec<u8> = self.buf.drain(..end).collect();
        Some(Frame {
            fin: raw[0] & 0x80 != 0,
            rsv: (raw[0] >> 4) & 7,
            opcode: raw[0] & 0x0f,
            masked,
            payload,
            raw,
        })
    }

    /// The next frame from the server within `timeout`. Every server frame must be
    /// unmasked with RSV bits clear, except RSV1 once permessage-deflate was negotiated.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Frame, NoFrame> {
        let deadline = Instant::now() + timeout;
        let deflate = header_of(&self.head, "Sec-WebSocket-Extensions")
            .0
            .is_some_and(|v| v.contains("permessage-deflate"));
        let allowed = if deflate { 4 } else { 0 };
        loop {
            if let Some(f) = self.take_frame() {
                assert!(!f.masked, "server frames must not be masked: {:?}", f.raw);
                assert_eq!(
                    f.rsv & !allowed,
                    0,
                    "RSV bits set in a server frame: {:?}",
                    f.raw
                );
                return Ok(f);
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(NoFrame::Closed {
                        partial: std::mem::take(&mut self.buf),
                    })
                }
                Err(()) => {
                    return Err(NoFrame::Timeout {
                        partial: self.buf.clone(),
                    })
                }
            }
        }
    }

    /// The next frame, which must be there.
    pub fn frame(&mut self) -> Frame {
        match self.read_frame(WAIT) {
            Ok(f) => f,
            Err(e) => panic!("expected a frame from the server: {e:?}"),
        }
    }

    /// The next frame must be exactly `want` (bytes on the wire).
    pub fn expect_bytes(&mut self, want: &[u8]) {
        let f = self.frame();
        assert!(
            f.raw == want,
            "server frame differs:\n want {}\n  got {}",
            show(want),
            show(&f.raw)
        );
    }

    /// The next frame must be the unfragmented echo of (`opcode`, `payload`), to the byte.
    pub fn expect_echo(&mut self, opcode: u8, payload: &[u8]) {
        self.expect_bytes(&server_frame(opcode, payload));
    }

    /// Reads one whole data message (frames of any size: first TEXT/BINARY, then
    /// continuations until FIN). Control frames in between are returned too, in order.
    pub fn read_message(&mut self, timeout: Duration) -> (u8, Vec<u8>, Vec<Frame>) {
        let deadline = Instant::now() + timeout;
        let mut controls = Vec::new();
        let mut kind = None;
        let mut data = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.read_frame(left).unwrap_or_else(|e| {
                panic!(
                    "message incomplete after {} bytes: {}",
                    data.len(),
                    match e {
                        NoFrame::Closed { .. } => "server closed",
                        NoFrame::Timeout { .. } => "timed out",
                    }
                )
            });
            if f.opcode >= 8 {
                controls.push(f);
                continue;
            }
            match (kind, f.opcode) {
                (None, TEXT | BINARY) => kind = Some(f.opcode),
                (Some(_), CONT) => {}
                _ => panic!(
                    "bad fragment sequence: opcode {} after {:?}",
                    f.opcode, kind
                ),
            }
            data.extend_from_slice(&f.payload);
            if f.fin {
                return (kind.unwrap(), data, controls);
            }
        }
    }

    /// The server must close: its next frame is a close with `code` (None = any code or
    /// none), then the TCP connection ends (we answer its close, as a client does).
    pub fn expect_close(&mut self, code: Option<u16>) -> Frame {
        let f = match self.read_frame(WAIT) {
            Ok(f) => f,
            Err(e) => panic!("expected a close frame with {code:?}, got {e:?}"),
        };
        assert_eq!(
            f.opcode,
            CLOSE,
            "expected a close frame with {code:?}, got {}",
            show(&f.raw)
        );
        if let Some(c) = code {
            assert_eq!(
                f.close_code(),
                Some(c),
                "close frame {} should carry {c}",
                show(&f.raw)
            );
        }
        let reply = close_payload(f.close_code(), b"");
        let m = self.next_mask();
        self.write_lenient(&frame(true, 0, CLOSE, &reply, Some(m)));
        self.expect_eof(WAIT);
        f
    }

    /// The connection must end (EOF or reset) within `timeout` with no more frames.
    pub fn expect_eof(&mut self, timeout: Duration) {
        match self.read_frame(timeout) {
            Err(NoFrame::Closed { partial }) if partial.is_empty() => {}
            Err(NoFrame::Closed { partial }) => {
                panic!("connection ended inside a frame: {}", show(&partial))
            }
            Err(NoFrame::Timeout { partial }) => panic!(
                "connection still open after {timeout:?} (pending {})",
                show(&partial)
            ),
            Ok(f) => panic!("expected the connection to end, got frame {}", show(&f.raw)),
        }
    }

    /// The server must drop the connection without a close frame (what Condure 1.9.1 does
    /// on most protocol errors). Frames in `allowed_before` may come first.
    pub fn expect_dropped(&mut self) {
        match self.read_frame(WAIT) {
            Err(NoFrame::Closed { partial }) if partial.is_empty() => {}
            other => panic!("expected the connection dropped without a close frame, got {other:?}"),
        }
    }

    /// Nothing may arrive for `d`, and the connection stays open.
    pub fn expect_silence(&mut self, d: Duration) {
        match self.read_frame(d) {
            Err(NoFrame::Timeout { partial }) if partial.is_empty() => {}
            other => panic!("expected silence for {d:?}, got {other:?}"),
        }
    }

    pub fn shutdown(&self) {
        let _ = self.s.shutdown(Shutdown::Both);
    }
}

pub use super::http::find;

/// Bytes for failure messages: hex for short frames, a summary for long ones.
pub fn show(b: &[u8]) -> String {
    if b.len() <= 48 {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        format!(
            "{} ... ({} bytes)",
            b[..32]
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
            b.len()
        )
    }
}
