//! TLS listeners end to end with real clients on both runtimes: curl, `openssl s_client`,
//! Python `ssl` and `websockets`. Certificates are generated per test (tests/support/tls.rs).
//!
//! Needs: curl, openssl, /usr/bin/python3 with python3-websockets (`scripts/setup.sh test` installs them).
#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::tls::{s_client, served_fingerprint, Pki};
use support::{curl, free_port, Proc, Stack};

/// zring + the example handler with tls listeners: `specs` are the listen parameters after
/// the address (`tls,default-cert=x`); returns the stack and one port per spec.
fn tls_stack(rt: &str, pki: &Pki, specs: &[&str], extra: &[&str]) -> (Stack, Vec<u16>) {
    let ports: Vec<u16> = specs.iter().map(|_| free_port()).collect();
    let ids = pki.ids();
    let mut args: Vec<String> = vec!["--tls-identities-dir".into(), ids.display().to_string()];
    for (spec, port) in specs.iter().zip(&ports) {
        args.push("--listen".into());
        args.push(format!("127.0.0.1:{port},{spec}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stack = Stack::with_example(rt, &args);
    (stack, ports)
}

fn ca(pki: &Pki) -> String {
    pki.ca.display().to_string()
}

/// Waits (bounded) until zring's fd count is back to `want`.
fn fds_settle(s: &Stack, want: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let n = s.fd_count();
        if n <= want || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

both_runtimes! {
    https_with_curl(rt) {
        let pki = Pki::new("curl");
        pki.identity("www.example.test", "www.example.test", &["www.example.test"], false);
        let (_s, ports) = tls_stack(rt, &pki, &["tls"], &[]);
        let base = format!("https://www.example.test:{}", ports[0]);
        let resolve = format!("www.example.test:{}:127.0.0.1", ports[0]);
        let ca = ca(&pki);
        let (rc, body) = curl(&["--cacert", &ca, "--resolve", &resolve, &format!("{base}/hello")]);
        assert_eq!((rc, body.as_str()), (0, "hello\n"));
        // The handler sees the https scheme in the uri (the example handler echoes the head).
        let (rc, body) = curl(&[
            "--cacert", &ca, "--resolve", &resolve, "-d", "some body", &format!("{base}/echo"),
        ]);
        assert_eq!(rc, 0);
        assert!(body.starts_with(&format!("POST {base}/echo\n")), "{body}");
        assert!(body.ends_with("\nsome body"), "{body}");
        // Keep-alive: two requests, one connection, one handshake.
        let (rc, out) = curl(&[
            "--cacert", &ca, "--resolve", &resolve, "-w", "[%{num_connects}]",
            &format!("{base}/hello"), &format!("{base}/hello"),
        ]);
        assert_eq!((rc, out.as_str()), (0, "hello\n[1]hello\n[0]"));
        // A large streamed response through TLS records.
        let big = pki.dir.join("big");
        std::fs::write(&big, "x".repeat(300_000)).unwrap();
        let (rc, out) = curl(&[
            "--cacert", &ca, "--resolve", &resolve, "--data-binary", &format!("@{}", big.display()),
            "-o", "/dev/null", "-w", "%{size_download}", &format!("{base}/echo"),
        ]);
        assert_eq!(rc, 0);
        assert!(out.parse::<usize>().unwrap() > 300_000, "{out}");
        // An RSA identity works as well as an EC one.
        pki.identity("rsa.example.test", "rsa.example.test", &["rsa.example.test"], true);
        let resolve = format!("rsa.example.test:{}:127.0.0.1", ports[0]);
        let (rc, body) = curl(&[
            "--cacert", &ca, "--resolve", &resolve,
            &format!("https://rsa.example.test:{}/hello", ports[0]),
        ]);
        assert_eq!((rc, body.as_str()), (0, "hello\n"));
    }

    sni_and_default_cert(rt) {
        let pki = Pki::new("sni");
        pki.identity("a.test", "a.test", &["a.test"], false);
        pki.identity("_.wild.test", "wildcard", &["*.wild.test"], false);
        pki.identity("fallback", "fallback", &["fallback.test"], false);
        let (_s, ports) = tls_stack(rt, &pki, &["tls,default-cert=fallback", "tls"], &[]);
        let subject = |port: u16, sni: Option<&str>| {
            let mut args = vec!["-CAfile".to_string(), ca(&pki)];
            match sni {
                Some(n) => args.extend(["-servername".to_string(), n.to_string()]),
                None => args.push("-noservername".into()),
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = s_client(port, &args, "", Duration::from_millis(300));
            out.lines()
                .find_map(|l| l.strip_prefix("subject=CN = ").map(str::to_string))
                .unwrap_or_else(|| format!("no certificate: {out}"))
        };
        assert_eq!(subject(ports[0], Some("a.test")), "a.test");
        assert_eq!(subject(ports[0], Some("A.TEST")), "a.test");
        assert_eq!(subject(ports[0], Some("x.wild.test")), "wildcard");
        // One level only: a.b.wild.test is not covered by `_.wild.test`.
        assert_eq!(subject(ports[0], Some("a.b.wild.test")), "fallback");
        assert_eq!(subject(ports[0], Some("unknown.test")), "fallback");
        assert_eq!(subject(ports[0], None), "fallback");
        // No default-cert: an unknown or absent name is refused with unrecognized_name.
        assert_eq!(subject(ports[1], Some("a.test")), "a.test");
        for sni in [Some("unknown.test"), None] {
            let mut args = vec!["-CAfile".to_string(), ca(&pki)];
            match sni {
                Some(n) => args.extend(["-servername".to_string(), n.to_string()]),
                None => args.push("-noservername".into()),
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = s_client(ports[1], &args, "", Duration::from_millis(300));
            assert!(out.contains("unrecognized name"), "{sni:?}: {out}");
        }
    }

    versions_alpn_resumption(rt) {
        let pki = Pki::new("ver");
        pki.identity("v.test", "v.test", &["v.test"], false);
        let (_s, ports) = tls_stack(rt, &pki, &["tls,default-cert=v.test"], &[]);
        let ca = ca(&pki);
        for (flag, proto) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
            let out = s_client(
                ports[0],
                &["-CAfile", &ca, "-servername", "v.test", flag, "-alpn", "http/1.1"],
                "",
                Duration::from_millis(300),
            );
            assert!(out.contains(&format!("Protocol  : {proto}")), "{flag}: {out}");
            assert!(out.contains("Verification: OK"), "{flag}: {out}");
            assert!(out.contains("ALPN protocol: http/1.1"), "{flag}: {out}");
            // Only ECDHE + AEAD suites.
            let suite = out
                .lines()
                .find_map(|l| l.strip_prefix("New, ").map(str::to_string))
                .unwrap();
            assert!(suite.contains("GCM") || suite.contains("CHACHA20"), "{suite}");
        }
        // TLS 1.1 is refused.
        let out = s_client(ports[0], &["-tls1_1", "-servername", "v.test"], "", Duration::from_millis(300));
        assert!(out.contains("Cipher is (NONE)") && out.contains("alert handshake failure"), "{out}");
        // A client that speaks only h2 gets no_application_protocol (RFC 7301 §3.2).
        let out = s_client(ports[0], &["-servername", "v.test", "-alpn", "h2"], "", Duration::from_millis(300));
        assert!(out.contains("no application protocol"), "{out}");
        // Resumption: a ticket from the first connection resumes the second, 1.3 and 1.2.
        for flag in ["-tls1_3", "-tls1_2"] {
            let sess = pki.dir.join(format!("sess{flag}"));
            let sess = sess.display().to_string();
            let first = s_client(
                ports[0],
                &["-CAfile", &ca, "-servername", "v.test", flag, "-sess_out", &sess],
                "",
                Duration::from_millis(500),
            );
            assert!(first.contains("New, "), "{flag}: {first}");
            let second = s_client(
                ports[0],
                &["-CAfile", &ca, "-servername", "v.test", flag, "-sess_in", &sess],
                "",
                Duration::from_millis(500),
            );
            assert!(second.contains("Reused, "), "{flag}: {second}");
        }
    }

    wss_with_python_websockets(rt) {
        let pki = Pki::new("wss");
        pki.identity("ws.test", "ws.test", &["localhost"], false);
        let (_s, ports) = tls_stack(rt, &pki, &["tls,default-cert=ws.test"], &[]);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ws_clients/echo.py");
        let out = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(format!("wss://localhost:{}/ws", ports[0]))
            .args(["0", "1", "125", "126", "65535", "65536", "1000000"])
            .env("ZRING_CA", &pki.ca)
            .output()
            .expect("run echo.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 14, "{stdout}");
        assert!(stdout.contains("closed 1000"), "{stdout}");
    }

    // Goal: after the WebSocket close handshake zring closes the TCP connection at once
    // (the server closes first) and still ends the TLS session with close_notify, which a
    // strict client (Python `ssl`, ragged EOFs not suppressed) checks.
    wss_close_ends_with_close_notify(rt) {
        let pki = Pki::new("wsclose");
        pki.identity("ws.test", "ws.test", &["localhost"], false);
        let (_s, ports) = tls_stack(rt, &pki, &["tls,default-cert=ws.test"], &[]);
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls_clients/ws_close_notify.py");
        let out = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(ports[0].to_string())
            .arg(&pki.ca)
            .output()
            .expect("run ws_close_notify.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("close 1000"), "{stdout}");
        assert!(stdout.contains("close_notify"), "{stdout}");
    }

    rotation_keeps_clients(rt) {
        let pki = Pki::new("rot");
        let old = pki.identity("r.test", "r.test", &["r.test"], false);
        let (_s, ports) = tls_stack(rt, &pki, &["tls"], &[]);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls_clients/hold.py");
        let mut held = Proc::start(
            "hold.py",
            Command::new("/usr/bin/python3")
                .arg(&script)
                .arg(ports[0].to_string())
                .arg("r.test")
                .arg(&pki.ca)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let mut lines = BufReader::new(held.take_stdout().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert_eq!(first, format!("status HTTP/1.1 200 OK fp {old}"));
        // Rotate: new key and certificate for the same name, while the client is connected.
        let new = pki.identity("r.test", "r.test", &["r.test"], false);
        assert_ne!(old, new);
        // Reloads are checked at most once a second per name.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let out = s_client(
                ports[0],
                &["-CAfile", &ca(&pki), "-servername", "r.test"],
                "",
                Duration::from_millis(200),
            );
            if served_fingerprint(&out).as_deref() == Some(new.as_str()) {
                break;
            }
            assert!(Instant::now() < end, "new certificate never served: {out}");
            std::thread::sleep(Duration::from_millis(300));
        }
        // The connection made before the rotation still works.
        let mut stdin = held.take_stdin().unwrap();
        writeln!(stdin).unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), "status HTTP/1.1 200 OK");
        drop(stdin);
        assert!(held.wait_exit(Duration::from_secs(30)).expect("hold.py exits").success());
        // A certificate that goes bad keeps the last good one serving.
        std::fs::write(pki.ids().join("r.test.crt"), "not a certificate").unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        let out = s_client(ports[0], &["-CAfile", &ca(&pki), "-servername", "r.test"], "", Duration::from_millis(200));
        assert_eq!(served_fingerprint(&out).as_deref(), Some(new.as_str()), "{out}");
    }

    bad_input_closes_cleanly(rt) {
        let pki = Pki::new("bad");
        pki.identity("b.test", "b.test", &["b.test"], false);
        let (s, ports) = tls_stack(rt, &pki, &["tls,default-cert=b.test"], &["--tls-handshake-timeout", "1000"]);
        let port = ports[0];
        let baseline = s.fd_count();
        // Plain HTTP to the TLS port: a fatal alert record, then the connection ends.
        let out = support::exchange(port, b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", Duration::from_secs(5));
        assert!(out.len() >= 7 && out[0] == 0x15, "plain HTTP got {out:?}");
        // Garbage instead of a ClientHello: also an alert and a close.
        let out = support::exchange(port, &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff], Duration::from_secs(5));
        assert!(out.len() >= 7 && out[0] == 0x15, "garbage got {out:?}");
        let out = support::exchange(port, &[0x00; 64], Duration::from_secs(5));
        assert!(out.is_empty() || out[0] == 0x15, "zeros got {out:?}");
        // A truncated handshake: half a real ClientHello, then the client goes.
        let hello = client_hello();
        for _ in 0..20 {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(&hello[..hello.len() / 2]).unwrap();
        }
        // A client that never finishes: half a ClientHello, then silence. zring ends it at
        // the handshake timeout (1 s here), although bytes keep trickling in every 300 ms.
        let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stalled.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let started = Instant::now();
        let mut sent = 0;
        let closed = loop {
            if sent < hello.len() - 1 {
                let _ = stalled.write_all(&hello[sent..sent + 1]);
                sent += 1;
            }
            let mut b = [0u8; 64];
            match stalled.read(&mut b) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => {}
            }
            if started.elapsed() > Duration::from_secs(15) {
                break false;
            }
        };
        assert!(closed, "a stalled handshake was never ended");
        drop(stalled);
        // Everything above is gone: no fd (or direct descriptor's fd) leaked.
        let n = fds_settle(&s, baseline);
        assert!(n <= baseline, "fds: {baseline} before, {n} after");
        // And the listener still serves.
        let out = s_client(port, &["-CAfile", &ca(&pki), "-servername", "b.test"], "GET /hello HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n", Duration::from_millis(500));
        assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
    }

    startup_errors(rt) {
        let pki = Pki::new("start");
        let zring = env!("CARGO_BIN_EXE_zring");
        let run = |args: &[&str]| {
            let out = support::proc::output(Command::new(zring)
                .args(["--runtime", rt])
                .args(args))
                .unwrap();
            // zring logs to stdout, like Condure.
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), text)
        };
        let ids = pki.ids().display().to_string();
        let port = free_port().to_string();
        let listen = format!("127.0.0.1:{port},tls,default-cert=missing");
        let (code, err) = run(&["--listen", &listen, "--tls-identities-dir", &ids]);
        assert_ne!(code, Some(0));
        assert!(err.contains("missing.crt") || err.contains("missing.key"), "{err}");
        std::fs::write(pki.ids().join("broken.crt"), "junk").unwrap();
        std::fs::write(pki.ids().join("broken.key"), "junk").unwrap();
        let listen = format!("127.0.0.1:{port},tls,default-cert=broken");
        let (code, err) = run(&["--listen", &listen, "--tls-identities-dir", &ids]);
        assert_ne!(code, Some(0));
        assert!(err.contains("broken"), "{err}");
        let listen = format!("127.0.0.1:{port},tls");
        let (code, err) = run(&["--listen", &listen, "--tls-identities-dir", "/nonexistent/zring"]);
        assert_ne!(code, Some(0));
        assert!(err.contains("/nonexistent/zring"), "{err}");
    }
}

/// A real ClientHello (rustls's client, in memory).
fn client_hello() -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    let _ = &mut roots;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut c =
        rustls::ClientConnection::new(Arc::new(config), "b.test".try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    c.write_tls(&mut out).unwrap();
    assert!(out.len() > 100 && out[0] == 0x16);
    out
}
