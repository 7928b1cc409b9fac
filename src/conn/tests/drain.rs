//! The drain (the first SIGTERM): no more accepts; idle connections close after a grace
//! for a request on its way (`DRAIN_IDLE_GRACE_MS`); an
//! exchange with its handler finishes (`Connection: close` on a response that starts now);
//! an open WebSocket gets a close 1001; what is left at `--shutdown-timeout` is cut, its
//! handlers told with batched `cancel`s.
use std::time::Duration;

use super::harness::*;
use super::ws::{masked, open};
use crate::config::Config;

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
const TIMEOUT: Duration = Duration::from_millis(10_000);
const GRACE: Duration = Duration::from_millis(crate::limits::DRAIN_IDLE_GRACE_MS);

#[test]
fn idle_connections_close_after_the_grace() {
    // Goal: a connection that sent nothing, and a kept-alive one between requests, are kept
    // `DRAIN_IDLE_GRACE_MS` for a request that may be on its way, then closed (no linger:
    // nothing is owed to them); no accepts; the worker is then done.
    let mut h = Harness::new();
    let fresh = h.connect();
    let kept = h.connect();
    h.write(kept, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"hi"));
    let text = h.read_text(kept);
    assert!(text.ends_with("\r\n\r\nhi"), "{text}");
    assert!(!text.contains("Connection: close"), "{text}");
    assert!(h.accepting());
    h.drain();
    assert!(!h.accepting(), "no accepts while draining");
    assert_eq!(h.ios(fresh), []);
    assert_eq!(h.ios(kept), []);
    h.advance(GRACE - Duration::from_millis(10));
    assert_eq!(h.ios(fresh), [], "still in the grace");
    h.advance(Duration::from_millis(20));
    assert_eq!(h.ios(fresh), [Io::Close]);
    assert_eq!(h.ios(kept), [Io::Close]);
    h.assert_no_packet();
    assert_eq!(h.conn_count(), 0);
    assert!(h.finished(), "nothing left: the worker is done");
}

#[test]
fn a_request_in_the_grace_is_served_with_connection_close() {
    // Goal: a kept-alive client whose next request, and a new client whose first request,
    // arrive just after the drain began (they were on their way) are answered, each with
    // `Connection: close`, then closed; so is a connection accepted during the drain (an
    // io_uring accept already in the kernel). Closing them would reset requests in flight.
    let mut h = Harness::new();
    let kept = h.connect();
    h.write(kept, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"hi"));
    assert!(h.read_text(kept).ends_with("hi"));
    let fresh = h.connect();
    h.drain();
    let late = h.connect();
    h.advance(GRACE / 2);
    for c in [kept, fresh, late] {
        assert_eq!(h.ios(c), [], "kept open in the grace");
        h.write(c, GET);
        let (_, mut s) = h.request();
        h.reply(&mut s, Reply::response(200, "OK").body(b"last"));
        assert_eq!(
            h.read_text(c),
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast"
        );
        assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    }
}

#[test]
fn a_request_with_its_handler_finishes_with_connection_close() {
    // Goal: the handler took the request before the drain and answers during it: the
    // response is written in full with `Connection: close`, then the connection ends (a
    // write shutdown, then the close when the client closes); no cancel goes to the
    // handler, and the worker is done only then.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::credit(100));
    h.drain();
    assert_eq!(h.ios(c), [], "the exchange goes on");
    assert!(!h.finished());
    h.advance(Duration::from_millis(500));
    h.reply(&mut s, Reply::response(200, "OK").body(b"late"));
    let text = h.read_text(c);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nlate"), "{text}");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.client_shutdown(c);
    assert_eq!(h.ios(c), [Io::ShutdownWrite, Io::Close]);
    assert_eq!(kinds(h.packets()), Vec::<String>::new(), "no cancel");
    assert!(h.finished());
}

#[test]
fn a_response_under_way_finishes_then_the_connection_closes() {
    // Goal: a streamed response that began before the drain (its head promised keep-alive)
    // is delivered to its end; then the connection closes instead of reading a next
    // request, and a pipelined one is not served.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"one").more());
    let head = h.read_text(c);
    assert!(!head.contains("Connection: close"), "{head}");
    let credit = h.packet();
    assert_eq!(credit.kind, "credit");
    h.drain();
    h.write(c, GET); // pipelined: never answered
    h.reply(&mut s, Reply::data(b"two"));
    assert_eq!(h.read_text(c), "3\r\ntwo\r\n0\r\n\r\n");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    let left: Vec<String> = h.packets().into_iter().map(|p| p.kind).collect();
    assert!(
        left.iter().all(|k| k == "credit"),
        "no new request: {left:?}"
    );
}

#[test]
fn an_open_websocket_gets_1001_and_its_handler_a_cancel() {
    // Goal: close frame 1001, then the close handshake: once the client's close is in, the
    // TCP connection closes (the server first, no lingering shutdown). The handler gets a
    // cancel, and nothing after it (not the client's close).
    let mut h = Harness::new();
    let (c, s) = open(&mut h, 1000);
    h.drain();
    assert_eq!(h.read(c), [0x88, 2, 0x03, 0xe9]);
    assert_eq!(h.ios(c), [], "waiting for the client's close");
    let cancel = h.packet();
    assert_eq!(cancel.kind, "cancel");
    assert_eq!(cancel.id(), s.id);
    h.write(c, &masked(0x8, &[0x03, 0xe9]));
    assert_eq!(h.ios(c), [Io::Close]);
    h.assert_no_packet();
    assert!(h.finished());
}

#[test]
fn a_websocket_that_does_not_answer_1001_is_closed_after_the_close_wait() {
    // Goal: the close handshake is bounded: no close from the client within the close wait
    // (5 s), and the connection ends (a write shutdown, then the linger).
    let mut h = Harness::new();
    let (c, _s) = open(&mut h, 1000);
    h.drain();
    assert_eq!(h.read(c), [0x88, 2, 0x03, 0xe9]);
    h.advance(Duration::from_millis(4_900));
    assert_eq!(h.ios(c), []);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.advance(Duration::from_millis(2_100));
    assert_eq!(h.ios(c), [Io::ShutdownWrite, Io::Close]);
    assert!(h.finished());
}

#[test]
fn what_is_left_at_the_deadline_is_cut_with_one_batched_cancel() {
    // Goal: two responses under way at `--shutdown-timeout` (the handler stalls) are cut:
    // closed at once, and their handler gets one list-form cancel naming both; not before.
    let cfg = Config {
        shutdown_timeout_ms: TIMEOUT.as_millis() as u64,
        ..config()
    };
    let mut h = Harness::with_config(cfg);
    let mut sessions = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let c = h.connect();
        h.write(c, GET);
        let (_, mut s) = h.request();
        h.reply(&mut s, Reply::response(200, "OK").body(b"x").more());
        let _ = h.read_text(c);
        let _ = h.packets(); // the credit for the first chunk
        clients.push(c);
        sessions.push(s);
    }
    h.drain();
    h.advance(TIMEOUT - Duration::from_millis(100));
    for &c in &clients {
        assert!(!h.is_closed(c), "cut before the deadline");
    }
    assert_eq!(kinds(h.packets()), Vec::<String>::new());
    h.advance(Duration::from_millis(200));
    for &c in &clients {
        assert_eq!(h.ios(c), [Io::Close]);
    }
    let mut left = h.packets();
    left.retain(|p| p.kind != "keep-alive");
    assert_eq!(left.len(), 1, "{left:?}");
    let cancel = &left[0];
    assert_eq!(cancel.kind, "cancel");
    let mut ids: Vec<&str> = cancel.ids.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    h.assert_no_packet();
    assert!(h.finished());
}

#[test]
fn shutdown_during_a_drain_cuts_at_once() {
    // Goal: SIGINT (or a second SIGTERM) during the drain: no waiting for the deadline.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::credit(100)); // the handler took it
    h.drain();
    assert_eq!(h.ios(c), []);
    h.shutdown();
    assert_eq!(h.ios(c), [Io::Close]);
    let cancel = h.packet();
    assert_eq!(
        (cancel.kind.as_str(), cancel.id()),
        ("cancel", s.id.as_str())
    );
    assert!(h.finished());
}

/// The kinds of `packets`, keep-alives (the sweep's, whenever time passes) left out.
fn kinds(packets: Vec<ToHandler>) -> Vec<String> {
    packets
        .into_iter()
        .map(|p| p.kind)
        .filter(|k| k != "keep-alive")
        .collect()
}

#[test]
fn tls_connections_close_after_the_grace_with_close_notify() {
    // Goal: an idle TLS connection (handshake done) and one mid-handshake close after the
    // grace, without lingering; the drain does not trip over TLS state.
    let mut h = Harness::new();
    let done = h.connect_tls();
    assert!(h.tls_established(done));
    let raw = h.connect_raw(TLS);
    h.write(raw, b"\x16\x03\x01"); // the start of a ClientHello
    h.drain();
    h.advance(GRACE + Duration::from_millis(10));
    assert_eq!(h.ios(done), [Io::Close]);
    assert_eq!(h.ios(raw), [Io::Close]);
    assert!(h.finished());
}

#[test]
fn a_req_mode_request_is_answered_then_closed() {
    // Goal: req mode as stream mode: the request sent to the handler before the drain is
    // answered during it, with `Connection: close`, then the connection ends; no cancel
    // (req mode has none).
    let mut h = Harness::new();
    let c = h.connect_to(REQ);
    h.write(c, GET);
    let p = h.packet();
    h.drain();
    assert_eq!(h.ios(c), []);
    h.reply_req(p.id(), Reply::response(200, "OK").body(b"done"));
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndone"
    );
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.assert_no_packet();
}
