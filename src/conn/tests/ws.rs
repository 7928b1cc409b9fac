//! WebSocket over ZHTTP: the upgrade, messages both ways under credits, control frames,
//! and the close handshake.
use super::harness::*;

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A client frame: FIN set, masked with a fixed key.
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Connects, upgrades and accepts with a 101 granting `credits`: an open WebSocket.
pub fn open(h: &mut Harness, credits: i64) -> (Client, Session) {
    let c = h.connect();
    h.write(c, UPGRADE);
    let (req, mut s) = h.request();
    assert_eq!(req.uri, "ws://t/ws");
    assert!(!req.stream, "a WebSocket is not a stream request");
    assert_eq!(req.credits, Some(8192));
    h.reply(
        &mut s,
        Reply::response(101, "Switching Protocols").credits(credits),
    );
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    (c, s)
}

#[test]
fn messages_both_ways_and_the_close_handshake() {
    // Goal: a client text message becomes a packet, a handler message a frame (credited
    // back once written), and the client's close is answered with the handler's close,
    // then the TCP close without a lingering shutdown.
    let mut h = Harness::new();
    let (c, mut s) = open(&mut h, 1000);
    h.assert_no_packet();
    h.write(c, &masked(0x1, b"hi"));
    let p = h.packet();
    assert_eq!(
        (
            p.seq(),
            p.content_type.as_deref(),
            p.body.as_slice(),
            p.more
        ),
        (1, Some("text"), &b"hi"[..], false)
    );
    h.reply(
        &mut s,
        Reply::data(b"hello").bytes("content-type", b"binary"),
    );
    assert_eq!(h.read(c), b"\x82\x05hello");
    let credit = h.packet();
    assert_eq!((credit.kind.as_str(), credit.credits), ("credit", Some(5)));
    // Ping from the client goes to the handler; zring does not answer it itself.
    h.write(c, &masked(0x9, b"p"));
    let p = h.packet();
    assert_eq!((p.kind.as_str(), p.body.as_slice()), ("ping", &b"p"[..]));
    assert_eq!(h.read(c), b"");
    h.reply(&mut s, Reply::kind("pong").body(b"p"));
    assert_eq!(h.read(c), b"\x8a\x01p");
    // A handler's ping or pong payload counts against its budget like a message.
    let credit = h.packet();
    assert_eq!((credit.kind.as_str(), credit.credits), ("credit", Some(1)));
    // The close handshake.
    h.write(c, &masked(0x8, b"\x03\xe8bye"));
    let p = h.packet();
    assert_eq!(
        (p.kind.as_str(), p.code, p.body.as_slice()),
        ("close", Some(1000), &b"bye"[..])
    );
    h.reply(&mut s, Reply::kind("close").int("code", 1000));
    assert_eq!(h.read(c), b"\x88\x02\x03\xe8");
    assert_eq!(h.ios(c), [Io::Close]);
    assert!(h.is_closed(c));
    h.assert_no_packet();
}

#[test]
fn client_message_waits_for_handler_credits() {
    // Goal: with 3 credits a 5-byte message goes as 3 bytes with `more`, the rest after
    // the handler's next grant.
    let mut h = Harness::new();
    let (c, mut s) = open(&mut h, 3);
    h.write(c, &masked(0x2, b"abcde"));
    let p = h.packet();
    assert_eq!((p.body.as_slice(), p.more), (&b"abc"[..], true));
    assert_eq!(p.content_type.as_deref(), Some("binary"));
    h.assert_no_packet();
    h.reply(&mut s, Reply::credit(10));
    let p = h.packet();
    assert_eq!((p.body.as_slice(), p.more), (&b"de"[..], false));
}

#[test]
fn handler_close_without_answer_times_out() {
    // Goal: after zring's own close frame (from the handler), a client that never answers
    // is given up on after 5 s: a write shutdown, then the 2 s linger of an HTTP close.
    let mut h = Harness::new();
    let (c, mut s) = open(&mut h, 1000);
    h.reply(&mut s, Reply::kind("close").int("code", 4000));
    assert_eq!(h.read(c), b"\x88\x02\x0f\xa0");
    assert_eq!(h.ios(c), []);
    h.assert_no_packet(); // a close frame earns no credits
    h.advance(std::time::Duration::from_millis(4990));
    assert_eq!(h.ios(c), []);
    h.advance(std::time::Duration::from_millis(30));
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    // The wheel fires up to a tick (10 ms) late: the shutdown came at 5.01 s, so the
    // linger ends at 7.01 s and fires at 7.02 s.
    h.advance(std::time::Duration::from_millis(1990));
    assert!(!h.is_closed(c));
    h.advance(std::time::Duration::from_millis(30));
    assert_eq!(h.ios(c), [Io::ShutdownWrite, Io::Close]);
    assert!(h.is_closed(c));
    // Only keep-alives went to the handler meanwhile: no close, no cancel.
    assert!(h.packets().iter().all(|p| p.kind == "keep-alive"));
}

#[test]
fn rejection_is_plain_http() {
    // Goal: a handler that refuses the upgrade with an error gets its response written as
    // plain HTTP, then the connection drains.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, UPGRADE);
    let (_, mut s) = h.request();
    h.reply(
        &mut s,
        Reply::kind("error")
            .bytes("condition", b"rejected")
            .int("code", 403)
            .bytes("reason", b"Forbidden")
            .body(b"no"),
    );
    let text = h.read_text(c);
    assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nno"), "{text}");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}
