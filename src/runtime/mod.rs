//! Runtimes: the event loops that own sockets, read buffers, submission batching and the
//! worker's single timer. They know nothing about HTTP, WebSocket or ZHTTP: every byte
//! read is handed to a [`Driver`], and every byte written comes from a [`Command`] the
//! driver produced.
//!
//! Two runtimes implement the same contract: [`uring`] (io_uring: accept into direct
//! descriptors, multishot recv from a provided buffer ring, batched sends, one ring timeout)
//! and [`epoll`] (mio). Tests run every case on both.
//!
//! # Contract
//! A runtime turn is: wait for events (bounded by `poll_timeout`), feed each to the
//! driver's `handle_*` methods, then drain `poll_command` until `None` and act on each
//! command, then submit. Rules:
//! - A slot is named by the driver (`handle_accept` returns it). The runtime keeps its own
//!   per-slot state (socket, in-flight ops) in a table indexed by slot.
//! - At most one `Send` or `SendShared` per slot is in flight: the driver issues the next
//!   only after `handle_sent` returned the previous buffer (an empty `Vec` for a
//!   `SendShared`). The runtime writes the whole buffer (retrying partial writes itself)
//!   before calling `handle_sent`.
//! - `ShutdownWrite` and `Close` are issued by the driver only when no `Send` is in flight,
//!   except that `Close` may also be issued to abort a slot whose send is stuck; the runtime
//!   then cancels what is in flight and drops the buffer.
//! - After `Close`, the runtime never calls `handle_recv`/`handle_eof`/`handle_sent` for the
//!   slot again. Once the socket is closed and no operation of that slot remains in the
//!   kernel, it calls `handle_closed`, and only then may the driver reuse the slot.
//! - `PauseRecv` stops reads for the slot (data already in flight may still be delivered:
//!   the driver must accept it); `ResumeRecv` restarts them.
//! - `Connect` opens an outbound TCP connection on a slot the driver picked itself (never
//!   one `handle_accept` returned while it is in use). The runtime reports the outcome once
//!   with `handle_connected`; only after `Ok` does it read the socket (`handle_recv`/
//!   `handle_eof`) and accept `Send`/`Pause`/`Resume`/`ShutdownWrite`. After `Err` the slot
//!   is still the driver's to `Close` (then `handle_closed`, as for any slot). `Close`
//!   while connecting is allowed: no `handle_connected` follows, only `handle_closed`. The
//!   runtime sets no connect timeout: the driver closes a slot that takes too long.
//! - `handle_recv` data is only valid during the call; the driver copies what it must keep.
//!   It is the driver's to modify in place (WebSocket unmasking does).
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

pub mod epoll;
pub mod uring;

/// What a runtime calls into. Implemented by the worker; the tests drive it too.
pub trait Driver {
    /// Listener `listener` (index into the listener list) produced a connection from `peer`
    /// (`None` for unix sockets). Returns the slot to bind it to, or `None` to refuse it (the
    /// runtime closes the socket at once).
    fn handle_accept(
        &mut self,
        now: Instant,
        listener: usize,
        peer: Option<SocketAddr>,
    ) -> Option<u32>;
    /// Bytes arrived on `slot`.
    fn handle_recv(&mut self, now: Instant, slot: u32, data: &mut [u8]);
    /// The peer closed its side, or the socket failed. No more `handle_recv` follows.
    fn handle_eof(&mut self, now: Instant, slot: u32);
    /// The buffer of the slot's last `Send` was written completely; it comes back for reuse.
    /// If the socket failed during the send, `handle_eof` (if not called yet) comes first
    /// and the buffer comes back unwritten: the driver should then close the slot.
    fn handle_sent(&mut self, now: Instant, slot: u32, buf: Vec<u8>);
    /// The outbound connection of `slot` (from `Command::Connect`) is established (`Ok`)
    /// or failed (`Err`: the driver must still `Close` the slot). Drivers that never issue
    /// `Connect` never get this.
    fn handle_connected(&mut self, now: Instant, slot: u32, result: std::io::Result<()>) {
        let _ = (now, slot, result);
    }
    /// The runtime's running totals (io_uring: once per turn; epoll: never), for metrics.
    fn handle_runtime_stats(&mut self, stats: RuntimeStats) {
        let _ = stats;
    }
    /// The slot's socket is closed and nothing of it is left in flight: the slot is free.
    fn handle_closed(&mut self, now: Instant, slot: u32);
    /// The worker's wake-up fd fired: packets from the bridge may be waiting.
    fn handle_wake(&mut self, now: Instant);
    /// The deadline returned by `poll_timeout` has passed (calling it early is harmless).
    fn handle_timeout(&mut self, now: Instant);
    /// The earliest deadline the driver wants to be woken for.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next I/O command, in the order the driver produced them.
    fn poll_command(&mut self) -> Option<Command>;
    /// False while the worker is at its connection limit: the runtime stops accepting and
    /// leaves new connections in the kernel backlog.
    fn accepting(&self) -> bool;
    /// True once the worker has drained after a shutdown request and the loop may end.
    /// The runtime then closes every open socket and calls no driver method again.
    fn finished(&self) -> bool;
}

/// What a runtime did since it started (all its rings), for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeStats {
    /// io_uring SQEs queued for the kernel.
    pub submitted: u64,
    /// io_uring CQEs reaped.
    pub completed: u64,
    /// Reaps that found completions in the kernel's overflow list (a CQ was full).
    pub cq_overflows: u64,
}

/// An I/O request from the driver. Commands for one slot run in order.
#[derive(Debug)]
#[must_use]
pub enum Command {
    /// Write all of `buf` to the slot's socket, then return it with `handle_sent`.
    Send { slot: u32, buf: Vec<u8> },
    /// Write all of `buf`, one buffer shared by many slots (a fan-out frame: no copy per
    /// target); `handle_sent` then gets an empty `Vec`. The runtime holds a reference until
    /// the kernel is done with the bytes.
    SendShared { slot: u32, buf: Arc<[u8]> },
    /// Stop reading from the slot (backpressure).
    PauseRecv { slot: u32 },
    /// Read again.
    ResumeRecv { slot: u32 },
    /// `shutdown(SHUT_WR)`: the response is complete; keep reading until the peer closes.
    ShutdownWrite { slot: u32 },
    /// Close the socket, cancelling anything in flight; `handle_closed` follows.
    Close { slot: u32 },
    /// Open a TCP connection to `addr` on the (free) slot; `handle_connected` follows.
    Connect { slot: u32, addr: SocketAddr },
}

/// Which event loop a worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Uring,
    Epoll,
}

/// Everything a runtime needs to start, built once per worker by `worker`.
pub struct Setup {
    /// Listening sockets (non-blocking, shared by all workers; each worker accepts on all).
    pub listeners: Vec<RawFd>,
    /// Non-blocking eventfd the bridge writes to when the worker's inbox has packets.
    pub wake_fd: RawFd,
    /// Upper bound on slots the driver will hand out (sizes the runtime's slot table).
    pub slots_max: u32,
    /// io_uring only: entries of each ring's registered file table, i.e. the most
    /// connections one ring holds; the worker opens as many rings as `slots_max` needs.
    /// `None`: the soft `RLIMIT_NOFILE` (the kernel's cap). Small values are for tests.
    pub files_per_ring: Option<u32>,
}

/// The bytes of a send in flight: the driver's own buffer, or one shared by many slots.
pub(crate) enum SendBuf {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl SendBuf {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            SendBuf::Owned(v) => v,
            SendBuf::Shared(a) => a,
        }
    }

    /// What `handle_sent` gives back: the owned buffer for reuse, or nothing.
    pub(crate) fn into_returned(self) -> Vec<u8> {
        match self {
            SendBuf::Owned(v) => v,
            SendBuf::Shared(_) => Vec::new(),
        }
    }
}

/// Runs `driver` on the chosen runtime until `driver.finished()`.
pub fn run(kind: Kind, setup: Setup, driver: &mut dyn Driver) -> std::io::Result<()> {
    match kind {
        Kind::Uring => uring::run(setup, driver),
        Kind::Epoll => epoll::run(setup, driver),
    }
}

/// Whether io_uring with the features zring needs works here (kernel and seccomp).
pub fn uring_available() -> Result<(), String> {
    uring::probe()
}
