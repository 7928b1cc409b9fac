//! zring-tls-rate: TLS handshakes per second, full or resumed, for scripts/bench-tls.sh.
//!
//! Each of `--conns` threads loops until `--secs` have passed: connect, TLS handshake
//! (rustls, ring), `GET PATH` with `Connection: close`, read the whole response (it must be
//! a 200), close. `--resume` keeps a session store per thread (rustls' in-memory one): the
//! first connection of a thread is a full handshake, every later one offers the ticket the
//! previous one received (TLS 1.3 tickets are single-use, and every server here sends new
//! ones on each connection), so the run measures resumed handshakes; without it resumption
//! is disabled and every handshake is full. wrk (OpenSSL) cannot resume: it is the reason
//! this tool exists.
//!
//! The client offers TLS 1.3 only (`--allow-tls12` adds TLS 1.2, for Condure 1.9.1, which
//! offers nothing newer) and X25519 only (`--allow-p256` adds P-256, again for Condure: in TLS
//! 1.2 an ECDSA certificate's curve must be among the client's groups, RFC 8422 §5.1.1; the
//! key exchange is still X25519), so every server is measured on the same key exchange; the first connection's negotiated version, suite and group are printed so
//! the script can show them.
//!
//! Prints one `key=value` line: handshakes, full, resumed, errors, secs, handshakes_per_s,
//! version, suite, group. Exits non-zero when nothing succeeded, or with `--resume` when
//! fewer than 90 % of the handshakes after each thread's first were resumed.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};

/// A response larger than this is an error: the servers answer a few bytes.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;

struct Opts {
    target: SocketAddr,
    sni: String,
    ca: String,
    conns: usize,
    secs: f64,
    resume: bool,
    allow_tls12: bool,
    allow_p256: bool,
    path: String,
}

#[derive(Default)]
struct Counts {
    full: AtomicU64,
    resumed: AtomicU64,
    errors: AtomicU64,
}

fn usage(err: &str) -> ! {
    eprintln!("zring-tls-rate: {err}");
    eprintln!(
        "usage: zring-tls-rate --target HOST:PORT --ca FILE.pem [--sni localhost] [--conns N] \
         [--secs S] [--resume] [--allow-tls12] [--allow-p256] [--path /hello]"
    );
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let mut target = None;
    let mut o = Opts {
        target: SocketAddr::from(([127, 0, 0, 1], 0)),
        sni: "localhost".into(),
        ca: String::new(),
        conns: 16,
        secs: 10.0,
        resume: false,
        allow_tls12: false,
        allow_p256: false,
        path: "/hello".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--target" => target = Some(val().parse().unwrap_or_else(|_| usage("bad --target"))),
            "--sni" => o.sni = val(),
            "--ca" => o.ca = val(),
            "--conns" => o.conns = val().parse().unwrap_or_else(|_| usage("bad --conns")),
            "--secs" => o.secs = val().parse().unwrap_or_else(|_| usage("bad --secs")),
            "--path" => o.path = val(),
            "--resume" => o.resume = true,
            "--allow-tls12" => o.allow_tls12 = true,
            "--allow-p256" => o.allow_p256 = true,
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    o.target = target.unwrap_or_else(|| usage("--target is required"));
    if o.ca.is_empty() || o.conns == 0 || o.conns > 1024 || o.secs.is_nan() || o.secs <= 0.0 {
        usage("--ca is required, 1 ≤ --conns ≤ 1024, --secs > 0");
    }
    o
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
static BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// TLS 1.3 and X25519 only; resumption as asked.
fn client_config(o: &Opts) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(&o.ca).unwrap_or_else(|e| usage(&format!("{}: {e}", o.ca)))
    {
        roots
            .add(cert.unwrap_or_else(|e| usage(&format!("{}: {e}", o.ca))))
            .unwrap();
    }
    let mut provider = ring::default_provider();
    provider.kx_groups = vec![ring::kx_group::X25519];
    if o.allow_p256 {
        provider.kx_groups.push(ring::kx_group::SECP256R1);
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(if o.allow_tls12 { BOTH } else { TLS13_ONLY })
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Per thread: a small store is enough for one server name (tickets are kept per name).
    config.resumption = if o.resume {
        Resumption::in_memory_sessions(16)
    } else {
        Resumption::disabled()
    };
    Arc::new(config)
}

/// One connection: handshake, request, whole response. Returns how the handshake went and,
/// for the first one, what was negotiated.
fn one(
    o: &Opts,
    config: &Arc<ClientConfig>,
    request: &[u8],
) -> Result<(HandshakeKind, String), String> {
    let name = ServerName::try_from(o.sni.clone()).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect_timeout(&o.target, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                if response.len() > RESPONSE_BYTES_MAX {
                    return Err("response too large".into());
                }
            }
            // A server that closes without close_notify after a complete response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
                break
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if !response.starts_with(b"HTTP/1.1 200") && !response.starts_with(b"HTTP/1.0 200") {
        let head = String::from_utf8_lossy(&response[..response.len().min(40)]).into_owned();
        return Err(format!("not a 200: {head:?}"));
    }
    let c = &tls.conn;
    let kind = c.handshake_kind().ok_or("no handshake kind")?;
    let what = format!(
        "version={:?} suite={:?} group={}",
        c.protocol_version().ok_or("no version")?,
        c.negotiated_cipher_suite().ok_or("no suite")?.suite(),
        // None for a resumed TLS 1.2 handshake: it exchanges no key.
        c.negotiated_key_exchange_group()
            .map_or("none".to_string(), |g| format!("{:?}", g.name())),
    );
    Ok((kind, what))
}

fn main() {
    let o = Arc::new(parse_opts());
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let negotiated = Arc::new(Mutex::new(None::<String>));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        o.path, o.sni
    );
    let started = Instant::now();
    let threads: Vec<_> = (0..o.conns)
        .map(|_| {
            let (o, counts, stop) = (o.clone(), counts.clone(), stop.clone());
            let (negotiated, first_error) = (negotiated.clone(), first_error.clone());
            let request = request.clone();
            std::thread::spawn(move || {
                let config = client_config(&o);
                while !stop.load(Ordering::Relaxed) {
                    match one(&o, &config, request.as_bytes()) {
                        Ok((kind, what)) => {
                            let c = match kind {
                                HandshakeKind::Resumed => &counts.resumed,
                                _ => &counts.full,
                            };
                            c.fetch_add(1, Ordering::Relaxed);
                            negotiated.lock().unwrap().get_or_insert(what);
                        }
                        Err(e) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(o.secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let full = counts.full.load(Ordering::Relaxed);
    let resumed = counts.resumed.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);
    let total = full + resumed;
    let what = negotiated
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| "version=na suite=na group=na".into());
    println!(
        "handshakes={total} full={full} resumed={resumed} errors={errors} secs={secs:.2} \
         handshakes_per_s={:.0} resume={} {what}",
        total as f64 / secs,
        o.resume
    );
    if let Some(e) = first_error.lock().unwrap().as_ref() {
        eprintln!("zring-tls-rate: {errors} errors, the first: {e}");
    }
    // Each thread's first handshake is full; the rest should all be resumed.
    let resumable = total.saturating_sub(o.conns as u64);
    if total == 0 || (o.resume && resumed * 10 < resumable * 9) {
        eprintln!("zring-tls-rate: FAILED: {total} handshakes, {resumed} resumed");
        std::process::exit(1);
    }
}
