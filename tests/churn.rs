//! Connection turnover on both runtimes: every response arrives, and nothing leaks.
//!
//! The io_uring runtime used to lose about 1 % of the responses of connections that turn
//! over quickly: the `SHUTDOWN` of a closing connection runs on an io-wq thread and looked
//! up its direct descriptor only there, after the connection's `CLOSE` had freed the table
//! entry and an accept had given it to the next connection, which then got a FIN instead of
//! its response. These tests drive the real zring and the example handler with
//! `zring-churn` (fresh connections from many loopback source addresses).
#[macro_use]
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::*;

/// Runs `zring-churn` against `port`; returns its `key=value` line after checking it
/// reports no error of any kind and every cycle done.
fn churn(port: u16, mode: &str, cycles: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_zring-churn"))
        .args(["--target", &format!("127.0.0.1:{port}")])
        .args(["--mode", mode, "--cycles", &cycles.to_string()])
        .args(["--threads", "4", "--max-secs", "240"])
        .output()
        .expect("run zring-churn");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{line} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(line.contains(" errors=0 "), "{line}");
    assert!(
        line.contains(&format!(" done={cycles} ok={cycles} ")),
        "{line}"
    );
    line
}

/// The sum of zring's `connmgr_connections` gauges (every protocol, TLS and state), read
/// from its `--prometheus` listener on `mport`.
fn open_connections(mport: u16) -> i64 {
    let mut c = TcpStream::connect(("127.0.0.1", mport)).expect("connect to /metrics");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = String::from_utf8(body).expect("metrics text");
    let samples: Vec<i64> = text
        .lines()
        .filter(|l| l.starts_with("connmgr_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().expect("gauge value"))
        .collect();
    assert!(!samples.is_empty(), "no connmgr_connections in {text}");
    samples.iter().sum()
}

/// Holds `n` keep-alive connections open at once and checks each is answered: after churn,
/// every slot of the worker's share must be free again (a leaked slot would leave one of
/// these waiting in the backlog).
fn all_slots_serve(port: u16, n: usize) {
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let (head, body) = read_response(c);
        assert!(head.starts_with("HTTP/1.1 200"), "connection {i}: {head}");
        assert_eq!(body, b"hello\n", "connection {i}");
    }
}

both_runtimes! {
    // 2,000 `Connection: close` requests, the client closing right after the response:
    // every one answered (io_uring lost 30-40 of them before the fix).
    connection_close_every_response(rt) {
        let s = Stack::with_example(rt, &[]);
        churn(s.port, "close", 2_000);
    }

    // Malformed requests (400, then close) alternating with valid POSTs on fresh
    // connections: every valid request answered, every bad one told 400.
    error_close_alternating(rt) {
        let s = Stack::with_example(rt, &[]);
        churn(s.port, "mixed", 2_000);
    }

    // 50,000 connect/request/close cycles with no client-side error, then zring holds no
    // client connection and every one of its (small) maxconn slots still serves.
    churn_leaves_nothing(rt) {
        let maxconn = 64;
        let mport = free_port();
        let s = Stack::with_example(
            rt,
            &[
                "--stream-maxconn",
                &maxconn.to_string(),
                "--prometheus",
                &format!("127.0.0.1:{mport}"),
            ],
        );
        // zring's own count of open connections (its slots in use): exact on both runtimes,
        // where the kernel's tables would also show other processes' sockets. The detector
        // sees a connection zring holds.
        {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            read_response(&mut c);
            assert_eq!(open_connections(mport), 1);
        }
        churn(s.port, "keepalive", 25_000);
        churn(s.port, "close", 25_000);
        // Connections closed by the client are reaped as their EOF arrives. Under the full
        // suite's load on two cores, 1-2 were seen still open 30 s after the churn (not yet
        // explained): the wait covers the 60 s keep-alive deadline, so what this asserts is
        // that nothing outlives the deadlines.
        let mut open = open_connections(mport);
        for _ in 0..700 {
            if open == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            open = open_connections(mport);
        }
        assert_eq!(open, 0, "zring still holds connections after churn");
        // The accept gate keeps a few slots spare per worker (armed accepts), so fill to
        // just below the limit.
        all_slots_serve(s.port, maxconn - 24);
    }
}
