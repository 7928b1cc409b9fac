//! What an HTTP exchange and a WebSocket session share: a ZHTTP session with a handler.
//! Its id, the `seq` both ways, the handler's address, credits both ways, and the rules
//! every handler packet passes first (`accept_packet`) and every failure follows (`fail`).
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use super::transport::{Timer, Transport};
use super::{ConnId, Ctx, HandlerPacket, CONN_ID_BYTES_MAX};
use crate::bridge::{Addr, OutPacket, Route};
use crate::config::Mode;
use crate::limits;
use crate::metrics::ErrorKind;
use crate::proto::http1::{self, Version};
use crate::proto::zhttp::{self, Kind};

/// Invariants: `seq_out`/`seq_in` count the packets sent and accepted in this session;
/// `handler` is `None` until the handler's first packet, and again once the handler ended
/// the session (so nothing more goes to it); `response_done` implies `response_started`.
pub(super) struct ZhttpSession {
    /// Per-worker request counter: the `N` of the session id `W-S-N`.
    pub counter: u64,
    pub seq_out: u32,
    pub seq_in: u32,
    /// The handler that owns the session: the `from` of its latest packet.
    pub handler: Option<Arc<Addr>>,
    /// Client bytes (request body, WebSocket messages) the handler has granted.
    pub credits: u64,
    /// Response bytes the handler may still send before we return credits.
    pub budget: u64,
    /// Credits earned by bytes written to the client, not yet returned.
    pub credits_owed: u32,
    /// The largest body the handler has sent in one packet this session: credits go back at
    /// once while its budget is below this, so a handler that waits for a whole message's
    /// worth of credits is not held back by the delayed return.
    pub packet_max: u32,
    /// The request's HTTP version (error responses use it).
    pub version: Version,
    /// A packet from the handler arrived (it took the request).
    pub handler_seen: bool,
    /// The handler asked to hand the session off; nothing goes to it until its next packet.
    pub handoff: bool,
    /// The handler's latest data packet for this session named many ids (a fan-out): the
    /// credits its frames earn may be held back (`credits_earned`). Condure returns credits
    /// per write, and zring does so too for packets to one id, but a broadcast handler
    /// cannot pace on 100,000 credit packets and one round should not cost them.
    pub fanout: bool,
    pub response_started: bool,
    pub response_done: bool,
    /// `--access-log`: what the session's line needs, from its request head to its end.
    pub access: Option<Box<AccessEntry>>,
}

/// What the access log line of a session needs (`proto::access`), kept while it lasts.
pub(super) struct AccessEntry {
    /// The request line's parts, as read: method, then target, then version.
    request: Vec<u8>,
    method_len: u16,
    target_len: u32,
    started: Instant,
    /// The status written (0: none yet).
    pub status: u16,
    /// Response body bytes written.
    pub bytes: u64,
}

impl AccessEntry {
    pub fn new(cx: &mut Ctx, req: &http1::Request) -> Box<AccessEntry> {
        let mut request = cx.pool.take();
        request.extend_from_slice(req.method.as_bytes());
        request.extend_from_slice(req.target.as_bytes());
        request.extend_from_slice(match req.version {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        });
        Box::new(AccessEntry {
            request,
            method_len: req.method.len() as u16,
            target_len: req.target.len() as u32,
            started: cx.now,
            status: 0,
            bytes: 0,
        })
    }

    /// The line, into a pooled buffer; the entry's buffer goes back to the pool.
    pub fn line(
        self,
        cx: &mut Ctx,
        peer: Option<std::net::SocketAddr>,
        handler: Option<&[u8]>,
    ) -> Vec<u8> {
        use std::io::Write as _;
        let mut remote: ArrayVec<u8, { limits::PEER_TEXT_BYTES_MAX }> = ArrayVec::new();
        match peer {
            Some(p) => {
                let _ = write!(super::ArrayWriter(&mut remote), "{}", p.ip());
            }
            None => remote.push(b'-'), // a Unix socket
        }
        let since_epoch = self.started.saturating_duration_since(cx.settings.epoch);
        let (method, rest) = self.request.split_at(self.method_len as usize);
        let (target, version) = rest.split_at(self.target_len as usize);
        let mut line = cx.pool.take();
        crate::proto::access::encode(
            &mut line,
            &crate::proto::access::Entry {
                remote_addr: &remote,
                time_unix_ms: cx.settings.epoch_unix_ms + since_epoch.as_millis() as u64,
                method,
                target,
                version,
                status: self.status,
                bytes: Some(self.bytes),
                duration_us: cx.now.saturating_duration_since(self.started).as_micros() as u64,
                handler,
            },
        );
        cx.pool.give(self.request);
        line
    }
}

impl ZhttpSession {
    /// A new session for a request just read: the next id of this worker, our credits
    /// (`--buffer-size`) as the handler's budget.
    pub fn new(cx: &mut Ctx, version: Version) -> ZhttpSession {
        *cx.counter += 1;
        ZhttpSession {
            counter: *cx.counter,
            seq_out: 0,
            seq_in: 0,
            handler: None,
            credits: 0,
            budget: cx.settings.buffer_size as u64,
            credits_owed: 0,
            packet_max: 0,
            version,
            handler_seen: false,
            handoff: false,
            fanout: false,
            response_started: false,
            response_done: false,
            access: None,
        }
    }

    /// The session's id, as it goes on the wire.
    pub fn id(&self, cx: &Ctx) -> ArrayVec<u8, CONN_ID_BYTES_MAX> {
        ConnId {
            worker: cx.settings.worker,
            slot: cx.slot,
            counter: self.counter,
        }
        .encode()
    }

    /// Encodes one packet of type `kind` for this session's handler (ROUTER) with the next
    /// `seq`. Nothing goes when no handler owns the session.
    pub fn send_packet(
        &mut self,
        cx: &mut Ctx,
        kind: Kind,
        f: impl FnOnce(&mut Vec<u8>, &[u8], &[u8], u32),
    ) {
        // The address is copied into the route; no need to touch the Arc's count.
        let Some(addr) = self.handler.as_deref().cloned() else {
            return;
        };
        cx.stats.zhttp_out(kind);
        let id = self.id(cx);
        let mut data = Vec::with_capacity(512);
        f(&mut data, &cx.settings.instance_id, &id, self.seq_out);
        self.seq_out += 1;
        cx.packet(OutPacket {
            route: Route::Router(addr),
            data,
            expires: None,
        });
    }

    /// What every handler packet for the session does first: drop it if the session is
    /// over, check its `seq` (failing the session if it is wrong), follow the handler's
    /// address, and refresh the session's timers. False when the packet goes no further.
    pub fn accept_packet(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        pkt: HandlerPacket<'_>,
        seq: Option<u32>,
    ) -> bool {
        if !t.is_open() {
            return false; // the session ended; a late packet is dropped as Condure does
        }
        let p = pkt.packet;
        if p.kind == Kind::Data {
            self.fanout = p.ids.len() > 1;
        }
        if let Some(seq) = seq {
            if seq != self.seq_in {
                crate::log!(
                    crate::log::DEBUG,
                    "conn",
                    "bad seq {seq}, expected {}",
                    self.seq_in
                );
                // Packets were lost or reordered: the session can't go on. The handler
                // caused it, so no cancel goes back; the client keeps what was queued.
                self.handler = None;
                self.fail(
                    t,
                    cx,
                    502,
                    "Bad Gateway",
                    "The handler's packets arrived out of order.\n",
                );
                return false;
            }
        }
        self.seq_in = self.seq_in.wrapping_add(1);
        if let Some(from) = p.from {
            let from = from.get(pkt.buf);
            if self.handler.as_deref().map(|a| &a[..]) != Some(from) {
                self.handler = cx.handlers.intern(from);
            }
        }
        if !self.handler_seen {
            self.handler_seen = true;
            t.clear_timer(Timer::HandlerWait);
        }
        if t.mode == Mode::Stream {
            t.set_timer(
                cx.settings,
                Timer::Expiry,
                cx.now + Duration::from_millis(limits::SESSION_EXPIRY_MS),
            );
        }
        self.handoff = false;
        true
    }

    /// Bytes written to the client earned credits: return them now (frames for one id, as
    /// Condure; or the handler is running low), else, for a fan-out, later together with
    /// what later frames earn.
    pub fn credits_earned(&mut self, t: &mut Transport, cx: &mut Ctx) {
        if self.credits_owed == 0 {
            return;
        }
        let low = (cx.settings.buffer_size as u64 / 2).max(u64::from(self.packet_max));
        if !self.fanout || self.budget < low {
            return self.return_credits(t, cx);
        }
        if !t.timer_set(Timer::Credit) {
            t.set_timer(
                cx.settings,
                Timer::Credit,
                cx.now + Duration::from_millis(limits::CREDIT_RETURN_DELAY_MS),
            );
        }
    }

    /// The handler sent `n` body bytes under its credits.
    pub fn spend_budget(&mut self, n: u64) {
        self.budget = self.budget.saturating_sub(n);
        self.packet_max = self.packet_max.max(n.min(u64::from(u32::MAX)) as u32);
    }

    pub fn return_credits(&mut self, t: &mut Transport, cx: &mut Ctx) {
        t.clear_timer(Timer::Credit);
        if self.credits_owed == 0 || self.response_done || self.handoff || self.handler.is_none() {
            return;
        }
        let n = std::mem::take(&mut self.credits_owed);
        self.budget += u64::from(n);
        self.send_packet(cx, Kind::Credit, |out, from, id, seq| {
            zhttp::encode_credit(out, from, id, seq, n)
        });
    }

    /// Tells the handler the client is gone (only if it has claimed the session: Condure).
    pub fn cancel(&mut self, t: &Transport, cx: &mut Ctx) {
        if t.is_open() && !self.response_done && t.mode == Mode::Stream {
            self.send_packet(cx, Kind::Cancel, |out, from, id, seq| {
                zhttp::encode_control(out, from, id, seq, Kind::Cancel)
            });
        }
    }

    /// The `cancel` this session owes its handler (as `cancel` would send it), consuming a
    /// `seq` and taking the handler's address: nothing more goes to the handler.
    pub fn take_cancel(&mut self, t: &Transport) -> Option<(Arc<Addr>, u64, u32)> {
        if !t.is_open() || self.response_done || t.mode != Mode::Stream {
            return None;
        }
        let addr = self.handler.take()?;
        let seq = self.seq_out;
        self.seq_out += 1;
        Some((addr, self.counter, seq))
    }

    /// The keep-alive this session owes its handler, consuming a `seq`.
    pub fn keep_alive(&mut self, t: &Transport) -> Option<(&Addr, u64, u32)> {
        if !t.is_open() || self.handoff || t.mode != Mode::Stream {
            return None;
        }
        let addr: &Addr = self.handler.as_ref()?;
        let seq = self.seq_out;
        self.seq_out += 1;
        Some((addr, self.counter, seq))
    }

    /// 502 for a handler response zring cannot write (bad status, headers or framing).
    pub fn fail_invalid_response(&mut self, t: &mut Transport, cx: &mut Ctx) {
        self.fail(
            t,
            cx,
            502,
            "Bad Gateway",
            "The handler sent an invalid response.\n",
        );
    }

    /// 502 for a handler that ended the session (cancel, error) before any response.
    pub fn fail_no_response(&mut self, t: &mut Transport, cx: &mut Ctx) {
        self.fail(
            t,
            cx,
            502,
            "Bad Gateway",
            "The handler ended the request without a response.\n",
        );
    }

    /// The handler is gone (`Conn::handle_handler_gone`): nothing more goes to it, and the
    /// client gets a 502, or, once a response has started, what was queued and then a clean
    /// close (a chunked response then lacks its last chunk, a sized one is short: the
    /// client can tell; a close-delimited one cannot be told apart from its end).
    pub fn handler_gone(&mut self, t: &mut Transport, cx: &mut Ctx) {
        self.handler = None;
        self.fail(
            t,
            cx,
            502,
            "Bad Gateway",
            "The handler went away before it answered.\n",
        );
    }

    /// Answers with an error response (unless a response already started) and closes.
    pub fn fail(&mut self, t: &mut Transport, cx: &mut Ctx, code: u16, reason: &str, body: &str) {
        if let Some(kind) = ErrorKind::from_status(code) {
            cx.stats.protocol_error(kind);
        }
        if t.is_open() && self.handler_seen && !self.response_done {
            self.cancel(t, cx);
        }
        if self.response_started {
            // Too late for a status: deliver what was queued, then close, so the client
            // sees a truncated response rather than losing bytes it was already owed.
            return t.drain(cx);
        }
        write_error(t, cx, self.version, code, reason, body);
        if let Some(a) = &mut self.access {
            a.status = code;
        }
        self.response_started = true;
        self.response_done = true;
        t.drain(cx);
    }
}

/// Queues an error response.
pub(super) fn write_error(
    t: &mut Transport,
    cx: &mut Ctx,
    version: Version,
    code: u16,
    reason: &str,
    body: &str,
) {
    cx.stats.response(code);
    t.write_out(cx.pool, |out| {
        http1::encode_error_response(out, version, code, reason.as_bytes(), body.as_bytes())
    });
}
