//! Deadlines against silent and slow clients, on both runtimes with real sockets and the
//! example handler: a head must be whole by `--head-timeout` however it trickles, a body
//! must keep `--body-min-bytes` per `--body-timeout`, and a kept-alive connection with no
//! next request goes after `--keepalive-timeout`. The deadlines are shortened here (the
//! defaults are 30 s, 10 s and 60 s); their exact timing is covered on simulated time in
//! `src/conn/tests/deadlines.rs`.
#[macro_use]
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// What a client connection saw by the time the server closed it.
struct Closed {
    after: Duration,
    bytes: Vec<u8>,
}

/// Reads every connection (non-blocking) until each has been closed by the server or
/// `limit` passes; `tick` runs between rounds (to trickle bytes). Returns, per connection,
/// when it closed (counted from `start`) and what it received, `None` if still open.
fn watch_closes(
    conns: &mut [TcpStream],
    start: Instant,
    limit: Duration,
    mut tick: impl FnMut(&mut [TcpStream], &[Option<Closed>]),
) -> Vec<Option<Closed>> {
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); conns.len()];
    let mut closed: Vec<Option<Closed>> = (0..conns.len()).map(|_| None).collect();
    for c in conns.iter() {
        c.set_nonblocking(true).unwrap();
    }
    let mut buf = [0u8; 4096];
    while closed.iter().any(Option::is_none) && start.elapsed() < limit {
        for (i, c) in conns.iter_mut().enumerate() {
            if closed[i].is_some() {
                continue;
            }
            loop {
                match c.read(&mut buf) {
                    Ok(0) => {
                        let bytes = std::mem::take(&mut got[i]);
                        closed[i] = Some(Closed {
                            after: start.elapsed(),
                            bytes,
                        });
                        break;
                    }
                    Ok(n) => got[i].extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("connection {i}: {e} (a reset, not a close)"),
                }
            }
        }
        tick(conns, &closed);
        std::thread::sleep(Duration::from_millis(20));
    }
    closed
}

fn connect_many(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect {i}: {e}"))
        })
        .collect()
}

fn get_hello(port: u16) -> String {
    let r = exchange(
        port,
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    String::from_utf8_lossy(&r).into_owned()
}

both_runtimes! {
    // 1,000 connections that never send a byte are closed at the head deadline, with no
    // response (nothing was asked), and not before it.
    silent_clients_closed_at_the_head_deadline(rt) {
        let s = Stack::with_example(rt, &["--head-timeout", "2000"]);
        let start = Instant::now();
        let mut conns = connect_many(s.port, 1_000);
        let closed = watch_closes(&mut conns, start, Duration::from_secs(20), |_, _| {});
        for (i, c) in closed.iter().enumerate() {
            let c = c.as_ref().unwrap_or_else(|| panic!("connection {i} still open at 20 s"));
            assert!(c.after >= Duration::from_millis(1_900), "connection {i} closed early: {:?}", c.after);
            assert!(c.bytes.is_empty(), "connection {i} got {:?}", String::from_utf8_lossy(&c.bytes));
        }
        assert!(get_hello(s.port).starts_with("HTTP/1.1 200"));
    }

    // A slowloris of 2,000 connections, each adding a header byte every 200 ms: a normal
    // client is served while all of them are held, then every one gets 408 at its head
    // deadline. The deadline (6 s) leaves room for connecting 2,000 clients on a loaded
    // CI box before the normal client's check.
    slowloris_closed_by_the_head_deadline(rt) {
        let s = Stack::with_example(rt, &["--head-timeout", "6000"]);
        let start = Instant::now();
        let mut conns = connect_many(s.port, 2_000);
        for c in &mut conns {
            c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: ").unwrap();
        }
        let mut served_while_held = None;
        let mut last_byte = Instant::now();
        let closed = watch_closes(&mut conns, start, Duration::from_secs(30), |conns, closed| {
            if served_while_held.is_none() && start.elapsed() > Duration::from_millis(500) {
                let r = get_hello(s.port);
                let open = closed.iter().filter(|c| c.is_none()).count();
                served_while_held = Some((r, open));
            }
            if last_byte.elapsed() >= Duration::from_millis(200) {
                last_byte = Instant::now();
                for (c, closed) in conns.iter_mut().zip(closed) {
                    if closed.is_none() {
                        let _ = c.write(b"a");
                    }
                }
            }
        });
        let (r, open) = served_while_held.expect("the normal client ran");
        assert!(r.starts_with("HTTP/1.1 200"), "normal client during the attack: {r:?}");
        assert_eq!(open, 2_000, "the attack was held while the normal client was served");
        for (i, c) in closed.iter().enumerate() {
            let c = c.as_ref().unwrap_or_else(|| panic!("connection {i} still open at 30 s"));
            let text = String::from_utf8_lossy(&c.bytes);
            assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "connection {i}: {text:?}");
            assert!(c.after >= Duration::from_millis(5_900), "connection {i} closed early: {:?}", c.after);
        }
    }

    // A body that stops gets 408 after one `--body-timeout` period; a body that keeps the
    // minimum rate, however slow in total, is echoed whole.
    slow_body_gets_408(rt) {
        let s = Stack::with_example(rt, &["--body-timeout", "1000", "--body-min-bytes", "1024"]);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n").unwrap();
        c.write_all(&[b'x'; 100]).unwrap();
        let start = Instant::now();
        let closed = watch_closes(std::slice::from_mut(&mut c), start, Duration::from_secs(10), |_, _| {});
        let closed = closed[0].as_ref().expect("closed within 10 s");
        let text = String::from_utf8_lossy(&closed.bytes);
        assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text:?}");
        assert!(closed.after >= Duration::from_millis(900), "{:?}", closed.after);

        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6144\r\n\r\n").unwrap();
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(600));
            c.write_all(&[b'y'; 1024]).unwrap();
        }
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (head, body) = read_response(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.ends_with(&[b'y'; 6144]), "{} bytes", body.len());
    }

    // Between requests, a kept-alive connection waits `--keepalive-timeout`, not the head
    // deadline, then is closed without a response.
    keepalive_idle_closed(rt) {
        let s = Stack::with_example(rt, &["--keepalive-timeout", "2000", "--head-timeout", "1000"]);
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        std::thread::sleep(Duration::from_millis(1_500));
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "still served after the head timeout: {head}");
        let closed = watch_closes(std::slice::from_mut(&mut c), Instant::now(), Duration::from_secs(10), |_, _| {});
        let closed = closed[0].as_ref().expect("closed within 10 s");
        assert!(closed.bytes.is_empty(), "{:?}", String::from_utf8_lossy(&closed.bytes));
        assert!(closed.after >= Duration::from_millis(1_900), "{:?}", closed.after);
    }
}
