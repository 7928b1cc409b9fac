//! Incremental UTF-8 validation for text messages (RFC 6455 §5.6, §8.1), across frames and
//! across reads, failing at the first byte that cannot be part of valid UTF-8 (RFC 3629 §4:
//! no overlongs, no surrogates U+D800..U+DFFF, nothing above U+10FFFF).
//!
//! The bulk of every piece goes through `core::str::from_utf8`, which is fast on ASCII. Only
//! a sequence cut by a piece boundary (at most 3 bytes) is carried over.

/// Where validation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error {
    /// Index, in the piece passed to [`Utf8Validator::feed`], of the first byte that shows the
    /// input is not UTF-8: a byte that can start no sequence, or the byte that breaks an
    /// open sequence (so `E0 80` fails at `80`, which makes it an overlong).
    pub index: usize,
}

/// Validates a stream of bytes piece by piece.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// The start of a sequence the last piece ended in.
    /// Invariant: `pending[..pending_len]` is a proper prefix of some valid sequence, and
    /// `pending_len < 4`.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub const fn new() -> Self {
        Utf8Validator {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Validates the next `piece` of the stream. A sequence left open at its end is kept
    /// and completed by the next piece. After an error the validator's state is
    /// unspecified: start a new one.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), Utf8Error> {
        let mut rest = piece;
        let mut start = 0;
        if self.pending_len > 0 {
            start = self.complete_pending(piece)?;
            if self.pending_len > 0 {
                debug_assert_eq!(start, piece.len());
                return Ok(());
            }
            rest = &piece[start..];
        }
        match core::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(error) => {
                let valid = error.valid_up_to();
                match error.error_len() {
                    Some(_) => Err(Utf8Error {
                        index: start + valid + breaking_offset(&rest[valid..]),
                    }),
                    None => {
                        let tail = &rest[valid..];
                        debug_assert!(!tail.is_empty() && tail.len() < 4);
                        self.pending[..tail.len()].copy_from_slice(tail);
                        self.pending_len = tail.len() as u8;
                        Ok(())
                    }
                }
            }
        }
    }

    /// Whether the stream so far ends on a character boundary. A message whose validator is
    /// not complete at its end is invalid (its last sequence is truncated).
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Adds bytes from `piece` to the pending sequence. Returns how many were taken; the
    /// pending sequence is then complete (`pending_len == 0`) or `piece` is used up.
    fn complete_pending(&mut self, piece: &[u8]) -> Result<usize, Utf8Error> {
        let held = usize::from(self.pending_len);
        let need = sequence_len(self.pending[0]);
        debug_assert!(held < need);
        let take = (need - held).min(piece.len());
        let mut joined = self.pending;
        joined[held..held + take].copy_from_slice(&piece[..take]);
        match core::str::from_utf8(&joined[..held + take]) {
            Ok(_) => {
                self.pending_len = 0;
                Ok(take)
            }
            Err(error) if error.error_len().is_none() => {
                debug_assert_eq!(take, piece.len());
                self.pending = joined;
                self.pending_len = (held + take) as u8;
                Ok(take)
            }
            Err(error) => {
                debug_assert_eq!(error.valid_up_to(), 0);
                let index = breaking_offset(&joined[..held + take]);
                // The held bytes were a valid prefix, so the breaking byte is a new one.
                debug_assert!(index >= held);
                Err(Utf8Error {
                    index: index - held,
                })
            }
        }
    }
}

/// Whether the whole of `bytes` is complete, valid UTF-8.
pub fn is_valid(bytes: &[u8]) -> bool {
    core::str::from_utf8(bytes).is_ok()
}

/// Length of the sequence a lead byte starts (1 for ASCII and for bytes that start none).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    }
}

/// Given `bytes` starting with an invalid sequence as `from_utf8` reports it (the maximal
/// valid prefix of a sequence, Unicode §3.9 "maximal subpart"), the offset of the byte that
/// breaks it: the lead byte itself when it can start no sequence, else the first byte after
/// the valid prefix.
fn breaking_offset(bytes: &[u8]) -> usize {
    let Err(error) = core::str::from_utf8(bytes) else {
        unreachable!("called on valid UTF-8");
    };
    debug_assert_eq!(error.valid_up_to(), 0);
    let subpart_len = error.error_len().map_or(bytes.len(), usize::from);
    if sequence_len(bytes[0]) == 1 {
        debug_assert_eq!(subpart_len, 1);
        0
    } else {
        subpart_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-at-a-time reference: RFC 3629 §4's table of well-formed sequences.
    fn reference_failure(bytes: &[u8]) -> Result<bool, usize> {
        let mut index = 0;
        while index < bytes.len() {
            let lead = bytes[index];
            let (len, second) = match lead {
                0x00..=0x7f => (1, 0x80..=0xbf),
                0xc2..=0xdf => (2, 0x80..=0xbf),
                0xe0 => (3, 0xa0..=0xbf),
                0xe1..=0xec | 0xee..=0xef => (3, 0x80..=0xbf),
                0xed => (3, 0x80..=0x9f),
                0xf0 => (4, 0x90..=0xbf),
                0xf1..=0xf3 => (4, 0x80..=0xbf),
                0xf4 => (4, 0x80..=0x8f),
                _ => return Err(index),
            };
            for offset in 1..len {
                let Some(&byte) = bytes.get(index + offset) else {
                    return Ok(false);
                };
                let range = if offset == 1 {
                    second.clone()
                } else {
                    0x80..=0xbf
                };
                if !range.contains(&byte) {
                    return Err(index + offset);
                }
            }
            index += len;
        }
        Ok(true)
    }

    fn feed_all(pieces: &[&[u8]]) -> Result<bool, usize> {
        let mut validator = Utf8Validator::new();
        let mut base = 0;
        for piece in pieces {
            validator.feed(piece).map_err(|error| base + error.index)?;
            base += piece.len();
        }
        Ok(validator.is_complete())
    }

    /// Every one- and two-byte input and every three-byte input starting with a lead byte,
    /// whole and byte by byte, against the reference.
    #[test]
    fn agrees_with_reference_on_short_inputs() {
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for first in 0..=255u8 {
            inputs.push(vec![first]);
            for second in 0..=255u8 {
                inputs.push(vec![first, second]);
            }
        }
        for first in [0xe0, 0xe1, 0xed, 0xef, 0xf0, 0xf1, 0xf4, 0xf5] {
            for second in 0..=255u8 {
                for third in [0x00, 0x41, 0x7f, 0x80, 0x9f, 0xa0, 0xbf, 0xc0, 0xff] {
                    inputs.push(vec![first, second, third]);
                    inputs.push(vec![first, second, third, 0x80]);
                    inputs.push(vec![b'a', first, second, third, 0xbf, b'z']);
                }
            }
        }
        for input in &inputs {
            let expected = reference_failure(input);
            assert_eq!(feed_all(&[input]), expected, "whole {input:x?}");
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(feed_all(&bytes), expected, "bytewise {input:x?}");
            let (head, tail) = input.split_at(input.len() / 2);
            assert_eq!(feed_all(&[head, tail]), expected, "halves {input:x?}");
        }
    }

    #[test]
    fn carries_sequences_across_pieces() {
        let text = "κόσμε 𝄞 ∑ €".as_bytes();
        for cut in 0..=text.len() {
            let (head, tail) = text.split_at(cut);
            let mut validator = Utf8Validator::new();
            assert_eq!(validator.feed(head), Ok(()));
            assert_eq!(
                validator.is_complete(),
                core::str::from_utf8(head).is_ok(),
                "cut {cut}"
            );
            assert_eq!(validator.feed(tail), Ok(()));
            assert!(validator.is_complete());
        }
        // Empty pieces change nothing, in the middle of a sequence too.
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(&[0xf0, 0x9d]), Ok(()));
        assert_eq!(validator.feed(&[]), Ok(()));
        assert!(!validator.is_complete());
        assert_eq!(validator.feed(&[0x84]), Ok(()));
        assert_eq!(validator.feed(&[0x9e, b'x']), Ok(()));
        assert!(validator.is_complete());
        // A pending sequence broken by the next piece fails at the breaking byte.
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(&[b'a', 0xe2, 0x82]), Ok(()));
        assert_eq!(validator.feed(&[b'b', 0xac]), Err(Utf8Error { index: 0 }));
    }

    #[test]
    fn is_valid_matches_std() {
        assert!(is_valid("κόσμε".as_bytes()));
        assert!(!is_valid(&[0xed, 0xa0, 0x80]));
        assert!(!is_valid(&[0xce]));
    }
}
