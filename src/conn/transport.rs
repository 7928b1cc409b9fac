//! The protocol-neutral half of a connection: its socket's state as the connection sees it
//! (open, draining, lingering, closed), TLS, the byte buffers, the send in flight, reading
//! paused or not, and the timers. Sessions (`http`, `ws`, `m2`) write through it and ask it
//! to drain or close; it knows nothing of HTTP, WebSocket, ZHTTP or Mongrel2.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::tls::TlsConn;
use super::{Ctx, Output, Pool, Settings};
use crate::config::Mode;
use crate::limits;
use crate::runtime::Command;

/// Where the transport is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Link {
    /// Reading and writing; the session decides what happens.
    Open,
    /// The last response is queued; flush, then shut down writing and linger.
    Draining,
    /// Writing is shut down; read and discard until the peer closes or the linger ends.
    Lingering,
    /// `Close` was issued; waiting for the runtime's `handle_closed`.
    Closed,
}

/// Deadlines a connection may have; the slot's timer is the earliest.
#[derive(Clone, Copy)]
pub(super) enum Timer {
    /// Client inactivity (stream), the whole cycle (req), or the TLS handshake.
    Client = 0,
    /// No handler has taken the request yet: 503 when it fires. An open WebSocket uses it
    /// for the close handshake's wait.
    HandlerWait = 1,
    /// No packet from the handler for 60 s: drop the session. A Mongrel2 proxy's connect.
    Expiry = 2,
    /// Lingering close.
    Linger = 3,
    /// Credits owed to the handler that were held back (`limits::CREDIT_RETURN_DELAY_MS`).
    Credit = 4,
    /// The client owes zring a request: a whole head by `--head-timeout`, a next request on a
    /// kept-alive connection by `--keepalive-timeout`, or body progress by `--body-timeout`.
    /// Unlike `Client`, bytes that arrive do not push it back (only a whole head, or a body's
    /// `--body-min-bytes`, does).
    Request = 5,
}
pub(super) const TIMERS: usize = 6;

/// Invariants:
/// - `spill`, `carry` and `out` have no capacity while empty and idle (an idle connection
///   holds no buffer); `link == Closed` implies all three are released.
/// - `sending.is_some()` exactly while a `Send` of this slot is in flight in the runtime.
/// - `close_sent` only once `link == Closed`; `shutdown_sent` only on the way to closed.
pub(super) struct Transport {
    /// The listener's mode: the client timeout's meaning (stream: inactivity; req: the whole
    /// cycle) and the read buffer's bound.
    pub mode: Mode,
    /// The TLS session of a connection on a tls listener.
    pub tls: Option<Box<TlsConn>>,
    pub peer: Option<SocketAddr>,
    pub link: Link,
    /// Received bytes not consumed yet: a partial head, body past the credits, frames past
    /// the credits, or the next pipelined request.
    pub spill: Vec<u8>,
    /// Decoded input waiting for the handler's credits (a chunked body's chunk; a
    /// WebSocket message's piece).
    pub carry: Vec<u8>,
    /// Bytes for the client not yet handed to the runtime.
    pub out: Vec<u8>,
    /// Response-body bytes in `out` (credits to return once written).
    pub out_body: u64,
    /// Response-body bytes in the send in flight; `Some` while a send is in flight.
    pub sending: Option<u64>,
    pub paused: bool,
    /// The client closed its side (or the socket failed, or zring is exiting).
    pub eof: bool,
    /// zring is draining: the exchange under way is the connection's last (its response
    /// says `Connection: close` if it has not started, and the connection closes after it).
    pub last_exchange: bool,
    pub shutdown_sent: bool,
    pub close_sent: bool,
    /// Received bytes kept before reading pauses: one request head (stream), or a head and
    /// a whole body (req, Mongrel2's inline body).
    pub spill_max: u32,
    /// Milliseconds since `Settings::epoch`, 0 when unset.
    deadlines: [u64; TIMERS],
}

impl Transport {
    pub fn new(
        s: &Settings,
        mode: Mode,
        tls: Option<Box<TlsConn>>,
        peer: Option<SocketAddr>,
    ) -> Transport {
        Transport {
            mode,
            tls,
            peer,
            link: Link::Open,
            spill: Vec::new(),
            carry: Vec::new(),
            out: Vec::new(),
            out_body: 0,
            sending: None,
            paused: false,
            eof: false,
            last_exchange: false,
            shutdown_sent: false,
            close_sent: false,
            spill_max: (s.buffer_size
                + if mode == Mode::Req {
                    s.body_buffer_size
                } else {
                    0
                }) as u32,
            deadlines: [0; TIMERS],
        }
    }

    pub fn is_open(&self) -> bool {
        self.link == Link::Open
    }

    // ---- timers ----

    pub fn deadline(&self, s: &Settings) -> Option<Instant> {
        if self.link == Link::Closed {
            return None;
        }
        let ms = self.deadlines.iter().filter(|&&d| d != 0).min()?;
        Some(s.epoch + Duration::from_millis(*ms))
    }

    pub fn set_timer(&mut self, s: &Settings, t: Timer, at: Instant) {
        // Whole milliseconds since the worker's epoch, rounded up so it never fires early;
        // half the size of an `Instant`. At least 1, since 0 means unset.
        let us = at.saturating_duration_since(s.epoch).as_micros();
        self.deadlines[t as usize] = (us.div_ceil(1000) as u64).max(1);
    }

    /// Sets timer `t` to `at` unless it is set to fire earlier.
    pub fn cap_timer(&mut self, s: &Settings, t: Timer, at: Instant) {
        let current = self.deadlines[t as usize];
        let us = at.saturating_duration_since(s.epoch).as_micros();
        let at_ms = (us.div_ceil(1000) as u64).max(1);
        if current == 0 || current > at_ms {
            self.deadlines[t as usize] = at_ms;
        }
    }

    pub fn clear_timer(&mut self, t: Timer) {
        self.deadlines[t as usize] = 0;
    }

    pub fn timer_set(&self, t: Timer) -> bool {
        self.deadlines[t as usize] != 0
    }

    /// Whether timer `t` has passed at `now`.
    pub fn due(&self, s: &Settings, now: Instant, t: Timer) -> bool {
        let now_ms = now.saturating_duration_since(s.epoch).as_millis() as u64;
        let d = self.deadlines[t as usize];
        d != 0 && d <= now_ms
    }

    /// The client did something: restart its inactivity timer. `between_requests`: no
    /// request is open (req mode times the whole cycle, so only then does it restart).
    pub fn touch_client(&mut self, now: Instant, s: &Settings, between_requests: bool) {
        if self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            return; // the handshake deadline stands
        }
        let d = match self.mode {
            Mode::Stream => s.stream_timeout,
            Mode::Req => s.req_timeout,
        };
        if self.mode == Mode::Stream || between_requests {
            self.set_timer(s, Timer::Client, now + d);
        }
    }

    /// The handshake deadline: a client that never finishes costs its bounded state until
    /// then, and reading more bytes does not extend it.
    pub fn tls_handshake_deadline(&mut self, now: Instant, s: &Settings) {
        self.set_timer(s, Timer::Client, now + s.tls_handshake_timeout);
    }

    // ---- output ----

    pub fn write_out(&mut self, pool: &mut Pool, f: impl FnOnce(&mut Vec<u8>)) {
        if self.out.capacity() == 0 {
            self.out = pool.take();
        }
        f(&mut self.out);
    }

    /// Flush what is queued, then shut down writing and linger before closing.
    pub fn drain(&mut self, cx: &mut Ctx) {
        if self.link != Link::Open {
            return;
        }
        self.link = Link::Draining;
        self.set_timer(
            cx.settings,
            Timer::Linger,
            cx.now + Duration::from_millis(limits::LINGER_MS),
        );
        if self.eof {
            // The client will not read a lingering close; flush and close.
            return;
        }
        self.clear_timer(Timer::HandlerWait);
        self.clear_timer(Timer::Expiry);
        self.release_input(cx.pool);
    }

    /// Received and decoded input goes: nothing more will be read for a session.
    pub fn release_input(&mut self, pool: &mut Pool) {
        pool.give(std::mem::take(&mut self.spill));
        pool.give(std::mem::take(&mut self.carry));
    }

    /// Closes at once (anything unsent is dropped).
    pub fn close(&mut self, pool: &mut Pool) {
        if self.link == Link::Closed {
            return;
        }
        self.link = Link::Closed;
        self.deadlines = [0; TIMERS];
        self.release_input(pool);
        pool.give(std::mem::take(&mut self.out));
        if let Some(t) = self.tls.as_mut() {
            t.release(pool);
        }
    }

    /// The I/O this state calls for: a send of what is queued, the shutdown or close that
    /// ends the connection, pausing or resuming reads. `paused_by_worker`: the worker's
    /// outbox is full. Returns true when a send was issued (its bytes left `out`).
    /// Sealing failed (the TLS session is broken): close at once, as `flush` does.
    pub(super) fn fail_sealing(&mut self, cx: &mut Ctx) {
        self.close(cx.pool);
        self.close_sent = true;
        cx.io(Command::Close { slot: cx.slot });
    }

    pub fn flush(&mut self, cx: &mut Ctx, paused_by_worker: bool) -> bool {
        let slot = cx.slot;
        if self.link == Link::Closed {
            if !self.close_sent {
                self.close_sent = true;
                cx.io(Command::Close { slot });
            }
            return false;
        }
        let mut sent = false;
        let wire_pending = self.tls.as_ref().is_some_and(|t| t.has_wire());
        if self.sending.is_none() && (!self.out.is_empty() || wire_pending) {
            let buf = match self.tls.as_mut() {
                None => std::mem::take(&mut self.out),
                Some(t) => match t.seal(&mut self.out, cx.pool) {
                    Ok(wire) => wire,
                    Err(e) => {
                        crate::log!(crate::log::DEBUG, "tls", "{e}: closing");
                        self.fail_sealing(cx);
                        return false;
                    }
                },
            };
            self.sending = Some(std::mem::take(&mut self.out_body));
            cx.io(Command::Send { slot, buf });
            sent = true;
        }
        if self.sending.is_none() && self.link == Link::Draining && self.eof {
            if let Some(buf) = self.tls.as_mut().and_then(|t| t.close_notify(cx.pool)) {
                // No lingering, but TLS still ends with close_notify (RFC 8446 §6.1).
                self.sending = Some(0);
                cx.io(Command::Send { slot, buf });
                return sent;
            }
            self.link = Link::Closed;
            self.close_sent = true;
            cx.io(Command::Close { slot });
            return sent;
        }
        if self.sending.is_none() && self.link == Link::Draining && !self.shutdown_sent {
            if let Some(buf) = self.tls.as_mut().and_then(|t| t.close_notify(cx.pool)) {
                // TLS ends with close_notify before the TCP shutdown (RFC 8446 §6.1).
                self.sending = Some(0);
                cx.io(Command::Send { slot, buf });
                return sent;
            }
            self.shutdown_sent = true;
            self.link = Link::Lingering;
            cx.io(Command::ShutdownWrite { slot });
        }
        let want_pause = paused_by_worker || self.spill.len() >= self.spill_max as usize;
        if want_pause != self.paused && !self.eof {
            self.paused = want_pause;
            cx.io(if want_pause {
                Command::PauseRecv { slot }
            } else {
                Command::ResumeRecv { slot }
            });
        }
        sent
    }
}

impl Ctx<'_> {
    /// Queues an I/O command for the runtime.
    pub(super) fn io(&mut self, c: Command) {
        self.out.push(Output::Io(c));
    }
}
