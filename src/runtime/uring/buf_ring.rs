//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the kernel picks a buffer for each
//! multishot recv completion, so an idle connection holds no read buffer. All the unsafe
//! memory handling of the ring lives here.
//!
//! Life of a buffer: in the ring → taken by the kernel for a recv → handed to us in a CQE
//! (`take`) → given to the driver for the duration of `handle_recv` → put back (`recycle`)
//! → visible to the kernel again after `publish`.
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// One mmap'd anonymous region, unmapped on drop.
struct Region {
    base: NonNull<u8>,
    bytes: usize,
}

impl Region {
    fn new(bytes: usize) -> io::Result<Region> {
        assert!(bytes > 0);
        // SAFETY: an anonymous private mapping with no address hint touches no existing
        // memory; the result is checked for MAP_FAILED before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).expect("mmap returned null");
        Ok(Region { base, bytes })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base`/`bytes` are exactly what mmap returned, and the owner (`BufRing`)
        // is only dropped after the ring is gone or the buffer group unregistered, with no
        // recv left in flight (see `run`'s exit), so the kernel no longer writes here.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
        debug_assert_eq!(rc, 0, "munmap failed");
    }
}

pub struct BufRing {
    /// The ring of `entries` descriptors shared with the kernel (page aligned by mmap).
    entries_region: Region,
    /// `entries × buffer_bytes` bytes of buffers; buffer `bid` starts at `bid × buffer_bytes`.
    buffers_region: Region,
    entries: u16,
    buffer_bytes: u32,
    group: u16,
    /// Our copy of the tail; the kernel sees it only after `publish`.
    tail: u16,
    /// Invariant: `in_ring[bid]` is true while buffer `bid` is the kernel's (in the ring or
    /// taken for a recv not yet completed) and false while we hold it.
    in_ring: Vec<bool>,
}

impl BufRing {
    /// Allocates `entries` buffers of `buffer_bytes` each and puts all of them in the ring.
    pub fn new(entries: u16, buffer_bytes: u32, group: u16) -> io::Result<BufRing> {
        assert!(
            entries.is_power_of_two(),
            "ring entries must be a power of two"
        );
        assert!(entries <= 1 << 15, "kernel limit on buffer ring entries");
        assert!(buffer_bytes > 0);
        let entries_region = Region::new(usize::from(entries) * size_of::<BufRingEntry>())?;
        let buffers_region = Region::new(usize::from(entries) * buffer_bytes as usize)?;
        let mut ring = BufRing {
            entries_region,
            buffers_region,
            entries,
            buffer_bytes,
            group,
            tail: 0,
            in_ring: vec![false; usize::from(entries)],
        };
        for bid in 0..entries {
            ring.recycle(bid);
        }
        ring.publish();
        Ok(ring)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    pub fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        let ring_addr = self.entries_region.base.as_ptr() as u64;
        // SAFETY: the entries region is page aligned (mmap), holds `entries` descriptors and
        // lives until `self` drops, which the owner orders after the ring's teardown.
        unsafe { submitter.register_buf_ring_with_flags(ring_addr, self.entries, self.group, 0) }
    }

    /// We got buffer `bid` back in a CQE with `len` bytes in it; the bytes, valid until
    /// `recycle(bid)`.
    pub fn take(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(bid < self.entries, "buffer id {bid} out of range");
        assert!(
            len <= self.buffer_bytes as usize,
            "recv of {len} bytes overflows a buffer"
        );
        assert!(
            self.in_ring[usize::from(bid)],
            "buffer {bid} handed out twice"
        );
        self.in_ring[usize::from(bid)] = false;
        let offset = usize::from(bid) * self.buffer_bytes as usize;
        // SAFETY: `offset + len` is inside the buffers region (bid < entries, len ≤ buffer
        // size); the kernel wrote these bytes before posting the CQE and will not touch the
        // buffer again until we recycle it, which needs `&mut self` and so ends this borrow.
        unsafe {
            std::slice::from_raw_parts_mut(self.buffers_region.base.as_ptr().add(offset), len)
        }
    }

    /// Puts buffer `bid` back at the tail. The kernel sees it after the next `publish`.
    pub fn recycle(&mut self, bid: u16) {
        assert!(bid < self.entries, "buffer id {bid} out of range");
        assert!(
            !self.in_ring[usize::from(bid)],
            "buffer {bid} recycled twice"
        );
        self.in_ring[usize::from(bid)] = true;
        let index = usize::from(self.tail & (self.entries - 1));
        let addr = self.buffers_region.base.as_ptr() as u64
            + u64::from(bid) * u64::from(self.buffer_bytes);
        // SAFETY: `index < entries`, so the entry is inside the entries region. The kernel
        // only reads entries between its head and the published tail; this one is at or past
        // the published tail (at most `entries` buffers exist and this one was ours), so the
        // kernel is not reading it. Entry 0's `resv` doubles as the tail: `BufRingEntry`'s
        // setters leave `resv` alone.
        let entry = unsafe {
            &mut *self
                .entries_region
                .base
                .as_ptr()
                .cast::<BufRingEntry>()
                .add(index)
        };
        entry.set_addr(addr);
        entry.set_len(self.buffer_bytes);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub fn publish(&mut self) {
        let base = self.entries_region.base.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `base` is the first entry of the registered ring, so `tail` points at the
        // ring's tail field (u16, naturally aligned), which the kernel only reads.
        let tail = unsafe { &*BufRingEntry::tail(base).cast::<AtomicU16>() };
        // Release: the entries written by `recycle` are visible before the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}
