//! The in-process harness: one real [`Worker`] driven through the runtime [`Driver`] trait
//! by a fake runtime, on simulated time, in the manner of quinn-proto's test `Pair`.
//!
//! - Clients are byte pipes. [`Harness::write`] queues bytes from a client, delivered to
//!   `handle_recv` in pieces of at most [`RECV_PIECE_BYTES`] (one piece per client per
//!   turn, so `PauseRecv` takes effect between pieces); [`Harness::read`] takes what the
//!   worker's `Send`s wrote. A TLS client ([`Harness::connect_tls`]) is a rustls client in
//!   memory: tests still read and write plaintext.
//! - The handler is scripted in ZHTTP. Packets the worker hands to the bridge are taken from
//!   the real `bridge::Shared` outbox and decoded with the real tnetstring codec
//!   ([`ToHandler`]); packets to the worker are encoded ([`Reply`]), decoded by
//!   `zhttp::decode` as the bridge does, and queued in the worker's real inbox.
//! - Time is `base + elapsed`, and `elapsed` moves only in [`Harness::advance`], which
//!   stops at every deadline the worker asked for on the way, as a runtime would wake.
//! - Every loop is bounded: [`Harness::drive_bounded`] panics when the worker does not
//!   settle within its step count; [`Harness::advance`] within one step per wheel tick.
//!
//! The fake runtime asserts the contract of `src/runtime/mod.rs` on every command (one send
//! in flight per slot, no send or shutdown after `Close`, shutdown only with nothing in
//! flight, pause and resume alternate) and calls `handle_closed` only in the turn after
//! `Close`, as the kernel completes it.
//!
//! Tests speak only bytes and packets, never `Conn` internals, so they hold across a
//! rewrite of `conn/`.
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::bridge::{InPacket, OutPacket, Route, Shared};
use crate::config::{Config, Mode};
use crate::conn::ConnId;
use crate::proto::tnetstring::{self, Value, Writer};
use crate::proto::zhttp;
use crate::runtime::{Command, Driver};
use crate::worker::{ListenerInfo, Worker};

/// Listener 0: stream mode, plain TCP.
pub const STREAM: usize = 0;
/// Listener 1: req mode, plain TCP.
pub const REQ: usize = 1;
/// Listener 2: stream mode, TLS (certificate for `localhost`).
pub const TLS: usize = 2;

/// The instance id (`--id`): the `from` of every packet zring sends.
pub const INSTANCE: &str = "zring-test";
/// The scripted handler's address: the `from` of its packets, the route of later ones.
pub const HANDLER: &str = "handler";

/// Largest piece of client bytes per `handle_recv`: the runtimes' receive buffers are 4 KiB.
pub const RECV_PIECE_BYTES: usize = 4096;
/// Steps [`Harness::drive`] allows before it calls the worker unsettled.
pub const DRIVE_STEPS_MAX: usize = 200;
/// The worker's timer wheel tick: no deadline fires more often than this.
const WHEEL_TICK: Duration = Duration::from_millis(10);
/// How late after a deadline the clock is read. Never 0: a wheel bucket holding an entry a
/// rotation ahead reports its own start as the next deadline, and at exactly that
/// microsecond `handle_timeout` cannot move past it (a real clock is past it within 1 µs).
const WAKE_LATENESS: Duration = Duration::from_micros(1);

/// One client, named by the order it connected (slots are reused; clients are not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client(usize);

/// What the fake runtime did on a client's socket besides moving bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    PauseRecv,
    ResumeRecv,
    ShutdownWrite,
    /// `Close` while a send was still in flight (the abort the contract allows).
    CloseAborting,
    Close,
}

/// A send in flight: the bytes, and whether it was a `SendShared`.
struct InFlight {
    bytes: Vec<u8>,
    shared: bool,
}

struct Socket {
    /// `None` once `handle_closed` was delivered (the slot may belong to another now).
    slot: Option<u32>,
    /// Client bytes not yet delivered (ciphertext for TLS), in pieces.
    input: VecDeque<Vec<u8>>,
    /// The client shut its side; `handle_eof` follows the last piece.
    eof_queued: bool,
    eof_delivered: bool,
    /// What the client received and the test did not read yet (plaintext for TLS).
    received: Vec<u8>,
    in_flight: Option<InFlight>,
    /// Sends stay in flight (a slow client) until the test releases them.
    stalled: bool,
    paused: bool,
    shutdown: bool,
    close_issued: bool,
    ios: Vec<Io>,
    /// Sends completed, and how many of them were `SendShared`.
    sends: usize,
    shared_sends: usize,
    tls: Option<ClientConnection>,
    /// Client mode: an origin socket whose connect the test has not settled yet.
    connecting: bool,
}

/// A packet zring handed to the bridge, decoded.
#[derive(Clone, Debug)]
pub struct ToHandler {
    pub route: Route,
    /// `(id, seq)`, one entry unless the packet is list-form.
    pub ids: Vec<(String, Option<u32>)>,
    pub from: String,
    /// `type`, empty for a data packet.
    pub kind: String,
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub more: bool,
    pub stream: bool,
    pub credits: Option<i64>,
    pub code: Option<i64>,
    pub content_type: Option<String>,
    pub peer: Option<(String, i64)>,
    /// Client mode's replies: `reason`, `condition` of an error, and whether `user-data`
    /// was echoed.
    pub reason: String,
    pub condition: Option<String>,
    pub user_data: bool,
    /// The packet as encoded (lossy UTF-8), for byte-level checks.
    pub raw: String,
}

impl ToHandler {
    /// The id of a packet for one session.
    pub fn id(&self) -> &str {
        assert_eq!(self.ids.len(), 1, "one id: {self:?}");
        &self.ids[0].0
    }

    /// The `seq` of a packet for one session.
    pub fn seq(&self) -> u32 {
        assert_eq!(self.ids.len(), 1, "one id: {self:?}");
        self.ids[0].1.expect("a seq")
    }

    /// The handler's side of the session this (first) packet opens.
    pub fn session(&self) -> Session {
        Session {
            id: self.id().to_owned(),
            seq: 0,
        }
    }

    /// The value of header `name` (case-insensitive), if present once or more.
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    fn decode(p: &OutPacket) -> ToHandler {
        assert_eq!(p.data.first(), Some(&b'T'), "a ZHTTP packet starts with T");
        let (value, used) = tnetstring::parse(&p.data[1..]).expect("well-formed tnetstring");
        assert_eq!(used, p.data.len() - 1, "nothing after the packet");
        let dict = value.as_dict().expect("a dict");
        // Lossy: a client's method, path or header name may carry bytes past ASCII, which
        // zring forwards as they came.
        let text = |v: Value| String::from_utf8_lossy(v.as_bytes().expect("bytes")).into_owned();
        let mut out = ToHandler {
            route: p.route.clone(),
            ids: Vec::new(),
            from: String::new(),
            kind: String::new(),
            method: String::new(),
            uri: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            more: false,
            stream: false,
            credits: None,
            code: None,
            content_type: None,
            peer: None,
            reason: String::new(),
            condition: None,
            user_data: false,
            raw: String::from_utf8_lossy(&p.data).into_owned(),
        };
        let mut seq = None;
        let mut peer_address = None;
        for (key, v) in dict.iter() {
            match key {
                b"from" => out.from = text(v),
                b"id" => match v {
                    Value::Bytes(_) => out.ids.push((text(v), None)),
                    Value::List(list) => {
                        for item in list.iter() {
                            let d = item.as_dict().expect("an id dict");
                            let seq = d.get(b"seq").and_then(|s| s.as_int()).map(|s| s as u32);
                            out.ids.push((text(d.get(b"id").expect("id")), seq));
                        }
                    }
                    _ => panic!("bad id {v:?}"),
                },
                b"seq" => seq = v.as_int().map(|s| s as u32),
                b"type" => out.kind = text(v),
                b"method" => out.method = text(v),
                b"uri" => out.uri = text(v),
                b"headers" => {
                    for h in v.as_list().expect("a header list").iter() {
                        let mut pair = h.as_list().expect("a header pair").iter();
                        let name = text(pair.next().expect("name"));
                        let value =
                            String::from_utf8_lossy(pair.next().unwrap().as_bytes().unwrap());
                        out.headers.push((name, value.into_owned()));
                    }
                }
                b"body" => out.body = v.as_bytes().expect("bytes").to_vec(),
                b"more" => out.more = v.as_bool().expect("bool"),
                b"stream" => out.stream = v.as_bool().expect("bool"),
                b"credits" => out.credits = v.as_int(),
                b"code" => out.code = v.as_int(),
                b"content-type" => out.content_type = Some(text(v)),
                b"peer-address" => peer_address = Some(text(v)),
                b"peer-port" => out.peer = peer_address.take().zip(v.as_int()),
                b"ext" => {}
                b"reason" => out.reason = text(v),
                b"condition" => out.condition = Some(text(v)),
                b"user-data" => out.user_data = true,
                _ => panic!("unexpected key {:?}", String::from_utf8_lossy(key)),
            }
        }
        if let (Some(s), [(_, slot)]) = (seq, &mut out.ids[..]) {
            *slot = Some(s);
        }
        out
    }
}

/// The handler's side of one session: its id and the `seq` of its next packet.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub seq: u32,
}

impl Session {
    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq += 1;
        s
    }
}

/// A field of a handler packet.
#[derive(Clone, Debug)]
enum Field {
    Bytes(Vec<u8>),
    Int(i64),
    Bool(bool),
    Headers(Vec<(String, String)>),
}

/// A handler packet's fields after `from`, `id` and `seq`, in the order they are added.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// `from`; `None`: [`HANDLER`]. Req mode sends none (see [`Harness::reply_req`]).
    from: Option<String>,
    fields: Vec<(&'static str, Field)>,
}

impl Reply {
    /// A response head: `code`, `reason` (add `header`, `body`, `more`, `credits`).
    pub fn response(code: i64, reason: &str) -> Reply {
        Reply::default()
            .int("code", code)
            .bytes("reason", reason.as_bytes())
    }

    /// A data packet carrying `body` (response body, or a WebSocket message).
    pub fn data(body: &[u8]) -> Reply {
        Reply::default().bytes("body", body)
    }

    /// A packet of `type` `kind` (`keep-alive`, `cancel`, `close`, `handoff-start` …).
    pub fn kind(kind: &str) -> Reply {
        Reply::default().bytes("type", kind.as_bytes())
    }

    /// `type: credit` granting `n`.
    pub fn credit(n: i64) -> Reply {
        Reply::kind("credit").int("credits", n)
    }

    /// Sent by another handler (`from`), as after a handoff.
    pub fn sent_by(mut self, from: &str) -> Reply {
        self.from = Some(from.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        let pair = (name.to_owned(), value.to_owned());
        match self.fields.iter_mut().find(|(k, _)| *k == "headers") {
            Some((_, Field::Headers(h))) => h.push(pair),
            _ => self.fields.push(("headers", Field::Headers(vec![pair]))),
        }
        self
    }

    pub fn body(self, body: &[u8]) -> Reply {
        self.bytes("body", body)
    }

    pub fn more(self) -> Reply {
        self.flag("more", true)
    }

    pub fn credits(self, n: i64) -> Reply {
        self.int("credits", n)
    }

    pub fn bytes(mut self, key: &'static str, v: &[u8]) -> Reply {
        self.fields.push((key, Field::Bytes(v.to_vec())));
        self
    }

    pub fn int(mut self, key: &'static str, v: i64) -> Reply {
        self.fields.push((key, Field::Int(v)));
        self
    }

    pub fn flag(mut self, key: &'static str, v: bool) -> Reply {
        self.fields.push((key, Field::Bool(v)));
        self
    }

    /// `"<instance> T{from, id(s), seq, fields…}"`: a SUB message as the bridge reads it.
    fn encode(&self, ids: &[(&str, u32)]) -> Vec<u8> {
        let mut out = format!("{INSTANCE} ").into_bytes();
        let from = self.from.as_deref().unwrap_or(HANDLER);
        let ids: Vec<(&str, Option<u32>)> = ids.iter().map(|(i, s)| (*i, Some(*s))).collect();
        self.encode_into(&mut out, Some(from), &ids);
        out
    }

    /// The packet itself, `T{from, id(s), seq, fields…}`, for tests that decode it alone.
    pub fn packet(&self, ids: &[(&str, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        let from = self.from.as_deref().unwrap_or(HANDLER);
        let ids: Vec<(&str, Option<u32>)> = ids.iter().map(|(i, s)| (*i, Some(*s))).collect();
        self.encode_into(&mut out, Some(from), &ids);
        out
    }

    /// `T{[from,] id(s)[, seq], fields…}`.
    fn encode_into(&self, out: &mut Vec<u8>, from: Option<&str>, ids: &[(&str, Option<u32>)]) {
        out.push(b'T');
        let mut w = Writer::new(out);
        w.begin_dict();
        if let Some(from) = from {
            w.bytes(b"from");
            w.bytes(from.as_bytes());
        }
        w.bytes(b"id");
        if let [(id, seq)] = ids {
            w.bytes(id.as_bytes());
            if let Some(seq) = seq {
                w.bytes(b"seq");
                w.int(i64::from(*seq));
            }
        } else {
            w.begin_list();
            for (id, seq) in ids {
                w.begin_dict();
                w.bytes(b"id");
                w.bytes(id.as_bytes());
                w.bytes(b"seq");
                w.int(i64::from(seq.expect("list-form ids carry a seq")));
                w.end_dict();
            }
            w.end_list();
        }
        for (key, field) in &self.fields {
            w.bytes(key.as_bytes());
            match field {
                Field::Bytes(b) => w.bytes(b),
                Field::Int(i) => w.int(*i),
                Field::Bool(b) => w.bool(*b),
                Field::Headers(hs) => {
                    w.begin_list();
                    for (n, v) in hs {
                        w.begin_list();
                        w.bytes(n.as_bytes());
                        w.bytes(v.as_bytes());
                        w.end_list();
                    }
                    w.end_list();
                }
            }
        }
        w.end_dict();
        w.finish();
    }
}

/// A listener's TLS configuration as production builds it (`tls::config`'s provider,
/// versions and ALPN), with one self-signed certificate for `localhost` instead of an
/// identities directory; and a client configuration that trusts it.
///
/// Made once per process: key generation costs milliseconds, too much per fuzz input.
fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<rustls::ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS
        .get_or_init(|| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            let der: CertificateDer<'static> = cert.der().clone();
            let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let mut server =
                rustls::ServerConfig::builder_with_provider(crate::tls::config::provider())
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(vec![der.clone()], key_der)
                    .unwrap();
            server.alpn_protocols = vec![crate::tls::config::ALPN_HTTP11.to_vec()];
            let mut roots = RootCertStore::empty();
            roots.add(der).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut client = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            client.alpn_protocols = vec![crate::tls::config::ALPN_HTTP11.to_vec()];
            (Arc::new(server), Arc::new(client))
        })
        .clone()
}

/// The configuration every harness starts from: one worker, 450 slots counting the reserve
/// (`limits::OVERLOAD_SLOTS`), so the keep-alive sweep visits each slot every 45 s, as in
/// production; no pinning.
pub fn config() -> Config {
    Config {
        id: INSTANCE.to_owned(),
        workers: 1,
        stream_maxconn: 440 - crate::limits::OVERLOAD_SLOTS,
        req_maxconn: 10,
        pin: false,
        ..Config::default()
    }
}

pub struct Harness {
    worker: Worker,
    shared: Arc<Shared>,
    base: Instant,
    elapsed: Duration,
    sockets: Vec<Socket>,
    to_handler: VecDeque<ToHandler>,
    /// Reused outbox batch.
    batch: Vec<OutPacket>,
    /// Mongrel2 mode: messages zring sent to handlers, as (handler index, bytes).
    to_m2: VecDeque<(u16, Vec<u8>)>,
    /// What a TLS client of this harness trusts (the `TLS` listener's certificate).
    client_tls: Arc<ClientConfig>,
    /// Client mode: origin sockets the worker asked to connect, oldest first, with the
    /// address it asked for.
    connects: VecDeque<(usize, SocketAddr)>,
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(config())
    }

    /// A worker on `cfg` (keep `workers: 1` and `id: INSTANCE`), listeners `STREAM`,
    /// `REQ`, `TLS`.
    pub fn with_config(cfg: Config) -> Harness {
        assert_eq!(cfg.workers, 1, "the harness runs worker 0 alone");
        assert_eq!(cfg.id, INSTANCE);
        let shared = Shared::new(1).expect("eventfds");
        let base = Instant::now();
        let (server_tls, client_tls) = tls_configs();
        let listeners = vec![
            ListenerInfo {
                mode: Mode::Stream,
                tls: None,
            },
            ListenerInfo {
                mode: Mode::Req,
                tls: None,
            },
            ListenerInfo {
                mode: Mode::Stream,
                tls: Some(server_tls),
            },
        ];
        let worker = Worker::new(0, &cfg, None, listeners, shared.clone(), base);
        Harness::around(worker, shared, base, client_tls)
    }

    /// A worker in Mongrel2 mode serving the config text `conf` (m2sh syntax), one plain
    /// listener per server, in the config's order.
    pub fn with_m2(conf: &str) -> Harness {
        let dir = std::env::temp_dir().join(format!(
            "zring-harness-m2-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m2.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cfg = Config {
            m2_config: Some(path),
            ..config()
        };
        let prepared = crate::m2serve::prepare(&mut cfg)
            .expect("the config loads")
            .expect("Mongrel2 mode");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cfg.workers, 1, "the harness runs worker 0 alone");
        let shared = Shared::new(1).expect("eventfds");
        let base = Instant::now();
        let listeners = cfg
            .listen
            .iter()
            .map(|l| ListenerInfo {
                mode: l.mode,
                tls: None,
            })
            .collect();
        let worker = Worker::new(
            0,
            &cfg,
            Some(prepared.setup),
            listeners,
            shared.clone(),
            base,
        );
        Harness::around(worker, shared, base, tls_configs().1)
    }

    fn around(
        worker: Worker,
        shared: Arc<Shared>,
        base: Instant,
        client_tls: Arc<ClientConfig>,
    ) -> Harness {
        Harness {
            worker,
            shared,
            base,
            elapsed: Duration::ZERO,
            sockets: Vec::new(),
            to_handler: VecDeque::new(),
            batch: Vec::new(),
            to_m2: VecDeque::new(),
            client_tls,
            connects: VecDeque::new(),
        }
    }

    /// Simulated now.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The worker's fan-out targets so far by outcome: (shared, queued, dropped).
    pub fn fanout_outcomes(&self) -> (u64, u64, u64) {
        let f = &self.shared.metrics.workers[0].fanout;
        (f[0].get(), f[1].get(), f[2].get())
    }

    /// The worker's buffer-pool counters, and its small buffers free now (count, bytes).
    pub fn pool_counters(&self) -> (crate::conn::PoolCounters, (usize, usize)) {
        self.worker.pool_counters()
    }

    /// The worker's open connections (slots it has not had `handle_closed` for).
    pub fn conn_count(&self) -> usize {
        self.worker.conn_count()
    }

    /// The worker's next deadline, as time since the start (`None`: no timer at all).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.worker.poll_timeout().map(|t| t - self.base)
    }

    /// True once the worker reports it is done (shut down, nothing left open).
    pub fn finished(&self) -> bool {
        self.worker.finished()
    }

    /// zring exits (SIGTERM): the shutdown flag and a wake-up, as `main` does; then drives.
    pub fn shutdown(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.inboxes[0].wake();
        self.drive();
    }

    /// Whether the worker would accept a connection now (`Driver::accepting`).
    pub fn accepting(&self) -> bool {
        self.worker.accepting()
    }

    /// zring drains (the first SIGTERM): the drain flag and a wake-up, as `main` does; then
    /// drives.
    pub fn drain(&mut self) {
        self.shared.drain.store(true, Ordering::SeqCst);
        self.shared.inboxes[0].wake();
        self.drive();
    }

    /// Clients connected so far (closed ones included).
    pub fn clients(&self) -> usize {
        self.sockets.len()
    }

    /// For the client's connection while the worker holds it: what zring holds received
    /// and not consumed, and what it holds for the client (its `out` plus the send in
    /// flight, ciphertext for TLS). `None` once the slot was released.
    pub fn zring_buffered(&self, c: Client) -> Option<(usize, usize)> {
        let s = &self.sockets[c.0];
        let (input, out) = self.worker.conn_buffered(s.slot?)?;
        let in_flight = s.in_flight.as_ref().map_or(0, |f| f.bytes.len());
        Some((input, out + in_flight))
    }

    /// The client shut down its writing side already.
    pub fn client_done_writing(&self, c: Client) -> bool {
        self.sockets[c.0].eof_queued
    }

    // ---- clients ----

    /// A client connects to `listener`; the worker must take it. On [`TLS`] it speaks TLS.
    pub fn connect_to(&mut self, listener: usize) -> Client {
        self.connect_with(listener, listener == TLS)
    }

    /// A client that speaks raw bytes to `listener`, even on [`TLS`].
    pub fn connect_raw(&mut self, listener: usize) -> Client {
        self.connect_with(listener, false)
    }

    fn connect_with(&mut self, listener: usize, speaks_tls: bool) -> Client {
        let n = self.sockets.len();
        let peer: SocketAddr = format!("127.0.0.1:{}", 40_000 + n).parse().unwrap();
        let now = self.now();
        let slot = self
            .worker
            .handle_accept(now, listener, Some(peer))
            .expect("the worker takes the connection");
        assert!(
            self.sockets.iter().all(|s| s.slot != Some(slot)),
            "slot {slot} handed out while still in use"
        );
        let tls = speaks_tls.then(|| {
            let name = ServerName::try_from("localhost").unwrap();
            ClientConnection::new(self.client_tls.clone(), name).unwrap()
        });
        self.sockets.push(Socket {
            slot: Some(slot),
            input: VecDeque::new(),
            eof_queued: false,
            eof_delivered: false,
            received: Vec::new(),
            in_flight: None,
            stalled: false,
            paused: false,
            shutdown: false,
            close_issued: false,
            ios: Vec::new(),
            sends: 0,
            shared_sends: 0,
            tls,
            connecting: false,
        });
        let c = Client(n);
        self.flush_tls(c); // a TLS client speaks first (ClientHello)
        self.drive();
        c
    }

    /// A client on the plain stream-mode listener.
    pub fn connect(&mut self) -> Client {
        self.connect_to(STREAM)
    }

    /// A TLS client (SNI `localhost`); the handshake runs with the next drive.
    pub fn connect_tls(&mut self) -> Client {
        self.connect_to(TLS)
    }

    /// The client writes `bytes` (plaintext; encrypted first for a TLS client), then the
    /// worker runs until it settles.
    pub fn write(&mut self, c: Client, bytes: &[u8]) {
        self.write_nodrive(c, bytes);
        self.drive();
    }

    /// As `write`, without driving: several writes can then arrive in one batch.
    pub fn write_nodrive(&mut self, c: Client, bytes: &[u8]) {
        let s = &mut self.sockets[c.0];
        assert!(!s.eof_queued, "write after the client's shutdown");
        match s.tls.as_mut() {
            Some(tls) => {
                tls.writer().write_all(bytes).unwrap();
                self.flush_tls(c);
            }
            None => queue_pieces(&mut s.input, bytes),
        }
    }

    /// The client shuts down its writing side (EOF to the worker after its last bytes).
    pub fn client_shutdown(&mut self, c: Client) {
        self.sockets[c.0].eof_queued = true;
        self.drive();
    }

    /// Takes what the client received since the last read (plaintext for TLS).
    pub fn read(&mut self, c: Client) -> Vec<u8> {
        std::mem::take(&mut self.sockets[c.0].received)
    }

    /// As `read`, as text.
    pub fn read_text(&mut self, c: Client) -> String {
        String::from_utf8(self.read(c)).expect("UTF-8 from zring")
    }

    /// A slow client: while stalled, sends stay in flight (the kernel's buffer is full).
    pub fn stall(&mut self, c: Client, stalled: bool) {
        self.sockets[c.0].stalled = stalled;
        if !stalled {
            self.drive();
        }
    }

    /// The worker issued `Close` and the runtime delivered `handle_closed`.
    pub fn is_closed(&self, c: Client) -> bool {
        self.sockets[c.0].slot.is_none()
    }

    /// The worker issued `ShutdownWrite`.
    pub fn is_shut_down(&self, c: Client) -> bool {
        self.sockets[c.0].shutdown
    }

    /// Every non-byte I/O command for the client, in order.
    pub fn ios(&self, c: Client) -> &[Io] {
        &self.sockets[c.0].ios
    }

    /// Sends completed for the client, and how many were `SendShared`.
    pub fn sends(&self, c: Client) -> (usize, usize) {
        let s = &self.sockets[c.0];
        (s.sends, s.shared_sends)
    }

    /// True while the worker has reading paused for the client.
    pub fn is_paused(&self, c: Client) -> bool {
        self.sockets[c.0].paused
    }

    /// Client bytes not delivered yet (held in the "kernel" while reading is paused).
    pub fn undelivered(&self, c: Client) -> usize {
        self.sockets[c.0].input.iter().map(Vec::len).sum()
    }

    /// The TLS client's handshake is done.
    pub fn tls_established(&self, c: Client) -> bool {
        let tls = self.sockets[c.0].tls.as_ref().expect("a TLS client");
        !tls.is_handshaking()
    }

    /// Moves what the rustls client wants to send into the socket's input.
    fn flush_tls(&mut self, c: Client) {
        let s = &mut self.sockets[c.0];
        let Some(tls) = s.tls.as_mut() else { return };
        let mut wire = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut wire).unwrap();
        }
        queue_pieces(&mut s.input, &wire);
    }

    // ---- handler ----

    /// Takes the next packet zring sent to the handlers; panics if there is none.
    pub fn packet(&mut self) -> ToHandler {
        self.to_handler
            .pop_front()
            .expect("a packet from zring to the handler")
    }

    /// Takes every packet zring sent to the handlers.
    pub fn packets(&mut self) -> Vec<ToHandler> {
        self.to_handler.drain(..).collect()
    }

    /// Asserts zring sent the handler nothing (since the last take).
    pub fn assert_no_packet(&self) {
        assert!(
            self.to_handler.is_empty(),
            "unexpected packets: {:?}",
            self.to_handler
        );
    }

    /// Takes the next packet, which must be a new request (PUSH, seq 0), and returns it
    /// with the handler's side of its session.
    pub fn request(&mut self) -> (ToHandler, Session) {
        let p = self.packet();
        assert!(matches!(p.route, Route::Push), "a first packet: {p:?}");
        assert_eq!(p.seq(), 0);
        let s = p.session();
        (p, s)
    }

    /// The handler sends `reply` for `session` (its next `seq`); the worker then runs.
    pub fn reply(&mut self, session: &mut Session, reply: Reply) {
        let seq = session.next_seq();
        self.deliver(&reply.encode(&[(&session.id, seq)]));
        self.drive();
    }

    /// The handler sends one list-form packet for all `sessions` (each its next `seq`).
    pub fn reply_many(&mut self, sessions: &mut [&mut Session], reply: Reply) {
        self.reply_many_nodrive(sessions, reply);
        self.drive();
    }

    /// As `reply_many`, without driving: several packets then reach the worker in one
    /// turn.
    pub fn reply_many_nodrive(&mut self, sessions: &mut [&mut Session], reply: Reply) {
        let ids: Vec<(String, u32)> = sessions
            .iter_mut()
            .map(|s| (s.id.clone(), s.next_seq()))
            .collect();
        let refs: Vec<(&str, u32)> = ids.iter().map(|(i, s)| (i.as_str(), *s)).collect();
        self.deliver(&reply.encode(&refs));
    }

    /// The handler sends `reply` with an explicit `seq` (to break the sequence).
    pub fn reply_with_seq(&mut self, id: &str, seq: u32, reply: Reply) {
        self.deliver(&reply.encode(&[(id, seq)]));
        self.drive();
    }

    /// The bridge announces that handler `from` is gone (its ROUTER connection went away),
    /// after every packet queued so far; the worker then runs.
    pub fn handler_gone(&mut self, from: &str) {
        let addr = crate::bridge::Addr::try_from(from.as_bytes()).expect("a handler address");
        let inbox = &self.shared.inboxes[0];
        assert!(inbox.handler_gone(&addr));
        inbox.wake();
        self.drive();
    }

    /// Queues a handler packet without running the worker (to put packets and a
    /// handler-gone notice in one wake-up, as the bridge can).
    pub fn reply_nodrive(&mut self, session: &mut Session, reply: Reply) {
        let seq = session.next_seq();
        self.deliver(&reply.encode(&[(&session.id, seq)]));
    }

    /// A req-mode handler answers request `id` on the DEALER: no `from`, no `seq`.
    pub fn reply_req(&mut self, id: &str, reply: Reply) {
        let mut msg = Vec::new();
        reply.encode_into(&mut msg, None, &[(id, None)]);
        self.queue(msg, 0, true);
        self.drive();
    }

    /// Mongrel2 mode: takes the next message zring sent a handler, as (handler, text).
    pub fn m2_message(&mut self) -> (u16, String) {
        let (h, data) = self
            .to_m2
            .pop_front()
            .expect("a message for a Mongrel2 handler");
        (h, String::from_utf8_lossy(&data).into_owned())
    }

    /// Mongrel2 mode: how many messages for handlers wait to be taken.
    pub fn m2_messages_pending(&self) -> usize {
        self.to_m2.len()
    }

    /// Mongrel2 mode: handler `handler` publishes `msg` (`UUID SIZE:IDS, BODY`); it is parsed
    /// and queued as the bridge does (`bridge::m2`).
    pub fn m2_reply(&mut self, handler: u16, msg: &[u8]) {
        let reply = crate::proto::m2::parse_reply(msg, 128).expect("a valid reply");
        let kind = crate::bridge::m2::reply_kind(&reply);
        let ids = reply
            .ids()
            .filter_map(crate::proto::m2::reply::conn_id)
            .collect();
        let body_at = msg.len() - reply.body.len();
        let item = Arc::new(crate::bridge::m2::M2In {
            msg: zmq::Message::from(msg),
            handler,
            body_at,
            kind,
            ids,
        });
        let inbox = &self.shared.inboxes[0];
        inbox.m2.lock().unwrap().push_back(item);
        inbox.wake();
        self.drive();
    }

    /// What the bridge does with a SUB message: split off the address, then `queue`.
    fn deliver(&mut self, msg: &[u8]) {
        let (address, payload) = zhttp::split_address(msg).expect("an address prefix");
        assert_eq!(address, INSTANCE.as_bytes());
        let offset = msg.len() - payload.len();
        self.queue(msg.to_vec(), offset, false);
    }

    /// Decode once, queue for the worker the ids name, wake it (`bridge::Bridge::route`).
    fn queue(&mut self, msg: Vec<u8>, offset: usize, req: bool) {
        let packet = zhttp::decode(&msg[offset..]).expect("a valid handler packet");
        let item = Arc::new(InPacket {
            msg: zmq::Message::from(msg),
            offset,
            packet,
            req,
        });
        for (id, _) in item.packet.ids.iter() {
            assert_eq!(
                ConnId::worker_of(id.get(item.buf())),
                Some(0),
                "an id of worker 0"
            );
        }
        let inbox = &self.shared.inboxes[0];
        let _ = inbox.push(item);
        inbox.wake();
    }

    // ---- client mode: requesters, the resolver, origins ----

    /// A requester's packet (`first`: from PULL, else from the in-stream ROUTER), built as
    /// a handler packet is (`Reply::sent_by(requester)`), queued as the bridge queues it.
    pub fn requester_send(&mut self, first: bool, packet: Vec<u8>) {
        let decoded = crate::proto::zhttp_client::decode(&packet).expect("a requester packet");
        let item = Arc::new(crate::bridge::client::ClientIn {
            msg: zmq::Message::from(packet),
            packet: decoded,
            via: crate::conn::out::Via::Stream,
            first,
        });
        let inbox = &self.shared.inboxes[0];
        let _ = inbox.push_client(item);
        inbox.wake();
        self.drive();
    }

    /// Answers the oldest DNS query with `addrs` (as a resolver thread does); returns the
    /// name asked for, or `None` when no query waits.
    pub fn resolve(&mut self, addrs: &[SocketAddr]) -> Option<String> {
        let q = self.shared.resolver.try_take()?;
        let inbox = &self.shared.inboxes[0];
        inbox
            .resolved
            .lock()
            .unwrap()
            .push(crate::resolver::Answer {
                slot: q.slot,
                token: q.token,
                addrs: addrs.iter().copied().collect(),
            });
        inbox.wake();
        self.drive();
        Some(format!("{}:{}", q.host, q.port))
    }

    /// Settles the oldest pending outbound connect: established (`ok`), or refused. Returns
    /// the origin's socket (write to it and read from it as a client) and the address.
    pub fn origin_connect(&mut self, ok: bool) -> (Client, SocketAddr) {
        let (i, addr) = self.connects.pop_front().expect("no connect pending");
        let s = &mut self.sockets[i];
        assert!(!s.close_issued, "connect settled after Close");
        s.connecting = false;
        let slot = s.slot.expect("an origin socket");
        let now = self.now();
        let result = match ok {
            true => Ok(()),
            false => Err(std::io::Error::from_raw_os_error(libc::ECONNREFUSED)),
        };
        self.worker.handle_connected(now, slot, result);
        self.drive();
        (Client(i), addr)
    }

    /// True when the worker holds no outbound exchange.
    pub fn finished_out(&self) -> bool {
        self.worker.out_count() == 0
    }

    /// Outbound connects the worker asked for and the test has not settled.
    pub fn connects_pending(&self) -> usize {
        self.connects.len()
    }

    // ---- time and turns ----

    /// Runs turns until the worker settles ([`DRIVE_STEPS_MAX`] at most).
    pub fn drive(&mut self) {
        self.drive_bounded(DRIVE_STEPS_MAX);
    }

    /// Runs turns until one makes no progress; panics if `steps` turns did not get there.
    pub fn drive_bounded(&mut self, steps: usize) {
        for _ in 0..steps {
            if !self.step() {
                return;
            }
        }
        let timeout = self.worker.poll_timeout().map(|t| t - self.base);
        panic!(
            "the worker did not settle within {steps} turns (at {:?}, next deadline {timeout:?})",
            self.elapsed
        );
    }

    /// Moves simulated time forward by `by`, waking the worker at every deadline it asked
    /// for on the way (as a runtime's timer would), then at the end. Each wake-up reads the
    /// clock [`WAKE_LATENESS`] after the deadline, as a runtime always does.
    pub fn advance(&mut self, by: Duration) {
        let target = self.elapsed + by;
        let wakes_max = (by.as_nanos() / WHEEL_TICK.as_nanos()) as usize + 10;
        for _ in 0..wakes_max {
            let next = self.worker.poll_timeout().map(|t| t - self.base);
            match next {
                Some(t) if t + WAKE_LATENESS <= target => {
                    self.elapsed = self.elapsed.max(t + WAKE_LATENESS);
                    self.drive();
                }
                _ => {
                    self.elapsed = target + WAKE_LATENESS;
                    self.drive();
                    return;
                }
            }
        }
        panic!("more than {wakes_max} wake-ups in {by:?}: the timer does not settle");
    }

    /// One runtime turn: completions, reads, the wake-up, the timer, then the commands and
    /// the turn's packets. True if anything happened.
    fn step(&mut self) -> bool {
        let now = self.now();
        let mut progress = false;
        for i in 0..self.sockets.len() {
            progress |= self.complete(now, i);
        }
        for i in 0..self.sockets.len() {
            progress |= self.receive(now, i);
        }
        let inbox = &self.shared.inboxes[0];
        if inbox.wake_pending.load(Ordering::SeqCst) {
            inbox.wake.drain();
            self.worker.handle_wake(now);
            progress = true;
        }
        if self.worker.poll_timeout().is_some_and(|t| t <= now) {
            self.worker.handle_timeout(now);
            progress = true;
        }
        while let Some(cmd) = self.worker.poll_command() {
            self.execute(cmd);
            progress = true;
        }
        self.shared.take_outbox(&mut self.batch);
        for p in self.batch.drain(..) {
            match p.route {
                Route::M2(h) => self.to_m2.push_back((h, p.data)),
                _ => self.to_handler.push_back(ToHandler::decode(&p)),
            }
            progress = true;
        }
        progress
    }

    /// The kernel finishes what is in flight: a `Close` (then `handle_closed`), or a send.
    fn complete(&mut self, now: Instant, i: usize) -> bool {
        let s = &mut self.sockets[i];
        let Some(slot) = s.slot else { return false };
        if s.close_issued {
            s.slot = None;
            self.worker.handle_closed(now, slot);
            return true;
        }
        if s.stalled {
            return false;
        }
        let Some(sent) = s.in_flight.take() else {
            return false;
        };
        s.sends += 1;
        s.shared_sends += usize::from(sent.shared);
        match s.tls.as_mut() {
            Some(tls) => {
                let mut wire = &sent.bytes[..];
                while !wire.is_empty() {
                    tls.read_tls(&mut wire).unwrap();
                    tls.process_new_packets().expect("zring's TLS records");
                }
                let mut plain = [0u8; 16 * 1024];
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => break, // close_notify
                        Ok(n) => s.received.extend_from_slice(&plain[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("TLS read: {e}"),
                    }
                }
                self.flush_tls(Client(i));
            }
            None => self.sockets[i].received.extend_from_slice(&sent.bytes),
        }
        let returned = if sent.shared { Vec::new() } else { sent.bytes };
        self.worker.handle_sent(now, slot, returned);
        true
    }

    /// One piece of the client's bytes, or its EOF, unless reading is paused.
    fn receive(&mut self, now: Instant, i: usize) -> bool {
        let s = &mut self.sockets[i];
        let Some(slot) = s.slot else { return false };
        if s.close_issued || s.paused || s.eof_delivered || s.connecting {
            return false;
        }
        if let Some(mut piece) = s.input.pop_front() {
            self.worker.handle_recv(now, slot, &mut piece);
            return true;
        }
        if s.eof_queued {
            s.eof_delivered = true;
            self.worker.handle_eof(now, slot);
            return true;
        }
        false
    }

    /// Carries out one command, asserting the runtime contract.
    fn execute(&mut self, cmd: Command) {
        let slot = match &cmd {
            Command::Send { slot, .. }
            | Command::SendShared { slot, .. }
            | Command::PauseRecv { slot }
            | Command::ResumeRecv { slot }
            | Command::ShutdownWrite { slot }
            | Command::Close { slot } => *slot,
            Command::Connect { slot, addr } => {
                assert!(
                    self.sockets.iter().all(|s| s.slot != Some(*slot)),
                    "Connect on slot {slot} while it is in use"
                );
                self.connects.push_back((self.sockets.len(), *addr));
                self.sockets.push(Socket {
                    slot: Some(*slot),
                    input: VecDeque::new(),
                    eof_queued: false,
                    eof_delivered: false,
                    received: Vec::new(),
                    in_flight: None,
                    stalled: false,
                    paused: false,
                    shutdown: false,
                    close_issued: false,
                    ios: Vec::new(),
                    sends: 0,
                    shared_sends: 0,
                    tls: None,
                    connecting: true,
                });
                return;
            }
        };
        let s = self
            .sockets
            .iter_mut()
            .find(|s| s.slot == Some(slot))
            .unwrap_or_else(|| panic!("{cmd:?} for a slot no client holds"));
        assert!(!s.close_issued, "{cmd:?} after Close");
        let data = matches!(
            cmd,
            Command::Send { .. } | Command::SendShared { .. } | Command::ShutdownWrite { .. }
        );
        assert!(
            !(s.connecting && data),
            "{cmd:?} before the connect completed"
        );
        match cmd {
            Command::Send { buf, .. } => s.start_send(buf, false),
            Command::SendShared { buf, .. } => s.start_send(buf.to_vec(), true),
            Command::PauseRecv { .. } => {
                assert!(!s.paused, "PauseRecv while paused");
                s.paused = true;
                s.ios.push(Io::PauseRecv);
            }
            Command::ResumeRecv { .. } => {
                assert!(s.paused, "ResumeRecv while reading");
                s.paused = false;
                s.ios.push(Io::ResumeRecv);
            }
            Command::ShutdownWrite { .. } => {
                assert!(s.in_flight.is_none(), "ShutdownWrite with a send in flight");
                assert!(!s.shutdown, "ShutdownWrite twice");
                s.shutdown = true;
                s.ios.push(Io::ShutdownWrite);
            }
            Command::Close { .. } => {
                s.close_issued = true;
                let io = match s.in_flight.take() {
                    Some(_) => Io::CloseAborting,
                    None => Io::Close,
                };
                s.ios.push(io);
            }
            Command::Connect { .. } => unreachable!(),
        }
    }
}

impl Socket {
    fn start_send(&mut self, bytes: Vec<u8>, shared: bool) {
        assert!(self.in_flight.is_none(), "a second send in flight");
        assert!(!self.shutdown, "a send after ShutdownWrite");
        assert!(!bytes.is_empty(), "an empty send");
        self.in_flight = Some(InFlight { bytes, shared });
    }
}

fn queue_pieces(input: &mut VecDeque<Vec<u8>>, bytes: &[u8]) {
    for piece in bytes.chunks(RECV_PIECE_BYTES) {
        input.push_back(piece.to_vec());
    }
}
