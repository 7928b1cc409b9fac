//! Fuzz the WebSocket session in the client role (client mode's outbound WebSocket reads a
//! server's unmasked frames). Input: one seed byte, then the server's stream. Every input
//! runs:
//! - `Session::with_role(_, Role::Client)` on the stream fed whole, in seed-sized chunks and
//!   byte by byte: the outcomes must agree (the same events, or the same error at the same
//!   position), and a frame with the mask bit must end in `Error::Masked`;
//! - the round trip of what decoded: every event written again with
//!   `encode_masked_frame` (a key drawn from the seed) and read by a `Role::Server` session,
//!   which must see the same messages, pings, pongs and close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::proto::ws::{
    encode_masked_frame, Error, Event, MessageKind, Opcode, Role, Session, SessionConfig,
};

fuzz_target!(|input: &[u8]| {
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let whole = run(stream, stream.len().max(1));
    let chunked = run(stream, usize::from(seed % 16) + 1);
    let bytewise = run(stream, 1);
    agree(&whole, &chunked, "chunked");
    agree(&whole, &bytewise, "byte by byte");
    if first_frame_masked(stream) {
        // Refused at its second byte: no rule checked earlier can break.
        assert_eq!(whole.error, Some((Error::Masked, 2)));
    }
    round_trip(seed, &whole.events);
});

/// Equal outcomes; after an error only the error and the non-data events must agree (a
/// split input hands out the valid data before a bad byte that a whole input fails on).
fn agree(a: &Outcome, b: &Outcome, how: &str) {
    if a.error.is_none() {
        assert_eq!(a, b, "{how} differs");
        return;
    }
    assert_eq!(a.error, b.error, "{how}: the error differs");
    let controls = |o: &Outcome| -> Vec<Ev> {
        o.events.iter().filter(|e| !matches!(e, Ev::Data(_))).cloned().collect()
    };
    assert_eq!(controls(a), controls(b), "{how}: events differ");
}

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

fn config() -> SessionConfig {
    SessionConfig {
        message_bytes_max: 1 << 20,
        compression: false,
    }
}

/// Decodes `stream` fed in `chunk`-byte inputs; data pieces are merged per message so that
/// the split does not show.
fn run(stream: &[u8], chunk: usize) -> Outcome {
    run_role(stream, chunk, Role::Client)
}

fn run_role(stream: &[u8], chunk: usize, role: Role) -> Outcome {
    let mut session = Session::with_role(config(), role);
    let mut events: Vec<Ev> = Vec::new();
    for piece in stream.chunks(chunk) {
        let mut buf = piece.to_vec();
        let mut at = 0;
        // Bounded: each round consumes bytes or yields a zero-byte message end.
        for _ in 0..=2 * buf.len() + 2 {
            let step = match session.decode(&mut buf[at..]) {
                Ok(step) => step,
                Err(error) => {
                    return Outcome {
                        events,
                        error: Some((error, session.position())),
                    }
                }
            };
            at += step.consumed;
            let Some(event) = step.event else { break };
            let ev = match event {
                Event::MessageStart { kind, compressed } => Ev::Start(kind, compressed),
                Event::Data(d) => {
                    if let Some(Ev::Data(last)) = events.last_mut() {
                        last.extend_from_slice(d);
                        continue;
                    }
                    Ev::Data(d.to_vec())
                }
                Event::MessageEnd => Ev::End,
                Event::Ping(p) => Ev::Ping(p.to_vec()),
                Event::Pong(p) => Ev::Pong(p.to_vec()),
                Event::Close { code, reason } => Ev::Close(code, reason.to_string()),
            };
            events.push(ev);
        }
    }
    Outcome {
        events,
        error: None,
    }
}

/// Whether the first frame has a valid first byte and the mask bit.
fn first_frame_masked(stream: &[u8]) -> bool {
    let [first, second, ..] = stream else {
        return false;
    };
    let fin = first & 0x80 != 0;
    let valid = Opcode::from_bits(first & 0x0f).is_some_and(|op| !op.is_control() || fin);
    valid && second & 0x80 != 0
}

/// Writes the events as masked client frames and reads them back as a server.
fn round_trip(seed: u8, events: &[Ev]) {
    let mut out = Vec::new();
    let mut key = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
    let mut mask = || {
        key ^= key << 13;
        key ^= key >> 17;
        key ^= key << 5;
        key.to_le_bytes()
    };
    let mut kind = None;
    let mut expected = Vec::new();
    for ev in events {
        match ev {
            Ev::Start(k, _) => kind = Some(*k),
            Ev::Data(d) => {
                let opcode = match kind.take() {
                    Some(MessageKind::Text) => Opcode::Text,
                    Some(MessageKind::Binary) => Opcode::Binary,
                    None => Opcode::Continuation,
                };
                encode_masked_frame(&mut out, false, false, opcode, d, mask());
            }
            Ev::End => {
                let opcode = match kind.take() {
                    Some(MessageKind::Text) => Opcode::Text,
                    Some(MessageKind::Binary) => Opcode::Binary,
                    None => Opcode::Continuation,
                };
                encode_masked_frame(&mut out, true, false, opcode, &[], mask());
            }
            Ev::Ping(p) => encode_masked_frame(&mut out, true, false, Opcode::Ping, p, mask()),
            Ev::Pong(p) => encode_masked_frame(&mut out, true, false, Opcode::Pong, p, mask()),
            Ev::Close(code, reason) => {
                let mut payload = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                payload.extend_from_slice(reason.as_bytes());
                encode_masked_frame(&mut out, true, false, Opcode::Close, &payload, mask());
            }
        }
        expected.push(ev.clone());
    }
    if kind.is_some() {
        return; // a message start without data yet: nothing to write for it alone
    }
    let back = run_role(&out, out.len().max(1), Role::Server);
    // A message cut by the end of the stream stays open; the rest must match exactly.
    assert_eq!(back.error, None, "the server role refused what the client role read");
    assert_eq!(
        start_at_first_data(&back.events),
        start_at_first_data(&expected),
        "round trip differs"
    );
}

/// The events with each message's `Start` moved to just before its first data or end: a
/// control frame read between a message's first (empty-payload) header and its data is
/// re-encoded before the message's first frame, which carries the start, so only that order
/// may differ.
fn start_at_first_data(events: &[Ev]) -> Vec<Ev> {
    let mut out = Vec::with_capacity(events.len());
    let mut start = None;
    for ev in events {
        match ev {
            Ev::Start(..) => start = Some(ev.clone()),
            Ev::Data(_) | Ev::End => {
                out.extend(start.take());
                out.push(ev.clone());
            }
            _ => out.push(ev.clone()),
        }
    }
    out.extend(start);
    out
}
