//! Credits both ways: the request body flows only as far as the handler granted, and the
//! response body only as far as zring granted (its buffer, then what it wrote).
use super::harness::*;

#[test]
fn request_body_flows_only_under_handler_credits() {
    // Goal: a 10,000-byte body against grants of 4,000 then 6,000: each grant releases
    // exactly that much; the rest waits in zring, which pauses reading past its buffer.
    let mut h = Harness::new();
    let c = h.connect();
    let body: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n".to_vec();
    req.extend_from_slice(&body);
    h.write(c, &req);
    let (head, mut s) = h.request();
    assert!(head.more);
    assert_eq!(head.credits, Some(8192));
    h.assert_no_packet(); // nothing before the handler's first packet
    assert_eq!(h.ios(c), [Io::PauseRecv], "the body past the buffer waits");
    assert!(h.is_paused(c));
    assert_eq!(
        h.undelivered(c),
        0,
        "the last piece was read before the pause"
    );
    h.reply(&mut s, Reply::credit(4000));
    let p = h.packet();
    assert_eq!((p.seq(), p.body.len(), p.more), (1, 4000, true));
    assert_eq!(p.body, body[..4000]);
    h.assert_no_packet();
    assert_eq!(h.ios(c), [Io::PauseRecv, Io::ResumeRecv]);
    assert!(!h.is_paused(c));
    h.reply(&mut s, Reply::credit(6000));
    let p = h.packet();
    assert_eq!((p.seq(), p.body.len(), p.more), (2, 6000, false));
    assert_eq!(p.body, body[4000..]);
    h.assert_no_packet();
    h.reply(&mut s, Reply::response(204, "No Content"));
    assert_eq!(h.read_text(c), "HTTP/1.1 204 No Content\r\n\r\n");
}

#[test]
fn response_body_is_bounded_by_the_credits_zring_grants() {
    // Goal: the handler may stream `--buffer-size` bytes; zring returns credits only for
    // bytes written to the client; past its budget a streamed packet drops the connection.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    let (_, mut s) = h.request();
    let block = vec![b'x'; 8192];
    h.stall(c, true); // a slow client: nothing is written
    h.reply(&mut s, Reply::response(200, "OK").body(&block).more());
    h.assert_no_packet(); // no credits for bytes still in flight
    h.stall(c, false);
    let head =
        "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n";
    let got = h.read(c);
    assert_eq!(got.len(), head.len() + 8192 + "2000\r\n\r\n".len());
    let credit = h.packet();
    assert_eq!(
        (credit.kind.as_str(), credit.seq(), credit.credits),
        ("credit", 1, Some(8192))
    );
    // The returned credits are spent again while the client is stalled; one byte more is
    // past the budget: the session fails. What was queued still goes (the client reads
    // a response cut short), within the linger bound for a client that never reads.
    h.stall(c, true);
    h.reply(&mut s, Reply::data(&block).more());
    h.assert_no_packet();
    h.reply(&mut s, Reply::data(b"!").more());
    h.assert_no_packet(); // no cancel: the handler broke the rules
    assert_eq!(h.ios(c), []);
    h.advance(std::time::Duration::from_millis(2_100));
    assert_eq!(h.ios(c), [Io::CloseAborting]);
    h.drive();
    assert!(h.is_closed(c));
}

#[test]
fn final_packet_is_held_to_the_budget_too() {
    // Goal: a packet without `more` past the budget fails the session as a streamed one
    // does (Condure's write buffer refuses it too): the response is cut short, never
    // buffered whole. Before, a final packet of any size was queued for the client.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let (_, mut s) = h.request();
    h.reply(
        &mut s,
        Reply::response(200, "OK").body(&[b'y'; 8000]).more(),
    );
    assert_eq!(h.packet().credits, Some(8000));
    h.reply(&mut s, Reply::data(&[b'z'; 8193]));
    let text = h.read_text(c);
    assert!(
        text.ends_with(&format!("1f40\r\n{}\r\n", "y".repeat(8000))),
        "{text}"
    );
    h.assert_no_packet();
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}

#[test]
fn final_packet_within_the_budget_is_written() {
    // Goal: the whole budget may go in the last packet.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"a").more());
    assert_eq!(h.packet().credits, Some(1));
    h.reply(&mut s, Reply::data(&[b'z'; 8192]));
    let text = h.read_text(c);
    assert!(text.ends_with(&format!("2000\r\n{}\r\n0\r\n\r\n", "z".repeat(8192))));
    assert_eq!(h.ios(c), []);
}

#[test]
fn a_first_packet_past_the_budget_gets_a_502() {
    // Goal: a whole response larger than the request's credits (`--buffer-size`) in one
    // packet is refused with a 502, not buffered for the client.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(&[b'x'; 8193]));
    let text = h.read_text(c);
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(text.ends_with("The handler sent more than zring's credits allowed.\n"));
    h.assert_no_packet();
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}
