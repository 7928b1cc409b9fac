//! At the connection limit zring stays responsive (both runtimes, real sockets, the example
//! handler): a newcomer takes the place of the oldest idle keep-alive connection, and when
//! nothing is idle (every slot holds a WebSocket) it is answered `503` with `Retry-After`
//! at once instead of waiting in the listen backlog. One worker, so its share is the limit.
#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::ws::Ws;
use support::*;

const MAXCONN: usize = 10;

fn get(c: &mut TcpStream) -> String {
    c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(c);
    head
}

/// True once the server closed `c` (EOF within 5 s, no byte before it).
fn closed_by_server(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 64];
    matches!(c.read(&mut b), Ok(0))
}

both_runtimes! {
    idle_keepalives_make_room_then_503(rt) {
        let max = MAXCONN.to_string();
        let s = Stack::with_example(rt, &["--workers", "1", "--stream-maxconn", &max]);
        // The share filled with kept-alive connections, each served once (idle now).
        let mut idle: Vec<TcpStream> = (0..MAXCONN)
            .map(|_| {
                let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                assert!(get(&mut c).starts_with("HTTP/1.1 200"));
                c
            })
            .collect();
        // Each newcomer is served, and the oldest idle connection goes for it.
        for i in 0..4 {
            let mut n = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            n.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert!(get(&mut n).starts_with("HTTP/1.1 200"), "newcomer {i}");
            assert!(closed_by_server(&mut idle[i]), "idle connection {i} was closed for room");
            idle.push(n);
        }
        // The newest idle ones are still served.
        let last = idle.len() - 1;
        assert!(get(&mut idle[last]).starts_with("HTTP/1.1 200"));
        // Replace every idle connection by a WebSocket: nothing is idle any more.
        let mut sockets: Vec<Ws> = (0..MAXCONN).map(|_| Ws::connect(s.port, "/ws")).collect();
        for w in &sockets {
            assert_eq!(w.status(), 101);
        }
        for (i, c) in idle.iter_mut().enumerate().skip(4) {
            assert!(closed_by_server(c), "idle connection {i} made room for a WebSocket");
        }
        // Now a newcomer gets 503 with Retry-After, at once (not the backlog).
        let (code, out) = curl(&["-sS", "-m", "5", "-D", "-", "-o", "/dev/null", &s.url("/hello")]);
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{out}");
        assert!(out.contains("Retry-After: 1\r\n"), "{out}");
        // The WebSockets were not touched: each still echoes.
        for w in &mut sockets {
            let m = w.masked(true, 0, 1, b"still here");
            w.write(&m);
            let (op, payload, _) = w.read_message(Duration::from_secs(5));
            assert_eq!((op, payload.as_slice()), (1, &b"still here"[..]));
        }
        // Once one closes, a newcomer is served again.
        drop(sockets.pop());
        std::thread::sleep(Duration::from_millis(300));
        let (code, out) = curl(&["-sS", "-m", "5", "-D", "-", "-o", "/dev/null", &s.url("/hello")]);
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
}
