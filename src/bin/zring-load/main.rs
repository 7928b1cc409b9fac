//! zring-load: a load generator lean enough to hold a million client sockets from one
//! process on a 2-core box, for zring's fan-out and idle-connection runs (issue 7).
//!
//! Every socket is an io_uring direct descriptor (no process fd slot; the process cap here
//! is 20,000), spread over many rings whose registered tables stay under that cap; sources
//! are spread over 127.0.0.0/8 with `IP_BIND_ADDRESS_NO_PORT`. A client is 24 bytes and
//! reads through its ring's provided buffers with a multishot recv. See `engine.rs`.
//!
//! Phases, each bounded in time:
//! 1. connect `--clients` at `--rate` (WebSocket upgrade checked: 101 and the accept value;
//!    or plain HTTP keep-alive, optionally one GET answered 200 each); with `--deflate` each
//!    offers permessage-deflate as browsers do, must get it, and inflates every message
//!    (one inflater per ring when the server keeps no context, else one per client) and
//!    checks its whole text;
//! 2. `--rounds` fan-out rounds: POST to `--fanout-trigger` (the example handler's
//!    `/broadcast`, which stamps its send time into `{ts}`), then every client records
//!    `receipt - sent` of the message (CLOCK_REALTIME, same machine);
//! 3. with `--floor` (or `--mode floor`): the physical floor from the same run: N more
//!    loopback pairs to our own listener, and the same-sized frame written to every server
//!    side with batched io_uring SENDs on registered files, measured by the same clients
//!    (`--floor-first`: before phase 1, its pairs closed again, so the box never holds
//!    more than N pairs; `--floor-threads K`: the sending side in K threads of its own, so
//!    like a server it must wake the client threads, instead of sending from them);
//!    With `--deflate` the floor's frame is compressed once (RSV1) and its clients inflate it;
//!    With `--tls --ca FILE` the clients of the server under test speak TLS (rustls; one
//!    `ClientConnection` per client, resumption only with `--tls-resume`), and so do the
//!    floor's pairs (`--floor-identities DIR`: the server side is zring's own TLS session
//!    and configuration with the certificate `DIR/localhost.crt`, so the same suite is
//!    negotiated; every handshake is done before the rounds, and each round the sender seals
//!    the frame once per client into a record and sends it; the clients decrypt it).
//! 4. hold the connections `--hold` seconds, then print one `key=value` line and exit
//!    (non-zero when clients failed, missed a message, or a protocol error was seen).
//!
//! Several `--target`s (scripts/cluster.sh: one per zring instance) take the clients in
//! turn, as DNS round-robin or an L4 balancer would; the line then also gives, per target,
//! the members, how many were closed, and each round's expected, received and p100
//! (`target_*`). Targets and sources are loopback or private addresses (a script's own
//! network namespaces), never anything else. `--after-round R:CMD` runs CMD after round R
//! (cluster.sh kills an instance there) and waits for the closes it causes, so later rounds
//! expect only the clients still open.
mod bufring;
mod engine;
mod proto;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, ToSocketAddrs};
use std::os::fd::IntoRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Config, Mode, RingSpec, Shared};

struct Opts {
    mode: String,
    clients: u64,
    rate: f64,
    targets: Vec<SocketAddrV4>,
    src_ips: Vec<Ipv4Addr>,
    path: String,
    idle_path: String,
    members: Option<u64>,
    http_get: bool,
    hold: f64,
    max_secs: f64,
    threads: usize,
    per_ring: u32,
    inflight: u16,
    bufs: u16,
    buf_size: u32,
    connect_timeout: f64,
    trigger: Option<String>,
    rounds: u32,
    round_gap: f64,
    round_timeout: f64,
    payload: usize,
    floor: bool,
    floor_first: bool,
    floor_threads: usize,
    label: String,
    dist: Option<String>,
    max_failed: u64,
    deflate: bool,
    tls: bool,
    ca: Option<String>,
    tls_resume: bool,
    /// `--floor-identities DIR`: the TLS floor's certificate and key (`localhost.crt`,
    /// `localhost.key`, as zring reads identities), signed by the `--ca`.
    floor_identities: Option<String>,
    /// `--after-round R:CMD`: after fan-out round R, run CMD (scripts/cluster.sh kills an
    /// instance there), wait for the closes it causes, and go on with the next round.
    after_round: Option<(u32, String)>,
}

fn usage(err: &str) -> ! {
    eprintln!("zring-load: {err}");
    eprintln!(
        "usage: zring-load [--mode ws|http|floor] --clients N [--rate R] \
         [--target HOST:PORT[,HOST:PORT...]] [--src-ips 127.0.0.2-127.0.0.200] [--path /ws/broadcast] [--members M [--idle-path /ws]] \
         [--http-get] [--hold SECS] [--max-secs SECS] [--threads T] [--per-ring N] \
         [--inflight N] [--bufs N] [--buf-size BYTES] [--connect-timeout SECS] \
         [--fanout-trigger http://HOST:PORT/broadcast] [--rounds K] [--round-gap SECS] \
         [--round-timeout SECS] [--payload BYTES] [--floor] [--floor-first] [--floor-threads K] [--label NAME] [--dist FILE.csv] \
         [--max-failed N] [--deflate] [--tls --ca CA.pem [--tls-resume] [--floor-identities DIR]] [--after-round R:COMMAND]"
    );
    std::process::exit(2);
}

fn parse_ip_range(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("bad address {a}"))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("bad address {b}"))?;
        let ok = |x: Ipv4Addr| x.is_loopback() || x.is_private();
        if !ok(a) || !ok(b) || u32::from(b) < u32::from(a) {
            return Err(format!(
                "{part}: want a range of loopback or private addresses (this box's own)"
            ));
        }
        if u32::from(b) - u32::from(a) > 1 << 16 {
            return Err(format!("{part}: more than 65,536 addresses"));
        }
        out.extend((u32::from(a)..=u32::from(b)).map(Ipv4Addr::from));
    }
    Ok(out)
}

fn parse_targets(s: &str) -> Result<Vec<SocketAddrV4>, String> {
    let mut out = Vec::new();
    for t in s.split(',') {
        let addr = t
            .to_socket_addrs()
            .map_err(|e| format!("{t}: {e}"))?
            .find_map(|a| match a {
                std::net::SocketAddr::V4(v4) => Some(v4),
                _ => None,
            })
            .ok_or(format!("{t}: no IPv4 address"))?;
        if !addr.ip().is_loopback() && !addr.ip().is_private() {
            return Err(format!(
                "{t}: loopback or private targets only (a script's own namespaces)"
            ));
        }
        out.push(addr);
    }
    if out.len() > engine::TARGETS_MAX {
        return Err(format!("at most {} targets", engine::TARGETS_MAX));
    }
    Ok(out)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        mode: "ws".into(),
        clients: 0,
        rate: 20_000.0,
        targets: Vec::new(),
        src_ips: parse_ip_range("127.0.0.2-127.0.0.200").unwrap(),
        path: String::new(),
        idle_path: "/ws".into(),
        members: None,
        http_get: false,
        hold: 0.0,
        max_secs: 600.0,
        threads: 2,
        per_ring: 18_000,
        inflight: 256,
        bufs: 1024,
        buf_size: 512,
        connect_timeout: 10.0,
        trigger: None,
        rounds: 0,
        round_gap: 1.0,
        round_timeout: 10.0,
        payload: 64,
        floor: false,
        floor_first: false,
        floor_threads: 0,
        label: "server".into(),
        dist: None,
        max_failed: 0,
        deflate: false,
        tls: false,
        ca: None,
        tls_resume: false,
        floor_identities: None,
        after_round: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        fn num<T: std::str::FromStr>(a: &str, v: String) -> T {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad value {v:?} for {a}")))
        }
        match a.as_str() {
            "--mode" => o.mode = val(),
            "--clients" => o.clients = num(&a, val()),
            "--rate" => o.rate = num(&a, val().trim_end_matches("/s").to_string()),
            "--target" => o.targets = parse_targets(&val()).unwrap_or_else(|e| usage(&e)),
            "--src-ips" => o.src_ips = parse_ip_range(&val()).unwrap_or_else(|e| usage(&e)),
            "--path" => o.path = val(),
            "--members" => o.members = Some(num(&a, val())),
            "--idle-path" => o.idle_path = val(),
            "--http-get" => o.http_get = true,
            "--hold" => o.hold = num(&a, val()),
            "--max-secs" => o.max_secs = num(&a, val()),
            "--threads" => o.threads = num(&a, val()),
            "--per-ring" => o.per_ring = num(&a, val()),
            "--inflight" => o.inflight = num(&a, val()),
            "--bufs" => o.bufs = num(&a, val()),
            "--buf-size" => o.buf_size = num(&a, val()),
            "--connect-timeout" => o.connect_timeout = num(&a, val()),
            "--fanout-trigger" => o.trigger = Some(val()),
            "--rounds" => o.rounds = num(&a, val()),
            "--round-gap" => o.round_gap = num(&a, val()),
            "--round-timeout" => o.round_timeout = num(&a, val()),
            "--payload" => o.payload = num(&a, val()),
            "--floor" => o.floor = true,
            "--floor-first" => {
                o.floor = true;
                o.floor_first = true
            }
            "--floor-threads" => o.floor_threads = num(&a, val()),
            "--label" => o.label = val(),
            "--dist" => o.dist = Some(val()),
            "--max-failed" => o.max_failed = num(&a, val()),
            "--deflate" => o.deflate = true,
            "--tls" => o.tls = true,
            "--ca" => o.ca = Some(val()),
            "--tls-resume" => o.tls_resume = true,
            "--floor-identities" => o.floor_identities = Some(val()),
            "--after-round" => {
                let v = val();
                let (r, cmd) = v
                    .split_once(':')
                    .unwrap_or_else(|| usage("--after-round is ROUND:COMMAND"));
                o.after_round = Some((num(&a, r.to_string()), cmd.to_string()));
            }
            "-h" | "--help" => usage("help"),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if !matches!(o.mode.as_str(), "ws" | "http" | "floor") {
        usage("--mode is ws, http or floor");
    }
    if o.clients == 0 {
        usage("--clients is required");
    }
    if o.mode != "floor" && o.targets.is_empty() {
        usage("--target is required (except in floor mode)");
    }
    if o.path.is_empty() {
        o.path = if o.mode == "http" {
            "/hello"
        } else {
            "/ws/broadcast"
        }
        .into();
    }
    if o.rounds > 0 && o.trigger.is_none() && o.mode != "floor" {
        usage("--rounds needs --fanout-trigger");
    }
    if o.trigger.is_some() && o.rounds == 0 {
        o.rounds = 1;
    }
    if o.mode == "floor" {
        o.floor = true;
        o.rounds = o.rounds.max(1);
    }
    if o.floor && o.mode == "http" {
        usage("--floor measures WebSocket frames: use it with --mode ws");
    }
    if !(1..=64).contains(&o.threads) || o.floor_threads > 64 {
        usage("--threads is 1 to 64, --floor-threads 0 to 64");
    }
    if !(1..=19_000).contains(&o.per_ring) {
        usage("--per-ring is 1 to 19000 (each ring's table is capped by RLIMIT_NOFILE)");
    }
    if !o.bufs.is_power_of_two() || o.bufs > 32_768 || o.buf_size < 64 {
        usage("--bufs is a power of two ≤ 32768, --buf-size ≥ 64");
    }
    if o.inflight == 0 || o.rounds > 30_000 || o.rate <= 0.0 || o.clients > 10_000_000 {
        usage("--inflight ≥ 1, --rounds ≤ 30000 (floor rounds are numbered from 30001), --rate > 0, --clients ≤ 10,000,000");
    }
    if o.members.is_some_and(|m| m > o.clients) {
        usage("--members is at most --clients");
    }
    if o.tls && (o.ca.is_none() || o.mode == "http") {
        usage("--tls needs --ca FILE and --mode ws (or floor)");
    }
    if o.tls && o.floor && o.floor_identities.is_none() {
        usage("--floor with --tls needs --floor-identities DIR (localhost.crt and .key, signed by --ca)");
    }
    if !(20..=65_535).contains(&o.payload) {
        usage("--payload is 20 to 65535 bytes");
    }
    o
}

/// Raises the soft RLIMIT_NOFILE to the hard one (each ring's table is capped by it);
/// returns the new soft limit.
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

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Rings for `n` sockets of `group`, at most `per_ring` each.
/// Group 0: `members` of the `n` (spread evenly over the rings) are fan-out members.
fn plan(specs: &mut Vec<RingSpec>, group: u8, n: u64, members: u64, per_ring: u32, table: u32) {
    let rings = n.div_ceil(u64::from(per_ring)).max(1);
    for i in 0..rings {
        let target = n / rings + u64::from(i < n % rings);
        let ring_members = members / rings + u64::from(i < members % rings);
        let target = if group == 2 {
            // The server side accepts whatever arrives: a ring stops at its even share,
            // rounded up, so the shares cover every connection.
            n.div_ceil(rings)
        } else {
            target
        };
        specs.push(RingSpec {
            id: specs.len() as u32,
            group,
            target: target as u32,
            table,
            members: ring_members as u32,
        });
    }
}

struct Deadline(Instant);

impl Deadline {
    fn left(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Waits until the group's connections are all settled (connected or failed), printing
/// progress; false on the deadline.
fn connect_phase(sh: &Shared, group: usize, n: u64, dl: &Deadline, what: &str) -> bool {
    let g = &sh.groups[group];
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(5);
    loop {
        let (c, f) = (
            g.connected.load(Ordering::Relaxed),
            g.failed.load(Ordering::Relaxed),
        );
        if c + f >= n {
            return true;
        }
        if dl.left().is_zero() {
            return false;
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(5);
            eprintln!(
                "zring-load: {what}: {c} connected, {f} failed of {n} after {:.1}s (rss {} MiB)",
                start.elapsed().as_secs_f64(),
                rss_kb() / 1024
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// POSTs `body` to `url` (http://host:port/path) and returns the response body.
fn post(url: &str, body: &[u8]) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = parse_targets(hostport)?[0];
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(10))
        .map_err(|e| format!("trigger connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)
        .map_err(|e| format!("trigger write: {e}"))?;
    let mut resp = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut resp)
        .map_err(|e| format!("trigger read: {e}"))?;
    let end = proto::head_end(&resp).ok_or("trigger: no response head")?;
    if !resp.starts_with(b"HTTP/1.1 200") {
        let line = String::from_utf8_lossy(&resp[..end]);
        return Err(format!(
            "trigger answered {}",
            line.lines().next().unwrap_or("")
        ));
    }
    Ok(String::from_utf8_lossy(&resp[end..]).into_owned())
}

/// Latencies of one round (µs), sorted, and the kernel's drop counters over it.
struct RoundResult {
    expected: u64,
    lat: Vec<u32>,
    net: NetCounters,
    /// Per `--target` (fan-out rounds; empty for the floor): expected, and latencies sorted.
    expected_by_target: Vec<u64>,
    lat_by_target: Vec<Vec<u32>>,
}

/// Machine-wide counters that explain tail latency on loopback: packets dropped because a
/// CPU's input backlog (`net.core.netdev_max_backlog`) was full, and TCP retransmissions
/// (each such drop costs at least one RTO, 200 ms or more). Other processes add to them.
#[derive(Default, Clone, Copy)]
struct NetCounters {
    backlog_drops: u64,
    retrans: u64,
}

impl NetCounters {
    fn read() -> NetCounters {
        let backlog_drops = std::fs::read_to_string("/proc/net/softnet_stat")
            .map(|s| {
                s.lines()
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .filter_map(|h| u64::from_str_radix(h, 16).ok())
                    .sum()
            })
            .unwrap_or(0);
        // /proc/net/snmp: a "Tcp:" header line, then a "Tcp:" values line.
        let retrans = std::fs::read_to_string("/proc/net/snmp")
            .ok()
            .and_then(|s| {
                let mut tcp = s.lines().filter(|l| l.starts_with("Tcp:"));
                let (names, values) = (tcp.next()?, tcp.next()?);
                let i = names.split_whitespace().position(|n| n == "RetransSegs")?;
                values.split_whitespace().nth(i)?.parse().ok()
            })
            .unwrap_or(0);
        NetCounters {
            backlog_drops,
            retrans,
        }
    }

    fn since(self, before: NetCounters) -> NetCounters {
        NetCounters {
            backlog_drops: self.backlog_drops.saturating_sub(before.backlog_drops),
            retrans: self.retrans.saturating_sub(before.retrans),
        }
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// Runs one measured round: `fire` sends the message; waits for every expected client
/// or the round timeout, then collects what arrived.
fn round(
    sh: &Shared,
    r: u32,
    expected: u64,
    expected_by_target: Vec<u64>,
    timeout: Duration,
    fire: impl FnOnce() -> Result<(), String>,
) -> Result<RoundResult, String> {
    for l in &sh.lat {
        let mut l = l.lock().unwrap();
        l.0 = r;
        l.1.clear();
        l.2.clear();
    }
    let base = sh.received.load(Ordering::Acquire);
    let net0 = NetCounters::read();
    sh.round.store(r, Ordering::Release);
    let t0 = Instant::now();
    fire()?;
    while sh.received.load(Ordering::Acquire) - base < expected && t0.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(2));
    }
    sh.round.store(0, Ordering::Release);
    std::thread::sleep(Duration::from_millis(20)); // a turn for threads mid-flush
    let mut lat = Vec::new();
    let mut lat_by_target = vec![Vec::new(); expected_by_target.len()];
    for l in &sh.lat {
        let mut l = l.lock().unwrap();
        l.0 = 0;
        for (us, t) in l.1.iter().zip(&l.2) {
            if let Some(v) = lat_by_target.get_mut(usize::from(*t)) {
                v.push(*us);
            }
        }
        l.2.clear();
        lat.append(&mut l.1);
    }
    lat.sort_unstable();
    for v in &mut lat_by_target {
        v.sort_unstable();
    }
    let net = NetCounters::read().since(net0);
    Ok(RoundResult {
        expected,
        lat,
        net,
        expected_by_target,
        lat_by_target,
    })
}

#[derive(Default)]
struct Summary {
    rounds: u32,
    expected: u64,
    received: u64,
    all: Vec<u32>,
    p100_rounds: Vec<f64>,
    net: NetCounters,
    targets: Vec<TargetSummary>,
}

/// One `--target`'s share of the fan-out rounds (docs/scale-out.md: per instance).
#[derive(Default, Clone)]
struct TargetSummary {
    expected: u64,
    received: u64,
    /// The p100 of each round it was expected in.
    p100_rounds: Vec<f64>,
}

impl Summary {
    fn add(&mut self, name: &str, r: u32, rr: RoundResult) {
        eprintln!(
            "zring-load: {name} round {r}: {} of {} received, p50 {:.2} ms, p99 {:.2} ms, \
             p100 {:.2} ms, backlog drops {}, retransmits {}",
            rr.lat.len(),
            rr.expected,
            pct(&rr.lat, 50.0),
            pct(&rr.lat, 99.0),
            pct(&rr.lat, 100.0),
            rr.net.backlog_drops,
            rr.net.retrans
        );
        self.net.backlog_drops += rr.net.backlog_drops;
        self.net.retrans += rr.net.retrans;
        self.rounds += 1;
        self.expected += rr.expected;
        self.received += rr.lat.len() as u64;
        self.p100_rounds.push(pct(&rr.lat, 100.0));
        self.all.extend_from_slice(&rr.lat);
        if self.targets.len() < rr.expected_by_target.len() {
            self.targets
                .resize(rr.expected_by_target.len(), TargetSummary::default());
        }
        for (i, (e, l)) in rr
            .expected_by_target
            .iter()
            .zip(&rr.lat_by_target)
            .enumerate()
        {
            let t = &mut self.targets[i];
            t.expected += e;
            t.received += l.len() as u64;
            if *e > 0 {
                t.p100_rounds.push(pct(l, 100.0));
            }
        }
    }

    /// Per target: `target_members`-style comma lists of expected, received, p100 (the
    /// largest of its rounds) and the median of its rounds' p100s.
    fn target_fields(&self, out: &mut String) {
        if self.targets.len() < 2 {
            return;
        }
        let f = |v: f64| {
            if v.is_nan() {
                "nan".to_string()
            } else {
                format!("{v:.3}")
            }
        };
        let list = |g: &dyn Fn(&TargetSummary) -> String| {
            self.targets.iter().map(g).collect::<Vec<_>>().join(",")
        };
        let p100 = |t: &TargetSummary| t.p100_rounds.iter().copied().fold(f64::NAN, f64::max);
        out.push_str(&format!(
            " target_expected={} target_received={} target_p100_ms={} target_p100_median_ms={}",
            list(&|t| t.expected.to_string()),
            list(&|t| t.received.to_string()),
            list(&|t| f(p100(t))),
            list(&|t| f(median_of(&t.p100_rounds))),
        ));
    }

    fn finish(&mut self) {
        self.all.sort_unstable();
    }

    /// The median of the rounds' p100s: one slow round (a stall elsewhere on the box)
    /// moves it less than the overall p100.
    fn p100_median(&self) -> f64 {
        median_of(&self.p100_rounds)
    }

    fn missed(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    fn fields(&self, prefix: &str, out: &mut String) {
        let f = |v: f64| {
            if v.is_nan() {
                "nan".to_string()
            } else {
                format!("{v:.3}")
            }
        };
        out.push_str(&format!(
            " {prefix}_rounds={} {prefix}_expected={} {prefix}_received={} {prefix}_missed={} \
             {prefix}_p50_ms={} {prefix}_p90_ms={} {prefix}_p99_ms={} {prefix}_p100_ms={} {prefix}_p100_rounds_ms={} \
             {prefix}_p100_median_ms={} {prefix}_backlog_drops={} {prefix}_retransmits={}",
            self.rounds,
            self.expected,
            self.received,
            self.missed(),
            f(pct(&self.all, 50.0)),
            f(pct(&self.all, 90.0)),
            f(pct(&self.all, 99.0)),
            f(pct(&self.all, 100.0)),
            self.p100_rounds
                .iter()
                .map(|v| f(*v))
                .collect::<Vec<_>>()
                .join("/"),
            f(self.p100_median()),
            self.net.backlog_drops,
            self.net.retrans
        ));
    }

    /// Appends the distribution as CSV rows: label,clients,kind,percentile,ms.
    fn dist(&self, path: &str, label: &str, clients: u64, kind: &str) -> std::io::Result<()> {
        if self.all.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut ps: Vec<f64> = (0..=100).step_by(5).map(f64::from).collect();
        ps.extend([1.0, 99.0, 99.9, 99.99]);
        ps.sort_by(|a, b| a.total_cmp(b));
        for p in ps {
            writeln!(f, "{label},{clients},{kind},{p},{:.3}", pct(&self.all, p))?;
        }
        Ok(())
    }
}

fn main() {
    let o = parse_opts();
    let nofile = raise_nofile();
    // Each ring's registered table is capped by RLIMIT_NOFILE; leave room for closes that
    // have not completed yet, within the cap.
    let table = (o.per_ring + 1024).min(nofile.saturating_sub(16) as u32);
    if table < o.per_ring {
        eprintln!(
            "zring-load: RLIMIT_NOFILE is {nofile}: --per-ring {} does not fit a ring's table",
            o.per_ring
        );
        std::process::exit(2);
    }
    let mode = if o.mode == "http" {
        Mode::Http
    } else {
        Mode::Ws
    };
    let main_clients = if o.mode == "floor" { 0 } else { o.clients };
    let mut specs = Vec::new();
    if main_clients > 0 {
        let members = o.members.unwrap_or(main_clients);
        plan(&mut specs, 0, main_clients, members, o.per_ring, table);
    }
    if o.floor {
        let floor_n = o.members.unwrap_or(o.clients);
        plan(&mut specs, 1, floor_n, floor_n, o.per_ring, table);
        plan(&mut specs, 2, floor_n, floor_n, o.per_ring, table);
    }
    // The floor's sending side (group 2) goes to threads of its own with --floor-threads,
    // as a server's workers are apart from its clients; else it shares the client threads.
    let (client_specs, floor_specs): (Vec<RingSpec>, Vec<RingSpec>) = if o.floor_threads > 0 {
        specs.iter().partition(|s| s.group != 2)
    } else {
        (specs.clone(), Vec::new())
    };
    let client_threads = o.threads.min(client_specs.len()).max(1);
    let floor_threads = o.floor_threads.min(floor_specs.len());
    let threads = client_threads + floor_threads;
    let cfg = Config {
        mode,
        http_get: o.http_get,
        path: o.path.clone(),
        idle_path: o.idle_path.clone(),
        targets: o.targets.clone(),
        src_ips: o.src_ips.clone(),
        connect_timeout: Duration::from_secs_f64(o.connect_timeout),
        bufs: o.bufs,
        buf_size: o.buf_size,
        inflight: o.inflight,
        rate_per_thread: o.rate / client_threads as f64,
        deflate: o.deflate,
        payload: o.payload,
        tls: o
            .tls
            .then(|| tls_config(o.ca.as_deref().unwrap_or_default(), o.tls_resume)),
        floor_tls: match (&o.floor_identities, o.tls && o.floor) {
            (Some(dir), true) => Some(floor_tls_config(dir)),
            _ => None,
        },
    };
    let sh = Arc::new(Shared::new(cfg, threads).unwrap_or_else(|e| {
        eprintln!("zring-load: eventfd: {e}");
        std::process::exit(1);
    }));
    let dl = Deadline(Instant::now() + Duration::from_secs_f64(o.max_secs));
    let rss0 = rss_kb();
    let mut per_thread: Vec<Vec<RingSpec>> = vec![Vec::new(); threads];
    for (i, s) in client_specs.iter().enumerate() {
        per_thread[i % client_threads].push(*s);
    }
    for (i, s) in floor_specs.iter().enumerate() {
        per_thread[client_threads + i % floor_threads].push(*s);
    }
    for (t, specs) in per_thread.into_iter().enumerate() {
        let sh = sh.clone();
        std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || engine::run_thread(t, specs, sh))
            .expect("spawn");
    }
    while sh.ready.load(Ordering::Acquire) < threads as u32 {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(e) = sh.fatal.lock().unwrap().take() {
        eprintln!("zring-load: FAILED: cannot set up io_uring: {e}");
        std::process::exit(1);
    }
    let rss_rings = rss_kb();
    let mut out = format!(
        "mode={} label={} deflate={} tls={} clients={} threads={} floor_threads={} rings={} ring_table={}",
        o.mode,
        o.label,
        u8::from(o.deflate),
        u8::from(o.tls),
        o.clients,
        client_threads,
        floor_threads,
        specs.len(),
        table
    );
    let mut failure: Vec<String> = Vec::new();
    let mut timed_out = false;

    // 0. The floor first, its pairs closed before the server's clients connect, so the
    //    box never holds more than N pairs (--floor-first).
    let mut floor_res = None;
    if o.floor_first && main_clients > 0 {
        floor_res = floor_phase(&o, &sh, &dl, &mut out, &mut failure);
        sh.close_floor.store(true, Ordering::Release);
        sh.wake_all();
        while sh.floor_closed_threads.load(Ordering::Acquire) < threads as u32
            && !dl.left().is_zero()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Let the kernel finish the closes (and its slab) before the server's clients come.
        std::thread::sleep(Duration::from_secs(2));
    }

    // 1. The clients of the server under test.
    let mut connected = 0u64;
    if main_clients > 0 {
        let rss_before = rss_kb();
        let t0 = Instant::now();
        sh.connecting.store(1, Ordering::Release);
        sh.wake_all();
        timed_out = !connect_phase(&sh, 0, main_clients, &dl, "connecting");
        sh.connecting.store(0, Ordering::Release);
        let connect_secs = t0.elapsed().as_secs_f64();
        let g = &sh.groups[0];
        connected = g.connected.load(Ordering::Relaxed);
        let failed = g.failed.load(Ordering::Relaxed);
        let rss1 = rss_kb();
        // Scripts wait for this line to measure the server while the clients are held.
        eprintln!("zring-load: phase=connected connected={connected} failed={failed} connect_secs={connect_secs:.2}");
        out.push_str(&format!(
            " connected={connected} failed={failed} connect_secs={connect_secs:.2} \
             connect_rate={:.0} rss_rings_kb={} rss_kb={rss1} client_bytes_per_conn={}",
            connected as f64 / connect_secs.max(1e-9),
            rss_rings.saturating_sub(rss0),
            (rss1.saturating_sub(rss_before) * 1024)
                .checked_div(connected)
                .unwrap_or(0),
        ));
        if o.tls {
            let suites = sh.tls_suites.lock().unwrap();
            out.push_str(&format!(
                " tls_suite={}",
                suites[0].as_deref().unwrap_or("na")
            ));
        }
        if failed > o.max_failed {
            failure.push(format!(
                "{failed} of {main_clients} clients failed to connect"
            ));
        }
        if timed_out {
            failure.push(format!(
                "--max-secs {} reached while connecting",
                o.max_secs
            ));
        }
    }

    // 2. Fan-out rounds through the server under test.
    if let (Some(url), false, true) = (&o.trigger, timed_out, connected > 0) {
        let mut sum = Summary::default();
        let mut handler_sent = 0u64;
        for r in 1..=o.rounds {
            if dl.left() < Duration::from_secs_f64(o.round_timeout) {
                failure.push("--max-secs reached during the fan-out rounds".into());
                break;
            }
            let g = &sh.groups[0];
            let expected = g.members_connected.load(Ordering::Relaxed)
                - g.members_closed.load(Ordering::Relaxed);
            let expected_by_target = sh
                .target_members_connected
                .iter()
                .zip(&sh.target_members_closed)
                .map(|(c, x)| c.load(Ordering::Relaxed) - x.load(Ordering::Relaxed))
                .collect();
            let body = proto::payload(r, "{ts}", o.payload);
            let res = round(
                &sh,
                r,
                expected,
                expected_by_target,
                Duration::from_secs_f64(o.round_timeout),
                || {
                    let b = post(url, &body)?;
                    handler_sent = b
                        .trim()
                        .strip_prefix("sent to ")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    Ok(())
                },
            );
            match res {
                Ok(rr) => sum.add("fan-out", r, rr),
                Err(e) => {
                    failure.push(e);
                    break;
                }
            }
            if let Some((after, cmd)) = &o.after_round {
                if *after == r {
                    after_round(&sh, cmd, &mut out, &mut failure);
                }
            }
            std::thread::sleep(Duration::from_secs_f64(o.round_gap));
        }
        sum.finish();
        sum.fields("fanout", &mut out);
        sum.target_fields(&mut out);
        out.push_str(&format!(
            " handler_sent={handler_sent} members={}",
            o.members.unwrap_or(main_clients)
        ));
        if sum.missed() > 0 {
            failure.push(format!("{} fan-out messages missed", sum.missed()));
        }
        if let Some(d) = &o.dist {
            if let Err(e) = sum.dist(d, &o.label, o.members.unwrap_or(o.clients), "fanout") {
                failure.push(format!("{d}: {e}"));
            }
        }
        if o.floor && !o.floor_first && !timed_out {
            floor_res = floor_phase(&o, &sh, &dl, &mut out, &mut failure);
        }
        if let Some((fp, fmed)) = floor_res {
            let p = pct(&sum.all, 100.0);
            out.push_str(&format!(
                " ratio_p100={:.2} ratio_p100_median={:.2}",
                p / fp,
                sum.p100_median() / fmed
            ));
        }
    } else if o.floor && !o.floor_first && !timed_out {
        floor_phase(&o, &sh, &dl, &mut out, &mut failure);
    }

    // 3. Hold.
    if o.hold > 0.0 && !timed_out {
        let until = Instant::now() + Duration::from_secs_f64(o.hold);
        while Instant::now() < until && !dl.left().is_zero() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let g = &sh.groups[0];
    let closed = g.closed.load(Ordering::Relaxed);
    out.push_str(&format!(
        " closed={closed} late={} dups={} pings={} protocol_errors={} rss_end_kb={} ring_bytes={}",
        sh.late.load(Ordering::Relaxed),
        sh.dups.load(Ordering::Relaxed),
        sh.pings.load(Ordering::Relaxed),
        sh.protocol_errors.load(Ordering::Relaxed),
        rss_kb(),
        sh.ring_bytes.load(Ordering::Relaxed),
    ));
    let targets = &sh.target_members_connected;
    if targets.len() > 1 {
        let list = |v: &[std::sync::atomic::AtomicU64]| {
            v.iter()
                .map(|a| a.load(Ordering::Relaxed).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push_str(&format!(
            " target_members={} target_closed={}",
            list(targets),
            list(&sh.target_members_closed)
        ));
    }
    // With --after-round the command is expected to close clients (an instance killed):
    // the caller judges target_closed.
    if closed > 0 && o.after_round.is_none() {
        failure.push(format!(
            "{closed} connections closed (by the server, or by us after a protocol error)"
        ));
    }
    let perr = sh.protocol_errors.load(Ordering::Relaxed);
    if perr > 0 {
        failure.push(format!("{perr} protocol errors"));
    }
    let errors = sh.errors.lock().unwrap().clone();
    out.push_str(&format!(
        " status={}",
        if failure.is_empty() { "ok" } else { "fail" }
    ));
    println!("{out}");
    if !failure.is_empty() {
        eprintln!(
            "zring-load: FAILED: {}{}",
            failure.join("; "),
            if errors.is_empty() {
                String::new()
            } else {
                format!(" (errors seen: {})", errors.join("; "))
            }
        );
        // Exit without tearing a million sockets down one by one: the kernel does it.
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// `--after-round`: runs the command (`sh -c`), then waits until the clients it closed
/// are all seen closed (no more closing for 2 s; at most 60 s), so the next round expects
/// only the clients still open.
fn after_round(sh: &Shared, cmd: &str, out: &mut String, failure: &mut Vec<String>) {
    let status = std::process::Command::new("sh").arg("-c").arg(cmd).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => failure.push(format!("--after-round command exited with {s}")),
        Err(e) => failure.push(format!("--after-round command: {e}")),
    }
    let g = &sh.groups[0];
    let t0 = Instant::now();
    let mut last = g.closed.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) && still_since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
        let now = g.closed.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    out.push_str(&format!(
        " after_round_closed={last} after_round_settle_s={:.1}",
        t0.elapsed().as_secs_f64()
    ));
}

/// The floor: our own listener, N loopback pairs, the same frame to every server side.
/// Returns the floor's p100 and the median of its rounds' p100s (ms).
fn floor_phase(
    o: &Opts,
    sh: &Shared,
    dl: &Deadline,
    out: &mut String,
    failure: &mut Vec<String>,
) -> Option<(f64, f64)> {
    let l = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            failure.push(format!("floor listener: {e}"));
            return None;
        }
    };
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    let fd = l.into_raw_fd();
    // SAFETY: listen on our own socket again, only to raise the backlog.
    unsafe { libc::listen(fd, 65_535) };
    sh.floor_port.store(u32::from(port), Ordering::Relaxed);
    sh.floor_listen_fd.store(fd, Ordering::Release);
    let t0 = Instant::now();
    sh.connecting.store(2, Ordering::Release);
    sh.wake_all();
    // The floor's size is the fan-out's: the members.
    let n = o.members.unwrap_or(o.clients);
    let ok = connect_phase(sh, 1, n, dl, "floor connecting");
    // The server side has accepted them all, with TLS finished their handshakes (or the
    // deadline is near).
    while sh.floor_ready.load(Ordering::Relaxed) < sh.groups[1].connected.load(Ordering::Relaxed)
        && !dl.left().is_zero()
        && t0.elapsed() < Duration::from_secs_f64(o.connect_timeout * 2.0 + 10.0)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    sh.connecting.store(0, Ordering::Release);
    sh.wake_all();
    let g = &sh.groups[1];
    let fc = g.connected.load(Ordering::Relaxed);
    let accepted = sh.floor_accepted.load(Ordering::Relaxed);
    out.push_str(&format!(
        " floor_clients={fc} floor_failed={} floor_accepted={accepted} floor_ready={} floor_connect_secs={:.2}",
        g.failed.load(Ordering::Relaxed),
        sh.floor_ready.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    ));
    if o.tls {
        let suites = sh.tls_suites.lock().unwrap();
        out.push_str(&format!(
            " floor_tls_suite={}",
            suites[1].as_deref().unwrap_or("na")
        ));
    }
    if !ok || fc < n {
        failure.push(format!("floor: {fc} of {n} connected"));
    }
    let mut sum = Summary::default();
    for r in 1..=o.rounds {
        if dl.left() < Duration::from_secs_f64(o.round_timeout) {
            failure.push("--max-secs reached during the floor rounds".into());
            break;
        }
        // Floor rounds are numbered apart from the fan-out's.
        let id = 30_000 + r;
        let expected = sh.floor_ready.load(Ordering::Relaxed);
        let res = round(
            sh,
            id,
            expected,
            Vec::new(),
            Duration::from_secs_f64(o.round_timeout),
            || {
                let ts = engine::realtime_ns().to_string();
                let text = proto::payload(id, &ts, o.payload);
                let frame = if o.deflate {
                    deflated_text_frame(&text)
                } else {
                    proto::server_text_frame(&text)
                };
                *sh.floor_frame.lock().unwrap() = frame;
                sh.floor_round.store(id, Ordering::Release);
                sh.wake_all();
                Ok(())
            },
        );
        match res {
            Ok(rr) => sum.add("floor", r, rr),
            Err(e) => failure.push(e),
        }
        std::thread::sleep(Duration::from_secs_f64(o.round_gap));
    }
    sum.finish();
    sum.fields("floor", out);
    out.push_str(&format!(
        " floor_sent={} floor_send_errors={}",
        sh.floor_sent.load(Ordering::Relaxed),
        sh.floor_send_errors.load(Ordering::Relaxed)
    ));
    if sum.missed() > 0 {
        failure.push(format!("floor: {} messages missed", sum.missed()));
    }
    if let Some(d) = &o.dist {
        if let Err(e) = sum.dist(d, &o.label, n, "floor") {
            failure.push(format!("{d}: {e}"));
        }
    }
    let p = pct(&sum.all, 100.0);
    (!p.is_nan()).then_some((p, sum.p100_median()))
}

/// The floor's frame with `--deflate`: compressed once, without context, with zring's
/// defaults (window 12, level 6, memory level 5), RSV1 set; what zring's shared mode sends
/// every deflate target, so the floor does the same send work and no protocol work.
fn deflated_text_frame(text: &[u8]) -> Vec<u8> {
    use zring::proto::ws_deflate::{Config, SharedCompressor, SERVER_WINDOW_BITS_DEFAULT};
    let mut z = Vec::with_capacity(text.len() + 64);
    SharedCompressor::default().compress(
        &Config::default(),
        SERVER_WINDOW_BITS_DEFAULT,
        text,
        true,
        &mut z,
    );
    let mut frame = proto::server_text_frame(&z);
    frame[0] |= 0x40; // RSV1: a compressed message (RFC 7692 §6)
    frame
}

/// The TLS floor's server side: zring's own configuration (`zring::tls::server_config`: its
/// provider and suites in its order, ALPN, tickets), the certificate of `DIR/localhost.*`.
fn floor_tls_config(dir: &str) -> Arc<rustls::ServerConfig> {
    let provider = zring::tls::config::provider();
    let ids = zring::tls::Identities::new(dir, provider.clone());
    if let Err(e) = ids.load("localhost") {
        usage(&format!("--floor-identities {dir}: {e}"));
    }
    zring::tls::server_config(provider, ids, Some("localhost"))
        .unwrap_or_else(|e| usage(&format!("--floor-identities {dir}: {e}")))
}

/// The rustls client of `--tls`: the CA of `--ca` as the only root, the ring provider (what
/// zring's server uses), TLS 1.3 and 1.2, `http/1.1` by ALPN; session resumption only with
/// `--tls-resume` (a browser resumes, a fresh client does not: full handshakes by default).
fn tls_config(ca: &str, resume: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .unwrap_or_else(|e| usage(&format!("--ca {ca}: {e}")));
    for cert in certs {
        let cert = cert.unwrap_or_else(|e| usage(&format!("--ca {ca}: {e}")));
        roots
            .add(cert)
            .unwrap_or_else(|e| usage(&format!("--ca {ca}: {e}")));
    }
    if roots.is_empty() {
        usage(&format!("--ca {ca}: no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

/// The median of the rounds' figures that were measured (NaN: a round without one).
fn median_of(rounds: &[f64]) -> f64 {
    let mut v: Vec<f64> = rounds.iter().copied().filter(|v| !v.is_nan()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
