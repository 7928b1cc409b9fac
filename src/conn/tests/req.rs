//! req mode: one DEALER packet per request with the whole body, one packet back.
use super::harness::*;
use crate::bridge::Route;

#[test]
fn request_and_response_without_seq_or_credits() {
    // Goal: the request (head and body) is one packet without `from`, `seq`, `credits`;
    // the handler's one packet is the whole response; the connection stays open.
    let mut h = Harness::new();
    let c = h.connect_to(REQ);
    h.write(
        c,
        b"POST /r HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
    );
    let p = h.packet();
    assert!(matches!(p.route, Route::Dealer));
    assert_eq!(p.ids, [("0-0-1".to_owned(), None)]);
    assert_eq!(
        (p.from.as_str(), p.credits, p.more, p.stream),
        ("", None, false, false)
    );
    assert_eq!(
        (p.method.as_str(), p.body.as_slice()),
        ("POST", &b"abc"[..])
    );
    h.reply_req("0-0-1", Reply::response(200, "OK").body(b"done"));
    assert_eq!(
        h.read_text(c),
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
    );
    h.assert_no_packet();
    assert_eq!(h.ios(c), []);
}
