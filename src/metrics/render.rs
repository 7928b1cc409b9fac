//! The Prometheus text exposition format (version 0.0.4) of every metric: a fixed number
//! of families and samples, each a sum over workers, so its cost does not depend on the
//! number of connections.
use std::fmt::Write;
use std::time::Duration;

use super::{
    BridgeStats, ConnClass, Counter, WorkerStats, CLOSE_REASON_NAMES, CONN_CLASSES,
    ERROR_KIND_NAMES, FANOUT_NAMES, ZMQ_SOCKET_NAMES,
};
use crate::bridge::Shared;
use crate::proto::zhttp::Kind;

/// What the scraper knows besides the counters: fixed at start.
#[derive(Clone, Debug)]
pub struct Info {
    /// `io_uring` or `epoll`.
    pub runtime: &'static str,
    /// This process's share of connections per mode (`--stream-maxconn`, `--req-maxconn`).
    pub maxconn: [usize; 2],
}

/// Every family's namespace, pushpin-connmgr's (`connmgr_requests_total`), except the
/// standard `process_*` ones.
const NAMESPACE: &str = "connmgr_";

struct Out<'a> {
    s: &'a mut String,
    prefix: &'a str,
}

impl Out<'_> {
    fn name(&mut self, name: &str) {
        let namespace = if name.starts_with("process_") {
            ""
        } else {
            NAMESPACE
        };
        let _ = write!(self.s, "{}{namespace}{name}", self.prefix);
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.s.push_str("# HELP ");
        self.name(name);
        let _ = writeln!(self.s, " {help}");
        self.s.push_str("# TYPE ");
        self.name(name);
        let _ = writeln!(self.s, " {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.name(name);
        for (i, (k, v)) in labels.iter().enumerate() {
            let sep = if i == 0 { '{' } else { ',' };
            // Label values are zring's own constants: nothing to escape.
            debug_assert!(!v.contains(['"', '\\', '\n']));
            let _ = write!(self.s, "{sep}{k}=\"{v}\"");
        }
        if !labels.is_empty() {
            self.s.push('}');
        }
        let _ = writeln!(self.s, " {value}");
    }

    /// A family with one sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Writes every metric to `s`, each family name preceded by `prefix` (pushpin-connmgr's
/// `prefix=` parameter: prepended as is) and `NAMESPACE`.
/// `previous`: how long the previous scrape took to render (`None` before the first).
pub fn render(
    s: &mut String,
    prefix: &str,
    shared: &Shared,
    info: &Info,
    previous: Option<Duration>,
) {
    let m = &shared.metrics;
    let w = &m.workers[..];
    let b = &m.bridge;
    let mut o = Out { s, prefix };

    o.family(
        "build_info",
        "gauge",
        "zring's version and the runtime in use (always 1).",
    );
    o.sample(
        "build_info",
        &[
            ("program", "zring"),
            ("version", env!("CARGO_PKG_VERSION")),
            ("runtime", info.runtime),
        ],
        1,
    );
    connections(&mut o, w, shared, info);
    traffic(&mut o, w);
    errors(&mut o, w);
    zhttp(&mut o, w, b);
    let queued = shared
        .inboxes
        .iter()
        .zip(w)
        .map(|(i, w)| i.pushed().saturating_sub(w.inbox_dispatched.get()))
        .sum::<u64>();
    o.family(
        "queue_packets",
        "gauge",
        "Packets waiting between zring's threads: handler packets for workers \
         (worker_inbox), worker packets for the bridge (bridge_outbox), and packets a \
         ZeroMQ socket could not take yet (bridge_held).",
    );
    o.sample("queue_packets", &[("queue", "worker_inbox")], queued);
    o.sample(
        "queue_packets",
        &[("queue", "bridge_outbox")],
        shared.outbox_len(),
    );
    o.sample("queue_packets", &[("queue", "bridge_held")], b.held.get());
    o.family(
        "zmq_hwm_stalls_total",
        "counter",
        "Sends a ZeroMQ socket refused (high-water mark reached, or no handler connected): \
         the packet was held and retried.",
    );
    for (i, name) in ZMQ_SOCKET_NAMES.iter().enumerate() {
        let v = b.hwm_stalls[i].get();
        o.sample("zmq_hwm_stalls_total", &[("socket", name)], v);
    }
    outbound(&mut o, w);
    uring(&mut o, w, info);
    o.single(
        "metrics_render_seconds",
        "gauge",
        "How long the previous scrape took to render (0 before the first): the same at any \
         number of connections.",
        previous.unwrap_or_default().as_secs_f64(),
    );
    o.single(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the zring process.",
        resident_bytes(),
    );
}

fn connections(o: &mut Out, w: &[WorkerStats], shared: &Shared, info: &Info) {
    o.family(
        "connections",
        "gauge",
        "Open connections by protocol (http, ws, mongrel2, outbound), TLS, and state.",
    );
    for c in 0..CONN_CLASSES {
        let (protocol, tls, state) = ConnClass::labels(c);
        if protocol == "outbound" && state == "tls_handshake" && tls == "false" {
            continue; // never used: a plain connection has no handshake
        }
        let v: i64 = w.iter().map(|w| w.connections[c].get()).sum();
        let labels = [("protocol", protocol), ("tls", tls), ("state", state)];
        o.sample("connections", &labels, v.max(0));
    }
    o.family(
        "connections_limit",
        "gauge",
        "Connections the process holds at most per listener mode (--stream-maxconn, \
         --req-maxconn).",
    );
    o.sample("connections_limit", &[("mode", "stream")], info.maxconn[0]);
    o.sample("connections_limit", &[("mode", "req")], info.maxconn[1]);
    o.family(
        "connections_accepted_total",
        "counter",
        "Client connections accepted, by listener mode.",
    );
    for (i, mode) in ["stream", "req"].iter().enumerate() {
        let v: u64 = w.iter().map(|w| w.accepted[i].get()).sum();
        o.sample("connections_accepted_total", &[("mode", mode)], v);
    }
    let (evicted, refused) = shared.inboxes.iter().fold((0, 0), |(e, r), i| {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        (e + load(&i.evicted_idle), r + load(&i.refused_503))
    });
    o.single(
        "connections_evicted_total",
        "counter",
        "Idle connections closed to make room for a new one at the connection limit.",
        evicted,
    );
    o.single(
        "connections_refused_total",
        "counter",
        "New connections answered 503 at the connection limit (nothing idle to close).",
        refused,
    );
    o.family(
        "connections_closed_total",
        "counter",
        "Client connections closed, by what ended them.",
    );
    for (i, reason) in CLOSE_REASON_NAMES.iter().enumerate() {
        let v: u64 = w.iter().map(|w| w.closed[i].get()).sum();
        o.sample("connections_closed_total", &[("reason", reason)], v);
    }
}

fn traffic(o: &mut Out, w: &[WorkerStats]) {
    for (name, help, field) in [
        (
            "received_bytes_total",
            "Bytes read from sockets (TLS: encrypted), by peer.",
            (|w: &WorkerStats| &w.received_bytes) as fn(&WorkerStats) -> &[Counter; 2],
        ),
        (
            "sent_bytes_total",
            "Bytes written to sockets (TLS: encrypted), by peer.",
            |w: &WorkerStats| &w.sent_bytes,
        ),
    ] {
        o.family(name, "counter", help);
        for (i, peer) in ["client", "backend"].iter().enumerate() {
            let v: u64 = w.iter().map(|w| field(w)[i].get()).sum();
            o.sample(name, &[("peer", peer)], v);
        }
    }
    let v: u64 = w.iter().map(|w| w.requests.get()).sum();
    o.single(
        "requests_total",
        "counter",
        "Total number of requests processed by connmgr",
        v,
    );
    o.family(
        "responses_total",
        "counter",
        "Response heads written to clients (the handler's and zring's own), by status class.",
    );
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let v: u64 = w.iter().map(|w| w.responses[i].get()).sum();
        o.sample("responses_total", &[("class", class)], v);
    }
}

fn errors(o: &mut Out, w: &[WorkerStats]) {
    o.family(
        "protocol_errors_total",
        "counter",
        "Client protocol errors, by what zring answered: an HTTP status, a WebSocket close \
         code, or a TLS alert.",
    );
    for (i, kind) in ERROR_KIND_NAMES.iter().enumerate() {
        let v: u64 = w.iter().map(|w| w.protocol_errors[i].get()).sum();
        o.sample("protocol_errors_total", &[("kind", kind)], v);
    }
    let v: u64 = w.iter().map(|w| w.access_log_dropped.get()).sum();
    o.single(
        "access_log_dropped_total",
        "counter",
        "Access log lines dropped because the access log thread was behind (a worker never \
         waits for it).",
        v,
    );
    let v: u64 = w.iter().map(|w| w.handler_wait_expired.get()).sum();
    o.single(
        "handler_wait_expired_total",
        "counter",
        "Requests no handler took within --handler-wait (each answered 503).",
        v,
    );
    o.family(
        "fanout_targets_total",
        "counter",
        "Connections named by handler packets with many ids: sent the shared frame as is, \
         queued as their own copy, or dropped (session already ended).",
    );
    for (i, outcome) in FANOUT_NAMES.iter().enumerate() {
        let v: u64 = w.iter().map(|w| w.fanout[i].get()).sum();
        o.sample("fanout_targets_total", &[("outcome", outcome)], v);
    }
}

fn zhttp(o: &mut Out, w: &[WorkerStats], b: &BridgeStats) {
    o.family(
        "zhttp_packets_total",
        "counter",
        "ZHTTP packets from handlers (in, as decoded by the bridge) and for handlers (out, \
         as produced by the workers), by type.",
    );
    for kind in Kind::ALL {
        let name = kind_name(kind);
        let v = b.zhttp_in[kind as usize].get();
        o.sample(
            "zhttp_packets_total",
            &[("direction", "in"), ("type", name)],
            v,
        );
    }
    for kind in Kind::ALL {
        let name = kind_name(kind);
        let v: u64 = w.iter().map(|w| w.zhttp_out[kind as usize].get()).sum();
        o.sample(
            "zhttp_packets_total",
            &[("direction", "out"), ("type", name)],
            v,
        );
    }
    o.single(
        "zhttp_packets_invalid_total",
        "counter",
        "Handler packets dropped because they could not be decoded.",
        b.zhttp_invalid.get(),
    );
    o.single(
        "zhttp_requests_expired_total",
        "counter",
        "Request packets dropped by the bridge because no handler took them before their \
         handler wait ended.",
        b.requests_expired.get(),
    );
    let known = b.handlers_known.load(std::sync::atomic::Ordering::Relaxed);
    o.single(
        "handlers_connected",
        "gauge",
        "Handlers connected to the stream ROUTER socket (-1: not known, no \
         ZMQ_ROUTER_NOTIFY or no stream listener).",
        if known {
            b.handlers_connected.get()
        } else {
            -1
        },
    );
}

/// Client mode's outbound connections (their gauges are `connections{protocol="outbound"}`:
/// idle is a pooled connection).
fn outbound(o: &mut Out, w: &[WorkerStats]) {
    let sum = |f: fn(&WorkerStats) -> &Counter| w.iter().map(|w| f(w).get()).sum::<u64>();
    o.single(
        "outbound_connects_total",
        "counter",
        "Client mode: outbound TCP connects started (each address tried counts).",
        sum(|w| &w.out_connects),
    );
    o.single(
        "outbound_reused_total",
        "counter",
        "Client mode: requests sent on a pooled connection (no DNS, connect or handshake).",
        sum(|w| &w.out_reused),
    );
    o.single(
        "outbound_stale_retries_total",
        "counter",
        "Client mode: pooled connections that failed before any response byte, their \
         idempotent request sent again on a fresh connection.",
        sum(|w| &w.out_stale_retries),
    );
}

fn uring(o: &mut Out, w: &[WorkerStats], info: &Info) {
    if info.runtime != "io_uring" {
        return;
    }
    let sum = |f: fn(&WorkerStats) -> &Counter| w.iter().map(|w| f(w).get()).sum::<u64>();
    o.single(
        "uring_submissions_total",
        "counter",
        "io_uring submission queue entries queued for the kernel.",
        sum(|w| &w.uring_submitted),
    );
    o.single(
        "uring_completions_total",
        "counter",
        "io_uring completion queue entries reaped.",
        sum(|w| &w.uring_completed),
    );
    o.single(
        "uring_cq_overflows_total",
        "counter",
        "Reaps that found io_uring completions waiting in the kernel's overflow list (a \
         completion queue was full).",
        sum(|w| &w.uring_cq_overflows),
    );
}

/// ZHTTP's name of a packet type (`data` for one without a type).
fn kind_name(k: Kind) -> &'static str {
    std::str::from_utf8(k.as_bytes()).expect("packet type names are ASCII")
}

/// The process's resident set (`/proc/self/statm`, pages), 0 if it cannot be read.
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}
