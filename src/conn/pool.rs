//! What a worker's connections share: a pool of byte buffers, so sends, spills and packets
//! reuse memory instead of allocating per message and idle connections hold none (and the
//! permessage-deflate compressor of connections that keep no context); and the
//! handler addresses sessions point at, interned so a connection holds a pointer, not 64
//! bytes.
//!
//! The pool has two free lists, by capacity. General buffers (`out`, spills, packets, up
//! to `limits::POOL_BUFFER_BYTES_MAX`) are kept up to `limits::POOL_BUFFERS_MAX`: enough
//! for the connections active in one turn. Small buffers (up to
//! `limits::POOL_SMALL_BUFFER_BYTES_MAX`, the size of a sealed small frame) are kept up to
//! `limits::POOL_SMALL_BYTES_MAX` of capacity in all: a fan-out to TLS targets has one in
//! flight per target (`take_small`), thousands per round, and keeping them lets the next
//! round reuse them instead of allocating one per target again. Past either bound a
//! returned buffer is freed (allocate-and-free, as for any burst). The small list shrinks
//! back when the load goes: `shrink`, called by the worker every
//! `limits::POOL_SHRINK_INTERVAL_MS`, frees what the interval did not need.
use std::collections::HashMap;
use std::sync::Arc;

use crate::bridge::Addr;
use crate::limits;

#[derive(Default)]
pub struct Pool {
    /// Invariant: every buffer is empty, with a capacity in
    /// (`POOL_SMALL_BUFFER_BYTES_MAX`, `POOL_BUFFER_BYTES_MAX`]; at most `POOL_BUFFERS_MAX`.
    free: Vec<Vec<u8>>,
    /// Invariant: every buffer is empty, with a capacity in (0,
    /// `POOL_SMALL_BUFFER_BYTES_MAX`].
    small: Vec<Vec<u8>>,
    /// Invariant: the capacities in `small` summed; at most `POOL_SMALL_BYTES_MAX`.
    small_bytes: usize,
    /// Invariant: at most `small.len()`. The fewest small buffers that were free at once
    /// since the last `shrink`: that many were not needed in the interval.
    small_unused: usize,
    counters: PoolCounters,
    /// The worker's compressor for every permessage-deflate connection without server
    /// context takeover, and for fan-out frames: a zlib state per window size in use, kept
    /// and reset between messages, so no connection holds one.
    pub deflate: crate::proto::ws_deflate::SharedCompressor,
}

/// What the small buffers' free list did, counted since the worker started (tests read
/// them; a fan-out round in the steady state reuses and allocates nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// `take_small` calls served from a free buffer.
    pub small_reused: u64,
    /// `take_small` calls that allocated (no free buffer of either kind).
    pub small_allocated: u64,
    /// Small buffers freed on return because the list was at its bound.
    pub small_dropped: u64,
    /// Small buffers freed by `shrink`.
    pub small_shrunk: u64,
}

impl Pool {
    /// An empty buffer, reused when one is free (a general one first, then a small one).
    pub fn take(&mut self) -> Vec<u8> {
        if let Some(buf) = self.free.pop() {
            return buf;
        }
        self.pop_small().unwrap_or_default()
    }

    /// An empty buffer for about `bytes` (a sealed fan-out record, the send in flight).
    /// When `bytes` fits the small class: a free small one, else a free general one, else a
    /// new one with room for `bytes` rounded up to a power of two (so that, reused, it fits
    /// the next round's record of about the same size without growing). Larger: as `take`.
    pub fn take_small(&mut self, bytes: usize) -> Vec<u8> {
        if bytes > limits::POOL_SMALL_BUFFER_BYTES_MAX {
            return self.take();
        }
        if let Some(buf) = self.pop_small().or_else(|| self.free.pop()) {
            self.counters.small_reused += 1;
            return buf;
        }
        self.counters.small_allocated += 1;
        let capacity = bytes
            .next_power_of_two()
            .clamp(SMALL_BUFFER_BYTES_MIN, limits::POOL_SMALL_BUFFER_BYTES_MAX);
        Vec::with_capacity(capacity)
    }

    /// Returns a buffer. Big ones and those past their list's bound are freed, so one large
    /// response or one burst does not pin memory for good.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity == 0 || capacity > limits::POOL_BUFFER_BYTES_MAX {
            return;
        }
        buf.clear();
        if capacity <= limits::POOL_SMALL_BUFFER_BYTES_MAX {
            if self.small_bytes + capacity > limits::POOL_SMALL_BYTES_MAX {
                self.counters.small_dropped += 1;
                return;
            }
            self.small_bytes += capacity;
            self.small.push(buf);
            return;
        }
        if self.free.len() < limits::POOL_BUFFERS_MAX {
            self.free.push(buf);
        }
    }

    /// Frees the small buffers the last interval did not need (the fewest that were free
    /// at once since the last call), so a fan-out's buffers stay while rounds keep coming
    /// and go within two intervals of the last one (a little later if other work takes a
    /// few of them meanwhile). The worker calls it every
    /// `limits::POOL_SHRINK_INTERVAL_MS`.
    pub fn shrink(&mut self) {
        assert!(self.small_unused <= self.small.len());
        let keep = self.small.len() - self.small_unused;
        self.counters.small_shrunk += self.small_unused as u64;
        for buf in self.small.drain(keep..) {
            self.small_bytes -= buf.capacity();
        }
        self.small.shrink_to(keep);
        self.small_unused = self.small.len();
        debug_assert_eq!(self.small_bytes, self.small.iter().map(Vec::capacity).sum());
    }

    /// Small buffers free now, and their capacity summed.
    pub fn small_free(&self) -> (usize, usize) {
        (self.small.len(), self.small_bytes)
    }

    pub fn counters(&self) -> PoolCounters {
        self.counters
    }

    fn pop_small(&mut self) -> Option<Vec<u8>> {
        let buf = self.small.pop()?;
        self.small_bytes -= buf.capacity();
        self.small_unused = self.small_unused.min(self.small.len());
        debug_assert!(buf.is_empty());
        Some(buf)
    }
}

/// Least capacity of a new small buffer: below it the allocator's own rounding makes a
/// smaller request save nothing, and a sealed record of a few bytes of payload is ~30 B.
const SMALL_BUFFER_BYTES_MIN: usize = 128;
const _: () = assert!(SMALL_BUFFER_BYTES_MIN <= limits::POOL_SMALL_BUFFER_BYTES_MAX);

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
    fn small_buffers_are_kept_to_their_bound_and_shrink_when_unused() {
        // Goal: small buffers come back to the small list up to its byte bound (past it
        // they are freed, counted), are taken again without allocating, and `shrink` frees
        // only what an interval did not need.
        let mut pool = Pool::default();
        let taken: Vec<Vec<u8>> = (0..10).map(|_| pool.take_small(100)).collect();
        assert!(taken.iter().all(|b| b.capacity() == 128 && b.is_empty()));
        assert_eq!(pool.counters().small_allocated, 10);
        for b in taken {
            pool.give(b);
        }
        assert_eq!(pool.small_free(), (10, 1280));
        let again: Vec<Vec<u8>> = (0..4).map(|_| pool.take_small(90)).collect();
        assert_eq!(pool.counters().small_allocated, 10, "reused, not allocated");
        assert_eq!(pool.counters().small_reused, 4);
        assert_eq!(pool.small_free(), (6, 768));
        pool.shrink(); // the first interval: nothing is known to be unused yet
        assert_eq!(pool.small_free(), (6, 768));
        for b in again {
            pool.give(b);
        }
        drop(pool.take_small(90));
        pool.shrink(); // 6 stayed free the whole interval (the 4 given back were in use)
        assert_eq!(pool.small_free(), (3, 384));
        assert_eq!(pool.counters().small_shrunk, 6);
        pool.shrink(); // an interval without takes: none was needed
        assert_eq!(pool.small_free(), (0, 0));
        assert_eq!(pool.counters().small_shrunk, 9);

        let count_max = limits::POOL_SMALL_BYTES_MAX / 128;
        let many: Vec<Vec<u8>> = (0..count_max + 5).map(|_| pool.take_small(100)).collect();
        for b in many {
            pool.give(b);
        }
        assert_eq!(pool.small_free(), (count_max, limits::POOL_SMALL_BYTES_MAX));
        assert_eq!(pool.counters().small_dropped, 5);
    }

    #[test]
    fn a_large_record_and_general_buffers_keep_their_lists() {
        // Goal: a record larger than the small class is an ordinary buffer; general buffers
        // go back to the general list, and an ordinary `take` may reuse a small one.
        let mut pool = Pool::default();
        let big = pool.take_small(limits::POOL_SMALL_BUFFER_BYTES_MAX + 1);
        assert_eq!(big.capacity(), 0, "an ordinary buffer, grown by its user");
        assert_eq!(pool.counters().small_allocated, 0);
        pool.give(Vec::with_capacity(8192));
        pool.give(Vec::with_capacity(limits::POOL_BUFFER_BYTES_MAX + 1));
        assert_eq!(pool.small_free(), (0, 0));
        assert_eq!(pool.take().capacity(), 8192);
        pool.give(Vec::with_capacity(64));
        assert_eq!(
            pool.take().capacity(),
            64,
            "a small one serves an ordinary take"
        );
        assert!(pool.take().capacity() == 0);
    }

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
