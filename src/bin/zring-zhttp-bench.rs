//! zring-zhttp-bench: the requester, origin and direct client of `scripts/client-bench.sh`,
//! which measures client mode (a ZHTTP requester → connection manager → origin) for zring,
//! zurl and pushpin-connmgr side by side.
//!
//! Subcommands (each prints `key=value` lines on stdout):
//! - `origin --port P [--body-bytes B]`: a keep-alive HTTP/1.1 origin, a thread per
//!   connection, answering every request with 200 and a B-byte body (Content-Length).
//! - `requester (--stream BASE_IN,BASE_IN_STREAM,BASE_OUT | --req SPEC) --uri URL
//!   [--inflight N] [--secs S] [--warmup S] [--rate R]`: ZHTTP GETs to the connection
//!   manager (stream: PUSH first packets, SUB replies; req: DEALER). Without `--rate`, N
//!   requests are kept in flight (closed loop) and requests/s is counted over S seconds
//!   after a warm-up; with `--rate`, requests go out on a fixed schedule (open loop: a send
//!   never waits for an answer) and each one's latency is measured from its send.
//! - `direct --port P [--inflight N] [--secs S] [--warmup S] [--rate R]`: the same two
//!   measurements with HTTP/1.1 requests straight to the origin over keep-alive
//!   connections: the ceiling and the hop-less latency.
//! - `ws-idle --stream IN,IN_STREAM,OUT --uri ws://... --count N --hold-secs S [--mid M]`:
//!   opens N WebSocket sessions through the connection manager, prints `ws_open=` once all
//!   settled, then keeps them idle for S seconds (the script reads the manager's RSS
//!   meanwhile). With `--mid M` it first opens M, prints `ws_mid=` and pauses 4 s.
//!
//! The requester reports its own CPU (`requester_cpu_pct`): it must not be the bottleneck.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use zring::proto::tnetstring;

/// The requester's ZeroMQ identity and `from`.
const FROM: &[u8] = b"zhttp-bench";
/// Credits offered in each first packet: more than any body of the bench, so no credit
/// packets are needed.
const CREDITS: i64 = 1 << 20;
/// Open loop: at most this many requests in flight; a schedule that runs ahead of the
/// responder drops the rest (counted as `dropped`).
const OPEN_LOOP_INFLIGHT_MAX: usize = 20_000;
/// A request older than this is counted as lost and forgotten.
const REQUEST_LOST_SECS: u64 = 30;

struct Args(Vec<String>);

impl Args {
    fn value(&self, name: &str) -> Option<&str> {
        let pos = self.0.iter().position(|a| a == name)?;
        Some(self.0.get(pos + 1).expect("flag without value"))
    }
    fn number(&self, name: &str, default: f64) -> f64 {
        self.value(name)
            .map(|v| v.parse().expect("not a number"))
            .unwrap_or(default)
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprintln!("usage: zring-zhttp-bench origin|requester|direct|ws-idle ... (see the source)");
        std::process::exit(2);
    };
    let args = Args(argv);
    match cmd.as_str() {
        "origin" => origin(&args),
        "requester" => requester(&args),
        "direct" => direct(&args),
        "ws-idle" => ws_idle(&args),
        other => {
            eprintln!("unknown subcommand {other}");
            std::process::exit(2);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Measurement helpers

/// This process's user + system CPU time.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What a measurement window saw.
#[derive(Default)]
struct Tally {
    done: u64,
    errors: u64,
    dropped: u64,
    lost: u64,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn print(&mut self, prefix: &str, wall: Duration, cpu: Duration, rate: Option<f64>) {
        let secs = wall.as_secs_f64();
        let mut line = format!(
            "{prefix}requests={} {prefix}errors={} {prefix}rps={:.0} {prefix}requester_cpu_pct={:.0}",
            self.done,
            self.errors,
            self.done as f64 / secs,
            cpu.as_secs_f64() / secs * 100.0
        );
        if let Some(rate) = rate {
            self.latencies_us.sort_unstable();
            let pct = |p: f64| -> u32 {
                let v = &self.latencies_us;
                if v.is_empty() {
                    return 0;
                }
                v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
            };
            line += &format!(
                " {prefix}rate={rate:.0} {prefix}p50_us={} {prefix}p99_us={} {prefix}max_us={} {prefix}dropped={} {prefix}lost={}",
                pct(0.50),
                pct(0.99),
                pct(1.0),
                self.dropped,
                self.lost
            );
        }
        println!("{line}");
    }
}

/// The schedule of a run: warm-up, then the measured window; closed or open loop.
struct Run {
    start: Instant,
    warm_end: Instant,
    end: Instant,
    rate: Option<f64>,
    inflight: usize,
    /// Open loop: requests scheduled so far.
    scheduled: u64,
}

impl Run {
    fn new(args: &Args) -> Run {
        let start = Instant::now();
        let warm_end = start + Duration::from_secs_f64(args.number("--warmup", 2.0));
        Run {
            start,
            warm_end,
            end: warm_end + Duration::from_secs_f64(args.number("--secs", 10.0)),
            rate: args.value("--rate").map(|r| r.parse().expect("--rate")),
            inflight: args.number("--inflight", 64.0) as usize,
            scheduled: 0,
        }
    }

    /// Open loop: the scheduled time of the next request, if it is due by `now`.
    fn due(&mut self, now: Instant) -> Option<Instant> {
        let rate = self.rate?;
        let at = self.start + Duration::from_secs_f64(self.scheduled as f64 / rate);
        if at > now || at >= self.end {
            return None;
        }
        self.scheduled += 1;
        Some(at)
    }

    /// How long to wait for replies before the next scheduled send, rounded up to whole
    /// milliseconds (ZeroMQ's poll unit): no busy loop that would take CPU from the
    /// manager under test; a send may go up to 1 ms after its slot.
    fn wait_ms(&self, now: Instant) -> i64 {
        match self.rate {
            None => 100,
            Some(rate) => {
                let at = self.start + Duration::from_secs_f64(self.scheduled as f64 / rate);
                at.saturating_duration_since(now).as_micros().div_ceil(1000) as i64
            }
        }
    }

    fn measuring(&self, t: Instant) -> bool {
        t >= self.warm_end && t < self.end
    }

    fn record(&self, tally: &mut Tally, sent: Instant, now: Instant, ok: bool) {
        if !self.measuring(sent) {
            return;
        }
        if !ok {
            tally.errors += 1;
            return;
        }
        tally.done += 1;
        if self.rate.is_some() {
            tally
                .latencies_us
                .push(now.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
        }
    }
}

// ------------------------------------------------------------------------------------------
// The origin

fn origin(args: &Args) {
    let port = args.number("--port", 0.0) as u16;
    let body = vec![b'x'; args.number("--body-bytes", 100.0) as usize];
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    // std listens with a backlog of 128. A manager without an origin pool opens a
    // connection per request; a burst past 128 unaccepted ones drops SYNs, and each drop
    // costs the client a 1 s retransmit. Linux takes a second listen() as a new backlog.
    // SAFETY: listen on the descriptor the listener owns; no memory is passed.
    let listened = unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    assert_eq!(listened, 0, "listen: {}", std::io::Error::last_os_error());
    println!("origin_port={}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().ok();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let response: &'static [u8] = Box::leak(response.into_boxed_slice());
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || serve_origin(conn, response));
    }
}

/// One keep-alive connection: every complete request head (GET, no body) gets `response`;
/// pipelined heads are answered in one write.
fn serve_origin(mut conn: TcpStream, response: &[u8]) {
    conn.set_nodelay(true).ok();
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut out = Vec::new();
    loop {
        let n = match conn.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut at = 0;
        while let Some(end) = find(&buf[at..filled], b"\r\n\r\n") {
            at += end + 4;
            out.extend_from_slice(response);
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if filled == buf.len() {
            return; // a head larger than the buffer: not from this bench
        }
        if !out.is_empty() {
            if conn.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ------------------------------------------------------------------------------------------
// ZHTTP

fn tn_bytes(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(format!("{}:", v.len()).as_bytes());
    out.extend_from_slice(v);
    out.push(b',');
}

fn tn_int(out: &mut Vec<u8>, v: i64) {
    let s = v.to_string();
    out.extend_from_slice(format!("{}:{s}#", s.len()).as_bytes());
}

/// A first packet: `T` + a dict of `from`/`id`/`seq`/`method`/`uri`/`headers`/`credits`
/// (stream) or `id`/`method`/`uri`/`headers` (req).
fn first_packet(id: u64, uri: &str, stream: bool) -> Vec<u8> {
    let mut dict = Vec::with_capacity(160);
    if stream {
        tn_bytes(&mut dict, b"from");
        tn_bytes(&mut dict, FROM);
    }
    tn_bytes(&mut dict, b"id");
    tn_bytes(&mut dict, id.to_string().as_bytes());
    if stream {
        tn_bytes(&mut dict, b"seq");
        tn_int(&mut dict, 0);
        tn_bytes(&mut dict, b"credits");
        tn_int(&mut dict, CREDITS);
    }
    if !uri.starts_with("ws") {
        tn_bytes(&mut dict, b"method");
        tn_bytes(&mut dict, b"GET");
    }
    tn_bytes(&mut dict, b"uri");
    tn_bytes(&mut dict, uri.as_bytes());
    tn_bytes(&mut dict, b"headers");
    dict.extend_from_slice(b"0:]");
    let mut out = format!("T{}:", dict.len()).into_bytes();
    out.extend_from_slice(&dict);
    out.push(b'}');
    out
}

/// What one reply packet means for its request.
enum Reply {
    /// Not the end yet (a keep-alive, a credit, a head with more to come).
    Partial,
    /// The response is complete; `code` is its status if this packet carried it (a last
    /// body packet after the head does not).
    Done { code: Option<i64> },
    /// `error` or `cancel`.
    Failed,
}

/// Decodes a reply packet (`T` + dict): its id and what it means.
fn parse_reply(packet: &[u8]) -> Option<(u64, Reply)> {
    let body = packet.strip_prefix(b"T")?;
    let (value, _) = tnetstring::parse(body).ok()?;
    let dict = value.as_dict()?;
    let id = dict.get(b"id")?.as_bytes()?;
    let id: u64 = std::str::from_utf8(id).ok()?.parse().ok()?;
    let kind = dict.get(b"type").and_then(|v| v.as_bytes());
    let more = dict.get(b"more").and_then(|v| v.as_bool()).unwrap_or(false);
    let code = dict.get(b"code").and_then(|v| v.as_int());
    let reply = match kind {
        Some(b"error") | Some(b"cancel") => Reply::Failed,
        Some(_) => Reply::Partial,
        // A WebSocket session is open with its 101 head.
        None if code == Some(101) => Reply::Done { code },
        None if more => Reply::Partial,
        None => Reply::Done { code },
    };
    Some((id, reply))
}

/// The requester's sockets: stream mode (PUSH, ROUTER, SUB) or req mode (DEALER).
struct Sockets {
    push: Option<zmq::Socket>,
    _router: Option<zmq::Socket>,
    sub: Option<zmq::Socket>,
    dealer: Option<zmq::Socket>,
}

impl Sockets {
    fn connect(args: &Args) -> Sockets {
        let ctx = zmq::Context::new();
        let hwm = 100_000;
        let socket = |kind, spec: &str| {
            let s = ctx.socket(kind).expect("socket");
            s.set_sndhwm(hwm).unwrap();
            s.set_rcvhwm(hwm).unwrap();
            if kind == zmq::ROUTER {
                s.set_identity(FROM).unwrap();
            }
            if kind == zmq::SUB {
                let mut prefix = FROM.to_vec();
                prefix.push(b' ');
                s.set_subscribe(&prefix).unwrap();
            }
            s.connect(spec).expect("connect");
            s
        };
        let sockets = if let Some(specs) = args.value("--stream") {
            let specs: Vec<&str> = specs.split(',').collect();
            assert_eq!(specs.len(), 3, "--stream IN,IN_STREAM,OUT");
            Sockets {
                push: Some(socket(zmq::PUSH, specs[0])),
                _router: Some(socket(zmq::ROUTER, specs[1])),
                sub: Some(socket(zmq::SUB, specs[2])),
                dealer: None,
            }
        } else {
            let spec = args.value("--req").expect("--stream or --req");
            Sockets {
                push: None,
                _router: None,
                sub: None,
                dealer: Some(socket(zmq::DEALER, spec)),
            }
        };
        // Let the subscription and the connects settle before the first request (a PUB
        // drops what it sends before the SUB's subscription reaches it).
        std::thread::sleep(Duration::from_millis(500));
        sockets
    }

    fn stream(&self) -> bool {
        self.push.is_some()
    }

    fn send(&self, packet: &[u8]) {
        match (&self.push, &self.dealer) {
            (Some(push), _) => push.send(packet, 0).expect("send"),
            (None, Some(dealer)) => dealer.send_multipart([&b""[..], packet], 0).expect("send"),
            _ => unreachable!(),
        }
    }

    /// Waits up to `timeout_ms` for replies, then hands each one that is waiting to `each`.
    fn recv(&self, timeout_ms: i64, mut each: impl FnMut(&[u8])) {
        let sock = self.sub.as_ref().or(self.dealer.as_ref()).unwrap();
        if sock.poll(zmq::POLLIN, timeout_ms).unwrap_or(0) == 0 {
            return;
        }
        let mut msg = zmq::Message::new();
        // Bounded: at most this many per call, so the schedule is looked at again.
        for _ in 0..4096 {
            if sock.recv(&mut msg, zmq::DONTWAIT).is_err() {
                return;
            }
            if self.stream() {
                // "<from> T..."
                if let Some(sp) = msg.iter().position(|&b| b == b' ') {
                    each(&msg[sp + 1..]);
                }
            } else if !msg.get_more() {
                each(&msg); // the last part of ["", T...]
            }
        }
    }
}

fn requester(args: &Args) {
    let uri = args.value("--uri").expect("--uri").to_string();
    let sockets = Sockets::connect(args);
    let stream = sockets.stream();
    let mut run = Run::new(args);
    let mut tally = Tally::default();
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut send = |pending: &mut HashMap<u64, Instant>, at: Instant| {
        sockets.send(&first_packet(next_id, &uri, stream));
        pending.insert(next_id, at);
        next_id += 1;
    };
    if run.rate.is_none() {
        for _ in 0..run.inflight {
            send(&mut pending, Instant::now());
        }
    }
    let mut cpu_start = None;
    let mut last_sweep = Instant::now();
    loop {
        let now = Instant::now();
        if cpu_start.is_none() && now >= run.warm_end {
            cpu_start = Some(cpu_time());
        }
        if now >= run.end {
            break;
        }
        while let Some(at) = run.due(now) {
            if pending.len() >= OPEN_LOOP_INFLIGHT_MAX {
                if run.measuring(at) {
                    tally.dropped += 1;
                }
                continue;
            }
            // Latency counts from the send itself (at most 1 ms after its slot, see
            // `wait_ms`).
            send(&mut pending, Instant::now());
        }
        let mut finished = Vec::new();
        sockets.recv(run.wait_ms(now).clamp(0, 100), |packet| {
            if let Some((id, reply)) = parse_reply(packet) {
                match reply {
                    Reply::Partial => {}
                    Reply::Done { code } => finished.push((id, code.unwrap_or(200) == 200)),
                    Reply::Failed => finished.push((id, false)),
                }
            }
        });
        let now = Instant::now();
        for (id, ok) in finished {
            if let Some(sent) = pending.remove(&id) {
                run.record(&mut tally, sent, now, ok);
                if run.rate.is_none() && now < run.end {
                    send(&mut pending, now);
                }
            }
        }
        if now.duration_since(last_sweep) > Duration::from_secs(1) {
            last_sweep = now;
            sweep_lost(&mut pending, &mut tally, &run, now, |pending| {
                if run.rate.is_none() {
                    send(pending, now)
                }
            });
        }
    }
    let cpu = cpu_time() - cpu_start.unwrap_or_default();
    tally.print("", run.end - run.warm_end, cpu, run.rate);
}

/// Forgets requests older than `REQUEST_LOST_SECS` (counted as lost); `replace` keeps a
/// closed loop's count in flight.
fn sweep_lost(
    pending: &mut HashMap<u64, Instant>,
    tally: &mut Tally,
    run: &Run,
    now: Instant,
    mut replace: impl FnMut(&mut HashMap<u64, Instant>),
) {
    let old: Vec<u64> = pending
        .iter()
        .filter(|(_, &t)| now.duration_since(t) > Duration::from_secs(REQUEST_LOST_SECS))
        .map(|(&id, _)| id)
        .collect();
    for id in old {
        let sent = pending.remove(&id).unwrap();
        if run.measuring(sent) {
            tally.lost += 1;
        }
        replace(pending);
    }
}

// ------------------------------------------------------------------------------------------
// Direct to the origin

/// One keep-alive connection to the origin and the request on it, if any.
struct Direct {
    conn: TcpStream,
    sent: Option<Instant>,
    buf: Vec<u8>,
}

impl Direct {
    fn open(port: u16) -> Direct {
        let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to origin");
        conn.set_nodelay(true).ok();
        conn.set_nonblocking(true).unwrap();
        Direct {
            conn,
            sent: None,
            buf: Vec::with_capacity(4096),
        }
    }

    fn send(&mut self, at: Instant) {
        let req = b"GET /direct HTTP/1.1\r\nHost: origin\r\n\r\n";
        // A small request on a connection with nothing in flight: the socket takes it whole.
        assert_eq!(self.conn.write(req).expect("write to origin"), req.len());
        self.sent = Some(at);
    }

    /// Reads what is there; true once the whole response (head + Content-Length) is in.
    fn read(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.conn.read(&mut chunk) {
                Ok(0) => panic!("origin closed"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("origin: {e}"),
            }
        }
        let Some(end) = find(&self.buf, b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .split("content-length:")
            .nth(1)
            .and_then(|r| r.lines().next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if self.buf.len() < end + 4 + length {
            return false;
        }
        self.buf.drain(..end + 4 + length);
        true
    }
}

fn direct(args: &Args) {
    let port = args.number("--port", 0.0) as u16;
    let mut run = Run::new(args);
    let mut tally = Tally::default();
    let mut conns: Vec<Direct> = Vec::new();
    if run.rate.is_none() {
        for _ in 0..run.inflight {
            let mut c = Direct::open(port);
            c.send(Instant::now());
            conns.push(c);
        }
    }
    let mut cpu_start = None;
    loop {
        let now = Instant::now();
        if cpu_start.is_none() && now >= run.warm_end {
            cpu_start = Some(cpu_time());
        }
        if now >= run.end {
            break;
        }
        while let Some(at) = run.due(now) {
            let now = Instant::now(); // as the requester: latency from the send
            match conns.iter_mut().position(|c| c.sent.is_none()) {
                Some(i) => conns[i].send(now),
                None if conns.len() < run.inflight => {
                    let mut c = Direct::open(port);
                    c.send(now);
                    conns.push(c);
                }
                None => {
                    if run.measuring(at) {
                        tally.dropped += 1;
                    }
                }
            }
        }
        let mut items: Vec<zmq::PollItem> = conns
            .iter()
            .map(|c| zmq::PollItem::from_fd(c.conn.as_raw_fd(), zmq::POLLIN))
            .collect();
        zmq::poll(&mut items, run.wait_ms(now).clamp(0, 100)).expect("poll");
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        let now = Instant::now();
        for (c, ready) in conns.iter_mut().zip(ready) {
            if ready && c.sent.is_some() && c.read() {
                let sent = c.sent.take().unwrap();
                run.record(&mut tally, sent, now, true);
                if run.rate.is_none() && now < run.end {
                    c.send(now);
                }
            }
        }
    }
    let cpu = cpu_time() - cpu_start.unwrap_or_default();
    tally.print("", run.end - run.warm_end, cpu, run.rate);
}

// ------------------------------------------------------------------------------------------
// Idle WebSockets through the connection manager

fn ws_idle(args: &Args) {
    let uri = args.value("--uri").expect("--uri").to_string();
    let count = args.number("--count", 1000.0) as u64;
    let hold = Duration::from_secs_f64(args.number("--hold-secs", 20.0));
    let sockets = Sockets::connect(args);
    assert!(sockets.stream(), "ws-idle needs --stream");
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let (mut open, mut failed, mut other) = (0u64, 0u64, 0u64);
    // Sessions open in batches so the origin's accept queue keeps up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next = 0u64;
    // `--mid M`: a pause once M sessions are open, for a second memory reading (the cost of
    // one more session, without what the first sessions grow once).
    let mut mid = args
        .value("--mid")
        .map(|m| m.parse::<u64>().expect("--mid N"));
    while (open + failed + other < count) && Instant::now() < deadline {
        if mid.is_some_and(|m| open + failed + other >= m) {
            println!("ws_mid={open}");
            std::io::stdout().flush().ok();
            let end = Instant::now() + Duration::from_secs(4);
            while Instant::now() < end {
                sockets.recv(100, |_| {});
            }
            mid = None;
        }
        let batch_end = mid.unwrap_or(count).min(count);
        while next < batch_end && pending.len() < 200 {
            sockets.send(&first_packet(next, &uri, true));
            pending.insert(next, Instant::now());
            next += 1;
        }
        sockets.recv(100, |packet| {
            if let Some((id, reply)) = parse_reply(packet) {
                if pending.remove(&id).is_some() {
                    match reply {
                        Reply::Done { code: Some(101) } => open += 1,
                        Reply::Failed => failed += 1,
                        Reply::Done { .. } => other += 1,
                        Reply::Partial => {
                            pending.insert(id, Instant::now());
                        }
                    }
                }
            }
        });
    }
    println!(
        "ws_open={open} ws_failed={failed} ws_other={other} ws_unanswered={}",
        count - open - failed - other
    );
    std::io::stdout().flush().ok();
    // Idle: replies (keep-alives from the manager) are read and dropped.
    let end = Instant::now() + hold;
    while Instant::now() < end {
        sockets.recv(100, |_| {});
    }
}
