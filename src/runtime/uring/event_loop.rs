//! The io_uring event loop over a worker's rings ("lanes"): one turn = drain ring 0's CQEs
//! and those of every secondary ring that reported completions → driver `handle_*` →
//! `poll_command` drain → accept gating → submit the secondary rings that have SQEs → one
//! `submit_and_wait` on ring 0.
//!
//! # Several rings, one thread
//! A ring's registered file table is capped at `RLIMIT_NOFILE` entries, so a worker that
//! holds more connections opens more rings (lazily, when every open ring is full), each
//! with its own sparse file table and buffer ring. A connection lives in one ring for its
//! life (`Slot::lane`); all its ops go there. The thread sleeps in ring 0 only.
//!
//! A secondary ring tells ring 0 it has completions through an eventfd registered with it
//! (`IORING_REGISTER_EVENTFD`): ring 0 keeps a `READ` of that eventfd armed, which
//! completes (and resets the counter) when the kernel signals it. With `DEFER_TASKRUN` the
//! kernel signals when deferred completions are queued on an idle ring and when CQEs are
//! posted. (Polling the ring's own fd instead does not work on 6.18: a `DEFER_TASKRUN`
//! ring wakes its fd's pollers for none of the lazily woken completions, such as a recv.)
//! While we enter a ring ourselves its eventfd is quiet (`IORING_CQ_EVENTFD_DISABLED`), and
//! right after we look at the ring directly (`IORING_SQ_TASKRUN`: completions queued or
//! left over; or CQEs posted) and mark it to be reaped again; so our own syscalls cause no
//! wake-ups and nothing queued meanwhile is missed.
//!
//! A turn therefore costs one syscall per ring that had completions or submissions, plus
//! ring 0's wait: idle rings cost nothing, and no turn scans all rings.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use io_uring::cqueue;

use super::buf_ring::BufRing;
use super::ring::{Ring, RingCounters};
use super::slot::{Slot, State};
use super::sys::PeerStorage;
use super::user_data::{self, Kind};
use super::{
    sys, LanePlan, ACCEPTS_PER_LISTENER, ACCEPT_BACKOFF, BUFFER_BYTES, BUFFER_COUNT, BUFFER_GROUP,
    CQES_PER_TURN_MAX, CQ_ENTRIES, EXIT_WAIT, SQ_ENTRIES, SUB_BUFFER_COUNT, SUB_CQ_ENTRIES,
    SUB_SQ_ENTRIES,
};
use crate::runtime::{Command, Driver, RuntimeStats, SendBuf, Setup};

/// A turn that handled this many CQEs is busy: the kernel's per-wait cap on deferred task
/// work (`IO_LOCAL_TW_DEFAULT_MAX`, 20) was likely hit, so more completions are pending.
const BUSY_TURN_CQES: usize = 20;

/// How long accepting pauses when a new ring cannot be created (memory): the rings open
/// so far keep working meanwhile.
const LANE_RETRY: Duration = Duration::from_secs(1);

/// One single-shot accept: its listener, the ring it is armed on, and the address storage
/// the kernel writes.
struct Accept {
    listener: usize,
    /// Meaningful while `armed`: the ring whose file table the connection will enter.
    lane: u16,
    /// Invariant: never moved or freed while `armed` (the kernel writes it).
    peer: PeerStorage,
    armed: bool,
    cancelling: bool,
}

/// One ring of the worker and the table space of its registered files.
struct Lane {
    /// Declared first so it drops first: the ring fd closes before the buffers go.
    ring: Ring,
    /// `Option` only so `Drop` can leak it when ops are left in the kernel.
    bufs: Option<BufRing>,
    /// Registered file table size. Invariant: `files_in_use + accepts_armed <= files_max`,
    /// so an accept never finds the table full (the kernel would accept the connection and
    /// then drop it).
    files_max: u32,
    files_in_use: u32,
    accepts_armed: u32,
    /// Secondary rings: the eventfd the kernel signals when this ring has completions.
    notify: Option<OwnedFd>,
    /// Ring 0 holds a `RingNotify` read of `notify`.
    notify_armed: bool,
    notify_cancelling: bool,
    /// In `Loop::ready`: to be reaped this turn.
    ready: bool,
    /// In `Loop::dirty`: SQEs pushed that ring 0's submit does not carry.
    dirty: bool,
}

impl Lane {
    fn new(
        index: usize,
        files_max: u32,
        backlog_extra: usize,
        counters: Rc<RingCounters>,
    ) -> io::Result<Lane> {
        let (sq, cq, buffers) = match index {
            0 => (SQ_ENTRIES, CQ_ENTRIES, BUFFER_COUNT),
            _ => (SUB_SQ_ENTRIES, SUB_CQ_ENTRIES, SUB_BUFFER_COUNT),
        };
        // Per turn at most every slot's ops plus every ring-level op can be pushed.
        let backlog_max = files_max as usize * (usize::from(super::slot::OPS_PER_SLOT_MAX) + 1)
            + backlog_extra
            + 2;
        let ring = Ring::new(sq, cq, backlog_max, counters)?;
        ring.submitter().register_files_sparse(files_max)?;
        let bufs = BufRing::new(buffers, BUFFER_BYTES, BUFFER_GROUP)?;
        bufs.register(&ring.submitter())?;
        let notify = match index {
            0 => None,
            _ => {
                let fd = blocking_eventfd()?;
                ring.register_notify(fd.as_raw_fd())?;
                Some(fd)
            }
        };
        Ok(Lane {
            ring,
            bufs: Some(bufs),
            files_max,
            files_in_use: 0,
            accepts_armed: 0,
            notify,
            notify_armed: false,
            notify_cancelling: false,
            ready: false,
            dirty: false,
        })
    }

    fn has_room(&self) -> bool {
        self.files_in_use + self.accepts_armed < self.files_max
    }

    fn bufs_mut(&mut self) -> &mut BufRing {
        self.bufs
            .as_mut()
            .expect("buffer ring present while running")
    }
}

pub struct Loop<'d> {
    /// Declared first so the rings drop first: their fds close before the memory below
    /// goes. Ring 0 is where the thread waits. Never more than `plan.lanes_max`.
    lanes: Vec<Lane>,
    /// Fixed size (listeners × `ACCEPTS_PER_LISTENER`), never reallocated.
    accepts: Box<[Accept]>,
    /// Indexed by the driver's slot number; `slots_max` entries, allocated once.
    slots: Vec<Slot>,
    plan: LanePlan,
    /// No ring below this index has table room (a hint: accepts fill the lowest ring
    /// first, so few rings stay busy when connections are few).
    room_hint: usize,
    /// Secondary rings to reap at the start of the next turn (each at most once).
    ready: Vec<u16>,
    /// `ready`'s spare: the list being reaped while `ready` collects the next turn's.
    ready_spare: Vec<u16>,
    /// Secondary rings with SQEs to submit at the end of the turn (each at most once).
    dirty: Vec<u16>,
    /// Where each secondary ring's `RingNotify` read puts the eventfd's counter (one per
    /// possible ring, allocated once: the kernel writes here while the read is armed).
    notify_counts: Box<[u64]>,
    listeners: Vec<RawFd>,
    wake_fd: RawFd,
    wake_armed: bool,
    accept_backoff_until: Option<Instant>,
    /// Reused CQE batch (no allocation per turn).
    cqes: Vec<cqueue::Entry>,
    woken: bool,
    /// An error that ends the run (after closing everything).
    fatal: Option<io::Error>,
    /// `finished()` was seen: no more driver calls; everything is being closed.
    exiting: bool,
    /// Where each connecting slot's `CONNECT` reads its address (boxed: unmoved while the
    /// op is in the kernel; removed when the connect completes).
    connect_addrs: std::collections::HashMap<u32, Box<sys::RawAddr>>,
    /// Connects refused before reaching the kernel (no table room), reported next turn.
    connect_failed: Vec<(u32, io::Error)>,
    /// Every ring's SQEs, CQEs and overflows, told to the driver once per turn.
    counters: Rc<RingCounters>,
    driver: &'d mut dyn Driver,
}

impl<'d> Loop<'d> {
    pub fn new(setup: Setup, plan: LanePlan, driver: &'d mut dyn Driver) -> io::Result<Loop<'d>> {
        let slots_max = setup.slots_max as usize;
        let accepts_max = setup.listeners.len() * ACCEPTS_PER_LISTENER;
        let mut lanes = Vec::with_capacity(plan.lanes_max);
        let counters = Rc::new(RingCounters::default());
        lanes.push(Lane::new(
            0,
            plan.files_per_lane,
            ring0_extra(accepts_max, plan),
            counters.clone(),
        )?);
        let accepts = (0..accepts_max)
            .map(|i| Accept {
                listener: i / ACCEPTS_PER_LISTENER,
                lane: 0,
                peer: PeerStorage::new(),
                armed: false,
                cancelling: false,
            })
            .collect();
        Ok(Loop {
            lanes,
            accepts,
            slots: (0..slots_max).map(|_| Slot::new()).collect(),
            plan,
            room_hint: 0,
            ready: Vec::with_capacity(plan.lanes_max),
            ready_spare: Vec::with_capacity(plan.lanes_max),
            dirty: Vec::with_capacity(plan.lanes_max),
            notify_counts: vec![0; plan.lanes_max].into_boxed_slice(),
            listeners: setup.listeners,
            wake_fd: setup.wake_fd,
            wake_armed: false,
            accept_backoff_until: None,
            cqes: Vec::with_capacity(CQES_PER_TURN_MAX),
            woken: false,
            fatal: None,
            exiting: false,
            connect_addrs: std::collections::HashMap::new(),
            connect_failed: Vec::new(),
            counters,
            driver,
        })
    }

    /// Runs until the driver is finished, then closes everything and waits for the kernel.
    pub fn run(&mut self) -> io::Result<()> {
        self.arm_wake();
        // The event loop proper: ends only when the driver says it is finished.
        loop {
            let now = Instant::now();
            let busy = self.process_completions(now)?;
            if let Some(error) = self.fatal.take() {
                self.exit()?;
                return Err(error);
            }
            let c = &self.counters;
            self.driver.handle_runtime_stats(RuntimeStats {
                submitted: c.pushed.get(),
                completed: c.reaped.get(),
                cq_overflows: c.overflowed.get(),
            });
            self.call_driver(now);
            if self.driver.finished() {
                break;
            }
            self.gate_accepts(now);
            let timeout = self.wait_timeout(now);
            self.submit_and_wait(timeout, busy)?;
        }
        self.exit()
    }

    /// Drains ring 0 (up to `CQES_PER_TURN_MAX`), then reaps every secondary ring that
    /// reported completions. Returns whether ring 0's turn was busy.
    fn process_completions(&mut self, now: Instant) -> io::Result<bool> {
        let busy = self.process_lane(now, 0) >= BUSY_TURN_CQES;
        // Rings found ready while these are reaped go to the (empty) `ready` for next turn.
        let spare = std::mem::take(&mut self.ready_spare);
        let mut ready = std::mem::replace(&mut self.ready, spare);
        for &lane in &ready {
            let lane = usize::from(lane);
            self.lanes[lane].ready = false;
            // Submits what the ring holds and runs its deferred completions: one syscall.
            let l = &mut self.lanes[lane];
            l.dirty = false;
            l.ring.set_notify_quiet(true);
            let reaped = l.ring.reap();
            l.ring.set_notify_quiet(false);
            reaped?;
            self.process_lane(now, lane);
            if self.lanes[lane].ring.pending() {
                self.mark_ready(lane); // more than a CQ's worth, or new: next turn
            }
        }
        ready.clear();
        self.ready_spare = ready;
        Ok(busy)
    }

    /// Drains up to a CQ's worth of one ring's completions and hands them to the driver.
    fn process_lane(&mut self, now: Instant, lane: usize) -> usize {
        let max = if lane == 0 {
            CQES_PER_TURN_MAX
        } else {
            SUB_CQ_ENTRIES as usize
        };
        let mut cqes = std::mem::take(&mut self.cqes);
        self.lanes[lane].ring.drain(&mut cqes, max);
        for cqe in &cqes {
            self.on_completion(now, lane, cqe);
        }
        let count = cqes.len();
        self.cqes = cqes;
        // Buffers recycled while handling recvs go back to the kernel before the submit.
        self.lanes[lane].bufs_mut().publish();
        count
    }

    fn on_completion(&mut self, now: Instant, lane: usize, cqe: &cqueue::Entry) {
        let ud = cqe.user_data();
        let index = user_data::slot(ud);
        match user_data::kind(ud) {
            Kind::Accept => self.on_accept(now, lane, index as usize, cqe.result()),
            Kind::AcceptCancel => {
                assert!((index as usize) < self.accepts.len());
                self.lanes[lane].ring.completed();
            }
            Kind::Wake => self.on_wake(cqe),
            Kind::WakeCancel => self.lanes[0].ring.completed(),
            Kind::RefusedClose => {
                self.lanes[lane].ring.completed();
                self.file_closed(lane);
            }
            Kind::Recv => self.on_recv(now, lane, ud, cqe),
            Kind::Send => self.on_send(now, lane, ud, cqe.result()),
            Kind::Shutdown => self.on_shutdown(now, lane, ud),
            Kind::SlotCancel => self.slot_op_finished(now, lane, ud),
            Kind::RecvCancel => self.slot_op_finished(now, lane, ud),
            Kind::Close => {
                self.file_closed(lane);
                self.slot_op_finished(now, lane, ud);
            }
            Kind::RingNotify => self.on_ring_notify(index as usize, cqe.result()),
            Kind::RingNotifyCancel => self.lanes[0].ring.completed(),
            Kind::Socket => self.on_socket(now, lane, ud, cqe.result()),
            Kind::Connect => self.on_connect(now, lane, ud, cqe.result()),
            Kind::Probe => panic!("probe completion in the event loop"),
        }
    }

    /// The ring the slot's ops go to; marks a secondary ring for the end-of-turn submit.
    fn ring_of_lane(&mut self, lane: usize) -> &mut Ring {
        self.lane_pushed(lane);
        &mut self.lanes[lane].ring
    }

    /// Notes that SQEs were (or may have been) pushed to `lane`.
    fn lane_pushed(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        if lane != 0 && !l.dirty {
            l.dirty = true;
            self.dirty.push(lane as u16);
        }
    }

    fn mark_ready(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        if !l.ready {
            l.ready = true;
            self.ready.push(lane as u16);
        }
    }

    /// The slot an op's `user_data` names, after checking it is that slot's current life
    /// and that the op completed on the slot's ring.
    fn slot_of(&mut self, lane: usize, ud: u64) -> &mut Slot {
        let slot = &mut self.slots[user_data::slot(ud) as usize];
        assert_ne!(slot.state, State::Free, "completion for a free slot");
        assert_eq!(
            slot.generation,
            user_data::generation(ud),
            "completion from an old life"
        );
        assert_eq!(usize::from(slot.lane), lane, "completion on another ring");
        slot
    }

    /// Accounts the end of one op of a slot; frees the slot once it drained while closing.
    fn slot_op_finished(&mut self, now: Instant, lane: usize, ud: u64) {
        self.lanes[lane].ring.completed();
        let slot = self.slot_of(lane, ud);
        if !slot.op_finished() {
            return;
        }
        slot.free();
        // At exit the driver is told nothing more (its slots are all being closed).
        if !self.exiting {
            self.driver.handle_closed(now, user_data::slot(ud));
        }
    }

    /// A `SHUTDOWN` ended (its result does not matter: the driver reads on until EOF or
    /// closes). If the slot's `CLOSE` waited for it, that close goes now.
    fn on_shutdown(&mut self, now: Instant, lane: usize, ud: u64) {
        let s = self.slot_of(lane, ud);
        assert!(s.shutdowns > 0, "shutdown completion without a shutdown");
        s.shutdowns -= 1;
        if s.shutdowns == 0 && s.close_deferred {
            s.close_deferred = false;
            s.op_started();
            let (file, generation, slot) = (s.file, s.generation, user_data::slot(ud));
            self.ring_of_lane(lane)
                .close_file(file, user_data::encode(Kind::Close, generation, slot));
        }
        self.slot_op_finished(now, lane, ud);
    }

    fn file_closed(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        assert!(l.files_in_use > 0, "file table count underflow");
        l.files_in_use -= 1;
        self.room_hint = self.room_hint.min(lane);
    }

    fn on_accept(&mut self, now: Instant, lane: usize, index: usize, result: i32) {
        self.lanes[lane].ring.completed();
        let accept = &mut self.accepts[index];
        assert!(accept.armed, "completion for an accept not armed");
        assert_eq!(
            usize::from(accept.lane),
            lane,
            "accept completed on another ring"
        );
        accept.armed = false;
        accept.cancelling = false;
        let (listener, peer) = (accept.listener, accept.peer.peer());
        let l = &mut self.lanes[lane];
        l.accepts_armed -= 1;
        self.room_hint = self.room_hint.min(lane);
        if result < 0 {
            self.on_accept_error(now, -result);
            return;
        }
        let file = result as u32;
        l.files_in_use += 1;
        assert!(l.files_in_use <= l.files_max, "file table over its size");
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
                self.slots[slot as usize].open(file, lane as u16);
                self.arm_recv(slot);
            }
            None => {
                let ud = user_data::encode(Kind::RefusedClose, 0, file);
                self.ring_of_lane(lane).close_file(file, ud);
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
        let s = &mut self.slots[slot as usize];
        assert_eq!(s.state, State::Open);
        assert!(!s.recv_armed, "second recv on one slot");
        s.recv_armed = true;
        s.op_started();
        let ud = user_data::encode(Kind::Recv, s.generation, slot);
        let (file, lane) = (s.file, usize::from(s.lane));
        // Buffer group ids are per ring: every ring's buffer ring is `BUFFER_GROUP`.
        self.ring_of_lane(lane).recv_multi(file, BUFFER_GROUP, ud);
    }

    fn on_recv(&mut self, now: Instant, lane: usize, ud: u64, cqe: &cqueue::Entry) {
        let slot = user_data::slot(ud);
        let (result, flags) = (cqe.result(), cqe.flags());
        let exiting = self.exiting;
        let s = self.slot_of(lane, ud);
        let deliver = s.state == State::Open && !s.eof && !exiting;
        if let Some(bid) = cqueue::buffer_select(flags) {
            let len = result.max(0) as usize;
            let bufs = self.lanes[lane].bufs_mut();
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
        self.slot_op_finished(now, lane, ud);
        if rearm {
            self.arm_recv(slot);
        }
    }

    /// Pushes the unwritten rest of the slot's send buffer.
    fn push_send(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let buf = s.send.as_ref().expect("send without a buffer").bytes();
        let offset = s.send_offset as usize;
        assert!(offset < buf.len() || buf.is_empty());
        let rest = &buf[offset..];
        // Fits: `start_send` refused buffers of 4 GiB or more.
        let len = rest.len() as u32;
        let (ptr, file, lane) = (rest.as_ptr(), s.file, usize::from(s.lane));
        s.op_started();
        let ud = user_data::encode(Kind::Send, s.generation, slot);
        // SAFETY: the bytes belong to `s.send` (an owned `Vec`, or a reference to a shared
        // buffer), which stays in the slot, unmoved (neither a `Vec`'s heap buffer nor an
        // `Arc`'s allocation moves when the value does), until this send's CQE: `on_send`
        // takes it out only then, and the slot is freed only at zero ops.
        unsafe { self.ring_of_lane(lane).send(file, ptr, len, ud) };
    }

    fn on_send(&mut self, now: Instant, lane: usize, ud: u64, result: i32) {
        let slot = user_data::slot(ud);
        let exiting = self.exiting;
        let s = self.slot_of(lane, ud);
        let len = s
            .send
            .as_ref()
            .expect("send completion without a buffer")
            .bytes()
            .len();
        if s.state != State::Open || exiting {
            // Aborted by Close: the kernel is done with the buffer; drop it.
            s.send = None;
            self.slot_op_finished(now, lane, ud);
            return;
        }
        let retry = result == -libc::EINTR || result == -libc::EAGAIN;
        if result > 0 {
            s.send_offset += result as u32;
            assert!(s.send_offset as usize <= len, "kernel sent more than asked");
        }
        let written = s.send_offset as usize;
        let failed = (result < 0 && !retry) || (result == 0 && written < len);
        if !failed && written < len {
            // Short write: send the rest (the old op is done, the new one starts).
            self.slot_op_finished(now, lane, ud);
            self.push_send(slot);
            return;
        }
        let buf = s.send.take().expect("send buffer");
        let report_eof = failed && !s.eof;
        if report_eof {
            s.eof = true;
        }
        self.slot_op_finished(now, lane, ud);
        if report_eof {
            self.driver.handle_eof(now, slot);
        }
        // Written, or never will be (failed socket): either way it comes back.
        self.driver.handle_sent(now, slot, buf.into_returned());
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
        self.lanes[0].ring.completed();
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
        self.lanes[0]
            .ring
            .poll_readable(self.wake_fd, user_data::encode(Kind::Wake, 0, 0));
    }

    /// A secondary ring's eventfd was signalled (or the read cancelled): reap that ring
    /// this turn, and read the eventfd again for the next time.
    fn on_ring_notify(&mut self, lane: usize, result: i32) {
        self.lanes[0].ring.completed();
        let l = &mut self.lanes[lane];
        assert!(l.notify_armed, "ring notification not armed");
        l.notify_armed = false;
        l.notify_cancelling = false;
        if result == -libc::ECANCELED {
            return;
        }
        if result < 0 {
            // Reading our own eventfd cannot fail short of a kernel without support;
            // re-arming would fail again at once. Stop (after closing everything).
            let error = io::Error::from_raw_os_error(-result);
            self.fatal = Some(io::Error::new(
                error.kind(),
                format!("notification of ring {lane}: {error}"),
            ));
            return;
        }
        self.mark_ready(lane);
        if !self.exiting || self.lanes[lane].ring.in_flight > 0 {
            self.arm_ring_notify(lane);
        }
    }

    fn arm_ring_notify(&mut self, lane: usize) {
        assert_ne!(lane, 0, "ring 0 is waited on, not notified");
        let l = &mut self.lanes[lane];
        assert!(!l.notify_armed);
        l.notify_armed = true;
        let fd = l
            .notify
            .as_ref()
            .expect("secondary ring has an eventfd")
            .as_raw_fd();
        let counter: *mut u64 = &mut self.notify_counts[lane];
        let ud = user_data::encode(Kind::RingNotify, 0, lane as u32);
        // SAFETY: `counter` lives in `notify_counts`, a boxed slice never reallocated, which
        // outlives every op (`run` waits for all completions, `Drop` leaks it otherwise).
        unsafe { self.lanes[0].ring.read_eventfd(fd, counter, ud) };
    }

    /// Wake-ups and timeouts, then every command the driver has.
    fn call_driver(&mut self, now: Instant) {
        for (slot, e) in std::mem::take(&mut self.connect_failed) {
            self.driver.handle_connected(now, slot, Err(e));
        }
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
            self.on_command(now, command);
        }
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Send { slot, buf } => self.start_send(slot, SendBuf::Owned(buf)),
            Command::SendShared { slot, buf } => self.start_send(slot, SendBuf::Shared(buf)),
            Command::PauseRecv { slot } => {
                let s = self.open_slot(slot);
                s.recv_paused = true;
                if s.recv_armed && !s.recv_cancelling {
                    s.recv_cancelling = true;
                    s.op_started();
                    let target = user_data::encode(Kind::Recv, s.generation, slot);
                    let ud = user_data::encode(Kind::RecvCancel, s.generation, slot);
                    let lane = usize::from(s.lane);
                    self.ring_of_lane(lane).cancel_op(target, ud);
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
                s.shutdowns += 1;
                let (file, lane, ud) = (
                    s.file,
                    usize::from(s.lane),
                    user_data::encode(Kind::Shutdown, s.generation, slot),
                );
                self.ring_of_lane(lane).shutdown_write(file, ud);
            }
            Command::Close { slot } => self.close_slot(slot, Some(now)),
            Command::Connect { slot, addr } => self.connect(now, slot, addr),
        }
    }

    /// `SOCKET` into a direct descriptor of the lowest ring with table room (its entry is
    /// reserved now, so no accept can take it), then `CONNECT` once the socket exists.
    fn connect(&mut self, now: Instant, slot: u32, addr: std::net::SocketAddr) {
        let Some(lane) = self.lane_with_room(now) else {
            // No table room: an open slot without a socket, failed, for the driver to close.
            let s = &mut self.slots[slot as usize];
            s.open(u32::MAX, 0);
            s.eof = true;
            let e = io::Error::from_raw_os_error(libc::EMFILE);
            self.connect_failed.push((slot, e));
            return;
        };
        self.lanes[lane].files_in_use += 1;
        let s = &mut self.slots[slot as usize];
        s.open(u32::MAX, lane as u16);
        s.op_started();
        let ud = user_data::encode(Kind::Socket, s.generation, slot);
        self.connect_addrs
            .insert(slot, Box::new(sys::RawAddr::new(addr)));
        let domain = match addr {
            std::net::SocketAddr::V4(_) => libc::AF_INET,
            std::net::SocketAddr::V6(_) => libc::AF_INET6,
        };
        self.ring_of_lane(lane).socket(domain, ud);
    }

    fn on_socket(&mut self, now: Instant, lane: usize, ud: u64, result: i32) {
        let slot = user_data::slot(ud);
        let exiting = self.exiting;
        let s = self.slot_of(lane, ud);
        if result < 0 {
            s.eof = true;
            let open = s.state == State::Open && !exiting;
            self.connect_addrs.remove(&slot);
            self.file_closed(lane); // the reserved entry
            self.slot_op_finished(now, lane, ud);
            if open {
                let e = io::Error::from_raw_os_error(-result);
                self.driver.handle_connected(now, slot, Err(e));
            }
            return;
        }
        s.file = result as u32;
        let generation = s.generation;
        s.op_started();
        if s.state != State::Open {
            // Closed while the socket was made: close it (the reserved entry is freed by
            // the close's completion).
            self.connect_addrs.remove(&slot);
            let file = result as u32;
            let cud = user_data::encode(Kind::Close, generation, slot);
            self.ring_of_lane(lane).close_file(file, cud);
        } else {
            let addr: *const sys::RawAddr = &**self
                .connect_addrs
                .get(&slot)
                .expect("connecting slot has an address");
            let cud = user_data::encode(Kind::Connect, generation, slot);
            // SAFETY: the address is boxed in `connect_addrs` and removed only when this
            // connect completes (or at `Drop`, which leaks it if ops remain).
            unsafe { self.ring_of_lane(lane).connect(result as u32, addr, cud) };
        }
        self.slot_op_finished(now, lane, ud);
    }

    fn on_connect(&mut self, now: Instant, lane: usize, ud: u64, result: i32) {
        let slot = user_data::slot(ud);
        let exiting = self.exiting;
        let s = self.slot_of(lane, ud);
        let open = s.state == State::Open && !exiting;
        if result < 0 {
            s.eof = true;
        }
        self.connect_addrs.remove(&slot);
        self.slot_op_finished(now, lane, ud);
        if !open {
            return;
        }
        if result < 0 {
            let e = io::Error::from_raw_os_error(-result);
            self.driver.handle_connected(now, slot, Err(e));
        } else {
            self.arm_recv(slot);
            self.driver.handle_connected(now, slot, Ok(()));
        }
    }

    fn start_send(&mut self, slot: u32, buf: SendBuf) {
        let s = self.open_slot(slot);
        assert!(s.send.is_none(), "second Send in flight on slot {slot}");
        assert!(
            u32::try_from(buf.bytes().len()).is_ok(),
            "send of 4 GiB or more on slot {slot}"
        );
        s.send = Some(buf);
        s.send_offset = 0;
        self.push_send(slot);
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
    fn close_slot(&mut self, slot: u32, now: Option<Instant>) {
        let connecting = self.connect_addrs.contains_key(&slot);
        let s = self.open_slot(slot);
        s.state = State::Closing;
        if s.file == u32::MAX {
            // An outbound connection without a descriptor yet: its `SOCKET` completion
            // closes what it made; or one that never got one (failed): free now.
            if !connecting {
                s.free();
                if let Some(now) = now.filter(|_| !self.exiting) {
                    self.driver.handle_closed(now, slot);
                }
            }
            return;
        }
        let (file, generation, lane) = (s.file, s.generation, usize::from(s.lane));
        // The ops that can wait in the kernel, each cancelled by its user_data: the kernel
        // finds one of those in its hash table, while a cancel by descriptor walks every
        // request of the ring (18,000 idle recvs: closing them all was quadratic).
        let targets = [
            (s.recv_armed && !s.recv_cancelling).then_some(Kind::Recv),
            s.send.is_some().then_some(Kind::Send),
            connecting.then_some(Kind::Connect),
        ];
        let cancel = user_data::encode(Kind::SlotCancel, generation, slot);
        for kind in targets.into_iter().flatten() {
            let s = &mut self.slots[slot as usize];
            s.op_started();
            let target = user_data::encode(kind, generation, slot);
            self.ring_of_lane(lane).cancel_op(target, cancel);
        }
        let s = &mut self.slots[slot as usize];
        if s.shutdowns > 0 {
            // The shutdown resolves the descriptor late (on an io-wq thread): closing now
            // could let it shut down the next connection given this table entry.
            s.close_deferred = true;
            return;
        }
        s.op_started();
        self.ring_of_lane(lane)
            .close_file(file, user_data::encode(Kind::Close, generation, slot));
    }

    /// Arms idle accepts while the driver accepts and some ring's file table has room (the
    /// lowest such ring, opening a new one when all are full); cancels armed ones when the
    /// driver stops accepting (new connections then wait in the backlog).
    fn gate_accepts(&mut self, now: Instant) {
        if self.accept_backoff_until.is_some_and(|until| now >= until) {
            self.accept_backoff_until = None;
        }
        let accepting = self.driver.accepting();
        let mut open = accepting && self.accept_backoff_until.is_none();
        for index in 0..self.accepts.len() {
            let accept = &self.accepts[index];
            if !accept.armed && open {
                match self.lane_with_room(now) {
                    Some(lane) => self.arm_accept(index, lane),
                    None => open = false,
                }
            } else if accept.armed && !accepting && !accept.cancelling {
                self.cancel_accept(index);
            }
        }
    }

    /// The lowest ring with table room for one more accept, opening a ring if all are full
    /// and the plan allows another. `None` when there is no room (or no memory for a ring).
    fn lane_with_room(&mut self, now: Instant) -> Option<usize> {
        // Amortized O(1): the hint only moves back when a file or an accept frees room.
        while self.room_hint < self.lanes.len() {
            if self.lanes[self.room_hint].has_room() {
                return Some(self.room_hint);
            }
            self.room_hint += 1;
        }
        if self.lanes.len() >= self.plan.lanes_max {
            return None;
        }
        let index = self.lanes.len();
        let counters = self.counters.clone();
        match Lane::new(
            index,
            self.plan.files_per_lane,
            3 * self.accepts.len(),
            counters,
        ) {
            Ok(lane) => {
                self.lanes.push(lane);
                crate::log!(
                    crate::log::DEBUG,
                    "uring",
                    "ring {index} opened ({} connections per ring, {} rings at most)",
                    self.plan.files_per_lane,
                    self.plan.lanes_max
                );
                self.arm_ring_notify(index);
                Some(index)
            }
            Err(e) => {
                crate::log!(
                    crate::log::WARN,
                    "uring",
                    "cannot open ring {index} for more connections ({e}); retrying in {LANE_RETRY:?}"
                );
                self.accept_backoff_until = Some(now + LANE_RETRY);
                None
            }
        }
    }

    fn arm_accept(&mut self, index: usize, lane: usize) {
        let accept = &mut self.accepts[index];
        assert!(!accept.armed);
        accept.armed = true;
        accept.lane = lane as u16;
        accept.peer.reset();
        let listener = self.listeners[accept.listener];
        let peer: *mut PeerStorage = &mut accept.peer;
        let ud = user_data::encode(Kind::Accept, 0, index as u32);
        let l = &mut self.lanes[lane];
        l.accepts_armed += 1;
        assert!(l.files_in_use + l.accepts_armed <= l.files_max);
        // SAFETY: `peer` lives in `self.accepts`, a boxed slice that is never reallocated
        // and outlives every op (`run` waits for all completions, `Drop` leaks it otherwise).
        unsafe { self.ring_of_lane(lane).accept(listener, peer, ud) };
    }

    fn cancel_accept(&mut self, index: usize) {
        let accept = &mut self.accepts[index];
        assert!(accept.armed);
        accept.cancelling = true;
        let lane = usize::from(accept.lane);
        let target = user_data::encode(Kind::Accept, 0, index as u32);
        let ud = user_data::encode(Kind::AcceptCancel, 0, index as u32);
        self.ring_of_lane(lane).cancel_op(target, ud);
    }

    /// How long the wait may last: to the driver's deadline or the end of an accept backoff.
    fn wait_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.connect_failed.is_empty() {
            return Some(Duration::ZERO);
        }
        let deadline = match (self.driver.poll_timeout(), self.accept_backoff_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        deadline.map(|d| d.saturating_duration_since(now))
    }

    /// Submits every secondary ring that has SQEs, then submits ring 0 and waits there.
    fn submit_and_wait(&mut self, timeout: Option<Duration>, busy: bool) -> io::Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &lane in &dirty {
            let lane = usize::from(lane);
            let l = &mut self.lanes[lane];
            if !l.dirty {
                continue; // reaped (and so submitted) since
            }
            l.dirty = false;
            l.ring.set_notify_quiet(true);
            let submitted = l.ring.submit();
            l.ring.set_notify_quiet(false);
            submitted?;
            // Sends to idle sockets complete within the submit itself: reap them next turn.
            if l.ring.pending() {
                self.mark_ready(lane);
            }
        }
        dirty.clear();
        self.dirty = dirty;
        let timeout = match self.ready.is_empty() {
            true => timeout,
            false => Some(Duration::ZERO),
        };
        self.lanes[0].ring.submit_and_wait(timeout, busy)
    }

    fn in_flight(&self) -> u64 {
        self.lanes.iter().map(|l| l.ring.in_flight).sum()
    }

    /// Closes every open slot, cancels accepts and the wake poll, and waits (bounded) until
    /// the kernel holds nothing of ours in any ring.
    fn exit(&mut self) -> io::Result<()> {
        self.exiting = true;
        for index in 0..self.accepts.len() {
            if self.accepts[index].armed && !self.accepts[index].cancelling {
                self.cancel_accept(index);
            }
        }
        if self.wake_armed {
            let target = user_data::encode(Kind::Wake, 0, 0);
            self.lanes[0]
                .ring
                .cancel_op(target, user_data::encode(Kind::WakeCancel, 0, 0));
        }
        for slot in 0..self.slots.len() as u32 {
            if self.slots[slot as usize].state == State::Open {
                self.close_slot(slot, None);
            }
        }
        let give_up = Instant::now() + EXIT_WAIT;
        let mut busy = true;
        while self.in_flight() > 0 {
            // A ring with nothing left in flight needs its notification no more (exit only:
            // O(rings)).
            for lane in 1..self.lanes.len() {
                let l = &mut self.lanes[lane];
                if l.ring.in_flight == 0 && l.notify_armed && !l.notify_cancelling {
                    l.notify_cancelling = true;
                    let target = user_data::encode(Kind::RingNotify, 0, lane as u32);
                    let ud = user_data::encode(Kind::RingNotifyCancel, 0, lane as u32);
                    self.lanes[0].ring.cancel_op(target, ud);
                }
            }
            let now = Instant::now();
            if now >= give_up {
                return Err(io::Error::other(format!(
                    "io_uring exit: {} ops still in flight after {EXIT_WAIT:?}",
                    self.in_flight()
                )));
            }
            self.submit_and_wait(Some(give_up - now), busy)?;
            busy = self.process_completions(now)?;
        }
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            assert_eq!(
                lane.files_in_use, 0,
                "direct descriptors left open in ring {index}"
            );
            lane.ring.submitter().unregister_buf_ring(BUFFER_GROUP)?;
        }
        Ok(())
    }
}

/// Ring 0's SQE backlog room for ring-level ops: accepts and their cancels, the wake poll,
/// and each secondary ring's notification read and its cancel.
fn ring0_extra(accepts: usize, plan: LanePlan) -> usize {
    accepts * 3 + 2 * plan.lanes_max + 2
}

impl Drop for Loop<'_> {
    fn drop(&mut self) {
        if self.in_flight() == 0 {
            return;
        }
        // The kernel may still write into these after the ring fds close (teardown is
        // asynchronous): leak them rather than free memory under it. Only after an error.
        for lane in &mut self.lanes {
            std::mem::forget(lane.bufs.take());
        }
        std::mem::forget(std::mem::take(&mut self.accepts));
        std::mem::forget(std::mem::take(&mut self.slots));
        std::mem::forget(std::mem::take(&mut self.notify_counts));
        std::mem::forget(std::mem::take(&mut self.connect_addrs));
    }
}

/// A blocking eventfd (so a `READ` of it waits in the kernel instead of failing with
/// `EAGAIN`); close-on-exec.
fn blocking_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
