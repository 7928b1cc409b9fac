//! TLS: a rustls client in memory against the worker's TLS listener.
use super::harness::*;

#[test]
fn handshake_then_request_and_close_notify() {
    // Goal: the handshake completes over the worker's sends, the request is seen as
    // `https://`, the response arrives decrypted, and `Connection: close` ends with
    // close_notify before the write shutdown.
    let mut h = Harness::new();
    let c = h.connect_tls();
    assert!(h.tls_established(c), "the handshake runs within one drive");
    h.assert_no_packet();
    h.write(
        c,
        b"GET /s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (req, mut s) = h.request();
    assert_eq!(req.uri, "https://localhost/s");
    h.reply(&mut s, Reply::response(200, "OK").body(b"secret"));
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 6\r\n\r\nsecret"
    );
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.client_shutdown(c);
    assert!(h.is_closed(c));
}

#[test]
fn keep_alive_over_tls() {
    // Goal: two requests on one TLS connection, each a new session.
    let mut h = Harness::new();
    let c = h.connect_tls();
    for n in 1..=2 {
        h.write(c, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let (req, mut s) = h.request();
        assert_eq!(req.id(), format!("0-0-{n}"));
        h.reply(&mut s, Reply::response(200, "OK").body(b"k"));
        assert_eq!(
            h.read_text(c),
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk"
        );
    }
    assert_eq!(h.ios(c), []);
}

#[test]
fn handshake_timeout_closes() {
    // Goal: a client that connects and never finishes its handshake is closed when
    // `--tls-handshake-timeout` passes.
    let mut cfg = config();
    cfg.tls_handshake_timeout_ms = 3000;
    let mut h = Harness::with_config(cfg);
    let c = h.connect_raw(TLS); // says nothing at all
    let c2 = h.connect_tls();
    h.advance(std::time::Duration::from_millis(2990));
    assert!(!h.is_closed(c));
    h.advance(std::time::Duration::from_millis(30));
    assert!(h.is_closed(c));
    assert_eq!(h.ios(c), [Io::Close]);
    assert!(
        !h.is_closed(c2),
        "a finished handshake has no such deadline"
    );
}
