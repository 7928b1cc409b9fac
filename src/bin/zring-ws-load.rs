//! WebSocket echo load generator for `scripts/bench-ws.sh`: N connections, each doing one
//! round trip at a time (send a message, wait for its whole echo, send the next) for a fixed
//! time, spread over a few threads, each an epoll loop (mio). Frames are built by hand:
//! masked text (or binary) messages of a fixed size; echoes may come back in fragments.
//!
//! Prints one line of `key=value` pairs:
//! `conns=64 size=16 secs=10.00 messages=123456 msgs_per_sec=12345.6 errors=0`.
//!
//! Usage: zring-ws-load --port PORT [--host 127.0.0.1] [--path /ws] [--conns 64]
//!        [--secs 10] [--threads 2] [--size 16] [--binary]
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

struct Opts {
    host: String,
    port: u16,
    path: String,
    conns: usize,
    secs: f64,
    threads: usize,
    size: usize,
    binary: bool,
}

fn usage(err: &str) -> ! {
    eprintln!("zring-ws-load: {err}");
    eprintln!(
        "usage: zring-ws-load --port PORT [--host H] [--path /ws] [--conns N] [--secs S] \
         [--threads T] [--size BYTES] [--binary]"
    );
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        host: "127.0.0.1".into(),
        port: 0,
        path: "/ws".into(),
        conns: 64,
        secs: 10.0,
        threads: 2,
        size: 16,
        binary: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--host" => o.host = val(),
            "--port" => o.port = val().parse().unwrap_or_else(|_| usage("bad --port")),
            "--path" => o.path = val(),
            "--conns" => o.conns = val().parse().unwrap_or_else(|_| usage("bad --conns")),
            "--secs" => o.secs = val().parse().unwrap_or_else(|_| usage("bad --secs")),
            "--threads" => o.threads = val().parse().unwrap_or_else(|_| usage("bad --threads")),
            "--size" => o.size = val().parse().unwrap_or_else(|_| usage("bad --size")),
            "--binary" => o.binary = true,
            "-h" | "--help" => usage("help"),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if o.port == 0 {
        usage("--port is required");
    }
    o.threads = o.threads.clamp(1, o.conns.max(1));
    o
}

/// A masked client frame carrying `payload`.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Blocking handshake; returns the socket (and any bytes read past the 101's head).
fn handshake(o: &Opts, n: usize) -> Result<(TcpStream, Vec<u8>), String> {
    let mut s =
        TcpStream::connect((o.host.as_str(), o.port)).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // The base64 of 16 bytes (RFC 6455 §4.1): 21 digits and `A`, whose low bits are zero.
    let key = format!("{n:021}A==");
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        o.path, o.host, o.port
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101 ") {
                return Err(format!(
                    "handshake refused: {:?}",
                    String::from_utf8_lossy(&buf[..i])
                ));
            }
            return Ok((s, buf[i + 4..].to_vec()));
        }
        let k = s.read(&mut tmp).map_err(|e| format!("read: {e}"))?;
        if k == 0 {
            return Err("closed during the handshake".into());
        }
        buf.extend_from_slice(&tmp[..k]);
    }
}

struct Conn {
    s: mio::net::TcpStream,
    rbuf: Vec<u8>,
    /// Bytes of the current request frame written so far.
    written: usize,
    /// Payload bytes of the echo received so far.
    echoed: usize,
}

/// Parses complete frames off `c.rbuf`; returns the number of whole messages completed, or
/// an error for anything but data frames.
fn take_frames(c: &mut Conn) -> Result<u64, String> {
    let mut done = 0;
    let mut at = 0;
    loop {
        let b = &c.rbuf[at..];
        if b.len() < 2 {
            break;
        }
        let (hl, len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
            127 if b.len() >= 10 => (
                10,
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            ),
            126 | 127 => break,
            n => (2, n as usize),
        };
        if b[1] & 0x80 != 0 {
            return Err("masked server frame".into());
        }
        if b.len() < hl + len {
            break;
        }
        let (fin, opcode) = (b[0] & 0x80 != 0, b[0] & 0x0f);
        if opcode > 2 {
            return Err(format!("unexpected frame with opcode {opcode}"));
        }
        c.echoed += len;
        if fin {
            done += 1;
            c.echoed = 0;
        }
        at += hl + len;
    }
    c.rbuf.drain(..at);
    Ok(done)
}

/// One thread's share: runs until `end`, returns (messages, errors).
fn run_thread(mut conns: Vec<Conn>, frame: &[u8], start: Instant, end: Instant) -> (u64, u64) {
    let mut poll = Poll::new().expect("epoll");
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(&mut c.s, Token(i), Interest::READABLE | Interest::WRITABLE)
            .expect("register");
    }
    let mut alive = vec![true; conns.len()];
    let (mut messages, mut errors) = (0u64, 0u64);
    let mut events = Events::with_capacity(1024);
    let mut tmp = vec![0u8; 1 << 16];
    // Start every connection's first message.
    let mut ready: Vec<usize> = (0..conns.len()).collect();
    while Instant::now() < end {
        for i in ready.drain(..) {
            if !alive[i] {
                continue;
            }
            let c = &mut conns[i];
            // Write what is left of the current request.
            while c.written < frame.len() {
                match c.s.write(&frame[c.written..]) {
                    Ok(n) => c.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        alive[i] = false;
                        errors += 1;
                        break;
                    }
                }
            }
            // Read the echo.
            loop {
                match c.s.read(&mut tmp) {
                    Ok(0) => {
                        alive[i] = false;
                        errors += 1;
                        break;
                    }
                    Ok(n) => c.rbuf.extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        alive[i] = false;
                        errors += 1;
                        break;
                    }
                }
            }
            if !alive[i] {
                continue;
            }
            match take_frames(c) {
                Ok(0) => {}
                Ok(k) => {
                    if Instant::now() >= start {
                        messages += k;
                    }
                    // One message in flight: the next request goes now.
                    c.written = 0;
                    while c.written < frame.len() {
                        match c.s.write(&frame[c.written..]) {
                            Ok(n) => c.written += n,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => {
                                alive[i] = false;
                                errors += 1;
                                break;
                            }
                        }
                    }
                }
                Err(_) => {
                    alive[i] = false;
                    errors += 1;
                }
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if poll
            .poll(&mut events, Some(left.min(Duration::from_millis(100))))
            .is_err()
        {
            continue;
        }
        for ev in events.iter() {
            ready.push(ev.token().0);
        }
    }
    (messages, errors)
}

fn main() {
    let o = parse_opts();
    let payload: Vec<u8> = (0..o.size).map(|i| b'a' + (i % 26) as u8).collect();
    let frame = client_frame(
        if o.binary { 2 } else { 1 },
        &payload,
        [0x12, 0x34, 0x56, 0x78],
    );
    let mut per_thread: Vec<Vec<Conn>> = (0..o.threads).map(|_| Vec::new()).collect();
    for n in 0..o.conns {
        let (s, rest) = handshake(&o, n).unwrap_or_else(|e| {
            eprintln!("zring-ws-load: connection {n}: {e}");
            std::process::exit(1);
        });
        s.set_nonblocking(true).expect("nonblocking");
        per_thread[n % o.threads].push(Conn {
            s: mio::net::TcpStream::from_std(s),
            rbuf: rest,
            written: 0,
            echoed: 0,
        });
    }
    // A short warm-up (not counted), then the measured window.
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(o.secs);
    let frame = &frame;
    let results: Vec<(u64, u64)> = std::thread::scope(|sc| {
        let hs: Vec<_> = per_thread
            .into_iter()
            .map(|conns| sc.spawn(move || run_thread(conns, frame, start, end)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let messages: u64 = results.iter().map(|r| r.0).sum();
    let errors: u64 = results.iter().map(|r| r.1).sum();
    println!(
        "conns={} size={} secs={:.2} messages={} msgs_per_sec={:.1} errors={}",
        o.conns,
        o.size,
        o.secs,
        messages,
        messages as f64 / o.secs,
        errors
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
