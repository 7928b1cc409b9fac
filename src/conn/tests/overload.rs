//! At the connection limit the worker stays responsive: it closes its oldest idle
//! connection to make room, and with none idle it answers the newcomer `503` with
//! `Retry-After` (never leaving it in the backlog with no answer). Open exchanges and
//! WebSockets are never closed for room.
use super::harness::*;

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";

/// A worker whose share of the stream limit is 3 connections.
fn small() -> Harness {
    let mut cfg = config();
    cfg.stream_maxconn = 3;
    Harness::with_config(cfg)
}

/// A client with one request answered: a kept-alive idle connection.
fn kept_alive(h: &mut Harness) -> Client {
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"hi"));
    assert!(h.read_text(c).starts_with("HTTP/1.1 200 OK\r\n"));
    c
}

fn assert_503(h: &mut Harness, c: Client) {
    let text = h.read_text(c);
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}

#[test]
fn the_oldest_idle_connection_makes_room_then_newcomers_get_503() {
    // Goal: two kept-alive idle connections and one open request fill the share; the next
    // two newcomers each take the place of the oldest idle one (closed with a FIN, no
    // bytes), and are served; the one after that, with nothing idle, gets 503.
    let mut h = small();
    let old = kept_alive(&mut h);
    let newer = kept_alive(&mut h);
    let busy = h.connect();
    h.write(busy, GET);
    let (_, mut busy_s) = h.request();

    let a = h.connect();
    assert!(h.is_closed(old), "the oldest idle connection made room");
    assert_eq!(h.ios(old), [Io::Close]);
    assert_eq!(h.read_text(old), "");
    assert!(!h.is_closed(newer));
    h.write(a, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK"));
    assert!(h.read_text(a).starts_with("HTTP/1.1 200 OK\r\n"));

    // `a` is idle again now, and newer than `newer`.
    let b = h.connect();
    assert!(h.is_closed(newer));
    assert!(!h.is_closed(a));
    h.write(b, GET);
    let (_, _b_open) = h.request(); // b stays busy

    let c = h.connect();
    assert!(
        h.is_closed(a),
        "a went idle after its response: it made room for c"
    );
    h.write(c, GET);
    let (_, _c_open) = h.request();

    // Now: busy, b, c, all mid-request; nothing idle.
    let d = h.connect();
    assert_503(&mut h, d);
    h.assert_no_packet();
    h.client_shutdown(d);
    assert!(h.is_closed(d));
    assert!(
        !h.is_closed(busy),
        "an open request is never closed for room"
    );
    h.reply(&mut busy_s, Reply::response(200, "OK"));
    assert!(h.read_text(busy).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn a_new_connection_that_sent_nothing_is_idle_too() {
    // Goal: connections that connected and never sent a byte are closed for room, oldest
    // first, before any newcomer is refused.
    let mut h = small();
    let s1 = h.connect();
    let s2 = h.connect();
    let s3 = h.connect();
    let n = h.connect();
    assert!(h.is_closed(s1));
    assert!(!h.is_closed(s2) && !h.is_closed(s3));
    h.write(n, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK"));
    assert!(h.read_text(n).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn websockets_and_partial_heads_are_never_closed_for_room() {
    // Goal: an open WebSocket and a connection mid-head are not idle: the newcomer gets 503.
    let mut h = small();
    let ws = h.connect();
    h.write(
        ws,
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(101, "Switching Protocols"));
    assert!(h.read_text(ws).starts_with("HTTP/1.1 101 "));
    let partial = h.connect();
    h.write(partial, b"GET /a HTTP/1.1\r\n");
    let busy = h.connect();
    h.write(busy, GET);
    let _ = h.request();
    let n = h.connect();
    assert_503(&mut h, n);
    assert!(!h.is_closed(ws) && !h.is_closed(partial) && !h.is_closed(busy));
}

#[test]
fn a_tls_newcomer_gets_its_503_after_the_handshake() {
    // Goal: at the limit a TLS client is answered inside TLS (a 503 it can read), not
    // dropped mid-handshake.
    let mut h = small();
    for _ in 0..3 {
        let c = h.connect();
        h.write(c, GET);
        let _ = h.request();
    }
    let t = h.connect_tls();
    assert!(h.tls_established(t));
    let text = h.read_text(t);
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text}");
}
