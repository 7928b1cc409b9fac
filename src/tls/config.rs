//! One `rustls::ServerConfig` per tls listener, shared (`Arc`) by every worker's sessions.
//!
//! - Versions: TLS 1.3 and TLS 1.2 (Mozilla "intermediate", as Condure's OpenSSL acceptor).
//! - Suites: ring's, kept only if ECDHE + AEAD ([`SUITES`]): TLS 1.3 AES-128-GCM, AES-256-GCM,
//!   ChaCha20-Poly1305; TLS 1.2 ECDHE-ECDSA and ECDHE-RSA with AES-128-GCM, AES-256-GCM,
//!   ChaCha20-Poly1305. ring offers no CBC or static-RSA suites, so this removes nothing
//!   today; the filter states the rule should the provider grow. Key exchange: ring's
//!   X25519, P-256, P-384.
//! - ALPN: `http/1.1` only. A client offering ALPN without it (h2 only) gets
//!   `no_application_protocol` (RFC 7301 §3.2); a client offering none is served.
//! - Resumption: stateless tickets (ring's ticketer, keys rotated by rustls) for TLS 1.3 and
//!   ticket-capable TLS 1.2 clients, [`TLS13_TICKETS_SENT`] per handshake; a stateful cache
//!   of [`TLS_SESSIONS_CACHED_MAX`] sessions for TLS 1.2 clients without tickets.
//! - No 0-RTT (replayable requests), no client certificates, `max_fragment_size` default.
//! - Buffers: none to limit. Sessions use the unbuffered API (`session`), whose caller owns
//!   every byte in flight; `set_buffer_limit` applies only to the buffered connection.
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::server::ServerSessionMemoryCache;
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};

use crate::limits::{TLS13_TICKETS_SENT, TLS_SESSIONS_CACHED_MAX};
use crate::tls::identities::{Identities, Resolver};

/// The suites a listener offers, in preference order: ECDHE (TLS 1.2) or TLS 1.3 key
/// exchange with an AEAD cipher.
///
/// AES-128-GCM comes first (Mozilla's "intermediate" order) and the server's order wins: its
/// SHA-256 key schedule costs less per handshake than AES-256-GCM's SHA-384 one (measured: the
/// SHA-512 block function was 12 % of zring's CPU under `bench-tls.sh` handshakes while
/// clients' preference for AES-256 was honoured).
pub const SUITES: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The ALPN protocol listeners speak.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// ring, with its cipher suites cut to [`SUITES`]. One per process; identities parse keys
/// with it too.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = ring::default_provider();
    provider
        .cipher_suites
        .retain(|s: &SupportedCipherSuite| SUITES.contains(&s.suite()));
    provider
        .cipher_suites
        .sort_by_key(|s| SUITES.iter().position(|&x| x == s.suite()));
    assert!(!provider.cipher_suites.is_empty());
    Arc::new(provider)
}

/// The server configuration of one tls listener: certificates from `identities` (SNI exact,
/// wildcard, then `default_name`).
pub fn server_config(
    provider: Arc<CryptoProvider>,
    identities: Arc<Identities>,
    default_name: Option<&str>,
) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver::new(identities, default_name)));
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(TLS_SESSIONS_CACHED_MAX);
    config.ticketer = ring::Ticketer::new().map_err(|e| format!("tls ticketer: {e}"))?;
    config.send_tls13_tickets = TLS13_TICKETS_SENT;
    config.max_early_data_size = 0;
    config.ignore_client_order = true;
    assert!(config.max_fragment_size.is_none());
    Ok(Arc::new(config))
}
