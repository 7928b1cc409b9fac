//! The frame layer alone: headers of every length encoding, the byte each rule fails at,
//! payload pieces and their mask phase, unmasking, and the server frame encoder.

use super::{
    frame, frame_with, Length, BINARY, CLOSE, CONTINUATION, FIN, MASK, PING, RSV1, RSV2, RSV3, TEXT,
};
use crate::proto::ws::{
    encode_close, encode_frame, encode_header, unmask, unmask_into, ClosePayload, Decoded, Error,
    FrameDecoder, FrameHeader, FrameItem, Opcode, PayloadPiece, CONTROL_PAYLOAD_BYTES_MAX,
    PAYLOAD_BYTES_MAX,
};

/// Frames with their unmasked payloads, or the error and the position it was revealed at.
type Decoding = Result<Vec<(FrameHeader, Vec<u8>)>, (Error, u64)>;

/// Feeds `pieces` to a fresh decoder and returns its items with payload pieces unmasked
/// into one buffer per frame, or the error and the decoder's position.
fn decode_all(pieces: &[&[u8]]) -> Decoding {
    let mut decoder = FrameDecoder::new();
    let mut frames: Vec<(FrameHeader, Vec<u8>)> = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        loop {
            let Decoded { consumed, item } = decoder
                .decode(rest)
                .map_err(|error| (error, decoder.position()))?;
            assert!(consumed <= rest.len());
            match item {
                None => {
                    assert_eq!(consumed, rest.len());
                    break;
                }
                Some(FrameItem::Header(header)) => frames.push((header, Vec::new())),
                Some(FrameItem::Payload(piece)) => {
                    assert_eq!(piece.len, consumed);
                    assert!(piece.len > 0);
                    let (header, payload) = frames.last_mut().expect("payload after a header");
                    assert_eq!(piece.offset, payload.len() as u64);
                    assert_eq!(piece.mask, header.mask);
                    let mut bytes = rest[..consumed].to_vec();
                    unmask(&mut bytes, piece.mask, piece.offset);
                    payload.extend_from_slice(&bytes);
                    assert_eq!(piece.end, payload.len() as u64 == header.payload_len);
                }
            }
            rest = &rest[consumed..];
        }
    }
    Ok(frames)
}

/// Whole, byte by byte, and cut at every point (for short inputs): the same result.
fn decode_every_way(input: &[u8]) -> Decoding {
    let whole = decode_all(&[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_all(&bytes), whole, "byte by byte");
    if input.len() <= 200 {
        for cut in 0..=input.len() {
            let (head, tail) = input.split_at(cut);
            assert_eq!(decode_all(&[head, tail]), whole, "cut at {cut}");
        }
    }
    whole
}

fn header(first: u8, payload_len: u64) -> FrameHeader {
    FrameHeader {
        fin: first & FIN != 0,
        rsv1: first & RSV1 != 0,
        rsv2: first & RSV2 != 0,
        rsv3: first & RSV3 != 0,
        opcode: Opcode::from_bits(first & 0xf).unwrap(),
        mask: MASK,
        payload_len,
    }
}

#[test]
fn opcodes() {
    let known = [
        (0x0, Opcode::Continuation),
        (0x1, Opcode::Text),
        (0x2, Opcode::Binary),
        (0x8, Opcode::Close),
        (0x9, Opcode::Ping),
        (0xa, Opcode::Pong),
    ];
    for bits in 0..16u8 {
        let expected = known
            .iter()
            .find(|(b, _)| *b == bits)
            .map(|(_, opcode)| *opcode);
        assert_eq!(Opcode::from_bits(bits), expected, "{bits:#x}");
        if let Some(opcode) = expected {
            assert_eq!(opcode.bits(), bits);
            assert_eq!(opcode.is_control(), bits >= 8);
        }
    }
}

/// Every length encoding at its boundaries, with header sizes 6, 8 and 14.
#[test]
fn length_encodings() {
    for (len, header_len) in [
        (0, 6),
        (1, 6),
        (125, 6),
        (126, 8),
        (127, 8),
        (65535, 8),
        (65536, 14),
        (70000, 14),
    ] {
        let payload: Vec<u8> = (0..len).map(|index| (index % 253) as u8).collect();
        let input = frame(FIN | BINARY, &payload);
        assert_eq!(input.len(), header_len + len, "{len}");
        let frames = decode_every_way(&input).unwrap();
        assert_eq!(
            frames,
            [(header(FIN | BINARY, len as u64), payload)],
            "{len}"
        );
    }
}

/// Every flag bit comes through as sent (the session, not the decoder, judges RSV bits).
#[test]
fn flags_pass_through() {
    for first in [
        TEXT,
        FIN | TEXT,
        FIN | RSV1 | BINARY,
        RSV2 | CONTINUATION,
        FIN | RSV3 | PING,
        FIN | RSV1 | RSV2 | RSV3 | CLOSE,
    ] {
        let frames = decode_every_way(&frame(first, b"xyz")).unwrap();
        assert_eq!(frames, [(header(first, 3), b"xyz".to_vec())], "{first:#x}");
    }
}

/// Each frame rule fails at the byte that decides it, however the input is split.
#[test]
fn errors_and_their_positions() {
    let long_control = {
        let mut input = vec![FIN | PING, 0x80 | 126, 0x00, 0x7e];
        input.extend_from_slice(&MASK);
        input
    };
    let mut top_bit = vec![FIN | BINARY, 0x80 | 127];
    top_bit.extend_from_slice(&(1u64 << 63).to_be_bytes());
    top_bit.extend_from_slice(&MASK);
    let mut max_len = vec![FIN | BINARY, 0x80 | 127];
    max_len.extend_from_slice(&PAYLOAD_BYTES_MAX.to_be_bytes());
    max_len.extend_from_slice(&MASK);
    let cases: Vec<(&str, Vec<u8>, Error, u64)> = vec![
        ("opcode 3", frame(FIN | 0x3, b""), Error::ReservedOpcode, 1),
        (
            "opcode 0xf",
            frame(FIN | 0xf, b"x"),
            Error::ReservedOpcode,
            1,
        ),
        (
            "ping without FIN",
            frame(PING, b""),
            Error::FragmentedControlFrame,
            1,
        ),
        (
            "close without FIN",
            frame(CLOSE, b""),
            Error::FragmentedControlFrame,
            1,
        ),
        (
            "unmasked",
            frame_with(FIN | TEXT, b"hi", None, Length::Minimal),
            Error::Unmasked,
            2,
        ),
        (
            "unmasked empty",
            frame_with(FIN | TEXT, b"", None, Length::Minimal),
            Error::Unmasked,
            2,
        ),
        (
            "ping of 126",
            frame(FIN | PING, &[0; 126]),
            Error::ControlFrameTooLong,
            2,
        ),
        (
            "ping of 126 in 16 bits",
            long_control,
            Error::ControlFrameTooLong,
            2,
        ),
        (
            "125 in 16 bits",
            frame_with(FIN | TEXT, &[b'a'; 125], Some(MASK), Length::Force16),
            Error::NonMinimalLength,
            4,
        ),
        (
            "0 in 16 bits",
            frame_with(FIN | TEXT, b"", Some(MASK), Length::Force16),
            Error::NonMinimalLength,
            4,
        ),
        (
            "65535 in 64 bits",
            frame_with(FIN | BINARY, &[0; 65535], Some(MASK), Length::Force64),
            Error::NonMinimalLength,
            10,
        ),
        (
            "126 in 64 bits",
            frame_with(FIN | BINARY, &[0; 126], Some(MASK), Length::Force64),
            Error::NonMinimalLength,
            10,
        ),
        ("top bit", top_bit, Error::LengthOverflow, 10),
    ];
    for (name, input, error, position) in cases {
        assert_eq!(decode_every_way(&input), Err((error, position)), "{name}");
        // After a valid frame, the position moves by that frame's length.
        let valid = frame(FIN | TEXT, b"ok");
        let input = [valid.clone(), input].concat();
        assert_eq!(
            decode_all(&[&input]),
            Err((error, valid.len() as u64 + position)),
            "{name}"
        );
    }
    // The largest length is not an error for the decoder (the session's size limit is).
    let mut decoder = FrameDecoder::new();
    let decoded = decoder.decode(&max_len).unwrap();
    assert_eq!(
        decoded.item,
        Some(FrameItem::Header(header(FIN | BINARY, PAYLOAD_BYTES_MAX)))
    );
    // Errors are sticky.
    let mut decoder = FrameDecoder::new();
    assert_eq!(decoder.decode(&[FIN | 0x3]), Err(Error::ReservedOpcode));
    assert_eq!(
        decoder.decode(&frame(FIN | TEXT, b"")),
        Err(Error::ReservedOpcode)
    );
    assert_eq!(decoder.position(), 1);
}

/// Several frames back to back, with empty ones, in any split; pieces keep the mask phase.
#[test]
fn frame_sequences_and_payload_pieces() {
    let frames = [
        frame(TEXT, b"Hello, "),
        frame(FIN | PING, b""),
        frame(CONTINUATION, b""),
        frame(FIN | CONTINUATION, b"world!"),
        frame(FIN | BINARY, &[0xab; 300]),
    ];
    let input = frames.concat();
    let decoded = decode_every_way(&input).unwrap();
    let expected = vec![
        (header(TEXT, 7), b"Hello, ".to_vec()),
        (header(FIN | PING, 0), Vec::new()),
        (header(CONTINUATION, 0), Vec::new()),
        (header(FIN | CONTINUATION, 6), b"world!".to_vec()),
        (header(FIN | BINARY, 300), vec![0xab; 300]),
    ];
    assert_eq!(decoded, expected);
    // One call hands out at most one item and stops at the frame's end.
    let mut decoder = FrameDecoder::new();
    let first = decoder.decode(&input).unwrap();
    assert_eq!(first.consumed, 6);
    let piece = decoder.decode(&input[6..]).unwrap();
    assert_eq!(
        piece.item,
        Some(FrameItem::Payload(PayloadPiece {
            len: 7,
            mask: MASK,
            offset: 0,
            end: true
        }))
    );
    assert!(decoder.at_frame_boundary());
    // A payload split in three reads: offsets 0, 3, 5.
    let input = frame(FIN | BINARY, b"abcdefgh");
    let mut decoder = FrameDecoder::new();
    assert_eq!(decoder.decode(&input[..6]).unwrap().consumed, 6);
    let mut offsets = Vec::new();
    for range in [6..9, 9..11, 11..14] {
        let decoded = decoder.decode(&input[range.clone()]).unwrap();
        let Some(FrameItem::Payload(piece)) = decoded.item else {
            panic!("payload")
        };
        assert_eq!(piece.len, range.len());
        offsets.push((piece.offset, piece.end));
        assert!(!decoder.at_frame_boundary() || piece.end);
    }
    assert_eq!(offsets, [(0, false), (3, false), (5, true)]);
    assert_eq!(decoder.position(), input.len() as u64);
    assert_eq!(
        decoder.decode(&[]).unwrap(),
        Decoded {
            consumed: 0,
            item: None
        }
    );
}

fn unmask_reference(bytes: &mut [u8], mask: [u8; 4], offset: u64) {
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte ^= mask[((offset + index as u64) % 4) as usize];
    }
}

/// The 8-byte unmasker equals the byte-at-a-time definition at every length, offset and
/// alignment, in place and into another buffer.
#[test]
fn unmask_matches_definition() {
    let data: Vec<u8> = (0..64u8).map(|byte| byte.wrapping_mul(37)).collect();
    for start in 0..8 {
        for len in 0..40 {
            for offset in [0u64, 1, 2, 3, 5, 1 << 33] {
                let source = &data[start..start + len];
                let mut expected = source.to_vec();
                unmask_reference(&mut expected, MASK, offset);
                let mut in_place = source.to_vec();
                unmask(&mut in_place, MASK, offset);
                assert_eq!(
                    in_place, expected,
                    "start {start} len {len} offset {offset}"
                );
                let mut target = vec![0; len];
                unmask_into(source, &mut target, MASK, offset);
                assert_eq!(target, expected);
                // Twice is the identity.
                unmask(&mut in_place, MASK, offset);
                assert_eq!(in_place, source);
            }
        }
    }
    // Pieces unmasked one after the other with running offsets equal the whole.
    let mut whole = data.clone();
    unmask(&mut whole, MASK, 0);
    let mut pieces = data.clone();
    let mut offset = 0;
    for len in [3, 1, 8, 13, 7, 32] {
        unmask(&mut pieces[offset..offset + len], MASK, offset as u64);
        offset += len;
    }
    assert_eq!(pieces, whole);
}

/// Server headers: minimal lengths, no mask bit, flags where they belong.
#[test]
fn encodes_server_headers() {
    let cases: [(u64, &[u8]); 7] = [
        (0, &[0x82, 0]),
        (125, &[0x82, 125]),
        (126, &[0x82, 126, 0, 126]),
        (65535, &[0x82, 126, 0xff, 0xff]),
        (65536, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        (1 << 40, &[0x82, 127, 0, 0, 1, 0, 0, 0, 0, 0]),
        (
            PAYLOAD_BYTES_MAX,
            &[0x82, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
    ];
    for (len, expected) in cases {
        assert_eq!(
            encode_header(true, false, Opcode::Binary, len).as_bytes(),
            expected,
            "{len}"
        );
    }
    assert_eq!(
        encode_header(false, true, Opcode::Text, 3).as_bytes(),
        [0x41, 3]
    );
    assert_eq!(
        encode_header(false, false, Opcode::Continuation, 3).as_bytes(),
        [0x00, 3]
    );
    assert_eq!(
        encode_header(true, false, Opcode::Pong, 125).as_bytes(),
        [0x8a, 125]
    );
    let mut out = b"prefix".to_vec();
    encode_frame(&mut out, true, false, Opcode::Text, b"Hello");
    assert_eq!(out, b"prefix\x81\x05Hello");
}

/// What the encoder writes decodes to the same frame once masked the way a client would.
#[test]
fn encoder_round_trips_through_decoder() {
    for len in [0usize, 5, 125, 126, 65535, 65536] {
        for (opcode, fin) in [
            (Opcode::Text, true),
            (Opcode::Binary, false),
            (Opcode::Continuation, true),
        ] {
            let payload: Vec<u8> = (0..len).map(|index| (index % 251) as u8).collect();
            let mut server = Vec::new();
            encode_frame(&mut server, fin, fin, opcode, &payload);
            let header_len = server.len() - len;
            // Client form: mask bit, key, masked payload.
            let mut client = server[..header_len].to_vec();
            client[1] |= 0x80;
            client.extend_from_slice(&MASK);
            let mut masked = payload.clone();
            unmask(&mut masked, MASK, 0);
            client.extend_from_slice(&masked);
            let frames = decode_all(&[&client]).unwrap();
            assert_eq!(frames.len(), 1);
            let (header, decoded) = &frames[0];
            assert_eq!(
                (header.fin, header.rsv1, header.opcode, header.payload_len),
                (fin, fin, opcode, len as u64)
            );
            assert_eq!(decoded, &payload);
        }
    }
}

#[test]
fn encodes_close_frames() {
    let mut out = Vec::new();
    encode_close(&mut out, 1000, "bye");
    assert_eq!(out, b"\x88\x05\x03\xe8bye");
    out.clear();
    encode_close(&mut out, 4001, "");
    assert_eq!(out, b"\x88\x02\x0f\xa1");
    // A long reason is cut to 123 bytes, at a character boundary.
    let long = "é".repeat(100);
    let payload = ClosePayload::new(1001, &long);
    assert_eq!(payload.as_bytes().len(), 2 + 122);
    assert!(core::str::from_utf8(&payload.as_bytes()[2..]).is_ok());
    let ascii = "x".repeat(200);
    assert_eq!(
        ClosePayload::new(1000, &ascii).as_bytes().len(),
        CONTROL_PAYLOAD_BYTES_MAX
    );
    out.clear();
    encode_close(&mut out, 1000, &ascii);
    assert_eq!(out.len(), 2 + CONTROL_PAYLOAD_BYTES_MAX);
    assert_eq!(out[1], 125);
}

#[test]
fn client_role_reads_unmasked_frames_and_refuses_masked_ones() {
    // Goal: in client mode (Role::Client) a server's unmasked frame decodes, split at every
    // byte, with a zero key; a masked one fails at its second byte (RFC 6455 §5.1).
    use crate::proto::ws::Role;
    let wire = [0x81, 0x05, b'h', b'e', b'l', b'l', b'o'];
    for split in 0..=wire.len() {
        let mut decoder = FrameDecoder::with_role(Role::Client);
        let mut payload = Vec::new();
        let mut header = None;
        for (base, piece) in [(0, &wire[..split]), (split, &wire[split..])] {
            let mut at = 0;
            loop {
                let d = decoder.decode(&piece[at..]).unwrap();
                let taken = base + at..base + at + d.consumed;
                at += d.consumed;
                match d.item {
                    None => break,
                    Some(FrameItem::Header(h)) => header = Some(h),
                    Some(FrameItem::Payload(p)) => {
                        assert_eq!(p.mask, [0; 4]);
                        payload.extend_from_slice(&wire[taken]);
                    }
                }
            }
        }
        let header = header.expect("a header");
        assert_eq!(
            (header.opcode, header.payload_len, header.mask),
            (Opcode::Text, 5, [0; 4])
        );
        assert_eq!(payload, b"hello", "split at {split}");
    }
    let mut decoder = FrameDecoder::with_role(Role::Client);
    assert_eq!(
        decoder.decode(&[0x81, 0x85, 1, 2, 3, 4]),
        Err(Error::Masked)
    );
    assert_eq!(decoder.position(), 2);
    assert_eq!(Error::Masked.close_code(), 1002);
}

#[test]
fn masked_frames_round_trip_through_the_server_role() {
    // Goal: encode_masked_frame writes what a server-role decoder reads back: the mask bit,
    // the key, the payload masked with it, every length encoding.
    use crate::proto::ws::encode_masked_frame;
    for len in [0usize, 1, 125, 126, 65535, 65536] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let mut out = Vec::new();
        encode_masked_frame(
            &mut out,
            true,
            false,
            Opcode::Binary,
            &payload,
            [9, 8, 7, 6],
        );
        assert_eq!(out[1] & 0x80, 0x80);
        let frames = decode_all(&[&out]).expect("a valid client frame");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0.mask, [9, 8, 7, 6]);
        assert_eq!(frames[0].1, payload, "length {len}");
    }
}
