//! One provided-buffer ring per io_uring ring: the kernel takes a buffer only when data
//! arrives for a multishot recv, so an idle client costs no read buffer.
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;

/// An anonymous mapping (page aligned, as the kernel wants the ring), unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(len: usize) -> io::Result<Map> {
        // SAFETY: a fresh anonymous private mapping; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping mmap gave us. The owner drops it only with its ring
        // (field order in `Ring`), when the kernel can no longer write into it.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub struct BufRing {
    entries: Map,
    buffers: Map,
    count: u16,
    size: u32,
    tail: u16,
}

/// `struct io_uring_buf`: 16 bytes; the ring's tail overlays `resv` of entry 0.
#[repr(C)]
struct Buf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes as group `group`.
    pub fn new(ring: &IoUring, count: u16, size: u32, group: u16) -> io::Result<BufRing> {
        assert!(count.is_power_of_two());
        let entries = Map::new(usize::from(count) * 16)?;
        let buffers = Map::new(usize::from(count) * size as usize)?;
        let mut br = BufRing {
            entries,
            buffers,
            count,
            size,
            tail: 0,
        };
        // SAFETY: the entries mapping is page aligned, `count` entries long, and lives as
        // long as the ring (see `Map::drop`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.entries.ptr as u64, count, group, 0)?
        };
        for bid in 0..count {
            br.put(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The bytes of buffer `bid` a completion filled.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count && len <= self.size as usize);
        // SAFETY: in bounds of the buffers mapping (checked above); the kernel wrote it
        // before posting the completion we hold, and won't until we `put` it back.
        unsafe {
            std::slice::from_raw_parts(
                self.buffers.ptr.add(usize::from(bid) * self.size as usize),
                len,
            )
        }
    }

    /// Gives buffer `bid` back (visible to the kernel after `publish`).
    pub fn put(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.count - 1));
        // SAFETY: `idx < count`, inside the entries mapping; the kernel reads entries only
        // up to the published tail, which this one is past.
        unsafe {
            let e = self.entries.ptr.cast::<Buf>().add(idx);
            (*e).addr = self.buffers.ptr as u64 + u64::from(bid) * u64::from(self.size);
            (*e).len = self.size;
            (*e).bid = bid;
        }
        self.tail = self.tail.wrapping_add(1);
    }

    pub fn publish(&mut self) {
        // SAFETY: the tail is the u16 at byte 14 of the (aligned) entries mapping, which the
        // kernel reads atomically; release orders the entries written before it.
        unsafe {
            let tail = &*(self.entries.ptr.add(14) as *const AtomicU16);
            tail.store(self.tail, Ordering::Release);
        }
    }

    pub fn bytes(&self) -> usize {
        self.entries.len + self.buffers.len
    }
}
