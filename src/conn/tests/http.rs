//! Plain HTTP/1.1 in stream mode: one request, keep-alive, `Connection: close`.
use super::harness::*;

#[test]
fn probe() {
    let mut h = Harness::new();
    let c = h.connect();
    h.write(c, b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let (req, mut s) = h.request();
    eprintln!("{req:?}");
    h.reply(&mut s, Reply::response(200, "OK").header("Content-Type", "text/plain").body(b"hello\n"));
    eprintln!("{:?}", h.read_text(c));
    eprintln!("{:?}", h.packets());
    eprintln!("{:?}", h.ios(c));
}
