//! Heap bytes an idle, established TLS connection holds on the server: zring's unbuffered
//! `tls::Session` against rustls's buffered `ServerConnection`, both after a handshake and
//! one request/response, with no data in flight. A counting global allocator measures the
//! live bytes each kept session adds (median of many, after a warm-up that fills the
//! identity cache). Run with `--nocapture` to see the figures.
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};
use zring::tls::{config, Identities, Session};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// The client's pending records, as bytes.
fn drain(client: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    wire
}

fn give(client: &mut ClientConnection, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        client.read_tls(&mut bytes).unwrap();
        client.process_new_packets().unwrap();
    }
}

fn unbuffered(server_config: &Arc<rustls::ServerConfig>, client: &mut ClientConnection) -> Session {
    let mut session = Session::new(server_config.clone());
    let (mut plaintext, mut out) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        let mut wire = drain(client);
        let fed = session.feed(&mut wire, &mut plaintext, &mut out).unwrap();
        assert_eq!(fed.consumed, wire.len());
        give(client, &out);
        out.clear();
        if !session.is_handshaking() && !client.is_handshaking() && !client.wants_write() {
            break;
        }
    }
    client.writer().write_all(REQUEST).unwrap();
    let mut wire = drain(client);
    let _ = session.feed(&mut wire, &mut plaintext, &mut out).unwrap();
    assert_eq!(plaintext, REQUEST);
    session.encrypt(&mut [], RESPONSE, &mut out).unwrap();
    give(client, &out);
    session
}

fn buffered(
    server_config: &Arc<rustls::ServerConfig>,
    client: &mut ClientConnection,
) -> ServerConnection {
    let mut server = ServerConnection::new(server_config.clone()).unwrap();
    for _ in 0..16 {
        let wire = drain(client);
        let mut slice = &wire[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).unwrap();
            server.process_new_packets().unwrap();
        }
        let mut out = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        give(client, &out);
        if !server.is_handshaking() && !client.is_handshaking() && !client.wants_write() {
            break;
        }
    }
    client.writer().write_all(REQUEST).unwrap();
    let wire = drain(client);
    server.read_tls(&mut &wire[..]).unwrap();
    server.process_new_packets().unwrap();
    let mut got = vec![0; REQUEST.len()];
    server.reader().read_exact(&mut got).unwrap();
    server.writer().write_all(RESPONSE).unwrap();
    let mut out = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut out).unwrap();
    }
    give(client, &out);
    server
}

/// Median live bytes one kept session adds, over `count` sessions after `warmup`.
fn measure<T>(
    version: &'static rustls::SupportedProtocolVersion,
    server_config: &Arc<rustls::ServerConfig>,
    client_config_for: impl Fn(&'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig>,
    open: impl Fn(&Arc<rustls::ServerConfig>, &mut ClientConnection) -> T,
) -> isize {
    const WARMUP: usize = 4;
    const COUNT: usize = 41;
    let mut kept: Vec<T> = Vec::with_capacity(WARMUP + COUNT);
    let mut deltas = Vec::with_capacity(COUNT);
    for i in 0..WARMUP + COUNT {
        let before = live();
        {
            // A fresh client config each time: no resumption, every handshake full. It is
            // created and dropped inside the measured span, so only the server side stays.
            let client_config = client_config_for(version);
            let mut client =
                ClientConnection::new(client_config, "localhost".try_into().unwrap()).unwrap();
            kept.push(open(server_config, &mut client));
        }
        let after = live();
        if i >= WARMUP {
            deltas.push(after - before);
        }
    }
    deltas.sort();
    deltas[COUNT / 2]
}

#[test]
fn idle_established_session_memory() {
    let dir = std::env::temp_dir().join(format!("zring-tls-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("localhost.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("localhost.key"), key.serialize_pem()).unwrap();
    let provider = config::provider();
    let identities = Identities::new(&dir, provider.clone());
    let server_config = config::server_config(provider, identities, None).unwrap();
    let anchor = cert.der().clone();
    let client_config_for = |version: &'static rustls::SupportedProtocolVersion| {
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone()).unwrap();
        let mut c =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let mut report = Vec::new();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let lean = measure(version, &server_config, client_config_for, unbuffered);
        let fat = measure(version, &server_config, client_config_for, buffered);
        report.push(format!(
            "{:?}: unbuffered Session {lean} B heap + {} B inline; buffered ServerConnection {fat} B heap + {} B inline",
            version.version,
            std::mem::size_of::<Session>(),
            std::mem::size_of::<ServerConnection>(),
        ));
        // The goal: an idle TLS connection within 4 KiB.
        assert!(
            lean + (std::mem::size_of::<Session>() as isize) <= 4096,
            "{report:?}"
        );
        assert!(lean < fat, "{report:?}");
    }
    for line in &report {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
