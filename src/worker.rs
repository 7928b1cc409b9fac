//! A worker: one pinned thread running one runtime over one slab of connections. It is the
//! runtime's [`Driver`]: it routes socket events and bridge packets to connections, owns the
//! timer wheel and the keep-alive sweep, and batches packets to the bridge (one lock and
//! one wake-up per runtime turn).
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use slab::Slab;

use crate::bridge::{Addr, InPacket, OutPacket, Route, Shared};
use crate::config::{Config, Mode};
use crate::conn::{
    Conn, ConnId, Ctx, HandlerPacket, Handlers, Output, Pool, Settings, SharedFrame,
};
use crate::limits;
use crate::metrics::{
    CloseReason as Cause, ConnClass, ConnState, FanoutOutcome, Peer, Protocol, WorkerStats,
};
use crate::proto::zhttp::{self, Kind};
use crate::runtime::{Command, Driver, RuntimeStats};
use crate::timer::Wheel;

mod access;
mod idle;
mod m2;
mod out;

use idle::IdleList;

/// What a worker knows of each listener (by index, as the runtime reports it).
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    pub mode: Mode,
    /// The listener's TLS configuration; `None` for plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct Worker {
    index: u16,
    settings: Settings,
    listeners: Vec<ListenerInfo>,
    conns: Slab<Conn>,
    /// Per-mode connection limits: this worker's share of `--req-maxconn`/`--stream-maxconn`.
    maxconn: [usize; 2],
    count: [usize; 2],
    modes: Vec<u8>,
    wheel: Wheel,
    cmds: VecDeque<Command>,
    packets: Vec<OutPacket>,
    /// A connection's outputs while the worker carries them out (reused: no allocation).
    outputs: Vec<Output>,
    pool: Pool,
    handlers: Handlers,
    counter: u64,
    shared: Arc<Shared>,
    due: Vec<u32>,
    /// Packets taken from the bridge, not yet dispatched. Bounded by
    /// `INBOX_DRAIN_PACKETS_MAX`: the bridge's queue is taken from only below that.
    inbox: VecDeque<Arc<InPacket>>,
    /// Ids of `inbox`'s front packet already dispatched (a packet is cut at the per-turn
    /// bound on targets and resumed next turn).
    dispatch_pos: usize,
    /// Packets taken from the bridge and dispatched in full: the count a handler-gone
    /// notice's mark refers to (`bridge::Inbox::handler_gone`).
    dispatched: u64,
    /// Handlers gone, each with the packet count after which its sessions fail.
    gone: ArrayVec<(Addr, u64), { limits::HANDLERS_GONE_MAX }>,
    /// Slots of a gone handler's sessions (reused: one allocation, kept).
    gone_slots: Vec<u32>,
    /// The last fan-out frame built, reused while packets carry the same payload.
    frame_cache: Option<SharedFrame>,
    /// Reused by each keep-alive sweep step (no allocation per step).
    keep_alive_batch: Vec<(Addr, u64, u32, u32)>,
    sweep_at: Instant,
    /// Next time worker 0 hands freed heap pages back to the kernel.
    trim_at: Instant,
    /// When the pool next frees the small buffers it did not need (`Pool::shrink`).
    shrink_at: Instant,
    sweep_cursor: usize,
    shutting_down: bool,
    /// Draining (the first SIGTERM): when what is left is cut (`--shutdown-timeout`).
    drain_deadline: Option<Instant>,
    shutdown_timeout: Duration,
    /// Cancels for handlers from this turn's drain or shutdown (`Output::Cancel`), sent
    /// batched at the end of the turn (`flush_cancels`).
    cancels: Vec<(Addr, u64, u32, u32)>,
    slots: usize,
    /// Outbound (Mongrel2 `Proxy`) connections: runtime slot `slots + i` is backend `i`,
    /// holding the client slot it serves. Empty unless the config has `Proxy` routes.
    backends: Vec<Option<u32>>,
    backend_free: Vec<u32>,
    /// Mongrel2 mode: connection ids of this worker's open connections.
    m2_ids: m2::Ids,
    /// This turn's access log lines, per file (`access`; handed over once per turn).
    access_pending: Vec<Vec<u8>>,
    /// Idle connections, oldest first: closed to make room at the connection limit.
    idle: IdleList,
    /// Connections closed or answered `503` at the limit since the last log line about it,
    /// and when the next such line may be written.
    overload_unlogged: (u64, u64),
    overload_log_at: Instant,
    /// Per client slot: its connection's class as last counted in the gauges, and why it
    /// ended (`metrics`; kept here so that no scrape walks the slots).
    slot_metrics: Vec<SlotMetrics>,
    /// Client mode's outbound exchanges (runtime slots after the backends').
    out: out::Out,
}

/// What the worker's gauges last counted a slot's connection as.
#[derive(Clone, Copy)]
struct SlotMetrics {
    /// `ConnClass::index`, or `CLASS_NONE` while the slot is free.
    class: u8,
    /// `CloseReason as u8`, or `ENDED_NONE` while open.
    ended: u8,
}

const CLASS_NONE: u8 = u8::MAX;
const ENDED_NONE: u8 = u8::MAX;
const _: () = assert!(crate::metrics::CONN_CLASSES < CLASS_NONE as usize);

/// Outbound connections are counted as one class: plain and active.
fn outbound_class() -> ConnClass {
    ConnClass::new(Protocol::Outbound, false, ConnState::Active)
}

/// Counts the bytes of a send as handed to the runtime.
fn count_sent(stats: &WorkerStats, client_slots: usize, c: &Command) {
    let (slot, n) = match c {
        Command::Send { slot, buf } => (*slot, buf.len()),
        Command::SendShared { slot, buf } => (*slot, buf.len()),
        _ => return,
    };
    let peer = match slot as usize >= client_slots {
        true => Peer::Backend,
        false => Peer::Client,
    };
    stats.sent_bytes[peer as usize].add(n as u64);
}

fn mode_index(m: Mode) -> usize {
    match m {
        Mode::Stream => 0,
        Mode::Req => 1,
    }
}

const SWEEP_STEP: Duration =
    Duration::from_millis(limits::KEEP_ALIVE_INTERVAL_MS / limits::KEEP_ALIVE_SWEEP_STEPS);

impl Worker {
    pub fn new(
        index: usize,
        cfg: &Config,
        m2: Option<Arc<crate::m2serve::Setup>>,
        listeners: Vec<ListenerInfo>,
        shared: Arc<Shared>,
        now: Instant,
    ) -> Worker {
        let share = |n: usize| n.div_ceil(cfg.workers).max(1);
        let maxconn = [share(cfg.stream_maxconn), share(cfg.req_maxconn)];
        let slots = maxconn[0] + maxconn[1] + limits::OVERLOAD_SLOTS;
        let backends = backend_slots(m2.as_deref(), slots);
        let out = out::Out::new(slots + backends, out::slots(cfg));
        let all_slots = slots + backends + out.slots;
        Worker {
            index: index as u16,
            settings: Settings {
                instance_id: Addr::try_from(cfg.id.as_bytes())
                    .expect("id length checked by config"),
                worker: index as u16,
                buffer_size: cfg.buffer_size,
                body_buffer_size: cfg.body_buffer_size,
                req_timeout: Duration::from_secs(cfg.req_timeout_s),
                stream_timeout: Duration::from_secs(cfg.stream_timeout_s),
                handler_wait: Duration::from_millis(cfg.handler_wait_ms),
                tls_handshake_timeout: Duration::from_millis(cfg.tls_handshake_timeout_ms),
                head_timeout: Duration::from_millis(cfg.head_timeout_ms),
                keepalive_timeout: Duration::from_millis(cfg.keepalive_timeout_ms),
                body_timeout: Duration::from_millis(cfg.body_timeout_ms),
                body_min_bytes: cfg.body_min_bytes as u32,
                messages_max: cfg.messages_max,
                compression: cfg.compression,
                deflate: crate::proto::ws_deflate::Config {
                    server_no_context_takeover: cfg.compression_context
                        == crate::config::CompressionContext::Shared,
                    ..Default::default()
                },
                epoch: now,
                epoch_unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                m2,
                access_log: shared.access_log.get().is_some_and(|(_, t)| t.is_some()),
                deny_out_internal: cfg.deny_out_internal,
                ws_out_buffer_size: cfg.ws_out_buffer_size.unwrap_or(cfg.buffer_size),
                out_tls: shared.out_tls.get().cloned(),
            },
            listeners,
            conns: Slab::with_capacity(slots),
            maxconn,
            count: [0; 2],
            modes: vec![0; slots],
            wheel: Wheel::new(now, all_slots),
            cmds: VecDeque::new(),
            packets: Vec::new(),
            outputs: Vec::new(),
            pool: Pool::default(),
            handlers: Handlers::default(),
            counter: 0,
            shared,
            due: Vec::new(),
            inbox: VecDeque::new(),
            dispatch_pos: 0,
            dispatched: 0,
            gone: ArrayVec::new(),
            gone_slots: Vec::new(),
            frame_cache: None,
            keep_alive_batch: Vec::new(),
            sweep_at: now + SWEEP_STEP,
            trim_at: now + Duration::from_millis(limits::MALLOC_TRIM_INTERVAL_MS),
            shrink_at: now + Duration::from_millis(limits::POOL_SHRINK_INTERVAL_MS),
            sweep_cursor: 0,
            shutting_down: false,
            drain_deadline: None,
            shutdown_timeout: Duration::from_millis(cfg.shutdown_timeout_ms),
            cancels: Vec::new(),
            slots,
            backends: vec![None; backends],
            backend_free: (0..backends as u32).rev().collect(),
            m2_ids: m2::Ids::default(),
            access_pending: Vec::new(),
            idle: IdleList::new(slots),
            overload_unlogged: (0, 0),
            overload_log_at: now,
            slot_metrics: vec![
                SlotMetrics {
                    class: CLASS_NONE,
                    ended: ENDED_NONE
                };
                slots
            ],
            out,
        }
    }

    /// Open connections (slots not yet released by `handle_closed`).
    #[cfg(any(test, feature = "harness"))]
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Client mode's outbound exchanges held.
    #[cfg(any(test, feature = "harness"))]
    pub fn out_count(&self) -> usize {
        self.out.conns.len()
    }

    /// The buffer pool's counters and its small buffers free now (count, bytes).
    #[cfg(any(test, feature = "harness"))]
    pub fn pool_counters(&self) -> (crate::conn::PoolCounters, (usize, usize)) {
        (self.pool.counters(), self.pool.small_free())
    }

    /// `Conn::buffered` of the slot's connection, if it holds one.
    #[cfg(any(test, feature = "harness"))]
    pub fn conn_buffered(&self, slot: u32) -> Option<(usize, usize)> {
        self.conns.get(slot as usize).map(Conn::buffered)
    }

    /// Backend slots in use.
    fn backends_used(&self) -> usize {
        self.backends.len() - self.backend_free.len()
    }

    /// The client slot a backend slot serves (`None`: not a backend slot, or orphaned).
    fn backend_client(&self, slot: u32) -> Option<Option<u32>> {
        let i = (slot as usize).checked_sub(self.slots)?;
        Some(
            self.backends
                .get(i)
                .copied()
                .flatten()
                .filter(|&c| self.conns.contains(c as usize)),
        )
    }

    /// Upper bound on slots, for the runtime's tables.
    pub fn slots_max(&self) -> u32 {
        (self.slots + self.backends.len() + self.out.slots) as u32
    }

    /// Runs `f` on the slot's connection with a context, then carries out what the
    /// connection asks (its outputs, in order; see `conn`'s contract) and re-arms its timer.
    /// `cause`: what this input is, which is why the connection ended if it ends now
    /// (`metrics::CloseReason`).
    fn with_conn(
        &mut self,
        now: Instant,
        slot: u32,
        cause: Cause,
        f: impl FnOnce(&mut Conn, &mut Ctx),
    ) {
        let mut out = std::mem::take(&mut self.outputs);
        let paused = self.shared.outbox_full();
        let stats = &self.shared.metrics.workers[self.index as usize];
        let errors_before = stats.protocol_errors_sum.get();
        let mut input = Some(f);
        // The backend slot answering an `Output::Backend`, for the next round.
        let mut answer: Option<Option<u32>> = None;
        // Bounded: the input runs once; a connection asks for a backend once per `Proxy`
        // request, and the answer's round asks for none.
        for round in 0..3 {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                panic!("event for free slot {slot}");
            };
            let mut cx = Ctx {
                now,
                settings: &self.settings,
                slot,
                pool: &mut self.pool,
                handlers: &mut self.handlers,
                counter: &mut self.counter,
                stats,
                out: &mut out,
            };
            match (input.take(), answer.take()) {
                (Some(f), _) => f(conn, &mut cx),
                (None, Some(bslot)) => conn.handle_backend_slot(&mut cx, bslot),
                (None, None) => break,
            }
            conn.flush(&mut cx, paused);
            for o in out.drain(..) {
                match o {
                    Output::Packet(p) => self.packets.push(p),
                    Output::Io(c) => {
                        count_sent(stats, self.slots, &c);
                        self.cmds.push_back(c)
                    }
                    Output::Backend(addr) => {
                        assert!(round < 2, "a connection asked for backends in a loop");
                        // At most one backend per client slot; backends also count against
                        // the connection limit (see `accepting`).
                        let b = self.backend_free.pop();
                        let bslot = b.map(|i| self.slots as u32 + i);
                        if let (Some(i), Some(bslot)) = (b, bslot) {
                            self.backends[i as usize] = Some(slot);
                            self.cmds.push_back(Command::Connect { slot: bslot, addr });
                            stats.connections[outbound_class().index()].add(1);
                        }
                        answer = Some(bslot);
                    }
                    Output::AccessLog { server, line } => {
                        access::queue(&mut self.access_pending, server, &line);
                        self.pool.give(line);
                    }
                    Output::Cancel(addr, counter, seq) => {
                        self.cancels.push(((*addr).clone(), counter, seq, slot));
                    }
                    Output::Resolve(_) => debug_assert!(false, "a server connection resolves"),
                }
            }
        }
        self.outputs = out;
        let conn = &self.conns[slot as usize];
        self.wheel.set(slot, conn.poll_timeout(&self.settings));
        let idle = conn.is_idle();
        self.idle
            .set(slot, self.modes[slot as usize] as usize, idle);
        let cause = match cause {
            // The client's input made zring answer with an error.
            Cause::Client if stats.protocol_errors_sum.get() != errors_before => {
                Cause::ProtocolError
            }
            c => c,
        };
        self.track_class(slot, Some(cause));
    }

    /// Moves the connections-by-class gauges when the slot's connection changed class, and
    /// records why it ended when it has just left `Open` (`cause`; `None`: at accept).
    fn track_class(&mut self, slot: u32, cause: Option<Cause>) {
        let class = self.conns[slot as usize].class();
        let entry = &mut self.slot_metrics[slot as usize];
        if entry.class == class.index() as u8 {
            return;
        }
        let stats = &self.shared.metrics.workers[self.index as usize];
        if entry.class != CLASS_NONE {
            stats.connections[entry.class as usize].add(-1);
        }
        stats.connections[class.index()].add(1);
        entry.class = class.index() as u8;
        if class.is_closing() && entry.ended == ENDED_NONE {
            entry.ended = cause.unwrap_or(Cause::Client) as u8;
        }
    }

    fn stats(&self) -> &WorkerStats {
        &self.shared.metrics.workers[self.index as usize]
    }

    /// A connection arrived while this worker holds its share of the mode's limit: close
    /// the oldest idle connection of that mode to make room (its slot frees once the close
    /// is done; the reserve covers the overlap), or, with none idle, have the new one
    /// answered `503`. Returns true when the new connection is to be refused that way.
    fn make_room(&mut self, now: Instant, m: usize) -> bool {
        let evicted = self.idle.pop_oldest(m);
        if let Some(old) = evicted {
            self.with_conn(now, old, Cause::Evicted, |c, cx| c.evict(cx));
            self.overload_unlogged.0 += 1;
        } else {
            self.overload_unlogged.1 += 1;
        }
        let inbox = &self.shared.inboxes[self.index as usize];
        match evicted {
            Some(_) => inbox.evicted_idle.fetch_add(1, Ordering::Relaxed),
            None => inbox.refused_503.fetch_add(1, Ordering::Relaxed),
        };
        if now >= self.overload_log_at {
            let (closed, refused) = std::mem::take(&mut self.overload_unlogged);
            crate::log!(
                crate::log::WARN,
                "conn",
                "worker {} at its connection limit ({} stream, {} req): closed {closed} idle \
                 connections, answered {refused} with 503 since the last such line",
                self.index,
                self.maxconn[0],
                self.maxconn[1]
            );
            self.overload_log_at = now + Duration::from_millis(limits::OVERLOAD_LOG_INTERVAL_MS);
        }
        evicted.is_none()
    }

    /// Dispatches inbox packets until the inbox is empty or `DISPATCH_TARGETS_PER_TURN_MAX`
    /// connections were handed one: a fan-out of any size goes out in bounded turns, so
    /// each turn's sends fit the rings' queues and other events are not held up.
    fn dispatch_inbox(&mut self, now: Instant) {
        let mut budget = limits::DISPATCH_TARGETS_PER_TURN_MAX;
        while budget > 0 {
            self.fail_gone_handlers(now);
            let Some(pkt) = self.inbox.pop_front() else {
                break;
            };
            if !self.dispatch(now, &pkt, &mut budget) {
                self.inbox.push_front(pkt); // cut short: the rest next turn
                break;
            }
            self.dispatched += 1;
            self.stats().inbox_dispatched.inc();
        }
        self.fail_gone_handlers(now);
    }

    /// Takes the bridge's handler-gone notices (one entry per handler: a later notice moves
    /// the mark of an earlier one).
    fn take_gone_notices(&mut self) {
        let inbox = &self.shared.inboxes[self.index as usize];
        let mut notices = inbox.gone.lock().unwrap();
        for (addr, mark) in notices.drain(..) {
            match self.gone.iter_mut().find(|(a, _)| *a == addr) {
                Some(e) => e.1 = mark,
                None => {
                    if self.gone.try_push((addr, mark)).is_err() {
                        crate::log!(
                            crate::log::WARN,
                            "worker",
                            "too many handlers gone at once; their sessions will expire"
                        );
                    }
                }
            }
        }
    }

    /// Fails the sessions of every gone handler whose notice is due: every packet the
    /// bridge queued before the notice has been dispatched, and none after it.
    fn fail_gone_handlers(&mut self, now: Instant) {
        // Bounded: each turn removes one notice.
        while let Some(i) = self.gone.iter().position(|&(_, m)| m <= self.dispatched) {
            let (addr, _) = self.gone.swap_remove(i);
            let mut slots = std::mem::take(&mut self.gone_slots);
            slots.clear();
            slots.extend(
                self.conns
                    .iter()
                    .filter(|(_, c)| c.handler_is(&addr))
                    .map(|(slot, _)| slot as u32),
            );
            crate::log!(
                crate::log::DEBUG,
                "worker",
                "handler {:?} gone: failing {} sessions",
                String::from_utf8_lossy(&addr),
                slots.len()
            );
            for &slot in &slots {
                self.with_conn(now, slot, Cause::Handler, |c, cx| {
                    c.handle_handler_gone(cx, &addr)
                });
            }
            self.gone_slots = slots;
        }
    }

    /// Hands `pkt` to this worker's connections it names, from `dispatch_pos` on, while
    /// `budget` lasts. True when the packet is done.
    fn dispatch(&mut self, now: Instant, pkt: &InPacket, budget: &mut usize) -> bool {
        let buf = pkt.buf();
        let pkt = HandlerPacket {
            packet: &pkt.packet,
            buf,
        };
        let ids = &pkt.packet.ids;
        // One frame for every target of a list-form data packet (built once per packet at
        // most, usually once per broadcast).
        let frame = match self.dispatch_pos {
            0 => SharedFrame::for_packet(pkt, &mut self.frame_cache),
            _ => self.frame_cache.clone().filter(|_| ids.len() > 1),
        };
        let frame = frame.filter(|_| pkt.packet.kind == Kind::Data);
        for (i, (id, seq)) in ids.iter().enumerate().skip(self.dispatch_pos) {
            let Some(ConnId {
                worker: w,
                slot,
                counter,
            }) = ConnId::parse(id.get(buf))
            else {
                continue;
            };
            if w != self.index {
                continue;
            }
            if *budget == 0 {
                self.dispatch_pos = i;
                return false;
            }
            *budget -= 1;
            let live = self
                .conns
                .get(slot as usize)
                .and_then(|c| c.session_counter());
            let fanout = ids.len() > 1;
            if live != Some(counter) {
                if fanout {
                    self.stats().fanout[FanoutOutcome::Dropped as usize].inc();
                }
                continue; // stale id: the session ended, the slot may hold another
            }
            let mut shared = false;
            match &frame {
                Some(f) => self.with_conn(now, slot, Cause::Handler, |c, cx| {
                    shared = c.handle_packet_shared(cx, pkt, seq, f)
                }),
                None => self.with_conn(now, slot, Cause::Handler, |c, cx| {
                    c.handle_packet(cx, pkt, seq)
                }),
            }
            if fanout {
                let outcome = match shared {
                    true => FanoutOutcome::Shared,
                    false => FanoutOutcome::Queued,
                };
                self.stats().fanout[outcome as usize].inc();
            }
        }
        self.dispatch_pos = 0;
        true
    }

    fn sweep_keep_alives(&mut self) {
        let steps = limits::KEEP_ALIVE_SWEEP_STEPS as usize;
        let per_step = self.slots.max(1).div_ceil(steps);
        // The cursor runs over `per_step * steps` positions (the tail past the last slot is
        // empty), so each step covers the same slots every round: every slot is visited
        // exactly once per `KEEP_ALIVE_INTERVAL_MS`, and neighbouring slots share a packet
        // whatever the number of slots.
        let cycle = per_step * steps;
        let mut batch = std::mem::take(&mut self.keep_alive_batch);
        batch.clear();
        for _ in 0..per_step {
            let slot = self.sweep_cursor;
            self.sweep_cursor = (self.sweep_cursor + 1) % cycle;
            if let Some(conn) = self.conns.get_mut(slot) {
                if let Some((addr, counter, seq)) = conn.keep_alive() {
                    batch.push((addr.clone(), counter, seq, slot as u32));
                }
            }
        }
        self.push_batched(&mut batch, Kind::KeepAlive);
        self.keep_alive_batch = batch;
    }

    /// `batch` as packets of `kind`: one per handler, at most 128 ids each (Condure's
    /// batching). Handlers are few, so the sort mostly meets equal keys. Empties `batch`.
    fn push_batched(&mut self, batch: &mut Vec<(Addr, u64, u32, u32)>, kind: Kind) {
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for group in batch.chunk_by(|a, b| a.0 == b.0) {
            for part in group.chunks(limits::PACKET_IDS_MAX) {
                self.shared.metrics.workers[self.index as usize].zhttp_out(kind);
                self.packets
                    .push(batched_packet(&self.settings, part, kind));
            }
        }
        batch.clear();
    }

    /// This turn's drain and shutdown cancels, batched per handler.
    fn flush_cancels(&mut self) {
        if self.cancels.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.cancels);
        self.push_batched(&mut batch, Kind::Cancel);
        self.cancels = batch;
    }

    /// Draining or shutting down: no more accepts; done once the last connection is.
    fn stopping(&self) -> bool {
        self.shutting_down || self.drain_deadline.is_some()
    }

    fn publish_load(&self) {
        self.shared.inboxes[self.index as usize]
            .conns
            .store(self.conns.len(), Ordering::Relaxed);
    }

    /// After an accept: if this worker is now far enough ahead to stand back (see
    /// `accepting`), wake the least loaded worker. It may have stood back itself earlier
    /// and be asleep with no accept armed; without this, nobody would accept until its
    /// next timer (the 100 ms sweep), capping a connection burst at a few hundred per
    /// second.
    fn wake_least_loaded(&self) {
        let mine = self.conns.len();
        let (least, count) = self
            .shared
            .inboxes
            .iter()
            .enumerate()
            .map(|(w, i)| (w, i.conns.load(Ordering::Relaxed)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((self.index as usize, mine));
        if least != self.index as usize && mine > count + limits::ACCEPT_BALANCE_SLACK {
            self.shared.inboxes[least].wake();
        }
    }

    /// The first SIGTERM: stop accepting, close what is idle, let exchanges with their
    /// handlers finish until `--shutdown-timeout` (`Conn::handle_drain`).
    fn start_drain(&mut self, now: Instant) {
        if self.drain_deadline.is_some() || self.shutting_down {
            return;
        }
        self.drain_deadline = Some(now + self.shutdown_timeout);
        self.out_close_idle(now);
        let slots: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
        for slot in slots {
            if !self.conns[slot as usize].is_closed() {
                self.with_conn(now, slot, Cause::Shutdown, |c, cx| c.handle_drain(cx));
            }
        }
        self.flush_cancels();
    }

    fn start_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.out_shutdown(now);
        let slots: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
        for slot in slots {
            if !self.conns[slot as usize].is_closed() {
                self.with_conn(now, slot, Cause::Shutdown, |c, cx| c.handle_shutdown(cx));
            }
        }
        self.flush_cancels();
    }
}

/// One packet of `kind` (keep-alive, cancel) for the ids of `part`, all of one handler: the
/// single-id form for one, the list form for more.
fn batched_packet(s: &Settings, part: &[(Addr, u64, u32, u32)], kind: Kind) -> OutPacket {
    let mut ids: arrayvec::ArrayVec<_, { limits::PACKET_IDS_MAX }> = arrayvec::ArrayVec::new();
    for &(_, counter, seq, slot) in part {
        let id = ConnId {
            worker: s.worker,
            slot,
            counter,
        };
        ids.push((id.encode(), seq));
    }
    let mut data = Vec::with_capacity(64 + 32 * ids.len());
    if ids.len() == 1 {
        zhttp::encode_control(&mut data, &s.instance_id, &ids[0].0, ids[0].1, kind);
    } else {
        let refs: arrayvec::ArrayVec<(&[u8], u32), { limits::PACKET_IDS_MAX }> =
            ids.iter().map(|(i, q)| (&i[..], *q)).collect();
        zhttp::encode_multi(&mut data, &s.instance_id, &refs, kind);
    }
    OutPacket {
        route: Route::Router(part[0].0.clone()),
        data,
        expires: None,
    }
}

/// Backend slots per worker: one per client slot when the Mongrel2 config has `Proxy`
/// routes (each client has at most one backend), else none.
fn backend_slots(m2: Option<&crate::m2serve::Setup>, client_slots: usize) -> usize {
    match m2 {
        Some(s) if !s.proxies.is_empty() => client_slots,
        _ => 0,
    }
}

impl Driver for Worker {
    fn handle_accept(
        &mut self,
        now: Instant,
        listener: usize,
        peer: Option<SocketAddr>,
    ) -> Option<u32> {
        let m = mode_index(self.listeners[listener].mode);
        if self.shutting_down || self.conns.len() + self.backends_used() >= self.slots {
            return None; // the reserve is used up too (`accepting` stops this early)
        }
        let refuse = self.count[m] >= self.maxconn[m] && self.make_room(now, m);
        let info = &self.listeners[listener];
        let conn = Conn::new(now, &self.settings, info.mode, info.tls.as_ref(), peer);
        let slot = self.conns.insert(conn) as u32;
        m2::on_accept(self, now, listener, slot);
        assert!(
            (slot as usize) < self.modes.len(),
            "slab grew past its preallocated size"
        );
        self.count[m] += 1;
        self.modes[slot as usize] = m as u8;
        self.stats().accepted[m].inc();
        self.track_class(slot, None);
        self.publish_load();
        self.wake_least_loaded();
        self.wheel
            .set(slot, self.conns[slot as usize].poll_timeout(&self.settings));
        if refuse {
            self.with_conn(now, slot, Cause::Overload, |c, cx| c.reject_overload(cx));
        } else if self.drain_deadline.is_some() {
            // Accepted during the drain (io_uring: an accept already in the kernel when
            // the drain began; its connection would be reset if closed now): its request
            // is served, the connection's last (a takeover's old process must not drop
            // what it accepted).
            self.with_conn(now, slot, Cause::Shutdown, |c, cx| c.handle_drain(cx));
        } else {
            self.idle.set(slot, m, self.conns[slot as usize].is_idle());
        }
        Some(slot)
    }

    fn handle_recv(&mut self, now: Instant, slot: u32, data: &mut [u8]) {
        if let Some(i) = self.out.index(slot) {
            self.stats().received_bytes[Peer::Backend as usize].add(data.len() as u64);
            return self.out_event(now, i, out::OutEvent::Recv(data));
        }
        let peer = match slot as usize >= self.slots {
            true => Peer::Backend,
            false => Peer::Client,
        };
        self.stats().received_bytes[peer as usize].add(data.len() as u64);
        if let Some(client) = self.backend_client(slot) {
            if let Some(c) = client {
                self.with_conn(now, c, Cause::Backend, |conn, cx| {
                    conn.handle_backend_recv(cx, slot, data)
                });
            }
            return;
        }
        self.with_conn(now, slot, Cause::Client, |c, cx| c.handle_recv(cx, data));
    }

    fn handle_eof(&mut self, now: Instant, slot: u32) {
        if let Some(i) = self.out.index(slot) {
            return self.out_event(now, i, out::OutEvent::Eof);
        }
        if let Some(client) = self.backend_client(slot) {
            if let Some(c) = client {
                self.with_conn(now, c, Cause::Backend, |conn, cx| {
                    conn.handle_backend_eof(cx, slot)
                });
            }
            return;
        }
        self.with_conn(now, slot, Cause::Client, |c, cx| c.handle_eof(cx));
    }

    fn handle_sent(&mut self, now: Instant, slot: u32, buf: Vec<u8>) {
        if let Some(i) = self.out.index(slot) {
            return self.out_event(now, i, out::OutEvent::Sent(buf));
        }
        if let Some(client) = self.backend_client(slot) {
            match client {
                Some(c) => self.with_conn(now, c, Cause::Backend, |conn, cx| {
                    conn.handle_backend_sent(cx, slot, buf)
                }),
                None => self.pool.give(buf),
            }
            return;
        }
        self.with_conn(now, slot, Cause::Complete, |c, cx| c.handle_sent(cx, buf));
    }

    fn handle_connected(&mut self, now: Instant, slot: u32, result: std::io::Result<()>) {
        if let Some(i) = self.out.index(slot) {
            if let Err(e) = &result {
                crate::log!(crate::log::DEBUG, "client", "connect: {e}");
            }
            return self.out_event(now, i, out::OutEvent::Connected(result.is_ok()));
        }
        if let Some(Some(c)) = self.backend_client(slot) {
            if let Err(e) = &result {
                crate::log!(crate::log::DEBUG, "m2", "proxy connect: {e}");
            }
            let ok = result.is_ok();
            self.with_conn(now, c, Cause::Backend, |conn, cx| {
                conn.handle_backend_connected(cx, slot, ok)
            });
        }
    }

    fn handle_runtime_stats(&mut self, r: RuntimeStats) {
        let stats = self.stats();
        stats.uring_submitted.set(r.submitted);
        stats.uring_completed.set(r.completed);
        stats.uring_cq_overflows.set(r.cq_overflows);
    }

    fn handle_closed(&mut self, now: Instant, slot: u32) {
        if let Some(i) = self.out.index(slot) {
            return self.out_event(now, i, out::OutEvent::Closed);
        }
        if let Some(i) = (slot as usize).checked_sub(self.slots) {
            self.backends[i] = None;
            self.backend_free.push(i as u32);
            self.stats().connections[outbound_class().index()].add(-1);
            return;
        }
        let conn = self.conns.remove(slot as usize);
        // Backend slots the connection did not get to close itself.
        for b in conn.backend_slots() {
            self.cmds.push_back(Command::Close { slot: b });
        }
        m2::on_closed(self, &conn);
        assert!(
            conn.is_closed(),
            "runtime closed slot {slot} the connection did not close"
        );
        self.wheel.set(slot, None);
        self.idle.remove(slot);
        let entry = std::mem::replace(
            &mut self.slot_metrics[slot as usize],
            SlotMetrics {
                class: CLASS_NONE,
                ended: ENDED_NONE,
            },
        );
        assert_ne!(
            entry.class, CLASS_NONE,
            "closed slot {slot} was never counted"
        );
        debug_assert_ne!(
            entry.ended, ENDED_NONE,
            "slot {slot} closed without a cause"
        );
        let stats = self.stats();
        stats.connections[entry.class as usize].add(-1);
        let ended = match entry.ended {
            ENDED_NONE => Cause::Client,
            e => Cause::from_index(e),
        };
        stats.closed[ended as usize].inc();
        let m = self.modes[slot as usize] as usize;
        assert!(self.count[m] > 0);
        self.count[m] -= 1;
        self.publish_load();
    }

    fn handle_wake(&mut self, now: Instant) {
        let inbox = &self.shared.inboxes[self.index as usize];
        // Cleared before looking at anything a wake-up announces (the inbox, `shutdown`):
        // a packet or shutdown request after this point wakes us again. Reading `shutdown`
        // first could miss main's request: its `wake` found the flag still set by a wake-up
        // already drained, wrote nothing, and the worker slept on with its connections.
        inbox.wake_pending.store(false, Ordering::SeqCst);
        if self.shared.shutdown.load(Ordering::SeqCst) {
            self.start_shutdown(now);
        } else if self.shared.drain.load(Ordering::SeqCst) {
            self.start_drain(now);
        }
        self.take_gone_notices();
        let inbox = &self.shared.inboxes[self.index as usize];
        let room = limits::INBOX_DRAIN_PACKETS_MAX.saturating_sub(self.inbox.len());
        if room > 0 {
            let mut q = inbox.queue.lock().unwrap();
            let n = q.len().min(room);
            self.inbox.extend(q.drain(..n));
        }
        self.dispatch_inbox(now);
        let inbox = &self.shared.inboxes[self.index as usize];
        if !self.inbox.is_empty() || !inbox.queue.lock().unwrap().is_empty() {
            // Come back for the rest after this turn's I/O, for fairness.
            inbox.wake();
        }
        m2::wake(self, now);
        self.out_wake(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.drain_deadline.is_some_and(|d| now >= d) && !self.shutting_down {
            let left = self.conns.len();
            crate::log!(
                crate::log::INFO,
                "worker",
                "worker {}: --shutdown-timeout reached, cutting {left} connections",
                self.index
            );
            self.start_shutdown(now);
        }
        self.wheel.expire(now, &mut self.due);
        let mut due = std::mem::take(&mut self.due);
        for &slot in &due {
            if let Some(i) = self.out.index(slot) {
                self.out_event(now, i, out::OutEvent::Timeout);
            } else if self.conns.contains(slot as usize) {
                self.with_conn(now, slot, Cause::Timeout, |c, cx| c.handle_timeout(cx));
            }
        }
        due.clear();
        self.due = due;
        if now >= self.sweep_at {
            self.sweep_at = now + SWEEP_STEP;
            if !self.conns.is_empty() {
                self.sweep_keep_alives();
            }
            self.out_sweep(now);
            if now >= self.shrink_at {
                self.shrink_at = now + Duration::from_millis(limits::POOL_SHRINK_INTERVAL_MS);
                // A fan-out's sealed records stay pooled while rounds keep coming; freed
                // here (before the trim gives their pages back) once they stop.
                self.pool.shrink();
            }
            if self.index == 0 && now >= self.trim_at {
                self.trim_at = now + Duration::from_millis(limits::MALLOC_TRIM_INTERVAL_MS);
                // A burst (thousands of handshakes, a fan-out) leaves freed packet buffers
                // in glibc's arenas, resident for good; give whole free pages back.
                // SAFETY: malloc_trim only releases memory the allocator holds free.
                unsafe { libc::malloc_trim(0) };
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let busy = !self.conns.is_empty() || !self.out.conns.is_empty();
        let sweep = busy.then_some(self.sweep_at);
        let drain = self.drain_deadline.filter(|_| !self.shutting_down);
        [self.wheel.next_deadline(), sweep, drain]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_command(&mut self) -> Option<Command> {
        let c = self.cmds.pop_front();
        if c.is_none() {
            self.flush_cancels();
            // End of the turn's commands: hand this turn's packets over in one batch.
            self.shared.send_batch(&mut self.packets);
            access::flush(self);
        }
        c
    }

    fn accepting(&self) -> bool {
        if self.stopping() || self.conns.len() + self.backends_used() >= self.slots {
            return false;
        }
        // Workers share each listener. The kernel hands a connection to whichever worker's
        // accept waits first, which can pile everything on one worker; so a worker stands
        // back while it is ahead of the least loaded one. The least loaded always accepts.
        let mine = self.conns.len();
        let least = self
            .shared
            .inboxes
            .iter()
            .map(|i| i.conns.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        mine <= least + limits::ACCEPT_BALANCE_SLACK
    }

    fn finished(&self) -> bool {
        self.stopping()
            && self.conns.is_empty()
            && self.backends_used() == 0
            && self.out.conns.is_empty()
    }
}

/// Starts worker `index` on its own thread: pins it, runs its runtime until shutdown, then
/// tells the bridge it is done.
pub fn spawn(
    index: usize,
    cfg: &Config,
    m2: Option<Arc<crate::m2serve::Setup>>,
    listeners: (Vec<std::os::fd::RawFd>, Vec<ListenerInfo>),
    shared: Arc<Shared>,
    kind: crate::runtime::Kind,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name(format!("worker-{index}"))
        .spawn(move || {
            if cfg.pin {
                pin_to_cpu(index);
            }
            let now = Instant::now();
            let mut worker = Worker::new(index, &cfg, m2, listeners.1, shared.clone(), now);
            let setup = crate::runtime::Setup {
                listeners: listeners.0,
                wake_fd: shared.inboxes[index].wake.fd(),
                slots_max: worker.slots_max(),
                files_per_ring: files_per_ring_override(),
            };
            if let Err(e) = crate::runtime::run(kind, setup, &mut worker) {
                crate::log!(
                    crate::log::ERROR,
                    "worker",
                    "worker {index} runtime failed: {e}"
                );
                std::process::exit(1);
            }
            // Hand over the last packets (cancels) before reporting done.
            worker.flush_cancels();
            shared.send_batch(&mut worker.packets);
            shared.workers_done.fetch_add(1, Ordering::SeqCst);
            shared.wake_bridge();
        })
}

/// `ZRING_URING_FILES_PER_RING`: connections per io_uring ring (default: the soft
/// `RLIMIT_NOFILE`, the kernel's cap). For tests that spread a few hundred connections over
/// several rings, and for trying smaller rings; not a setting production needs.
fn files_per_ring_override() -> Option<u32> {
    let value = std::env::var("ZRING_URING_FILES_PER_RING").ok()?;
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            crate::log!(
                crate::log::WARN,
                "worker",
                "ignoring ZRING_URING_FILES_PER_RING={value:?} (want a positive integer)"
            );
            None
        }
    }
}

fn pin_to_cpu(index: usize) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // SAFETY: cpu_set_t is plain data; the calls only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(index % cpus, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
