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
