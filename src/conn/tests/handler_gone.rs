//! A handler that dies: the bridge learns its ROUTER connection went away and announces it
//! (`Inbox::handler_gone`), after the packets queued before it; the worker then fails that
//! handler's sessions: 502 before a response, a clean close of a response under way, 1011
//! on an open WebSocket. Sessions no handler has taken, and other handlers' sessions, go on.
use std::time::Duration;

use super::harness::*;
use super::ws::{masked, open};

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
const GONE_502: &str = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n\
    Connection: close\r\nContent-Length: 42\r\n\r\nThe handler went away before it answered.\n";

#[test]
fn a_held_request_gets_a_502() {
    // Goal: the handler took the request (sent credits) and died before answering: 502,
    // then the connection drains (FIN, no RST); nothing goes to the dead handler.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::credit(100));
    h.handler_gone(HANDLER);
    assert_eq!(h.read_text(c), GONE_502);
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.assert_no_packet();
    h.client_shutdown(c);
    assert_eq!(h.ios(c), [Io::ShutdownWrite, Io::Close]);
}

#[test]
fn a_streamed_response_is_closed_cleanly() {
    // Goal: head and a first chunk were sent (`more`): what was queued is delivered, then
    // FIN without the last chunk (the client sees the response cut short), no 502 appended.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"part").more());
    let head =
        "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(h.read_text(c), format!("{head}4\r\npart\r\n"));
    let credit = h.packet();
    assert_eq!(credit.kind, "credit");
    h.handler_gone(HANDLER);
    assert_eq!(h.read_text(c), "");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.assert_no_packet();
}

#[test]
fn a_streamed_response_to_a_slow_client_keeps_what_was_queued() {
    // Goal: bytes the handler sent before dying (acknowledged by zring's credits or not)
    // still reach a client that reads slowly; only then the connection closes.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.stall(c, true);
    h.reply(&mut s, Reply::response(200, "OK").body(b"one").more());
    h.reply(&mut s, Reply::data(b"two").more());
    h.handler_gone(HANDLER);
    assert_eq!(h.ios(c), [], "nothing closes while bytes are in flight");
    h.stall(c, false);
    let text = h.read_text(c);
    assert!(text.ends_with("3\r\none\r\n3\r\ntwo\r\n"), "{text}");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}

#[test]
fn an_open_websocket_gets_1011() {
    // Goal: close frame 1011 (with a reason), then the connection drains; the client's
    // close answer is read and discarded while lingering; nothing goes to the handler.
    let mut h = Harness::new();
    let (c, _s) = open(&mut h, 1000);
    h.handler_gone(HANDLER);
    let mut close = vec![0x88, 14, 0x03, 0xf3];
    close.extend_from_slice(b"handler gone");
    assert_eq!(h.read(c), close);
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.write(c, &masked(0x8, b"\x03\xf3"));
    h.assert_no_packet();
}

#[test]
fn packets_queued_before_the_notice_are_handled_first() {
    // Goal: the handler's last packets (a whole response) and its death notice reach the
    // worker in one wake-up: the response is written, not replaced by a 502, and the
    // connection is kept for the next request.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply_nodrive(&mut s, Reply::response(200, "OK").body(b"done"));
    h.handler_gone(HANDLER);
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
    );
    assert_eq!(h.ios(c), []);
    // A request after the death is a new session, sent to whichever handler takes it.
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(204, "No Content"));
    assert_eq!(h.read_text(c), "HTTP/1.1 204 No Content\r\n\r\n");
}

#[test]
fn sessions_of_no_handler_or_another_handler_go_on() {
    // Goal: a request nobody took still waits for `--handler-wait` (then 503); one owned by
    // another handler (after a handoff) is not failed.
    let mut h = Harness::new();
    let waiting = h.connect();
    h.write(waiting, GET);
    let (_, _unanswered) = h.request();
    let other = h.connect();
    h.write(other, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::kind("keep-alive").sent_by("h2"));
    h.handler_gone(HANDLER);
    assert_eq!(h.read_text(waiting), "");
    assert_eq!(h.read_text(other), "");
    assert_eq!(h.ios(other), []);
    h.reply(&mut s, Reply::response(200, "OK").sent_by("h2").body(b"ok"));
    assert_eq!(
        h.read_text(other),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    );
    h.advance(Duration::from_millis(5_100));
    let text = h.read_text(waiting);
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
}

#[test]
fn a_notice_after_the_session_moved_to_a_new_handler_instance_spares_it() {
    // Goal: the notice applies to sessions the handler owned when it was announced; a
    // session taken after it (by a handler restarted under the same identity) goes on.
    let mut h = Harness::new();
    let old = h.connect();
    h.write(old, GET);
    let (_, mut s_old) = h.request();
    h.reply(&mut s_old, Reply::credit(10));
    h.handler_gone(HANDLER);
    assert_eq!(h.read_text(old), GONE_502);
    let new = h.connect();
    h.write(new, GET);
    let (_, mut s_new) = h.request();
    h.reply(&mut s_new, Reply::response(200, "OK").body(b"new"));
    assert_eq!(
        h.read_text(new),
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew"
    );
}
