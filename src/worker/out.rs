//! Client mode in the worker: outbound exchanges (`conn::out::OutConn`) on runtime slots
//! `Out::base ..`, the (`from`, `id`) → slot table, requester packets and resolver answers
//! from the inbox, and the batched keep-alive sweep. The worker routes; `conn::out` decides.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::Worker;
use crate::bridge::client::ClientIn;
use crate::bridge::{Addr, OutPacket, Route};
use crate::conn::out::{OutConn, Via};
use crate::conn::{Ctx, Output};
use crate::limits;
use crate::proto::zhttp::Kind;
use crate::proto::zhttp_client as zc;

/// A worker's outbound exchanges.
pub struct Out {
    /// Runtime slot of exchange 0.
    pub base: usize,
    pub max: usize,
    pub conns: Slab<OutConn>,
    /// Stream sessions by (`from`, `id`).
    sessions: HashMap<(Addr, Addr), u32>,
    sweep_cursor: usize,
}

impl Out {
    pub fn new(base: usize, max: usize) -> Out {
        Out {
            base,
            max,
            conns: Slab::with_capacity(max),
            sessions: HashMap::with_capacity(max),
            sweep_cursor: 0,
        }
    }

    /// The exchange index of runtime slot `slot`, if it is an outbound one.
    pub fn index(&self, slot: u32) -> Option<u32> {
        let i = (slot as usize).checked_sub(self.base)?;
        (i < self.max).then_some(i as u32)
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
        let mut out = std::mem::take(&mut self.outputs);
        let stats = &self.shared.metrics.workers[self.index as usize];
        let conn = &mut self.out.conns[i as usize];
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
        if !done {
            conn.flush(&mut cx);
            done = conn.is_released();
        }
        let deadline = conn.poll_timeout(&self.settings);
        self.carry_out(&mut out);
        self.outputs = out;
        if done {
            let conn = self.out.conns.remove(i as usize);
            let (from, id) = conn.key();
            if self.out.sessions.get(&(from.clone(), id.clone())) == Some(&i) {
                self.out.sessions.remove(&(from.clone(), id.clone()));
            }
            self.wheel.set(slot, None);
        } else {
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
            if self.out.conns.get(i as usize).map(|c| c.token()) != Some(a.token) {
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
        if self.out.conns.len() >= self.out.max || self.stopping() {
            self.out_refuse(now, p);
            return;
        }
        let entry = self.out.conns.vacant_entry();
        let i = entry.key() as u32;
        let slot = (self.out.base + i as usize) as u32;
        let mut out = std::mem::take(&mut self.outputs);
        let stats = &self.shared.metrics.workers[self.index as usize];
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
        let started = OutConn::start(&mut cx, &p.packet, buf, p.via.clone());
        if let Some(mut conn) = started {
            conn.flush(&mut cx);
            let deadline = conn.poll_timeout(&self.settings);
            entry.insert(conn);
            self.wheel.set(slot, deadline);
            if let (true, Some(key)) = (stream, key) {
                self.out.sessions.insert(key, i);
            }
        }
        self.carry_out(&mut out);
        self.outputs = out;
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
            let Some(c) = self.out.conns.get_mut(i) else {
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

    /// zring is stopping now: every exchange sends `cancel` and closes.
    pub(super) fn out_shutdown(&mut self, now: Instant) {
        let all: Vec<u32> = self.out.conns.iter().map(|(i, _)| i as u32).collect();
        for i in all {
            self.with_out(now, i, |c, cx| {
                c.handle_shutdown(cx);
                false
            });
        }
    }

    /// A runtime event for an outbound slot.
    pub(super) fn out_event(&mut self, now: Instant, i: u32, ev: OutEvent<'_>) {
        if !self.out.conns.contains(i as usize) {
            if let OutEvent::Sent(buf) = ev {
                self.pool.give(buf);
            }
            return;
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

fn route_key(r: &Route) -> (u8, &[u8]) {
    match r {
        Route::Pub(a) => (0, a),
        Route::ClientRouter(a) => (1, a),
        _ => (2, &[]),
    }
}
