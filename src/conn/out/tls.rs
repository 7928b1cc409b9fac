//! TLS under an outbound connection's shell, as `conn::tls` sits under a client connection:
//! ciphertext from the runtime goes through the session and the plaintext on to the
//! protocol session; what the shell queues for the origin is sealed into records just before
//! it is handed to the runtime (`Shell::flush`).
//!
//! Memory: between calls a session holds rustls's state and two empty `Vec`s. `tail` holds
//! ciphertext only while a record is half received; `wire` holds records only between the
//! call that produced them and the next send.
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::conn::Pool;
use crate::limits;
use crate::tls::client::{ClientError, ClientSession};

pub(crate) struct OutTls {
    session: ClientSession,
    /// Ciphertext the session has not consumed, unchanged (the unbuffered API's contract).
    tail: Vec<u8>,
    /// Records to send before any sealed plaintext (handshake flights).
    wire: Vec<u8>,
}

/// What one read of ciphertext gave.
pub(crate) struct Read {
    /// The handshake finished during this read.
    pub established: bool,
    /// The origin sent `close_notify`.
    pub peer_closed: bool,
}

impl OutTls {
    /// A session to `host` (SNI and the name verified); the ClientHello waits in `wire`.
    pub fn new(
        config: Arc<ClientConfig>,
        host: &str,
        pool: &mut Pool,
    ) -> Result<Box<OutTls>, ClientError> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| ClientError::Certificate)?;
        let mut wire = pool.take();
        let session = match ClientSession::new(config, name, &mut wire) {
            Ok(s) => s,
            Err(e) => {
                pool.give(wire);
                return Err(e);
            }
        };
        Ok(Box::new(OutTls {
            session,
            tail: Vec::new(),
            wire,
        }))
    }

    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    pub fn peer_closed(&self) -> bool {
        self.session.peer_closed()
    }

    /// Decrypts `data` (and any tail before it) into `plain`.
    pub fn read(
        &mut self,
        data: &mut [u8],
        plain: &mut Vec<u8>,
        pool: &mut Pool,
    ) -> Result<Read, ClientError> {
        let was_handshaking = self.session.is_handshaking();
        if self.wire.capacity() == 0 {
            self.wire = pool.take();
        }
        let fed = if self.tail.is_empty() {
            let fed = self.session.feed(data, plain, &mut self.wire);
            if let Ok(f) = &fed {
                if f.consumed < data.len() {
                    self.tail = pool.take();
                    self.tail.extend_from_slice(&data[f.consumed..]);
                }
            }
            fed
        } else {
            self.tail.extend_from_slice(data);
            let fed = self.session.feed(&mut self.tail, plain, &mut self.wire);
            if let Ok(f) = &fed {
                self.tail.drain(..f.consumed);
            }
            fed
        };
        if self.wire.is_empty() {
            pool.give(std::mem::take(&mut self.wire));
        }
        if self.tail.is_empty() {
            pool.give(std::mem::take(&mut self.tail));
        }
        let fed = fed?;
        if self.tail.len() > limits::TLS_TAIL_BYTES_MAX {
            return Err(ClientError::Protocol);
        }
        Ok(Read {
            established: was_handshaking && !self.session.is_handshaking(),
            peer_closed: fed.peer_closed,
        })
    }

    /// Records to send now: pending handshake records, then `plain` sealed after them once
    /// the handshake is done (until then `plain` stays queued). `None`: nothing to send.
    pub fn seal(
        &mut self,
        plain: &mut Vec<u8>,
        pool: &mut Pool,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        if self.session.is_handshaking() || plain.is_empty() {
            let wire = std::mem::take(&mut self.wire);
            return Ok((!wire.is_empty()).then_some(wire));
        }
        let mut wire = match std::mem::take(&mut self.wire) {
            w if w.capacity() == 0 => pool.take(),
            w => w,
        };
        let sealed = self.session.encrypt(&mut self.tail, plain, &mut wire);
        plain.clear();
        if let Err(e) = sealed {
            pool.give(wire);
            return Err(e);
        }
        Ok(Some(wire))
    }

    /// Records holding our `close_notify` (`None`: none can be sent: the handshake did not
    /// finish, or the session failed).
    pub fn close_notify(&mut self, pool: &mut Pool) -> Option<Vec<u8>> {
        if self.session.is_handshaking() {
            return None;
        }
        let mut wire = match std::mem::take(&mut self.wire) {
            w if w.capacity() == 0 => pool.take(),
            w => w,
        };
        match self.session.close_notify(&mut self.tail, &mut wire) {
            Ok(()) if !wire.is_empty() => Some(wire),
            _ => {
                pool.give(wire);
                None
            }
        }
    }

    /// Gives the buffers back (the connection is closed, or goes idle into the pool).
    pub fn release(&mut self, pool: &mut Pool) {
        pool.give(std::mem::take(&mut self.tail));
        pool.give(std::mem::take(&mut self.wire));
    }

    /// Nothing held between exchanges: the connection may be pooled.
    pub fn is_quiet(&self) -> bool {
        self.tail.is_empty() && self.wire.is_empty() && !self.session.peer_closed()
    }
}
