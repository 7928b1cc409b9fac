//! Fuzz the WebSocket frame decoder and session. Input: one seed byte, then the client's
//! stream. The seed picks the session rules (compression, a size limit) and the splits.
//! Every input runs:
//! - `Session::decode` on the stream fed whole, in seed-sized chunks, byte by byte, and cut
//!   in two at a seed-chosen point: the outcomes must agree (the same events, or the same
//!   error at the same position with the same non-data events before it), and the events
//!   must follow the message grammar, hold the limits and, for finished uncompressed text,
//!   be UTF-8;
//! - `FrameDecoder` alone, checking that payload pieces tile each frame exactly;
//! - `unmask` and `unmask_into` against the byte-at-a-time definition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::proto::ws::{
    unmask, unmask_into, Error, Event, FrameDecoder, FrameItem, MessageKind, Session,
    SessionConfig, CONTROL_PAYLOAD_BYTES_MAX,
};

fuzz_target!(|input: &[u8]| {
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    sessions(seed, stream);
    frames(seed, stream);
    masking(seed, stream);
});

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Start(MessageKind, bool),
    Data(Vec<u8>),
    End,
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Ev>,
    error: Option<(Error, u64)>,
}

impl Outcome {
    fn data(&self) -> Vec<u8> {
        let mut data = Vec::new();
        for event in &self.events {
            if let Ev::Data(piece) = event {
                data.extend_from_slice(piece);
            }
        }
        data
    }

    fn without_data(&self) -> Vec<Ev> {
        let events = self.events.iter();
        events.filter(|event| !matches!(event, Ev::Data(_))).cloned().collect()
    }
}

/// Feeds `pieces` in order, each as its own input, and checks every step's contract.
fn feed(config: SessionConfig, pieces: &mut dyn Iterator<Item = &[u8]>) -> Outcome {
    let mut session = Session::new(config);
    let mut outcome = Outcome {
        events: Vec::new(),
        error: None,
    };
    let mut total = 0u64;
    for piece in pieces {
        total += piece.len() as u64;
        let mut buffer = piece.to_vec();
        let mut offset = 0;
        let len = buffer.len();
        loop {
            let step = match session.decode(&mut buffer[offset..]) {
                Ok(step) => step,
                Err(error) => {
                    assert!(session.position() <= total);
                    assert!(session.position() > 0);
                    assert_eq!(session.decode(&mut []), Err(error), "sticky");
                    outcome.error = Some((error, session.position()));
                    return outcome;
                }
            };
            assert!(step.consumed <= len - offset);
            offset += step.consumed;
            let Some(event) = step.event else {
                assert_eq!(offset, len);
                break;
            };
            record(&mut outcome.events, event);
        }
    }
    assert_eq!(session.position(), total);
    outcome
}

fn record(events: &mut Vec<Ev>, event: Event<'_>) {
    let owned = match event {
        Event::MessageStart { kind, compressed } => Ev::Start(kind, compressed),
        Event::Data(data) => {
            assert!(!data.is_empty());
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

/// The event grammar: messages are Start, Data and control events, End; Close is last.
fn check_grammar(config: SessionConfig, outcome: &Outcome) {
    let mut open: Option<(MessageKind, bool, Vec<u8>)> = None;
    let mut closed = false;
    for event in &outcome.events {
        assert!(!closed, "nothing after a close");
        match event {
            Ev::Start(kind, compressed) => {
                assert!(open.is_none());
                assert!(config.compression || !compressed);
                open = Some((*kind, *compressed, Vec::new()));
            }
            Ev::Data(data) => {
                let (_, _, message) = open.as_mut().expect("data inside a message");
                message.extend_from_slice(data);
                assert!(message.len() as u64 <= config.message_bytes_max);
            }
            Ev::End => {
                let (kind, compressed, message) = open.take().expect("end of a message");
                if kind == MessageKind::Text && !compressed {
                    assert!(std::str::from_utf8(&message).is_ok());
                }
            }
            Ev::Ping(payload) | Ev::Pong(payload) => {
                assert!(payload.len() <= CONTROL_PAYLOAD_BYTES_MAX);
            }
            Ev::Close(code, reason) => {
                assert!(reason.len() <= CONTROL_PAYLOAD_BYTES_MAX - 2);
                assert!(code.is_some() || reason.is_empty());
                assert!(code.is_none_or(zring::proto::ws::close_code::is_valid));
                closed = true;
            }
        }
    }
    if let Some((MessageKind::Text, false, message)) = open {
        // An open text message is valid so far, but for a character cut at the end.
        if let Err(error) = std::str::from_utf8(&message) {
            assert!(error.error_len().is_none());
        }
    }
}

fn sessions(seed: u8, stream: &[u8]) {
    let config = SessionConfig {
        compression: seed & 1 != 0,
        message_bytes_max: if seed & 2 != 0 { u64::from(seed) * 8 } else { 1 << 20 },
    };
    let whole = feed(config, &mut std::iter::once(stream));
    check_grammar(config, &whole);
    let step = usize::from(seed >> 3) + 1;
    let cut = usize::from(seed) * stream.len() / 256;
    let (head, tail) = stream.split_at(cut);
    let mut splits: Vec<Outcome> = vec![
        feed(config, &mut stream.chunks(step)),
        feed(config, &mut [head, tail].into_iter()),
    ];
    if stream.len() <= 4096 {
        splits.push(feed(config, &mut stream.chunks(1)));
    }
    for split in &splits {
        check_grammar(config, split);
        if whole.error.is_none() {
            assert_eq!(split, &whole);
        } else {
            assert_eq!(split.error, whole.error);
            assert_eq!(split.without_data(), whole.without_data());
            assert!(split.data().starts_with(&whole.data()));
        }
    }
}

/// The decoder alone: pieces cover each payload exactly once, in order.
fn frames(seed: u8, stream: &[u8]) {
    let mut decoder = FrameDecoder::new();
    let mut expected_offset: Option<(u64, u64)> = None; // (offset, payload_len)
    for piece in stream.chunks(usize::from(seed) + 1) {
        let mut rest = piece;
        loop {
            let Ok(decoded) = decoder.decode(rest) else {
                assert!(decoder.position() <= stream.len() as u64);
                return;
            };
            match decoded.item {
                None => {
                    assert_eq!(decoded.consumed, rest.len());
                    break;
                }
                Some(FrameItem::Header(header)) => {
                    assert!(expected_offset.is_none(), "header inside a payload");
                    assert!(decoded.consumed <= 14);
                    if header.opcode.is_control() {
                        assert!(header.fin);
                        assert!(header.payload_len <= CONTROL_PAYLOAD_BYTES_MAX as u64);
                    }
                    if header.payload_len > 0 {
                        expected_offset = Some((0, header.payload_len));
                    }
                    assert_eq!(decoder.at_frame_boundary(), header.payload_len == 0);
                }
                Some(FrameItem::Payload(payload)) => {
                    let (offset, len) = expected_offset.expect("payload after a header");
                    assert_eq!(payload.offset, offset);
                    assert_eq!(payload.len, decoded.consumed);
                    assert!(payload.len > 0);
                    let next = offset + payload.len as u64;
                    assert!(next <= len);
                    assert_eq!(payload.end, next == len);
                    expected_offset = (!payload.end).then_some((next, len));
                }
            }
            rest = &rest[decoded.consumed..];
        }
    }
    assert_eq!(decoder.position(), stream.len() as u64);
}

fn masking(seed: u8, stream: &[u8]) {
    let mask = [seed, seed.wrapping_mul(3), 0x5a, seed ^ 0xff];
    let offset = u64::from(seed) * 0x1_0000_0001;
    let mut expected = stream.to_vec();
    for (index, byte) in expected.iter_mut().enumerate() {
        *byte ^= mask[((offset + index as u64) % 4) as usize];
    }
    let mut in_place = stream.to_vec();
    unmask(&mut in_place, mask, offset);
    assert_eq!(in_place, expected);
    let mut target = vec![0; stream.len()];
    unmask_into(stream, &mut target, mask, offset);
    assert_eq!(target, expected);
}
