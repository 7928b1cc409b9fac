//! One client connection's TLS, sans-IO: ciphertext in, plaintext and TLS records out.
//!
//! ## Why rustls's unbuffered API
//! The buffered `ServerConnection` owns a receive buffer that, once used, keeps at least
//! 4 KiB of capacity (its deframer's read size) for the connection's whole life, plus
//! plaintext and record queues; an idle keep-alive or WebSocket connection would hold
//! them. `UnbufferedServerConnection` holds no byte buffers between calls: the caller passes
//! the received ciphertext in (`&mut [u8]`; records are deframed and decrypted in place
//! there; rustls 0.23 then copies each record's plaintext into a short-lived `Vec` that
//! `feed` drains into the caller's `plaintext` before it returns), and every output is
//! written into a buffer the caller passes. Between
//! calls a session holds only rustls's state (traffic keys, a few flags); see
//! `tests/tls_memory.rs` for the measured figure. The connection core already keeps an
//! unconsumed tail of received bytes in its pooled `spill`, which is exactly the contract
//! the unbuffered API asks for.
//!
//! ## Contract
//! - [`Session::feed`] takes everything received and not yet consumed, oldest first. It
//!   returns how many bytes were consumed; the caller keeps the rest **unchanged** (rustls
//!   may have rewritten it in place to join a handshake message spanning records) and
//!   passes it again, with newer bytes appended, to the next `feed`, or as `unconsumed` to
//!   [`Session::encrypt`] / [`Session::close_notify`].
//! - Records to send (handshake, alerts) are appended to the caller's `out`; send them in
//!   order with the output of later calls.
//! - [`Session::sni`]: rustls 0.23's unbuffered server connection has no SNI getter, so the
//!   certificate resolver (`identities::Resolver`) notes the name in a thread-local that
//!   `feed` takes after rustls returns (same thread, same call).
//! - Errors are sticky ([`TlsError`]): after one, every call returns it. The fatal alert it
//!   caused, if any, is already in `out`; send it, then close.
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, WriteTraffic,
};
use rustls::{HandshakeKind, ServerConfig};

use crate::limits::TLS_IDENTITY_NAME_BYTES_MAX;

/// Why a session ended. Each variant has the alert (if any) already queued by `feed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsError {
    /// The first bytes were plain HTTP, not a TLS record (a client using `http://` on a TLS
    /// port). rustls's alert is in `out`; the caller may log this distinctly.
    PlainHttp,
    /// The bytes were not TLS (not a record, or not a ClientHello first).
    NotTls,
    /// No certificate for the client's server name and no `default-cert`
    /// (`unrecognized_name` sent, as Condure does).
    NoCertificate,
    /// No version, suite, group or ALPN protocol in common with the client.
    Incompatible,
    /// The client broke the protocol (bad message, bad MAC, unexpected record).
    Protocol,
    /// The client sent a fatal alert.
    PeerAlert,
    /// The traffic keys are used up (2^64 records in TLS 1.2): close.
    Exhausted,
    /// `encrypt` or `close_notify` before the handshake completed, or after the session
    /// closed: a programmer error in the caller, reported rather than panicking.
    NotReady,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsError::PlainHttp => "plain HTTP request on a TLS port",
            TlsError::NotTls => "not a TLS client",
            TlsError::NoCertificate => "no certificate for the requested server name",
            TlsError::Incompatible => "no TLS parameters in common with the client",
            TlsError::Protocol => "TLS protocol error",
            TlsError::PeerAlert => "client sent a fatal TLS alert",
            TlsError::Exhausted => "TLS traffic keys exhausted",
            TlsError::NotReady => "TLS session not ready",
        })
    }
}

impl std::error::Error for TlsError {}

/// The result of one [`Session::feed`].
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input consumed; the rest stays with the caller (see the contract).
    pub consumed: usize,
    /// The client sent `close_notify`: no more plaintext will come, and anything after it
    /// is reported consumed and dropped. Answer with `close_notify`, then close.
    pub peer_closed: bool,
}

thread_local! {
    /// The SNI rustls handed our certificate resolver during the current `feed` on this
    /// thread (rustls 0.23's unbuffered server connection has no SNI getter).
    static RESOLVED_SNI: RefCell<Option<Option<Box<str>>>> = const { RefCell::new(None) };
}

/// Called by the certificate resolver, synchronously inside `feed`.
pub(crate) fn note_sni(sni: Option<&str>) {
    let sni = sni
        .filter(|s| s.len() <= TLS_IDENTITY_NAME_BYTES_MAX)
        .map(|s| s.to_ascii_lowercase().into_boxed_str());
    RESOLVED_SNI.with(|slot| *slot.borrow_mut() = Some(sni));
}

/// One connection's TLS state. Holds no buffer between calls.
pub struct Session {
    conn: UnbufferedServerConnection,
    /// Invariant: once set, never cleared; every call returns it.
    failed: Option<TlsError>,
    /// Bytes the last `feed` left unconsumed: what `encrypt`/`close_notify` must be given.
    unconsumed_bytes: usize,
    /// The first byte the client sent, to tell plain HTTP from other non-TLS input.
    first_byte: Option<u8>,
    sni: Option<Box<str>>,
    peer_closed: bool,
    /// Our `close_notify` went into `out`.
    close_sent: bool,
    closed: bool,
}

impl Session {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        // Fails only for a config rustls rejects (none of ours: see `config`).
        let conn = UnbufferedServerConnection::new(config).expect("valid server config");
        Self {
            conn,
            failed: None,
            unconsumed_bytes: 0,
            first_byte: None,
            sni: None,
            peer_closed: false,
            close_sent: false,
            closed: false,
        }
    }

    /// Both sides sent `close_notify`: nothing more to read or write.
    pub fn is_closed(&self) -> bool {
        self.closed || (self.peer_closed && self.close_sent)
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The client's server name, lower-cased (known once the ClientHello was processed).
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The negotiated ALPN protocol (`http/1.1`), if the client offered ALPN.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Full or resumed handshake, once known.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.conn.handshake_kind()
    }

    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Processes received ciphertext: handshake records answered into `out`, application
    /// data decrypted and appended to `plaintext`. Call with everything received and not
    /// yet consumed.
    pub fn feed(
        &mut self,
        ciphertext: &mut [u8],
        plaintext: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Fed, TlsError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.first_byte.is_none() {
            self.first_byte = ciphertext.first().copied();
        }
        RESOLVED_SNI.with(|slot| slot.borrow_mut().take());
        let mut consumed = 0;
        let result = self.feed_records(ciphertext, &mut consumed, plaintext, out);
        if let Some(sni) = RESOLVED_SNI.with(|slot| slot.borrow_mut().take()) {
            self.sni = sni;
        }
        assert!(consumed <= ciphertext.len());
        match result {
            Ok(()) => {
                if self.peer_closed {
                    // Bytes after the client's close_notify are ignored (RFC 8446 §6.1):
                    // consumed, so the caller holds no tail that can only grow.
                    consumed = ciphertext.len();
                }
                self.unconsumed_bytes = ciphertext.len() - consumed;
                Ok(Fed {
                    consumed,
                    peer_closed: self.peer_closed,
                })
            }
            Err(error) => {
                let e = self.classify(&error);
                self.fail(e, out);
                Err(e)
            }
        }
    }

    /// The session's error for a rustls error. Before the handshake got anywhere, bad input
    /// is `NotTls`, or `PlainHttp` when it starts with an upper-case letter (a request
    /// method: no TLS record type is in `A..=Z`).
    fn classify(&self, error: &rustls::Error) -> TlsError {
        use rustls::Error as E;
        match error {
            E::InvalidMessage(_) | E::InappropriateMessage { .. }
                if self.conn.protocol_version().is_none() =>
            {
                match self.first_byte {
                    Some(b'A'..=b'Z') => TlsError::PlainHttp,
                    _ => TlsError::NotTls,
                }
            }
            E::General(s) if s.contains("no server certificate") => TlsError::NoCertificate,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => TlsError::Incompatible,
            E::AlertReceived(_) => TlsError::PeerAlert,
            E::EncryptError => TlsError::Exhausted,
            _ => TlsError::Protocol,
        }
    }

    /// Runs rustls over `ciphertext` until it needs more input; `consumed` counts the bytes
    /// it is done with, also when it fails.
    fn feed_records(
        &mut self,
        ciphertext: &mut [u8],
        consumed: &mut usize,
        plaintext: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        let length = ciphertext.len();
        loop {
            let status = self.conn.process_tls_records(&mut ciphertext[*consumed..]);
            *consumed += status.discard;
            assert!(*consumed <= length);
            let mut discard = 0;
            let mut more = true;
            match status.state? {
                ConnectionState::ReadTraffic(mut read) => {
                    while let Some(record) = read.next_record() {
                        let record = record?;
                        discard += record.discard;
                        plaintext.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::ReadEarlyData(mut read) => {
                    // 0-RTT is off (`max_early_data_size` 0): drop whatever shows up.
                    while let Some(record) = read.next_record() {
                        discard += record?.discard;
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    write_into(out, |buf| match encode.encode(buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => Err(s),
                        Err(EncodeError::AlreadyEncoded) => Ok(0),
                    });
                }
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    more = false;
                }
                ConnectionState::Closed => {
                    self.closed = true;
                    more = false;
                }
                // BlockedHandshake, WriteTraffic: all input that can be processed was.
                _ => more = false,
            }
            *consumed += discard;
            assert!(*consumed <= length);
            if !more {
                return Ok(());
            }
        }
    }

    /// Encrypts `data` into records appended to `out`. `unconsumed` is what the last `feed`
    /// left unconsumed (rustls may refer to it).
    pub fn encrypt(
        &mut self,
        unconsumed: &mut [u8],
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        self.write_traffic(unconsumed, out, |write, buf| write.encrypt(data, buf))
    }

    /// Appends an encrypted `close_notify` alert to `out`.
    pub fn close_notify(
        &mut self,
        unconsumed: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        self.write_traffic(unconsumed, out, |write, buf| write.queue_close_notify(buf))?;
        self.close_sent = true;
        Ok(())
    }

    fn write_traffic(
        &mut self,
        unconsumed: &mut [u8],
        out: &mut Vec<u8>,
        mut write: impl FnMut(
            &mut WriteTraffic<'_, ServerConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) -> Result<(), TlsError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        assert_eq!(unconsumed.len(), self.unconsumed_bytes);
        // Bounded: each turn either writes a queued record or ends.
        for _ in 0..16 {
            let status = self.conn.process_tls_records(unconsumed);
            debug_assert_eq!(status.discard, 0);
            let state = match status.state {
                Ok(state) => state,
                Err(error) => {
                    let e = self.classify(&error);
                    self.fail(e, out);
                    return Err(e);
                }
            };
            match state {
                ConnectionState::WriteTraffic(mut traffic) => {
                    let result = encrypt_into(&mut traffic, &mut write, out);
                    self.failed = result.err();
                    return result;
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    write_into(out, |buf| match encode.encode(buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => Err(s),
                        Err(EncodeError::AlreadyEncoded) => Ok(0),
                    });
                }
                ConnectionState::TransmitTlsData(mut transmit) => {
                    if let Some(mut traffic) = transmit.may_encrypt_app_data() {
                        let result = encrypt_into(&mut traffic, &mut write, out);
                        transmit.done();
                        self.failed = result.err();
                        return result;
                    }
                    transmit.done();
                }
                ConnectionState::PeerClosed => self.peer_closed = true,
                _ => return Err(TlsError::NotReady),
            }
        }
        Err(TlsError::NotReady)
    }

    /// Makes `e` sticky and appends the alert rustls queued for it, if any, to `out`.
    fn fail(&mut self, e: TlsError, out: &mut Vec<u8>) {
        self.failed = Some(e);
        let start = out.len();
        self.take_alert(out);
        if e == TlsError::NoCertificate {
            unrecognized_name(&mut out[start..]);
        }
        if out.len() == start && e == TlsError::NotTls && self.conn.protocol_version().is_none() {
            // rustls gives up on some malformed first records (a handshake message longer
            // than it accepts) without queuing an alert; the client still gets told why. No
            // keys exist yet, so the alert is a plaintext record.
            out.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, DECODE_ERROR]);
        }
    }

    fn take_alert(&mut self, out: &mut Vec<u8>) {
        // rustls hands out queued records before it looks at input, so while one is queued
        // a call with no input yields it and deframes nothing: no second fatal alert, and
        // no look into a buffer a joined handshake message may still point into.
        for _ in 0..4 {
            if !self.conn.wants_write() {
                return;
            }
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    write_into(out, |buf| match encode.encode(buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => Err(s),
                        Err(EncodeError::AlreadyEncoded) => Ok(0),
                    });
                }
                _ => return,
            }
        }
    }
}

/// Appends the records `write` makes in the write-traffic state to `out` (server and
/// client sessions alike).
pub(super) fn encrypt_into<Data>(
    traffic: &mut WriteTraffic<'_, Data>,
    write: &mut impl FnMut(&mut WriteTraffic<'_, Data>, &mut [u8]) -> Result<usize, EncryptError>,
    out: &mut Vec<u8>,
) -> Result<(), TlsError> {
    let mut exhausted = false;
    write_into(out, |buf| match write(traffic, buf) {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(s)) => Err(s),
        Err(_) => {
            exhausted = true;
            Ok(0)
        }
    });
    match exhausted {
        true => Err(TlsError::Exhausted),
        false => Ok(()),
    }
}

/// The `decode_error` alert description (RFC 8446 §6.2).
const DECODE_ERROR: u8 = 50;

/// rustls answers a ClientHello it has no certificate for with `access_denied`; Condure
/// (OpenSSL) answers `unrecognized_name` (RFC 6066 §3), which is what clients report and
/// what users of Condure know. The alert is still plaintext then (no keys yet), one record:
/// rewrite its description.
fn unrecognized_name(record: &mut [u8]) {
    const ACCESS_DENIED: u8 = 49;
    const UNRECOGNIZED_NAME: u8 = 112;
    if let [0x15, 0x03, _, 0x00, 0x02, 0x02, description] = record {
        if *description == ACCESS_DENIED {
            *description = UNRECOGNIZED_NAME;
        }
    }
}

/// Appends what `write` produces to `out`: asked first with no room, it names the size it
/// needs (rustls's `InsufficientSize`), so `out` grows by exactly that and nothing is
/// zero-filled twice.
pub(super) fn write_into(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, InsufficientSizeError>,
) {
    let start = out.len();
    let required_size = match write(&mut []) {
        Ok(n) => {
            assert_eq!(n, 0);
            return;
        }
        Err(InsufficientSizeError { required_size }) => required_size,
    };
    out.resize(start + required_size, 0);
    let n = write(&mut out[start..]).expect("a buffer of the size rustls asked for");
    assert!(n <= required_size);
    out.truncate(start + n);
}
