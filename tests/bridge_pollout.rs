//! The bridge with a real ZeroMQ handler peer: ROUTER packets held because the peer's pipe
//! is at its high-water mark go out when the pipe drains (the ROUTER's POLLOUT), not on the
//! bridge's 50 ms retry timer. The HWM is set to 1 so every packet meets it: with the timer,
//! 200 packets took 50 ms apiece or so (seconds in all); woken by POLLOUT they follow each
//! other in microseconds. Not a benchmark: the assertion counts 50 ms stalls, with room for
//! a loaded machine's hiccups.
#[macro_use]
mod support;

use std::time::{Duration, Instant};

use zring::bridge::{Addr, OutPacket, Route};
use zring::config;

const PACKETS: usize = 200;

#[test]
fn bridge_router_at_hwm_wakes_on_pollout() {
    let dir = std::env::temp_dir().join(format!("zring-bridge-pollout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = format!("ipc://{}/z", dir.display());
    let (shared, bridge_thread) = support::bridge::start(&base, 1);

    // The handler's side of the ROUTER: identity "h", and a receive HWM of 1 too.
    let ctx = zmq::Context::new();
    let h = ctx.socket(zmq::DEALER).unwrap();
    h.set_identity(b"h").unwrap();
    h.set_rcvhwm(1).unwrap();
    h.set_linger(0).unwrap();
    let (_, out_stream, _) = config::stream_endpoints(&base).unwrap();
    h.connect(&out_stream).unwrap();
    let to_h = |data: &[u8]| OutPacket {
        route: Route::Router(Addr::try_from(&b"h"[..]).unwrap()),
        data: data.to_vec(),
        expires: None,
    };
    let recv = |timeout: Duration| -> Option<Vec<u8>> {
        let mut items = [h.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, timeout.as_millis() as i64).unwrap();
        let parts = h.recv_multipart(zmq::DONTWAIT).ok()?;
        assert_eq!(parts.len(), 2, "[empty, payload] from the ROUTER");
        Some(parts[1].clone())
    };

    // Until the ROUTER knows the peer, its packets are dropped (ROUTER_MANDATORY): probe.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        shared.send_batch(&mut vec![to_h(b"probe")]);
        if recv(Duration::from_millis(100)).is_some() {
            break;
        }
        assert!(Instant::now() < end, "the handler peer never got a packet");
    }
    while recv(Duration::from_millis(100)).is_some() {}

    let mut batch: Vec<OutPacket> = (0..PACKETS)
        .map(|i| to_h(format!("p{i:04}").as_bytes()))
        .collect();
    shared.send_batch(&mut batch);
    let start = Instant::now();
    let mut last = start;
    let mut stalls = 0;
    for i in 0..PACKETS {
        let got = recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("packet {i} not delivered within 5 s"));
        assert_eq!(got, format!("p{i:04}").as_bytes(), "packets out of order");
        let now = Instant::now();
        if now - last >= Duration::from_millis(40) {
            stalls += 1;
        }
        last = now;
    }
    let total = start.elapsed();

    shared
        .workers_done
        .fetch_add(1, std::sync::atomic::Ordering::Release);
    shared.wake_bridge();
    bridge_thread.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        stalls <= 10,
        "{stalls} of {PACKETS} packets came 40 ms or more after the one before (all in \
         {total:?}): held ROUTER packets wait for a retry timer, not the socket's POLLOUT"
    );
}
