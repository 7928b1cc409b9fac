//! Base64 with the standard alphabet and padding (RFC 4648 §4), for `Sec-WebSocket-Key`
//! and `Sec-WebSocket-Accept` (RFC 6455 §4.1, §4.2.2). Strict: the decoder takes only the
//! canonical encoding, which is what every client's encoder produces.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const PAD: u8 = b'=';
/// Marks bytes outside the alphabet in [`DECODE`].
const INVALID: u8 = 0xff;

static DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut index = 0;
    while index < ALPHABET.len() {
        table[ALPHABET[index] as usize] = index as u8;
        index += 1;
    }
    table
};

/// Characters that encoding `input_len` bytes produces, padding included.
pub const fn encoded_len(input_len: usize) -> usize {
    input_len.div_ceil(3) * 4
}

/// Writes the encoding of `input` to the start of `out` and returns its length.
///
/// Panics if `out` is shorter than [`encoded_len`]`(input.len())`: a programmer error.
pub fn encode(input: &[u8], out: &mut [u8]) -> usize {
    let len = encoded_len(input.len());
    assert!(out.len() >= len, "base64 output buffer too small");
    for (group, chars) in input.chunks(3).zip(out.chunks_exact_mut(4)) {
        let bytes = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let bits = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for (position, char) in chars.iter_mut().enumerate() {
            *char = ALPHABET[(bits >> (18 - 6 * position) & 0x3f) as usize];
        }
        // One input byte fills two characters, two fill three; the rest is padding.
        for char in &mut chars[group.len() + 1..] {
            *char = PAD;
        }
    }
    len
}

/// Decodes `input` into the start of `out` and returns the decoded length, or `None` when
/// `input` is not canonical padded base64 or `out` is too short.
///
/// Canonical: a multiple of 4 characters, `=` only as the last one or two, and the bits
/// that padding leaves over set to zero.
pub fn decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    if input.len() % 4 != 0 {
        return None;
    }
    let pad_len = match input {
        [.., PAD, PAD] => 2,
        [.., PAD] => 1,
        _ => 0,
    };
    let len = input.len() / 4 * 3 - pad_len;
    if out.len() < len {
        return None;
    }
    let groups = input.chunks_exact(4);
    let last_group = groups.len().wrapping_sub(1);
    for (group_index, group) in groups.enumerate() {
        let group_pad = if group_index == last_group {
            pad_len
        } else {
            0
        };
        let mut bits = 0u32;
        for &char in &group[..4 - group_pad] {
            let value = DECODE[char as usize];
            if value == INVALID {
                return None;
            }
            bits = bits << 6 | u32::from(value);
        }
        bits <<= 6 * group_pad as u32;
        // Non-canonical: a padded group whose leftover bits are not zero.
        if bits & ((1 << (8 * group_pad)) - 1) != 0 {
            return None;
        }
        let bytes = bits.to_be_bytes();
        let start = group_index * 3;
        let count = 3 - group_pad;
        out[start..start + count].copy_from_slice(&bytes[1..1 + count]);
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10.
    const VECTORS: &[(&[u8], &[u8])] = &[
        (b"", b""),
        (b"f", b"Zg=="),
        (b"fo", b"Zm8="),
        (b"foo", b"Zm9v"),
        (b"foob", b"Zm9vYg=="),
        (b"fooba", b"Zm9vYmE="),
        (b"foobar", b"Zm9vYmFy"),
    ];

    #[test]
    fn rfc4648_vectors() {
        for &(plain, encoded) in VECTORS {
            let mut out = [0u8; 8];
            let len = encode(plain, &mut out);
            assert_eq!(&out[..len], encoded);
            assert_eq!(len, encoded_len(plain.len()));
            let mut back = [0u8; 6];
            assert_eq!(decode(encoded, &mut back), Some(plain.len()));
            assert_eq!(&back[..plain.len()], plain);
        }
    }

    #[test]
    fn round_trips_every_byte() {
        let input: Vec<u8> = (0..=255u8).rev().collect();
        for len in [0, 1, 2, 3, 16, 20, 100, 256] {
            let mut encoded = vec![0u8; encoded_len(len)];
            assert_eq!(encode(&input[..len], &mut encoded), encoded.len());
            let mut decoded = vec![0u8; len];
            assert_eq!(decode(&encoded, &mut decoded), Some(len));
            assert_eq!(decoded, &input[..len]);
        }
    }

    #[test]
    fn rejects_non_canonical_input() {
        let mut out = [0u8; 16];
        let bad: &[&[u8]] = &[
            b"Zg=",      // not a multiple of 4
            b"Zg",       // missing padding
            b"Zh==",     // leftover bits set (Zg== is canonical)
            b"Zm9=",     // leftover bits set (Zm8= is canonical)
            b"Z===",     // three padding characters
            b"Zg==Zg==", // padding in the middle
            b"Zm9v Zg=", // a space
            b"Zm9-",     // URL-safe alphabet
            b"====",
        ];
        for input in bad {
            assert_eq!(decode(input, &mut out), None, "{:?}", input);
        }
        // Too short an output buffer is refused, not a panic.
        assert_eq!(decode(b"Zm9vYmFy", &mut [0u8; 5]), None);
        assert_eq!(decode(b"Zm9vYmFy", &mut [0u8; 6]), Some(6));
    }
}
