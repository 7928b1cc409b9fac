//! DNS for client mode, off the event loops: a small pool of threads doing blocking
//! `getaddrinfo` (std's `ToSocketAddrs`: A and AAAA in the system's order, `/etc/hosts`
//! and `nsswitch.conf` honoured), as pushpin-connmgr's `resolver` does.
//!
//! A worker queues a [`Query`] ([`Resolver::submit`], refused when the bounded queue is
//! full); a resolver thread answers into that worker's inbox (`bridge::Inbox::resolved`) and
//! wakes it. The answer is an event like any other: the worker hands it to the connection
//! that asked, if that connection still waits for it (`token`). getaddrinfo has no timeout
//! of its own; the connection's own deadline (`limits::DNS_TIMEOUT_MS`) fails the request
//! and a late answer is dropped.
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};

use arrayvec::ArrayVec;

use crate::bridge::Shared;
use crate::limits;

/// A name to resolve, for connection `slot` of `worker`.
#[derive(Debug)]
pub struct Query {
    pub worker: u16,
    pub slot: u32,
    /// The asking session's token: an answer that finds another session on the slot, or
    /// the same one no longer waiting, is dropped.
    pub token: u64,
    pub host: String,
    pub port: u16,
}

/// A resolver thread's answer.
#[derive(Debug)]
pub struct Answer {
    pub slot: u32,
    pub token: u64,
    /// Up to `limits::DNS_ADDRESSES_MAX` addresses, in getaddrinfo's order; empty when the
    /// name did not resolve.
    pub addrs: ArrayVec<SocketAddr, { limits::DNS_ADDRESSES_MAX }>,
}

/// The query queue the resolver threads share.
pub struct Resolver {
    queue: Mutex<VecDeque<Query>>,
    ready: Condvar,
    max: usize,
}

impl Resolver {
    pub fn new(max: usize) -> Resolver {
        assert!(max > 0);
        Resolver {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            max,
        }
    }

    /// Queues a query. False when the queue is at its bound (the caller fails the request).
    pub fn submit(&self, q: Query) -> bool {
        let mut queue = self.queue.lock().unwrap();
        if queue.len() >= self.max {
            return false;
        }
        queue.push_back(q);
        drop(queue);
        self.ready.notify_one();
        true
    }

    /// The oldest query, if any (the in-process harness answers queries itself).
    pub fn try_take(&self) -> Option<Query> {
        self.queue.lock().unwrap().pop_front()
    }

    fn take(&self) -> Query {
        let mut queue = self.queue.lock().unwrap();
        loop {
            if let Some(q) = queue.pop_front() {
                return q;
            }
            queue = self.ready.wait(queue).unwrap();
        }
    }
}

/// Resolves one name (blocking).
pub fn resolve(host: &str, port: u16) -> ArrayVec<SocketAddr, { limits::DNS_ADDRESSES_MAX }> {
    let mut addrs = ArrayVec::new();
    if host.len() > crate::conn::out::HOST_BYTES_MAX {
        return addrs;
    }
    if let Ok(it) = (host, port).to_socket_addrs() {
        for a in it {
            if addrs.try_push(a).is_err() {
                break;
            }
        }
    }
    addrs
}

/// Starts `threads` resolver threads serving `shared.resolver`. They live as long as the
/// process (blocked in getaddrinfo or waiting for work; nothing to clean up at exit).
pub fn spawn(shared: &Arc<Shared>, threads: usize) -> std::io::Result<()> {
    for i in 0..threads {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("resolver-{i}"))
            .spawn(move || loop {
                // The loop of a server thread: ends with the process.
                let q = shared.resolver.take();
                let addrs = resolve(&q.host, q.port);
                crate::log!(
                    crate::log::DEBUG,
                    "resolver",
                    "{}:{} -> {:?}",
                    q.host,
                    q.port,
                    addrs
                );
                let Some(inbox) = shared.inboxes.get(q.worker as usize) else {
                    continue;
                };
                inbox.resolved.lock().unwrap().push(Answer {
                    slot: q.slot,
                    token: q.token,
                    addrs,
                });
                inbox.wake();
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_literals_and_hosts_names_and_fails_invalid() {
        let a = resolve("127.0.0.1", 80);
        assert_eq!(
            a.as_slice(),
            &["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        let a = resolve("localhost", 81);
        assert!(!a.is_empty());
        assert!(a.iter().all(|a| a.ip().is_loopback() && a.port() == 81));
        assert!(resolve("nonexistent.invalid", 80).is_empty());
        assert!(resolve(&"a".repeat(300), 80).is_empty());
    }

    #[test]
    fn queue_is_bounded() {
        let r = Resolver::new(1);
        let q = |slot| Query {
            worker: 0,
            slot,
            token: 0,
            host: "x".into(),
            port: 1,
        };
        assert!(r.submit(q(0)));
        assert!(!r.submit(q(1)));
        assert_eq!(r.take().slot, 0);
        assert!(r.submit(q(2)));
    }
}
