//! Client mode's TLS to origins: the client configurations (built once at start, shared by
//! every worker) and one outbound connection's TLS state, sans-IO over rustls's unbuffered
//! client API (ciphertext in, plaintext and records out, no buffers held between calls: the
//! same contract as the server side's [`super::Session`]).
//!
//! ## Verification
//! - Roots: the system's CA store through `rustls-native-certs` (`/etc/ssl/certs`, or the
//!   `SSL_CERT_FILE`/`SSL_CERT_DIR` files OpenSSL reads, so an origin trusted by
//!   pushpin-connmgr is trusted here), loaded once by [`ClientTls::load`]; Mozilla's roots
//!   (`webpki-roots`) when that store is empty.
//! - SNI and the name checked: the URI's host. With `trust-connect-host` the certificate may
//!   match the URI's host *or* `connect-host` (zurl's rule; pushpin-connmgr checks only
//!   connect-host and sends it as SNI). Accepting either is never weaker than the default,
//!   which accepts the URI's host, and keeps SNI on the name the origin serves.
//! - `ignore-tls-errors`: any certificate chain and name is accepted, but the handshake's
//!   signatures are still checked against the certificate presented (it proves the peer
//!   holds that key; a broken handshake still fails).
//! - `client-cert`/`client-key`: PEM *contents* (Pushpin reads its routes' files and sends
//!   what they hold; pushpin-connmgr parses the strings), a chain and its key.
//!
//! Configurations that differ per request (a client certificate, `trust-connect-host`) are
//! built on first use and kept in a small bounded cache, so a route's repeated requests share
//! one configuration: its session resumption store, and one identity for the pool's key.
use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, WriteTraffic};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    SignatureScheme,
};

use super::session::{encrypt_into, write_into};
use crate::limits::OUT_TLS_CONFIGS_CACHED_MAX;

/// Where the roots came from (logged at start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootsSource {
    /// The system store (or `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    System,
    /// The system store was empty: Mozilla's roots compiled in.
    Mozilla,
    /// Given by the caller (tests, the in-process harness).
    Given,
}

/// What a request asks of TLS (its first packet's fields).
#[derive(Clone, Copy, Debug, Default)]
pub struct Wants<'a> {
    pub ignore_tls_errors: bool,
    /// `trust-connect-host`: the name a certificate may match besides the URI's host.
    pub trust_name: Option<&'a str>,
    /// `client-cert` and `client-key` (PEM).
    pub client_cert: Option<(&'a [u8], &'a [u8])>,
}

/// A configuration built for one combination of [`Wants`].
struct Custom {
    ignore_tls_errors: bool,
    trust_name: Option<Box<str>>,
    client_cert: Option<PemPair>,
    config: Arc<ClientConfig>,
}

/// A client certificate chain and its key, PEM.
type PemPair = (Box<[u8]>, Box<[u8]>);

/// The client configurations of the process. One, shared (`Arc`) by the workers.
pub struct ClientTls {
    provider: Arc<CryptoProvider>,
    webpki: Arc<WebPkiServerVerifier>,
    /// Verified against the roots, no client certificate.
    verified: Arc<ClientConfig>,
    /// `ignore-tls-errors`, no client certificate.
    insecure: Arc<ClientConfig>,
    /// The others, most recently used last (≤ `OUT_TLS_CONFIGS_CACHED_MAX`).
    custom: Mutex<Vec<Custom>>,
    pub roots_source: RootsSource,
    pub roots_count: usize,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientTls({:?}, {} roots)",
            self.roots_source, self.roots_count
        )
    }
}

/// The system's roots, or Mozilla's where the system has none. Certificates the system
/// store holds that webpki cannot parse are skipped (as rustls-native-certs advises).
pub fn system_roots() -> (RootCertStore, RootsSource) {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        crate::log!(crate::log::DEBUG, "client", "CA store: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return (roots, RootsSource::Mozilla);
    }
    (roots, RootsSource::System)
}

impl ClientTls {
    /// The configurations over the system's roots (read once, here).
    pub fn load(provider: Arc<CryptoProvider>) -> Result<ClientTls, String> {
        let (roots, source) = system_roots();
        ClientTls::new(provider, roots, source)
    }

    pub fn new(
        provider: Arc<CryptoProvider>,
        roots: RootCertStore,
        roots_source: RootsSource,
    ) -> Result<ClientTls, String> {
        let roots_count = roots.len();
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("tls roots: {e}"))?;
        let verified = build(&provider, webpki.clone(), None)?;
        let insecure = build(&provider, Arc::new(AcceptAny(provider.clone())), None)?;
        Ok(ClientTls {
            provider,
            webpki,
            verified,
            insecure,
            custom: Mutex::new(Vec::new()),
            roots_source,
            roots_count,
        })
    }

    /// The configuration for a request. `Err`: its client certificate or key is not PEM
    /// rustls can use.
    pub fn config(&self, wants: &Wants) -> Result<Arc<ClientConfig>, String> {
        let trust_name = wants.trust_name.filter(|_| !wants.ignore_tls_errors);
        match (trust_name, wants.client_cert) {
            (None, None) if wants.ignore_tls_errors => return Ok(self.insecure.clone()),
            (None, None) => return Ok(self.verified.clone()),
            _ => {}
        }
        let mut custom = self.custom.lock().unwrap();
        let same = |c: &Custom| {
            c.ignore_tls_errors == wants.ignore_tls_errors
                && c.trust_name.as_deref() == trust_name
                && c.client_cert.as_ref().map(|(c, k)| (&c[..], &k[..])) == wants.client_cert
        };
        if let Some(i) = custom.iter().position(same) {
            let c = custom.remove(i);
            let config = c.config.clone();
            custom.push(c);
            return Ok(config);
        }
        let verifier: Arc<dyn ServerCertVerifier> = match (wants.ignore_tls_errors, trust_name) {
            (true, _) => Arc::new(AcceptAny(self.provider.clone())),
            (false, Some(name)) => Arc::new(EitherName {
                inner: self.webpki.clone(),
                alt: ServerName::try_from(name.to_string())
                    .map_err(|_| format!("connect-host {name:?} is not a TLS name"))?,
            }),
            (false, None) => self.webpki.clone(),
        };
        let config = build(&self.provider, verifier, wants.client_cert)?;
        if custom.len() >= OUT_TLS_CONFIGS_CACHED_MAX {
            custom.remove(0);
        }
        custom.push(Custom {
            ignore_tls_errors: wants.ignore_tls_errors,
            trust_name: trust_name.map(Into::into),
            client_cert: wants.client_cert.map(|(c, k)| (c.into(), k.into())),
            config: config.clone(),
        });
        Ok(config)
    }
}

/// A client configuration: TLS 1.3 and 1.2, ALPN `http/1.1` (zring speaks HTTP/1.1 to
/// origins; an origin that would pick h2 without ALPN cannot), rustls's session resumption.
fn build(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    client_cert: Option<(&[u8], &[u8])>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client-cert: {e}"))?;
            if chain.is_empty() {
                return Err("client-cert: no certificate".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client-key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client-cert/client-key: {e}"))?
        }
    };
    config.alpn_protocols = vec![super::config::ALPN_HTTP11.to_vec()];
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// `trust-connect-host`: the URI's host, else `alt` (connect-host).
#[derive(Debug)]
struct EitherName {
    inner: Arc<WebPkiServerVerifier>,
    alt: ServerName<'static>,
}

impl ServerCertVerifier for EitherName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let first = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match first {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => self.inner.verify_server_cert(
                end_entity,
                intermediates,
                &self.alt,
                ocsp_response,
                now,
            ),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// `ignore-tls-errors`: any certificate, but a valid handshake signature by its key.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why an outbound TLS session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// The origin's certificate was refused (untrusted chain, wrong name, expired).
    Certificate,
    /// No version, suite or group in common with the origin.
    Incompatible,
    /// The origin broke the protocol.
    Protocol,
    /// The origin sent a fatal alert (a refused client certificate arrives as one).
    PeerAlert,
    /// The traffic keys are used up.
    Exhausted,
    /// `encrypt`/`close_notify` before the handshake finished or after the end: a caller's
    /// mistake, reported rather than panicking.
    NotReady,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientError::Certificate => "origin certificate refused",
            ClientError::Incompatible => "no TLS parameters in common with the origin",
            ClientError::Protocol => "TLS protocol error",
            ClientError::PeerAlert => "origin sent a fatal TLS alert",
            ClientError::Exhausted => "TLS traffic keys exhausted",
            ClientError::NotReady => "TLS session not ready",
        })
    }
}

fn classify(e: &rustls::Error) -> ClientError {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(_) | E::NoCertificatesPresented => ClientError::Certificate,
        E::PeerIncompatible(_) | E::NoApplicationProtocol => ClientError::Incompatible,
        E::AlertReceived(_) => ClientError::PeerAlert,
        E::EncryptError => ClientError::Exhausted,
        _ => ClientError::Protocol,
    }
}

/// One outbound connection's TLS state. Holds no buffer between calls; the contract of
/// [`super::Session`] (unconsumed ciphertext kept unchanged by the caller) applies.
pub struct ClientSession {
    conn: UnbufferedClientConnection,
    /// Invariant: once set, never cleared.
    failed: Option<ClientError>,
    peer_closed: bool,
    close_sent: bool,
}

/// The result of one [`ClientSession::feed`].
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    pub consumed: usize,
    /// The origin sent `close_notify`: the response ends cleanly here.
    pub peer_closed: bool,
}

impl ClientSession {
    /// A session to `name` (SNI and the name verified); its ClientHello goes into `out`.
    pub fn new(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        out: &mut Vec<u8>,
    ) -> Result<ClientSession, ClientError> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(|e| classify(&e))?;
        let mut s = ClientSession {
            conn,
            failed: None,
            peer_closed: false,
            close_sent: false,
        };
        let _hello = s.feed(&mut [], &mut Vec::new(), out)?;
        Ok(s)
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Processes received ciphertext (everything not yet consumed, oldest first):
    /// handshake records answered into `out`, application data appended to `plaintext`.
    pub fn feed(
        &mut self,
        ciphertext: &mut [u8],
        plaintext: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Fed, ClientError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut consumed = 0;
        let result = self.feed_records(ciphertext, &mut consumed, plaintext, out);
        assert!(consumed <= ciphertext.len());
        match result {
            Ok(()) => {
                if self.peer_closed {
                    consumed = ciphertext.len(); // nothing after close_notify counts
                }
                Ok(Fed {
                    consumed,
                    peer_closed: self.peer_closed,
                })
            }
            Err(error) => {
                crate::log!(crate::log::DEBUG, "client", "tls: {error}");
                let e = classify(&error);
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    fn feed_records(
        &mut self,
        ciphertext: &mut [u8],
        consumed: &mut usize,
        plaintext: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        let length = ciphertext.len();
        // Bounded: each round consumes input, writes a queued record, or ends.
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
                // BlockedHandshake, WriteTraffic, Closed: nothing more to do with the input.
                _ => more = false,
            }
            *consumed += discard;
            assert!(*consumed <= length);
            if !more {
                return Ok(());
            }
        }
    }

    /// Encrypts `data` into records appended to `out` (`unconsumed`: what the last `feed`
    /// left).
    pub fn encrypt(
        &mut self,
        unconsumed: &mut [u8],
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ClientError> {
        self.write_traffic(unconsumed, out, |write, buf| write.encrypt(data, buf))
    }

    /// Appends an encrypted `close_notify` to `out`.
    pub fn close_notify(
        &mut self,
        unconsumed: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ClientError> {
        if self.close_sent {
            return Ok(());
        }
        self.write_traffic(unconsumed, out, |write, buf| write.queue_close_notify(buf))?;
        self.close_sent = true;
        Ok(())
    }

    fn write_traffic(
        &mut self,
        unconsumed: &mut [u8],
        out: &mut Vec<u8>,
        mut write: impl FnMut(
            &mut WriteTraffic<'_, ClientConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) -> Result<(), ClientError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        // Bounded: each turn either writes a queued record or ends.
        for _ in 0..16 {
            let status = self.conn.process_tls_records(unconsumed);
            debug_assert_eq!(status.discard, 0);
            let state = match status.state {
                Ok(state) => state,
                Err(error) => {
                    let e = classify(&error);
                    self.failed = Some(e);
                    return Err(e);
                }
            };
            match state {
                ConnectionState::WriteTraffic(mut traffic) => {
                    let result = encrypt_into(&mut traffic, &mut write, out)
                        .map_err(|_| ClientError::Exhausted);
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
                        let result = encrypt_into(&mut traffic, &mut write, out)
                            .map_err(|_| ClientError::Exhausted);
                        transmit.done();
                        self.failed = result.err();
                        return result;
                    }
                    transmit.done();
                }
                ConnectionState::PeerClosed => self.peer_closed = true,
                _ => return Err(ClientError::NotReady),
            }
        }
        Err(ClientError::NotReady)
    }
}
