//! Connection reuse to origins: the key a connection is shared under, an idle connection
//! parked between two exchanges ([`IdleConn`], sans-IO like the exchanges), and the
//! worker's index of them ([`Index`]).
//!
//! - Key: where the connection was looked up and connected (`connect-host` or the URI's
//!   host, and the port), and for TLS the name sent as SNI and the client configuration the
//!   session runs under (one `Arc` per combination of `ignore-tls-errors`,
//!   `trust-connect-host` and client certificate: `tls::client::ClientTls::config`), so a
//!   connection verified one way or holding one client certificate never serves a request
//!   that asked for another. pushpin-connmgr keys by (peer address, TLS, URI host) only.
//! - The key is looked up before DNS: a reused connection skips the lookup as well as the
//!   connect and the handshake. The address it was connected to is checked against
//!   `--deny-out-internal` for each request (`ignore-policies` differs per request).
//! - Bounds: `limits::OUT_POOL_IDLE_PER_KEY_MAX` per key and
//!   `limits::OUT_POOL_IDLE_PER_WORKER_MAX` in all, per worker; an idle connection closes
//!   after `limits::OUT_POOL_IDLE_MS`. A connection that finds the pool full is closed.
//!   The most recently parked connection is taken first (LIFO): the others then age out,
//!   so the pool shrinks to what the load needs.
//! - An idle connection is read: EOF, a reset or any byte (an origin has nothing to say
//!   between responses) closes it. It holds no buffer, only its TLS state if any.
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::ClientConfig;

use super::tls::OutTls;
use crate::conn::{Ctx, Output};
use crate::limits;
use crate::runtime::Command;

/// What connections are shared under (see the module docs).
#[derive(Clone, Debug)]
pub struct PoolKey {
    pub host: Box<str>,
    pub port: u16,
    /// The SNI host (empty for plain http).
    pub sni: Box<str>,
    /// The TLS configuration, compared by identity (`None`: plain).
    pub tls: Option<Arc<ClientConfig>>,
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &PoolKey) -> bool {
        let tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        tls && self.port == other.port && self.host == other.host && self.sni == other.sni
    }
}

impl Eq for PoolKey {}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.host.hash(state);
        self.port.hash(state);
        self.sni.hash(state);
        self.tls.as_ref().map(Arc::as_ptr).hash(state);
    }
}

/// A live connection between two exchanges, as it moves from one to the pool and on.
pub struct Parked {
    pub key: PoolKey,
    pub peer: SocketAddr,
    pub(super) tls: Option<Box<OutTls>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Our `close_notify` is being sent.
    Finishing,
    /// `Close` issued.
    Closing,
}

/// A parked connection on its slot. Invariant: only an `Idle` one is in the [`Index`].
pub struct IdleConn {
    conn: Parked,
    state: State,
    /// When it closes unused (`limits::OUT_POOL_IDLE_MS` after parking).
    expires: Instant,
}

impl IdleConn {
    pub fn new(conn: Parked, now: Instant) -> IdleConn {
        IdleConn {
            conn,
            state: State::Idle,
            expires: now + std::time::Duration::from_millis(limits::OUT_POOL_IDLE_MS),
        }
    }

    pub fn key(&self) -> &PoolKey {
        &self.conn.key
    }

    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    pub fn is_tls(&self) -> bool {
        self.conn.key.tls.is_some()
    }

    /// Still idle: it may be taken, and is counted as idle.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// The connection for an exchange (it must be idle).
    pub fn take(self) -> Parked {
        assert_eq!(self.state, State::Idle);
        self.conn
    }

    /// Closes it (expired, evicted, the origin closed or spoke, zring stops): TLS sends
    /// `close_notify` first unless the origin already ended the connection (`abrupt`).
    pub fn close(&mut self, cx: &mut Ctx, abrupt: bool) {
        if self.state != State::Idle {
            return;
        }
        let notify = match abrupt {
            true => None,
            false => self.conn.tls.as_mut().and_then(|t| t.close_notify(cx.pool)),
        };
        match notify {
            Some(buf) => {
                self.state = State::Finishing;
                self.expires =
                    cx.now + std::time::Duration::from_millis(limits::OUT_CLOSE_NOTIFY_MS);
                let slot = cx.slot;
                cx.out.push(Output::Io(Command::Send { slot, buf }));
            }
            None => self.close_now(cx),
        }
    }

    fn close_now(&mut self, cx: &mut Ctx) {
        self.state = State::Closing;
        if let Some(t) = self.conn.tls.as_mut() {
            t.release(cx.pool);
        }
        cx.out.push(Output::Io(Command::Close { slot: cx.slot }));
    }

    /// Bytes from an idle origin: not a response to anything; the connection ends.
    pub fn handle_recv(&mut self, cx: &mut Ctx) {
        self.close(cx, true);
    }

    pub fn handle_eof(&mut self, cx: &mut Ctx) {
        self.close(cx, true);
    }

    pub fn handle_sent(&mut self, cx: &mut Ctx, buf: Vec<u8>) {
        cx.pool.give(buf);
        if self.state == State::Finishing {
            self.close_now(cx);
        }
    }

    pub fn handle_timeout(&mut self, cx: &mut Ctx) {
        match self.state {
            _ if cx.now < self.expires => {}
            State::Idle => self.close(cx, false),
            State::Finishing => self.close_now(cx), // close_notify not written in time
            State::Closing => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state != State::Closing).then_some(self.expires)
    }

    /// Closing or closed: counted as closing.
    pub fn is_closing(&self) -> bool {
        self.state != State::Idle
    }
}

/// A worker's idle connections by key: exchange indices, most recently parked last.
#[derive(Default)]
pub struct Index {
    by_key: HashMap<PoolKey, Vec<u32>>,
    count: usize,
}

impl Index {
    /// Adds idle connection `i` under `key`. False: the pool is full (per key or in all).
    pub fn push(&mut self, key: &PoolKey, i: u32) -> bool {
        if self.count >= limits::OUT_POOL_IDLE_PER_WORKER_MAX {
            return false;
        }
        let list = self.by_key.entry(key.clone()).or_default();
        if list.len() >= limits::OUT_POOL_IDLE_PER_KEY_MAX {
            return false;
        }
        debug_assert!(!list.contains(&i));
        list.push(i);
        self.count += 1;
        true
    }

    /// The most recently parked connection under `key` that `allow` accepts; taken out.
    pub fn pop(&mut self, key: &PoolKey, allow: impl Fn(u32) -> bool) -> Option<u32> {
        let list = self.by_key.get_mut(key)?;
        let at = list.iter().rposition(|&i| allow(i))?;
        let i = list.remove(at);
        if list.is_empty() {
            self.by_key.remove(key);
        }
        self.count -= 1;
        Some(i)
    }

    /// Takes `i` out (it is closing).
    pub fn remove(&mut self, key: &PoolKey, i: u32) {
        let Some(list) = self.by_key.get_mut(key) else {
            return;
        };
        if let Some(at) = list.iter().position(|&x| x == i) {
            list.remove(at);
            self.count -= 1;
        }
        if list.is_empty() {
            self.by_key.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str) -> PoolKey {
        PoolKey {
            host: host.into(),
            port: 80,
            sni: "".into(),
            tls: None,
        }
    }

    #[test]
    fn lifo_per_key_bounded_and_filtered() {
        let mut ix = Index::default();
        assert!(ix.push(&key("a"), 1));
        assert!(ix.push(&key("a"), 2));
        assert!(ix.push(&key("b"), 3));
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.pop(&key("a"), |_| true), Some(2));
        assert_eq!(ix.pop(&key("a"), |i| i != 1), None);
        assert_eq!(ix.pop(&key("c"), |_| true), None);
        ix.remove(&key("b"), 3);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.pop(&key("a"), |_| true), Some(1));
        assert!(ix.is_empty());
        for i in 0..limits::OUT_POOL_IDLE_PER_KEY_MAX as u32 {
            assert!(ix.push(&key("a"), i));
        }
        assert!(!ix.push(&key("a"), 9999));
        assert!(ix.push(&key("b"), 9999));
    }

    #[test]
    fn keys_compare_tls_configurations_by_identity() {
        let provider = crate::tls::config::provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = crate::tls::client::ClientTls::new(
            provider,
            roots,
            crate::tls::client::RootsSource::Given,
        )
        .unwrap();
        let plain = tls.config(&Default::default()).unwrap();
        let insecure = tls
            .config(&crate::tls::client::Wants {
                ignore_tls_errors: true,
                ..Default::default()
            })
            .unwrap();
        let k = |c: &Arc<ClientConfig>| PoolKey {
            host: "h".into(),
            port: 443,
            sni: "h".into(),
            tls: Some(c.clone()),
        };
        assert_eq!(k(&plain), k(&tls.config(&Default::default()).unwrap()));
        assert_ne!(k(&plain), k(&insecure));
        assert_ne!(k(&plain), key("h"));
    }
}
