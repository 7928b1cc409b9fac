//! Frames (RFC 6455 §5.2): an incremental decoder and encoders for both roles. In the
//! [`Role::Server`] role (zring's listeners) frames come in masked and go out unmasked; in
//! the [`Role::Client`] role (client mode's outbound WebSocket) they come in unmasked and go
//! out masked with a fresh key each ([`encode_masked_frame`]).
//!
//! The decoder consumes every byte it is given: header bytes split across inputs are kept
//! in a 14-byte array, and payload bytes are handed back as pieces of the input (by length,
//! starting at the input's first byte), still masked. The caller unmasks each piece where it
//! lies or while copying it out, with [`unmask`] or [`unmask_into`]; a piece's `offset`
//! keeps the mask key's phase right across pieces.
//!
//! The decoder checks what a frame alone can break, each rule at the byte that decides it:
//! reserved opcodes and fragmented control frames at the first byte, the mask bit and the
//! control-frame length at the second, the length encoding at the last length byte. Rules
//! that need context (RSV bits, fragmentation, message size) belong to [`super::Session`].

use super::{Error, CONTROL_PAYLOAD_BYTES_MAX};

/// Bytes of the longest client frame header: 2, a 64-bit length, a 4-byte mask key.
pub const CLIENT_HEADER_BYTES_MAX: usize = 14;
/// Bytes of the longest server frame header: 2 and a 64-bit length (no mask).
pub const SERVER_HEADER_BYTES_MAX: usize = 10;
/// Largest payload length a frame can carry: the 64-bit length's top bit must be zero.
pub const PAYLOAD_BYTES_MAX: u64 = i64::MAX as u64;

/// 7-bit length values that announce a 16-bit and a 64-bit extended length.
const LENGTH_16: u8 = 126;
const LENGTH_64: u8 = 127;

/// Which end of the connection zring is: it decides the mask rule of incoming frames
/// (RFC 6455 §5.1: a client masks every frame, a server none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// zring accepted the connection: incoming frames must be masked.
    Server,
    /// zring opened the connection (client mode): incoming frames must not be masked.
    Client,
}

impl Role {
    /// Mask-key bytes in an incoming frame header.
    fn mask_bytes(self) -> usize {
        match self {
            Role::Server => 4,
            Role::Client => 0,
        }
    }
}

/// A frame's opcode (RFC 6455 §5.2, §11.8). Reserved values are not representable: the
/// decoder rejects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0x0: the next fragment of the message in progress.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// The opcode with these 4 bits, or `None` for a reserved one.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xa => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// The 4 bits on the wire.
    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xa,
        }
    }

    /// Close, ping and pong: at most 125 payload bytes, never fragmented (RFC 6455 §5.5).
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A decoded client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of a message.
    pub fin: bool,
    /// RSV1: compression under permessage-deflate (RFC 7692 §6), else reserved.
    pub rsv1: bool,
    /// RSV2: reserved.
    pub rsv2: bool,
    /// RSV3: reserved.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key (client frames are always masked, RFC 6455 §5.3); zeros for an
    /// unmasked server frame ([`Role::Client`]), which leaves [`unmask`] a no-op.
    pub mask: [u8; 4],
    /// Payload bytes that follow. Invariant: at most [`PAYLOAD_BYTES_MAX`], at most
    /// [`CONTROL_PAYLOAD_BYTES_MAX`] for control frames.
    pub payload_len: u64,
}

/// A piece of a frame's payload: the first `len` bytes of the input just decoded, still
/// masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadPiece {
    /// Bytes in the piece, at least 1.
    pub len: usize,
    /// The frame's masking key.
    pub mask: [u8; 4],
    /// Position of the piece's first byte in the frame payload: pass it to [`unmask`].
    pub offset: u64,
    /// The piece ends the frame's payload.
    pub end: bool,
}

/// What one call to [`FrameDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameItem {
    /// A complete header. When its `payload_len` is 0 the frame is complete too.
    Header(FrameHeader),
    /// Payload bytes of the frame whose header came last.
    Payload(PayloadPiece),
}

/// The result of a decoding step: bytes consumed from the input, and what they made.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used. All of it when `item` is `None`.
    pub consumed: usize,
    /// A header or payload piece, or `None` when the input ran out first.
    pub item: Option<FrameItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a header. Invariant: `header_len < header_need` once two bytes are in.
    Header,
    /// Reading a payload. Invariant: `remaining > 0`.
    Payload {
        mask: [u8; 4],
        offset: u64,
        remaining: u64,
    },
}

/// Decodes a stream of frames from the peer, incrementally. Allocates nothing; 48 bytes of
/// state.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    state: State,
    role: Role,
    /// Header bytes read so far. Invariant: `header_len <= CLIENT_HEADER_BYTES_MAX`.
    header: [u8; CLIENT_HEADER_BYTES_MAX],
    header_len: u8,
    /// Sticky: once set every call returns it.
    error: Option<Error>,
    /// Stream bytes consumed, including the byte that revealed an error.
    position: u64,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder at the start of a client's stream ([`Role::Server`]).
    pub fn new() -> Self {
        Self::with_role(Role::Server)
    }

    /// A decoder at the start of a stream, zring being `role`.
    pub fn with_role(role: Role) -> Self {
        FrameDecoder {
            state: State::Header,
            role,
            header: [0; CLIENT_HEADER_BYTES_MAX],
            header_len: 0,
            error: None,
            position: 0,
        }
    }

    /// Bytes of the stream consumed so far. After an error: the bytes up to and including
    /// the one that revealed it, whichever way the stream was split into inputs.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Counts `len` bytes as consumed without decoding them: the session ignores what a
    /// client sends after its close frame.
    pub(super) fn skip(&mut self, len: usize) {
        self.position += len as u64;
    }

    /// Whether the decoder stands between frames (no header or payload half read).
    pub fn at_frame_boundary(&self) -> bool {
        self.state == State::Header && self.header_len == 0
    }

    /// Decodes from `input`, returning at most one item. Call again with the rest of the
    /// input (`&input[decoded.consumed..]`) until `item` is `None`, which means the input is
    /// used up. Errors are sticky.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let result = match self.state {
            State::Header => self.decode_header(input),
            State::Payload {
                mask,
                offset,
                remaining,
            } => Ok(self.decode_payload(input, mask, offset, remaining)),
        };
        if let Err(error) = result {
            self.error = Some(error);
        }
        result
    }

    fn decode_payload(
        &mut self,
        input: &[u8],
        mask: [u8; 4],
        offset: u64,
        remaining: u64,
    ) -> Decoded {
        debug_assert!(remaining > 0);
        if input.is_empty() {
            return Decoded {
                consumed: 0,
                item: None,
            };
        }
        // Fits in usize: no more than input.len().
        let len = remaining.min(input.len() as u64) as usize;
        let end = len as u64 == remaining;
        self.state = if end {
            State::Header
        } else {
            State::Payload {
                mask,
                offset: offset + len as u64,
                remaining: remaining - len as u64,
            }
        };
        self.position += len as u64;
        Decoded {
            consumed: len,
            item: Some(FrameItem::Payload(PayloadPiece {
                len,
                mask,
                offset,
                end,
            })),
        }
    }

    fn decode_header(&mut self, input: &[u8]) -> Result<Decoded, Error> {
        let mut taken = 0;
        // The first two bytes one at a time, each checked as it arrives.
        while self.header_len < 2 {
            let Some(&byte) = input.get(taken) else {
                return Ok(Decoded {
                    consumed: taken,
                    item: None,
                });
            };
            self.header[usize::from(self.header_len)] = byte;
            self.header_len += 1;
            taken += 1;
            self.position += 1;
            check_leading_byte(self.role, self.header_len, self.header[0], byte)?;
        }
        let length_bytes = extended_length_bytes(self.header[1]);
        let need = 2 + length_bytes + self.role.mask_bytes();
        let have = usize::from(self.header_len);
        // Equal for an unmasked frame with a 7-bit length: complete at its second byte.
        debug_assert!(have <= need && need <= CLIENT_HEADER_BYTES_MAX);
        let take = (need - have).min(input.len() - taken);
        self.header[have..have + take].copy_from_slice(&input[taken..taken + take]);
        let length_end = 2 + length_bytes;
        if length_bytes > 0 && have < length_end && have + take >= length_end {
            // The error, if any, is revealed by the last length byte.
            let length_taken = length_end - have;
            if let Err(error) = check_extended_length(&self.header[2..length_end]) {
                self.position += length_taken as u64;
                return Err(error);
            }
        }
        taken += take;
        self.position += take as u64;
        self.header_len = (have + take) as u8;
        if have + take < need {
            return Ok(Decoded {
                consumed: taken,
                item: None,
            });
        }
        let header = self.finish_header(length_bytes);
        Ok(Decoded {
            consumed: taken,
            item: Some(FrameItem::Header(header)),
        })
    }

    /// Builds the header from the complete header bytes and moves to its payload.
    fn finish_header(&mut self, length_bytes: usize) -> FrameHeader {
        let [first, second] = [self.header[0], self.header[1]];
        let payload_len = match length_bytes {
            0 => u64::from(second & 0x7f),
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            _ => u64::from_be_bytes(self.header[2..10].try_into().expect("8 length bytes")),
        };
        let mask_start = 2 + length_bytes;
        let mask: [u8; 4] = match self.role {
            Role::Server => self.header[mask_start..mask_start + 4]
                .try_into()
                .expect("4 mask bytes"),
            Role::Client => [0; 4],
        };
        let opcode = Opcode::from_bits(first & 0x0f).expect("checked at the first byte");
        debug_assert!(payload_len <= PAYLOAD_BYTES_MAX);
        debug_assert!(!opcode.is_control() || payload_len <= CONTROL_PAYLOAD_BYTES_MAX as u64);
        self.header_len = 0;
        self.state = if payload_len == 0 {
            State::Header
        } else {
            State::Payload {
                mask,
                offset: 0,
                remaining: payload_len,
            }
        };
        FrameHeader {
            fin: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            rsv2: first & 0x20 != 0,
            rsv3: first & 0x10 != 0,
            opcode,
            mask,
            payload_len,
        }
    }
}

/// Checks header byte number `count` (1 or 2) as soon as it is in.
fn check_leading_byte(role: Role, count: u8, first: u8, byte: u8) -> Result<(), Error> {
    let Some(opcode) = Opcode::from_bits(first & 0x0f) else {
        return Err(Error::ReservedOpcode);
    };
    if count == 1 {
        if opcode.is_control() && first & 0x80 == 0 {
            return Err(Error::FragmentedControlFrame);
        }
        return Ok(());
    }
    match (role, byte & 0x80 != 0) {
        (Role::Server, false) => return Err(Error::Unmasked),
        // RFC 6455 §5.1: a client MUST close on a masked frame from the server.
        (Role::Client, true) => return Err(Error::Masked),
        _ => {}
    }
    if opcode.is_control() && usize::from(byte & 0x7f) > CONTROL_PAYLOAD_BYTES_MAX {
        return Err(Error::ControlFrameTooLong);
    }
    Ok(())
}

/// Bytes of extended length announced by the second header byte: 0, 2 or 8.
fn extended_length_bytes(second: u8) -> usize {
    match second & 0x7f {
        LENGTH_16 => 2,
        LENGTH_64 => 8,
        _ => 0,
    }
}

/// RFC 6455 §5.2: the minimal encoding, and no top bit in a 64-bit length.
fn check_extended_length(bytes: &[u8]) -> Result<(), Error> {
    if let Ok(bytes) = <[u8; 2]>::try_from(bytes) {
        return match u16::from_be_bytes(bytes) {
            length if length < u16::from(LENGTH_16) => Err(Error::NonMinimalLength),
            _ => Ok(()),
        };
    }
    let length = u64::from_be_bytes(bytes.try_into().expect("8 length bytes"));
    if length > PAYLOAD_BYTES_MAX {
        Err(Error::LengthOverflow)
    } else if length <= u64::from(u16::MAX) {
        Err(Error::NonMinimalLength)
    } else {
        Ok(())
    }
}

/// The mask key turned so that its first byte applies at payload position `offset`.
fn rotated_key(mask: [u8; 4], offset: u64) -> [u8; 4] {
    // As a little-endian word, rotating right by whole bytes moves byte `shift` first;
    // cheaper than a slice rotation, which does not inline.
    let shift = (offset % 4) as u32;
    u32::from_le_bytes(mask)
        .rotate_right(8 * shift)
        .to_le_bytes()
}

/// Unmasks (or masks: XOR is its own inverse) `payload` in place, where `payload` starts at
/// position `offset` of a frame payload masked with `mask` (RFC 6455 §5.3). Works 8 bytes at
/// a time; pieces may have any length and alignment.
pub fn unmask(payload: &mut [u8], mask: [u8; 4], offset: u64) {
    let key = rotated_key(mask, offset);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let value = u64::from_ne_bytes((&*word).try_into().expect("8-byte chunk")) ^ wide;
        word.copy_from_slice(&value.to_ne_bytes());
    }
    // The words covered a multiple of 4 bytes, so the key's phase is unchanged here.
    let tail = words.into_remainder();
    debug_assert!(tail.len() < 8);
    for (index, byte) in tail.iter_mut().enumerate() {
        *byte ^= key[index & 3];
    }
}

/// Writes `source` unmasked into `target` in one pass, for a caller that copies the payload
/// out anyway. `source` starts at position `offset` of a payload masked with `mask`.
///
/// Panics if the lengths differ: a programmer error.
pub fn unmask_into(source: &[u8], target: &mut [u8], mask: [u8; 4], offset: u64) {
    assert_eq!(source.len(), target.len(), "unmask_into lengths");
    let key = rotated_key(mask, offset);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut sources = source.chunks_exact(8);
    let mut targets = target.chunks_exact_mut(8);
    for (from, to) in (&mut sources).zip(&mut targets) {
        let value = u64::from_ne_bytes(from.try_into().expect("8-byte chunk")) ^ wide;
        to.copy_from_slice(&value.to_ne_bytes());
    }
    let tail = sources.remainder().iter().zip(targets.into_remainder());
    for (index, (from, to)) in tail.enumerate() {
        *to = from ^ key[index & 3];
    }
}

/// A server frame header in a small array, so that the payload can be sent after it from
/// wherever it lies, without copying.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EncodedHeader {
    bytes: [u8; SERVER_HEADER_BYTES_MAX],
    len: u8,
}

impl EncodedHeader {
    /// The header bytes: 2, 4 or 10 of them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for EncodedHeader {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "EncodedHeader({:02x?})", self.as_bytes())
    }
}

/// The header of an unmasked server frame (RFC 6455 §5.1: servers do not mask) with the
/// shortest length encoding. Set `rsv1` only on the first frame of a compressed message.
///
/// Panics if `payload_len` exceeds [`PAYLOAD_BYTES_MAX`], and in debug builds if a control
/// frame is fragmented or longer than [`CONTROL_PAYLOAD_BYTES_MAX`]: programmer errors.
pub fn encode_header(fin: bool, rsv1: bool, opcode: Opcode, payload_len: u64) -> EncodedHeader {
    assert!(payload_len <= PAYLOAD_BYTES_MAX, "frame payload too long");
    debug_assert!(!opcode.is_control() || fin);
    debug_assert!(!opcode.is_control() || payload_len <= CONTROL_PAYLOAD_BYTES_MAX as u64);
    let mut bytes = [0u8; SERVER_HEADER_BYTES_MAX];
    bytes[0] = u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode.bits();
    let len = if payload_len < u64::from(LENGTH_16) {
        bytes[1] = payload_len as u8;
        2
    } else if payload_len <= u64::from(u16::MAX) {
        bytes[1] = LENGTH_16;
        bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        bytes[1] = LENGTH_64;
        bytes[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    EncodedHeader { bytes, len }
}

/// Appends a whole server frame: header and payload.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: Opcode, payload: &[u8]) {
    let header = encode_header(fin, rsv1, opcode, payload.len() as u64);
    out.reserve(header.as_bytes().len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a whole client frame (client mode, [`Role::Client`]): the header with the mask
/// bit and `mask`, then `payload` masked with it (RFC 6455 §5.3). The caller draws a fresh
/// key per frame. Masking happens while copying, so the payload is read once.
pub fn encode_masked_frame(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: [u8; 4],
) {
    let header = encode_header(fin, rsv1, opcode, payload.len() as u64);
    let bytes = header.as_bytes();
    out.reserve(bytes.len() + 4 + payload.len());
    out.push(bytes[0]);
    out.push(bytes[1] | 0x80);
    out.extend_from_slice(&bytes[2..]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.resize(start + payload.len(), 0);
    unmask_into(payload, &mut out[start..], mask, 0);
}

/// A close frame body: a 2-byte code and a UTF-8 reason, at most 125 bytes in all.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClosePayload {
    bytes: [u8; CONTROL_PAYLOAD_BYTES_MAX],
    len: u8,
}

impl ClosePayload {
    /// The body (RFC 6455 §5.5.1): `code` big-endian, then `reason` cut at a character
    /// boundary to at most 123 bytes so the frame stays a valid control frame. The caller
    /// picks a code that may be sent (see [`super::close_code::is_valid`]).
    pub fn new(code: u16, reason: &str) -> Self {
        let mut reason_len = reason.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
        while !reason.is_char_boundary(reason_len) {
            reason_len -= 1;
        }
        let mut bytes = [0u8; CONTROL_PAYLOAD_BYTES_MAX];
        bytes[..2].copy_from_slice(&code.to_be_bytes());
        bytes[2..2 + reason_len].copy_from_slice(&reason.as_bytes()[..reason_len]);
        ClosePayload {
            bytes,
            len: (2 + reason_len) as u8,
        }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for ClosePayload {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "ClosePayload({:02x?})", self.as_bytes())
    }
}

/// Appends a close frame with `code` and `reason` (see [`ClosePayload::new`]).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let payload = ClosePayload::new(code, reason);
    encode_frame(out, true, false, Opcode::Close, payload.as_bytes());
}
