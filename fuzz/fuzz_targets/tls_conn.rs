//! Fuzz zring's TLS accept path through the connection core (`Conn` on a tls listener), with
//! a stand-in runtime that hands every `Send` to the client and reports it written.
//!
//! The first byte picks the client:
//! - even: the rest is the client's raw byte stream, cut into seed-sized reads (a ClientHello
//!   that may be garbage, truncated or split anywhere);
//! - odd: a real rustls client completes a handshake first, then the rest is its plaintext
//!   (HTTP or WebSocket bytes, however malformed), sent encrypted.
//!
//! Invariants: no panic; the connection never sends bytes a real TLS client rejects (in the
//! second mode the client parses every record zring writes); it ends up closed or idle
//! without unbounded buffering.
#![no_main]

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use zring::bridge::Addr;
use zring::config::Mode;
use zring::conn::{Conn, Ctx, Handlers, Output, Pool, Settings};
use zring::runtime::Command;

#[path = "identity.rs"]
mod identity;
use identity::{server_config, CERT_PEM};

fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(CERT_PEM.trim().as_bytes()).unwrap())
                .unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

struct Harness {
    settings: Settings,
    conn: Conn,
    out: Vec<Output>,
    pool: Pool,
    handlers: Handlers,
    counter: u64,
    cmds: VecDeque<Command>,
    closed: bool,
    now: Instant,
    stats: zring::metrics::WorkerStats,
}

impl Harness {
    fn new() -> Harness {
        let now = Instant::now();
        let settings = Settings {
            instance_id: Addr::try_from(&b"fuzz"[..]).unwrap(),
            worker: 0,
            buffer_size: 8192,
            body_buffer_size: 100_000,
            req_timeout: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(1800),
            handler_wait: Duration::from_secs(5),
            tls_handshake_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(10),
            body_min_bytes: 1024,
            messages_max: 100,
            compression: false,
            deflate: Default::default(),
            epoch: now,
            epoch_unix_ms: 0,
            m2: None,
            access_log: true,
            deny_out_internal: false,
            ws_out_buffer_size: 8192,
            out_tls: None,
        };
        let config = server_config();
        let conn = Conn::new(now, &settings, Mode::Stream, Some(&config), None);
        Harness {
            settings,
            conn,
            out: Vec::new(),
            pool: Pool::default(),
            handlers: Handlers::default(),
            counter: 0,
            cmds: VecDeque::new(),
            closed: false,
            now,
            stats: Default::default(),
        }
    }

    fn with(&mut self, f: impl FnOnce(&mut Conn, &mut Ctx)) {
        let mut cx = Ctx {
            now: self.now,
            settings: &self.settings,
            slot: 0,
            pool: &mut self.pool,
            handlers: &mut self.handlers,
            counter: &mut self.counter,
            stats: &self.stats,
            out: &mut self.out,
        };
        f(&mut self.conn, &mut cx);
        self.conn.flush(&mut cx, false);
        // Packets for handlers are dropped (no handler answers here); I/O runs in order.
        for o in self.out.drain(..) {
            match o {
                Output::Packet(_) | Output::Cancel(..) => {}
                Output::Io(c) => self.cmds.push_back(c),
                Output::Backend(_) => panic!("a backend request from a ZHTTP connection"),
                // The access log is on (Settings::access_log): a finished exchange's line.
                Output::AccessLog { line, .. } => assert!(!line.is_empty()),
                Output::Resolve(_) => panic!("a DNS query from a server connection"),
            }
        }
    }

    fn recv(&mut self, data: &mut [u8]) {
        if !self.closed {
            self.with(|c, cx| c.handle_recv(cx, data));
        }
    }

    /// Runs the queued commands; every sent buffer goes to `sink`.
    fn run(&mut self, sink: &mut dyn FnMut(&[u8])) {
        for _ in 0..64 {
            let Some(cmd) = self.cmds.pop_front() else {
                return;
            };
            match cmd {
                Command::Send { buf, .. } => {
                    assert!(!self.closed);
                    sink(&buf);
                    self.with(|c, cx| c.handle_sent(cx, buf));
                }
                Command::Close { .. } => self.closed = true,
                Command::ShutdownWrite { .. } => {}
                // Shared frames go only to plain connections (they would bypass the seal).
                Command::SendShared { .. } => panic!("a shared frame for a TLS connection"),
                // Outbound connects are Mongrel2 Proxy routes only; this is a ZHTTP listener.
                Command::Connect { .. } => panic!("a connect from a ZHTTP connection"),
                Command::PauseRecv { .. } | Command::ResumeRecv { .. } => {}
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(seed >> 1) + 1;
    let mut h = Harness::new();
    if seed & 1 == 0 {
        for piece in stream.chunks(chunk) {
            let mut piece = piece.to_vec();
            h.recv(&mut piece);
            h.run(&mut |_| {});
        }
        // The stand-in clock jumps past the handshake deadline: the connection must end.
        h.now += Duration::from_secs(11);
        h.with(|c, cx| c.handle_timeout(cx));
        h.run(&mut |_| {});
        assert!(h.closed, "a connection that never finished its handshake outlived the deadline");
        return;
    }
    let mut client = ClientConnection::new(client_config(), "fuzz.test".try_into().unwrap())
        .expect("client");
    let mut tls = Vec::new();
    // Handshake: bounded round trips.
    for _ in 0..8 {
        if !client.is_handshaking() {
            break;
        }
        tls.clear();
        while client.wants_write() {
            client.write_tls(&mut tls).unwrap();
        }
        h.recv(&mut tls);
        let mut from_server = Vec::new();
        h.run(&mut |b| from_server.extend_from_slice(b));
        client.read_tls(&mut &from_server[..]).unwrap();
        client.process_new_packets().expect("zring's handshake records are valid TLS");
    }
    assert!(!client.is_handshaking(), "handshake did not complete");
    for piece in stream.chunks(chunk) {
        if h.closed {
            break;
        }
        client.writer().write_all(piece).unwrap();
        tls.clear();
        while client.wants_write() {
            client.write_tls(&mut tls).unwrap();
        }
        h.recv(&mut tls);
        let mut from_server = Vec::new();
        h.run(&mut |b| from_server.extend_from_slice(b));
        let mut rest = &from_server[..];
        while !rest.is_empty() {
            if client.read_tls(&mut rest).unwrap() == 0 {
                break;
            }
            client
                .process_new_packets()
                .expect("zring's records are valid TLS");
        }
    }
});
