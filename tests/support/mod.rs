//! The one support tree of zring's integration tests. Every test file mounts it with
//! `#[macro_use] mod support;` (each test binary compiles its own copy; what a binary does
//! not use is dead code there, hence the allow).
//!
//! * `proc`: the one way to start a process (`Proc`): it never outlives the test process.
//! * `net`: ports (`free_port`, `free_ports`), `wait_port`, temp dirs.
//! * protocol clients written independently of zring: `http` (raw HTTP, a recording
//!   `Client`, `curl`), `ws` (raw RFC 6455 frames, the only SHA-1 in the tests), `tls`
//!   (a test PKI, `openssl s_client`), `tn` (tnetstring) and `zhttp` (a recording ZHTTP
//!   handler over ZeroMQ).
//! * `stack`: zring (or Condure) plus the example handler, for the HTTP/WebSocket/TLS suites.
//! * `peers`: Condure/Pushpin/Mongrel2 parity machinery (scripts, transcripts, diffs).
//! * `runtime`: the scripted driver of the runtime contract tests (in-process, no children).
#![allow(dead_code)]

pub mod bridge;
pub mod http;
pub mod net;
pub mod origin;
pub mod peers;
pub mod proc;
pub mod requester;
pub mod runtime;
pub mod stack;
pub mod tls;
pub mod tn;
pub mod ws;
pub mod zhttp;

// What most suites use, at the root (`use support::*`).
#[allow(unused_imports)]
pub use http::{curl, dechunk, exchange, find, read_all, read_response, read_response_from};
#[allow(unused_imports)]
pub use net::{free_port, free_ports, temp_dir, wait_port, TempDir};
#[allow(unused_imports)]
pub use proc::Proc;
#[allow(unused_imports)]
pub use stack::Stack;

pub const RUNTIMES: [&str; 2] = ["uring", "epoll"];

/// Runs a test body once per runtime: `name(rt) { body }` becomes `name::uring` and
/// `name::epoll`. Test files that use it declare `#[macro_use] mod support;`.
#[allow(unused_macros)]
macro_rules! both_runtimes {
    ($($name:ident($rt:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn run($rt: &str) $body
                #[test]
                fn uring() { run("uring") }
                #[test]
                fn epoll() { run("epoll") }
            }
        )*
    };
}
