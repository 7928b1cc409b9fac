//! SHA-1 (FIPS 180-4 §6.1), only for `Sec-WebSocket-Accept` (RFC 6455 §4.2.2). SHA-1 is
//! broken for collision resistance; the handshake uses it as a fixed transform, not for
//! security, so a small portable implementation is enough and saves a dependency.

/// Bytes in a SHA-1 digest.
pub const DIGEST_BYTES: usize = 20;
const BLOCK_BYTES: usize = 64;

/// An incremental SHA-1 hash: [`Sha1::update`] any number of times, then [`Sha1::finish`].
#[derive(Clone)]
pub struct Sha1 {
    state: [u32; 5],
    /// Invariant: `block_len < BLOCK_BYTES` between calls.
    block: [u8; BLOCK_BYTES],
    block_len: usize,
    /// Message bytes hashed so far; the padding encodes it in bits modulo 2^64.
    total_len: u64,
}

impl Default for Sha1 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha1 {
    /// A hash of the empty message.
    pub fn new() -> Self {
        Sha1 {
            state: [
                0x6745_2301,
                0xefcd_ab89,
                0x98ba_dcfe,
                0x1032_5476,
                0xc3d2_e1f0,
            ],
            block: [0; BLOCK_BYTES],
            block_len: 0,
            total_len: 0,
        }
    }

    /// Appends `data` to the message.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total_len = self.total_len.wrapping_add(data.len() as u64);
        if self.block_len > 0 {
            let take = (BLOCK_BYTES - self.block_len).min(data.len());
            self.block[self.block_len..self.block_len + take].copy_from_slice(&data[..take]);
            self.block_len += take;
            data = &data[take..];
            if self.block_len < BLOCK_BYTES {
                return;
            }
            let block = self.block;
            compress(&mut self.state, &block);
            self.block_len = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK_BYTES);
        for block in &mut blocks {
            compress(&mut self.state, block.try_into().expect("64-byte chunk"));
        }
        let rest = blocks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.block_len = rest.len();
        debug_assert!(self.block_len < BLOCK_BYTES);
    }

    /// The digest of everything passed to [`Sha1::update`].
    pub fn finish(mut self) -> [u8; DIGEST_BYTES] {
        let bit_len = self.total_len.wrapping_mul(8);
        // Padding: 0x80, zeros up to 56 mod 64, then the bit length big-endian.
        let mut padding = [0u8; BLOCK_BYTES + 8];
        padding[0] = 0x80;
        let zeros = (BLOCK_BYTES + 56 - 1 - self.block_len) % BLOCK_BYTES;
        let padding_len = 1 + zeros + 8;
        padding[1 + zeros..padding_len].copy_from_slice(&bit_len.to_be_bytes());
        let total_len = self.total_len;
        self.update(&padding[..padding_len]);
        debug_assert_eq!(self.block_len, 0);
        debug_assert_eq!(self.total_len, total_len.wrapping_add(padding_len as u64));
        let mut digest = [0u8; DIGEST_BYTES];
        for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }

    /// The digest of the concatenation of `parts`.
    pub fn digest(parts: &[&[u8]]) -> [u8; DIGEST_BYTES] {
        let mut hash = Sha1::new();
        for part in parts {
            hash.update(part);
        }
        hash.finish()
    }
}

fn compress(state: &mut [u32; 5], block: &[u8; BLOCK_BYTES]) {
    let mut schedule = [0u32; 80];
    for (word, bytes) in schedule.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_be_bytes(bytes.try_into().expect("4-byte chunk"));
    }
    for index in 16..80 {
        schedule[index] = (schedule[index - 3]
            ^ schedule[index - 8]
            ^ schedule[index - 14]
            ^ schedule[index - 16])
            .rotate_left(1);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *state;
    for (index, word) in schedule.iter().enumerate() {
        let (f, k) = match index {
            0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
            20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
            _ => (b ^ c ^ d, 0xca62_c1d6),
        };
        let temp = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(*word);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = temp;
    }
    for (word, add) in state.iter_mut().zip([a, b, c, d, e]) {
        *word = word.wrapping_add(add);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(digest: [u8; DIGEST_BYTES]) -> String {
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// RFC 3174 §7.3 test vectors, and the empty message (FIPS 180 examples).
    #[test]
    fn rfc3174_vectors() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"abc", 1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                1,
                "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
            ),
            (b"a", 1_000_000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"),
            (
                b"0123456701234567012345670123456701234567012345670123456701234567",
                10,
                "dea356a2cddd90c7a7ecedc5ebb563934f460452",
            ),
            (b"", 1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ];
        for &(part, repeat, expected) in cases {
            let mut hash = Sha1::new();
            for _ in 0..repeat {
                hash.update(part);
            }
            assert_eq!(hex(hash.finish()), expected, "{part:?} x {repeat}");
        }
    }

    /// The digest must not depend on how the message is cut into updates, whatever the
    /// length is modulo the block size (padding crosses a block at 56..64).
    #[test]
    fn split_updates_agree() {
        let message: Vec<u8> = (0..=200u8).collect();
        for len in 0..message.len() {
            let whole = Sha1::digest(&[&message[..len]]);
            for cut in [0, 1, len / 2, len.saturating_sub(1), len] {
                let cut = cut.min(len);
                let split = Sha1::digest(&[&message[..cut], &message[cut..len]]);
                assert_eq!(whole, split, "len {len} cut {cut}");
            }
        }
        assert_ne!(Sha1::digest(&[b"a"]), Sha1::digest(&[b"b"]));
    }
}
