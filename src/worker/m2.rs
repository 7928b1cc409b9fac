//! The worker's Mongrel2 half: connection ids and the delivery of handler replies.
//!
//! Ids are `n * workers + worker` (so the bridge knows a reply's worker from the id alone),
//! at most `i32::MAX` (Mongrel2 prints them with `%d`), unique among this worker's open
//! connections, and never reused before the counter wraps. The id → slot table is the
//! worker's own (`Worker::m2_ids`).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::Worker;
use crate::bridge::m2::{M2In, ReplyKind};
use crate::bridge::m2control::{Answer, Ask};
use crate::bridge::{OutPacket, Route};
use crate::conn::Conn;
use crate::limits;
use crate::metrics::CloseReason as Cause;
use crate::proto::m2::control::encode_net_row;
use crate::proto::m2::notice::encode_disconnect;

/// Mongrel2 connection id → slot, for the worker's open connections.
#[derive(Default)]
pub(super) struct Ids {
    slots: HashMap<u32, u32>,
    next: u32,
    /// A `status what=net` table being built (`control_turn`).
    snapshot: Option<Snapshot>,
}

/// This worker's part of a `status what=net` table, built over several turns.
struct Snapshot {
    server: u16,
    /// The next slot to look at.
    cursor: usize,
    /// Rendered rows so far.
    rows: Vec<u8>,
}

/// Slots one turn looks at for a `status what=net` table: at 20,000 connections a worker
/// answers within 5 turns, and no turn does more than this many small row writes.
const SNAPSHOT_SLOTS_PER_TURN: usize = 4096;

/// A new connection on `listener` got `slot`: give it its server and id.
pub(super) fn on_accept(w: &mut Worker, now: Instant, listener: usize, slot: u32) {
    let Some(setup) = w.settings.m2.clone() else {
        return;
    };
    let workers = setup.workers.max(1);
    let server = setup.listener_server.get(listener).copied().unwrap_or(0);
    let ids = &mut w.m2_ids;
    let id = loop {
        ids.next = ids.next.wrapping_add(1);
        let id = u64::from(ids.next) * u64::from(workers) + u64::from(w.index);
        if id > i32::MAX as u64 {
            ids.next = 0;
            continue;
        }
        let id = id as u32;
        if let std::collections::hash_map::Entry::Vacant(e) = ids.slots.entry(id) {
            e.insert(slot);
            break id;
        }
    };
    let now_ms = now.saturating_duration_since(w.settings.epoch).as_millis() as u64;
    w.conns[slot as usize].m2_attach(&setup, server, id, now_ms);
}

/// The slot's connection is gone: its id names nobody now.
pub(super) fn on_closed(w: &mut Worker, conn: &Conn) {
    if let Some(id) = conn.m2_id() {
        w.m2_ids.slots.remove(&id);
    }
}

/// Takes a reloaded setup (SIGHUP) for the connections accepted from now on, then delivers
/// the replies the bridge queued for this worker. The setup comes first: a reply from a
/// handler the reload added is queued only after the bridge has handed the setup out.
pub(super) fn wake(w: &mut Worker, now: Instant) {
    let inbox = &w.shared.inboxes[w.index as usize];
    if inbox
        .m2_setup_pending
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        if let Some(setup) = inbox.m2_setup.lock().unwrap().take() {
            w.settings.m2 = Some(setup);
        }
    }
    let Some(setup) = w.settings.m2.clone() else {
        return;
    };
    control_turn(w, now);
    let batch: Vec<Arc<M2In>> = {
        let inbox = &w.shared.inboxes[w.index as usize];
        let mut q = inbox.m2.lock().unwrap();
        let n = q.len().min(limits::INBOX_DRAIN_PACKETS_MAX);
        let batch = q.drain(..n).collect();
        if !q.is_empty() {
            inbox.wake();
        }
        batch
    };
    let workers = setup.workers.max(1);
    for pkt in batch {
        for &id in &pkt.ids {
            if id % workers != u32::from(w.index) {
                continue;
            }
            match w.m2_ids.slots.get(&id).copied() {
                Some(slot) if w.conns.contains(slot as usize) => {
                    w.with_conn(now, slot, Cause::Handler, |c, cx| {
                        c.handle_m2_reply(cx, pkt.kind, pkt.body())
                    });
                }
                _ => {
                    // Mongrel2 answers a reply to a closed or unknown id with a disconnect
                    // notice, except for a cancel.
                    if matches!(pkt.kind, ReplyKind::Control(c) if c.cancel) {
                        continue;
                    }
                    let Some(h) = setup.handlers.get(pkt.handler as usize) else {
                        continue;
                    };
                    let mut data = Vec::with_capacity(96);
                    encode_disconnect(&mut data, h.send_ident.as_bytes(), id as i32, h.protocol);
                    w.packets.push(OutPacket {
                        route: Route::M2(pkt.handler),
                        data,
                        expires: None,
                    });
                }
            }
        }
    }
}

/// The control port's requests (`bridge::m2control`): a `kill` is done at once; a
/// `status what=net` table is built `SNAPSHOT_SLOTS_PER_TURN` slots a turn (the worker wakes
/// itself for the rest), then posted. Either answer wakes the bridge.
fn control_turn(w: &mut Worker, now: Instant) {
    let index = w.index as usize;
    let shared = Arc::clone(&w.shared);
    let inbox = &shared.inboxes[index];
    if inbox
        .m2_ask_pending
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        match inbox.m2_ask.lock().unwrap().take() {
            Some(Ask::Kill { server, id }) => {
                let found = kill(w, now, server, id);
                *inbox.m2_answer.lock().unwrap() = Some(Answer::Kill(found));
                shared.wake_bridge();
            }
            Some(Ask::Net { server }) => {
                w.m2_ids.snapshot = Some(Snapshot {
                    server,
                    cursor: 0,
                    rows: Vec::new(),
                });
            }
            None => {}
        }
    }
    let Some(mut snap) = w.m2_ids.snapshot.take() else {
        return;
    };
    let now_ms = now.saturating_duration_since(w.settings.epoch).as_millis() as u64;
    let workers = w.settings.m2.as_ref().map_or(1, |s| s.workers.max(1)) as usize;
    let end = (snap.cursor + SNAPSHOT_SLOTS_PER_TURN).min(w.slots);
    for slot in snap.cursor..end {
        let Some(conn) = w.conns.get(slot) else {
            continue;
        };
        // Mongrel2's fd column: zring's slot, made unique across workers.
        let fd = (slot * workers + index) as i64;
        if let Some((server, row)) = conn.m2_net_row(now_ms, fd) {
            if server == snap.server && !conn.is_closed() {
                encode_net_row(&mut snap.rows, &row);
            }
        }
    }
    snap.cursor = end;
    if end < w.slots {
        w.m2_ids.snapshot = Some(snap);
        inbox.wake(); // the rest next turn, after this turn's I/O
        return;
    }
    *inbox.m2_answer.lock().unwrap() = Some(Answer::Net(snap.rows));
    shared.wake_bridge();
}

/// `kill id=N`: closes the connection as Mongrel2's `Register_disconnect` does (no
/// disconnect notice). False when no open connection of `server` has that id.
fn kill(w: &mut Worker, now: Instant, server: u16, id: u32) -> bool {
    let Some(slot) = w.m2_ids.slots.get(&id).copied() else {
        return false;
    };
    // Only an id Mongrel2 would have given out: one the connection's handler has seen
    // (`Register_fd_for_id` knows no other).
    let ours = w
        .conns
        .get(slot as usize)
        .and_then(|c| c.m2_net_row(0, 0))
        .is_some_and(|(s, row)| s == server && row.id >= 0);
    if !ours || w.conns.get(slot as usize).is_none_or(|c| c.is_closed()) {
        return false;
    }
    w.with_conn(now, slot, Cause::Handler, |c, cx| {
        c.handle_m2_reply(cx, ReplyKind::Kill, &[])
    });
    true
}
