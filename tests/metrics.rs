//! `--prometheus`: a real Prometheus text parser (the Python `prometheus_client`'s, Debian's
//! python3-prometheus-client) reads `/metrics` before and after known traffic, and each
//! counter must have moved by exactly what the traffic implies. `/healthz` before and after
//! a handler connects. Each case on both runtimes.
//!
//! Needs: /usr/bin/python3 with prometheus_client (`scripts/setup.sh test` installs it).
#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::ws::{Ws, TEXT};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// Every sample of one scrape, keyed `name{label="value",…}` (labels sorted), as the
/// Python parser read them.
#[derive(Debug, Clone)]
struct Scrape(BTreeMap<String, f64>);

/// The parser: fails on anything the Prometheus text format does not allow.
const PARSER: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        print("%s{%s}\t%r" % (s.name, labels, s.value))
"#;

fn parse(text: &str) -> Scrape {
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (scripts/setup.sh test)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (k, v) = line.split_once('\t').unwrap();
        samples.insert(k.to_string(), v.parse::<f64>().unwrap());
    }
    Scrape(samples)
}

impl Scrape {
    /// The sample `name` with exactly `labels` (in any order); panics if absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<_> = labels.to_vec();
        l.sort();
        let l: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let key = format!("{name}{{{}}}", l.join(","));
        *self
            .0
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {key} in {:#?}", self.0.keys()))
    }

    /// The sum of every sample of `name` (over all label values).
    fn sum(&self, name: &str) -> f64 {
        let prefix = format!("{name}{{");
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

/// One HTTP exchange with the metrics listener: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics listener");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").expect("a response head");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(head.contains("Connection: close"), "{head}");
    (code, body.to_string())
}

fn scrape(port: u16) -> Scrape {
    let (code, body) = get(port, "/metrics");
    assert_eq!(code, 200);
    parse(&body)
}

/// For polling (the parser takes a while): the value of the sample line that starts with
/// `sample` (name and labels as zring writes them), read without the parser.
fn quick(port: u16, sample: &str) -> f64 {
    let (_, body) = get(port, "/metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| k.starts_with(sample))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// Polls until `sample` (see `quick`) reads `want`.
fn wait_for(port: u16, sample: &str, want: f64) {
    let end = Instant::now() + WAIT;
    loop {
        let v = quick(port, sample);
        if v == want {
            return;
        }
        assert!(Instant::now() < end, "{sample} stayed {v}, not {want}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Scrapes once no client connection is open (the closes before it are all counted).
fn settled(port: u16) -> Scrape {
    wait_for(port, "connmgr_connections{", 0.0);
    scrape(port)
}

/// Sends `req` on a new connection and reads to EOF: (bytes sent, bytes received).
fn http(port: u16, req: &[u8]) -> (usize, Vec<u8>) {
    let r = exchange(port, req, WAIT);
    (req.len(), r)
}

/// What moved between two scrapes.
struct Delta<'a>(&'a Scrape, &'a Scrape);

impl Delta<'_> {
    fn of(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.1.get(name, labels) - self.0.get(name, labels)
    }

    fn sum(&self, name: &str) -> f64 {
        self.1.sum(name) - self.0.sum(name)
    }
}

both_runtimes! {
    // HTTP in both modes: statuses, requests, closes, bytes and ZHTTP packets move by
    // exactly what the client did; the bad requests are counted by kind.
    http_traffic_moves_each_counter_by_its_amount(rt) {
        let mport = free_port();
        let stack = Stack::with_example(rt, &["--prometheus", &format!("127.0.0.1:{mport}")]);
        let before = settled(mport);
        let (mut sent, mut received) = (0, 0);
        let hello = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        for _ in 0..5 {
            let (n, r) = http(stack.port, hello);
            assert!(r.starts_with(b"HTTP/1.1 200 "), "{r:?}");
            (sent, received) = (sent + n, received + r.len());
        }
        let missing = b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let (n, r) = http(stack.port, missing);
        assert!(r.starts_with(b"HTTP/1.1 404 "), "{r:?}");
        (sent, received) = (sent + n, received + r.len());
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(5000));
        let bad: [(&[u8], &str); 3] = [
            (b"GET / HTTP/1.1\r\nHost t\r\n\r\n", "400"),
            (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", "505"),
            (long_uri.as_bytes(), "414"),
        ];
        for (req, code) in bad {
            let (n, r) = http(stack.port, req);
            let status = format!("HTTP/1.1 {code} ");
            assert!(r.starts_with(status.as_bytes()), "{code}: {:?}", String::from_utf8_lossy(&r));
            (sent, received) = (sent + n, received + r.len());
        }
        let (_, r) = http(stack.req_port, hello);
        assert!(r.starts_with(b"HTTP/1.1 200 "), "{r:?}");
        let after = settled(mport);
        let d = Delta(&before, &after);
        assert_eq!(d.of("connmgr_connections_accepted_total", &[("mode", "stream")]), 9.0);
        assert_eq!(d.of("connmgr_connections_accepted_total", &[("mode", "req")]), 1.0);
        assert_eq!(d.of("connmgr_requests_total", &[]), 7.0, "the bad requests are no requests");
        assert_eq!(d.of("connmgr_responses_total", &[("class", "2xx")]), 6.0);
        assert_eq!(d.of("connmgr_responses_total", &[("class", "4xx")]), 3.0);
        assert_eq!(d.of("connmgr_responses_total", &[("class", "5xx")]), 1.0);
        assert_eq!(d.sum("connmgr_responses_total"), 10.0);
        for kind in ["400", "505", "414"] {
            assert_eq!(d.of("connmgr_protocol_errors_total", &[("kind", kind)]), 1.0, "{kind}");
        }
        assert_eq!(d.sum("connmgr_protocol_errors_total"), 3.0);
        // Connection: close responses (both modes) end complete; the bad requests end in
        // their error.
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "complete")]), 7.0);
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "protocol_error")]), 3.0);
        assert_eq!(d.sum("connmgr_connections_closed_total"), 10.0);
        // Stream-mode bytes: exactly what the clients wrote and read (the req-mode exchange
        // adds its own).
        let (req_sent, req_received) = (hello.len() as f64, r.len() as f64);
        let rx = d.of("connmgr_received_bytes_total", &[("peer", "client")]);
        let tx = d.of("connmgr_sent_bytes_total", &[("peer", "client")]);
        assert_eq!(rx, sent as f64 + req_sent);
        assert_eq!(tx, received as f64 + req_received);
        // One request packet out and one response packet in per request.
        let zhttp = |dir, ty| d.of("connmgr_zhttp_packets_total", &[("direction", dir), ("type", ty)]);
        assert_eq!(zhttp("out", "data"), 7.0);
        assert_eq!(zhttp("in", "data"), 7.0);
        assert_eq!(zhttp("out", "cancel"), 0.0);
        assert_eq!(d.of("connmgr_handler_wait_expired_total", &[]), 0.0);
        // Gauges and build info.
        assert_eq!(after.get("connmgr_handlers_connected", &[]), 1.0);
        let runtime = if rt == "uring" { "io_uring" } else { "epoll" };
        let info = [("program", "zring"), ("version", env!("CARGO_PKG_VERSION")), ("runtime", runtime)];
        assert_eq!(after.get("connmgr_build_info", &info), 1.0);
        assert!(after.get("process_resident_memory_bytes", &[]) > 1e6);
        assert_eq!(after.get("connmgr_queue_packets", &[("queue", "worker_inbox")]), 0.0);
        if rt == "uring" {
            assert!(d.of("connmgr_uring_submissions_total", &[]) > 0.0);
            assert!(d.of("connmgr_uring_completions_total", &[]) > 0.0);
        }
        // Other paths and methods.
        assert_eq!(get(mport, "/").0, 404);
        assert_eq!(get(mport, "/healthz"), (200, "ok\n".to_string()));
    }

    // WebSockets: open ones are counted by protocol and state while open, a bad frame is
    // 1002 and bad UTF-8 1007, and a broadcast's targets take the shared frame.
    websocket_traffic_moves_each_counter_by_its_amount(rt) {
        let mport = free_port();
        let stack = Stack::with_example(rt, &["--prometheus", &format!("127.0.0.1:{mport}")]);
        let before = settled(mport);
        let mut members = [Ws::connect(stack.port, "/ws/broadcast"), Ws::connect(stack.port, "/ws/broadcast")];
        for m in &mut members {
            m.text(b"hi");
            assert_eq!(m.read_frame(WAIT).unwrap().payload, b"hi");
        }
        let open = scrape(mport);
        let labels = [("protocol", "ws"), ("tls", "false"), ("state", "active")];
        assert_eq!(open.get("connmgr_connections", &labels), 2.0);
        assert_eq!(open.sum("connmgr_connections"), 2.0);
        let post = b"POST /broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx";
        let (_, r) = http(stack.port, post);
        assert!(r.starts_with(b"HTTP/1.1 200 "), "{r:?}");
        for m in &mut members {
            let f = m.read_frame(WAIT).unwrap();
            assert_eq!((f.opcode, &f.payload[..]), (TEXT, &b"x"[..]));
        }
        // An unmasked frame: 1002. Text that is not UTF-8: 1007.
        let mut w = Ws::connect(stack.port, "/ws");
        w.write(&support::ws::frame(true, 0, TEXT, b"bad", None));
        assert_eq!(w.read_frame(WAIT).unwrap().close_code(), Some(1002));
        let mut w = Ws::connect(stack.port, "/ws");
        w.text(&[0xff, 0xfe]);
        assert_eq!(w.read_frame(WAIT).unwrap().close_code(), Some(1007));
        drop(members);
        let after = settled(mport);
        let d = Delta(&before, &after);
        assert_eq!(d.of("connmgr_responses_total", &[("class", "1xx")]), 4.0);
        assert_eq!(d.of("connmgr_requests_total", &[]), 5.0);
        assert_eq!(d.of("connmgr_protocol_errors_total", &[("kind", "1002")]), 1.0);
        assert_eq!(d.of("connmgr_protocol_errors_total", &[("kind", "1007")]), 1.0);
        assert_eq!(d.sum("connmgr_protocol_errors_total"), 2.0);
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "protocol_error")]), 2.0);
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "client")]), 2.0);
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "complete")]), 1.0);
        assert_eq!(d.of("connmgr_fanout_targets_total", &[("outcome", "shared")]), 2.0);
        assert_eq!(d.sum("connmgr_fanout_targets_total"), 2.0);
        let zhttp = |dir, ty| d.of("connmgr_zhttp_packets_total", &[("direction", dir), ("type", ty)]);
        // Failed sessions tell their handler; the two members' did not fail.
        assert_eq!(zhttp("out", "cancel"), 4.0);
    }

    // The connection limit: an idle connection is closed for a newcomer; with nothing idle a
    // newcomer gets 503. A request no handler takes gets 503 after --handler-wait. /healthz
    // is 503 until a handler connects.
    limits_and_health(rt) {
        let mport = free_port();
        let stack = Stack::zring_only(rt, &[
            "--prometheus", &format!("127.0.0.1:{mport}"),
            "--workers", "1", "--stream-maxconn", "1", "--handler-wait", "1500",
        ]);
        assert_eq!(get(mport, "/healthz"), (503, "no handler connected\n".to_string()));
        let before = settled(mport);
        assert_eq!(before.get("connmgr_handlers_connected", &[]), 0.0);
        // Busy: a request waits for a handler. A newcomer then finds nothing idle: 503.
        let mut busy = TcpStream::connect(("127.0.0.1", stack.port)).unwrap();
        busy.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        wait_for(mport, r#"connmgr_connections{protocol="http",tls="false",state="active"}"#, 1.0);
        let r = exchange(stack.port, b"", WAIT);
        assert!(r.starts_with(b"HTTP/1.1 503 "), "{:?}", String::from_utf8_lossy(&r));
        busy.set_read_timeout(Some(WAIT)).unwrap();
        let r = read_all(&mut busy);
        assert!(r.starts_with(b"HTTP/1.1 503 "), "{:?}", String::from_utf8_lossy(&r));
        drop(busy);
        // The bridge drops the held request at its next retry after the wait ended.
        wait_for(mport, "connmgr_zhttp_requests_expired_total", 1.0);
        let mid = settled(mport);
        let d = Delta(&before, &mid);
        assert_eq!(d.of("connmgr_connections_refused_total", &[]), 1.0);
        assert_eq!(d.of("connmgr_handler_wait_expired_total", &[]), 1.0);
        assert_eq!(d.of("connmgr_responses_total", &[("class", "5xx")]), 2.0);
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "overload")]), 1.0);
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "timeout")]), 1.0);
        // Idle: a connection that sent nothing makes room for the next one.
        let mut idle = TcpStream::connect(("127.0.0.1", stack.port)).unwrap();
        wait_for(mport, r#"connmgr_connections{protocol="http",tls="false",state="idle"}"#, 1.0);
        let newcomer = TcpStream::connect(("127.0.0.1", stack.port)).unwrap();
        idle.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(read_all(&mut idle), b"", "closed for room, without a response");
        drop((idle, newcomer));
        let after = settled(mport);
        let d = Delta(&mid, &after);
        assert_eq!(d.of("connmgr_connections_evicted_total", &[]), 1.0);
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "evicted")]), 1.0);
        assert_eq!(d.of("connmgr_connections_closed_total", &[("reason", "client")]), 1.0);
        assert_eq!(d.of("connmgr_connections_refused_total", &[]), 0.0);
        // A handler connects: ready.
        let _handler = Proc::start(
            "example handler",
            Command::new(env!("CARGO_BIN_EXE_zring-example-handler"))
                .args(["--stream", &stack.base])
                .stdout(Stdio::null()),
        );
        let end = Instant::now() + WAIT;
        while get(mport, "/healthz").0 != 200 {
            assert!(Instant::now() < end, "healthz never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(scrape(mport).get("connmgr_handlers_connected", &[]), 1.0);
    }
}

/// `prefix=` is prepended to every name, as pushpin-connmgr does.
#[test]
fn prefix_is_prepended_to_every_name() {
    let mport = free_port();
    let _stack = Stack::zring_only(
        "epoll",
        &[
            "--prometheus",
            &format!("127.0.0.1:{mport},prefix=pushpin_"),
        ],
    );
    let (_, body) = get(mport, "/metrics");
    let m = parse(&body);
    assert!(m.0.keys().all(|k| k.starts_with("pushpin_")), "{m:#?}");
    assert_eq!(m.get("pushpin_connmgr_requests_total", &[]), 0.0);
    assert_eq!(m.get("pushpin_connmgr_handlers_connected", &[]), 0.0);
}
