//! Stream-mode sessions over time: keep-alives to the handler, session expiry, handoff.
use std::time::Duration;

use super::harness::*;
use super::ws::{masked, open};
use crate::bridge::Route;

/// A client whose request the handler answered with a streamed response head.
fn streaming(h: &mut Harness) -> (Client, Session) {
    let c = h.connect();
    h.write(c, b"GET /sub HTTP/1.1\r\nHost: t\r\n\r\n");
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").more());
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    (c, s)
}

#[test]
fn keep_alives_then_expiry_of_a_silent_handler() {
    // Goal: zring sends the handler a keep-alive on each pass of the sweep (slot 0 at
    // 0.1 s, then every 45 s), and closes the client 60 s after the handler's last packet.
    let mut h = Harness::new();
    let (c, s) = streaming(&mut h);
    h.advance(Duration::from_millis(59_990));
    let kinds: Vec<(String, u32, Route)> = h
        .packets()
        .into_iter()
        .map(|p| (p.kind.clone(), p.seq(), p.route))
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    for (n, (kind, seq, route)) in kinds.iter().enumerate() {
        assert_eq!((kind.as_str(), *seq), ("keep-alive", n as u32 + 1));
        assert!(matches!(route, Route::Router(a) if &a[..] == HANDLER.as_bytes()));
    }
    assert!(!h.is_closed(c));
    h.advance(Duration::from_millis(30));
    assert!(h.is_closed(c), "expired 60 s after {}'s last packet", s.id);
    assert_eq!(h.ios(c), [Io::Close]);
    assert_eq!(h.read_text(c), "", "no error response after the head");
    h.assert_no_packet(); // no cancel on expiry
}

#[test]
fn handler_packets_keep_the_session_alive() {
    // Goal: each handler packet restarts the 60 s expiry.
    let mut h = Harness::new();
    let (c, mut s) = streaming(&mut h);
    h.advance(Duration::from_secs(50));
    h.reply(&mut s, Reply::kind("keep-alive"));
    h.advance(Duration::from_secs(50));
    assert!(!h.is_closed(c));
    h.reply(&mut s, Reply::data(b"late"));
    assert_eq!(h.read_text(c), "4\r\nlate\r\n0\r\n\r\n");
    assert!(!h.is_closed(c));
}

#[test]
fn claimed_request_without_response_expires_silently() {
    // Goal: a handler that claims a request (credits) and then says nothing for 60 s: the
    // client is closed with no response at all, and the handler gets no cancel.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::credit(100));
    h.advance(Duration::from_secs(61));
    assert!(h.is_closed(c));
    assert_eq!(h.read_text(c), "");
    assert_eq!(h.ios(c), [Io::Close]);
    assert!(h.packets().iter().all(|p| p.kind == "keep-alive"));
}

#[test]
fn websocket_handoff_to_another_handler() {
    // Goal: `handoff-start` is answered `handoff-proceed`; while handed off zring sends
    // nothing (no messages, no keep-alives); the new handler's first packet (its own
    // `from`, the next seq) resumes the session and gets the held message.
    let mut h = Harness::new();
    let (c, mut s) = open(&mut h, 1000);
    h.write(c, &masked(0x1, b"one"));
    assert_eq!(h.packet().body, b"one");
    h.reply(&mut s, Reply::kind("handoff-start"));
    let p = h.packet();
    assert_eq!((p.kind.as_str(), p.seq()), ("handoff-proceed", 2));
    h.write(c, &masked(0x1, b"two"));
    h.advance(Duration::from_secs(50));
    h.assert_no_packet();
    h.reply(&mut s, Reply::kind("keep-alive").sent_by("h2"));
    let p = h.packet();
    assert_eq!((p.body.as_slice(), p.seq()), (&b"two"[..], 3));
    assert!(matches!(&p.route, Route::Router(a) if &a[..] == b"h2"));
}
