//! zring: a connection manager. Clients speak HTTP/1.x (later WebSocket, TLS) to zring;
//! zring speaks ZHTTP (later Mongrel2) to handler processes over ZeroMQ.
//!
//! Layers, each with its own room (see `docs/architecture.md`):
//! - [`proto`]: sans-IO codecs (tnetstring, ZHTTP, HTTP/1). Bytes in, values out.
//! - [`conn`]: one connection's state machine (sans-IO): request head → handler session →
//!   body/credits → response → reuse or close.
//! - [`runtime`]: io_uring and epoll event loops. Sockets, buffers, timers; no protocol.
//! - [`bridge`]: ZeroMQ sockets and the bounded queues between them and the workers.
//! - [`tls`]: certificate lookup, rustls configuration and a sans-IO TLS session.
//! - [`worker`]: a pinned thread gluing one runtime to one slab of connections.
//! - [`metrics`]: counters kept as things happen, and the `--prometheus` listener.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod access_log;
pub mod bridge;
pub mod config;
pub mod conn;
pub mod limits;
pub mod listeners;
pub mod log;
pub mod m2config;
pub mod m2serve;
pub mod metrics;
pub mod proto;
pub mod resolver;
pub mod runtime;
pub mod takeover;
pub mod timer;
pub mod tls;
pub mod worker;
