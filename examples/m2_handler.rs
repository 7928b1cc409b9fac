//! A small, fast Mongrel2 handler (the benchmark's): PULL requests from `send_spec`, PUB
//! `hello\n` answers to `recv_spec`, keep-alive (it never closes). Disconnect notices
//! (`@*` path, `METHOD` `JSON`) are skipped. It knows nothing of zring: the same binary
//! serves Mongrel2 1.12.2 in `scripts/bench-m2.sh`.
//!
//!     zring-m2-handler SEND_SPEC RECV_SPEC
fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(send), Some(recv)) = (args.next(), args.next()) else {
        eprintln!("usage: zring-m2-handler SEND_SPEC RECV_SPEC");
        std::process::exit(2);
    };
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).expect("socket");
    pull.set_rcvhwm(100_000).expect("hwm");
    pull.connect(&send).expect("connect send_spec");
    let publ = ctx.socket(zmq::PUB).expect("socket");
    publ.set_sndhwm(100_000).expect("hwm");
    publ.connect(&recv).expect("connect recv_spec");
    const BODY: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
    let mut out = Vec::with_capacity(256);
    loop {
        let msg = match pull.recv_msg(0) {
            Ok(m) => m,
            Err(_) => continue,
        };
        // SENDER SP ID SP PATH SP ...
        let mut parts = msg.splitn(4, |&b| b == b' ');
        let (Some(sender), Some(id), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if path == b"@*" {
            continue; // disconnect notice
        }
        out.clear();
        out.extend_from_slice(sender);
        out.push(b' ');
        out.extend_from_slice(id.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(id);
        out.extend_from_slice(b", ");
        out.extend_from_slice(BODY);
        let _ = publ.send(&out[..], 0);
    }
}
