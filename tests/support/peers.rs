//! Parity machinery for `tests/parity.rs` and `tests/pushpin.rs`: the connection managers
//! under comparison (Condure and zring on both runtimes), a script context driving the
//! recording handler (`zhttp::Handler`) and recording clients (`http::Client`), and
//! transcript normalisation and diffing.
//!
//! Nothing here uses zring's library: the harness must not trust the code under test.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

// What the parity suites reach through `peers::`.
#[allow(unused_imports)]
pub use super::http::{find, Client, WAIT};
#[allow(unused_imports)]
pub use super::net::{free_ports, wait_port, TempDir};
#[allow(unused_imports)]
pub use super::proc::{children_of, pid_alive, Proc};
pub use super::tn::{self, Value};
#[allow(unused_imports)]
pub use super::zhttp::{hdrs, int, Handler, Rec};

/// The switch for every zring case (both runtimes). Condure cases always run.
pub const ZRING_CASES: bool = true;

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
