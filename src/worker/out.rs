//! Client mode in the worker: outbound exchanges (`conn::out::OutConn`) and the idle
//! connections of its pool (`conn::out::pool::IdleConn`) on runtime slots `Out::base ..`,
//! the (`from`, `id`) → slot table, requester packets and resolver answers from the inbox,
//! and the batched keep-alive sweep. The worker routes; `conn::out` decides.
//!
//! A finished exchange whose connection may serve again becomes an idle entry on the same
//! slot; a new exchange with the same pool key starts on that slot (the entry turns back
//! into an exchange), so a connection never changes slots.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::Worker;
use crate::bridge::client::ClientIn;
use crate::bridge::{Addr, OutPacket, Route};
use crate::conn::out::pool::{IdleConn, Index};
use crate::conn::out::{OutConn, Via};
use crate::conn::{Ctx, Output};
use crate::limits;
use crate::metrics::{ConnClass, ConnState, Protocol};
use crate::proto::zhttp::Kind;
use crate::proto::zhttp_client as zc;

/// An outbound slot's occupant. The slab holds entries inline, allocated once: boxing the
/// exchange would shrink idle entries but cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Entry {
    Busy(OutConn),
    Idle(IdleConn),
}

/// A worker's outbound exchanges and idle pooled connections.
pub struct Out {
    /// Runtime slot of entry 0.
    pub base: usize,
    /// Exchanges at once, at most (the worker's share of the maxconns).
    pub max: usize,
    /// Entries at most: `max` plus the pool's bound.
    pub slots: usize,
    pub conns: Slab<Entry>,
    /// Exchanges among `conns`.
    busy: usize,
    /// Idle connections by pool key.
    idle: Index,
    /// Stream sessions by (`from`, `id`).
    sessions: HashMap<(Addr, Addr), u32>,
    sweep_cursor: usize,
    /// Per entry: `ConnClass::index` as last counted in the gauges, or `CLASS_NONE`.
    classes: Vec<u8>,
}

const CLASS_NONE: u8 = u8::MAX;

impl Out {
    pub fn new(base: usize, max: usize) -> Out {
        let slots = match max {
            0 => 0,
            _ => max + limits::OUT_POOL_IDLE_PER_WORKER_MAX,
        };
        Out {
            base,
            max,
            slots,
            conns: Slab::with_capacity(slots),
            busy: 0,
            idle: Index::default(),
            sessions: HashMap::with_capacity(max),
            sweep_cursor: 0,
            classes: vec![CLASS_NONE; slots],
        }
    }

    /// The entry index of runtime slot `slot`, if it is an outbound one.
    pub fn index(&self, slot: u32) -> Option<u32> {
        let i = (slot as usize).checked_sub(self.base)?;
        (i < self.slots).then_some(i as u32)
    }
}

/// Outbound slots per worker: its share of `--stream-maxconn` with `--zserver-stream`, plus
/// its share of `--req-maxconn` with `--zserver-req`.
pub fn slots(cfg: &crate::config::Config) -> usize {
    let share = |n: usize| n.div_ceil(cfg.workers).max(1);
    let stream = match cfg.zserver_stream.is_empty() {
        true => 0,
        false => share(cfg.stream_maxconn),
    };
    let req = match cfg.zserver_req.is_empty() {
        true => 0,
        false => share(cfg.req_maxconn),
    };
    stream + req
}

impl Worker {
    /// Runs `f` on exchange `i` with a context, then carries out its outputs and re-arms its
    /// timer; frees it when `f` says it is over.
    pub(super) fn with_out(
        &mut self,
        now: Instant,
        i: u32,
        f: impl FnOnce(&mut OutConn, &mut Ctx) -> bool,
    ) {
        let slot = (self.out.base + i as usize) as u32;
        let stopping = self.stopping();
        let mut out = std::mem::take(&mut self.outputs);
        let stats = &self.shared.metrics.workers[self.index as usize];
        let Some(Entry::Busy(conn)) = self.out.conns.get_mut(i as usize) else {
            return;
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
        let mut done = f(conn, &mut cx);
        let mut parked = None;
        if !done {
            conn.flush(&mut cx);
            done = conn.is_released();
            parked = conn.park();
        }
        let class = conn.class();
        let deadline = conn.poll_timeout(&self.settings);
        if let Some(p) = parked {
            // The connection outlives the exchange: an idle entry on the same slot.
            let mut idle = IdleConn::new(p, now);
            if stopping || !self.out.idle.push(idle.key(), i) {
                idle.close(&mut cx, false);
            }
            self.carry_out(&mut out);
            self.outputs = out;
            self.out_forget(i);
            self.out.busy -= 1;
            let deadline = idle.poll_timeout();
            self.count_out(i, Some(idle_class(&idle)));
            self.out.conns[i as usize] = Entry::Idle(idle);
            self.wheel.set(slot, deadline);
            return;
        }
        self.carry_out(&mut out);
        self.outputs = out;
        if done {
            self.out_forget(i);
            self.out.conns.remove(i as usize);
            self.out.busy -= 1;
            self.count_out(i, None);
            self.wheel.set(slot, None);
        } else {
            self.count_out(i, class.map(busy_class));
            self.wheel.set(slot, deadline);
        }
    }

    /// Drops exchange `i` from the (`from`, `id`) table.
    fn out_forget(&mut self, i: u32) {
        let Some(Entry::Busy(conn)) = self.out.conns.get(i as usize) else {
            return;
        };
        let (from, id) = conn.key();
        let key = (from.clone(), id.clone());
        if self.out.sessions.get(&key) == Some(&i) {
            self.out.sessions.remove(&key);
        }
    }

    /// Moves entry `i`'s gauge from what it was counted as to `class`.
    fn count_out(&mut self, i: u32, class: Option<ConnClass>) {
        let new = class.map_or(CLASS_NONE, |c| c.index() as u8);
        let old = std::mem::replace(&mut self.out.classes[i as usize], new);
        if old == new {
            return;
        }
        let stats = &self.shared.metrics.workers[self.index as usize];
        if old != CLASS_NONE {
            stats.connections[old as usize].add(-1);
        }
        if new != CLASS_NONE {
            stats.connections[new as usize].add(1);
        }
    }

    /// Runs `f` on idle entry `i` with a context; frees the entry when `f` says it closed.
    fn with_idle(&mut self, now: Instant, i: u32, f: impl FnOnce(&mut IdleConn, &mut Ctx) -> bool) {
        let slot = (self.out.base + i as usize) as u32;
        let mut out = std::mem::take(&mut self.outputs);
        let stats = &self.shared.metrics.workers[self.index as usize];
        let Some(Entry::Idle(idle)) = self.out.conns.get_mut(i as usize) else {
            return;
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
        let was_idle = idle.is_idle();
        let closed = f(idle, &mut cx);
        let key = (was_idle && !idle.is_idle()).then(|| idle.key().clone());
        let class = idle_class(idle);
        let deadline = idle.poll_timeout();
        self.carry_out(&mut out);
        self.outputs = out;
        if let Some(key) = key {
            self.out.idle.remove(&key, i);
        }
        if closed {
            self.out.conns.remove(i as usize);
            self.count_out(i, None);
            self.wheel.set(slot, None);
        } else {
            self.count_out(i, Some(class));
            self.wheel.set(slot, deadline);
        }
    }

    /// Carries out an outbound exchange's outputs.
    fn carry_out(&mut self, out: &mut Vec<Output>) {
        for o in out.drain(..) {
            match o {
                Output::Packet(p) => self.packets.push(p),
                Output::Io(c) => self.cmds.push_back(c),
                Output::Resolve(q) => {
                    let (slot, token) = (q.slot, q.token);
                    if !self.shared.resolver.submit(q) {
                        crate::log!(crate::log::WARN, "client", "DNS queue full");
                        // Answered as a name that does not resolve, next wake-up.
                        let inbox = &self.shared.inboxes[self.index as usize];
                        inbox
                            .resolved
                            .lock()
                            .unwrap()
                            .push(crate::resolver::Answer {
                                slot,
                                token,
                                addrs: Default::default(),
                            });
                        inbox.wake();
                    }
                }
                other => debug_assert!(false, "outbound exchange output {other:?}"),
            }
        }
    }

    /// Takes the requester packets and resolver answers the bridge and resolvers queued.
    pub(super) fn out_wake(&mut self, now: Instant) {
        let inbox = &self.shared.inboxes[self.index as usize];
        let answers = std::mem::take(&mut *inbox.resolved.lock().unwrap());
        for a in answers {
            let Some(i) = self.out.index(a.slot) else {
                continue;
            };
            let token = match self.out.conns.get(i as usize) {
                Some(Entry::Busy(c)) => Some(c.token()),
                _ => None,
            };
            if token != Some(a.token) {
                continue; // that session is gone
            }
            self.with_out(now, i, |c, cx| {
                c.handle_resolved(cx, &a.addrs);
                false
            });
        }
        // Bounded: at most the inbox bound per wake-up; more wakes again.
        let inbox = &self.shared.inboxes[self.index as usize];
        let batch: Vec<Arc<ClientIn>> = {
            let mut q = inbox.client.lock().unwrap();
            let n = q.len().min(limits::INBOX_DRAIN_PACKETS_MAX);
            q.drain(..n).collect()
        };
        let more = !inbox.client.lock().unwrap().is_empty();
        for p in batch {
            self.out_packet(now, &p);
        }
        if more {
            self.shared.inboxes[self.index as usize].wake();
        }
    }

    fn out_packet(&mut self, now: Instant, p: &ClientIn) {
        let buf = p.buf();
        let pkt = &p.packet;
        let from = pkt.from.map_or(&b""[..], |f| f.get(buf));
        let Ok(from) = Addr::try_from(from) else {
            return;
        };
        if p.first && pkt.kind.get() == Kind::Data {
            self.out_start(now, p, from);
            return;
        }
        let Some(ids) = &pkt.ids else { return };
        let workers = self.shared.inboxes.len();
        for (id, seq) in ids.iter() {
            let id = id.get(buf);
            if crate::bridge::client::worker_of(&from, id, workers) != self.index as usize {
                continue;
            }
            let Ok(id) = Addr::try_from(id) else { continue };
            let Some(&i) = self.out.sessions.get(&(from.clone(), id)) else {
                // pushpin-connmgr drops a packet for an unknown session silently.
                continue;
            };
            self.with_out(now, i, |c, cx| {
                c.handle_packet(cx, pkt, buf, seq);
                false
            });
        }
    }

    fn out_start(&mut self, now: Instant, p: &ClientIn, from: Addr) {
        let buf = p.buf();
        let key = p
            .packet
            .single_id()
            .and_then(|(id, _)| Addr::try_from(id.get(buf)).ok())
            .map(|id| (from, id));
        let stream = matches!(p.via, Via::Stream);
        if stream
            && key
                .as_ref()
                .is_none_or(|k| self.out.sessions.contains_key(k))
        {
            return; // no single id, or "session id in use" (pushpin-connmgr)
        }
        if self.out.busy >= self.out.max || self.stopping() {
            self.out_refuse(now, p);
            return;
        }
        let fresh = self.out.conns.vacant_key();
        if fresh >= self.out.slots {
            // Every slot holds an exchange or a closing idle connection.
            self.out_refuse(now, p);
            return;
        }
        let mut out = std::mem::take(&mut self.outputs);
        let started = {
            let mut cx = self.out_ctx(now, fresh as u32, &mut out);
            OutConn::start(&mut cx, &p.packet, buf, p.via.clone())
        };
        self.carry_out(&mut out);
        let Some(mut conn) = started else {
            self.outputs = out;
            return;
        };
        // A pooled connection with the same key whose address this request allows.
        let pool_key = conn.pool_key();
        let conns = &self.out.conns;
        let settings = &self.settings;
        let taken = match conn.takes_pooled() {
            true => self
                .out
                .idle
                .pop(&pool_key, |j| match conns.get(j as usize) {
                    Some(Entry::Idle(idle)) => idle.is_idle() && conn.allows(settings, idle.peer()),
                    _ => false,
                }),
            false => None,
        };
        let (i, parked) = match taken {
            Some(j) => match self.out.conns.remove(j as usize) {
                Entry::Idle(idle) => (j, Some(idle.take())),
                Entry::Busy(_) => unreachable!("the pool index names idle entries only"),
            },
            None => (fresh as u32, None),
        };
        let slot = (self.out.base + i as usize) as u32;
        let begun = {
            let mut cx = self.out_ctx(now, i, &mut out);
            let ok = conn.begin(&mut cx, parked);
            if ok {
                conn.flush(&mut cx);
            }
            ok && !conn.is_released()
        };
        self.carry_out(&mut out);
        self.outputs = out;
        if !begun {
            if taken.is_some() {
                self.count_out(i, None);
                self.wheel.set(slot, None);
            }
            return;
        }
        let deadline = conn.poll_timeout(&self.settings);
        let class = conn.class();
        let at = self.out.conns.insert(Entry::Busy(conn));
        assert_eq!(at, i as usize, "an exchange takes the slot it began on");
        self.out.busy += 1;
        self.count_out(i, class.map(busy_class));
        self.wheel.set(slot, deadline);
        if let (true, Some(key)) = (stream, key) {
            self.out.sessions.insert(key, i);
        }
    }

    fn out_ctx<'a>(&'a mut self, now: Instant, i: u32, out: &'a mut Vec<Output>) -> Ctx<'a> {
        Ctx {
            now,
            settings: &self.settings,
            slot: (self.out.base + i as usize) as u32,
            pool: &mut self.pool,
            handlers: &mut self.handlers,
            counter: &mut self.counter,
            stats: &self.shared.metrics.workers[self.index as usize],
            out,
        }
    }

    /// At the limit (or stopping): the request gets `error` at once, not a slot.
    fn out_refuse(&mut self, _now: Instant, p: &ClientIn) {
        let buf = p.buf();
        let id = p.packet.single_id().map(|(id, _)| id.get(buf));
        let mut data = Vec::new();
        let stream = matches!(p.via, Via::Stream);
        let reply = zc::Reply {
            from: if stream {
                &self.settings.instance_id
            } else {
                b""
            },
            id,
            seq: stream.then_some(0),
            ext: stream,
            user_data: p.packet.user_data.map(|u| u.get(buf)),
        };
        zc::encode_error(&mut data, &reply, b"undefined-condition");
        let from = p.packet.from.map_or(&b""[..], |f| f.get(buf));
        let route = match &p.via {
            Via::Req(env) => Route::ClientReq(env.clone()),
            Via::Stream if from.is_empty() => return,
            Via::Stream => match Addr::try_from(from) {
                Ok(a) if p.packet.router_resp => Route::ClientRouter(a),
                Ok(a) => Route::Pub(a),
                Err(_) => return,
            },
        };
        crate::log!(
            crate::log::WARN,
            "client",
            "at the outbound limit: request refused"
        );
        self.packets.push(OutPacket {
            route,
            data,
            expires: None,
        });
    }

    /// One step of the keep-alive sweep over the outbound exchanges: each is visited twice
    /// per `KEEP_ALIVE_INTERVAL_MS` (every `KEEP_ALIVE_SWEEP_STEPS / 2` steps); what is due
    /// goes out batched per requester (list form, up to `PACKET_IDS_MAX` ids) when the
    /// requester takes it.
    pub(super) fn out_sweep(&mut self, now: Instant) {
        if self.out.conns.is_empty() {
            return;
        }
        // Twice per interval (see `OutConn::keep_alive`).
        let steps = limits::KEEP_ALIVE_SWEEP_STEPS as usize / 2;
        let per_step = self.out.max.max(1).div_ceil(steps);
        let cycle = per_step * steps;
        let mut batch: Vec<(Route, Addr, u32)> = Vec::new();
        for _ in 0..per_step {
            let i = self.out.sweep_cursor;
            self.out.sweep_cursor = (i + 1) % cycle;
            let Some(Entry::Busy(c)) = self.out.conns.get_mut(i) else {
                continue;
            };
            let Some(k) = c.keep_alive(&self.settings, now) else {
                continue;
            };
            if k.multi {
                batch.push((k.route, k.id, k.seq));
            } else {
                let mut data = Vec::new();
                c.encode_keep_alive(&self.settings, &mut data, k.seq);
                self.packets.push(OutPacket {
                    route: k.route,
                    data,
                    expires: None,
                });
            }
        }
        batch.sort_by(|a, b| route_key(&a.0).cmp(&route_key(&b.0)));
        for group in batch.chunk_by(|a, b| route_key(&a.0) == route_key(&b.0)) {
            for part in group.chunks(limits::PACKET_IDS_MAX) {
                let ids: Vec<(&[u8], u32)> = part.iter().map(|(_, id, s)| (&id[..], *s)).collect();
                let mut data = Vec::new();
                crate::proto::zhttp::encode_multi(
                    &mut data,
                    &self.settings.instance_id,
                    &ids,
                    Kind::KeepAlive,
                );
                self.packets.push(OutPacket {
                    route: part[0].0.clone(),
                    data,
                    expires: None,
                });
            }
        }
    }

    /// Draining: the pool's idle connections close (exchanges finish first).
    pub(super) fn out_close_idle(&mut self, now: Instant) {
        let idle: Vec<u32> = self
            .out
            .conns
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Idle(_)))
            .map(|(i, _)| i as u32)
            .collect();
        for i in idle {
            self.with_idle(now, i, |c, cx| {
                c.close(cx, false);
                false
            });
        }
    }

    /// zring is stopping now: every exchange sends `cancel` and closes.
    pub(super) fn out_shutdown(&mut self, now: Instant) {
        let all: Vec<u32> = self.out.conns.iter().map(|(i, _)| i as u32).collect();
        for i in all {
            match self.out.conns[i as usize] {
                Entry::Busy(_) => self.with_out(now, i, |c, cx| {
                    c.handle_shutdown(cx);
                    false
                }),
                Entry::Idle(_) => self.with_idle(now, i, |c, cx| {
                    c.close(cx, false);
                    false
                }),
            }
        }
    }

    /// A runtime event for an outbound slot.
    pub(super) fn out_event(&mut self, now: Instant, i: u32, ev: OutEvent<'_>) {
        match self.out.conns.get(i as usize) {
            Some(Entry::Busy(_)) => {}
            Some(Entry::Idle(_)) => return self.idle_event(now, i, ev),
            None => {
                if let OutEvent::Sent(buf) = ev {
                    self.pool.give(buf);
                }
                return;
            }
        }
        self.with_out(now, i, |c, cx| match ev {
            OutEvent::Recv(d) => {
                c.handle_recv(cx, d);
                false
            }
            OutEvent::Eof => {
                c.handle_eof(cx);
                false
            }
            OutEvent::Sent(buf) => {
                c.handle_sent(cx, buf);
                false
            }
            OutEvent::Connected(ok) => {
                c.handle_connected(cx, ok);
                false
            }
            OutEvent::Closed => c.handle_closed(cx),
            OutEvent::Timeout => {
                c.handle_timeout(cx);
                false
            }
        });
    }
}

/// A runtime event for an outbound exchange.
pub(super) enum OutEvent<'a> {
    Recv(&'a mut [u8]),
    Eof,
    Sent(Vec<u8>),
    Connected(bool),
    Closed,
    Timeout,
}

/// An exchange's connection as the gauges count it.
fn busy_class((tls, state): (bool, ConnState)) -> ConnClass {
    ConnClass::new(Protocol::Outbound, tls, state)
}

fn idle_class(idle: &IdleConn) -> ConnClass {
    let state = match idle.is_closing() {
        true => ConnState::Closing,
        false => ConnState::Idle,
    };
    ConnClass::new(Protocol::Outbound, idle.is_tls(), state)
}

impl Worker {
    /// A runtime event for an idle pooled connection.
    fn idle_event(&mut self, now: Instant, i: u32, ev: OutEvent<'_>) {
        self.with_idle(now, i, |c, cx| match ev {
            OutEvent::Recv(_) => {
                c.handle_recv(cx);
                false
            }
            OutEvent::Eof => {
                c.handle_eof(cx);
                false
            }
            OutEvent::Sent(buf) => {
                c.handle_sent(cx, buf);
                false
            }
            OutEvent::Connected(_) => false,
            OutEvent::Closed => true,
            OutEvent::Timeout => {
                c.handle_timeout(cx);
                false
            }
        });
    }
}

fn route_key(r: &Route) -> (u8, &[u8]) {
    match r {
        Route::Pub(a) => (0, a),
        Route::ClientRouter(a) => (1, a),
        _ => (2, &[]),
    }
}
