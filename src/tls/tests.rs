//! Identities, configuration and sessions against a real rustls client, in memory, with
//! certificates generated at test time (rcgen; RSA keys from `openssl genpkey`).
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore};

use super::config::{provider, server_config, ALPN_HTTP11};
use super::identities::{check_startup, valid_name, Identities, Resolver};
use super::session::{Session, TlsError};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    })
}

/// An RSA key from openssl: (PKCS#8 PEM, traditional "RSA PRIVATE KEY" PEM).
fn rsa_key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        let run = |args: &[&str], input: Option<&str>| {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("openssl");
            if let Some(input) = input {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let pkcs8 = run(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
        );
        let traditional = run(&["pkey", "-traditional"], Some(&pkcs8));
        assert!(traditional.contains("BEGIN RSA PRIVATE KEY"));
        (pkcs8, traditional)
    })
}

#[derive(Clone, Copy)]
enum Key {
    Ec,
    RsaPkcs8,
    RsaTraditional,
}

/// Writes identity `name` for `hosts` into `dir`; returns the leaf certificate.
fn write_identity(dir: &Path, name: &str, hosts: &[&str], key: Key) -> CertificateDer<'static> {
    let params =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    let (pair, key_pem) = match key {
        Key::Ec => {
            let pair = KeyPair::generate().unwrap();
            let pem = pair.serialize_pem();
            (pair, pem)
        }
        Key::RsaPkcs8 | Key::RsaTraditional => {
            let (pkcs8, traditional) = rsa_key();
            let pair = KeyPair::from_pem_and_sign_algo(pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
            let pem = if matches!(key, Key::RsaPkcs8) {
                pkcs8
            } else {
                traditional
            };
            (pair, pem.clone())
        }
    };
    let cert = params.signed_by(&pair, &ca().issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key_pem).unwrap();
    cert.der().clone()
}

fn bump_mtime(dir: &Path, name: &str, seconds: u64) {
    let when = SystemTime::now() + Duration::from_secs(seconds);
    for ext in ["crt", "key"] {
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join(format!("{name}.{ext}")))
            .unwrap();
        f.set_modified(when).unwrap();
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("zring-tls-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn leaf(key: &rustls::sign::CertifiedKey) -> &CertificateDer<'static> {
    &key.cert[0]
}

fn client_config(version: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca().der.clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Arc::new(config)
}

/// Runs client and server until neither has anything to say; `chunk` bytes per feed.
fn exchange(
    client: &mut ClientConnection,
    server: &mut Session,
    chunk: usize,
) -> Result<(), TlsError> {
    let mut to_server = Vec::new();
    let mut plaintext = Vec::new();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        let mut pending = 0;
        let mut progressed = false;
        while pending < to_server.len() {
            pending = (pending + chunk).min(to_server.len());
            let fed = server.feed(&mut to_server[..pending], &mut plaintext, &mut out)?;
            to_server.drain(..fed.consumed);
            pending -= fed.consumed;
            progressed |= fed.consumed > 0;
        }
        assert!(plaintext.is_empty());
        if !out.is_empty() {
            let mut slice = &out[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).unwrap();
                client
                    .process_new_packets()
                    .expect("client accepts the server's records");
            }
            out.clear();
            progressed = true;
        }
        if !progressed && !client.wants_write() {
            return Ok(());
        }
    }
    panic!("no end to the exchange");
}

struct Setup {
    dir: std::path::PathBuf,
    config: Arc<rustls::ServerConfig>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup(tag: &str, default_name: Option<&str>) -> Setup {
    let dir = tempdir(tag);
    write_identity(&dir, "a.example.com", &["a.example.com"], Key::Ec);
    write_identity(&dir, "_.example.com", &["*.example.com"], Key::Ec);
    write_identity(&dir, "default", &["default.test"], Key::Ec);
    let provider = provider();
    let identities = Identities::new(&dir, provider.clone());
    let config = server_config(provider, identities, default_name).unwrap();
    Setup { dir, config }
}

fn connect(
    setup: &Setup,
    client_config: &Arc<ClientConfig>,
    host: &str,
) -> (ClientConnection, Session, Result<(), TlsError>) {
    let mut client =
        ClientConnection::new(client_config.clone(), host.to_string().try_into().unwrap()).unwrap();
    let mut server = Session::new(setup.config.clone());
    let result = exchange(&mut client, &mut server, usize::MAX);
    (client, server, result)
}

#[test]
fn names_that_could_leave_the_directory_are_refused() {
    for bad in [
        "", ".", "..", "../x", "a/b", ".hidden", "a\0b", "a\nb", "a\\b", "\x7f",
    ] {
        assert!(!valid_name(bad), "{bad:?}");
    }
    assert!(!valid_name(&"a".repeat(254)));
    assert!(valid_name(&"a".repeat(253)));
    assert!(valid_name("default_443"));
    assert!(valid_name("_.example.com"));
    let dir = tempdir("traversal");
    let inner = dir.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    write_identity(&dir, "secret", &["secret.test"], Key::Ec);
    let identities = Identities::new(&inner, provider());
    assert!(identities.lookup("../secret", Instant::now()).is_none());
    assert_eq!(identities.cached(), 0);
}

#[test]
fn lookup_exact_wildcard_default_and_none() {
    let dir = tempdir("lookup");
    let exact = write_identity(&dir, "a.example.com", &["a.example.com"], Key::Ec);
    let wild = write_identity(&dir, "_.example.com", &["*.example.com"], Key::Ec);
    let default = write_identity(&dir, "default", &["default.test"], Key::Ec);
    let identities = Identities::new(&dir, provider());
    let now = Instant::now();
    let with_default = Resolver::new(identities.clone(), Some("default"));
    let without = Resolver::new(identities, None);
    let got = |r: &Resolver, sni: Option<&str>| r.resolve_name(sni, now).map(|k| leaf(&k).clone());
    assert_eq!(
        got(&with_default, Some("a.example.com")),
        Some(exact.clone())
    );
    assert_eq!(got(&with_default, Some("A.Example.COM")), Some(exact));
    assert_eq!(got(&with_default, Some("www.example.com")), Some(wild));
    // One level only: x.y.example.com looks for _.y.example.com.
    assert_eq!(
        got(&with_default, Some("x.y.example.com")),
        Some(default.clone())
    );
    assert_eq!(
        got(&with_default, Some("other.test")),
        Some(default.clone())
    );
    assert_eq!(got(&with_default, None), Some(default));
    assert_eq!(got(&without, Some("other.test")), None);
    assert_eq!(got(&without, None), None);
}

#[test]
fn rsa_and_ec_keys_in_every_pem_form_load() {
    let dir = tempdir("keys");
    write_identity(&dir, "ec", &["ec.test"], Key::Ec);
    write_identity(&dir, "rsa8", &["rsa8.test"], Key::RsaPkcs8);
    write_identity(&dir, "rsa1", &["rsa1.test"], Key::RsaTraditional);
    let identities = Identities::new(&dir, provider());
    for name in ["ec", "rsa8", "rsa1"] {
        identities.load(name).unwrap();
    }
    // Each serves a real handshake, both versions.
    for (name, version) in [
        ("rsa1", &rustls::version::TLS12),
        ("rsa8", &rustls::version::TLS13),
        ("ec", &rustls::version::TLS12),
    ] {
        let config = server_config(provider(), identities.clone(), Some(name)).unwrap();
        // `Setup` removes its dir when dropped: give it none, `dir` is removed below.
        let setup = Setup {
            dir: dir.join("none"),
            config,
        };
        let (_, server, result) = connect(&setup, &client_config(version), &format!("{name}.test"));
        result.unwrap();
        assert!(!server.is_handshaking());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn startup_check_names_the_missing_or_bad_file() {
    let dir = tempdir("startup");
    write_identity(&dir, "good", &["good.test"], Key::Ec);
    let identities = Identities::new(&dir, provider());
    check_startup(&identities, ["good"]).unwrap();
    let e = check_startup(&identities, ["good", "missing"]).unwrap_err();
    assert!(e.contains("missing.crt"), "{e}");
    assert!(!e.contains('\n'));
    std::fs::write(dir.join("bad.crt"), "not pem").unwrap();
    std::fs::write(dir.join("bad.key"), "not pem").unwrap();
    let e = check_startup(&identities, ["bad"]).unwrap_err();
    assert!(e.contains("bad.crt"), "{e}");
    write_identity(&dir, "other", &["other.test"], Key::Ec);
    std::fs::copy(dir.join("other.key"), dir.join("good.key")).unwrap();
    let e = check_startup(&identities, ["good"]).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn rotation_shows_after_the_recheck_interval_and_bad_files_keep_the_old_key() {
    let dir = tempdir("rotation");
    let first = write_identity(&dir, "site", &["site.test"], Key::Ec);
    let identities = Identities::new(&dir, provider());
    let t0 = Instant::now();
    assert_eq!(leaf(&identities.lookup("site", t0).unwrap()), &first);
    let second = write_identity(&dir, "site", &["site.test"], Key::Ec);
    bump_mtime(&dir, "site", 10);
    let early = t0 + Duration::from_millis(500);
    assert_eq!(leaf(&identities.lookup("site", early).unwrap()), &first);
    let t1 = t0 + Duration::from_millis(1_100);
    assert_eq!(leaf(&identities.lookup("site", t1).unwrap()), &second);
    // Broken at runtime: the last good key stays.
    std::fs::write(dir.join("site.crt"), "garbage").unwrap();
    bump_mtime(&dir, "site", 20);
    let t2 = t1 + Duration::from_millis(1_100);
    assert_eq!(leaf(&identities.lookup("site", t2).unwrap()), &second);
    std::fs::remove_file(dir.join("site.key")).unwrap();
    let t3 = t2 + Duration::from_millis(1_100);
    assert_eq!(leaf(&identities.lookup("site", t3).unwrap()), &second);
    // Fixed again: picked up.
    let third = write_identity(&dir, "site", &["site.test"], Key::Ec);
    bump_mtime(&dir, "site", 30);
    let t4 = t3 + Duration::from_millis(1_100);
    assert_eq!(leaf(&identities.lookup("site", t4).unwrap()), &third);
}

fn roundtrip(client: &mut ClientConnection, server: &mut Session) {
    use std::io::{Read, Write};
    client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let (mut plaintext, mut out) = (Vec::new(), Vec::new());
    let fed = server.feed(&mut wire, &mut plaintext, &mut out).unwrap();
    assert_eq!(fed.consumed, wire.len());
    assert_eq!(plaintext, b"GET / HTTP/1.1\r\n\r\n");
    server
        .encrypt(&mut [], b"HTTP/1.1 200 OK\r\n\r\n", &mut out)
        .unwrap();
    let mut slice = &out[..];
    while !slice.is_empty() {
        client.read_tls(&mut slice).unwrap();
    }
    client.process_new_packets().unwrap();
    let mut got = vec![0; 64];
    let n = client.reader().read(&mut got).unwrap();
    assert_eq!(&got[..n], b"HTTP/1.1 200 OK\r\n\r\n");
}

#[test]
fn handshake_both_versions_alpn_sni_data_and_resumption() {
    let setup = setup("handshake", Some("default"));
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client_config = client_config(version);
        let (mut client, mut server, result) = connect(&setup, &client_config, "a.example.com");
        result.unwrap();
        assert_eq!(server.protocol_version(), Some(version.version));
        assert_eq!(server.alpn(), Some(ALPN_HTTP11));
        assert_eq!(client.alpn_protocol(), Some(ALPN_HTTP11));
        assert_eq!(server.sni(), Some("a.example.com"));
        assert_eq!(server.handshake_kind(), Some(HandshakeKind::Full));
        let expected = std::fs::read(setup.dir.join("a.example.com.crt")).unwrap();
        let served = client.peer_certificates().unwrap()[0].clone();
        let parsed: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(&expected)
            .collect::<Result<Vec<CertificateDer>, _>>()
            .unwrap();
        assert_eq!(served, parsed[0]);
        roundtrip(&mut client, &mut server);
        // Second connection: resumed (ticket in 1.3; ticket or session id in 1.2).
        let (mut client, mut server, result) = connect(&setup, &client_config, "a.example.com");
        result.unwrap();
        assert_eq!(
            server.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}"
        );
        roundtrip(&mut client, &mut server);
        // Wildcard routing.
        let (client, _, result) = connect(&setup, &client_config, "www.example.com");
        result.unwrap();
        let wild = std::fs::read(setup.dir.join("_.example.com.crt")).unwrap();
        let wild: Vec<CertificateDer> = rustls::pki_types::pem::PemObject::pem_slice_iter(&wild)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(client.peer_certificates().unwrap()[0], wild[0]);
    }
}

#[test]
fn handshake_fed_one_byte_at_a_time() {
    let setup = setup("split", Some("default"));
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut client =
            ClientConnection::new(client_config(version), "a.example.com".try_into().unwrap())
                .unwrap();
        let mut server = Session::new(setup.config.clone());
        exchange(&mut client, &mut server, 1).unwrap();
        assert!(!server.is_handshaking());
        roundtrip(&mut client, &mut server);
    }
}

#[test]
fn unknown_name_without_default_fails_the_handshake() {
    let setup = setup("nocert", None);
    let mut client = ClientConnection::new(
        client_config(&rustls::version::TLS13),
        "unknown.test".try_into().unwrap(),
    )
    .unwrap();
    let mut server = Session::new(setup.config.clone());
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    let (mut plaintext, mut out) = (Vec::new(), Vec::new());
    let e = server
        .feed(&mut wire, &mut plaintext, &mut out)
        .unwrap_err();
    assert_eq!(e, TlsError::NoCertificate);
    // A fatal alert record went out; the client sees it as such.
    assert_eq!(
        out,
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112],
        "unrecognized_name"
    );
    client.read_tls(&mut &out[..]).unwrap();
    assert!(matches!(
        client.process_new_packets(),
        Err(rustls::Error::AlertReceived(_))
    ));
    // Sticky.
    assert_eq!(
        server.feed(&mut [], &mut plaintext, &mut out),
        Err(TlsError::NoCertificate)
    );
}

#[test]
fn garbage_and_plain_http_get_an_alert() {
    let setup = setup("garbage", Some("default"));
    // RFC 8446 §6.2: a record that does not parse is decode_error; a well-formed record of
    // the wrong type before the handshake is unexpected_message.
    const DECODE_ERROR: u8 = 50;
    const UNEXPECTED_MESSAGE: u8 = 10;
    for (input, expected, alert) in [
        (
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            TlsError::PlainHttp,
            DECODE_ERROR,
        ),
        (
            &b"\x00\x01\x02\x03\x04\x05\x06\x07"[..],
            TlsError::NotTls,
            DECODE_ERROR,
        ),
        (
            &b"\x17\x03\x03\x00\x05hello"[..],
            TlsError::NotTls,
            UNEXPECTED_MESSAGE,
        ),
    ] {
        let mut server = Session::new(setup.config.clone());
        let (mut plaintext, mut out) = (Vec::new(), Vec::new());
        let mut input = input.to_vec();
        let e = server
            .feed(&mut input, &mut plaintext, &mut out)
            .unwrap_err();
        assert_eq!(e, expected, "{input:?}");
        // One fatal alert record (RFC 8446 §6): level 2, then the description.
        assert_eq!(
            out[..5],
            [0x15, 0x03, 0x03, 0x00, 0x02],
            "{input:?}: {out:?}"
        );
        assert_eq!(out[5..], [2, alert], "{input:?}: {out:?}");
        assert!(plaintext.is_empty());
    }
}

#[test]
fn close_notify_both_ways() {
    let setup = setup("close", Some("default"));
    let (mut client, mut server, result) = connect(
        &setup,
        &client_config(&rustls::version::TLS13),
        "a.example.com",
    );
    result.unwrap();
    let mut out = Vec::new();
    server.close_notify(&mut [], &mut out).unwrap();
    client.read_tls(&mut &out[..]).unwrap();
    let state = client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
    client.send_close_notify();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    wire.extend_from_slice(b"\x17\x03\x03\x00\x20 bytes after close_notify");
    let (mut plaintext, mut out) = (Vec::new(), Vec::new());
    let fed = server.feed(&mut wire, &mut plaintext, &mut out).unwrap();
    assert!(fed.peer_closed);
    assert_eq!(fed.consumed, wire.len());
    assert!(plaintext.is_empty());
    assert!(server.is_closed());
}

/// The client's first flight (one ClientHello record) re-cut into two handshake records.
fn client_hello_in_two_records(host: &str) -> (Vec<u8>, Vec<u8>) {
    let mut client = ClientConnection::new(
        client_config(&rustls::version::TLS13),
        host.to_string().try_into().unwrap(),
    )
    .unwrap();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    assert_eq!(wire[0], 0x16);
    let length = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
    assert_eq!(wire.len(), 5 + length);
    let body = &wire[5..];
    let record = |part: &[u8]| {
        let mut r = vec![0x16, 0x03, 0x01];
        r.extend_from_slice(&(part.len() as u16).to_be_bytes());
        r.extend_from_slice(part);
        r
    };
    (record(&body[..length / 2]), record(&body[length / 2..]))
}

#[test]
fn client_hello_across_records_is_joined_in_the_callers_buffer() {
    let setup = setup("joined", Some("default"));
    let (first, second) = client_hello_in_two_records("a.example.com");
    let mut server = Session::new(setup.config.clone());
    let (mut plaintext, mut out) = (Vec::new(), Vec::new());
    let mut pending = first.clone();
    let fed = server.feed(&mut pending, &mut plaintext, &mut out).unwrap();
    // The half message stays with the caller, possibly rewritten in place.
    pending.drain(..fed.consumed);
    assert!(out.is_empty());
    pending.extend_from_slice(&second);
    let fed = server.feed(&mut pending, &mut plaintext, &mut out).unwrap();
    assert_eq!(fed.consumed, pending.len());
    assert_eq!(out[0], 0x16, "ServerHello follows");
    assert_eq!(server.sni(), Some("a.example.com"));
}

#[test]
fn garbage_after_half_a_client_hello_fails_without_panic() {
    let setup = setup("half", Some("default"));
    let (first, _) = client_hello_in_two_records("a.example.com");
    for garbage in [
        &b"\x00\x00\x00\x00\x00\x00"[..],
        b"\x17\x03\x03\x00\x01x",
        b"\x15\x03\x03\x00\x02\x02\x28",
    ] {
        let mut server = Session::new(setup.config.clone());
        let (mut plaintext, mut out) = (Vec::new(), Vec::new());
        let mut pending = first.clone();
        let fed = server.feed(&mut pending, &mut plaintext, &mut out).unwrap();
        pending.drain(..fed.consumed);
        pending.extend_from_slice(garbage);
        let e = server
            .feed(&mut pending, &mut plaintext, &mut out)
            .unwrap_err();
        assert_ne!(e, TlsError::NoCertificate);
        assert_eq!(server.feed(&mut pending, &mut plaintext, &mut out), Err(e));
        assert!(server.encrypt(&mut pending, b"x", &mut out).is_err());
    }
}

#[test]
fn plain_http_byte_by_byte_is_still_plain_http() {
    let setup = setup("http-bytes", Some("default"));
    let mut server = Session::new(setup.config.clone());
    let (mut plaintext, mut out) = (Vec::new(), Vec::new());
    let mut pending = Vec::new();
    let mut result = Ok(());
    for &b in b"GET / HTTP/1.1\r\n\r\n" {
        pending.push(b);
        match server.feed(&mut pending, &mut plaintext, &mut out) {
            Ok(fed) => {
                pending.drain(..fed.consumed);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    assert_eq!(result, Err(TlsError::PlainHttp));
    assert_eq!(out.first(), Some(&0x15));
}

#[test]
fn encrypt_before_the_handshake_is_refused() {
    let setup = setup("early", Some("default"));
    let mut server = Session::new(setup.config.clone());
    let mut out = Vec::new();
    assert_eq!(
        server.encrypt(&mut [], b"x", &mut out),
        Err(TlsError::NotReady)
    );
    assert!(out.is_empty());
}

#[test]
fn the_cache_stays_bounded() {
    use crate::limits::TLS_IDENTITIES_CACHED_MAX;
    let dir = tempdir("bounded");
    write_identity(&dir, "seed", &["seed.test"], Key::Ec);
    let identities = Identities::new(&dir, provider());
    let now = Instant::now();
    for i in 0..TLS_IDENTITIES_CACHED_MAX + 8 {
        let name = format!("n{i}.test");
        for ext in ["crt", "key"] {
            std::fs::copy(
                dir.join(format!("seed.{ext}")),
                dir.join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
        let at = now + Duration::from_millis(i as u64);
        assert!(identities.lookup(&name, at).is_some());
        assert!(identities.cached() <= TLS_IDENTITIES_CACHED_MAX);
    }
    assert_eq!(identities.cached(), TLS_IDENTITIES_CACHED_MAX);
    // The oldest went first; it loads again on demand.
    assert!(identities
        .lookup("n0.test", now + Duration::from_secs(5))
        .is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
