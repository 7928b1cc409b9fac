//! The bridge's Mongrel2 half: per `Handler`, a PUSH socket bound at `send_spec` (identity
//! `send_ident`) for requests and a SUB socket bound at `recv_spec` (subscribed to
//! `recv_ident`) for replies, as Mongrel2 binds them. Replies are parsed once
//! (`proto::m2::parse_reply`) into an `Arc<M2In>` handed to every worker one of its ids
//! belongs to (ids are `n * workers + worker`), through each worker's `Inbox::m2` queue.
//! Ids no connection can have (past `u32::MAX`) get their disconnect notice from here.
use std::collections::VecDeque;
use std::sync::Arc;

use super::Shared;
use crate::limits;
use crate::log;
use crate::m2serve::Setup;
use crate::proto::m2::notice::encode_disconnect;
use crate::proto::m2::reply::{conn_id, mongrel2_int_id};
use crate::proto::m2::{parse_extended, parse_reply, Extended};

pub use crate::proto::m2::ReplyKind;

/// A handler reply, decoded once and shared by the workers it names.
pub struct M2In {
    /// The ZeroMQ message (the body is a slice of it: one shared payload for all targets).
    pub msg: zmq::Message,
    /// Index of the handler (in `Setup::handlers`) it came from.
    pub handler: u16,
    /// Offset of the body in `msg`.
    pub body_at: usize,
    /// What to do.
    pub kind: ReplyKind,
    /// The named ids that fit a connection id, in order (duplicates kept).
    pub ids: Vec<u32>,
}

impl M2In {
    /// The raw body.
    pub fn body(&self) -> &[u8] {
        &self.msg[self.body_at..]
    }
}

/// One worker's queue of Mongrel2 replies (a field of `Inbox`).
pub type Queue = std::sync::Mutex<VecDeque<Arc<M2In>>>;

struct HandlerSockets {
    push: zmq::Socket,
    sub: zmq::Socket,
}

/// The Mongrel2 sockets, owned by the bridge thread.
pub struct M2Sockets {
    setup: Arc<Setup>,
    handlers: Vec<HandlerSockets>,
    /// The control ports (`m2control`).
    control: super::m2control::Control,
}

/// Binds every handler's sockets.
pub fn open(ctx: &zmq::Context, setup: Arc<Setup>, hwm: i32) -> Result<M2Sockets, String> {
    let handlers = open_handlers(ctx, &setup, 0, hwm, BIND_TRIES_START)?;
    let control = super::m2control::open(ctx, &setup);
    Ok(M2Sockets {
        setup,
        handlers,
        control,
    })
}

/// A reloaded setup and the sockets of the handlers it added (its handler list extends
/// the running one: `m2serve::reload`).
pub struct Reload {
    pub setup: Arc<Setup>,
    sockets: Vec<HandlerSockets>,
}

/// Mongrel2 retries a bind 10 times, 1 s apart (a restarted server's port may linger).
const BIND_TRIES_START: u32 = 10;

/// Binds the sockets of the handlers `setup` adds to the `running` ones (SIGHUP), on the
/// signal thread: a bind that fails refuses the reload before any worker sees it. One try
/// each: the endpoints are new, nothing lingers on them.
pub fn prepare_reload(
    ctx: &zmq::Context,
    setup: Arc<Setup>,
    running: usize,
    hwm: i32,
) -> Result<Reload, String> {
    let sockets = open_handlers(ctx, &setup, running, hwm, 1)?;
    Ok(Reload { setup, sockets })
}

/// Binds the sockets of `setup.handlers[from..]`.
fn open_handlers(
    ctx: &zmq::Context,
    setup: &Setup,
    from: usize,
    hwm: i32,
    tries: u32,
) -> Result<Vec<HandlerSockets>, String> {
    let zerr = |what: &str, spec: &str, e: zmq::Error| format!("zmq {what} {spec}: {e}");
    let mut handlers = Vec::new();
    for h in setup.handlers.iter().skip(from) {
        let push = ctx.socket(zmq::PUSH).map_err(|e| zerr("socket", "", e))?;
        push.set_identity(h.send_ident.as_bytes())
            .map_err(|e| zerr("identity", &h.send_spec, e))?;
        push.set_sndhwm(hwm).map_err(|e| zerr("hwm", "", e))?;
        push.set_linger(0).map_err(|e| zerr("linger", "", e))?;
        bind(&push, &h.send_spec, tries)?;
        let sub = ctx.socket(zmq::SUB).map_err(|e| zerr("socket", "", e))?;
        sub.set_rcvhwm(hwm.max(limits::SUB_RCVHWM_MIN))
            .map_err(|e| zerr("hwm", "", e))?;
        sub.set_subscribe(h.recv_ident.as_bytes())
            .map_err(|e| zerr("subscribe", &h.recv_spec, e))?;
        bind(&sub, &h.recv_spec, tries)?;
        log!(
            log::INFO,
            "m2",
            "handler {}: requests on {}, replies on {}",
            h.send_ident,
            h.send_spec,
            h.recv_spec
        );
        handlers.push(HandlerSockets { push, sub });
    }
    Ok(handlers)
}

/// What a parsed reply asks of the connections it names.
pub(crate) fn reply_kind(reply: &crate::proto::m2::Reply<'_>) -> ReplyKind {
    if !reply.extended {
        return match reply.body.is_empty() {
            true => ReplyKind::Close,
            false => ReplyKind::Data,
        };
    }
    match parse_extended(reply.body) {
        Ok(Extended::Control(c)) if c.bad_credits => ReplyKind::Kill,
        Ok(Extended::Control(c)) => ReplyKind::Control(c),
        Ok(Extended::BadControl) | Ok(Extended::Other { .. }) => ReplyKind::Kill,
        Err(_) => ReplyKind::Ignore,
    }
}

/// Binds, retrying an address in use up to `tries` times, 1 s apart.
fn bind(sock: &zmq::Socket, spec: &str, tries_max: u32) -> Result<(), String> {
    let mut tries = 0;
    loop {
        match sock.bind(spec) {
            Ok(()) => return Ok(()),
            Err(e) if tries + 1 >= tries_max || e != zmq::Error::EADDRINUSE => {
                return Err(format!("zmq bind {spec}: {e}"))
            }
            Err(_) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

impl M2Sockets {
    /// The running setup (a reload extends its handler list).
    pub fn setup(&self) -> &Arc<Setup> {
        &self.setup
    }

    /// Takes a reload's sockets and setup; returns the setup for the workers.
    pub fn adopt(&mut self, reload: Reload) -> Arc<Setup> {
        debug_assert_eq!(
            self.handlers.len() + reload.sockets.len(),
            reload.setup.handlers.len()
        );
        self.handlers.extend(reload.sockets);
        self.setup = reload.setup;
        self.setup.clone()
    }

    /// Sends one request to handler `h`; `false` when it cannot take it now.
    pub fn send(&self, h: u16, data: &[u8]) -> Result<(), zmq::Error> {
        match self.handlers.get(h as usize) {
            Some(s) => s.push.send(data, zmq::DONTWAIT),
            None => Ok(()),
        }
    }

    /// Adds the SUB sockets (and the PUSH ones while requests are held) to a poll set.
    pub fn poll_items<'a>(
        &'a self,
        items: &mut Vec<zmq::PollItem<'a>>,
        read: zmq::PollEvents,
        held: bool,
    ) {
        for h in &self.handlers {
            items.push(h.sub.as_poll_item(read));
            if held {
                items.push(h.push.as_poll_item(zmq::POLLOUT));
            }
        }
        self.control.poll_items(items);
    }

    /// Serves the control ports (`m2control`); true while a request waits for workers.
    pub fn control_turn(&mut self, shared: &Shared) -> bool {
        self.control.turn(shared, &self.setup);
        self.control.waiting()
    }

    /// Reads replies and queues them for the workers. Returns true when some worker's queue
    /// is full (the bridge then stops reading and ZeroMQ's HWM pushes back on handlers).
    pub fn deliver(&mut self, shared: &Shared, wake: &mut [bool]) -> bool {
        let mut full = false;
        for (hi, h) in self.handlers.iter().enumerate() {
            for _ in 0..limits::BRIDGE_BATCH_PACKETS_MAX {
                if full {
                    return true;
                }
                let Ok(msg) = h.sub.recv_msg(zmq::DONTWAIT) else {
                    break;
                };
                full |= self.route(shared, wake, hi as u16, msg);
            }
        }
        full
    }

    fn route(&self, shared: &Shared, wake: &mut [bool], hi: u16, msg: zmq::Message) -> bool {
        let targets = self.setup.limits.handler_targets;
        let reply = match parse_reply(&msg, targets) {
            Ok(r) => r,
            Err(e) => {
                // Mongrel2 logs and drops a malformed reply (and sleeps; zring does not).
                log!(log::WARN, "m2", "dropping a malformed handler reply: {e}");
                return false;
            }
        };
        let kind = reply_kind(&reply);
        let cancel = matches!(kind, ReplyKind::Control(c) if c.cancel);
        let mut ids = Vec::with_capacity(reply.id_count());
        for id in reply.ids() {
            match conn_id(id) {
                Some(id) => ids.push(id),
                None if !cancel => {
                    // No connection has this id: the notice goes back at once.
                    let handler = &self.setup.handlers[hi as usize];
                    let mut out = Vec::with_capacity(128);
                    encode_disconnect(
                        &mut out,
                        handler.send_ident.as_bytes(),
                        mongrel2_int_id(id),
                        handler.protocol,
                    );
                    let _ = self.send(hi, &out);
                }
                None => {}
            }
        }
        if ids.is_empty() {
            return false;
        }
        let body_at = msg.len() - reply.body.len();
        let workers = self.setup.workers.max(1);
        let mut mask = [false; limits::WORKERS_MAX];
        for &id in &ids {
            mask[(id % workers) as usize] = true;
        }
        let item = Arc::new(M2In {
            msg,
            handler: hi,
            body_at,
            kind,
            ids,
        });
        let mut full = false;
        for (w, named) in mask.iter().enumerate().take(workers as usize) {
            if !named || w >= shared.inboxes.len() {
                continue;
            }
            let mut q = shared.inboxes[w].m2.lock().unwrap();
            q.push_back(item.clone());
            full |= q.len() >= limits::WORKER_INBOX_PACKETS_MAX;
            wake[w] = true;
        }
        full
    }
}
