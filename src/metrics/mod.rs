//! Metrics: counters kept as things happen, read by a scraper thread without locks.
//!
//! # Who writes, who reads
//! Each worker owns one [`WorkerStats`] and the bridge one [`BridgeStats`], both in
//! [`Metrics`] (held by `bridge::Shared`). Every counter and gauge has exactly one writer
//! thread, so an update is a relaxed load and a relaxed store ([`Counter::add`]): on x86 and
//! ARM that is a plain `mov`, no locked read-modify-write, no fence, no syscall. The
//! scraper (`server`, its own thread) reads with relaxed loads and sums over workers; what
//! it sees of one worker is at most one update old. A worker's stats are aligned to their
//! own cache lines, so workers never share a line and a scrape moves each line once.
//!
//! Nothing is counted by walking connections: gauges (connections by protocol and state)
//! move on transitions the worker already sees (`Worker::with_conn`), so a scrape costs the
//! same at ten connections and at a million: a fixed number of loads per worker
//! (`render`).
//!
//! The connection core (`conn`, sans-IO) gets `&WorkerStats` in its `Ctx` and counts only
//! what the worker cannot see from outside: response statuses, protocol errors by kind,
//! ZHTTP packet types it encodes, requests, expired handler waits.
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

mod render;
pub mod server;

pub use render::{render, Info};

/// A monotonic count with one writer thread.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning thread calls this (see the module docs): a load and a
    /// store, which another writer would race with.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Mirrors a count kept elsewhere (the kernel's), by its one writer.
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// A level that goes up and down, with one writer thread. Per worker it may be negative
/// (a connection counted in by one worker is never counted out by another, so sums are
/// exact; a single worker's value never goes below zero either, but a sum is what is read).
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// What a connection speaks, for `connmgr_connections{protocol}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ZHTTP HTTP/1 (between requests, or in one).
    Http = 0,
    /// A WebSocket (from the upgrade request on).
    Ws = 1,
    /// A Mongrel2 client connection.
    Mongrel2 = 2,
    /// An outbound connection zring opened (a Mongrel2 `Proxy` backend).
    Outbound = 3,
}

/// Where a connection is in its life, for `connmgr_connections{state}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// TLS handshake not finished.
    TlsHandshake = 0,
    /// Open and waiting for a request that has not begun (`Conn::is_idle`).
    Idle = 1,
    /// A request, WebSocket, Mongrel2 connection or outbound connection under way.
    Active = 2,
    /// The last response is queued or written; flushing, lingering, or waiting for the
    /// runtime to finish the close.
    Closing = 3,
}

const PROTOCOLS: usize = 4;
const STATES: usize = 4;
/// Connection classes: protocol × TLS or not × state.
pub const CONN_CLASSES: usize = PROTOCOLS * 2 * STATES;
const PROTOCOL_NAMES: [&str; PROTOCOLS] = ["http", "ws", "mongrel2", "outbound"];
const STATE_NAMES: [&str; STATES] = ["tls_handshake", "idle", "active", "closing"];

/// A connection's protocol, TLS and state in one small index (`WorkerStats::connections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnClass(u8);

impl ConnClass {
    pub fn new(protocol: Protocol, tls: bool, state: ConnState) -> ConnClass {
        let i = ((protocol as usize * 2 + tls as usize) * STATES) + state as usize;
        debug_assert!(i < CONN_CLASSES);
        ConnClass(i as u8)
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub fn is_closing(self) -> bool {
        self.index() % STATES == ConnState::Closing as usize
    }

    /// (protocol, tls, state) label values.
    fn labels(index: usize) -> (&'static str, &'static str, &'static str) {
        let state = index % STATES;
        let tls = (index / STATES) % 2;
        let protocol = index / STATES / 2;
        (
            PROTOCOL_NAMES[protocol],
            ["false", "true"][tls],
            STATE_NAMES[state],
        )
    }
}

/// Why a connection ended: which input moved it out of `Open` (`Worker::with_conn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its side, the socket failed, or the client closed a WebSocket.
    Client = 0,
    /// The client broke the protocol (a 4xx/5xx zring wrote, a WebSocket 1002/1007/1009,
    /// a TLS alert): see `connmgr_protocol_errors_total`.
    ProtocolError = 1,
    /// The handler ended it: its response said close, it closed or cancelled the session,
    /// it broke the rules, or it went away.
    Handler = 2,
    /// A response finished writing and the connection was not kept alive.
    Complete = 3,
    /// A deadline: client inactivity, head, keep-alive, body rate, handler wait (503),
    /// session expiry, TLS handshake.
    Timeout = 4,
    /// Closed while idle to make room at the connection limit.
    Evicted = 5,
    /// Answered 503 at the connection limit.
    Overload = 6,
    /// zring is shutting down.
    Shutdown = 7,
    /// A Mongrel2 proxy backend's event ended the client connection.
    Backend = 8,
}

const CLOSE_REASONS: usize = 9;
const CLOSE_REASON_NAMES: [&str; CLOSE_REASONS] = [
    "client",
    "protocol_error",
    "handler",
    "complete",
    "timeout",
    "evicted",
    "overload",
    "shutdown",
    "backend",
];

impl CloseReason {
    /// From its index (`Worker`'s per-slot table stores the index).
    pub fn from_index(i: u8) -> CloseReason {
        use CloseReason::*;
        [
            Client,
            ProtocolError,
            Handler,
            Complete,
            Timeout,
            Evicted,
            Overload,
            Shutdown,
            Backend,
        ][i as usize]
    }
}

/// A protocol error zring answered, by what it answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Http400 = 0,
    Http408 = 1,
    Http413 = 2,
    Http414 = 3,
    Http431 = 4,
    Http501 = 5,
    Http505 = 6,
    Ws1002 = 7,
    Ws1007 = 8,
    Ws1009 = 9,
    Ws1011 = 10,
    /// zring sent a fatal TLS alert (or closed a TLS connection that broke the protocol).
    TlsAlert = 11,
    /// The client sent a fatal TLS alert.
    TlsPeerAlert = 12,
}

const ERROR_KINDS: usize = 13;
const ERROR_KIND_NAMES: [&str; ERROR_KINDS] = [
    "400",
    "408",
    "413",
    "414",
    "431",
    "501",
    "505",
    "1002",
    "1007",
    "1009",
    "1011",
    "tls_alert",
    "tls_peer_alert",
];

impl ErrorKind {
    /// The kind of an HTTP status zring wrote because of the client's request, if it is
    /// one (a 502 or 503 is about handlers, not the client).
    pub fn from_status(code: u16) -> Option<ErrorKind> {
        Some(match code {
            400 => ErrorKind::Http400,
            408 => ErrorKind::Http408,
            413 => ErrorKind::Http413,
            414 => ErrorKind::Http414,
            431 => ErrorKind::Http431,
            501 => ErrorKind::Http501,
            505 => ErrorKind::Http505,
            _ => return None,
        })
    }

    /// The kind of a WebSocket close code zring failed a connection with, if it is one.
    pub fn from_close_code(code: u16) -> Option<ErrorKind> {
        Some(match code {
            1002 => ErrorKind::Ws1002,
            1007 => ErrorKind::Ws1007,
            1009 => ErrorKind::Ws1009,
            1011 => ErrorKind::Ws1011,
            _ => return None,
        })
    }
}

/// Which peer bytes were exchanged with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Client = 0,
    /// A Mongrel2 `Proxy` backend.
    Backend = 1,
}

/// What a fan-out target got (a handler packet naming more than one id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutOutcome {
    /// The shared frame, sent as is (no copy).
    Shared = 0,
    /// Handled as its own packet: copied behind what the connection had queued.
    Queued = 1,
    /// Not delivered: the id's session has ended.
    Dropped = 2,
}

const FANOUT_NAMES: [&str; 3] = ["shared", "queued", "dropped"];
const ZHTTP_KINDS: usize = crate::proto::zhttp::Kind::ALL.len();

/// One worker's counters. Written by that worker's thread only.
#[repr(align(128))]
#[derive(Default)]
pub struct WorkerStats {
    /// Open connections by `ConnClass` (gauges, moved on transitions).
    pub connections: [Gauge; CONN_CLASSES],
    /// Accepted connections by listener mode (0 stream, 1 req).
    pub accepted: [Counter; 2],
    /// Closed connections by `CloseReason`.
    pub closed: [Counter; CLOSE_REASONS],
    /// Bytes read and written, by `Peer` (TLS connections: the encrypted bytes).
    pub received_bytes: [Counter; 2],
    pub sent_bytes: [Counter; 2],
    /// Request heads read (ZHTTP and Mongrel2).
    pub requests: Counter,
    /// Access log lines dropped because the writer thread was behind (`access_log`).
    pub access_log_dropped: Counter,
    /// Response heads written (the handler's, and zring's own errors), by status class
    /// (index 0 for 1xx … 4 for 5xx).
    pub responses: [Counter; 5],
    /// Protocol errors by `ErrorKind`, and their sum (the worker reads it around each input
    /// to tell a close caused by one).
    pub protocol_errors: [Counter; ERROR_KINDS],
    pub protocol_errors_sum: Counter,
    /// Requests no handler took within `--handler-wait` (each answered 503).
    pub handler_wait_expired: Counter,
    /// ZHTTP packets the worker produced for handlers, by `zhttp::Kind`.
    pub zhttp_out: [Counter; ZHTTP_KINDS],
    /// Fan-out targets by `FanoutOutcome`.
    pub fanout: [Counter; 3],
    /// Handler packets taken from the bridge and dispatched in full (with the inbox's
    /// `pushed`, the inbox depth).
    pub inbox_dispatched: Counter,
    /// io_uring: SQEs queued, CQEs reaped, and reaps that found completions in the
    /// kernel's overflow list (all the worker's rings; mirrored once per runtime turn).
    pub uring_submitted: Counter,
    pub uring_completed: Counter,
    pub uring_cq_overflows: Counter,
    /// Client mode: outbound connects started, exchanges that took a pooled connection,
    /// and stale pooled connections whose request went again on a fresh one.
    pub out_connects: Counter,
    pub out_reused: Counter,
    pub out_stale_retries: Counter,
}

impl WorkerStats {
    /// A response head with status `code` was queued for a client.
    pub fn response(&self, code: u16) {
        let class = (code / 100).clamp(1, 5) as usize - 1;
        self.responses[class].inc();
    }

    pub fn protocol_error(&self, kind: ErrorKind) {
        self.protocol_errors[kind as usize].inc();
        self.protocol_errors_sum.inc();
    }

    pub fn zhttp_out(&self, kind: crate::proto::zhttp::Kind) {
        self.zhttp_out[kind as usize].inc();
    }
}

/// ZeroMQ sockets the bridge counts stalls of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZmqSocket {
    Push = 0,
    Router = 1,
    Dealer = 2,
}

const ZMQ_SOCKET_NAMES: [&str; 3] = ["push", "router", "dealer"];

/// The bridge's counters. Written by the bridge thread only.
#[repr(align(128))]
#[derive(Default)]
pub struct BridgeStats {
    /// Handler packets read and decoded, by `zhttp::Kind`.
    pub zhttp_in: [Counter; ZHTTP_KINDS],
    /// Handler packets dropped undecoded (bad tnetstring, no address prefix).
    pub zhttp_invalid: Counter,
    /// First packets dropped because no handler took them before the request's handler
    /// wait ended (the client got or gets a 503).
    pub requests_expired: Counter,
    /// Sends a ZeroMQ socket refused with EAGAIN (its high-water mark reached, or no
    /// handler connected to PUSH/DEALER): the packet was held and retried.
    pub hwm_stalls: [Counter; 3],
    /// Packets held because a socket could not take them yet.
    pub held: Gauge,
    /// Handlers connected to the stream ROUTER now (`ZMQ_ROUTER_NOTIFY`).
    pub handlers_connected: Gauge,
    /// False when libzmq cannot report handler connections (no DRAFT API), or in a mode
    /// without stream sockets: `handlers_connected` then means nothing.
    pub handlers_known: AtomicBool,
}

/// Every counter of the process: one `WorkerStats` per worker and the bridge's.
pub struct Metrics {
    pub workers: Box<[WorkerStats]>,
    pub bridge: BridgeStats,
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            bridge: BridgeStats::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_label_combination_once() {
        let mut seen = std::collections::HashSet::new();
        for p in [
            Protocol::Http,
            Protocol::Ws,
            Protocol::Mongrel2,
            Protocol::Outbound,
        ] {
            for tls in [false, true] {
                for s in [
                    ConnState::TlsHandshake,
                    ConnState::Idle,
                    ConnState::Active,
                    ConnState::Closing,
                ] {
                    let c = ConnClass::new(p, tls, s);
                    assert!(c.index() < CONN_CLASSES);
                    assert!(seen.insert(c.index()));
                    let (pn, tn, sn) = ConnClass::labels(c.index());
                    assert_eq!(pn, PROTOCOL_NAMES[p as usize]);
                    assert_eq!(tn == "true", tls);
                    assert_eq!(sn, STATE_NAMES[s as usize]);
                }
            }
        }
        assert_eq!(seen.len(), CONN_CLASSES);
    }

    #[test]
    fn counters_and_status_classes() {
        let w = WorkerStats::default();
        w.response(101);
        w.response(200);
        w.response(204);
        w.response(503);
        assert_eq!(
            w.responses.iter().map(Counter::get).collect::<Vec<_>>(),
            [1, 2, 0, 0, 1]
        );
        w.protocol_error(ErrorKind::Ws1002);
        assert_eq!(w.protocol_errors_sum.get(), 1);
        assert_eq!(ErrorKind::from_status(502), None);
        assert_eq!(ErrorKind::from_close_code(1000), None);
        for (i, r) in CLOSE_REASON_NAMES.iter().enumerate() {
            assert_eq!(CloseReason::from_index(i as u8) as usize, i, "{r}");
        }
        assert_eq!(std::mem::align_of::<WorkerStats>(), 128);
        for (i, k) in crate::proto::zhttp::Kind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "zhttp_in/zhttp_out index by discriminant");
        }
    }
}
