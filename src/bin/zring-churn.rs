//! zring-churn: connection turnover. Each of `--threads` threads repeats, `--cycles` times in
//! all: connect (from a source address spread over 127.0.0.0/8, so ports never run out),
//! send one request, read its whole response, close. Every cycle must end in a complete
//! response with the expected status; anything else is counted as an error by kind.
//!
//! Modes (`--mode`):
//! - `close`: `GET /hello` with `Connection: close`; the client closes right after the
//!   response (the pattern that lost responses on io_uring when a late shutdown hit a
//!   reused direct descriptor).
//! - `mixed`: alternately a malformed request (400, then the server closes) and a valid
//!   keep-alive `POST /echo` (200), each on a fresh connection.
//! - `keepalive`: `GET /hello` keep-alive; the client closes after the response.
//!
//! Prints one `key=value` line; exits non-zero on any error.
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    done: AtomicU64,
    ok: AtomicU64,
    connect_err: AtomicU64,
    empty: AtomicU64,
    bad_status: AtomicU64,
    truncated: AtomicU64,
    timeout: AtomicU64,
    io_err: AtomicU64,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Close,
    Mixed,
    KeepAlive,
}

fn usage(err: &str) -> ! {
    eprintln!("zring-churn: {err}");
    eprintln!(
        "usage: zring-churn --target HOST:PORT --cycles N [--threads T] [--mode close|mixed|keepalive] \
         [--src-ips 127.0.0.2-127.0.0.200] [--max-secs S] [--read-timeout S]"
    );
    std::process::exit(2);
}

fn main() {
    let mut target: Option<SocketAddrV4> = None;
    let mut cycles = 10_000u64;
    let mut threads = 4usize;
    let mut mode = Mode::Close;
    let (mut src_lo, mut src_hi) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 200));
    let mut max_secs = 600.0f64;
    let mut read_timeout = 5.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--target" => target = Some(val().parse().unwrap_or_else(|_| usage("bad --target"))),
            "--cycles" => cycles = val().parse().unwrap_or_else(|_| usage("bad --cycles")),
            "--threads" => threads = val().parse().unwrap_or_else(|_| usage("bad --threads")),
            "--mode" => {
                mode = match val().as_str() {
                    "close" => Mode::Close,
                    "mixed" => Mode::Mixed,
                    "keepalive" => Mode::KeepAlive,
                    m => usage(&format!("unknown mode {m}")),
                }
            }
            "--src-ips" => {
                let v = val();
                let (a, b) = v.split_once('-').unwrap_or((&v, &v));
                src_lo = a.parse().unwrap_or_else(|_| usage("bad --src-ips"));
                src_hi = b.parse().unwrap_or_else(|_| usage("bad --src-ips"));
                if !src_lo.is_loopback() || !src_hi.is_loopback() || src_hi < src_lo {
                    usage("--src-ips: a range inside 127.0.0.0/8");
                }
            }
            "--max-secs" => max_secs = val().parse().unwrap_or_else(|_| usage("bad --max-secs")),
            "--read-timeout" => {
                read_timeout = val()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --read-timeout"))
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let target = target.unwrap_or_else(|| usage("--target is required"));
    if !target.ip().is_loopback() {
        usage("loopback targets only");
    }
    let threads = threads.clamp(1, 256);
    let counts = Arc::new(Counts::default());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop_at = start + Duration::from_secs_f64(max_secs);
    let srcs: Vec<Ipv4Addr> = (u32::from(src_lo)..=u32::from(src_hi))
        .map(Ipv4Addr::from)
        .collect();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (counts, next, srcs) = (counts.clone(), next.clone(), srcs.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cycles || Instant::now() >= stop_at {
                    return;
                }
                let src = srcs[(i % srcs.len() as u64) as usize];
                cycle(&counts, target, src, mode, i, read_timeout);
                counts.done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("churn thread");
    }
    let secs = start.elapsed().as_secs_f64();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let errors = c(&counts.connect_err)
        + c(&counts.empty)
        + c(&counts.bad_status)
        + c(&counts.truncated)
        + c(&counts.timeout)
        + c(&counts.io_err);
    let done = c(&counts.done);
    let status = if errors == 0 && done == cycles {
        "ok"
    } else {
        "failed"
    };
    println!(
        "test=churn mode={} cycles={cycles} done={done} ok={} errors={errors} connect_err={} empty={} \
         bad_status={} truncated={} timeout={} io_err={} secs={secs:.2} rate={:.0} status={status}",
        match mode {
            Mode::Close => "close",
            Mode::Mixed => "mixed",
            Mode::KeepAlive => "keepalive",
        },
        c(&counts.ok),
        c(&counts.connect_err),
        c(&counts.empty),
        c(&counts.bad_status),
        c(&counts.truncated),
        c(&counts.timeout),
        c(&counts.io_err),
        done as f64 / secs.max(1e-9),
    );
    if status != "ok" {
        std::process::exit(1);
    }
}

/// A socket bound to `src` with no port (`IP_BIND_ADDRESS_NO_PORT`: connect picks one
/// unique per destination), connected to `target`.
fn connect_from(src: Ipv4Addr, target: SocketAddrV4) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket calls on a descriptor we own; every result is checked and the
    // fd is owned by the TcpStream (closed on drop) from the moment it exists.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let bind = sockaddr(SocketAddrV4::new(src, 0));
        if libc::bind(
            fd,
            (&bind as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let to = sockaddr(target);
        if libc::connect(
            fd,
            (&to as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn cycle(c: &Counts, target: SocketAddrV4, src: Ipv4Addr, mode: Mode, i: u64, timeout: f64) {
    let mut s = match connect_from(src, target) {
        Ok(s) => s,
        Err(_) => {
            c.connect_err.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs_f64(timeout)));
    let _ = s.set_nodelay(true);
    let (req, want): (&[u8], &[u8]) = match (mode, i % 2) {
        (Mode::Close, _) => (
            b"GET /hello HTTP/1.1\r\nHost: churn\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 ",
        ),
        (Mode::KeepAlive, _) => (
            b"GET /hello HTTP/1.1\r\nHost: churn\r\n\r\n",
            b"HTTP/1.1 200 ",
        ),
        (Mode::Mixed, 0) => (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 "),
        (Mode::Mixed, _) => (
            b"POST /echo HTTP/1.1\r\nHost: churn\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 ",
        ),
    };
    if s.write_all(req).is_err() {
        c.io_err.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut buf = [0u8; 8192];
    let mut got = 0usize;
    loop {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if complete(&buf[..got]) || got == buf.len() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                c.timeout.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                // A reset after a complete response is the server's to send; before, an error.
                if !complete(&buf[..got]) {
                    c.io_err.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                break;
            }
        }
    }
    let r = &buf[..got];
    if r.is_empty() {
        c.empty.fetch_add(1, Ordering::Relaxed);
    } else if !r.starts_with(want) {
        c.bad_status.fetch_add(1, Ordering::Relaxed);
    } else if !complete(r) {
        c.truncated.fetch_add(1, Ordering::Relaxed);
    } else {
        c.ok.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `r` holds a whole response: a head and `Content-Length` bytes of body (every
/// response of these requests has one).
fn complete(r: &[u8]) -> bool {
    let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    r.len() >= end + 4 + len
}
