//! Unit tests of the WebSocket codec, one file per layer, and the helpers they share: a
//! client-side frame builder and a driver that feeds a [`Session`] the way the connection
//! core does, in any split.

mod frame;
mod handshake;
mod message;

use super::{Error, Event, MessageKind, Session, SessionConfig};

pub(super) const FIN: u8 = 0x80;
pub(super) const RSV1: u8 = 0x40;
pub(super) const RSV2: u8 = 0x20;
pub(super) const RSV3: u8 = 0x10;
pub(super) const CONTINUATION: u8 = 0x0;
pub(super) const TEXT: u8 = 0x1;
pub(super) const BINARY: u8 = 0x2;
pub(super) const CLOSE: u8 = 0x8;
pub(super) const PING: u8 = 0x9;
pub(super) const PONG: u8 = 0xa;

/// The mask key of built frames: not symmetric, so a wrong phase shows.
pub(super) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// How a built frame encodes its payload length.
#[derive(Clone, Copy)]
pub(super) enum Length {
    /// The shortest form, as RFC 6455 §5.2 requires.
    Minimal,
    /// 126 and a 16-bit length, whatever the length.
    Force16,
    /// 127 and a 64-bit length, whatever the length.
    Force64,
}

/// A client frame: `first` is FIN, RSV and opcode bits; masked with [`MASK`].
pub(super) fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(first, payload, Some(MASK), Length::Minimal)
}

/// A client frame with any mask (or none) and length encoding.
pub(super) fn frame_with(
    first: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    length: Length,
) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len() as u64;
    let mut out = vec![first];
    match length {
        Length::Minimal if len < 126 => out.push(mask_bit | len as u8),
        Length::Minimal if len <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        Length::Force16 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        Length::Minimal | Length::Force64 => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(
                payload
                    .iter()
                    .enumerate()
                    .map(|(index, byte)| byte ^ mask[index % 4]),
            );
        }
        None => out.extend_from_slice(payload),
    }
    out
}

pub(super) fn text(payload: &[u8]) -> Vec<u8> {
    frame(FIN | TEXT, payload)
}

pub(super) fn binary(payload: &[u8]) -> Vec<u8> {
    frame(FIN | BINARY, payload)
}

pub(super) fn ping(payload: &[u8]) -> Vec<u8> {
    frame(FIN | PING, payload)
}

pub(super) fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(FIN | CLOSE, &payload)
}

/// Frames laid end to end.
pub(super) fn stream(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

/// An event, owned, so that outcomes can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ev {
    Start(MessageKind, bool),
    Data(Vec<u8>),
    End,
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

/// What feeding a stream produced: events with adjacent data merged, the error and the
/// position it was revealed at, and the bytes consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Outcome {
    pub events: Vec<Ev>,
    pub error: Option<(Error, u64)>,
    pub consumed: u64,
}

impl Outcome {
    /// The outcome of a stream that decodes without error.
    pub fn ok(events: Vec<Ev>, consumed: usize) -> Self {
        Outcome {
            events,
            error: None,
            consumed: consumed as u64,
        }
    }

    /// The concatenation of every data piece.
    pub fn data(&self) -> Vec<u8> {
        let mut data = Vec::new();
        for event in &self.events {
            if let Ev::Data(piece) = event {
                data.extend_from_slice(piece);
            }
        }
        data
    }

    fn without_data(&self) -> Vec<Ev> {
        self.events
            .iter()
            .filter(|event| !matches!(event, Ev::Data(_)))
            .cloned()
            .collect()
    }
}

/// Feeds `pieces` in order as separate inputs (each one whole to [`Session::decode`],
/// as a read buffer would be), collecting events until an error.
pub(super) fn feed(config: SessionConfig, pieces: &[&[u8]]) -> Outcome {
    let mut session = Session::new(config);
    let mut outcome = Outcome {
        events: Vec::new(),
        error: None,
        consumed: 0,
    };
    for piece in pieces {
        let mut buffer = piece.to_vec();
        let mut offset = 0;
        // Bounded: each step consumes bytes or returns one of the few zero-byte events.
        for _ in 0..=2 * buffer.len() + 2 {
            let step = match session.decode(&mut buffer[offset..]) {
                Ok(step) => step,
                Err(error) => {
                    assert_eq!(session.decode(&mut []), Err(error), "errors are sticky");
                    outcome.error = Some((error, session.position()));
                    return outcome;
                }
            };
            offset += step.consumed;
            outcome.consumed += step.consumed as u64;
            let Some(event) = step.event else {
                assert_eq!(offset, buffer.len(), "no event means the input is used up");
                break;
            };
            push_event(&mut outcome.events, event);
        }
        assert_eq!(offset, buffer.len());
    }
    // Nothing is pending at the end of the input, except after an empty last piece.
    let mut empty = [];
    if let Ok(step) = session.decode(&mut empty) {
        if let Some(event) = step.event {
            push_event(&mut outcome.events, event);
        }
    }
    assert_eq!(session.position(), outcome.consumed);
    outcome
}

fn push_event(events: &mut Vec<Ev>, event: Event<'_>) {
    let owned = match event {
        Event::MessageStart { kind, compressed } => Ev::Start(kind, compressed),
        Event::Data(data) => {
            assert!(!data.is_empty(), "data pieces are never empty");
            if let Some(Ev::Data(previous)) = events.last_mut() {
                previous.extend_from_slice(data);
                return;
            }
            Ev::Data(data.to_vec())
        }
        Event::MessageEnd => Ev::End,
        Event::Ping(payload) => Ev::Ping(payload.to_vec()),
        Event::Pong(payload) => Ev::Pong(payload.to_vec()),
        Event::Close { code, reason } => Ev::Close(code, reason.to_owned()),
    };
    events.push(owned);
}

/// Feeds `input` whole, byte by byte, in chunks of 2, 3, 7 and 997 bytes, and cut in two
/// at every point (for inputs up to 300 bytes), asserting that every split gives the same
/// outcome: the same events, or the same error at the same position with the same non-data
/// events before it and the whole feed's data a prefix of the split's. Returns the outcome
/// of the whole feed.
pub(super) fn feed_every_way(config: SessionConfig, input: &[u8]) -> Outcome {
    let whole = feed(config, &[input]);
    let mut splits: Vec<Vec<&[u8]>> = Vec::new();
    for size in [1, 2, 3, 7, 997] {
        splits.push(input.chunks(size).collect());
    }
    if input.len() <= 300 {
        for cut in 0..=input.len() {
            let (head, tail) = input.split_at(cut);
            splits.push(vec![head, tail]);
        }
    }
    for pieces in &splits {
        let outcome = feed(config, pieces);
        let sizes: Vec<usize> = pieces.iter().take(3).map(|piece| piece.len()).collect();
        if whole.error.is_none() {
            assert_eq!(outcome, whole, "split starting {sizes:?}");
        } else {
            assert_eq!(outcome.error, whole.error, "split starting {sizes:?}");
            assert_eq!(
                outcome.without_data(),
                whole.without_data(),
                "split {sizes:?}"
            );
            assert!(outcome.data().starts_with(&whole.data()), "split {sizes:?}");
        }
    }
    whole
}

/// The default session rules: no compression, the default size limit.
pub(super) fn plain() -> SessionConfig {
    SessionConfig::default()
}
