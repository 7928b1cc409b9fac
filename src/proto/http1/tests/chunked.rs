//! Chunked decoding: valid bodies and the data they carry, errors, body limits, and the
//! same results for every split of the input.

use crate::proto::http1::{
    check_body_length, ChunkedDecoder, Error, CHUNK_EXT_BYTES_MAX, TRAILER_BYTES_MAX,
};

/// What a caller sees after feeding `pieces` in order, the way the connection core does:
/// unconsumed bytes stay buffered and the next piece is appended to them.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    consumed: usize,
    done: bool,
}

fn feed(decoder: &mut ChunkedDecoder, pieces: &[&[u8]]) -> Result<Outcome, Error> {
    let mut pending = Vec::new();
    let mut outcome = Outcome {
        data: Vec::new(),
        consumed: 0,
        done: false,
    };
    for piece in pieces {
        pending.extend_from_slice(piece);
        // Bounded: each pass consumes at least one byte or returns.
        for _ in 0..=pending.len() + 1 {
            let decoded = decoder.decode(&pending)?;
            if let Some(data) = decoded.data {
                assert!(!data.is_empty(), "empty data slices are not handed out");
                outcome.data.extend_from_slice(data);
            }
            let (consumed, done) = (decoded.consumed, decoded.done);
            pending.drain(..consumed);
            outcome.consumed += consumed;
            if done {
                outcome.done = true;
                return Ok(outcome);
            }
            if consumed == 0 {
                break;
            }
        }
        assert!(
            pending.is_empty(),
            "framing bytes are consumed as they arrive"
        );
    }
    Ok(outcome)
}

fn decode_whole(input: &[u8]) -> Result<Outcome, Error> {
    feed(&mut ChunkedDecoder::new(), &[input])
}

/// `(input, body)`: each input is a whole chunked body followed by `NEXT`, which must be left
/// unconsumed.
const VALID: &[(&[u8], &[u8])] = &[
    (b"0\r\n\r\n", b""),
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (
        b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n",
        b"0123456789abcdefghij",
    ),
    (b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
    (b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello"),
    (b"5;a=\"x;y \\\" z\"\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5 ;a\r\nhello\r\n0\t\r\n\r\n", b"hello"),
    (
        b"5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum:\t1 2\r\n\r\n",
        b"hello",
    ),
    (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r"),
    (b"1\r\n0\r\n1\r\n\n\r\n0\r\n\r\n", b"0\n"),
];

const NEXT: &[u8] = b"GET / HTTP/1.1\r\n";

fn with_next(input: &[u8]) -> Vec<u8> {
    [input, NEXT].concat()
}

#[test]
fn valid_bodies() {
    for &(input, body) in VALID {
        let outcome = decode_whole(&with_next(input)).unwrap();
        let expected = Outcome {
            data: body.to_vec(),
            consumed: input.len(),
            done: true,
        };
        assert_eq!(outcome, expected, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn every_split_gives_the_same_result() {
    // Goal: the decoder's output does not depend on how the input is cut. Method: feed each
    // valid body whole, in two pieces at every split point, and byte by byte.
    for &(input, _) in VALID {
        let input = with_next(input);
        let whole = decode_whole(&input).unwrap();
        for split in 0..=input.len() {
            let (head, tail) = input.split_at(split);
            let outcome = feed(&mut ChunkedDecoder::new(), &[head, tail]).unwrap();
            assert_eq!(outcome, whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&mut ChunkedDecoder::new(), &bytes).unwrap(), whole);
    }
}

#[test]
fn every_proper_prefix_is_unfinished() {
    for &(input, body) in VALID {
        for end in 0..input.len() {
            let outcome = decode_whole(&input[..end]).unwrap();
            assert!(!outcome.done, "prefix {end}");
            assert_eq!(outcome.consumed, end, "framing is consumed as it arrives");
            assert!(body.starts_with(&outcome.data));
        }
    }
}

#[test]
fn data_is_borrowed_one_chunk_at_a_time() {
    let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let mut decoder = ChunkedDecoder::new();
    let first = decoder.decode(input).unwrap();
    assert_eq!(
        (first.consumed, first.data, first.done),
        (6, Some(&b"abc"[..]), false)
    );
    let second = decoder.decode(&input[6..]).unwrap();
    assert_eq!((second.consumed, second.data), (7, Some(&b"de"[..])));
    let last = decoder.decode(&input[13..]).unwrap();
    assert_eq!((last.consumed, last.data, last.done), (7, None, true));
    assert!(decoder.is_done());
    assert_eq!(decoder.body_bytes(), 5);
    // Done is sticky and consumes nothing more.
    let again = decoder.decode(b"more").unwrap();
    assert_eq!((again.consumed, again.data, again.done), (0, None, true));
}

fn long_extension(bytes: usize) -> Vec<u8> {
    let mut input = b"1;".to_vec();
    input.resize(1 + bytes, b'x');
    input.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
    input
}

fn long_trailer(bytes: usize) -> Vec<u8> {
    // The trailer section counts from the first trailer byte through the final CRLF.
    let mut input = b"0\r\nX:".to_vec();
    input.resize(3 + bytes - 4, b'v');
    input.extend_from_slice(b"\r\n\r\n");
    input
}

#[test]
fn bounds_are_exact() {
    assert!(
        decode_whole(&long_extension(CHUNK_EXT_BYTES_MAX))
            .unwrap()
            .done
    );
    assert_eq!(
        decode_whole(&long_extension(CHUNK_EXT_BYTES_MAX + 1)),
        Err(Error::BadChunkExtension)
    );
    assert!(decode_whole(&long_trailer(TRAILER_BYTES_MAX)).unwrap().done);
    assert_eq!(
        decode_whole(&long_trailer(TRAILER_BYTES_MAX + 1)),
        Err(Error::TrailerTooLarge)
    );
}

const ERRORS: &[(&[u8], Error)] = &[
    (b"x\r\n", Error::BadChunkSize),
    (b"\r\n", Error::BadChunkSize),
    (b";a\r\n", Error::BadChunkSize),
    (b" 5\r\n", Error::BadChunkSize),
    (b"-5\r\n", Error::BadChunkSize),
    (b"0x5\r\n", Error::BadChunkSize),
    (b"5 5\r\n", Error::BadChunkSize),
    (b"00000000000000005\r\n", Error::BadChunkSize),
    (b"fffffffffffffffff\r\n", Error::BadChunkSize),
    (b"5\nhello\r\n", Error::BadChunkFraming),
    (b"5;a\nhello\r\n", Error::BadChunkFraming),
    (b"5\rhello\r\n", Error::BadChunkFraming),
    (b"5\r\nhelloX\r\n", Error::BadChunkFraming),
    (b"5\r\nhello\n0\r\n\r\n", Error::BadChunkFraming),
    (b"5\r\nhello\r0\r\n\r\n", Error::BadChunkFraming),
    (b"0\r\n\r\r", Error::BadChunkFraming),
    (b"5;a\x00\r\nhello\r\n", Error::BadChunkExtension),
    (b"5;a\x7f\r\nhello\r\n", Error::BadChunkExtension),
    (b"0\r\n\n", Error::BadTrailer),
    (b"0\r\n X: y\r\n\r\n", Error::BadTrailer),
    (b"0\r\nX y\r\n\r\n", Error::BadTrailer),
    (b"0\r\nX\r\n\r\n", Error::BadTrailer),
    (b"0\r\nX: y\n\r\n", Error::BadTrailer),
    (b"0\r\nX: y\r\r\n", Error::BadTrailer),
    (b"0\r\nX: \x01\r\n\r\n", Error::BadTrailer),
];

#[test]
fn error_table() {
    for &(input, expected) in ERRORS {
        let name = String::from_utf8_lossy(input);
        assert_eq!(decode_whole(input), Err(expected), "{name:?}");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            feed(&mut ChunkedDecoder::new(), &bytes),
            Err(expected),
            "{name:?} bytewise"
        );
    }
}

#[test]
fn errors_are_sticky() {
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(decoder.decode(b"z"), Err(Error::BadChunkSize));
    assert_eq!(
        decoder.decode(b"5\r\nhello\r\n0\r\n\r\n"),
        Err(Error::BadChunkSize)
    );
    assert!(!decoder.is_done());
}

#[test]
fn body_limit() {
    let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let outcome = feed(&mut ChunkedDecoder::with_body_limit(11), &[input]).unwrap();
    assert_eq!(outcome.data, b"hello world");
    // Rejected at the size line that crosses the limit, before that chunk's data.
    let mut decoder = ChunkedDecoder::with_body_limit(10);
    let mut seen = Vec::new();
    let mut rest = &input[..];
    let error = loop {
        match decoder.decode(rest) {
            Ok(decoded) => {
                seen.extend_from_slice(decoded.data.unwrap_or_default());
                rest = &rest[decoded.consumed..];
            }
            Err(error) => break error,
        }
    };
    assert_eq!(error, Error::BodyTooLarge);
    assert_eq!(seen, b"hello");
    assert_eq!(error.status().0, 413);
    // A size that would overflow the running total is over any limit.
    let mut decoder = ChunkedDecoder::new();
    let huge = b"ffffffffffffffff\r\n";
    assert!(decoder.decode(huge).is_ok());
    assert_eq!(
        decoder.decode(&[b'x'; 64]).unwrap().data.map(<[u8]>::len),
        Some(64)
    );
    assert_eq!(check_body_length(10, 10), Ok(()));
    assert_eq!(check_body_length(11, 10), Err(Error::BodyTooLarge));
}
