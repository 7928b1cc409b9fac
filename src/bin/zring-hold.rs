//! zring-hold: the client side of `scripts/hostile.sh` (issue 17). One thread, one epoll loop
//! (mio), nonblocking sockets bound to sources spread over 127.0.0.2-200 (as zring-churn;
//! `IP_BIND_ADDRESS_NO_PORT`, so ephemeral ports never run out), RLIMIT_NOFILE raised to the
//! hard limit (10,000 sockets fit in one process here). Every phase is bounded in time.
//!
//! Modes (the first argument):
//! - `silent`: `--conns N` TCP connections that connect and send nothing. Each one's close by
//!   the server (EOF or reset, and the status of any response sent first, e.g. a 408) is timed
//!   from its own connect. Watches until every connection is closed or `--watch S` seconds
//!   after the last connect.
//! - `ws`: `--conns N` WebSockets (`GET --path`, default `/ws`, 101 checked), held open (a
//!   server ping gets its pong). With `--kill-pid PID`, once all are open it sends SIGKILL to
//!   PID (the handler behind the server) and times, from that instant, how each connection
//!   learns of it: a close frame (its code) or a bare EOF/reset (what a browser reports as
//!   1006). Watches until every connection ended or `--watch S` seconds after the kill.
//! - `probe`: a fresh connection with one `GET --path` (default `/hello`, `Connection:
//!   close`) every `--every S` (0.5) seconds for `--secs S`, each bounded by `--timeout S`
//!   (5), each in a thread of its own so a stalled server does not slow the probe down:
//!   latency p50/p99/max of the 200s, and the failures by kind (a status, or timeout, reset...). With `--while-pid PID`
//!   it stops early once PID is gone (the attacking client, reaped by the script).
//!
//! Prints one `key=value` line (times in seconds, probe latencies in ms); exits 0 unless the
//! arguments were bad.
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

struct Opts {
    mode: String,
    target: SocketAddrV4,
    srcs: Vec<Ipv4Addr>,
    conns: usize,
    path: String,
    watch: f64,
    connect_secs: f64,
    inflight: usize,
    kill_pid: Option<i32>,
    every: f64,
    secs: f64,
    timeout: f64,
    while_pid: Option<i32>,
}

fn usage(err: &str) -> ! {
    eprintln!("zring-hold: {err}");
    eprintln!(
        "usage: zring-hold silent|ws|probe --target 127.0.0.1:PORT [--conns N] [--path P] \
         [--watch S] [--connect-secs S] [--inflight N] [--kill-pid PID] [--src-ips A-B] \
         [--every S] [--secs S] [--timeout S] [--while-pid PID]"
    );
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| usage("a mode is required"));
    if !matches!(mode.as_str(), "silent" | "ws" | "probe") {
        usage(&format!("unknown mode {mode}"));
    }
    let mut o = Opts {
        path: if mode == "ws" { "/ws" } else { "/hello" }.into(),
        mode,
        target: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        srcs: (u32::from(Ipv4Addr::new(127, 0, 0, 2))..=u32::from(Ipv4Addr::new(127, 0, 0, 200)))
            .map(Ipv4Addr::from)
            .collect(),
        conns: 100,
        watch: 70.0,
        connect_secs: 60.0,
        inflight: 1000,
        kill_pid: None,
        every: 0.5,
        secs: 10.0,
        timeout: 5.0,
        while_pid: None,
    };
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        let num = |v: String| -> f64 {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .unwrap_or_else(|| usage(&format!("bad value {v}")))
        };
        match a.as_str() {
            "--target" => o.target = val().parse().unwrap_or_else(|_| usage("bad --target")),
            "--conns" => o.conns = val().parse().unwrap_or_else(|_| usage("bad --conns")),
            "--path" => o.path = val(),
            "--watch" => o.watch = num(val()),
            "--connect-secs" => o.connect_secs = num(val()),
            "--inflight" => o.inflight = num(val()).max(1.0) as usize,
            "--kill-pid" => o.kill_pid = Some(val().parse().unwrap_or_else(|_| usage("bad pid"))),
            "--while-pid" => o.while_pid = Some(val().parse().unwrap_or_else(|_| usage("bad pid"))),
            "--every" => o.every = num(val()),
            "--secs" => o.secs = num(val()),
            "--timeout" => o.timeout = num(val()).max(0.001),
            "--src-ips" => {
                let v = val();
                let (a, b) = v.split_once('-').unwrap_or((&v, &v));
                let a: Ipv4Addr = a.parse().unwrap_or_else(|_| usage("bad --src-ips"));
                let b: Ipv4Addr = b.parse().unwrap_or_else(|_| usage("bad --src-ips"));
                if !a.is_loopback() || !b.is_loopback() || b < a {
                    usage("--src-ips: a range inside 127.0.0.0/8");
                }
                o.srcs = (u32::from(a)..=u32::from(b)).map(Ipv4Addr::from).collect();
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if o.target.port() == 0 || !o.target.ip().is_loopback() {
        usage("--target 127.x.x.x:PORT is required (loopback only)");
    }
    if o.kill_pid.or(o.while_pid).is_some_and(|p| p <= 1) {
        usage("--kill-pid: a real process id");
    }
    o
}

/// Raises the soft RLIMIT_NOFILE to the hard one; returns the new soft limit.
fn raise_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
    }
    l.rlim_cur
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

/// A nonblocking socket bound to `src` (no port: `IP_BIND_ADDRESS_NO_PORT`), its connect to
/// `target` started.
fn connect_from(src: Ipv4Addr, target: SocketAddrV4) -> std::io::Result<mio::net::TcpStream> {
    // SAFETY: plain socket calls on a descriptor we own; every result is checked and the fd
    // is owned by the TcpStream (closed on drop) from the moment it exists.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = mio::net::TcpStream::from_raw_fd(fd);
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
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(s)
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Connecting,
    /// Connected; ws: the upgrade request sent, waiting for the 101.
    Handshake,
    Open,
    /// Ended (closed by the server, failed, or given up); the socket is dropped.
    Done,
}

/// How a connection ended.
#[derive(Clone, Copy, PartialEq, Debug)]
enum End {
    None,
    ConnectErr,
    /// ws: not a 101 (or closed before one).
    Refused,
    Eof,
    Reset,
    /// ws: a close frame with this code (0: a close frame without a code).
    CloseFrame(u16),
}

struct Conn {
    s: Option<mio::net::TcpStream>,
    state: State,
    started: Instant,
    connected: Option<Instant>,
    ended: Option<Instant>,
    end: End,
    /// The status of the first response seen (silent: e.g. a 408 before the close).
    status: Option<u16>,
    /// ws: bytes not parsed yet (the handshake response, then frames).
    rbuf: Vec<u8>,
}

fn status_of(head: &[u8]) -> Option<u16> {
    let s = head.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x17, 0xc3, 0x2e];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len().min(125) as u8];
    f.extend_from_slice(&mask);
    f.extend(
        payload
            .iter()
            .take(125)
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]),
    );
    f
}

/// Parses whole frames off `c.rbuf`: pongs the pings, and ends the connection at a close.
fn ws_frames(c: &mut Conn, now: Instant) {
    let mut at = 0;
    while c.state == State::Open {
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
        let hl = hl + if b[1] & 0x80 != 0 { 4 } else { 0 };
        if b.len() < hl + len {
            break;
        }
        let payload = &b[hl..hl + len];
        match b[0] & 0x0f {
            0x8 => {
                let code = if len >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    0
                };
                // Answer the close (best effort), then drop the socket.
                let reply = masked(0x8, &payload[..len.min(2)]);
                if let Some(s) = c.s.as_mut() {
                    let _ = s.write(&reply);
                }
                finish(c, End::CloseFrame(code), now);
            }
            0x9 => {
                let pong = masked(0xa, payload);
                if let Some(s) = c.s.as_mut() {
                    let _ = s.write(&pong);
                }
            }
            _ => {}
        }
        at += hl + len;
    }
    if at > 0 && c.state == State::Open {
        c.rbuf.drain(..at);
    }
    if c.rbuf.len() > 1 << 20 {
        c.rbuf = Vec::new(); // a runaway frame: not what this tool measures
    }
}

fn finish(c: &mut Conn, end: End, now: Instant) {
    c.state = State::Done;
    c.end = end;
    c.ended = Some(now);
    c.s = None; // closes the socket
    c.rbuf = Vec::new();
}

/// Reads everything there is; returns at WouldBlock or the end of the connection.
fn on_readable(c: &mut Conn, ws: bool, now: Instant, tmp: &mut [u8]) {
    loop {
        let Some(s) = c.s.as_mut() else { return };
        match s.read(tmp) {
            Ok(0) => {
                let end = if c.state == State::Handshake {
                    End::Refused
                } else {
                    End::Eof
                };
                finish(c, end, now);
                return;
            }
            Ok(n) => {
                if !ws {
                    if c.status.is_none() {
                        c.status = status_of(&tmp[..n]).or(Some(0));
                    }
                    continue;
                }
                c.rbuf.extend_from_slice(&tmp[..n]);
                if c.state == State::Handshake {
                    let Some(i) = c.rbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if c.rbuf.len() > 16384 {
                            finish(c, End::Refused, now);
                            return;
                        }
                        continue;
                    };
                    c.status = status_of(&c.rbuf);
                    if c.status != Some(101) {
                        finish(c, End::Refused, now);
                        return;
                    }
                    c.rbuf.drain(..i + 4);
                    c.state = State::Open;
                }
                ws_frames(c, now);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                let end = if c.state == State::Handshake {
                    End::Refused
                } else {
                    End::Reset
                };
                finish(c, end, now);
                return;
            }
        }
    }
}

/// The value at quantile `q` of sorted `v` (nearest rank), or `na`.
fn pct(v: &[f64], q: f64) -> String {
    if v.is_empty() {
        return "na".into();
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    format!("{:.2}", v[i])
}

fn dist(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn hold(o: &Opts) {
    let ws = o.mode == "ws";
    let nofile = raise_nofile();
    if o.conns as u64 + 64 > nofile {
        usage(&format!(
            "--conns {} does not fit RLIMIT_NOFILE {nofile}",
            o.conns
        ));
    }
    let mut poll = Poll::new().expect("epoll");
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Conn> = Vec::with_capacity(o.conns);
    let mut tmp = vec![0u8; 16384];
    let t0 = Instant::now();
    let connect_end = t0 + Duration::from_secs_f64(o.connect_secs);
    let mut next = 0usize; // the next connection to start
    let mut pending = 0usize; // connects (and ws handshakes) under way
    let mut kill_at: Option<Instant> = None;
    let mut watch_start: Option<Instant> = None;
    let req = |host: &SocketAddrV4, i: usize| {
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {i:021}A==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            o.path
        )
    };
    loop {
        let now = Instant::now();
        // Start connections, at most `inflight` connecting at once.
        while next < o.conns && pending < o.inflight && now < connect_end {
            let src = o.srcs[next % o.srcs.len()];
            let mut c = Conn {
                s: None,
                state: State::Connecting,
                started: now,
                connected: None,
                ended: None,
                end: End::None,
                status: None,
                rbuf: Vec::new(),
            };
            match connect_from(src, o.target) {
                Ok(mut s) => {
                    poll.registry()
                        .register(&mut s, Token(next), Interest::READABLE | Interest::WRITABLE)
                        .expect("register");
                    c.s = Some(s);
                    pending += 1;
                }
                Err(_) => finish(&mut c, End::ConnectErr, now),
            }
            conns.push(c);
            next += 1;
        }
        // Connects and handshakes that took too long fail (checked once a second is enough,
        // but this is cheap next to 10,000 sockets only while some are pending).
        if pending > 0 {
            for c in conns.iter_mut() {
                if matches!(c.state, State::Connecting | State::Handshake)
                    && (now.duration_since(c.started).as_secs_f64() > 10.0 || now >= connect_end)
                {
                    let end = if c.state == State::Connecting {
                        End::ConnectErr
                    } else {
                        End::Refused
                    };
                    finish(c, end, now);
                    pending -= 1;
                }
            }
        }
        let setup_done = pending == 0 && (next == o.conns || now >= connect_end);
        if setup_done && watch_start.is_none() {
            if ws {
                if let Some(pid) = o.kill_pid {
                    std::thread::sleep(Duration::from_millis(500));
                    let t = Instant::now();
                    // SAFETY: kill(2) with a pid the caller named.
                    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                        eprintln!(
                            "zring-hold: kill {pid}: {}",
                            std::io::Error::last_os_error()
                        );
                    }
                    kill_at = Some(t);
                }
            }
            watch_start = Some(Instant::now());
        }
        if let Some(w) = watch_start {
            let open = conns.iter().filter(|c| c.state != State::Done).count();
            if open == 0 || w.elapsed().as_secs_f64() >= o.watch {
                break;
            }
        }
        // A hard bound whatever happens: connect phase + watch + a margin.
        if now.duration_since(t0).as_secs_f64() > o.connect_secs + o.watch + 30.0 {
            break;
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        let now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.state == State::Connecting && (ev.is_writable() || ev.is_error()) {
                let s = c.s.as_mut().unwrap();
                let ok = matches!(s.take_error(), Ok(None)) && s.peer_addr().is_ok();
                if !ok {
                    finish(c, End::ConnectErr, now);
                    pending -= 1;
                    continue;
                }
                c.connected = Some(now);
                if ws {
                    let r = req(&o.target, i);
                    // A fresh socket's send buffer takes ~200 bytes whole.
                    if s.write(r.as_bytes()).ok() != Some(r.len()) {
                        finish(c, End::Refused, now);
                        pending -= 1;
                        continue;
                    }
                    c.state = State::Handshake;
                } else {
                    c.state = State::Open;
                    pending -= 1;
                }
                let s = c.s.as_mut().unwrap();
                poll.registry()
                    .reregister(s, Token(i), Interest::READABLE)
                    .expect("reregister");
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                let was = c.state;
                if was == State::Connecting || was == State::Done {
                    continue;
                }
                on_readable(c, ws, now, &mut tmp);
                if was == State::Handshake && c.state != State::Handshake {
                    pending -= 1;
                }
            }
        }
    }
    let now = Instant::now();
    let connected = conns.iter().filter(|c| c.connected.is_some()).count();
    let connect_err = conns.iter().filter(|c| c.end == End::ConnectErr).count()
        + o.conns.saturating_sub(conns.len());
    let connect_secs = conns
        .iter()
        .filter_map(|c| c.connected)
        .max()
        .map(|t| t.duration_since(t0).as_secs_f64())
        .unwrap_or(0.0);
    if !ws {
        // Closed by the server: EOF or reset after a connect, timed from that connect.
        let mut times: Vec<f64> = Vec::new();
        let mut how: BTreeMap<String, u64> = BTreeMap::new();
        for c in &conns {
            if let (Some(a), Some(b), End::Eof | End::Reset) = (c.connected, c.ended, c.end) {
                times.push(b.duration_since(a).as_secs_f64());
                let k = format!(
                    "{}_{}",
                    if c.end == End::Eof { "eof" } else { "rst" },
                    match c.status {
                        None => "nodata".to_string(),
                        Some(0) => "data".to_string(),
                        Some(s) => s.to_string(),
                    }
                );
                *how.entry(k).or_default() += 1;
            }
        }
        times.sort_by(f64::total_cmp);
        let open = conns.iter().filter(|c| c.state == State::Open).count();
        println!(
            "conns={} connected={connected} connect_err={connect_err} connect_secs={connect_secs:.2} \
             closed={} closed_first_s={} closed_p50_s={} closed_last_s={} closed_how={} \
             open_at_end={open} watched_s={:.1} client_errors={connect_err}",
            o.conns,
            times.len(),
            pct(&times, 0.0),
            pct(&times, 0.5),
            pct(&times, 1.0),
            dist(&how),
            watch_start.map_or(0.0, |w| now.duration_since(w).as_secs_f64()),
        );
        return;
    }
    // ws: how and when each connection open at the kill learnt of it.
    let refused = conns.iter().filter(|c| c.end == End::Refused).count();
    let k = kill_at.unwrap_or(now);
    let mut times: Vec<f64> = Vec::new();
    let mut told = 0u64;
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut ended_before = 0u64;
    let mut open_at_kill = 0u64;
    for c in &conns {
        if c.connected.is_none() || c.end == End::Refused || c.end == End::ConnectErr {
            continue;
        }
        if c.ended.is_some_and(|e| e < k) {
            ended_before += 1;
            continue;
        }
        open_at_kill += 1;
        let Some(e) = c.ended else { continue };
        times.push(e.duration_since(k).as_secs_f64());
        let key = match c.end {
            End::CloseFrame(0) => "nocode".to_string(),
            End::CloseFrame(code) => code.to_string(),
            End::Eof => "1006_eof".to_string(),
            _ => "1006_rst".to_string(),
        };
        if matches!(c.end, End::CloseFrame(_)) {
            told += 1;
        }
        *codes.entry(key).or_default() += 1;
    }
    times.sort_by(f64::total_cmp);
    let open = conns.iter().filter(|c| c.state == State::Open).count();
    println!(
        "ws_conns={} ws_open={open_at_kill} connect_err={connect_err} refused={refused} connect_secs={connect_secs:.2} \
         killed={} ended_before_kill={ended_before} ended={} told={told} close_codes={} ended_p50_s={} \
         ended_p99_s={} ended_max_s={} open_at_end={open} watched_s={:.1} client_errors={}",
        o.conns,
        if kill_at.is_some() { "yes" } else { "no" },
        times.len(),
        dist(&codes),
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&times, 1.0),
        now.duration_since(k).as_secs_f64(),
        connect_err + refused,
    );
}

/// One probe: connect, `GET`, read to the end of the response; its status or failure kind.
fn probe_once(o: &Opts) -> Result<u16, &'static str> {
    let to = Duration::from_secs_f64(o.timeout);
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&o.target.into(), to).map_err(|e| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "connect_timeout",
        _ => "connect_err",
    })?;
    let left = |t: Instant| to.checked_sub(t.elapsed()).filter(|d| !d.is_zero());
    s.set_nodelay(true).ok();
    s.set_write_timeout(left(t).or(Some(Duration::from_millis(1))))
        .ok();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n",
        o.path
    );
    s.write_all(req.as_bytes()).map_err(|_| "write_err")?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let Some(d) = left(t) else {
            return Err("timeout");
        };
        s.set_read_timeout(Some(d)).ok();
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    if len.is_some_and(|l| buf.len() >= i + 4 + l) {
                        break;
                    }
                }
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("timeout")
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) if !buf.is_empty() => break,
            Err(_) => return Err("reset"),
        }
    }
    if buf.is_empty() {
        return Err("empty");
    }
    status_of(&buf).ok_or("bad_response")
}

fn probe(o: &Opts) {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.secs);
    let every = Duration::from_secs_f64(o.every.max(0.01));
    let mut lat: Vec<f64> = Vec::new();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = |p: i32| unsafe { libc::kill(p, 0) } == 0;
    // One probe every `every` whatever the earlier ones do (a server that stalls must not
    // slow the probe down): each in a thread of its own, at most 64 under way.
    std::thread::scope(|sc| {
        let mut running = std::collections::VecDeque::new();
        let mut tick = start;
        while Instant::now() < end && o.while_pid.is_none_or(alive) {
            if running.len() < 64 {
                n += 1;
                running.push_back(sc.spawn(|| {
                    let t = Instant::now();
                    let r = probe_once(o);
                    (t.elapsed().as_secs_f64() * 1e3, r)
                }));
            } else {
                *kinds.entry("skipped".into()).or_default() += 1;
            }
            tick += every;
            std::thread::sleep(tick.min(end).saturating_duration_since(Instant::now()));
            while running.front().is_some_and(|h| h.is_finished()) {
                let h = running.pop_front().unwrap();
                record(h.join().unwrap(), &mut lat, &mut kinds);
            }
        }
        for h in running {
            record(h.join().unwrap(), &mut lat, &mut kinds);
        }
    });
    lat.sort_by(f64::total_cmp);
    let fail: u64 = kinds.values().sum();
    println!(
        "fresh_n={n} fresh_ok={} fresh_fail={fail} fresh_p50_ms={} fresh_p99_ms={} fresh_max_ms={} fresh_fail_kinds={}",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        dist(&kinds),
    );
}

fn record(
    (ms, r): (f64, Result<u16, &'static str>),
    lat: &mut Vec<f64>,
    kinds: &mut BTreeMap<String, u64>,
) {
    match r {
        Ok(200) => lat.push(ms),
        Ok(s) => *kinds.entry(s.to_string()).or_default() += 1,
        Err(k) => *kinds.entry(k.to_string()).or_default() += 1,
    }
}

fn main() {
    let o = parse_opts();
    if o.mode == "probe" {
        probe(&o);
    } else {
        hold(&o);
    }
}
