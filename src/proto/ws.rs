//! WebSocket (RFC 6455), sans-IO: the opening handshake, frames, and the session rules that
//! turn the peer's frames into messages. Server side for zring's listeners; the frame
//! layer also takes the client role ([`Role::Client`]) for client mode's outbound
//! WebSocket, with [`client_key`] and [`AcceptKey`] for its handshake.
//!
//! Owns the WebSocket wire format on the client side of zring:
//! - [`validate_request`] checks an upgrade request and computes the accept key;
//!   [`encode_accept`] writes the 101, [`encode_rejection`] the 400 or 426;
//! - [`Session`] decodes the client's stream into [`Event`]s (message start, data pieces,
//!   message end, ping, pong, close), enforcing fragmentation, UTF-8, close-frame and
//!   message-size rules, unmasking in place and allocating nothing;
//! - [`FrameDecoder`] is the frame layer below it, usable alone; [`encode_header`],
//!   [`encode_frame`] and [`encode_close`] write server frames; [`unmask`] and
//!   [`unmask_into`] apply a mask key to payload pieces;
//! - [`CloseState`] tracks the closing handshake.
//!
//! Must not know: sockets, clocks, threads, ZHTTP, compression. permessage-deflate lives in
//! its own module; here it is only a flag ([`SessionConfig::compression`]) under which RSV1
//! on a message's first frame is reported as [`Event::MessageStart`]`{ compressed: true }`.
//!
//! Every error is one [`Error`] variant (fatal; [`Error::close_code`] is the one mapping to
//! a close code) or one [`HandshakeError`] variant ([`HandshakeError::status`] gives the
//! HTTP answer).

mod base64;
mod error;
mod frame;
mod handshake;
mod message;
mod sha1;
mod utf8;

#[cfg(test)]
mod tests;

pub use error::{Error, HandshakeError};
pub use frame::{
    encode_close, encode_frame, encode_header, encode_masked_frame, unmask, unmask_into,
    ClosePayload, Decoded, EncodedHeader, FrameDecoder, FrameHeader, FrameItem, Opcode,
    PayloadPiece, Role, CLIENT_HEADER_BYTES_MAX, PAYLOAD_BYTES_MAX, SERVER_HEADER_BYTES_MAX,
};
pub use handshake::{
    client_key, encode_accept, encode_rejection, validate_request, AcceptKey, Handshake,
    ACCEPT_BYTES, GUID, KEY_BYTES, KEY_NONCE_BYTES, VERSION,
};
pub use message::{parse_close, CloseState, Event, MessageKind, Session, SessionConfig, Step};
pub use utf8::{is_valid as is_valid_utf8, Utf8Error, Utf8Validator};

/// Most payload bytes in a control frame (RFC 6455 §5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// Close status codes (RFC 6455 §7.4) and which of them a close frame may carry.
pub mod close_code {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: u16 = 1000;
    /// 1001: the endpoint is going away (server shutdown, page left).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// 1005: no code was present. Never sent in a frame.
    pub const NO_STATUS: u16 = 1005;
    /// 1006: closed without a close frame. Never sent in a frame.
    pub const ABNORMAL: u16 = 1006;
    /// 1007: payload inconsistent with the message type (text that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: policy violation.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: u16 = 1010;
    /// 1011: an unexpected condition on the server.
    pub const INTERNAL_ERROR: u16 = 1011;

    /// Whether a close frame may carry `code` (RFC 6455 §7.4.1-7.4.2): 1000-1003, 1007-1011,
    /// 1012-1014 (registered with IANA since: service restart, try again later, bad
    /// gateway), 3000-4999. Not 1004 (reserved), 1005, 1006, 1015 (reserved for reporting,
    /// never sent), nor anything else below 3000 (reserved for the protocol) or above 4999.
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}
