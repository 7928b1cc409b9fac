//! A small, fast Mongrel2 handler (the benchmark's): PULL requests from `send_spec`, PUB
//! answers to `recv_spec`, keep-alive (it never closes an HTTP connection by itself). It
//! knows nothing of zring: the same binary serves Mongrel2 1.12.2 in `scripts/bench-m2.sh`,
//! `scripts/idle-memory-m2.sh` and `scripts/compare.sh`.
//!
//! * any HTTP request: `hello\n`;
//! * `POST /broadcast`: the body, with every `{ts}` replaced by the send time (CLOCK_REALTIME
//!   in nanoseconds, 19 digits, taken once before the first message), goes as one WebSocket
//!   text frame to every WebSocket on `/ws/broadcast`, in replies naming up to 128
//!   connection ids each (Mongrel2's list form, `UUID SIZE:ID ID ..., BODY`); the trigger
//!   gets `sent to N` and its connection is closed (an empty reply), as zring-load expects;
//! * WebSocket (`WEBSOCKET_HANDSHAKE`: the handler writes the 101 itself, with the accept
//!   key Mongrel2 put in the body): `/ws/broadcast` joins the broadcast set; text and binary
//!   messages are echoed, a ping gets a pong, a close gets a close and the connection is
//!   closed. Handlers write raw bytes, so the frames are built here (server frames, unmasked).
//! * disconnect notices (`METHOD` `JSON`, `{"type":"disconnect"}`) leave the broadcast set.
//!
//!     zring-m2-handler SEND_SPEC RECV_SPEC
#[allow(dead_code)] // len() is for the ZHTTP handler's stats
#[path = "members.rs"]
mod members;
use members::Members;

/// Ids per broadcast reply (as the example ZHTTP handler's list-form packets).
const IDS_PER_REPLY: usize = 128;

const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";

/// One parsed request: `SENDER ID PATH HLEN:HEADERS,BLEN:BODY,`.
struct Req<'a> {
    sender: &'a [u8],
    id: &'a [u8],
    path: &'a [u8],
    headers: &'a [u8],
    body: &'a [u8],
}

/// A netstring `LEN:DATA,` at the start of `b`: (DATA, rest).
fn netstring(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = b.iter().position(|&c| c == b':')?;
    let len: usize = std::str::from_utf8(&b[..colon]).ok()?.parse().ok()?;
    let data = b.get(colon + 1..colon + 1 + len)?;
    Some((data, b.get(colon + 2 + len..).unwrap_or(&[])))
}

fn parse(msg: &[u8]) -> Option<Req<'_>> {
    let mut parts = msg.splitn(4, |&b| b == b' ');
    let (sender, id, path, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let (headers, rest) = netstring(rest)?;
    let body = netstring(rest).map_or(&b""[..], |(b, _)| b);
    Some(Req {
        sender,
        id,
        path,
        headers,
        body,
    })
}

/// The string value of `"name"` in the JSON headers (no escapes needed for the keys used).
fn header<'a>(headers: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let key = format!("\"{name}\"");
    let at = headers
        .windows(key.len())
        .position(|w| w == key.as_bytes())?
        + key.len();
    let rest = &headers[at..];
    let q = rest.iter().position(|&b| b == b'"')? + 1;
    let end = rest[q..].iter().position(|&b| b == b'"')?;
    Some(&rest[q..q + end])
}

/// A server (unmasked) WebSocket frame, FIN set.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// `text` with every `{ts}` replaced by `ns`.
fn stamp(text: &[u8], ns: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(b"{ts}") {
            out.extend_from_slice(ns.as_bytes());
            i += 4;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

/// `SENDER LEN:IDS, BODY` into `out`.
fn reply(out: &mut Vec<u8>, sender: &[u8], ids: &[u8], body: &[u8]) {
    out.clear();
    out.extend_from_slice(sender);
    out.push(b' ');
    out.extend_from_slice(ids.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(ids);
    out.extend_from_slice(b", ");
    out.extend_from_slice(body);
}

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
    publ.set_sndhwm(1_000_000).expect("hwm");
    publ.connect(&recv).expect("connect recv_spec");
    let mut out = Vec::with_capacity(256);
    // Broadcast members, by connection id (decimal, as Mongrel2 sends it).
    let mut members = Members::default();
    loop {
        let msg = match pull.recv_msg(0) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let Some(r) = parse(&msg) else { continue };
        if r.path == b"@*" {
            members.remove(r.id); // disconnect notice
            continue;
        }
        match header(r.headers, "METHOD").unwrap_or(b"") {
            b"JSON" => {
                if r.body.windows(10).any(|w| w == b"disconnect") {
                    members.remove(r.id);
                }
            }
            b"WEBSOCKET_HANDSHAKE" => {
                let mut head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    .to_vec();
                head.extend_from_slice(r.body);
                head.extend_from_slice(b"\r\n\r\n");
                reply(&mut out, r.sender, r.id, &head);
                let _ = publ.send(&out[..], 0);
                if r.path == b"/ws/broadcast" {
                    members.insert(r.id.to_vec());
                }
            }
            b"WEBSOCKET" => {
                let flags = header(r.headers, "FLAGS")
                    .and_then(|f| std::str::from_utf8(f).ok())
                    .and_then(|f| u8::from_str_radix(f.trim_start_matches("0x"), 16).ok())
                    .unwrap_or(0x81);
                let (answer, close) = match flags & 0x0f {
                    op @ (0x0..=0x2) => (Some(frame(if op == 0 { 1 } else { op }, r.body)), false),
                    0x8 => (Some(frame(0x8, r.body)), true),
                    0x9 => (Some(frame(0xA, r.body)), false),
                    _ => (None, false),
                };
                if let Some(a) = answer {
                    reply(&mut out, r.sender, r.id, &a);
                    let _ = publ.send(&out[..], 0);
                }
                if close {
                    members.remove(r.id);
                    reply(&mut out, r.sender, r.id, b"");
                    let _ = publ.send(&out[..], 0);
                }
            }
            method => {
                if method == b"POST" && r.path == b"/broadcast" {
                    let ns = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                        .to_string();
                    let f = frame(0x1, &stamp(r.body, &ns));
                    let ids: Vec<&Vec<u8>> = members.iter().collect();
                    let mut list = Vec::with_capacity(IDS_PER_REPLY * 8);
                    for chunk in ids.chunks(IDS_PER_REPLY) {
                        list.clear();
                        for (i, id) in chunk.iter().enumerate() {
                            if i > 0 {
                                list.push(b' ');
                            }
                            list.extend_from_slice(id);
                        }
                        reply(&mut out, r.sender, &list, &f);
                        let _ = publ.send(&out[..], 0);
                    }
                    let text = format!("sent to {}", ids.len());
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    reply(&mut out, r.sender, r.id, head.as_bytes());
                    let _ = publ.send(&out[..], 0);
                    reply(&mut out, r.sender, r.id, b"");
                    let _ = publ.send(&out[..], 0);
                } else {
                    reply(&mut out, r.sender, r.id, HELLO);
                    let _ = publ.send(&out[..], 0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_headers() {
        let h = br#"{"PATH":"/ws/broadcast","METHOD":"WEBSOCKET","FLAGS":"0x81"}"#;
        let mut m = b"b0b0 42 /ws/broadcast ".to_vec();
        m.extend_from_slice(format!("{}:", h.len()).as_bytes());
        m.extend_from_slice(h);
        m.extend_from_slice(b",2:hi,");
        let r = parse(&m).expect("parsed");
        assert_eq!(
            (r.sender, r.id, r.path, r.body),
            (&b"b0b0"[..], &b"42"[..], &b"/ws/broadcast"[..], &b"hi"[..])
        );
        assert_eq!(header(r.headers, "METHOD"), Some(&b"WEBSOCKET"[..]));
        assert_eq!(header(r.headers, "FLAGS"), Some(&b"0x81"[..]));
        assert!(parse(b"a 1 /x 9:{},0:,").is_none()); // header length past the end
        assert!(parse(&m[..10]).is_none());
    }

    #[test]
    fn server_frames_are_unmasked_with_the_right_length() {
        assert_eq!(frame(1, b"hi"), b"\x81\x02hi");
        let f = frame(1, &[b'x'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        let f = frame(2, &vec![0; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
        assert_eq!(f.len(), 70_010);
    }

    #[test]
    fn stamps_every_mark_and_builds_list_replies() {
        assert_eq!(stamp(b"1 {ts} x{ts}", "17"), b"1 17 x17");
        let mut out = Vec::new();
        reply(&mut out, b"uuid", b"1 22 333", b"body");
        assert_eq!(out, b"uuid 8:1 22 333, body");
    }
}
