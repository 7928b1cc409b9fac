//! The io_uring event loop: one turn = drain CQEs → driver `handle_*` → `poll_command`
//! drain → accept gating → one `submit_and_wait` bounded by the driver's deadline.
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::cqueue;

use super::buf_ring::BufRing;
use super::ring::Ring;
use super::slot::{Slot, State};
use super::sys::{self, PeerStorage};
use super::user_data::{self, Kind};
use super::{
    ACCEPTS_PER_LISTENER, ACCEPT_BACKOFF, BUFFER_BYTES, BUFFER_COUNT, BUFFER_GROUP,
    CQES_PER_TURN_MAX, CQ_ENTRIES, EXIT_WAIT, SQ_ENTRIES,
};
use crate::runtime::{Command, Driver, Setup};

/// A turn that handled this many CQEs is busy: the kernel's per-wait cap on deferred task
/// work (`IO_LOCAL_TW_DEFAULT_MAX`, 20) was likely hit, so more completions are pending.
const BUSY_TURN_CQES: usize = 20;

/// One single-shot accept: its listener and the address storage the kernel writes.
struct Accept {
    listener: usize,
    /// Invariant: never moved or freed while `armed` (the kernel writes it).
    peer: PeerStorage,
    armed: bool,
    cancelling: bool,
}

pub struct Loop<'d> {
    /// Declared first so it drops first: the ring fd closes before the memory below goes.
    ring: Ring,
    /// `Option` only so `Drop` can leak it when ops are left in the kernel.
    bufs: Option<BufRing>,
    /// Fixed size (listeners × `ACCEPTS_PER_LISTENER`), never reallocated.
    accepts: Box<[Accept]>,
    /// Indexed by the driver's slot number; `slots_max` entries, allocated once.
    slots: Vec<Slot>,
    listeners: Vec<RawFd>,
    wake_fd: RawFd,
    wake_armed: bool,
    /// Registered file table size. Invariant: `files_in_use + armed accepts <= files_max`
    /// whenever an accept is armed, so an accept never finds the table full (the kernel
    /// would accept the connection and then drop it).
    files_max: u32,
    files_in_use: u32,
    accept_backoff_until: Option<Instant>,
    /// Reused CQE batch (no allocation per turn).
    cqes: Vec<cqueue::Entry>,
    woken: bool,
    /// An error that ends the run (after closing everything).
    fatal: Option<io::Error>,
    /// `finished()` was seen: no more driver calls; everything is being closed.
    exiting: bool,
    driver: &'d mut dyn Driver,
}

impl<'d> Loop<'d> {
    pub fn new(setup: Setup, files_max: u32, driver: &'d mut dyn Driver) -> io::Result<Loop<'d>> {
        let slots_max = setup.slots_max as usize;
        let accepts_max = setup.listeners.len() * ACCEPTS_PER_LISTENER;
        // Per turn at most every slot's ops plus every ring-level op can be pushed.
        let backlog_max = slots_max * usize::from(super::slot::OPS_PER_SLOT_MAX)
            + accepts_max * 3
            + files_max as usize
            + 2;
        let ring = Ring::new(SQ_ENTRIES, CQ_ENTRIES, backlog_max)?;
        ring.submitter().register_files_sparse(files_max)?;
        let bufs = BufRing::new(BUFFER_COUNT, BUFFER_BYTES, BUFFER_GROUP)?;
        bufs.register(&ring.submitter())?;
        let accepts = (0..accepts_max)
            .map(|i| Accept {
                listener: i / ACCEPTS_PER_LISTENER,
                peer: PeerStorage::new(),
                armed: false,
                cancelling: false,
            })
            .collect();
        Ok(Loop {
            ring,
            bufs: Some(bufs),
            accepts,
            slots: (0..slots_max).map(|_| Slot::new()).collect(),
            listeners: setup.listeners,
            wake_fd: setup.wake_fd,
            wake_armed: false,
            files_max,
            files_in_use: 0,
            accept_backoff_until: None,
            cqes: Vec::with_capacity(CQES_PER_TURN_MAX),
            woken: false,
            fatal: None,
            exiting: false,
            driver,
        })
    }

    /// Runs until the driver is finished, then closes everything and waits for the kernel.
    pub fn run(&mut self) -> io::Result<()> {
        self.arm_wake();
        // The event loop proper: ends only when the driver says it is finished.
        loop {
            let now = Instant::now();
            let busy = self.process_completions(now) >= BUSY_TURN_CQES;
            if let Some(error) = self.fatal.take() {
                self.exit()?;
                return Err(error);
            }
            self.call_driver(now);
            if self.driver.finished() {
                break;
            }
            self.gate_accepts(now);
            let timeout = self.wait_timeout(now);
            self.ring.submit_and_wait(timeout, busy)?;
        }
        self.exit()
    }

    /// Drains up to `CQES_PER_TURN_MAX` completions and hands them to the driver. Returns
    /// how many there were.
    fn process_completions(&mut self, now: Instant) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        self.ring.drain(&mut cqes, CQES_PER_TURN_MAX);
        for cqe in &cqes {
            self.on_completion(now, cqe);
        }
        let count = cqes.len();
        self.cqes = cqes;
        // Buffers recycled while handling recvs go back to the kernel before the submit.
        self.bufs_mut().publish();
        count
    }

    fn on_completion(&mut self, now: Instant, cqe: &cqueue::Entry) {
        let ud = cqe.user_data();
        let index = user_data::slot(ud);
        match user_data::kind(ud) {
            Kind::Accept => self.on_accept(now, index as usize, cqe.result()),
            Kind::AcceptCancel => {
                assert!((index as usize) < self.accepts.len());
                self.ring.completed();
            }
            Kind::Wake => self.on_wake(cqe),
            Kind::WakeCancel => self.ring.completed(),
            Kind::RefusedClose => {
                self.ring.completed();
                self.file_closed();
            }
            Kind::Recv => self.on_recv(now, ud, cqe),
            Kind::Send => self.on_send(now, ud, cqe.result()),
            Kind::Shutdown | Kind::SlotCancel => self.slot_op_finished(now, ud),
            Kind::RecvCancel => self.slot_op_finished(now, ud),
            Kind::Close => {
                self.file_closed();
                self.slot_op_finished(now, ud);
            }
            Kind::Probe => panic!("probe completion in the event loop"),
        }
    }

    /// The slot an op's `user_data` names, after checking it is that slot's current life.
    fn slot_of(&mut self, ud: u64) -> &mut Slot {
        let slot = &mut self.slots[user_data::slot(ud) as usize];
        assert_ne!(slot.state, State::Free, "completion for a free slot");
        assert_eq!(
            slot.generation,
            user_data::generation(ud),
            "completion from an old life"
        );
        slot
    }

    /// Accounts the end of one op of a slot; frees the slot once it drained while closing.
    fn slot_op_finished(&mut self, now: Instant, ud: u64) {
        self.ring.completed();
        let slot = self.slot_of(ud);
        if !slot.op_finished() {
            return;
        }
        let report = slot.report_closed;
        slot.free();
        if report && !self.exiting {
            self.driver.handle_closed(now, user_data::slot(ud));
        }
    }

    fn file_closed(&mut self) {
        assert!(self.files_in_use > 0, "file table count underflow");
        self.files_in_use -= 1;
    }

    fn on_accept(&mut self, now: Instant, index: usize, result: i32) {
        self.ring.completed();
        let accept = &mut self.accepts[index];
        assert!(accept.armed, "completion for an accept not armed");
        accept.armed = false;
        accept.cancelling = false;
        let (listener, peer) = (accept.listener, accept.peer.peer());
        if result < 0 {
            self.on_accept_error(now, -result);
            return;
        }
        let file = result as u32;
        self.files_in_use += 1;
        assert!(
            self.files_in_use <= self.files_max,
            "file table over its size"
        );
        let slot = match self.exiting {
            true => None,
            false => self.driver.handle_accept(now, listener, peer),
        };
        match slot {
            Some(slot) => {
                let slots_max = self.slots.len();
                assert!(
                    (slot as usize) < slots_max,
                    "slot {slot} beyond slots_max {slots_max}"
                );
                self.slots[slot as usize].open(file);
                self.arm_recv(slot);
            }
            None => {
                let ud = user_data::encode(Kind::RefusedClose, 0, file);
                self.ring.close_file(file, ud);
            }
        }
    }

    fn on_accept_error(&mut self, now: Instant, errno: i32) {
        match errno {
            // Ours (gating, exit).
            libc::ECANCELED => {}
            // This connection failed; the next one may not: re-arm this turn (accept(2)).
            libc::ECONNABORTED
            | libc::EPROTO
            | libc::EPERM
            | libc::EINTR
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::ENONET => {}
            // Out of files or memory, or a broken listener: retrying at once would spin.
            _ => self.accept_backoff_until = Some(now + ACCEPT_BACKOFF),
        }
    }

    fn arm_recv(&mut self, slot: u32) {
        let group = self.bufs_mut().group();
        let s = &mut self.slots[slot as usize];
        assert_eq!(s.state, State::Open);
        assert!(!s.recv_armed, "second recv on one slot");
        s.recv_armed = true;
        s.op_started();
        let ud = user_data::encode(Kind::Recv, s.generation, slot);
        self.ring.recv_multi(s.file, group, ud);
    }

    fn on_recv(&mut self, now: Instant, ud: u64, cqe: &cqueue::Entry) {
        let slot = user_data::slot(ud);
        let (result, flags) = (cqe.result(), cqe.flags());
        let exiting = self.exiting;
        let s = self.slot_of(ud);
        let deliver = s.state == State::Open && !s.eof && !exiting;
        if let Some(bid) = cqueue::buffer_select(flags) {
            let len = result.max(0) as usize;
            let bufs = self
                .bufs
                .as_mut()
                .expect("buffer ring present while running");
            let data = bufs.take(bid, len);
            if deliver && len > 0 {
                self.driver.handle_recv(now, slot, data);
            }
            bufs.recycle(bid);
        }
        let s = &mut self.slots[slot as usize];
        // EOF (0) or a failed socket ends reading; ENOBUFS (ring dry) and ECANCELED
        // (PauseRecv) only end this recv.
        let ended =
            result == 0 || (result < 0 && ![libc::ENOBUFS, libc::ECANCELED].contains(&-result));
        if ended && deliver && s.state == State::Open && !s.eof {
            s.eof = true;
            self.driver.handle_eof(now, slot);
        }
        if cqueue::more(flags) {
            return;
        }
        let s = &mut self.slots[slot as usize];
        s.recv_armed = false;
        s.recv_cancelling = false;
        let rearm = s.state == State::Open && !s.eof && !s.recv_paused && !self.exiting;
        self.slot_op_finished(now, ud);
        if rearm {
            self.arm_recv(slot);
        }
    }

    /// Pushes the unwritten rest of the slot's send buffer.
    fn push_send(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let buf = s.send.as_ref().expect("send without a buffer");
        assert!(s.send_offset < buf.len() || buf.is_empty());
        let rest = &buf[s.send_offset..];
        // One SQE covers at most u32::MAX bytes; the rest goes as a short write would.
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let (ptr, file) = (rest.as_ptr(), s.file);
        s.op_started();
        let ud = user_data::encode(Kind::Send, s.generation, slot);
        // SAFETY: the bytes belong to `s.send`, which stays in the slot, unmoved (a `Vec`'s
        // heap buffer does not move when the `Vec` value does), until this send's CQE:
        // `on_send` takes it out only then, and the slot is freed only at zero ops.
        unsafe { self.ring.send(file, ptr, len, ud) };
    }

    fn on_send(&mut self, now: Instant, ud: u64, result: i32) {
        let slot = user_data::slot(ud);
        let exiting = self.exiting;
        let s = self.slot_of(ud);
        let len = s
            .send
            .as_ref()
            .expect("send completion without a buffer")
            .len();
        if s.state != State::Open || exiting {
            // Aborted by Close: the kernel is done with the buffer; drop it.
            s.send = None;
            self.slot_op_finished(now, ud);
            return;
        }
        let retry = result == -libc::EINTR || result == -libc::EAGAIN;
        if result > 0 {
            s.send_offset += result as usize;
            assert!(s.send_offset <= len, "kernel sent more than asked");
        }
        let failed = (result < 0 && !retry) || (result == 0 && s.send_offset < len);
        if !failed && s.send_offset < len {
            // Short write: send the rest (the old op is done, the new one starts).
            self.slot_op_finished(now, ud);
            self.push_send(slot);
            return;
        }
        let buf = s.send.take().expect("send buffer");
        let report_eof = failed && !s.eof;
        if report_eof {
            s.eof = true;
        }
        self.slot_op_finished(now, ud);
        if report_eof {
            self.driver.handle_eof(now, slot);
        }
        // Written, or never will be (failed socket): either way it comes back.
        self.driver.handle_sent(now, slot, buf);
    }

    fn on_wake(&mut self, cqe: &cqueue::Entry) {
        let result = cqe.result();
        if result > 0 {
            sys::drain_eventfd(self.wake_fd);
            self.woken = true;
        }
        if cqueue::more(cqe.flags()) {
            return;
        }
        self.ring.completed();
        self.wake_armed = false;
        if result < 0 && result != -libc::ECANCELED {
            // A bad wake fd: re-arming would fail again at once (a busy loop). Stop.
            let error = io::Error::from_raw_os_error(-result);
            self.fatal = Some(io::Error::new(
                error.kind(),
                format!("wake fd poll: {error}"),
            ));
        } else if !self.exiting {
            self.arm_wake();
        }
    }

    fn arm_wake(&mut self) {
        assert!(!self.wake_armed);
        self.wake_armed = true;
        self.ring
            .poll_readable(self.wake_fd, user_data::encode(Kind::Wake, 0, 0));
    }

    /// Wake-ups and timeouts, then every command the driver has.
    fn call_driver(&mut self, now: Instant) {
        if std::mem::take(&mut self.woken) {
            self.driver.handle_wake(now);
        }
        if self
            .driver
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.driver.handle_timeout(now);
        }
        while let Some(command) = self.driver.poll_command() {
            self.on_command(command);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send { slot, buf } => {
                let s = self.open_slot(slot);
                assert!(s.send.is_none(), "second Send in flight on slot {slot}");
                s.send = Some(buf);
                s.send_offset = 0;
                self.push_send(slot);
            }
            Command::PauseRecv { slot } => {
                let s = self.open_slot(slot);
                s.recv_paused = true;
                if s.recv_armed && !s.recv_cancelling {
                    s.recv_cancelling = true;
                    s.op_started();
                    let target = user_data::encode(Kind::Recv, s.generation, slot);
                    let ud = user_data::encode(Kind::RecvCancel, s.generation, slot);
                    self.ring.cancel_op(target, ud);
                }
            }
            Command::ResumeRecv { slot } => {
                let s = self.open_slot(slot);
                s.recv_paused = false;
                // If the paused recv is still in the kernel, its last CQE re-arms.
                if !s.recv_armed && !s.eof {
                    self.arm_recv(slot);
                }
            }
            Command::ShutdownWrite { slot } => {
                let s = self.open_slot(slot);
                s.op_started();
                let (file, ud) = (
                    s.file,
                    user_data::encode(Kind::Shutdown, s.generation, slot),
                );
                self.ring.shutdown_write(file, ud);
            }
            Command::Close { slot } => self.close_slot(slot, true),
        }
    }

    fn open_slot(&mut self, slot: u32) -> &mut Slot {
        let s = &mut self.slots[slot as usize];
        assert_eq!(
            s.state,
            State::Open,
            "command for slot {slot} that is not open"
        );
        s
    }

    /// Cancels everything on the slot's descriptor, then closes it; the slot frees itself
    /// when the last of those ops completes.
    fn close_slot(&mut self, slot: u32, report_closed: bool) {
        let s = self.open_slot(slot);
        s.state = State::Closing;
        s.report_closed = report_closed;
        let (file, generation) = (s.file, s.generation);
        s.op_started();
        s.op_started();
        self.ring
            .cancel_file(file, user_data::encode(Kind::SlotCancel, generation, slot));
        self.ring
            .close_file(file, user_data::encode(Kind::Close, generation, slot));
    }

    /// Arms idle accepts while the driver accepts and the file table has room; cancels armed
    /// ones when the driver stops accepting (new connections then wait in the backlog).
    fn gate_accepts(&mut self, now: Instant) {
        if self.accept_backoff_until.is_some_and(|until| now >= until) {
            self.accept_backoff_until = None;
        }
        let accepting = self.driver.accepting();
        let open = accepting && self.accept_backoff_until.is_none();
        let mut armed = self.accepts.iter().filter(|a| a.armed).count() as u32;
        for index in 0..self.accepts.len() {
            let accept = &mut self.accepts[index];
            if !accept.armed && open && self.files_in_use + armed < self.files_max {
                armed += 1;
                self.arm_accept(index);
            } else if accept.armed && !accepting && !accept.cancelling {
                self.cancel_accept(index);
            }
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let accept = &mut self.accepts[index];
        assert!(!accept.armed);
        accept.armed = true;
        accept.peer.reset();
        let listener = self.listeners[accept.listener];
        let peer: *mut PeerStorage = &mut accept.peer;
        let ud = user_data::encode(Kind::Accept, 0, index as u32);
        // SAFETY: `peer` lives in `self.accepts`, a boxed slice that is never reallocated
        // and outlives every op (`run` waits for all completions, `Drop` leaks it otherwise).
        unsafe { self.ring.accept(listener, peer, ud) };
    }

    fn cancel_accept(&mut self, index: usize) {
        let accept = &mut self.accepts[index];
        assert!(accept.armed);
        accept.cancelling = true;
        let target = user_data::encode(Kind::Accept, 0, index as u32);
        let ud = user_data::encode(Kind::AcceptCancel, 0, index as u32);
        self.ring.cancel_op(target, ud);
    }

    /// How long the wait may last: to the driver's deadline or the end of an accept backoff.
    fn wait_timeout(&self, now: Instant) -> Option<Duration> {
        let deadline = match (self.driver.poll_timeout(), self.accept_backoff_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        deadline.map(|d| d.saturating_duration_since(now))
    }

    /// Closes every open slot, cancels accepts and the wake poll, and waits (bounded) until
    /// the kernel holds nothing of ours.
    fn exit(&mut self) -> io::Result<()> {
        self.exiting = true;
        for index in 0..self.accepts.len() {
            if self.accepts[index].armed && !self.accepts[index].cancelling {
                self.cancel_accept(index);
            }
        }
        if self.wake_armed {
            let target = user_data::encode(Kind::Wake, 0, 0);
            self.ring
                .cancel_op(target, user_data::encode(Kind::WakeCancel, 0, 0));
        }
        for slot in 0..self.slots.len() as u32 {
            if self.slots[slot as usize].state == State::Open {
                self.close_slot(slot, false);
            }
        }
        let give_up = Instant::now() + EXIT_WAIT;
        let mut busy = true;
        while self.ring.in_flight > 0 {
            let now = Instant::now();
            if now >= give_up {
                return Err(io::Error::other(format!(
                    "io_uring exit: {} ops still in flight after {EXIT_WAIT:?}",
                    self.ring.in_flight
                )));
            }
            self.ring.submit_and_wait(Some(give_up - now), busy)?;
            busy = self.process_completions(now) >= BUSY_TURN_CQES;
        }
        assert_eq!(self.files_in_use, 0, "direct descriptors left open");
        let group = self.bufs_mut().group();
        self.ring.submitter().unregister_buf_ring(group)?;
        Ok(())
    }

    fn bufs_mut(&mut self) -> &mut BufRing {
        self.bufs
            .as_mut()
            .expect("buffer ring present while running")
    }
}

impl Drop for Loop<'_> {
    fn drop(&mut self) {
        if self.ring.in_flight == 0 {
            return;
        }
        // The kernel may still write into these after the ring fd closes (its teardown is
        // asynchronous): leak them rather than free memory under it. Only after an error.
        std::mem::forget(self.bufs.take());
        std::mem::forget(std::mem::take(&mut self.accepts));
        std::mem::forget(std::mem::take(&mut self.slots));
    }
}
