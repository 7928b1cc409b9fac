//! The bridge under a small `--stream-maxconn`: ZeroMQ high-water marks used to be 5 % of
//! the connection limits (105 at 2,000, 1 at 20), and a ROUTER send that met the HWM was
//! retried only on the bridge's 50 ms timer, so WebSocket echo fell to ~600 msgs/s (every
//! burst past the HWM cost a 50 ms stall). Real zring, the example handler over real ZeroMQ,
//! real WebSocket clients on loopback. These are not benchmarks: they check that every echo
//! arrives in order within a generous bound (speed is `scripts/bench-ws.sh`'s; the POLLOUT
//! wake-up itself is tests/bridge_pollout.rs).
#[macro_use]
mod support;

use std::time::{Duration, Instant};

use support::ws::*;
use support::Stack;

/// Runs `rounds` rounds on each of `conns` WebSocket connections to `/ws` at once: a round
/// writes `burst` text messages in one go and reads their echoes, in order. Returns how
/// long each round took, over all connections; a connection starts no round after `limit`
/// (so a stalling bridge fails the test in `limit`, not in minutes).
fn echo_rounds(
    port: u16,
    conns: usize,
    rounds: usize,
    burst: usize,
    limit: Duration,
) -> Vec<Duration> {
    let end = Instant::now() + limit;
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..conns)
            .map(|c| {
                s.spawn(move || {
                    let mut ws = Ws::connect(port, "/ws");
                    let mut took = Vec::with_capacity(rounds);
                    for r in 0..rounds {
                        if Instant::now() >= end {
                            break;
                        }
                        let msgs: Vec<Vec<u8>> = (0..burst)
                            .map(|i| format!("c{c:02} r{r:03} m{i:03}").into_bytes())
                            .collect();
                        let mut wire = Vec::new();
                        for m in &msgs {
                            wire.extend(ws.masked(true, 0, TEXT, m));
                        }
                        let t0 = Instant::now();
                        ws.write(&wire);
                        for m in &msgs {
                            let (op, got, _) = ws.read_message(Duration::from_secs(20));
                            assert_eq!(op, TEXT);
                            assert_eq!(got, *m, "echoes out of order or altered");
                        }
                        took.push(t0.elapsed());
                    }
                    took
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect()
    })
}

both_runtimes! {
    // At --stream-maxconn 2,000 (HWM 105 before the floor) 800 messages in flight (8
    // connections x bursts of 100) pass the ROUTER's HWM: every echo still arrives, in
    // order, well within the bound. How fast a burst goes is not asserted here (it is the
    // machine's speed; a debug build on a slow box takes ~50 ms a burst): that held packets
    // go on the socket's POLLOUT and not on the 50 ms timer is tests/bridge_pollout.rs,
    // where every packet meets an HWM of 1 and a timer-paced bridge is 1,000 times slower.
    bridge_router_full_delivers_every_echo(rt) {
        let stack = Stack::with_example(rt, &["--stream-maxconn", "2000"]);
        let t0 = Instant::now();
        let took = echo_rounds(stack.port, 8, 10, 100, Duration::from_secs(20));
        let total = t0.elapsed();
        assert_eq!(took.len(), 80, "8,000 echoes not done in {total:?}");
    }

    // At --stream-maxconn 20 (--req-maxconn 2) the HWMs were 1: 2,000 one-at-a-time round
    // trips over 4 connections took four minutes. With the HWM floor they take well under
    // a second; 20 s is the generous bound.
    bridge_tiny_maxconn_ws_echo_completes(rt) {
        let stack = Stack::with_example(rt, &["--stream-maxconn", "20", "--req-maxconn", "2"]);
        let t0 = Instant::now();
        let took = echo_rounds(stack.port, 4, 500, 1, Duration::from_secs(20));
        let total = t0.elapsed();
        assert_eq!(
            took.len(),
            2000,
            "{} of 2,000 echo round trips done in {total:?}",
            took.len()
        );
    }
}
