//! A worker's pool of byte buffers, so sends, spills and packets reuse memory instead of
//! allocating per message, and idle connections hold none.
use crate::limits;

#[derive(Default)]
pub struct Pool {
    free: Vec<Vec<u8>>,
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
