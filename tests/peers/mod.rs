//! Harness shared by `tests/parity.rs` and `tests/pushpin.rs`: temp dirs, free ports, process
//! guards that kill by pid, the connection managers under comparison (Condure and zring on
//! both runtimes), a recording ZHTTP handler over ZeroMQ, a raw HTTP client, and transcript
//! normalisation and diffing.
//!
//! Nothing here uses zring's library: the harness must not trust the code under test.
#![allow(dead_code)]

pub mod tn;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use tn::Value;

/// The switch for every zring case (both runtimes). Condure cases always run.
pub const ZRING_CASES: bool = true;

/// Default bound on any single wait in a script.
pub const WAIT: Duration = Duration::from_secs(5);

/// The instance id given to every connection manager with `--id`, so `from` is comparable.
pub const CM_ID: &str = "parity-cm";
/// Identity (and `from`) of the main recording handler.
pub const H1: &str = "parity-handler";
/// A second handler identity, for handoff and keep-alive grouping.
pub const H2: &str = "parity-handler-2";

// ------------------------------------------------------------------------------------------
// Connection managers

/// A connection manager under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cm {
    Condure,
    ZringUring,
    ZringEpoll,
}

impl Cm {
    pub const ALL: [Cm; 3] = [Cm::Condure, Cm::ZringUring, Cm::ZringEpoll];

    pub fn name(self) -> &'static str {
        match self {
            Cm::Condure => "condure",
            Cm::ZringUring => "zring(uring)",
            Cm::ZringEpoll => "zring(epoll)",
        }
    }

    pub fn is_zring(self) -> bool {
        self != Cm::Condure
    }

    /// The binary. Condure must be installed: a missing peer is a failure, not a skip.
    pub fn bin(self) -> PathBuf {
        match self {
            Cm::Condure => require_bin("condure"),
            _ if self_check() => require_bin("condure"),
            _ => PathBuf::from(env!("CARGO_BIN_EXE_zring")),
        }
    }

    /// Flags that select the runtime (zring only).
    pub fn runtime_args(self) -> Vec<String> {
        match self {
            Cm::Condure => vec![],
            _ if self_check() => vec![],
            Cm::ZringUring => vec!["--runtime".into(), "uring".into()],
            Cm::ZringEpoll => vec!["--runtime".into(), "epoll".into()],
        }
    }
}

/// `PEERS_SELF_CHECK=1`: the zring variants run Condure instead, to check the harness itself
/// (Condure against Condure must show no differences; the cases where zring intentionally
/// differs, `handler_*` and `no_handler`, then fail by design).
pub fn self_check() -> bool {
    std::env::var_os("PEERS_SELF_CHECK").is_some()
}

/// The path of an installed program, or a panic that says how CI installs it.
pub fn require_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed (scripts/setup.sh test installs it)");
}

/// True when a test for `cm` should run; prints why not otherwise.
pub fn enabled(cm: Cm) -> bool {
    if cm.is_zring() && !ZRING_CASES {
        eprintln!("zring cases are switched off (peers::ZRING_CASES)");
        return false;
    }
    true
}

// ------------------------------------------------------------------------------------------
// Temp dirs and ports

/// A unique directory under /tmp, short enough for ipc paths; removed on drop unless the
/// test is failing (then its path is printed for the logs inside).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(20)
            .collect();
        let path = PathBuf::from(format!(
            "/tmp/zp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating temp dir");
        TempDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    pub fn s(&self, p: &str) -> String {
        self.join(p).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `n` distinct loopback TCP ports that were free a moment ago, outside the ephemeral range
/// (so client source ports cannot take them) and never handed out twice by this process.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::hash::{BuildHasher, Hasher};
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(Default::default);
    let state = std::collections::hash_map::RandomState::new();
    let mut out = Vec::new();
    let mut tries = 0u64;
    while out.len() < n {
        tries += 1;
        assert!(tries < 100_000, "no free ports found");
        let mut h = state.build_hasher();
        h.write_u64(tries);
        h.write_u32(std::process::id());
        let p = 20_000 + (h.finish() % 12_000) as u16;
        let mut u = used.lock().unwrap();
        if u.contains(&p) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("0.0.0.0", p)).is_ok()
        {
            u.insert(p);
            out.push(p);
        }
    }
    out
}

/// Waits until something accepts TCP connections on `port`, or `proc` exits, or `timeout`.
pub fn wait_port(port: u16, proc: &mut Proc, timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(st) = proc.exited() {
            panic!(
                "{} exited ({st}) before listening on {port}\n{}",
                proc.name,
                proc.log_tail(40)
            );
        }
        if Instant::now() > end {
            panic!(
                "{} is not listening on {port} after {timeout:?}\n{}",
                proc.name,
                proc.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------------------
// Processes

/// A child process that is killed by pid when dropped (SIGTERM first when `term_first`,
/// SIGKILL after a grace period). Its stdout and stderr go to `<dir>/<name>.log`.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub term_first: bool,
    pub grace: Duration,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("creating log file");
        let f2 = f.try_clone().expect("dup log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Proc {
            name: name.into(),
            child,
            log,
            term_first: false,
            grace: Duration::from_secs(5),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Some(status) once the process has exited (and been reaped).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `sig` to this process (by pid) unless it has already been reaped.
    pub fn signal(&mut self, sig: i32) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }

    /// Waits up to `timeout` for exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (if `term_first`) then SIGKILL after the grace period; reaps.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.term_first {
            self.signal(libc::SIGTERM);
            if self.wait_exit(self.grace).is_some() {
                return;
            }
            eprintln!(
                "{} ignored SIGTERM for {:?}; killing",
                self.name, self.grace
            );
        }
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let t = self.log_text();
        let v: Vec<&str> = t.lines().collect();
        let from = v.len().saturating_sub(lines);
        format!(
            "--- last lines of {} ---\n{}",
            self.name,
            v[from..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(30));
        }
    }
}

/// Pids of the live children of `ppid` (from /proc), with their command lines.
pub fn children_of(ppid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        if f.len() > 2 && f[1].parse::<i32>().ok() == Some(ppid) && f[0] != "Z" {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            out.push((pid, cmd.trim().to_string()));
        }
    }
    out
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .map(|i| !stat[i + 1..].trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// A running connection manager: one stream port, one req port, ipc endpoints in `dir`.
pub struct CmProc {
    pub cm: Cm,
    pub proc: Proc,
    pub port: u16,
    pub req_port: u16,
    /// `ipc://<dir>/c`: the stream spec base.
    pub stream_base: String,
    /// `ipc://<dir>/r`: the req DEALER endpoint.
    pub req_spec: String,
}

/// Starts `cm` with Condure's command line (plus `extra` and its runtime flags) and waits
/// until it listens.
pub fn start_cm(cm: Cm, dir: &TempDir, extra: &[&str]) -> CmProc {
    let ports = free_ports(2);
    let (port, req_port) = (ports[0], ports[1]);
    let stream_base = format!("ipc://{}", dir.s("c"));
    let req_spec = format!("ipc://{}", dir.s("r"));
    let mut cmd = Command::new(cm.bin());
    cmd.current_dir(&dir.path)
        .args(["--log-level", "3", "--id", CM_ID, "--workers", "1"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port},stream"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{req_port},req"))
        .arg("--zclient-stream")
        .arg(&stream_base)
        .arg("--zclient-req")
        .arg(&req_spec)
        .args(extra)
        .args(cm.runtime_args());
    let mut proc = Proc::spawn("cm", &mut cmd, &dir.path);
    wait_port(port, &mut proc, Duration::from_secs(10));
    wait_port(req_port, &mut proc, Duration::from_secs(10));
    CmProc {
        cm,
        proc,
        port,
        req_port,
        stream_base,
        req_spec,
    }
}

// ------------------------------------------------------------------------------------------
// The recording handler

/// One packet the handler received.
#[derive(Clone, Debug)]
pub struct Rec {
    /// `pull`, `router:<identity>` or `req`.
    pub via: String,
    /// The frame layout, e.g. `[peer, "", T]`.
    pub env: String,
    /// The ROUTER peer identity (the CM's), for replies in req mode.
    pub peer: Vec<u8>,
    /// The decoded packet (a dict), or a string describing why it did not decode.
    pub v: Value,
    pub raw: Vec<u8>,
}

impl Rec {
    pub fn kind(&self) -> String {
        self.v.kind()
    }
    pub fn id(&self) -> Vec<u8> {
        self.v
            .get("id")
            .and_then(Value::as_bytes)
            .unwrap_or_default()
            .to_vec()
    }
}

/// A ZHTTP handler that records everything it receives and sends what a script tells it.
pub struct Handler {
    ctx: zmq::Context,
    pull: zmq::Socket,
    publ: zmq::Socket,
    routers: Vec<(String, zmq::Socket)>,
    req: zmq::Socket,
    seqs: HashMap<Vec<u8>, i64>,
    /// Every packet received, in arrival order.
    pub log: Vec<Rec>,
    /// Everything sent, for failure messages.
    pub sent: Vec<String>,
}

impl Handler {
    /// Connects PULL/PUB and one ROUTER per identity to the stream endpoints of `cm`, and a
    /// ROUTER to its req endpoint; then lets the connections settle.
    pub fn connect(cm: &CmProc, identities: &[&str]) -> Handler {
        Self::connect_to(&cm.stream_base, Some(&cm.req_spec), identities, true)
    }

    /// Like `connect` on explicit endpoints; `pull` = whether to take first packets.
    pub fn connect_to(
        stream_base: &str,
        req_spec: Option<&str>,
        identities: &[&str],
        pull: bool,
    ) -> Handler {
        let ctx = zmq::Context::new();
        let sock = |t| {
            let s = ctx.socket(t).unwrap();
            s.set_linger(0).unwrap();
            s
        };
        let pull_s = sock(zmq::PULL);
        if pull {
            pull_s.connect(&format!("{stream_base}-out")).unwrap();
        }
        let publ = sock(zmq::PUB);
        publ.connect(&format!("{stream_base}-in")).unwrap();
        let mut routers = Vec::new();
        for id in identities {
            let r = sock(zmq::ROUTER);
            r.set_identity(id.as_bytes()).unwrap();
            r.connect(&format!("{stream_base}-out-stream")).unwrap();
            routers.push((id.to_string(), r));
        }
        let req = sock(zmq::ROUTER);
        if let Some(spec) = req_spec {
            req.connect(spec).unwrap();
        }
        // PUB/SUB subscriptions and ROUTER identities propagate asynchronously.
        std::thread::sleep(Duration::from_millis(300));
        Handler {
            ctx,
            pull: pull_s,
            publ,
            routers,
            req,
            seqs: HashMap::new(),
            log: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// The next packet from any socket within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Rec> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let mut items = Vec::new();
            items.push(self.pull.as_poll_item(zmq::POLLIN));
            items.push(self.req.as_poll_item(zmq::POLLIN));
            for (_, r) in &self.routers {
                items.push(r.as_poll_item(zmq::POLLIN));
            }
            let n = zmq::poll(&mut items, left.as_millis().max(1) as i64).unwrap();
            if n == 0 {
                if Instant::now() >= end {
                    return None;
                }
                continue;
            }
            let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
            drop(items);
            let (via, frames) = if ready[0] {
                ("pull".to_string(), self.pull.recv_multipart(0).unwrap())
            } else if ready[1] {
                ("req".to_string(), self.req.recv_multipart(0).unwrap())
            } else {
                let i = ready[2..].iter().position(|r| *r).unwrap();
                let (name, s) = &self.routers[i];
                (format!("router:{name}"), s.recv_multipart(0).unwrap())
            };
            let rec = make_rec(via, frames);
            self.log.push(rec.clone());
            return Some(rec);
        }
    }

    /// Receives until a packet satisfies `pred` (every packet is recorded either way).
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Rec) -> bool,
    ) -> Result<Rec, String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(r) if pred(&r) => return Ok(r),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "timed out after {timeout:?} waiting for {what}; received so far:\n{}",
                        self.log_summary()
                    ))
                }
            }
        }
    }

    /// Waits for a packet of `kind` (`data`, `credit`, ...) on `via` (prefix match).
    pub fn expect(&mut self, via: &str, kind: &str) -> Result<Rec, String> {
        self.wait_for(&format!("a {kind} packet via {via}"), WAIT, |r| {
            r.via.starts_with(via) && r.kind() == kind
        })
    }

    /// Records whatever arrives until nothing has come for `quiet`.
    pub fn drain(&mut self, quiet: Duration) {
        while self.recv(quiet).is_some() {}
    }

    pub fn log_summary(&self) -> String {
        let mut s = String::new();
        for r in &self.log {
            let _ = writeln!(s, "  {} {} {}", r.via, r.env, r.v);
        }
        if s.is_empty() {
            s.push_str("  (nothing)\n");
        }
        s
    }

    /// Sends a packet for session `id` to the CM over PUB, as `from` = `from`, with the next
    /// seq of that session (seqs belong to the session, so they continue across handoff).
    pub fn send(&mut self, from: &str, id: &[u8], fields: Vec<(&str, Value)>) {
        let seq = self.seqs.entry(id.to_vec()).or_insert(0);
        let mut kv: Vec<(Vec<u8>, Value)> = vec![
            (b"from".to_vec(), from.into()),
            (b"id".to_vec(), id.into()),
            (b"seq".to_vec(), Value::Int(*seq)),
        ];
        *seq += 1;
        kv.extend(fields.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)));
        self.send_value(&Value::Dict(kv));
    }

    /// Sends any dict to the CM over PUB, address-prefixed.
    pub fn send_value(&mut self, v: &Value) {
        let mut msg = format!("{CM_ID} T").into_bytes();
        msg.extend(tn::encode(v));
        self.sent.push(v.to_string());
        self.publ.send(msg, 0).unwrap();
    }

    /// Answers the session of `r` as H1.
    pub fn reply(&mut self, r: &Rec, fields: Vec<(&str, Value)>) {
        let id = r.id();
        self.send(H1, &id, fields);
    }

    /// Answers a req-mode request on the same ROUTER envelope.
    pub fn reply_req(&mut self, r: &Rec, fields: Vec<(&str, Value)>) {
        let mut kv: Vec<(Vec<u8>, Value)> = vec![(b"id".to_vec(), r.id().into())];
        kv.extend(fields.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)));
        let v = Value::Dict(kv);
        let mut payload = b"T".to_vec();
        payload.extend(tn::encode(&v));
        self.sent.push(v.to_string());
        self.req
            .send_multipart([r.peer.clone(), Vec::new(), payload], 0)
            .unwrap();
    }
}

fn make_rec(via: String, frames: Vec<Vec<u8>>) -> Rec {
    let (env, peer, payload) = if via == "pull" {
        let env = if frames.len() == 1 {
            "[T]".to_string()
        } else {
            format!("{} frames", frames.len())
        };
        (env, Vec::new(), frames.last().cloned().unwrap_or_default())
    } else if frames.len() == 3 && frames[1].is_empty() {
        (
            "[peer, \"\", T]".to_string(),
            frames[0].clone(),
            frames[2].clone(),
        )
    } else {
        (
            format!("{} frames", frames.len()),
            frames.first().cloned().unwrap_or_default(),
            frames.last().cloned().unwrap_or_default(),
        )
    };
    let v = match payload.split_first() {
        Some((b'T', rest)) => match tn::decode(rest) {
            Ok(v @ Value::Dict(_)) => v,
            Ok(v) => Value::Str(format!("<not a dict: {v}>").into_bytes()),
            Err(e) => Value::Str(format!("<bad tnetstring: {e}>").into_bytes()),
        },
        _ => Value::Str(format!("<no T prefix: {}>", tn::escape(&payload)).into_bytes()),
    };
    Rec {
        via,
        env,
        peer,
        v,
        raw: payload,
    }
}

/// A header list value: `[[name, value], ...]`.
pub fn hdrs(h: &[(&str, &str)]) -> Value {
    Value::List(
        h.iter()
            .map(|(n, v)| Value::List(vec![(*n).into(), (*v).into()]))
            .collect(),
    )
}

/// `Value::Int`.
pub fn int(i: i64) -> Value {
    Value::Int(i)
}

// ------------------------------------------------------------------------------------------
// The raw HTTP client

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
        let mut f = vec![(u8::from(fin) << 7) | opcode];
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
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.send(f)
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

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

// ------------------------------------------------------------------------------------------
// Cases, transcripts and comparison

/// What one run of a case produced.
#[derive(Clone, Debug)]
pub struct Transcript {
    pub cm: Cm,
    pub packets: Vec<Rec>,
    /// Per client, in the order the clients were started.
    pub clients: Vec<Vec<(String, Vec<u8>)>>,
    pub error: Option<String>,
    pub port: u16,
    pub req_port: u16,
    pub cm_log: String,
}

impl Transcript {
    /// All client events, flattened.
    pub fn client_events(&self) -> Vec<(String, Vec<u8>)> {
        self.clients.iter().flatten().cloned().collect()
    }

    /// Bytes of the client event `i` (flattened) as text.
    pub fn client_text(&self, i: usize) -> String {
        self.client_events()
            .get(i)
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// Kinds of the recorded packets, `via:kind`.
    pub fn kinds(&self) -> Vec<String> {
        self.packets
            .iter()
            .map(|r| format!("{}:{}", r.via, r.kind()))
            .collect()
    }

    pub fn dump(&self) -> String {
        let mut s = format!("=== {} ===\n", self.cm.name());
        if let Some(e) = &self.error {
            let _ = writeln!(s, "error: {e}");
        }
        for (via, v) in normalise(self) {
            let _ = writeln!(s, "  {via} {v}");
        }
        for (i, c) in self.clients.iter().enumerate() {
            for (l, b) in c {
                let _ = writeln!(s, "  client{i} {l}: \"{}\"", tn::escape(b));
            }
        }
        s
    }
}

/// A scripted interaction: drives the handler (`cx.h`) and starts clients.
pub type Script = fn(&mut Cx) -> Result<(), String>;

type ClientResult = Result<Vec<(String, Vec<u8>)>, (String, Vec<(String, Vec<u8>)>)>;

/// What a script gets: the CM, the handler, and client threads.
pub struct Cx {
    pub cm: CmProc,
    pub h: Handler,
    clients: Vec<JoinHandle<ClientResult>>,
    results: Vec<Vec<(String, Vec<u8>)>>,
    errors: Vec<String>,
}

impl Cx {
    /// Starts a client thread on the stream port.
    pub fn client<F>(&mut self, f: F)
    where
        F: FnOnce(&mut Client) -> Result<(), String> + Send + 'static,
    {
        let port = self.cm.port;
        self.spawn_client(port, f)
    }

    /// Starts a client thread on the req port.
    pub fn req_client<F>(&mut self, f: F)
    where
        F: FnOnce(&mut Client) -> Result<(), String> + Send + 'static,
    {
        let port = self.cm.req_port;
        self.spawn_client(port, f)
    }

    fn spawn_client<F>(&mut self, port: u16, f: F)
    where
        F: FnOnce(&mut Client) -> Result<(), String> + Send + 'static,
    {
        self.clients.push(std::thread::spawn(move || {
            let mut c = Client::connect(port).map_err(|e| (e, vec![]))?;
            match f(&mut c) {
                Ok(()) => Ok(c.events),
                Err(e) => Err((e, c.events)),
            }
        }));
    }

    /// Waits for every client thread started so far (each bounds its own waits).
    pub fn join_clients(&mut self) -> Result<(), String> {
        for (i, j) in self.clients.drain(..).enumerate() {
            match j.join() {
                Ok(Ok(ev)) => self.results.push(ev),
                Ok(Err((e, ev))) => {
                    self.results.push(ev);
                    self.errors.push(format!("client {i}: {e}"));
                }
                Err(_) => self.errors.push(format!("client {i} panicked")),
            }
        }
        match self.errors.first() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// Runs `script` against a fresh `cm` (with `extra` flags) and records everything.
pub fn run_case(cm: Cm, tag: &str, script: Script, extra: &[&str]) -> Transcript {
    let dir = TempDir::new(tag);
    let cmp = start_cm(cm, &dir, extra);
    let h = Handler::connect(&cmp, &[H1, H2]);
    let mut cx = Cx {
        cm: cmp,
        h,
        clients: Vec::new(),
        results: Vec::new(),
        errors: Vec::new(),
    };
    let res = script(&mut cx);
    let joined = cx.join_clients();
    // Anything that arrives after the script is done is part of the transcript too.
    cx.h.drain(Duration::from_millis(300));
    let mut errs = Vec::new();
    if let Err(e) = res {
        errs.push(e);
    }
    if let Err(e) = joined {
        if !errs.contains(&e) {
            errs.push(e);
        }
    }
    errs.extend(cx.errors.iter().skip(1).cloned());
    let cm_log = cx.cm.proc.log_text();
    if let Some(st) = cx.cm.proc.exited() {
        errs.push(format!("{} exited during the case: {st}", cm.name()));
    }
    Transcript {
        cm,
        packets: cx.h.log.clone(),
        clients: cx.results.clone(),
        error: if errs.is_empty() {
            None
        } else {
            Some(errs.join("\n"))
        },
        port: cx.cm.port,
        req_port: cx.cm.req_port,
        cm_log,
    }
}

/// Condure's transcript of a case, computed once per test process and shared by the three
/// variants of the case.
pub fn reference(case: &str, script: Script, extra: &[&str]) -> Arc<Transcript> {
    type Cache = Mutex<HashMap<String, Arc<OnceLock<Arc<Transcript>>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(case.to_string())
        .or_default()
        .clone();
    cell.get_or_init(|| Arc::new(run_case(Cm::Condure, case, script, extra)))
        .clone()
}

/// The body of a parity test: Condure's variant checks that the script ran and `check`
/// holds; a zring variant runs the same script against zring (concurrently with Condure's
/// reference run), requires packet and byte parity with Condure, then `check`.
pub fn parity(case: &str, script: Script, extra: &[&str], check: fn(&Transcript), cm: Cm) {
    if !enabled(cm) {
        return;
    }
    if cm == Cm::Condure {
        let t = reference(case, script, extra);
        if let Some(e) = &t.error {
            panic!(
                "condure run of {case} failed: {e}\n{}\n--- condure log ---\n{}",
                t.dump(),
                t.cm_log
            );
        }
        dump_if_asked(&t);
        check(&t);
        return;
    }
    let owned: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let tag = format!("{case}-{}", if cm == Cm::ZringUring { "u" } else { "e" });
    let mine = std::thread::spawn(move || {
        let extra: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
        run_case(cm, &tag, script, &extra)
    });
    let want = reference(case, script, extra);
    let got = mine.join().expect("zring run panicked");
    if let Some(e) = &want.error {
        panic!("the condure reference run of {case} failed: {e}");
    }
    if let Err(d) = compare(&want, &got) {
        panic!(
            "{case}: {} differs from condure:\n{d}\n{}\n{}\n--- {} log (tail) ---\n{}",
            cm.name(),
            want.dump(),
            got.dump(),
            cm.name(),
            tail(&got.cm_log, 40)
        );
    }
    dump_if_asked(&got);
    check(&got);
}

/// With `PEERS_DUMP=1` in the environment, prints the normalised transcript (use with
/// `--nocapture`): how to see what Condure does.
pub fn dump_if_asked(t: &Transcript) {
    if std::env::var_os("PEERS_DUMP").is_some() {
        eprintln!("{}", t.dump());
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// The packets of `t` with the varying parts normalised:
/// * `id` values (string or list form) → `#<n>`, n = order of first appearance;
/// * `peer-port` (an int) → 0 (its type is kept);
/// * `127.0.0.1:<port>` in `uri` and in the `Host` header → `127.0.0.1:PORT` / `REQPORT`.
///
/// Each entry is (`via env`, value).
pub fn normalise(t: &Transcript) -> Vec<(String, Value)> {
    let mut ids: HashMap<Vec<u8>, usize> = HashMap::new();
    t.packets
        .iter()
        .map(|r| {
            let v = norm_value(&r.v, &mut ids, t.port, t.req_port);
            (format!("{} {}", r.via, r.env), v)
        })
        .collect()
}

fn norm_id(v: &Value, ids: &mut HashMap<Vec<u8>, usize>) -> Value {
    match v {
        Value::Str(s) => {
            let n = ids.len();
            let k = *ids.entry(s.clone()).or_insert(n);
            Value::Str(format!("#{k}").into_bytes())
        }
        Value::List(l) => Value::List(
            l.iter()
                .map(|e| match e {
                    Value::Dict(kv) => Value::Dict(
                        kv.iter()
                            .map(|(k, x)| {
                                if k == b"id" {
                                    (k.clone(), norm_id(x, ids))
                                } else {
                                    (k.clone(), x.clone())
                                }
                            })
                            .collect(),
                    ),
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn norm_port_text(v: &Value, port: u16, req_port: u16) -> Value {
    match v {
        Value::Str(s) => {
            let t = String::from_utf8_lossy(s)
                .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:PORT")
                .replace(&format!("127.0.0.1:{req_port}"), "127.0.0.1:REQPORT");
            Value::Str(t.into_bytes())
        }
        other => other.clone(),
    }
}

fn norm_value(v: &Value, ids: &mut HashMap<Vec<u8>, usize>, port: u16, req_port: u16) -> Value {
    let Value::Dict(kv) = v else {
        return v.clone();
    };
    let out = kv
        .iter()
        .map(|(k, x)| {
            let x = match k.as_slice() {
                b"id" => norm_id(x, ids),
                b"peer-port" => match x {
                    Value::Int(_) => Value::Int(0),
                    o => o.clone(),
                },
                b"uri" => norm_port_text(x, port, req_port),
                b"headers" => match x {
                    Value::List(hs) => Value::List(
                        hs.iter()
                            .map(|h| match h {
                                Value::List(nv)
                                    if nv.len() == 2
                                        && nv[0]
                                            .as_bytes()
                                            .is_some_and(|n| n.eq_ignore_ascii_case(b"host")) =>
                                {
                                    Value::List(vec![
                                        nv[0].clone(),
                                        norm_port_text(&nv[1], port, req_port),
                                    ])
                                }
                                o => o.clone(),
                            })
                            .collect(),
                    ),
                    o => o.clone(),
                },
                _ => x.clone(),
            };
            (k.clone(), x)
        })
        .collect();
    Value::Dict(out)
}

/// Client bytes with `Date` header values (if any) replaced.
pub fn norm_http(b: &[u8]) -> String {
    let t = tn::escape(b);
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(i) = rest.find("\\r\\n") {
        let line = &rest[..i];
        if line.len() > 5 && line[..5].eq_ignore_ascii_case("date:") {
            out.push_str("Date: <date>");
        } else {
            out.push_str(line);
        }
        out.push_str("\\r\\n");
        rest = &rest[i + 4..];
    }
    out.push_str(rest);
    out
}

/// Compares `got` with the reference `want`: the packets (normalised, field by field,
/// keys in order, value types) and the client bytes. Err = a readable diff.
pub fn compare(want: &Transcript, got: &Transcript) -> Result<(), String> {
    let mut report = String::new();
    if let Some(e) = &got.error {
        let _ = writeln!(report, "{} run failed: {e}", got.cm.name());
    }
    let a = normalise(want);
    let b = normalise(got);
    let la: Vec<String> = a.iter().map(|(via, v)| format!("{via} {v}")).collect();
    let lb: Vec<String> = b.iter().map(|(via, v)| format!("{via} {v}")).collect();
    if la != lb {
        let _ = writeln!(report, "packets differ (- condure, + {}):", got.cm.name());
        for (tag, i, j) in line_diff(&la, &lb) {
            match (i, j) {
                (Some(i), None) => {
                    let _ = writeln!(report, "{tag} [{i}] {}", la[i]);
                }
                (None, Some(j)) => {
                    let _ = writeln!(report, "{tag} [{j}] {}", lb[j]);
                }
                (Some(i), Some(_)) => {
                    let _ = writeln!(report, "{tag} [{i}] {}", la[i]);
                }
                _ => {}
            }
        }
        // Field-level detail for packets at the same position.
        for (i, ((va, xa), (vb, xb))) in a.iter().zip(&b).enumerate() {
            let mut d = Vec::new();
            if va != vb {
                d.push(format!("socket/envelope: want {va} got {vb}"));
            }
            tn::diff("", xa, xb, &mut d);
            if !d.is_empty() {
                let _ = writeln!(report, "packet [{i}] ({}):", xa.kind());
                for l in d {
                    let _ = writeln!(report, "    {l}");
                }
            }
        }
        if a.len() != b.len() {
            let _ = writeln!(
                report,
                "packet count: condure {} vs {} {}",
                a.len(),
                got.cm.name(),
                b.len()
            );
        }
    }
    let ca: Vec<(String, String)> = want
        .client_events()
        .iter()
        .map(|(l, x)| (l.clone(), norm_http(x)))
        .collect();
    let mut cb: Vec<(String, String)> = got
        .client_events()
        .iter()
        .map(|(l, x)| (l.clone(), norm_http(x)))
        .collect();
    // One deliberate difference: a response after which zring closes the connection says
    // so (`Connection: close`, RFC 9112 §9.6) where Condure just closes. Accepted only
    // there: Condure's response has no Connection field and the connection then closes.
    for i in 0..cb.len().min(ca.len()) {
        let closes = cb.get(i + 1).is_some_and(|(l, _)| l == "closed");
        let (want, got) = (&ca[i].1, &cb[i].1);
        if closes && !want.contains("Connection:") && got.contains("Connection: close\\r\\n") {
            let without = got.replacen("Connection: close\\r\\n", "", 1);
            if &without == want {
                cb[i].1 = without;
            }
        }
    }
    if ca != cb {
        let _ = writeln!(report, "client bytes differ:");
        for i in 0..ca.len().max(cb.len()) {
            let x = ca.get(i);
            let y = cb.get(i);
            if x != y {
                if let Some((l, s)) = x {
                    let _ = writeln!(report, "- [{i}] {l}: \"{s}\"");
                }
                if let Some((l, s)) = y {
                    let _ = writeln!(report, "+ [{i}] {l}: \"{s}\"");
                }
            }
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// A minimal LCS line diff: ("  "|"- "|"+ ", index in a, index in b).
fn line_diff(a: &[String], b: &[String]) -> Vec<(&'static str, Option<usize>, Option<usize>)> {
    let (n, m) = (a.len(), b.len());
    let mut l = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if a[i] == b[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(("  ", Some(i), Some(j)));
            i += 1;
            j += 1;
        } else if j < m && (i == n || l[i][j + 1] >= l[i + 1][j]) {
            out.push(("+ ", None, Some(j)));
            j += 1;
        } else {
            out.push(("- ", Some(i), None));
            i += 1;
        }
    }
    out
}
