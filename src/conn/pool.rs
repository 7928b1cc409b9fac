//! What a worker's connections share: a pool of byte buffers, so sends, spills and packets
//! reuse memory instead of allocating per message and idle connections hold none (and the
//! permessage-deflate compressor of connections that keep no context); and the
//! handler addresses sessions point at, interned so a connection holds a pointer, not 64
//! bytes.
use std::collections::HashMap;
use std::sync::Arc;

use crate::bridge::Addr;
use crate::limits;

#[derive(Default)]
pub struct Pool {
    free: Vec<Vec<u8>>,
    /// The worker's compressor for every permessage-deflate connection without server
    /// context takeover, and for fan-out frames: a zlib state per window size in use, kept
    /// and reset between messages, so no connection holds one.
    pub deflate: crate::proto::ws_deflate::SharedCompressor,
}

impl Pool {
    /// An empty buffer, reused when one is free.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    /// Returns a buffer. Big ones and those past the pool's bound are freed, so one large
    /// response does not pin memory for good.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0
            || buf.capacity() > limits::POOL_BUFFER_BYTES_MAX
            || self.free.len() >= limits::POOL_BUFFERS_MAX
        {
            return;
        }
        buf.clear();
        self.free.push(buf);
    }
}

/// Handler addresses (the `from` of handler packets), one shared copy per distinct handler.
/// Handlers are few (a deployment runs a handful), so the table stays tiny; it is bounded
/// anyway, against a handler that invents a new `from` per packet.
#[derive(Default)]
pub struct Handlers {
    table: HashMap<Addr, Arc<Addr>>,
}

impl Handlers {
    /// The shared copy of `from`, or `None` if it is longer than an address may be.
    pub fn intern(&mut self, from: &[u8]) -> Option<Arc<Addr>> {
        let key = Addr::try_from(from).ok()?;
        if let Some(a) = self.table.get(&key) {
            return Some(a.clone());
        }
        if self.table.len() >= limits::HANDLERS_INTERNED_MAX {
            // Forget addresses no session uses any more; if all are in use, this one is
            // simply not shared.
            self.table.retain(|_, a| Arc::strong_count(a) > 1);
            if self.table.len() >= limits::HANDLERS_INTERNED_MAX {
                return Some(Arc::new(key));
            }
        }
        let a = Arc::new(key.clone());
        self.table.insert(key, a.clone());
        Some(a)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_once_and_bounded() {
        let mut h = Handlers::default();
        let a = h.intern(b"handler-a").unwrap();
        let b = h.intern(b"handler-a").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(h.intern(&[b'x'; limits::ADDRESS_BYTES_MAX + 1]).is_none());
        let mut held = Vec::new();
        for i in 0..limits::HANDLERS_INTERNED_MAX * 2 {
            held.push(h.intern(format!("h{i}").as_bytes()).unwrap());
        }
        assert!(h.len() <= limits::HANDLERS_INTERNED_MAX);
        drop(held);
        h.intern(b"fresh").unwrap();
        assert!(
            h.len() <= 2,
            "unused addresses are forgotten, a is still held"
        );
        assert_eq!(&a[..], b"handler-a");
    }
}
