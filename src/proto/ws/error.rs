//! The WebSocket codec's two error types and their one mapping each to the wire: a close
//! code for [`Error`], an HTTP status for [`HandshakeError`].

use std::fmt;

use super::close_code;

/// Why the frame decoder or the session rejected the client's bytes. Every variant is fatal
/// for the connection (RFC 6455 §7.1.7 "Fail the WebSocket Connection"): send a close frame
/// with [`Error::close_code`] and [`Error::description`] as the reason, then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// A client frame without the mask bit (RFC 6455 §5.1: the server MUST close). 1002.
    Unmasked,
    /// A server frame with the mask bit, seen in client mode (RFC 6455 §5.1: the client
    /// MUST close). 1002.
    Masked,
    /// Opcode 0x3-0x7 or 0xB-0xF (RFC 6455 §5.2). 1002.
    ReservedOpcode,
    /// RSV1, RSV2 or RSV3 set where no negotiated extension gives it a meaning: RSV2/RSV3
    /// always, RSV1 unless compression was negotiated and the frame starts a data message
    /// (RFC 6455 §5.2, RFC 7692 §6). 1002.
    ReservedBits,
    /// A control frame with more than 125 payload bytes (RFC 6455 §5.5). 1002.
    ControlFrameTooLong,
    /// A control frame without FIN (RFC 6455 §5.5: control frames are not fragmented). 1002.
    FragmentedControlFrame,
    /// A payload length not in its shortest form (RFC 6455 §5.2: "the minimal number of
    /// bytes MUST be used"). 1002.
    NonMinimalLength,
    /// A 64-bit payload length with the most significant bit set (RFC 6455 §5.2). 1002.
    LengthOverflow,
    /// A continuation frame with no fragmented message open (RFC 6455 §5.4). 1002.
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still open (RFC 6455 §5.4). 1002.
    ExpectedContinuation,
    /// A close frame with a 1-byte payload (RFC 6455 §5.5.1: a body starts with a 2-byte
    /// code). 1002.
    ClosePayloadTooShort,
    /// A close code that may not be sent in a close frame (RFC 6455 §7.4: 1004-1006, 1015,
    /// below 1000, 1016-2999, 5000 and up). 1002.
    InvalidCloseCode,
    /// A text message that is not UTF-8 (RFC 6455 §8.1). 1007.
    InvalidUtf8,
    /// A close reason that is not UTF-8 (RFC 6455 §5.5.1). 1007.
    InvalidCloseReason,
    /// A message longer than the session's `message_bytes_max` (RFC 6455 §7.4.1). 1009.
    MessageTooLarge,
}

impl Error {
    /// The close code to send (RFC 6455 §7.4.1): the one place errors meet close codes.
    pub fn close_code(self) -> u16 {
        match self {
            Error::Unmasked
            | Error::Masked
            | Error::ReservedOpcode
            | Error::ReservedBits
            | Error::ControlFrameTooLong
            | Error::FragmentedControlFrame
            | Error::NonMinimalLength
            | Error::LengthOverflow
            | Error::UnexpectedContinuation
            | Error::ExpectedContinuation
            | Error::ClosePayloadTooShort
            | Error::InvalidCloseCode => close_code::PROTOCOL_ERROR,
            Error::InvalidUtf8 | Error::InvalidCloseReason => close_code::INVALID_PAYLOAD,
            Error::MessageTooLarge => close_code::MESSAGE_TOO_BIG,
        }
    }

    /// A short reason, ASCII and at most 123 bytes, fit for the close frame and a log line.
    pub fn description(self) -> &'static str {
        match self {
            Error::Unmasked => "unmasked client frame",
            Error::Masked => "masked server frame",
            Error::ReservedOpcode => "reserved opcode",
            Error::ReservedBits => "reserved bits set",
            Error::ControlFrameTooLong => "control frame too long",
            Error::FragmentedControlFrame => "fragmented control frame",
            Error::NonMinimalLength => "non-minimal payload length",
            Error::LengthOverflow => "payload length overflow",
            Error::UnexpectedContinuation => "continuation without a message",
            Error::ExpectedContinuation => "new message inside a fragmented one",
            Error::ClosePayloadTooShort => "close payload of one byte",
            Error::InvalidCloseCode => "invalid close code",
            Error::InvalidUtf8 => "invalid UTF-8 in text message",
            Error::InvalidCloseReason => "invalid UTF-8 in close reason",
            Error::MessageTooLarge => "message too large",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.description())
    }
}

impl std::error::Error for Error {}

/// Why an upgrade request is not a valid WebSocket opening handshake (RFC 6455 §4.2.1).
/// Answer with [`HandshakeError::status`] and close; see [`super::encode_rejection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeError {
    /// The method is not GET. 400.
    MethodNotGet,
    /// The version is not HTTP/1.1 (RFC 6455 §4.1 requires 1.1 or higher). 400.
    VersionNotHttp11,
    /// No `Upgrade` field lists the `websocket` token. 400.
    MissingUpgrade,
    /// No `Connection` field lists the `upgrade` token. 400.
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key` field. 400.
    MissingKey,
    /// More than one `Sec-WebSocket-Key` field (RFC 6455 §11.3.1). 400.
    DuplicateKey,
    /// A `Sec-WebSocket-Key` that is not the base64 of exactly 16 bytes. 400.
    BadKey,
    /// More than one `Sec-WebSocket-Version` field (RFC 6455 §11.3.5). 400.
    DuplicateVersion,
    /// No `Sec-WebSocket-Version`, or one other than 13: 426 with
    /// `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2 item 4).
    UnsupportedVersion,
}

impl HandshakeError {
    /// The HTTP status code and reason phrase to answer with.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HandshakeError::UnsupportedVersion => (426, "Upgrade Required"),
            _ => (400, "Bad Request"),
        }
    }

    /// Header fields the response must carry besides the usual ones: the supported version
    /// on a 426 (RFC 6455 §4.4).
    pub fn headers(self) -> &'static [(&'static [u8], &'static [u8])] {
        match self {
            HandshakeError::UnsupportedVersion => &[(b"Sec-WebSocket-Version", b"13")],
            _ => &[],
        }
    }

    /// A one-line description, fit for a log line or a `text/plain` body.
    pub fn description(self) -> &'static str {
        match self {
            HandshakeError::MethodNotGet => "WebSocket upgrade requires GET",
            HandshakeError::VersionNotHttp11 => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::MissingUpgrade => "missing Upgrade: websocket",
            HandshakeError::MissingConnectionUpgrade => "missing Connection: upgrade",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::DuplicateKey => "more than one Sec-WebSocket-Key",
            HandshakeError::BadKey => "invalid Sec-WebSocket-Key",
            HandshakeError::DuplicateVersion => "more than one Sec-WebSocket-Version",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.description())
    }
}

impl std::error::Error for HandshakeError {}
