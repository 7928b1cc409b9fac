//! io_uring runtime: one or more rings per worker thread, created on that thread.
//!
//! Owns: the rings, each with its registered (sparse) file table of direct descriptors and
//! its provided buffer ring, the accepts, the per-slot op bookkeeping. Knows nothing of
//! HTTP or ZHTTP. A ring's file table is capped at `RLIMIT_NOFILE`, so more connections
//! than that go to further rings of the same thread (see [`LanePlan`] and `event_loop`'s
//! "Several rings, one thread"); what follows holds for each ring.
//!
//! # How it works
//! - **Setup**: `SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL` (falling back to
//!   `COOP_TASKRUN | SUBMIT_ALL`, then no flags; `TASKRUN_FLAG` where allowed). Ring 0: a
//!   sparse file table of [`files_max`] entries, a buffer ring of [`BUFFER_COUNT`] ×
//!   [`BUFFER_BYTES`]; further rings (opened when all are full): the same table size, a
//!   buffer ring of [`SUB_BUFFER_COUNT`], a smaller SQ/CQ, and an eventfd ring 0 reads.
//! - **Accept**: [`ACCEPTS_PER_LISTENER`] *single-shot* accepts per listener, each into a
//!   direct descriptor (`IORING_FILE_INDEX_ALLOC`) and each with its own `sockaddr_storage`,
//!   re-armed after each completion. Not multishot accept: the driver needs every
//!   connection's peer address, and multishot accept writes all addresses into one storage
//!   (later connections overwrite it before we read it). A direct descriptor has no process
//!   fd, so `getpeername(2)` cannot be used on it, and `SOCKET_URING_OP_GETPEERNAME` (a
//!   `URING_CMD`) does not exist on kernel 6.18 (checked: cmd op 5 gives `EOPNOTSUPP`).
//! - **Accept gating**: each turn, idle accepts are armed only while `driver.accepting()`
//!   holds, no backoff runs, and the lowest ring whose file table has room for every accept
//!   armed on it takes the next one (an accept
//!   that finds the table full has already taken the connection off the backlog and the
//!   kernel drops it, so we never let that happen); when
//!   `accepting()` turns false, armed accepts are cancelled, so new connections wait in the
//!   kernel backlog. An accept that completes while its cancel is on the way still reaches
//!   `handle_accept` (the driver may refuse it: then it is closed at once). Out of files or
//!   memory (`EMFILE`, `ENFILE`, `ENOMEM`, `ENOBUFS`, ...) stops accepting for
//!   [`ACCEPT_BACKOFF`] (the wait's timeout covers the backoff's end: no busy loop).
//! - **Recv**: one multishot recv per open slot from the buffer ring. Each completion's
//!   buffer goes to `handle_recv` and straight back to the ring. A recv that ends without
//!   `IORING_CQE_F_MORE` is re-armed (`ENOBUFS` when the ring ran dry, or any other end)
//!   unless paused, EOF, or closing. `0` bytes → `handle_eof`; an error other than
//!   `ENOBUFS`/`ECANCELED` → `handle_eof` too (the socket failed).
//! - **Pause/resume**: `PauseRecv` cancels the armed recv by its `user_data` (data already
//!   completed is still delivered); `ResumeRecv` re-arms it (or lets its last CQE do so).
//! - **Send**: one `SEND` on the fixed file with `MSG_NOSIGNAL | MSG_WAITALL`, from the
//!   driver's buffer or a shared one (`Command::SendShared`); a short
//!   result re-submits the rest; when all is written, `handle_sent`. The `Vec` stays in the
//!   slot until the kernel is done with it. A failed send (peer reset, `EPIPE`) gives
//!   `handle_eof` (if not given yet) and then `handle_sent` with the unwritten buffer.
//! - **Shutdown**: `SHUTDOWN(SHUT_WR)` on the fixed file. The kernel always runs it on an
//!   io-wq thread (`REQ_F_FORCE_ASYNC`) and resolves the direct descriptor only there, so
//!   a `CLOSE` issued meanwhile would free the table entry, the next accept would take it,
//!   and the shutdown would hit the new connection (it then sent a FIN and never its
//!   response: about 1 % of `Connection: close` requests under churn). So a slot's `CLOSE`
//!   waits for its shutdowns' completions.
//! - **Close**: `ASYNC_CANCEL` of every op on the fixed file, then `CLOSE` of the direct
//!   descriptor (which frees the table entry; after any `SHUTDOWN` of the slot has
//!   completed); `handle_closed` once the slot's last op has completed. Nothing but `handle_closed` is called for a slot after its `Close`.
//! - **Connect** (`Command::Connect`, outbound): `IORING_OP_SOCKET` into a direct descriptor
//!   the kernel picks (`IORING_FILE_INDEX_ALLOC`) in the lowest ring with table room, its
//!   table entry reserved when the SQE is pushed (so no accept can take it); no
//!   `SOCK_CLOEXEC` (refused with `EINVAL` for direct descriptors). Its CQE gives the
//!   index; then `IORING_OP_CONNECT` on it, with the address boxed (`sys::RawAddr`) until the
//!   CQE. Success arms the recv and calls `handle_connected(Ok)`; failure calls
//!   `handle_connected(Err)` and the driver closes the slot. A `Close` before the socket
//!   exists only marks the slot: the `SOCKET` completion closes what it made. No table room
//!   at all: `EMFILE`, reported next turn.
//! - **Wake**: a multishot `POLL_ADD` (in ring 0) on the wake eventfd; on each firing the
//!   counter is read (drained) and `handle_wake` is called once per turn.
//! - **Timer**: no timeout op: the wait itself carries the timeout
//!   (`io_uring_enter` with `IORING_ENTER_EXT_ARG`), so nothing needs cancelling or
//!   re-arming when the deadline moves. The clock is read once per turn.
//! - **Batching**: a turn drains up to [`CQES_PER_TURN_MAX`] CQEs, runs the driver, drains
//!   `poll_command`, then submits once. With `DEFER_TASKRUN` a wait for one completion
//!   runs at most 20 deferred completions (`IO_LOCAL_TW_DEFAULT_MAX`); after a busy turn
//!   the submit asks for up to a CQ's worth without waiting first, so a burst is reaped in
//!   one or two syscalls rather than one per 20 completions. A full SQ is flushed to the kernel and filling
//!   continues; if the kernel refuses a submit (`EBUSY`/`EAGAIN`), entries wait in a FIFO
//!   backlog (bounded by slots × ops per slot) for the next turn: nothing is dropped.
//! - **Exit**: once `driver.finished()`, accepts and the wake poll are cancelled, every
//!   open slot (in every ring) is closed, and `run` waits (at most [`EXIT_WAIT`]) for every
//!   op of every ring to complete before it frees buffers. No driver method is called after `finished()` returned true.
//!
//! `user_data` is `op kind | slot generation | slot` (see `user_data`); every completion
//! of a slot op is checked against the slot's generation, and a slot is freed only when its
//! in-flight count is zero.
use std::io;
use std::time::Duration;

use super::{Driver, Setup};

mod buf_ring;
mod event_loop;
mod ring;
mod slot;
pub(crate) mod sys;
mod user_data;

/// SQ size. Fan-out of one message to many clients measured best with about 4,096 sends
/// per `io_uring_enter` (docs/limits.md); a bigger SQ only costs memory. A fuller turn
/// flushes the SQ and keeps filling.
pub const SQ_ENTRIES: u32 = 4096;
/// CQ size: a full SQ's completions plus multishot recv completions between two drains.
/// Beyond it the kernel keeps overflowed CQEs (`IORING_FEAT_NODROP`), so this is sizing,
/// not a correctness bound.
pub const CQ_ENTRIES: u32 = 4 * SQ_ENTRIES;
/// CQEs handled per turn before the driver's commands are run and submitted, so a flood
/// of completions cannot starve submission. One CQ's worth.
pub const CQES_PER_TURN_MAX: usize = CQ_ENTRIES as usize;
/// One provided buffer: a page. Holds a typical request head or WebSocket frame; larger
/// reads arrive as several completions. Condure's 4 KiB mode uses the same size.
pub const BUFFER_BYTES: u32 = 4096;
/// Buffers in the ring (a power of two, kernel max 32,768): 1 MiB per worker. A buffer is
/// returned right after `handle_recv`, so buffers are only out between the kernel filling
/// them and our next CQ drain: this covers 256 readable connections per turn. Past that,
/// recvs end with `ENOBUFS` and are re-armed after the drain refills the ring (no data is
/// lost, the data waits in the socket). The kernel takes buffers in ring order, so any
/// traffic soon touches the whole ring: its size is resident memory, kept small.
pub const BUFFER_COUNT: u16 = 256;
/// The buffer group id of the ring (one group per ring).
pub const BUFFER_GROUP: u16 = 0;
/// Single-shot accepts kept armed per listener: enough to take a burst of connections in
/// one turn. At the driver's connection limit up to this many connections per listener can
/// already be accepted when `accepting()` turns false: the driver should report
/// `accepting() == false` while fewer than `listeners × ACCEPTS_PER_LISTENER` slots are
/// free, or refuse the extra ones (they are then closed).
pub const ACCEPTS_PER_LISTENER: usize = 4;
/// Pause of accepting after `EMFILE`/`ENFILE`/`ENOMEM` and similar: long enough not to
/// spin, short enough to resume quickly once files or memory are freed.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Extra file-table entries beyond `slots_max`, so a driver using all its slots never
/// meets a full table: room for the armed accepts (listeners × [`ACCEPTS_PER_LISTENER`])
/// and for refused connections whose close is still in flight.
pub const FILES_SPARE: u32 = 64;
/// Longest `run` waits at exit for cancelled ops to complete before it gives up (returns
/// an error and leaks the memory the kernel might still use).
pub const EXIT_WAIT: Duration = Duration::from_secs(5);

const _: () = assert!(BUFFER_COUNT.is_power_of_two());
const _: () = assert!(BUFFER_COUNT <= 1 << 15);
const _: () = assert!(SQ_ENTRIES.is_power_of_two() && CQ_ENTRIES >= SQ_ENTRIES);
const _: () = assert!(ACCEPTS_PER_LISTENER >= 1);

/// A secondary ring's SQ: sends to its connections flush to the kernel in batches of this
/// many. Smaller than ring 0's: a worker may hold ~50 rings, and a fan-out turn is bounded
/// by the driver anyway (see `worker`), so a bigger SQ would only cost kernel memory.
pub const SUB_SQ_ENTRIES: u32 = 1024;
/// A secondary ring's CQ; reaped up to this many completions per turn.
pub const SUB_CQ_ENTRIES: u32 = 4 * SUB_SQ_ENTRIES;
/// Buffers in a secondary ring's buffer ring (256 KiB). Only a connection with data in
/// flight holds one, and a worker's rings share one thread: a few dozen buffers per ring
/// are plenty; a ring that runs dry re-arms with `ENOBUFS` as ring 0 does.
pub const SUB_BUFFER_COUNT: u16 = 64;

const _: () = assert!(SUB_BUFFER_COUNT.is_power_of_two());
const _: () = assert!(SUB_SQ_ENTRIES.is_power_of_two() && SUB_CQ_ENTRIES >= SUB_SQ_ENTRIES);

/// How a worker's connections are spread over rings: `lanes_max` rings, each with a
/// registered file table of `files_per_lane` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanePlan {
    pub files_per_lane: u32,
    pub lanes_max: usize,
}

impl LanePlan {
    /// `slots_max` + [`FILES_SPARE`] table entries in rings of at most `per_ring` entries
    /// (the kernel's cap is the soft `RLIMIT_NOFILE`: 20,000 here). One ring when they fit
    /// (its table then just as big as needed), else `⌈(slots_max + spare) / per_ring⌉`.
    pub fn new(slots_max: u32, per_ring: u32) -> LanePlan {
        let per_ring = per_ring.max(FILES_SPARE + 1);
        let need = slots_max.saturating_add(FILES_SPARE);
        if need <= per_ring {
            return LanePlan {
                files_per_lane: need,
                lanes_max: 1,
            };
        }
        LanePlan {
            files_per_lane: per_ring,
            lanes_max: need.div_ceil(per_ring) as usize,
        }
    }
}

/// Size of ring 0's registered file table for `slots_max` slots: `slots_max` +
/// [`FILES_SPARE`], capped by the soft `RLIMIT_NOFILE` (the kernel's cap per ring). More
/// slots than that go to further rings of the same worker (see [`LanePlan`]).
pub fn files_max(slots_max: u32) -> io::Result<u32> {
    Ok(LanePlan::new(slots_max, nofile_cap()?).files_per_lane)
}

fn nofile_cap() -> io::Result<u32> {
    Ok(sys::nofile_limit()?.min(u64::from(u32::MAX)) as u32)
}

/// Runs `driver` on new rings until `driver.finished()`. Fails before calling the driver
/// if the first ring cannot be set up (then fall back to `epoll`).
pub fn run(setup: Setup, driver: &mut dyn Driver) -> io::Result<()> {
    assert!(setup.slots_max > 0, "slots_max must be positive");
    let cap = nofile_cap()?;
    let per_ring = setup.files_per_ring.map_or(cap, |n| n.min(cap));
    let plan = LanePlan::new(setup.slots_max, per_ring);
    let mut event_loop = event_loop::Loop::new(setup, plan, driver)
        .map_err(|e| io::Error::new(e.kind(), format!("io_uring setup: {e}")))?;
    event_loop.run()
}

/// Checks that io_uring with everything `run` needs works here. `Err` says why not:
/// `io_uring_setup` denied (seccomp, `kernel.io_uring_disabled`), an opcode or feature
/// missing (kernel too old), or a self-test of multishot recv from a buffer ring failing.
pub fn probe() -> Result<(), String> {
    probe::probe()
}

mod probe;
