//! TLS under a connection: ciphertext from the runtime goes through the session, the
//! plaintext through the same HTTP/WebSocket path as a plain connection; everything the
//! connection writes is sealed into records just before it is handed to the runtime.
//!
//! Memory: an idle TLS connection holds its boxed session (rustls's state, no byte buffers)
//! and two empty `Vec`s. `tail` holds ciphertext only while a record is half received;
//! `wire` holds records only between a `feed` that produced them and the next send. The
//! plaintext of a read lives in a pooled buffer for the duration of the call. A fan-out
//! frame is sealed straight from the worker's shared frame into a pooled small buffer
//! (`seal_frame`), which is the send in flight and goes back to the pool when it completes;
//! the next round's targets take those buffers again (`Pool::take_small`), so a steady
//! fan-out allocates nothing per target.
use std::sync::Arc;

use rustls::ServerConfig;

use super::{Conn, Ctx, Pool};
use crate::limits;
use crate::metrics::ErrorKind;
use crate::tls::{Session, TlsError};

pub(super) struct TlsConn {
    session: Session,
    /// Ciphertext the session has not consumed, unchanged (the unbuffered API's contract).
    /// Empty (no capacity) unless a record is split across reads.
    tail: Vec<u8>,
    /// Records to send before any sealed plaintext (handshake flights, alerts).
    wire: Vec<u8>,
    /// The session failed: its alert is in `wire`; no `close_notify` follows it.
    failed: bool,
    close_notify_sent: bool,
}

impl TlsConn {
    pub(super) fn new(config: &Arc<ServerConfig>) -> Box<TlsConn> {
        Box::new(TlsConn {
            session: Session::new(config.clone()),
            tail: Vec::new(),
            wire: Vec::new(),
            failed: false,
            close_notify_sent: false,
        })
    }

    /// Ciphertext held: received and not consumed, and records waiting to be sent.
    #[cfg(any(test, feature = "harness"))]
    pub(super) fn buffered(&self) -> (usize, usize) {
        (self.tail.len(), self.wire.len())
    }

    pub(super) fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Something must be sent even with no plaintext queued.
    pub(super) fn has_wire(&self) -> bool {
        !self.wire.is_empty()
    }

    /// The buffer to send: pending records, then `plain` sealed after them. `plain` goes
    /// back to the pool.
    pub(super) fn seal(
        &mut self,
        plain: &mut Vec<u8>,
        pool: &mut Pool,
    ) -> Result<Vec<u8>, TlsError> {
        if plain.is_empty() {
            return Ok(std::mem::take(&mut self.wire));
        }
        let mut wire = self.take_wire(pool);
        let sealed = self.session.encrypt(&mut self.tail, plain, &mut wire);
        pool.give(std::mem::take(plain));
        if let Err(e) = sealed {
            pool.give(wire);
            self.failed = true;
            return Err(e);
        }
        Ok(wire)
    }

    /// Whether a fan-out frame may be sealed straight from the shared buffer: established,
    /// not failed or closing, and no record of its own waiting to go first.
    pub(super) fn takes_frames(&self) -> bool {
        !self.session.is_handshaking()
            && !self.failed
            && !self.close_notify_sent
            && self.wire.is_empty()
    }

    /// `frame` (a fan-out frame, shared by every target) sealed into a pooled small buffer
    /// (`Pool::take_small`): the only per-target memory is this send in flight, returned
    /// to the pool on completion and reused by the next round's target.
    pub(super) fn seal_frame(
        &mut self,
        frame: &[u8],
        pool: &mut Pool,
    ) -> Result<Vec<u8>, TlsError> {
        assert!(self.takes_frames());
        let mut wire = pool.take_small(sealed_bytes_max(frame.len()));
        match self.session.encrypt(&mut self.tail, frame, &mut wire) {
            Ok(()) => Ok(wire),
            Err(e) => {
                pool.give(wire);
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Records holding our `close_notify`, or `None` when none is owed (failed, not yet
    /// established, or already sent).
    pub(super) fn close_notify(&mut self, pool: &mut Pool) -> Option<Vec<u8>> {
        if self.failed || self.close_notify_sent || self.session.is_handshaking() {
            return None;
        }
        self.close_notify_sent = true;
        let mut wire = self.take_wire(pool);
        match self.session.close_notify(&mut self.tail, &mut wire) {
            Ok(()) => Some(wire),
            Err(_) => {
                pool.give(wire);
                None
            }
        }
    }

    /// The pending records' buffer, or a pooled one to write records into.
    fn take_wire(&mut self, pool: &mut Pool) -> Vec<u8> {
        match std::mem::take(&mut self.wire) {
            w if w.capacity() == 0 => pool.take(),
            w => w,
        }
    }

    pub(super) fn release(&mut self, pool: &mut Pool) {
        pool.give(std::mem::take(&mut self.tail));
    }
}

/// The room `plain` bytes take sealed, for the send buffer: one record per 2^14 plaintext
/// bytes (RFC 8446 §5.1), each growing by its 5 B header and the cipher's expansion, which
/// with rustls (no padding) is 17 B in TLS 1.3 (content type and AEAD tag) and 24 B in
/// TLS 1.2 with AES-GCM (explicit nonce and tag). An estimate, not a limit: the session grows
/// the buffer if it needs more.
fn sealed_bytes_max(plain: usize) -> usize {
    const RECORD_PLAIN_BYTES_MAX: usize = 16_384;
    const RECORD_OVERHEAD_BYTES: usize = 5 + 24;
    let records = plain.div_ceil(RECORD_PLAIN_BYTES_MAX).max(1);
    plain + records * RECORD_OVERHEAD_BYTES
}

impl Conn {
    /// Ciphertext from the client: decrypt, then run the plaintext like a plain connection.
    pub(super) fn tls_recv(&mut self, cx: &mut Ctx, data: &mut [u8]) {
        let t = self.t.tls.as_mut().expect("tls_recv on a plain connection");
        let was_handshaking = t.session.is_handshaking();
        let mut plain = cx.pool.take();
        t.wire = t.take_wire(cx.pool);
        let fed = if t.tail.is_empty() {
            let fed = t.session.feed(data, &mut plain, &mut t.wire);
            if let Ok(f) = &fed {
                if f.consumed < data.len() {
                    t.tail = cx.pool.take();
                    t.tail.extend_from_slice(&data[f.consumed..]);
                }
            }
            fed
        } else {
            t.tail.extend_from_slice(data);
            let fed = t.session.feed(&mut t.tail, &mut plain, &mut t.wire);
            if let Ok(f) = &fed {
                t.tail.drain(..f.consumed);
            }
            fed
        };
        if t.wire.is_empty() {
            cx.pool.give(std::mem::take(&mut t.wire));
        }
        if t.tail.is_empty() {
            cx.pool.give(std::mem::take(&mut t.tail));
        }
        let fed = match fed {
            Ok(f) => f,
            Err(e) => {
                cx.pool.give(plain);
                return self.tls_failed(cx, e);
            }
        };
        if t.tail.len() > limits::TLS_TAIL_BYTES_MAX {
            // rustls refuses an oversized record header itself; this bounds what a client
            // can make us hold whatever rustls does.
            cx.pool.give(plain);
            return self.tls_failed(cx, TlsError::Protocol);
        }
        if was_handshaking && !t.session.is_handshaking() {
            if matches!(self.session, super::Session::Idle(_, super::Wait::Reject)) {
                cx.pool.give(plain);
                return self.reject_overload(cx);
            }
            // Established: from now on the client's ordinary inactivity timer applies.
            self.touch_client(cx);
        }
        if !plain.is_empty() {
            self.recv_plain(cx, &mut plain);
        }
        cx.pool.give(plain);
        if fed.peer_closed {
            self.handle_eof(cx);
        }
    }

    fn tls_failed(&mut self, cx: &mut Ctx, e: TlsError) {
        let level = match e {
            TlsError::PlainHttp | TlsError::NoCertificate => crate::log::INFO,
            _ => crate::log::DEBUG,
        };
        crate::log!(level, "tls", "{} from {:?}", e, self.t.peer);
        cx.stats.protocol_error(match e {
            TlsError::PeerAlert => ErrorKind::TlsPeerAlert,
            _ => ErrorKind::TlsAlert,
        });
        if let Some(t) = self.t.tls.as_mut() {
            t.failed = true;
        }
        self.cancel_session(cx);
        // Send the alert (if any), then shut down and linger as after any error response.
        self.t.drain(cx);
        if self.t.eof {
            self.t.close(cx.pool);
        }
    }
}
