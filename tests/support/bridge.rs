//! zring's bridge run in-process on its own thread (no zring process), for tests that put a
//! real ZeroMQ handler peer in front of it.
use std::sync::Arc;
use std::thread::JoinHandle;

use zring::bridge::{self, Shared};
use zring::config::{self, Config};

/// One worker's queues and the bridge over stream sockets at `base` (an ipc spec base), every
/// socket's high-water mark `hwm`. The thread ends once the worker reports done
/// (`Shared::workers_done`) and the outbox is flushed.
pub fn start(base: &str, hwm: i32) -> (Arc<Shared>, JoinHandle<()>) {
    let cfg = Config {
        listen: vec![config::parse_listen("127.0.0.1:1,stream").unwrap()],
        zclient_stream: vec![base.to_owned()],
        ..Config::default()
    };
    let shared = Shared::new(1).unwrap();
    let b = bridge::start_with_hwm(&cfg, None, shared.clone(), hwm).expect("bridge sockets");
    (shared, std::thread::spawn(move || b.run()))
}
