//! Deadlines that trickling bytes cannot extend: a whole head by `--head-timeout` (30 s), a
//! next request on a kept-alive connection by `--keepalive-timeout` (60 s), and a request
//! body progressing by `--body-min-bytes` (1 KiB) per `--body-timeout` (10 s).
use std::time::Duration;

use super::harness::*;

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// The next packet that is not one of zring's periodic keep-alives.
fn next_packet(h: &mut Harness) -> ToHandler {
    loop {
        let p = h.packet();
        if p.kind != "keep-alive" {
            return p;
        }
    }
}

fn answer(h: &mut Harness, c: Client) {
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"hi"));
    assert!(h.read_text(c).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn a_silent_client_is_closed_at_the_head_deadline_without_a_response() {
    // Goal: a connection that never sends a byte holds its slot 30 s, then is closed
    // (nothing was asked, so nothing is answered).
    let mut h = Harness::new();
    let c = h.connect();
    h.advance(30 * S - 100 * MS);
    assert!(!h.is_shut_down(c));
    h.advance(200 * MS);
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    assert_eq!(h.read_text(c), "");
    h.client_shutdown(c);
    assert!(h.is_closed(c));
    h.assert_no_packet();
}

#[test]
fn a_trickled_head_gets_408_at_the_deadline_from_accept() {
    // Goal: a byte a second does not push the head deadline back (slowloris).
    let mut h = Harness::new();
    let c = h.connect();
    for b in b"GET /a HTTP/1.1\r\nHost: t\r\nX-Slow: "
        .iter()
        .cycle()
        .take(29)
    {
        h.write(c, &[*b]);
        h.advance(S);
    }
    assert!(!h.is_shut_down(c));
    h.advance(S + 100 * MS);
    let text = h.read_text(c);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.assert_no_packet();
}

#[test]
fn a_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    // Goal: between requests the wait is `--keepalive-timeout` (60 s), not the head
    // deadline, and it ends in a plain close (no 408 racing a next request).
    let mut h = Harness::new();
    let c = h.connect();
    h.advance(20 * S);
    h.write(c, GET);
    answer(&mut h, c);
    h.advance(59 * S);
    assert!(!h.is_shut_down(c), "closed before the keep-alive timeout");
    h.advance(S + 100 * MS);
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    assert_eq!(h.read_text(c), "");
}

#[test]
fn a_kept_alive_connections_next_head_has_its_own_deadline() {
    // Goal: the first byte of a next request starts a head deadline of 30 s from there.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    answer(&mut h, c);
    h.advance(50 * S);
    h.write(c, b"G");
    h.advance(29 * S);
    h.write(c, b"E");
    assert!(!h.is_shut_down(c));
    h.advance(S + 100 * MS);
    assert!(h
        .read_text(c)
        .starts_with("HTTP/1.1 408 Request Timeout\r\n"));
}

#[test]
fn a_whole_head_in_time_is_served_and_clears_the_deadline() {
    // Goal: a head completed at 29 s is a request like any other; its handler may take
    // longer than the head deadline to answer.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, &GET[..5]);
    h.advance(29 * S);
    h.write(c, &GET[5..]);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::kind("keep-alive"));
    h.advance(40 * S);
    h.reply(&mut s, Reply::response(200, "OK").body(b"late"));
    assert!(h.read_text(c).starts_with("HTTP/1.1 200 OK\r\n"));
}

const POST: &[u8] = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n";

#[test]
fn a_slow_body_gets_408_and_the_handler_a_cancel() {
    // Goal: a body that stops progressing while zring waits for it is answered 408 at the
    // end of its 10 s period; the handler that took the request is told.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, POST);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::credit(100_000));
    h.write(c, &[b'x'; 500]);
    assert_eq!(next_packet(&mut h).body.len(), 500);
    h.advance(10 * S - 100 * MS);
    assert_eq!(h.read_text(c), "");
    h.advance(200 * MS);
    let text = h.read_text(c);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert_eq!(next_packet(&mut h).kind, "cancel");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}

#[test]
fn a_body_at_the_minimum_rate_is_not_cut() {
    // Goal: 1 KiB every 9 s keeps a body going for as long as it takes.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(
        c,
        b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10240\r\n\r\n",
    );
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::credit(100_000));
    for _ in 0..10 {
        h.advance(9 * S);
        h.reply(&mut s, Reply::kind("keep-alive")); // the handler is alive (session expiry)
        h.write(c, &[b'x'; 1024]);
        assert_eq!(next_packet(&mut h).body.len(), 1024);
    }
    assert_eq!(h.read_text(c), "");
    h.reply(&mut s, Reply::response(200, "OK"));
    assert!(h.read_text(c).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn a_body_held_back_by_the_handler_is_not_the_clients_fault() {
    // Goal: while the body waits for credits (the handler is slow), the period restarts;
    // once credits come the client gets a whole period from then.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, POST);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::kind("keep-alive")); // taken, but no credits yet
    h.write(c, &[b'x'; 20_000]); // past the buffer: reading pauses
    h.advance(45 * S);
    assert_eq!(h.read_text(c), "");
    h.reply(&mut s, Reply::credit(100_000));
    let got: usize = h
        .packets()
        .iter()
        .filter(|p| p.kind != "keep-alive")
        .map(|p| p.body.len())
        .sum();
    assert_eq!(got, 20_000);
    h.advance(9 * S);
    assert_eq!(
        h.read_text(c),
        "",
        "the client's period starts at the credits"
    );
    h.advance(S + 100 * MS);
    assert!(h
        .read_text(c)
        .starts_with("HTTP/1.1 408 Request Timeout\r\n"));
}

#[test]
fn expect_continue_waits_for_the_handler_before_the_rate_counts() {
    // Goal: a client waiting for `100 Continue` is not slow; its period starts at the 100.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(
        c,
        b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::kind("keep-alive"));
    h.advance(20 * S);
    assert_eq!(h.read_text(c), "");
    h.reply(&mut s, Reply::credit(10));
    assert_eq!(h.read_text(c), "HTTP/1.1 100 Continue\r\n\r\n");
    h.advance(5 * S);
    h.write(c, b"hello");
    assert_eq!(next_packet(&mut h).body, b"hello");
    h.reply(&mut s, Reply::response(200, "OK"));
    assert!(h.read_text(c).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn a_slow_req_mode_body_gets_408() {
    // Goal: req mode holds the body until it is whole; once the head is here, the body
    // rate applies instead of the head deadline.
    let mut h = Harness::new();
    let c = h.connect_to(REQ);
    h.write(
        c,
        b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
    );
    h.write(c, &[b'x'; 2000]);
    h.advance(9 * S);
    h.write(c, &[b'x'; 2000]);
    h.advance(9 * S);
    assert_eq!(h.read_text(c), "");
    h.write(c, &[b'x'; 10]);
    h.advance(S + 100 * MS);
    let text = h.read_text(c);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    h.assert_no_packet();
}

#[test]
fn the_body_rate_check_can_be_turned_off() {
    // Goal: `--body-min-bytes 0` leaves a stalled body to the stream timeout.
    let mut cfg = config();
    cfg.body_min_bytes = 0;
    let mut h = Harness::with_config(cfg);
    let c = h.connect();
    h.write(c, POST);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::credit(100_000));
    h.reply(&mut s, Reply::kind("keep-alive"));
    h.advance(50 * S);
    h.reply(&mut s, Reply::kind("keep-alive"));
    assert_eq!(h.read_text(c), "");
    assert!(!h.is_shut_down(c));
}
