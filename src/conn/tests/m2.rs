//! Mongrel2 mode in-process: a request routed to its handler as a Mongrel2 message, raw
//! replies written as they come, an empty reply closing, and the disconnect notice when the
//! client goes. The setup is built from config text as `--m2-config` builds it.
use super::harness::*;

const SENDER: &str = "54c6755b-9628-40a4-9a2d-cc82a816345e";

fn harness() -> Harness {
    Harness::with_m2(&format!(
        r#"h = Handler(send_spec='tcp://127.0.0.1:9997', send_ident='{SENDER}',
                       recv_spec='tcp://127.0.0.1:9996', recv_ident='')
main = Server(uuid="f400bf85-4538-4f7a-8908-67e313d515c2", access_log="/logs/access.log",
    error_log="/logs/error.log", chroot="./", default_host="localhost", name="main",
    pid_file="/run/mongrel2.pid", bind_addr="127.0.0.1", port=6767,
    hosts=[Host(name="localhost", routes={{'/app': h}})])
servers = [main]
"#
    ))
}

#[test]
fn request_reply_and_an_empty_reply_closing() {
    // Goal: the request reaches handler 0 as Mongrel2 frames it (sender, connection id,
    // path, headers, body); replies are written raw, whenever they come; an empty reply
    // ends the connection.
    let mut h = harness();
    let c = h.connect_to(0);
    h.write(c, b"GET /app/x?y=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (handler, msg) = h.m2_message();
    assert_eq!(handler, 0);
    assert!(msg.starts_with(&format!("{SENDER} 1 /app/x ")), "{msg}");
    assert!(msg.contains(r#""METHOD":"GET""#), "{msg}");
    assert!(msg.contains(r#""PATTERN":"/app""#), "{msg}");
    assert!(msg.contains(r#""QUERY":"y=1""#), "{msg}");
    assert!(msg.ends_with(",0:,"), "no body: {msg}");
    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let mut raw = format!("{SENDER} 1:1, ").into_bytes();
    raw.extend_from_slice(reply);
    h.m2_reply(0, &raw);
    assert_eq!(h.read(c), reply);
    assert!(
        !h.is_shut_down(c),
        "a reply with a body keeps the connection"
    );
    h.m2_reply(0, format!("{SENDER} 1:1, ").as_bytes());
    assert!(h.is_shut_down(c), "an empty reply ends it");
}

#[test]
fn a_client_that_leaves_is_announced_and_stale_ids_are_dropped() {
    // Goal: the handler that last served a connection hears of its end (a JSON disconnect
    // message); a reply to the gone id reaches nobody.
    let mut h = harness();
    let c = h.connect_to(0);
    h.write(c, b"GET /app HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let _ = h.m2_message();
    h.client_shutdown(c);
    let (handler, msg) = h.m2_message();
    assert_eq!(handler, 0);
    assert!(msg.starts_with(&format!("{SENDER} 1 @* ")), "{msg}");
    assert!(msg.contains(r#""type":"disconnect""#), "{msg}");
    assert!(h.is_closed(c));
    h.m2_reply(0, format!("{SENDER} 1:1, late").as_bytes());
    let (_, notice) = h.m2_message();
    assert!(notice.contains(r#""type":"disconnect""#), "{notice}");
}

/// The connection id in a Mongrel2 request message (`SENDER ID PATH ...`).
fn conn_id(msg: &str) -> &str {
    msg.split(' ').nth(1).expect("an id")
}

#[test]
fn a_drain_serves_the_last_request_then_closes_with_connection_close() {
    // Goal (issue 15, a takeover in Mongrel2 mode): at the drain a connection whose request
    // is at its handler gets the reply with `Connection: close` added and closes once the
    // body its Content-Length announces is written; a request pipelined behind it is not
    // sent; an idle connection serves a request arriving within the grace; one that stays
    // silent past the grace is closed. Method: three clients on the harness's simulated
    // clock, the drain flag, handler replies split over two messages.
    use std::time::Duration;
    let mut h = harness();
    let waiting = h.connect_to(0);
    h.write(waiting, b"GET /app/a HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (_, msg) = h.m2_message();
    let waiting_id = conn_id(&msg).to_owned();
    let idle = h.connect_to(0);
    let silent = h.connect_to(0);
    h.drain();
    assert!(!h.is_shut_down(waiting) && !h.is_shut_down(idle) && !h.is_shut_down(silent));
    h.write(
        waiting,
        b"GET /app/pipelined HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(
        h.m2_messages_pending(),
        0,
        "a request behind the last one went out"
    );
    let reply = |id: &str, body: &[u8]| {
        let mut raw = format!("{SENDER} {}:{id}, ", id.len()).into_bytes();
        raw.extend_from_slice(body);
        raw
    };
    h.m2_reply(
        0,
        &reply(
            &waiting_id,
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok",
        ),
    );
    assert_eq!(
        h.read_text(waiting),
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nok"
    );
    assert!(!h.is_shut_down(waiting), "closed before the body's end");
    h.m2_reply(0, &reply(&waiting_id, b"!!"));
    assert_eq!(h.read(waiting), b"!!");
    assert!(h.is_shut_down(waiting), "not closed at the body's end");

    h.advance(Duration::from_millis(500));
    h.write(idle, b"GET /app/b HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (_, msg) = h.m2_message();
    assert!(msg.contains(" /app/b "), "{msg}");
    let idle_id = conn_id(&msg).to_owned();
    h.advance(Duration::from_millis(600));
    assert!(
        h.is_shut_down(silent) || h.is_closed(silent),
        "silent past the grace"
    );
    assert!(
        !h.is_shut_down(idle) && !h.is_closed(idle),
        "its request is at the handler"
    );
    h.m2_reply(0, &reply(&idle_id, b"HTTP/1.1 204 No Content\r\n\r\n"));
    assert_eq!(
        h.read_text(idle),
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    );
    assert!(h.is_shut_down(idle));
}
