//! Messages on top of frames: one client's stream of frames checked against the session
//! rules of RFC 6455 (§5.4 fragmentation, §5.5 control frames, §5.6 and §8.1 UTF-8 text,
//! §7.4 close codes) and turned into [`Event`]s.
//!
//! [`Session::decode`] takes the caller's input as `&mut [u8]` and unmasks data payloads in
//! place, so a [`Event::Data`] is a slice of the input: message bytes are never copied.
//! Control frame payloads (at most 125 bytes) are gathered in a fixed array in the session,
//! which is what lets them be split across reads. Nothing is allocated.
//!
//! Text is validated as it arrives, piece by piece, and fails at the first byte that cannot
//! be UTF-8 (Autobahn's "fail fast" cases). A compressed message is not validated here: its
//! payload is deflate data, and the inflater validates what it produces (a [`Utf8Validator`]
//! over the inflated pieces). The size limit counts payload bytes as they are on the wire.

use core::num::NonZeroU64;

use super::{close_code, frame, utf8::Utf8Validator, Error, CONTROL_PAYLOAD_BYTES_MAX};
use frame::{FrameDecoder, FrameHeader, FrameItem, Opcode, PayloadPiece, Role};

/// Rules that differ between sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most payload bytes in one message, all its fragments counted. A frame that would go
    /// past it fails with [`Error::MessageTooLarge`] (1009) as soon as its header is in.
    pub message_bytes_max: u64,
    /// permessage-deflate was negotiated: RSV1 on the first frame of a data message is
    /// allowed and reported as `compressed` (RFC 7692 §6).
    pub compression: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            message_bytes_max: crate::limits::WS_MESSAGE_BYTES_MAX_DEFAULT,
            compression: false,
        }
    }
}

/// The type of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Opcode 0x1: UTF-8 text.
    Text,
    /// Opcode 0x2: binary data.
    Binary,
}

/// What the client's bytes meant, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A data message begins. Its payload follows as [`Event::Data`] pieces, then
    /// [`Event::MessageEnd`]; control events may come in between.
    MessageStart {
        /// Text or binary.
        kind: MessageKind,
        /// RSV1 was set: the payload is compressed (only when compression was negotiated).
        compressed: bool,
    },
    /// Payload bytes of the open message, unmasked, never empty. For an uncompressed text
    /// message the bytes so far are valid UTF-8 except that the last piece may end inside
    /// a character, completed by the next piece.
    Data(&'a [u8]),
    /// The open message is complete (and, for uncompressed text, valid UTF-8).
    MessageEnd,
    /// A ping with its payload (at most 125 bytes): answer with a pong carrying it.
    Ping(&'a [u8]),
    /// A pong with its payload.
    Pong(&'a [u8]),
    /// A close frame: `code` is `None` for an empty body, and then `reason` is empty. The
    /// session ignores any later input.
    Close {
        /// A valid close code (see [`close_code::is_valid`]), if the frame had a body.
        code: Option<u16>,
        /// The reason, UTF-8.
        reason: &'a str,
    },
}

/// The result of a [`Session::decode`] call.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// Bytes of the input used. All of it when `event` is `None`.
    pub consumed: usize,
    /// The next event, or `None` when the input is used up.
    pub event: Option<Event<'a>>,
}

/// The data message being received.
#[derive(Debug, Clone, Copy)]
struct Message {
    kind: MessageKind,
    compressed: bool,
    /// Payload bytes announced so far, all fragments. Invariant: `<= message_bytes_max`.
    len: u64,
    fin: bool,
    /// Used for uncompressed text only.
    utf8: Utf8Validator,
}

impl Message {
    fn validates_utf8(&self) -> bool {
        self.kind == MessageKind::Text && !self.compressed
    }
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// A data frame of the open message.
    Data,
    /// A control frame, gathered into `Session::control`.
    Control(Opcode),
}

/// One client's side of a WebSocket connection after the handshake.
///
/// Feed it every byte the client sends, in order, with [`Session::decode`]. Errors are
/// sticky: after one, every call returns it, and the caller sends a close frame with its
/// [`Error::close_code`] and closes.
#[derive(Debug, Clone)]
pub struct Session {
    config: SessionConfig,
    frames: FrameDecoder,
    message: Option<Message>,
    payload: Payload,
    /// Control payload bytes gathered so far. Invariant: `control_len <= 125`.
    control: [u8; CONTROL_PAYLOAD_BYTES_MAX],
    control_len: u8,
    /// The last data piece of a message was handed out; [`Event::MessageEnd`] is next.
    end_pending: bool,
    /// A close frame was received; input is ignored from here on.
    closed: bool,
    error: Option<Error>,
    /// Where the error was revealed when it was found inside a payload piece (never 0: an
    /// error takes at least one byte).
    error_position: Option<NonZeroU64>,
}

impl Session {
    /// A session at the start of the client's stream.
    pub fn new(config: SessionConfig) -> Self {
        Self::with_role(config, Role::Server)
    }

    /// A session at the start of the peer's stream, zring being `role` ([`Role::Client`]:
    /// client mode reads a server's unmasked frames).
    pub fn with_role(config: SessionConfig, role: Role) -> Self {
        Session {
            config,
            frames: FrameDecoder::with_role(role),
            message: None,
            payload: Payload::Data,
            control: [0; CONTROL_PAYLOAD_BYTES_MAX],
            control_len: 0,
            end_pending: false,
            closed: false,
            error: None,
            error_position: None,
        }
    }

    /// The rules this session enforces.
    pub fn config(&self) -> SessionConfig {
        self.config
    }

    /// Whether a close frame was received.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a data message is open (started and not yet ended).
    pub fn in_message(&self) -> bool {
        self.message.is_some() || self.end_pending
    }

    /// Whether the [`Event::Data`] just returned was the last piece of its message (its
    /// [`Event::MessageEnd`] is next), so a caller can mark it final without waiting.
    pub fn message_ending(&self) -> bool {
        self.end_pending
    }

    /// Whether the session holds nothing but its config: between frames, no message open,
    /// no error, no close seen. Such a session equals `Session::new(config)`, so a caller
    /// may drop it while the connection is idle and start a new one when bytes arrive.
    pub fn is_idle(&self) -> bool {
        self.message.is_none()
            && !self.end_pending
            && !self.closed
            && self.error.is_none()
            && self.frames.at_frame_boundary()
    }

    /// Bytes of the client's stream taken so far. After an error: the bytes up to and
    /// including the one that revealed it (for a text message, the first byte that cannot
    /// be UTF-8; for a truncated character, the message's last byte; for header rules,
    /// the byte that decides them, or the header's last byte for rules that need the whole
    /// header). It does not depend on how the stream was split into inputs.
    pub fn position(&self) -> u64 {
        self.error_position
            .map_or(self.frames.position(), NonZeroU64::get)
    }

    /// Decodes from `input`, unmasking data payloads in place, and returns at most one
    /// event. Call again with the rest (`&mut input[step.consumed..]`) until `event` is
    /// `None`, which means the input is used up: then wait for more. An event may take no
    /// bytes (the [`Event::MessageEnd`] after a message's last piece).
    pub fn decode<'a>(&'a mut self, input: &'a mut [u8]) -> Result<Step<'a>, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.end_pending {
            self.end_pending = false;
            return Ok(Step {
                consumed: 0,
                event: Some(Event::MessageEnd),
            });
        }
        if self.closed {
            self.frames.skip(input.len());
            return Ok(Step {
                consumed: input.len(),
                event: None,
            });
        }
        let mut consumed = 0;
        loop {
            let decoded = match self.frames.decode(&input[consumed..]) {
                Ok(decoded) => decoded,
                Err(error) => return Err(self.fail(error, None)),
            };
            let start = consumed;
            consumed += decoded.consumed;
            match decoded.item {
                None => {
                    debug_assert_eq!(consumed, input.len());
                    return Ok(Step {
                        consumed,
                        event: None,
                    });
                }
                Some(FrameItem::Header(header)) => {
                    if let Some(event) = self.on_header(header)? {
                        let event = self.header_event(event);
                        return Ok(Step { consumed, event });
                    }
                }
                Some(FrameItem::Payload(piece)) => {
                    debug_assert_eq!(piece.len, consumed - start);
                    let Payload::Control(opcode) = self.payload else {
                        let data = &mut input[start..consumed];
                        self.on_data(data, piece)?;
                        return Ok(Step {
                            consumed,
                            event: Some(Event::Data(data)),
                        });
                    };
                    self.gather_control(&input[start..consumed], piece);
                    if piece.end {
                        let event = self.control_event(opcode)?;
                        return Ok(Step {
                            consumed,
                            event: Some(event),
                        });
                    }
                }
            }
        }
    }

    /// Records a sticky error. `position` is where it was revealed, when that is not the
    /// frame decoder's position.
    fn fail(&mut self, error: Error, position: Option<u64>) -> Error {
        debug_assert!(self.error.is_none());
        self.error = Some(error);
        self.error_position = position
            .map(|position| NonZeroU64::new(position).expect("an error is revealed by a byte"));
        error
    }

    /// Applies the session rules to a complete header. Returns what to report now, if
    /// anything: a message start, a message end (empty last fragment), or a control frame
    /// with no payload.
    fn on_header(&mut self, header: FrameHeader) -> Result<Option<HeaderEvent>, Error> {
        match self.check_header(header) {
            Ok(event) => Ok(event),
            Err(error) => Err(self.fail(error, None)),
        }
    }

    fn check_header(&mut self, header: FrameHeader) -> Result<Option<HeaderEvent>, Error> {
        if header.rsv2 || header.rsv3 {
            return Err(Error::ReservedBits);
        }
        let opcode = header.opcode;
        if opcode.is_control() {
            if header.rsv1 {
                return Err(Error::ReservedBits);
            }
            if opcode == Opcode::Close && header.payload_len == 1 {
                return Err(Error::ClosePayloadTooShort);
            }
            self.payload = Payload::Control(opcode);
            self.control_len = 0;
            return Ok((header.payload_len == 0).then_some(HeaderEvent::Control(opcode)));
        }
        let message = match (opcode, &mut self.message) {
            (Opcode::Continuation, None) => return Err(Error::UnexpectedContinuation),
            (Opcode::Continuation, Some(message)) => {
                // RFC 7692 §6.1: RSV1 marks the first frame of a compressed message only.
                if header.rsv1 {
                    return Err(Error::ReservedBits);
                }
                message
            }
            (_, Some(_)) => return Err(Error::ExpectedContinuation),
            (_, None) => {
                if header.rsv1 && !self.config.compression {
                    return Err(Error::ReservedBits);
                }
                self.message.insert(Message {
                    kind: message_kind(opcode),
                    compressed: header.rsv1,
                    len: 0,
                    fin: false,
                    utf8: Utf8Validator::new(),
                })
            }
        };
        let len = message.len.saturating_add(header.payload_len);
        if len > self.config.message_bytes_max {
            return Err(Error::MessageTooLarge);
        }
        message.len = len;
        message.fin = header.fin;
        self.payload = Payload::Data;
        let first = opcode != Opcode::Continuation;
        let last = header.fin && header.payload_len == 0;
        if last {
            if message.validates_utf8() && !message.utf8.is_complete() {
                return Err(Error::InvalidUtf8);
            }
            self.message = None;
        }
        Ok(match (first, last) {
            (true, _) => Some(HeaderEvent::Start {
                kind: message_kind(opcode),
                compressed: header.rsv1,
                end_follows: last,
            }),
            (false, true) => Some(HeaderEvent::End),
            (false, false) => None,
        })
    }

    /// Turns what a header decided into the event to return.
    fn header_event(&mut self, event: HeaderEvent) -> Option<Event<'_>> {
        match event {
            HeaderEvent::Start {
                kind,
                compressed,
                end_follows,
            } => {
                self.end_pending = end_follows;
                Some(Event::MessageStart { kind, compressed })
            }
            HeaderEvent::End => Some(Event::MessageEnd),
            HeaderEvent::Control(opcode) => match self.control_event(opcode) {
                Ok(event) => Some(event),
                Err(_) => unreachable!("an empty control payload is always valid"),
            },
        }
    }

    /// Unmasks a data piece in place and checks it.
    fn on_data(&mut self, data: &mut [u8], piece: PayloadPiece) -> Result<(), Error> {
        if piece.mask != [0; 4] {
            // A zero key (and every server frame) leaves the bytes as they are.
            frame::unmask(data, piece.mask, piece.offset);
        }
        let message = self
            .message
            .as_mut()
            .expect("data frames belong to a message");
        if message.validates_utf8() {
            if let Err(error) = message.utf8.feed(data) {
                let piece_start = self.frames.position() - data.len() as u64;
                let position = piece_start + error.index as u64 + 1;
                return Err(self.fail(Error::InvalidUtf8, Some(position)));
            }
        }
        if piece.end && message.fin {
            if message.validates_utf8() && !message.utf8.is_complete() {
                return Err(self.fail(Error::InvalidUtf8, None));
            }
            self.message = None;
            self.end_pending = true;
        }
        Ok(())
    }

    /// Copies a control payload piece, unmasked, into the control buffer.
    fn gather_control(&mut self, piece_bytes: &[u8], piece: PayloadPiece) {
        let start = usize::from(self.control_len);
        let end = start + piece_bytes.len();
        debug_assert_eq!(start as u64, piece.offset);
        frame::unmask_into(
            piece_bytes,
            &mut self.control[start..end],
            piece.mask,
            piece.offset,
        );
        self.control_len = end as u8;
    }

    /// The event for the complete control frame in the control buffer.
    fn control_event(&mut self, opcode: Opcode) -> Result<Event<'_>, Error> {
        let len = usize::from(self.control_len);
        self.payload = Payload::Data;
        match opcode {
            Opcode::Ping => Ok(Event::Ping(&self.control[..len])),
            Opcode::Pong => Ok(Event::Pong(&self.control[..len])),
            Opcode::Close => {
                // Checked first and parsed again (at most 125 bytes, once per connection):
                // an event borrowing the buffer cannot share a path with `fail`.
                if let Err(error) = parse_close(&self.control[..len]) {
                    return Err(self.fail(error, None));
                }
                self.closed = true;
                let (code, reason) = parse_close(&self.control[..len]).expect("checked above");
                Ok(Event::Close { code, reason })
            }
            _ => unreachable!("data opcodes are not gathered"),
        }
    }
}

/// What a header alone can report.
#[derive(Debug, Clone, Copy)]
enum HeaderEvent {
    Start {
        kind: MessageKind,
        compressed: bool,
        /// The message is already complete (an empty single frame).
        end_follows: bool,
    },
    /// An empty last fragment ended the message.
    End,
    /// A control frame with an empty payload.
    Control(Opcode),
}

fn message_kind(opcode: Opcode) -> MessageKind {
    match opcode {
        Opcode::Text => MessageKind::Text,
        _ => MessageKind::Binary,
    }
}

/// Reads a close frame body (RFC 6455 §5.5.1): empty, or a valid code and a UTF-8 reason.
pub fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &str), Error> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(Error::ClosePayloadTooShort),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code::is_valid(code) {
                return Err(Error::InvalidCloseCode);
            }
            let reason = core::str::from_utf8(reason).map_err(|_| Error::InvalidCloseReason)?;
            Ok((Some(code), reason))
        }
    }
}

/// Where the closing handshake stands (RFC 6455 §7.1.2-7.1.3, §5.5.1). Timers, such as how
/// long to wait for the client's close, belong to the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CloseState {
    /// No close frame either way.
    #[default]
    Open,
    /// zring sent a close frame and waits for the client's; it sends no more data frames.
    Sent,
    /// The client sent a close frame; zring owes one back.
    Received,
    /// Both were sent: close the TCP connection (the server closes first, RFC 6455 §7.1.1).
    Closed,
}

impl CloseState {
    /// The state after zring sends a close frame. Sending a second one is a programmer
    /// error, caught in debug builds.
    #[must_use]
    pub fn on_sent(self) -> Self {
        debug_assert!(matches!(self, CloseState::Open | CloseState::Received));
        match self {
            CloseState::Open => CloseState::Sent,
            _ => CloseState::Closed,
        }
    }

    /// The state after a close frame from the client.
    #[must_use]
    pub fn on_received(self) -> Self {
        match self {
            CloseState::Open | CloseState::Received => CloseState::Received,
            CloseState::Sent | CloseState::Closed => CloseState::Closed,
        }
    }

    /// Whether zring may still send data frames and pings.
    pub fn can_send_data(self) -> bool {
        matches!(self, CloseState::Open | CloseState::Received)
    }

    /// Whether zring owes the client a close frame.
    pub fn must_send_close(self) -> bool {
        self == CloseState::Received
    }

    /// Whether both close frames went: the connection may be closed.
    pub fn is_closed(self) -> bool {
        self == CloseState::Closed
    }
}
