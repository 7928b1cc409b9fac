//! Session rules, case group by case group after the Autobahn testsuite (1-7, 9, 10), at
//! the codec level: every stream is fed whole, byte by byte, in chunks and cut at every
//! point (see `feed_every_way`), and must give the same events or fail with the same error
//! at the same byte.

use super::{
    binary, close, feed, feed_every_way, frame, frame_with, ping, plain, stream, text, Ev, Length,
    Outcome, BINARY, CLOSE, CONTINUATION, FIN, MASK, PING, PONG, RSV1, RSV2, RSV3, TEXT,
};
use crate::proto::ws::{
    close_code, parse_close, CloseState, Error, Event, MessageKind, Session, SessionConfig,
};

use MessageKind::{Binary, Text};

/// Header bytes of a client frame with this payload length.
fn header_len(payload_len: usize) -> u64 {
    match payload_len {
        0..=125 => 6,
        126..=65535 => 8,
        _ => 14,
    }
}

fn message(kind: MessageKind, payload: &[u8]) -> Vec<Ev> {
    let mut events = vec![Ev::Start(kind, false)];
    if !payload.is_empty() {
        events.push(Ev::Data(payload.to_vec()));
    }
    events.push(Ev::End);
    events
}

fn failure(error: Error, position: u64) -> Option<(Error, u64)> {
    Some((error, position))
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| (index * 7 + index / 251) as u8)
        .collect()
}

fn ascii(len: usize) -> Vec<u8> {
    (0..len).map(|index| b'a' + (index % 26) as u8).collect()
}

/// Case group 1: text and binary messages of every length-encoding boundary, in one frame.
#[test]
fn group1_framing() {
    for len in [0, 1, 125, 126, 127, 128, 65535, 65536] {
        for (opcode, kind, payload) in [(TEXT, Text, ascii(len)), (BINARY, Binary, patterned(len))]
        {
            let input = frame(FIN | opcode, &payload);
            assert_eq!(input.len() as u64, header_len(len) + len as u64);
            let outcome = if len <= 300 {
                feed_every_way(plain(), &input)
            } else {
                // 1.1.8 / 1.2.8: the big ones in chops of 997 bytes, and whole.
                let chops: Vec<&[u8]> = input.chunks(997).collect();
                assert_eq!(feed(plain(), &chops), feed(plain(), &[&input]));
                feed(plain(), &[&input])
            };
            assert_eq!(
                outcome,
                Outcome::ok(message(kind, &payload), input.len()),
                "{len}"
            );
        }
    }
}

/// Case group 2: pings and pongs, including the 125/126-byte boundary.
#[test]
fn group2_pings_and_pongs() {
    let binary_payload = [0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    for payload in [&b""[..], b"Hello, world!", &binary_payload, &[0xfe; 125]] {
        let outcome = feed_every_way(plain(), &ping(payload));
        assert_eq!(outcome.events, vec![Ev::Ping(payload.to_vec())]);
        let outcome = feed_every_way(plain(), &frame(FIN | PONG, payload));
        assert_eq!(outcome.events, vec![Ev::Pong(payload.to_vec())]);
    }
    // 2.5: 126 bytes is too long for a control frame; the second byte says so.
    let outcome = feed_every_way(plain(), &ping(&[0xfe; 126]));
    assert_eq!(outcome.error, failure(Error::ControlFrameTooLong, 2));
    assert!(outcome.events.is_empty());
    // Also when the length hides in a (non-minimal) 16-bit field.
    let input = frame_with(FIN | PING, b"hi", Some(MASK), Length::Force16);
    assert_eq!(
        feed_every_way(plain(), &input).error,
        failure(Error::ControlFrameTooLong, 2)
    );
    // 2.9-2.11: an unsolicited pong, then pings, ten in a row.
    let mut frames = vec![frame(FIN | PONG, b"unsolicited")];
    let mut expected = vec![Ev::Pong(b"unsolicited".to_vec())];
    for index in 0..10u8 {
        frames.push(ping(&[b'p', index]));
        expected.push(Ev::Ping(vec![b'p', index]));
    }
    let input = stream(&frames);
    assert_eq!(
        feed_every_way(plain(), &input),
        Outcome::ok(expected, input.len())
    );
}

/// Case group 3: reserved bits, which no extension was negotiated for.
#[test]
fn group3_reserved_bits() {
    let valid = text(b"Hello, world!");
    let cases: [(u8, &[u8]); 7] = [
        (FIN | RSV1 | TEXT, b"Hello, world!"),
        (FIN | RSV2 | TEXT, b"Hello, world!"),
        (FIN | RSV1 | RSV2 | TEXT, b"Hello, world!"),
        (FIN | RSV3 | BINARY, &[0x00, 0xff]),
        (FIN | RSV1 | RSV3 | BINARY, &[0x00, 0xff]),
        (FIN | RSV2 | RSV3 | PING, b"Hello, world!"),
        (FIN | RSV1 | RSV2 | RSV3 | CLOSE, &[0x03, 0xe8]),
    ];
    for (first, payload) in cases {
        // Alone: found once the header is complete.
        let outcome = feed_every_way(plain(), &frame(first, payload));
        assert_eq!(outcome.error, failure(Error::ReservedBits, 6), "{first:#x}");
        assert!(outcome.events.is_empty());
        // After a valid message, followed by a ping that must not be reached.
        let input = stream(&[valid.clone(), frame(first, payload), ping(b"")]);
        let outcome = feed_every_way(plain(), &input);
        assert_eq!(
            outcome.events,
            message(Text, b"Hello, world!"),
            "{first:#x}"
        );
        assert_eq!(
            outcome.error,
            failure(Error::ReservedBits, valid.len() as u64 + 6)
        );
    }
}

/// RSV1 under negotiated compression: allowed on a message's first frame only.
#[test]
fn compression_flag_allows_rsv1_on_first_frames() {
    let deflate = SessionConfig {
        compression: true,
        ..plain()
    };
    // Compressed text is not UTF-8 checked here: its bytes are deflate data.
    let deflated = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let input = stream(&[
        frame(RSV1 | TEXT, &deflated[..3]),
        frame(FIN | CONTINUATION, &deflated[3..]),
        binary(b"plain"),
    ]);
    let mut expected = vec![Ev::Start(Text, true), Ev::Data(deflated.to_vec()), Ev::End];
    expected.extend(message(Binary, b"plain"));
    assert_eq!(
        feed_every_way(deflate, &input),
        Outcome::ok(expected, input.len())
    );
    // Each fails at the end of the offending header.
    let rejected = [
        (
            stream(&[
                frame(RSV1 | TEXT, b"a"),
                frame(FIN | RSV1 | CONTINUATION, b"b"),
            ]),
            13,
        ),
        (frame(FIN | RSV1 | PING, b""), 6),
        (frame(FIN | RSV2 | TEXT, b""), 6),
        (frame(FIN | RSV1 | RSV3 | BINARY, b""), 6),
    ];
    for (input, position) in &rejected {
        let outcome = feed_every_way(deflate, input);
        assert_eq!(outcome.error, failure(Error::ReservedBits, *position));
    }
    // Without the flag the same first frame is an error.
    let outcome = feed_every_way(plain(), &frame(FIN | RSV1 | BINARY, b"x"));
    assert_eq!(outcome.error, failure(Error::ReservedBits, 6));
}

/// Case group 4: reserved opcodes, found at the first byte.
#[test]
fn group4_reserved_opcodes() {
    let valid = text(b"Hello, world!");
    for opcode in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        for payload in [&b""[..], b"reserved opcode payload"] {
            let outcome = feed_every_way(plain(), &frame(FIN | opcode, payload));
            assert_eq!(
                outcome.error,
                failure(Error::ReservedOpcode, 1),
                "{opcode:#x}"
            );
            let input = stream(&[valid.clone(), frame(FIN | opcode, payload), ping(b"")]);
            let outcome = feed_every_way(plain(), &input);
            assert_eq!(outcome.events, message(Text, b"Hello, world!"));
            assert_eq!(
                outcome.error,
                failure(Error::ReservedOpcode, valid.len() as u64 + 1)
            );
        }
    }
}

/// Case group 5: fragmentation.
#[test]
fn group5_fragmentation() {
    // 5.1, 5.2: fragmented control frames, found at the first byte.
    for opcode in [PING, PONG, CLOSE] {
        let input = stream(&[frame(opcode, b"frag1"), frame(FIN | CONTINUATION, b"frag2")]);
        assert_eq!(
            feed_every_way(plain(), &input).error,
            failure(Error::FragmentedControlFrame, 1)
        );
    }
    // 5.3-5.5: two fragments.
    let input = stream(&[
        frame(TEXT, b"fragment1"),
        frame(FIN | CONTINUATION, b"fragment2"),
    ]);
    let outcome = feed_every_way(plain(), &input);
    assert_eq!(
        outcome,
        Outcome::ok(message(Text, b"fragment1fragment2"), input.len())
    );
    // 5.6-5.8: a ping between the fragments is delivered at once.
    let input = stream(&[
        frame(TEXT, b"fragment1"),
        ping(b"pongme 2!"),
        frame(FIN | CONTINUATION, b"fragment2"),
    ]);
    let expected = vec![
        Ev::Start(Text, false),
        Ev::Data(b"fragment1".to_vec()),
        Ev::Ping(b"pongme 2!".to_vec()),
        Ev::Data(b"fragment2".to_vec()),
        Ev::End,
    ];
    assert_eq!(
        feed_every_way(plain(), &input),
        Outcome::ok(expected, input.len())
    );
    // 5.9-5.11, 5.16-5.17: continuation without a message, as the first frame or after a
    // complete one; found when its header is complete.
    for fin in [0, FIN] {
        let lone = frame(fin | CONTINUATION, b"fragment1");
        let outcome = feed_every_way(plain(), &lone);
        assert_eq!(outcome.error, failure(Error::UnexpectedContinuation, 6));
        let after = stream(&[text(b"done"), lone.clone(), text(b"never")]);
        let outcome = feed_every_way(plain(), &after);
        assert_eq!(outcome.events, message(Text, b"done"));
        assert_eq!(
            outcome.error,
            failure(Error::UnexpectedContinuation, 10 + 6)
        );
    }
    // 5.18-5.19: a new data frame inside a fragmented message.
    for second in [TEXT, FIN | TEXT, FIN | BINARY, BINARY] {
        let input = stream(&[frame(TEXT, b"fragment1"), frame(second, b"fragment2")]);
        let outcome = feed_every_way(plain(), &input);
        assert_eq!(
            outcome.events[..2],
            [Ev::Start(Text, false), Ev::Data(b"fragment1".to_vec())]
        );
        assert_eq!(outcome.error, failure(Error::ExpectedContinuation, 15 + 6));
    }
    // 5.20: many fragments with pings and pongs in between, in a binary message.
    let mut frames = vec![frame(BINARY, b"f0")];
    let mut data = b"f0".to_vec();
    for index in 1..=5u8 {
        frames.push(ping(&[index]));
        frames.push(frame(FIN | PONG, &[index]));
        let fin = if index == 5 { FIN } else { 0 };
        frames.push(frame(fin | CONTINUATION, &[b'f', b'0' + index]));
        data.extend_from_slice(&[b'f', b'0' + index]);
    }
    let outcome = feed_every_way(plain(), &stream(&frames));
    assert_eq!(outcome.data(), data);
    assert_eq!(outcome.events.first(), Some(&Ev::Start(Binary, false)));
    assert_eq!(outcome.events.last(), Some(&Ev::End));
    assert_eq!(
        outcome
            .events
            .iter()
            .filter(|event| matches!(event, Ev::Ping(_)))
            .count(),
        5
    );
    assert_eq!(outcome.error, None);
}

/// Case 6.1: empty fragments, alone and around a non-empty one.
#[test]
fn empty_fragments() {
    let input = stream(&[
        frame(TEXT, b""),
        frame(CONTINUATION, b""),
        frame(FIN | CONTINUATION, b""),
    ]);
    assert_eq!(
        feed_every_way(plain(), &input),
        Outcome::ok(message(Text, b""), input.len())
    );
    let input = stream(&[
        frame(TEXT, b""),
        frame(CONTINUATION, b"middle"),
        frame(FIN | CONTINUATION, b""),
    ]);
    let outcome = feed_every_way(plain(), &input);
    assert_eq!(outcome, Outcome::ok(message(Text, b"middle"), input.len()));
    // An empty final fragment completes the message at its header, with no data event.
    let mut session = Session::new(plain());
    let mut first = frame(TEXT, b"ab");
    let step = session.decode(&mut first).unwrap();
    assert_eq!(
        (step.consumed, step.event),
        (
            6,
            Some(Event::MessageStart {
                kind: Text,
                compressed: false
            })
        )
    );
    let step = session.decode(&mut first[6..]).unwrap();
    assert_eq!(step.event, Some(Event::Data(b"ab")));
    assert!(session.in_message());
    let mut last = frame(FIN | CONTINUATION, b"");
    let step = session.decode(&mut last).unwrap();
    assert_eq!((step.consumed, step.event), (6, Some(Event::MessageEnd)));
    assert!(!session.in_message());
}

/// Autobahn's "κόσμε", its ό being U+1F79 (three bytes).
const KOSME: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";

/// Where validating a UTF-8 case must fail.
#[derive(Clone, Copy)]
enum Fail {
    /// Nowhere: the payload is valid.
    Valid,
    /// At this payload index: the first byte that cannot be UTF-8.
    At(usize),
    /// At the end of the message: its last character is cut short.
    Truncated,
}
use Fail::{At, Truncated, Valid};

struct Utf8Case {
    payload: Vec<u8>,
    fail: Fail,
}

fn utf8_case(payload: &[u8], fail: Fail) -> Utf8Case {
    Utf8Case {
        payload: payload.to_vec(),
        fail,
    }
}

/// Autobahn case group 6, with the fail-fast index of every invalid case.
fn utf8_cases() -> Vec<Utf8Case> {
    let kosme = KOSME;
    let mut cases = vec![
        // 6.2, 6.5: valid text.
        utf8_case("Hello-µ@ßöäüàá-UTF-8!!".as_bytes(), Valid),
        utf8_case(kosme, Valid),
        // 6.3: κόσμε with a surrogate inside, fails at its second byte.
        utf8_case(&[kosme, b"\xed\xa0\x80edited"].concat(), At(12)),
        // 6.4: code point above U+10FFFF after κόσμε: fails at 0x90.
        utf8_case(&[kosme, b"\xf4\x90\x80\x80edited"].concat(), At(12)),
        // 6.7, 6.9, 6.11: first and last sequences of each length, other boundaries.
        utf8_case(b"\x00", Valid),
        utf8_case(b"\xc2\x80", Valid),
        utf8_case(b"\xe0\xa0\x80", Valid),
        utf8_case(b"\xf0\x90\x80\x80", Valid),
        utf8_case(b"\x7f", Valid),
        utf8_case(b"\xdf\xbf", Valid),
        utf8_case(b"\xef\xbf\xbf", Valid),
        utf8_case(b"\xf4\x8f\xbf\xbf", Valid),
        utf8_case(b"\xed\x9f\xbf", Valid),
        utf8_case(b"\xee\x80\x80", Valid),
        utf8_case(b"\xef\xbf\xbd", Valid),
        // 6.8, 6.10: five- and six-byte forms and lead bytes above F4.
        utf8_case(b"\xf8\x88\x80\x80\x80", At(0)),
        utf8_case(b"\xfc\x84\x80\x80\x80\x80", At(0)),
        utf8_case(b"\xf7\xbf\xbf\xbf", At(0)),
        utf8_case(b"\xfb\xbf\xbf\xbf\xbf", At(0)),
        utf8_case(b"\xfd\xbf\xbf\xbf\xbf\xbf", At(0)),
        utf8_case(b"\xf4\x90\x80\x80", At(1)),
        // 6.12: unexpected continuation bytes.
        utf8_case(b"\x80", At(0)),
        utf8_case(b"\xbf", At(0)),
        utf8_case(b"\x80\xbf", At(0)),
        utf8_case(b"ok\x80\xbf\x80", At(2)),
        // 6.13: lonely start bytes followed by a space.
        utf8_case(b"\xc0 ", At(0)),
        utf8_case(b"\xdf ", At(1)),
        utf8_case(b"\xe0 ", At(1)),
        utf8_case(b"\xef ", At(1)),
        utf8_case(b"\xf0 ", At(1)),
        utf8_case(b"\xf4 ", At(1)),
        utf8_case(b"\xf8 ", At(0)),
        utf8_case(b"\xfc ", At(0)),
        // 6.14: sequences missing their last byte, at the end of the message.
        utf8_case(b"\xdf", Truncated),
        utf8_case(b"\xef\xbf", Truncated),
        utf8_case(b"\xf4\x8f\xbf", Truncated),
        utf8_case(&[kosme, b"\xce"].concat(), Truncated),
        // 6.15: incomplete sequences concatenated: the second lead breaks the first.
        utf8_case(b"\xdf\xef\xbf\xf4\x8f\xbf", At(1)),
        // 6.16: impossible bytes.
        utf8_case(b"\xfe", At(0)),
        utf8_case(b"\xff", At(0)),
        utf8_case(b"\xfe\xfe\xff\xff", At(0)),
        // 6.17-6.19: overlong forms of '/', the largest overlongs, overlong NUL.
        utf8_case(b"\xc0\xaf", At(0)),
        utf8_case(b"\xe0\x80\xaf", At(1)),
        utf8_case(b"\xf0\x80\x80\xaf", At(1)),
        utf8_case(b"\xc1\xbf", At(0)),
        utf8_case(b"\xe0\x9f\xbf", At(1)),
        utf8_case(b"\xf0\x8f\xbf\xbf", At(1)),
        utf8_case(b"\xc0\x80", At(0)),
        utf8_case(b"\xe0\x80\x80", At(1)),
        utf8_case(b"\xf0\x80\x80\x80", At(1)),
        // 6.22-6.23: noncharacters and U+FFFD are valid.
        utf8_case(b"\xef\xbf\xbe", Valid),
        utf8_case(b"\xf0\x9f\xbf\xbf", Valid),
        utf8_case(b"\xf4\x8f\xbf\xbe", Valid),
    ];
    // 6.20, 6.21: every single surrogate, and paired surrogates: fail at the second byte.
    for second in [0xa0, 0xad, 0xae, 0xaf, 0xb0, 0xbe, 0xbf] {
        cases.push(utf8_case(&[0xed, second, 0x80], At(1)));
        cases.push(utf8_case(
            &[b'x', 0xed, second, 0xbf, 0xed, 0xb0, 0x80],
            At(2),
        ));
    }
    // 6.6: κόσμε cut after every byte: complete characters pass, a cut one fails at the end.
    for len in 1..kosme.len() {
        let cut_inside = core::str::from_utf8(&kosme[..len]).is_err();
        let fail = if cut_inside { Truncated } else { Valid };
        cases.push(utf8_case(&kosme[..len], fail));
    }
    cases
}

/// Case group 6, each payload sent as one frame, as one fragment per byte, and cut into two
/// fragments at every point; each of those fed in every split. Positions count stream bytes:
/// a bad byte's position is the headers before it, its payload index, and itself.
#[test]
fn group6_utf8() {
    for case in utf8_cases() {
        let payload = &case.payload[..];
        let len = payload.len() as u64;
        let expected = |headers_before: &dyn Fn(usize) -> u64, total: u64| match case.fail {
            Valid => None,
            At(index) => failure(Error::InvalidUtf8, headers_before(index) + index as u64 + 1),
            Truncated => failure(Error::InvalidUtf8, total),
        };
        // One frame.
        let outcome = feed_every_way(plain(), &text(payload));
        assert_eq!(outcome.error, expected(&|_| 6, 6 + len), "{payload:x?}");
        match outcome.error {
            None => assert_eq!(
                outcome,
                Outcome::ok(message(Text, payload), 6 + payload.len())
            ),
            Some(_) => {
                // As binary, the same bytes are fine.
                assert_eq!(feed(plain(), &[&binary(payload)]).error, None);
            }
        }
        // One fragment per byte: every byte has its own 6-byte header.
        let frames: Vec<Vec<u8>> = payload
            .iter()
            .enumerate()
            .map(|(index, byte)| {
                let opcode = if index == 0 { TEXT } else { CONTINUATION };
                let fin = if index + 1 == payload.len() { FIN } else { 0 };
                frame(fin | opcode, &[*byte])
            })
            .collect();
        let outcome = feed_every_way(plain(), &stream(&frames));
        let bytewise = expected(&|index| 6 * (index as u64 + 1), 7 * len);
        assert_eq!(outcome.error, bytewise, "bytewise fragments {payload:x?}");
        // Two fragments cut at every point.
        for cut in 0..=payload.len() {
            let input = stream(&[
                frame(TEXT, &payload[..cut]),
                frame(FIN | CONTINUATION, &payload[cut..]),
            ]);
            let outcome = feed(plain(), &[&input]);
            let two = expected(&|index| if index < cut { 6 } else { 12 }, 12 + len);
            assert_eq!(outcome.error, two, "cut {cut} of {payload:x?}");
            if two.is_none() {
                assert_eq!(outcome.data(), payload);
                assert_eq!(outcome.consumed, 12 + len);
            }
        }
    }
}

/// 6.4.1-6.4.4 "fail fast": the invalid byte ends the session before the frame does. With
/// the payload's tail still unsent, the error is already there.
#[test]
fn group6_fails_before_the_frame_ends() {
    let payload = [KOSME, b"\xf4\x90\x80\x80edited"].concat();
    let input = text(&payload);
    // Send up to and including 0x90 (payload index 12): the error must show now.
    let sent = &input[..6 + 13];
    let outcome = feed(plain(), &[sent]);
    assert_eq!(outcome.error, failure(Error::InvalidUtf8, 19));
    // One byte fewer: no error yet, and everything so far was delivered, the F4 that may
    // still start a character included.
    let outcome = feed(plain(), &[&input[..6 + 12]]);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.data(), &payload[..12]);
    assert_eq!(
        outcome.events.last(),
        Some(&Ev::Data(payload[..12].to_vec()))
    );
}

/// An incomplete character at the end of a non-final fragment, completed by the next, with
/// a ping between the halves.
#[test]
fn utf8_sequence_spans_fragments_and_control_frames() {
    let euro = "€".as_bytes();
    let input = stream(&[
        frame(TEXT, &euro[..1]),
        ping(b"between"),
        frame(CONTINUATION, &euro[1..2]),
        frame(FIN | CONTINUATION, &euro[2..]),
    ]);
    let outcome = feed_every_way(plain(), &input);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.data(), euro);
    assert!(outcome.events.contains(&Ev::Ping(b"between".to_vec())));
    // Truncated at the final fragment: fails at the message's last byte.
    let input = stream(&[
        frame(TEXT, &euro[..1]),
        frame(FIN | CONTINUATION, &euro[1..2]),
    ]);
    let outcome = feed_every_way(plain(), &input);
    assert_eq!(
        outcome.error,
        failure(Error::InvalidUtf8, input.len() as u64)
    );
    // Truncated by an empty final fragment: fails at that fragment's header.
    let input = stream(&[frame(TEXT, &euro[..2]), frame(FIN | CONTINUATION, b"")]);
    let outcome = feed_every_way(plain(), &input);
    assert_eq!(
        outcome.error,
        failure(Error::InvalidUtf8, input.len() as u64)
    );
    assert_eq!(outcome.data(), &euro[..2]);
}

/// Case group 7: the close frame, and what follows it.
#[test]
fn group7_close_frames() {
    // 7.1.1-7.1.4: a message, a close, then a second close, a ping, a message: ignored.
    let input = stream(&[
        text(b"Hello World!"),
        close(1000, b""),
        close(1001, b"again"),
        ping(b"after close"),
        text(b"after close"),
    ]);
    let mut expected = message(Text, b"Hello World!");
    expected.push(Ev::Close(Some(1000), String::new()));
    assert_eq!(
        feed_every_way(plain(), &input),
        Outcome::ok(expected, input.len())
    );
    // 7.1.5: a message fragment, a close, the rest of the message: the close ends it.
    let input = stream(&[
        frame(TEXT, b"fragment1"),
        close(1000, b""),
        frame(FIN | CONTINUATION, b"2"),
    ]);
    let outcome = feed_every_way(plain(), &input);
    assert_eq!(
        outcome.events,
        [
            Ev::Start(Text, false),
            Ev::Data(b"fragment1".to_vec()),
            Ev::Close(Some(1000), String::new())
        ]
    );
    // Ignored bytes after the close may even be garbage.
    let input = stream(&[close(1000, b"bye"), vec![0xff; 20]]);
    let outcome = feed_every_way(plain(), &input);
    assert_eq!(
        outcome,
        Outcome::ok(vec![Ev::Close(Some(1000), "bye".into())], input.len())
    );
    // 7.3.1: empty body.
    let outcome = feed_every_way(plain(), &frame(FIN | CLOSE, b""));
    assert_eq!(outcome.events, [Ev::Close(None, String::new())]);
    // 7.3.2: one byte, found at the header.
    let outcome = feed_every_way(plain(), &frame(FIN | CLOSE, b"a"));
    assert_eq!(outcome.error, failure(Error::ClosePayloadTooShort, 6));
    // 7.3.3-7.3.5: a code, a reason, a 123-byte reason (125 in all).
    let long_reason = vec![b'*'; 123];
    for reason in [&b""[..], b"Hello World!", &long_reason] {
        let outcome = feed_every_way(plain(), &close(1000, reason));
        let reason = String::from_utf8(reason.to_vec()).unwrap();
        assert_eq!(outcome.events, [Ev::Close(Some(1000), reason)]);
    }
    // 7.3.6: a 124-byte reason makes a 126-byte control frame.
    let outcome = feed_every_way(plain(), &close(1000, &[b'*'; 124]));
    assert_eq!(outcome.error, failure(Error::ControlFrameTooLong, 2));
    // 7.5.1: a reason that is not UTF-8, found when the frame is complete.
    let input = close(
        1000,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    );
    let outcome = feed_every_way(plain(), &input);
    assert_eq!(
        outcome.error,
        failure(Error::InvalidCloseReason, input.len() as u64)
    );
}

/// 7.7 and 7.9: which close codes a client may send.
#[test]
fn group7_close_codes() {
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    let invalid = [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in valid {
        assert!(close_code::is_valid(code), "{code}");
        let outcome = feed_every_way(plain(), &close(code, b"reason"));
        assert_eq!(
            outcome.events,
            [Ev::Close(Some(code), "reason".into())],
            "{code}"
        );
    }
    for code in invalid {
        assert!(!close_code::is_valid(code), "{code}");
        let input = close(code, b"");
        let outcome = feed_every_way(plain(), &input);
        assert_eq!(outcome.error, failure(Error::InvalidCloseCode, 8), "{code}");
        assert_eq!(
            Error::InvalidCloseCode.close_code(),
            close_code::PROTOCOL_ERROR
        );
    }
    // Exhaustively, the rule is exactly the RFC's ranges.
    let count = (0..=u16::MAX)
        .filter(|&code| close_code::is_valid(code))
        .count();
    assert_eq!(count, 4 + 8 + 2000);
    assert_eq!(
        parse_close(&[0x03, 0xe8, b'o', b'k']),
        Ok((Some(1000), "ok"))
    );
    assert_eq!(parse_close(&[]), Ok((None, "")));
    assert_eq!(parse_close(&[0x03]), Err(Error::ClosePayloadTooShort));
}

/// Case group 9: large messages, whole and fragmented, chopped on the wire.
#[test]
fn group9_large_messages() {
    for len in [64 * 1024, 256 * 1024, 1024 * 1024] {
        let payload = "ab€κ𝄞".repeat(len / 11 + 1).into_bytes()[..len].to_vec();
        // Cut at a character boundary for a valid text message of about `len` bytes.
        let text_len = (0..=len)
            .rev()
            .find(|&cut| core::str::from_utf8(&payload[..cut]).is_ok())
            .unwrap();
        let text_payload = &payload[..text_len];
        let input = text(text_payload);
        let expected = Outcome::ok(message(Text, text_payload), input.len());
        assert_eq!(feed(plain(), &[&input]), expected);
        let chops: Vec<&[u8]> = input.chunks(4096).collect();
        assert_eq!(feed(plain(), &chops), expected);
        // 9.3/9.4: fragmented at sizes that cut characters; 9.5/9.6: chopped oddly.
        for fragment_len in [64, 4096, 65536] {
            let fragments: Vec<&[u8]> = text_payload.chunks(fragment_len).collect();
            let last = fragments.len() - 1;
            let frames: Vec<Vec<u8>> = fragments
                .iter()
                .enumerate()
                .map(|(index, fragment)| {
                    let opcode = if index == 0 { TEXT } else { CONTINUATION };
                    frame(if index == last { FIN | opcode } else { opcode }, fragment)
                })
                .collect();
            let input = stream(&frames);
            let chops: Vec<&[u8]> = input.chunks(1009).collect();
            let outcome = feed(plain(), &chops);
            assert_eq!(
                outcome,
                Outcome::ok(message(Text, text_payload), input.len())
            );
        }
        let input = binary(&payload);
        assert_eq!(
            feed(plain(), &[&input]),
            Outcome::ok(message(Binary, &payload), input.len())
        );
    }
}

/// Case 10.1.1: a 65536-byte message in fragments of 1300.
#[test]
fn group10_autofragmented() {
    let payload = ascii(65536);
    let fragments: Vec<&[u8]> = payload.chunks(1300).collect();
    assert_eq!(fragments.len(), 51);
    let frames: Vec<Vec<u8>> = fragments
        .iter()
        .enumerate()
        .map(|(index, fragment)| {
            let opcode = if index == 0 { TEXT } else { CONTINUATION };
            frame(if index == 50 { FIN | opcode } else { opcode }, fragment)
        })
        .collect();
    let input = stream(&frames);
    let outcome = feed(plain(), &[&input]);
    assert_eq!(outcome, Outcome::ok(message(Text, &payload), input.len()));
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(feed(plain(), &bytes), outcome);
}

/// The message size limit counts every fragment and fails at the header that passes it.
#[test]
fn message_size_limit() {
    let limited = SessionConfig {
        message_bytes_max: 1000,
        ..plain()
    };
    let at_limit = binary(&[1; 1000]);
    assert_eq!(feed_every_way(limited, &at_limit).error, None);
    let over = binary(&[1; 1001]);
    assert_eq!(
        feed_every_way(limited, &over).error,
        failure(Error::MessageTooLarge, 8)
    );
    // Fragments add up; control frames in between do not count; each message starts at 0.
    let input = stream(&[
        frame(TEXT, &[b'a'; 600]),
        ping(&[0; 125]),
        frame(FIN | CONTINUATION, &[b'b'; 400]),
        text(&[b'c'; 1000]),
    ]);
    let outcome = feed_every_way(limited, &input);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.data().len(), 2000);
    let first = frame(TEXT, &[b'a'; 600]);
    let input = stream(&[first.clone(), frame(FIN | CONTINUATION, &[b'b'; 401])]);
    let outcome = feed_every_way(limited, &input);
    assert_eq!(
        outcome.error,
        failure(Error::MessageTooLarge, first.len() as u64 + 8)
    );
    assert_eq!(outcome.data(), vec![b'a'; 600]);
    // A huge announced length fails before any payload arrives.
    let mut header = vec![FIN | BINARY, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&MASK);
    assert_eq!(
        feed_every_way(plain(), &header).error,
        failure(Error::MessageTooLarge, 14)
    );
    assert_eq!(
        Error::MessageTooLarge.close_code(),
        close_code::MESSAGE_TOO_BIG
    );
}

/// Frame-level errors pass through the session with the decoder's position.
#[test]
fn frame_errors_surface_with_their_position() {
    let unmasked = frame_with(FIN | TEXT, b"hello", None, Length::Minimal);
    assert_eq!(
        feed_every_way(plain(), &unmasked).error,
        failure(Error::Unmasked, 2)
    );
    let non_minimal = frame_with(FIN | BINARY, b"hello", Some(MASK), Length::Force16);
    assert_eq!(
        feed_every_way(plain(), &non_minimal).error,
        failure(Error::NonMinimalLength, 4)
    );
    let non_minimal = frame_with(FIN | BINARY, &[0; 300], Some(MASK), Length::Force64);
    assert_eq!(
        feed_every_way(plain(), &non_minimal).error,
        failure(Error::NonMinimalLength, 10)
    );
    for error in [
        Error::Unmasked,
        Error::NonMinimalLength,
        Error::ReservedBits,
    ] {
        assert_eq!(error.close_code(), close_code::PROTOCOL_ERROR);
        assert!(error.description().len() <= 123);
    }
    assert_eq!(Error::InvalidUtf8.close_code(), close_code::INVALID_PAYLOAD);
}

/// Data is unmasked in place in the caller's buffer, and control payloads split across
/// reads are gathered in the session.
#[test]
fn data_is_unmasked_in_place() {
    let mut input = text(b"in place");
    let mut session = Session::new(plain());
    let step = session.decode(&mut input).unwrap();
    assert_eq!(step.consumed, 6);
    let step = session.decode(&mut input[6..]).unwrap();
    assert_eq!(step.event, Some(Event::Data(b"in place")));
    assert_eq!(&input[6..], b"in place");
    // A ping split across three reads.
    let whole = ping(b"split ping");
    let mut session = Session::new(plain());
    let mut reads = [
        whole[..4].to_vec(),
        whole[4..9].to_vec(),
        whole[9..].to_vec(),
    ];
    for read in &mut reads[..2] {
        let len = read.len();
        let step = session.decode(read).unwrap();
        assert_eq!((step.consumed, step.event), (len, None));
    }
    let step = session.decode(&mut reads[2]).unwrap();
    assert_eq!(step.event, Some(Event::Ping(b"split ping")));
}

#[test]
fn close_state_tracks_both_directions() {
    let state = CloseState::default();
    assert!(state.can_send_data());
    assert!(!state.must_send_close());
    // Client first: we owe a close, then we are done.
    let received = state.on_received();
    assert_eq!(received, CloseState::Received);
    assert!(received.must_send_close());
    assert!(received.on_sent().is_closed());
    // Server first: no more data, done when the client answers.
    let sent = state.on_sent();
    assert!(!sent.can_send_data());
    assert!(!sent.must_send_close());
    assert!(!sent.is_closed());
    assert!(sent.on_received().is_closed());
    // A second close from the client changes nothing.
    assert_eq!(received.on_received(), CloseState::Received);
}

/// The per-connection state stays small: it lives in every open WebSocket's slot.
#[test]
fn state_sizes() {
    let session = core::mem::size_of::<Session>();
    let decoder = core::mem::size_of::<crate::proto::ws::FrameDecoder>();
    eprintln!("Session {session} B, FrameDecoder {decoder} B");
    // 49 B of fields since the role (client mode) took a byte: 56 with alignment. Held
    // boxed and only while a connection is reading frames, never by an idle one.
    assert!(decoder <= 56, "FrameDecoder is {decoder} B");
    // The 125-byte control buffer is most of it.
    assert!(session <= 232, "Session is {session} B");
}
