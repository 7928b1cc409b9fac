//! The ring: setup with feature fallback, SQE pushes (all `unsafe` SQ access lives here),
//! the submission backlog, submit-and-wait with a timeout, and draining completions.
use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use io_uring::types::{DestinationSlot, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::sys::{self, PeerStorage};

/// How the ring was set up (the first variant the kernel accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// `SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL`: completions run only when we wait, in
    /// our thread, in one batch; no IPIs or task-work interruptions while we run the driver.
    Deferred,
    /// `COOP_TASKRUN | SUBMIT_ALL`: kernels without DEFER_TASKRUN (< 6.1).
    Cooperative,
    /// No setup flags.
    Plain,
}

/// What a worker's rings did, for its metrics: one set shared by all its rings (one
/// thread: plain cells), read once per turn (`Driver::handle_runtime_stats`).
#[derive(Default)]
pub struct RingCounters {
    /// SQEs queued (each reaches the kernel in a later submit).
    pub pushed: Cell<u64>,
    /// CQEs taken from completion queues.
    pub reaped: Cell<u64>,
    /// Drains that found completions waiting in the kernel's overflow list (CQ full).
    pub overflowed: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

pub struct Ring {
    ring: IoUring,
    counters: Rc<RingCounters>,
    /// SQEs that did not fit in the SQ while the kernel refused a submit (EBUSY/EAGAIN).
    /// FIFO: once it is non-empty every push goes here, so ops keep their order (a slot's
    /// cancel and close must reach the kernel after its send).
    /// Invariant: `backlog.len() <= backlog_max`.
    backlog: VecDeque<squeue::Entry>,
    backlog_max: usize,
    /// Completions one reaping `io_uring_enter` asks for: the CQ's size.
    reap_max: usize,
    /// Ops pushed whose last CQE has not been seen (multishot ops count once).
    pub in_flight: u64,
}

impl Ring {
    /// Creates the ring with the best flags the kernel takes.
    /// `backlog_max`: the most SQEs one turn can produce (bounded by slots × ops per slot).
    pub fn new(
        sq_entries: u32,
        cq_entries: u32,
        backlog_max: usize,
        counters: Rc<RingCounters>,
    ) -> io::Result<Ring> {
        let (ring, _setup) = build(sq_entries, cq_entries)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::other(
                "io_uring lacks IORING_FEAT_EXT_ARG (kernel < 5.11)",
            ));
        }
        if !ring.params().is_feature_nodrop() {
            return Err(io::Error::other(
                "io_uring lacks IORING_FEAT_NODROP (kernel < 5.5)",
            ));
        }
        Ok(Ring {
            ring,
            counters,
            backlog: VecDeque::new(),
            backlog_max,
            reap_max: cq_entries as usize,
            in_flight: 0,
        })
    }

    /// Has the kernel signal `fd` (an eventfd) when this ring gets completions to reap.
    pub fn register_notify(&self, fd: RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(fd)
    }

    /// Whether completions are posted and not drained yet (or overflowed), SQEs wait in the
    /// backlog, or completions are waiting to be run (`IORING_SQ_TASKRUN`: set by the kernel when it queues deferred completions,
    /// and when a reap left some for later; cleared when it runs them).
    pub fn pending(&mut self) -> bool {
        // Pairs with the kernel's barrier between queueing work (or posting a CQE) and
        // reading `IORING_CQ_EVENTFD_DISABLED`: either it saw the eventfd enabled (and
        // signals it) or we see its work here.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // Completions past the CQ's size wait in the kernel's overflow list: only an enter
        // moves them into the CQ, and nothing signals the eventfd for them (a mass close in
        // a ring of 20,000 connections and a 4,096-entry CQ stranded them there for good).
        // Entries the kernel refused wait in the backlog likewise.
        let (taskrun, overflow) = {
            let sq = self.ring.submission();
            (sq.taskrun(), sq.cq_overflow())
        };
        taskrun || overflow || !self.backlog.is_empty() || !self.ring.completion().is_empty()
    }

    /// Stops (`true`) or restarts the registered eventfd's notifications: our own
    /// `io_uring_enter` calls need none (we look at the ring right after them).
    pub fn set_notify_quiet(&mut self, quiet: bool) {
        match quiet {
            true => self.ring.completion().disable_eventfd(),
            false => self.ring.completion().enable_eventfd(),
        }
    }

    /// Submits what the SQ (and backlog) holds, without waiting or reaping.
    pub fn submit(&mut self) -> io::Result<()> {
        if self.flush_backlog() && !self.ring.submission().is_empty() {
            self.submit_now();
        }
        Ok(())
    }

    /// Submits, and runs up to a CQ's worth of deferred completions, without waiting: the
    /// secondary rings' turn (their readiness came through the primary ring's poll).
    pub fn reap(&mut self) -> io::Result<()> {
        self.flush_backlog();
        self.enter(self.reap_max, Some(Duration::ZERO))
    }

    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// Queues one SQE: into the SQ, flushing it to the kernel when full, or into the
    /// backlog when the kernel refuses more for now. Never drops an entry.
    ///
    /// # Safety
    /// Every buffer the entry points to must stay valid and unmoved until its last CQE.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        self.in_flight += 1;
        bump(&self.counters.pushed, 1);
        if self.backlog.is_empty() {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if self.submit_now() {
                // SAFETY: as above; the SQ was just emptied by the submit.
                if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                    return;
                }
            }
        }
        assert!(
            self.backlog.len() < self.backlog_max,
            "SQE backlog over its bound"
        );
        self.backlog.push_back(entry);
    }

    /// Submits what the SQ holds. False when the kernel asked us to come back later.
    fn submit_now(&mut self) -> bool {
        match self.ring.submit() {
            Ok(_) => true,
            Err(e) if is_retry_later(&e) => false,
            Err(e) => panic!("io_uring submit failed: {e}"),
        }
    }

    /// Moves backlog entries into the SQ, submitting as it fills. False if some remain.
    fn flush_backlog(&mut self) -> bool {
        while let Some(entry) = self.backlog.front() {
            // SAFETY: the entry was vetted by `push`'s contract when it was queued.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.backlog.pop_front();
                continue;
            }
            if !self.submit_now() {
                return false;
            }
        }
        true
    }

    /// Submits everything and waits for at least one completion or `timeout`.
    ///
    /// `busy`: the last drain was large, so more completions are likely pending as deferred
    /// task work. With `DEFER_TASKRUN` an `io_uring_enter` that waits for one completion
    /// runs at most 20 pieces of task work (`IO_LOCAL_TW_DEFAULT_MAX`, kernel 6.x): a burst
    /// of N completions would take N / 20 turns. So a busy turn first enters without
    /// waiting but asking for a CQ's worth of completions, which runs up to that much task
    /// work at once; only if that produced nothing does it wait.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>, busy: bool) -> io::Result<()> {
        if !self.flush_backlog() {
            // The kernel refused entries: do not sleep; reap CQEs so it can take them later.
            return self.enter(self.reap_max, Some(Duration::ZERO));
        }
        if busy {
            self.enter(self.reap_max, Some(Duration::ZERO))?;
            if !self.ring.completion().is_empty() {
                return Ok(());
            }
        }
        self.enter(1, timeout)
    }

    /// One `io_uring_enter`: submit the SQ, wait for `want` CQEs or `timeout`.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            Some(timeout) => {
                let ts = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            None => self.ring.submitter().submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(()),
            // ETIME: the timeout passed; the others: try again next turn.
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || is_retry_later(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves up to `max` CQEs into `out` (cleared first).
    pub fn drain(&mut self, out: &mut Vec<cqueue::Entry>, max: usize) {
        out.clear();
        if self.ring.submission().cq_overflow() {
            bump(&self.counters.overflowed, 1);
        }
        out.extend(self.ring.completion().take(max));
        bump(&self.counters.reaped, out.len() as u64);
    }

    /// One op's last CQE was seen.
    pub fn completed(&mut self) {
        assert!(self.in_flight > 0, "more completions than ops");
        self.in_flight -= 1;
    }

    /// Single-shot accept into a direct descriptor picked by the kernel.
    ///
    /// # Safety
    /// `peer` must stay valid and unmoved until the accept's CQE.
    pub unsafe fn accept(&mut self, listener: RawFd, peer: *mut PeerStorage, user_data: u64) {
        // SAFETY: the caller keeps `peer` valid until completion; we only form raw pointers.
        let (addr, len) = unsafe {
            (
                std::ptr::addr_of_mut!((*peer).addr),
                std::ptr::addr_of_mut!((*peer).len),
            )
        };
        let entry = opcode::Accept::new(Fd(listener), addr.cast(), len)
            .file_index(Some(DestinationSlot::auto_target()))
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at `peer` only, valid by the caller's contract.
        unsafe { self.push(entry) }
    }

    /// Send `len` bytes at `buf` on a direct descriptor.
    ///
    /// # Safety
    /// The `len` bytes at `buf` must stay valid and unmoved until the send's CQE.
    pub unsafe fn send(&mut self, file: u32, buf: *const u8, len: u32, user_data: u64) {
        // MSG_NOSIGNAL: a vanished peer is EPIPE, not SIGPIPE. MSG_WAITALL: the kernel
        // retries short sends itself (we still handle a short result).
        let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let entry = opcode::Send::new(Fixed(file), buf, len)
            .flags(flags)
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at `buf` only, valid by the caller's contract.
        unsafe { self.push(entry) }
    }

    /// Multishot recv into buffers of `group`.
    pub fn recv_multi(&mut self, file: u32, group: u16, user_data: u64) {
        let entry = opcode::RecvMulti::new(Fixed(file), group)
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at no user memory (the buffer ring is registered and
        // outlives every op).
        unsafe { self.push(entry) }
    }

    /// Reads an eventfd's counter (8 bytes into `counter`), which resets it; completes
    /// when the counter is non-zero (the eventfd must be blocking, so the kernel waits for
    /// it rather than failing with `EAGAIN`).
    ///
    /// # Safety
    /// `counter` must stay valid and unmoved until the read's CQE.
    pub unsafe fn read_eventfd(&mut self, fd: RawFd, counter: *mut u64, user_data: u64) {
        let entry = opcode::Read::new(Fd(fd), counter.cast(), 8)
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at `counter` only, valid by the caller's contract.
        unsafe { self.push(entry) }
    }

    /// Multishot poll for readability of a regular fd.
    pub fn poll_readable(&mut self, fd: RawFd, user_data: u64) {
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at no user memory.
        unsafe { self.push(entry) }
    }

    pub fn shutdown_write(&mut self, file: u32, user_data: u64) {
        let entry = opcode::Shutdown::new(Fixed(file), libc::SHUT_WR)
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at no user memory.
        unsafe { self.push(entry) }
    }

    /// A TCP socket in a direct descriptor picked by the kernel (the CQE gives its index).
    /// No `SOCK_CLOEXEC`: the kernel refuses it for direct descriptors (`EINVAL`), which
    /// have no process fd to inherit anyway.
    pub fn socket(&mut self, domain: i32, user_data: u64) {
        let entry = opcode::Socket::new(domain, libc::SOCK_STREAM, 0)
            .file_index(Some(DestinationSlot::auto_target()))
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at no user memory.
        unsafe { self.push(entry) }
    }

    /// Connects a direct descriptor to `addr`.
    ///
    /// # Safety
    /// `addr` must stay valid and unmoved until the connect's CQE.
    pub unsafe fn connect(&mut self, file: u32, addr: *const sys::RawAddr, user_data: u64) {
        // SAFETY: the caller keeps `addr` valid; we only form raw pointers.
        let (ptr, len) = unsafe {
            (
                std::ptr::addr_of!((*addr).storage).cast::<libc::sockaddr>(),
                (*addr).len,
            )
        };
        let entry = opcode::Connect::new(Fixed(file), ptr, len)
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at `addr` only, valid by the caller's contract.
        unsafe { self.push(entry) }
    }

    /// Closes a direct descriptor, freeing its table entry.
    pub fn close_file(&mut self, file: u32, user_data: u64) {
        let entry = opcode::Close::new(Fixed(file)).build().user_data(user_data);
        // SAFETY: the entry points at no user memory.
        unsafe { self.push(entry) }
    }

    /// Cancels the op carrying `target`.
    pub fn cancel_op(&mut self, target: u64, user_data: u64) {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        // SAFETY: the entry points at no user memory.
        unsafe { self.push(entry) }
    }
}

/// The kernel can take no more for now (CQ overflow backlog, memory, a signal).
fn is_retry_later(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBUSY | libc::EAGAIN | libc::EINTR | libc::ENOMEM)
    )
}

fn build(sq_entries: u32, cq_entries: u32) -> io::Result<(IoUring, Setup)> {
    let deferred = IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_submit_all()
        .build(sq_entries);
    if let Ok(ring) = deferred {
        return Ok((ring, Setup::Deferred));
    }
    let cooperative = IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_submit_all()
        .build(sq_entries);
    if let Ok(ring) = cooperative {
        return Ok((ring, Setup::Cooperative));
    }
    let plain = IoUring::builder()
        .setup_cqsize(cq_entries)
        .build(sq_entries)?;
    Ok((plain, Setup::Plain))
}
