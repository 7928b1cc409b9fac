//! The opening handshake, server side (RFC 6455 §4.2): checking an upgrade request,
//! computing `Sec-WebSocket-Accept`, and writing the 101 or the refusal.
//!
//! Header fields come as `(name, value)` pairs, values already stripped of surrounding
//! whitespace as the HTTP/1 parser leaves them. Names match case-insensitively; list-valued
//! fields are read as comma-separated lists across all their field lines (RFC 9110 §5.3).

use arrayvec::ArrayVec;

use super::{base64, sha1::Sha1, HandshakeError};
use crate::proto::http1::{self, ResponseBody, ResponseHead, Version};

/// Appended to the key before hashing (RFC 6455 §1.3).
pub const GUID: &[u8; 36] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Bytes of a `Sec-WebSocket-Accept` value: base64 of a 20-byte SHA-1 digest.
pub const ACCEPT_BYTES: usize = base64::encoded_len(super::sha1::DIGEST_BYTES);
/// Bytes a `Sec-WebSocket-Key` decodes to (RFC 6455 §4.1 item 7).
pub const KEY_NONCE_BYTES: usize = 16;
/// Bytes of a valid `Sec-WebSocket-Key` value.
pub const KEY_BYTES: usize = base64::encoded_len(KEY_NONCE_BYTES);
/// The only protocol version spoken (RFC 6455 §4.1 item 9).
pub const VERSION: &[u8] = b"13";
/// Fields of a handler's 101 that are dropped because zring writes its own (Condure does the
/// same, `condure-zhttp.md` §3.12). `Content-Length` and `Transfer-Encoding` are dropped by
/// the HTTP/1 writer (a 1xx has no body, RFC 9110 §8.6, §6.1).
const REPLACED_FIELDS: [&[u8]; 4] = [
    b"upgrade",
    b"connection",
    b"sec-websocket-accept",
    b"sec-websocket-extensions",
];
/// Fields zring adds to a 101: Upgrade, Connection, Accept, Protocol, Extensions.
const ADDED_FIELDS_MAX: usize = 5;

const _: () = assert!(ACCEPT_BYTES == 28);
const _: () = assert!(KEY_BYTES == 24);

/// A `Sec-WebSocket-Accept` value, ASCII.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AcceptKey([u8; ACCEPT_BYTES]);

impl AcceptKey {
    /// base64(SHA-1(key + GUID)) for the key exactly as the client sent it (RFC 6455 §4.2.2
    /// item 5.4). Does not check the key; [`validate_request`] does.
    pub fn from_key(key: &[u8]) -> Self {
        let digest = Sha1::digest(&[key, GUID]);
        let mut accept = [0u8; ACCEPT_BYTES];
        let len = base64::encode(&digest, &mut accept);
        debug_assert_eq!(len, ACCEPT_BYTES);
        AcceptKey(accept)
    }

    /// The value to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A `Sec-WebSocket-Key` for a client handshake (client mode): base64 of a 16-byte nonce
/// the caller drew at random (RFC 6455 §4.1 item 7). [`AcceptKey::from_key`] of it is the
/// `Sec-WebSocket-Accept` the server must answer with.
pub fn client_key(nonce: [u8; KEY_NONCE_BYTES]) -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    let len = base64::encode(&nonce, &mut key);
    debug_assert_eq!(len, KEY_BYTES);
    key
}

impl core::fmt::Debug for AcceptKey {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// A valid opening handshake: what the 101 needs and what the client offered. Borrows the
/// request's header array (`'h`) and its bytes (`'b`).
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'h, 'b> {
    /// The `Sec-WebSocket-Accept` value for the 101.
    pub accept: AcceptKey,
    /// The `Sec-WebSocket-Key` value as sent.
    pub key: &'b [u8],
    headers: &'h [(&'b [u8], &'b [u8])],
}

impl<'h, 'b> Handshake<'h, 'b> {
    /// The subprotocols the client offers, in order, from every `Sec-WebSocket-Protocol`
    /// field (RFC 6455 §4.1 item 10). Empty list elements are skipped.
    pub fn protocols(&self) -> impl Iterator<Item = &'b [u8]> + 'h {
        self.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"sec-websocket-protocol"))
            .flat_map(|(_, value)| list_elements(value))
    }

    /// The raw value of each `Sec-WebSocket-Extensions` field, in order, for the extension
    /// negotiation to parse (RFC 6455 §9.1).
    pub fn extensions(&self) -> impl Iterator<Item = &'b [u8]> + 'h {
        self.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"sec-websocket-extensions"))
            .map(|(_, value)| *value)
    }
}

/// Checks an upgrade request (RFC 6455 §4.2.1): GET, HTTP/1.1, `Upgrade` listing
/// `websocket`, `Connection` listing `upgrade`, one `Sec-WebSocket-Key` that is the base64 of
/// 16 bytes, and `Sec-WebSocket-Version: 13`. Call it once `Upgrade: websocket` was seen.
///
/// The checks run in that order, so a request with several faults gets the first one's
/// answer; a wrong or missing version is reported before a bad key, so that the client
/// learns the version to use from the 426.
pub fn validate_request<'h, 'b>(
    method: &[u8],
    version: Version,
    headers: &'h [(&'b [u8], &'b [u8])],
) -> Result<Handshake<'h, 'b>, HandshakeError> {
    if method != b"GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if version != Version::Http11 {
        return Err(HandshakeError::VersionNotHttp11);
    }
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut key = None;
    let mut key_count = 0usize;
    let mut ws_version = None;
    let mut ws_version_count = 0usize;
    for &(name, value) in headers {
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= list_contains(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= list_contains(value, b"upgrade");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            key = Some(trim_ows(value));
            key_count += 1;
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            ws_version = Some(trim_ows(value));
            ws_version_count += 1;
        }
    }
    if !upgrade {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !connection_upgrade {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if ws_version_count > 1 {
        return Err(HandshakeError::DuplicateVersion);
    }
    if ws_version != Some(VERSION) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = key.ok_or(HandshakeError::MissingKey)?;
    if key_count > 1 {
        return Err(HandshakeError::DuplicateKey);
    }
    let mut nonce = [0u8; KEY_NONCE_BYTES];
    if key.len() != KEY_BYTES || base64::decode(key, &mut nonce) != Some(KEY_NONCE_BYTES) {
        return Err(HandshakeError::BadKey);
    }
    Ok(Handshake {
        accept: AcceptKey::from_key(key),
        key,
        headers,
    })
}

/// Appends the 101 that completes the handshake: `HTTP/1.1 101 Switching Protocols`, the
/// handler's `headers` in order minus those zring writes itself (`Upgrade`, `Connection`,
/// `Sec-WebSocket-Accept`, `Sec-WebSocket-Extensions`, and `Sec-WebSocket-Protocol` when
/// `protocol` is given; `Content-Length` and `Transfer-Encoding` never belong on a 1xx), then
/// `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Accept`, the chosen
/// `Sec-WebSocket-Protocol` and the `Sec-WebSocket-Extensions` response value if given.
///
/// Fails with [`http1::Error::BadResponse`] (502), leaving `out` as it was, when the handler
/// sent more than [`http1::HEADERS_MAX`] headers or one that would break the framing.
pub fn encode_accept(
    out: &mut Vec<u8>,
    accept: &AcceptKey,
    protocol: Option<&[u8]>,
    extensions: Option<&[u8]>,
    headers: &[(&[u8], &[u8])],
) -> Result<(), http1::Error> {
    if headers.len() > http1::HEADERS_MAX {
        return Err(http1::Error::BadResponse);
    }
    let mut fields: ArrayVec<(&[u8], &[u8]), { http1::HEADERS_MAX + ADDED_FIELDS_MAX }> =
        ArrayVec::new();
    for &(name, value) in headers {
        let replaced = REPLACED_FIELDS
            .iter()
            .any(|field| name.eq_ignore_ascii_case(field))
            || (protocol.is_some() && name.eq_ignore_ascii_case(b"sec-websocket-protocol"));
        if !replaced {
            fields.push((name, value));
        }
    }
    fields.push((b"Upgrade", b"websocket"));
    fields.push((b"Connection", b"Upgrade"));
    fields.push((b"Sec-WebSocket-Accept", accept.as_bytes()));
    if let Some(protocol) = protocol {
        fields.push((b"Sec-WebSocket-Protocol", protocol));
    }
    if let Some(extensions) = extensions {
        fields.push((b"Sec-WebSocket-Extensions", extensions));
    }
    let head = ResponseHead {
        version: Version::Http11,
        code: 101,
        reason: b"Switching Protocols",
        headers: &fields,
        body: ResponseBody::None,
        keep_alive: true,
    };
    http1::encode_response_head(out, &head)
}

/// Appends the complete refusal of a bad handshake: [`HandshakeError::status`], its extra
/// [`HandshakeError::headers`], `Content-Type: text/plain`, `Content-Length` and the
/// description as the body. The HTTP/1 writer adds `Connection: close` to a 1.1 answer; a
/// 1.0 one closes by default. Close the connection after writing it.
pub fn encode_rejection(out: &mut Vec<u8>, version: Version, error: HandshakeError) {
    let (code, reason) = error.status();
    let description = error.description().as_bytes();
    let mut fields: ArrayVec<(&[u8], &[u8]), 2> = ArrayVec::new();
    fields.push((b"Content-Type", b"text/plain"));
    fields.extend(error.headers().iter().copied());
    let head = ResponseHead {
        version,
        code,
        reason: reason.as_bytes(),
        headers: &fields,
        body: ResponseBody::Length(description.len() as u64 + 1),
        keep_alive: false,
    };
    let written = http1::encode_response_head(out, &head);
    debug_assert!(written.is_ok(), "fixed rejection head");
    if written.is_ok() {
        out.extend_from_slice(description);
        out.push(b'\n');
    }
}

/// The non-empty elements of a comma-separated list, without surrounding whitespace.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// Whether a comma-separated list holds `token`, compared case-insensitively.
fn list_contains(value: &[u8], token: &[u8]) -> bool {
    list_elements(value).any(|element| element.eq_ignore_ascii_case(token))
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}
