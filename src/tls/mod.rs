//! TLS for client connections: Condure's identity files, one rustls server configuration per
//! listener, and a sans-IO session the connection core drives.
//!
//! - [`identities`]: `<dir>/<name>.crt` + `<dir>/<name>.key`, looked up by SNI (exact, then a
//!   one-level wildcard `_.<rest>`, then the listener's `default-cert`), reloaded when the
//!   files' mtimes change.
//! - [`config`]: a `rustls::ServerConfig` per listener (TLS 1.3 and 1.2, ECDHE + AEAD suites,
//!   ALPN `http/1.1`, tickets and a bounded session cache).
//! - [`session`]: one connection's TLS state over rustls's unbuffered API: ciphertext in,
//!   plaintext and records out, no buffers held between calls.
//!
//! This layer knows nothing of sockets, runtimes or HTTP; it never reads a socket. It reads
//! a clock and the file system only inside the certificate lookup, which rustls calls during a
//! handshake.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod identities;
pub mod session;

pub use config::server_config;
pub use identities::{check_startup, Identities, Resolver};
pub use session::{Fed, Session, TlsError};

#[cfg(test)]
mod tests;
