//! Plain HTTP/1.x in stream mode: the first packet, keep-alive, `Connection: close`,
//! pipelining, chunked bodies both ways, handler errors.
use super::harness::*;
use crate::bridge::Route;

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n";

#[test]
fn first_packet_and_response() {
    // Goal: the request head becomes Condure's first packet, and a one-packet response is
    // written with a Content-Length; the connection then waits for the next request.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (req, mut s) = h.request();
    assert_eq!(req.id(), "0-0-1");
    assert_eq!(req.from, INSTANCE);
    assert_eq!(req.method, "GET");
    assert_eq!(req.uri, "http://example.com/a");
    assert_eq!(req.headers, [("Host".to_owned(), "example.com".to_owned())]);
    assert_eq!(req.header("host"), Some("example.com"));
    assert_eq!(req.credits, Some(8192));
    assert!(req.stream);
    assert!(!req.more);
    assert_eq!(req.peer, Some(("127.0.0.1".to_owned(), 40000)));
    // The exact encoding, key order included (Condure's).
    assert_eq!(
        req.raw,
        "T235:4:from,10:zring-test,2:id,5:0-0-1,3:seq,1:0#3:ext,15:5:multi,4:true!}\
         6:method,3:GET,3:uri,20:http://example.com/a,7:headers,26:22:4:Host,11:example.com,]]\
         7:credits,4:8192#6:stream,4:true!12:peer-address,9:127.0.0.1,9:peer-port,5:40000#}"
    );
    h.reply(
        &mut s,
        Reply::response(200, "OK")
            .header("Content-Type", "text/plain")
            .body(b"hello\n"),
    );
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"
    );
    // The response was complete and written: no credits, nothing else to the handler.
    h.assert_no_packet();
    assert_eq!(h.ios(c), []);
    assert!(!h.is_closed(c));
}

#[test]
fn keep_alive_two_requests_on_one_connection() {
    // Goal: a second request on the same connection opens a new session (new id, seq 0).
    let mut h = Harness::new();
    let c = h.connect();
    for (n, path) in [(1, "/one"), (2, "/two")] {
        h.write(
            c,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        let (req, mut s) = h.request();
        assert_eq!(req.id(), format!("0-0-{n}"));
        assert_eq!(req.uri, format!("http://t{path}"));
        h.reply(&mut s, Reply::response(200, "OK").body(path.as_bytes()));
        assert_eq!(
            h.read_text(c),
            format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{path}")
        );
    }
    h.assert_no_packet();
    assert_eq!(h.ios(c), []);
}

#[test]
fn connection_close_shuts_down_then_closes() {
    // Goal: `Connection: close` from the client ends with the response, a write shutdown,
    // and a close when the client closes its side (the lingering close).
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"bye"));
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye"
    );
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    assert!(h.is_shut_down(c));
    assert!(
        !h.is_closed(c),
        "lingering: reading until the client closes"
    );
    h.client_shutdown(c);
    assert_eq!(h.ios(c), [Io::ShutdownWrite, Io::Close]);
    assert!(h.is_closed(c));
}

#[test]
fn lingering_close_ends_after_two_seconds() {
    // Goal: a client that never closes its side is closed when the linger (2 s) ends.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET / HTTP/1.0\r\n\r\n");
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"x"));
    assert_eq!(
        h.read_text(c),
        "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"
    );
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.advance(std::time::Duration::from_millis(1990));
    assert!(!h.is_closed(c));
    h.advance(std::time::Duration::from_millis(30));
    assert!(h.is_closed(c));
    assert_eq!(h.ios(c), [Io::ShutdownWrite, Io::Close]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    // Goal: three requests in one write: the second goes to a handler only once the first
    // response is written, and responses come back in order.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(
        c,
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    for n in 1..=3 {
        let (req, mut s) = h.request();
        assert_eq!(req.uri, format!("http://t/{n}"));
        h.assert_no_packet(); // the next one waits for this response
        h.reply(
            &mut s,
            Reply::response(200, "OK").body(format!("r{n}").as_bytes()),
        );
    }
    let close = "Connection: close\r\n";
    let expected: String = (1..=3)
        .map(|n| {
            let c = if n == 3 { close } else { "" };
            format!("HTTP/1.1 200 OK\r\n{c}Content-Length: 2\r\n\r\nr{n}")
        })
        .collect();
    assert_eq!(h.read_text(c), expected);
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}

#[test]
fn chunked_request_body_is_forwarded_chunk_by_chunk() {
    // Goal: each chunk goes to the handler as its own packet (`more`), after the handler's
    // first packet, and the end of the body is an empty packet without `more`.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(
        c,
        b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    let (req, mut s) = h.request();
    assert!(req.more, "a body follows");
    h.assert_no_packet(); // no body before the handler's first packet
    h.reply(&mut s, Reply::credit(1000));
    let p = h.packet();
    assert_eq!(
        (p.seq(), p.body.as_slice(), p.more),
        (1, &b"hello"[..], true)
    );
    assert!(matches!(&p.route, Route::Router(a) if &a[..] == HANDLER.as_bytes()));
    h.write(c, b"6\r\n world\r\n0\r\n\r\n");
    let p = h.packet();
    assert_eq!(
        (p.seq(), p.body.as_slice(), p.more),
        (2, &b" world"[..], true)
    );
    let p = h.packet();
    assert_eq!((p.seq(), p.body.as_slice(), p.more), (3, &b""[..], false));
    h.assert_no_packet();
    h.reply(&mut s, Reply::response(200, "OK").body(b"got it"));
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ngot it"
    );
}

#[test]
fn streamed_response_is_chunked_and_earns_credits() {
    // Goal: a response with `more` and no Content-Length is written chunked to an HTTP/1.1
    // client; each written body part is returned to the handler as credits.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"part1").more());
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\npart1\r\n"
    );
    let credit = h.packet();
    assert_eq!(
        (credit.kind.as_str(), credit.seq(), credit.credits),
        ("credit", 1, Some(5))
    );
    h.reply(&mut s, Reply::data(b"part2").more());
    assert_eq!(h.read_text(c), "5\r\npart2\r\n");
    let credit = h.packet();
    assert_eq!((credit.seq(), credit.credits), (2, Some(5)));
    h.reply(&mut s, Reply::data(b""));
    assert_eq!(h.read_text(c), "0\r\n\r\n");
    h.assert_no_packet();
    assert_eq!(h.ios(c), []);
    // The connection is reusable.
    h.write(c, GET);
    assert_eq!(h.request().0.id(), "0-0-2");
}

#[test]
fn streamed_response_to_http10_is_close_delimited() {
    // Goal: HTTP/1.0 cannot take chunks: the body is written as is and the end of the
    // response is the end of the connection.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET / HTTP/1.0\r\n\r\n");
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"ab").more());
    h.reply(&mut s, Reply::data(b"cd"));
    assert_eq!(h.read_text(c), "HTTP/1.0 200 OK\r\n\r\nabcd");
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}

#[test]
fn handler_cancel_before_a_response_is_a_502() {
    // Goal: zring's own answer when the handler gives up before responding; nothing is
    // echoed back to that handler.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::kind("cancel"));
    let text = h.read_text(c);
    assert_eq!(
        text,
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n\
         Content-Length: 50\r\n\r\nThe handler ended the request without a response.\n"
    );
    h.assert_no_packet();
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
}

#[test]
fn out_of_order_seq_fails_the_session() {
    // Goal: a handler packet with the wrong seq ends the session with a 502.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (req, _) = h.request();
    h.reply_with_seq(req.id(), 1, Reply::response(200, "OK").body(b"late"));
    let text = h.read_text(c);
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(
        text.ends_with("The handler's packets arrived out of order.\n"),
        "{text}"
    );
    h.assert_no_packet();
}

#[test]
fn no_handler_gets_a_503_after_the_handler_wait() {
    // Goal: a request nobody takes within `--handler-wait` (5 s) is answered 503.
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, GET);
    let (_, _unanswered) = h.request();
    h.advance(std::time::Duration::from_millis(4990));
    assert_eq!(h.read_text(c), "");
    h.advance(std::time::Duration::from_millis(30));
    let text = h.read_text(c);
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert_eq!(h.ios(c), [Io::ShutdownWrite]);
    h.assert_no_packet(); // nobody claimed it: no cancel
}

#[test]
fn a_malformed_request_after_a_kept_response_gets_its_400() {
    // Goal: a bad request head on a kept-alive connection is answered 400 (in the previous
    // request's version) and the connection drains. Before the session split the previous
    // exchange's "response started" flag leaked into this one and the 400 was never
    // written (the client saw the connection close with no answer).
    let mut h = Harness::new();
    let c = h.connect();
    h.write(
        c,
        b"GET /a HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
    );
    let (_, mut s) = h.request();
    h.reply(&mut s, Reply::response(200, "OK").body(b"a"));
    assert_eq!(
        h.read_text(c),
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na"
    );
    h.write(c, b"GARBAGE\r\n\r\n");
    assert_eq!(
        h.read_text(c),
        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\
         Content-Length: 12\r\n\r\nBad Request\n"
    );
    assert!(h.is_shut_down(c));
    h.assert_no_packet();
}
