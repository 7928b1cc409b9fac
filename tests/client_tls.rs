//! Client mode's TLS to origins and connection reuse (issue 13 items 4 and 7), with real
//! parts on both runtimes: zring alone in client mode, a ZHTTP requester over real ZeroMQ,
//! and real origins on loopback (`support::origin`: plain, or a rustls server with a test
//! CA's certificate). zring trusts the test CA through its system-store path: the
//! `SSL_CERT_FILE` variable that OpenSSL (so pushpin-connmgr) and rustls-native-certs read.
#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::origin::{Opts, Origin};
use support::requester::{Endpoints, Replies, Requester};
use support::tls::Pki;
use support::tn::Value;
use support::zhttp::{hdrs, int};
use support::Proc;

const T: Duration = Duration::from_secs(20);

fn s(v: &str) -> Value {
    Value::Str(v.as_bytes().to_vec())
}

/// zring in client mode only, on `rt`, trusting `ca` as its system store.
fn zring(rt: &str, ca: &Path) -> (Proc, Endpoints, PathBuf) {
    zring_with(rt, ca, &[])
}

fn zring_with(rt: &str, ca: &Path, extra: &[&str]) -> (Proc, Endpoints, PathBuf) {
    support::requester::client_mode_zring("client-tls", rt, |c| {
        c.args(["--workers", "1"])
            .args(extra)
            .env("SSL_CERT_FILE", ca)
            .env_remove("SSL_CERT_DIR");
    })
}

fn request(r: &mut Requester, method: &str, uri: &str, extra: Vec<(&str, Value)>) -> Replies {
    let id = r.new_id();
    let mut fields = vec![
        ("method", s(method)),
        ("uri", s(uri)),
        ("headers", hdrs(&[("User-Agent", "client-tls-test")])),
        ("credits", int(200_000)),
    ];
    fields.extend(extra);
    r.start(&id, fields);
    r.collect(&id, 0, T)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server configuration for identity `name` of `pki` (or a self-signed one when
/// `pki` is `None`); with `client_ca`, client certificates signed by it are required.
fn server_config(pki: Option<(&Pki, &str)>, client_ca: Option<&Path>) -> Arc<rustls::ServerConfig> {
    let (chain, key) = match pki {
        Some((pki, name)) => {
            let ids = pki.ids();
            let crt = std::fs::read(ids.join(format!("{name}.crt"))).unwrap();
            let key = std::fs::read(ids.join(format!("{name}.key"))).unwrap();
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&crt)
                .collect::<Result<_, _>>()
                .unwrap();
            (chain, PrivateKeyDer::from_pem_slice(&key).unwrap())
        }
        None => {
            let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let key =
                PrivateKeyDer::from_pem_slice(c.signing_key.serialize_pem().as_bytes()).unwrap();
            (vec![c.cert.der().clone()], key)
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca).unwrap();
            for c in CertificateDer::pem_slice_iter(&pem) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

fn tls_origin(config: Arc<rustls::ServerConfig>, keep_alive: bool) -> Origin {
    Origin::start_with(Opts {
        tls: Some(config),
        keep_alive,
    })
}

both_runtimes! {
    https_verified_refused_and_ignored(rt) {
        // Goal: a certificate from a CA in the system store is accepted (SNI and name
        // from the URI's host); a self-signed one fails with tls-error before any head;
        // the same origin with ignore-tls-errors answers.
        let pki = Pki::new(&format!("out-{rt}"));
        pki.identity("localhost", "localhost", &["localhost"], false);
        let good = tls_origin(server_config(Some((&pki, "localhost")), None), false);
        let bad = tls_origin(server_config(None, None), false);
        let (_z, ep, _d) = zring(rt, &pki.ca);
        let mut r = Requester::connect(&ep, "req-tls-a");
        let url = format!("https://localhost:{}/get", good.port);
        let x = request(&mut r, "GET", &url, vec![]);
        assert_eq!(x.code(), Some(200), "{:?}", x.packets);
        assert_eq!(x.body(), b"hello");
        assert_eq!(good.last().header("Host"), Some(format!("localhost:{}", good.port).as_str()));
        let url = format!("https://localhost:{}/get", bad.port);
        let x = request(&mut r, "GET", &url, vec![]);
        assert_eq!(x.condition().as_deref(), Some("tls-error"), "{:?}", x.packets);
        assert!(x.head().is_none());
        assert_eq!(x.last_kind(), "error");
        let x = request(&mut r, "GET", &url, vec![("ignore-tls-errors", Value::Bool(true))]);
        assert_eq!(x.code(), Some(200), "{:?}", x.packets);
        assert_eq!(x.body(), b"hello");
    }

    https_trust_connect_host(rt) {
        // Goal: a certificate for 127.0.0.1 (connect-host) does not match the URI's host,
        // so the request fails; with trust-connect-host it is accepted, and the origin
        // still sees the URI's host in Host.
        let pki = Pki::new(&format!("out-trust-{rt}"));
        pki.identity("ip", "127.0.0.1", &["127.0.0.1"], false);
        let origin = tls_origin(server_config(Some((&pki, "ip")), None), false);
        let (_z, ep, _d) = zring(rt, &pki.ca);
        let mut r = Requester::connect(&ep, "req-tls-b");
        let url = format!("https://www.example.test:{}/get", origin.port);
        let connect = vec![
            ("connect-host", s("127.0.0.1")),
            ("connect-port", int(origin.port as i64)),
        ];
        let x = request(&mut r, "GET", &url, connect.clone());
        assert_eq!(x.condition().as_deref(), Some("tls-error"), "{:?}", x.packets);
        let mut trusted = connect;
        trusted.push(("trust-connect-host", Value::Bool(true)));
        let x = request(&mut r, "GET", &url, trusted);
        assert_eq!(x.code(), Some(200), "{:?}", x.packets);
        assert_eq!(
            origin.last().header("Host"),
            Some(format!("www.example.test:{}", origin.port).as_str())
        );
    }

    https_client_certificate(rt) {
        // Goal: an origin that requires a client certificate refuses the handshake without
        // one (tls-error) and serves the request with client-cert/client-key (PEM
        // contents, as Pushpin sends them).
        let pki = Pki::new(&format!("out-mtls-{rt}"));
        pki.identity("localhost", "localhost", &["localhost"], false);
        pki.identity("client", "zring client", &["client.test"], false);
        let origin = tls_origin(server_config(Some((&pki, "localhost")), Some(&pki.ca)), false);
        let (_z, ep, _d) = zring(rt, &pki.ca);
        let mut r = Requester::connect(&ep, "req-tls-c");
        let url = format!("https://localhost:{}/get", origin.port);
        let x = request(&mut r, "GET", &url, vec![]);
        assert_eq!(x.condition().as_deref(), Some("tls-error"), "{:?}", x.packets);
        let cert = std::fs::read(pki.ids().join("client.crt")).unwrap();
        let key = std::fs::read(pki.ids().join("client.key")).unwrap();
        let x = request(&mut r, "GET", &url, vec![
            ("client-cert", Value::Str(cert)),
            ("client-key", Value::Str(key)),
        ]);
        assert_eq!(x.code(), Some(200), "{:?}", x.packets);
        assert_eq!(x.body(), b"hello");
    }

    https_close_notify_ends_a_read_to_eof_body(rt) {
        // Goal: over TLS a body delimited by the end of the connection ends normally after
        // the origin's close_notify, and is an error (cancel after the head) when the TCP
        // connection ends without it: the body may have been cut.
        let pki = Pki::new(&format!("out-eof-{rt}"));
        pki.identity("localhost", "localhost", &["localhost"], false);
        let origin = tls_origin(server_config(Some((&pki, "localhost")), None), false);
        let (_z, ep, _d) = zring(rt, &pki.ca);
        let mut r = Requester::connect(&ep, "req-tls-d");
        let x = request(&mut r, "GET", &format!("https://localhost:{}/eof", origin.port), vec![]);
        assert_eq!(x.code(), Some(200), "{:?}", x.packets);
        assert_eq!(x.body(), b"until close");
        assert_eq!(x.last_kind(), "data");
        let x = request(&mut r, "GET", &format!("https://localhost:{}/truncated", origin.port), vec![]);
        assert_eq!(x.code(), Some(200), "{:?}", x.packets);
        assert_eq!(x.last_kind(), "cancel", "{:?}", x.packets);
    }

    reuse_one_connection_for_sequential_requests(rt) {
        // Goal: sequential requests to one keep-alive origin (plain and TLS) go over one
        // TCP connection: the origin accepts once.
        let pki = Pki::new(&format!("out-reuse-{rt}"));
        pki.identity("localhost", "localhost", &["localhost"], false);
        let plain = Origin::start_with(Opts { tls: None, keep_alive: true });
        let tls = tls_origin(server_config(Some((&pki, "localhost")), None), true);
        let mport = support::free_port();
        let prometheus = format!("127.0.0.1:{mport}");
        let (_z, ep, _d) = zring_with(rt, &pki.ca, &["--prometheus", &prometheus]);
        let mut r = Requester::connect(&ep, "req-tls-e");
        for i in 0..5 {
            let x = request(&mut r, "GET", &plain.url("/get"), vec![]);
            assert_eq!(x.body(), b"hello", "plain request {i}: {:?}", x.packets);
            let x = request(&mut r, "POST", &plain.url("/echo"), vec![("body", s("abc"))]);
            assert_eq!(x.body(), b"abc", "plain post {i}");
            let url = format!("https://localhost:{}/chunked", tls.port);
            let x = request(&mut r, "GET", &url, vec![]);
            assert_eq!(x.body(), b"abcdefg", "tls request {i}: {:?}", x.packets);
        }
        assert_eq!(plain.accepted(), 1);
        assert_eq!(tls.accepted(), 1);
        assert_eq!(plain.seen.lock().unwrap().len(), 10);
        // The metrics say the same: 2 connects, 13 of 15 requests on a pooled connection,
        // and both connections idle in the pool now.
        wait_metric(mport, "connmgr_outbound_connects_total", 2.0);
        wait_metric(mport, "connmgr_outbound_reused_total", 13.0);
        wait_metric(mport, "connmgr_connections{protocol=\"outbound\",tls=\"false\",state=\"idle\"}", 1.0);
        wait_metric(mport, "connmgr_connections{protocol=\"outbound\",tls=\"true\",state=\"idle\"}", 1.0);
        wait_metric(mport, "connmgr_connections{protocol=\"outbound\",tls=\"true\",state=\"active\"}", 0.0);
    }

    reuse_a_stale_connection_is_retried_once_for_get_only(rt) {
        // Goal: a pooled connection the origin closes as the next request arrives (no
        // response byte) gets a GET sent again on a fresh connection; a POST is not sent
        // again (it fails).
        let origin = Origin::start_with(Opts { tls: None, keep_alive: true });
        let (_z, ep, _d) = zring(rt, Path::new("/nonexistent-ca.pem"));
        let mut r = Requester::connect(&ep, "req-tls-f");
        let x = request(&mut r, "GET", &origin.url("/flaky"), vec![]);
        assert_eq!(x.body(), b"fresh");
        assert_eq!(origin.accepted(), 1);
        // Pooled; the origin drops it on this request: retried on a second connection.
        let x = request(&mut r, "GET", &origin.url("/flaky"), vec![]);
        assert_eq!(x.body(), b"fresh", "{:?}", x.packets);
        assert_eq!(origin.accepted(), 2);
        // The second connection is pooled now; a POST on it is not retried.
        let x = request(&mut r, "POST", &origin.url("/flaky"), vec![("body", s("x"))]);
        assert!(x.head().is_none(), "{:?}", x.packets);
        assert_eq!(x.condition().as_deref(), Some("undefined-condition"));
        assert_eq!(origin.accepted(), 2);
    }
}

/// Polls `/metrics` until the sample named exactly `sample` reads `want` (the worker moves
/// gauges as it goes; the scrape may come a moment early).
fn wait_metric(port: u16, sample: &str, want: f64) {
    use std::io::{Read, Write};
    let end = Instant::now() + T;
    loop {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        let v = body
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(k, _)| *k == sample)
            .map(|(_, v)| v.parse::<f64>().unwrap());
        if v == Some(want) {
            return;
        }
        assert!(Instant::now() < end, "{sample} is {v:?}, not {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
