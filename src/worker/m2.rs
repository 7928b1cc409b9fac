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
use crate::bridge::{OutPacket, Route};
use crate::conn::Conn;
use crate::limits;
use crate::metrics::CloseReason as Cause;
use crate::proto::m2::notice::encode_disconnect;

/// Mongrel2 connection id → slot, for the worker's open connections.
#[derive(Default)]
pub(super) struct Ids {
    slots: HashMap<u32, u32>,
    next: u32,
}

/// A new connection on `listener` got `slot`: give it its server and id.
pub(super) fn on_accept(w: &mut Worker, listener: usize, slot: u32) {
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
    w.conns[slot as usize].m2_attach(&setup, server, id);
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
