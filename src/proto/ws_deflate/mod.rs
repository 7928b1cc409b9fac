//! permessage-deflate (RFC 7692), server side, sans-IO: header values in, agreed parameters
//! out; message pieces in, message pieces out.
//!
//! Owns three things:
//! - negotiation ([`negotiate`]): parses the client's `Sec-WebSocket-Extensions` values,
//!   picks the first acceptable `permessage-deflate` offer under a [`Config`], and gives the
//!   agreed [`Params`], which also write the response header value
//!   ([`Params::encode_response`]);
//! - [`Compressor`]: one connection's outgoing messages, fed in pieces, compressed as raw
//!   DEFLATE with a sync flush and the trailing `00 00 ff ff` removed (RFC 7692 §7.2.1);
//! - [`SharedCompressor`]: a worker's messages for every connection that agreed
//!   `server_no_context_takeover`, each an independent stream: the same bytes for every
//!   such connection, so a fan-out is compressed once (zring answers every offer with
//!   `server_no_context_takeover` under `--compression-context shared`);
//! - [`Decompressor`]: one connection's incoming compressed messages, fed in pieces, with
//!   `00 00 ff ff` appended at the end (§7.2.2), a hard limit on the message size and a
//!   per-call bound on the output.
//!
//! Must not know: sockets, clocks, WebSocket framing (RSV1, opcodes, fragments, masking and
//! close frames belong to the frame codec), ZHTTP. The caller decides which messages to
//! compress (RSV1), and maps a [`DecompressError`] to a close code with
//! [`DecompressError::close_code`].
//!
//! Backend: zlib-rs, a pure-Rust port of zlib (no C build), used directly rather than
//! through flate2 because only its own API takes a memory level. miniz_oxide cannot limit
//! its window, which `server_max_window_bits` requires.
//!
//! Memory (measured by `tests/ws_deflate_memory.rs`): a compressor state is 128 KiB of
//! hash heads whatever its settings, plus `4 << window_bits` bytes (window and chain), plus
//! `7 << (memory_level + 6)` bytes (block buffers): 165 KiB at the default window 12 and
//! memory level 5, 380 KiB at zlib's 15 and 8. A decompressor state is 47 KiB whatever the
//! window, since zlib-rs always allocates a 32 KiB window. States are allocated on the first
//! message that needs them. Without context takeover they are freed at the end of every
//! message; with it, the decompressor keeps its state, and the compressor keeps either its
//! state or only the last `1 << window_bits` uncompressed bytes, from which the next message
//! rebuilds it ([`TakeoverMemory`]). [`Config::default`] gives 4 KiB per idle connection:
//! server-to-client takeover keeping the 4 KiB window, and `client_no_context_takeover`;
//! with `server_no_context_takeover` (zring's default, `--compression-context shared`) a
//! connection holds no compressor at all and the worker's [`SharedCompressor`] one state
//! per window size in use, reset between messages.
//!
//! Window bits 8: zlib (since 1.2.9) and zlib-rs refuse a raw-DEFLATE compressor with an
//! 8-bit window; with the zlib wrapper they silently use 9. So a client that demands
//! `server_max_window_bits=8` gets a compressor that emits no back-references at all
//! (Huffman coding only), which fits any window. zring never asks for 8 itself. The
//! decompressor always runs with a 15-bit window: it accepts every stream made with the
//! agreed window or a smaller one (including a client that rounds 8 up to 9, as zlib does),
//! and a smaller setting would save no memory in zlib-rs.

mod compress;
mod decompress;
mod error;
mod negotiate;

#[cfg(test)]
mod tests;

pub use compress::{Compressor, SharedCompressor};
pub use decompress::{Decompressor, Inflated};
pub use error::{ConfigError, DecompressError};
pub use negotiate::{
    negotiate, parse_response, BadResponse, Config, Params, TakeoverMemory, CLIENT_OFFER,
};

/// The extension token (RFC 7692 §7), matched without regard to case.
pub const EXTENSION_NAME: &str = "permessage-deflate";
/// The four bytes a sync flush ends with: removed from each compressed message and put
/// back before decompressing it (RFC 7692 §7.2.1, §7.2.2).
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Least LZ77 window a `*_max_window_bits` parameter may name (RFC 7692 §7.1.2).
pub const WINDOW_BITS_MIN: u8 = 8;
/// Largest LZ77 window, 32 KiB, and the value when a parameter is absent (RFC 7692 §7.1.2).
pub const WINDOW_BITS_MAX: u8 = 15;
/// Least window zring's compressor runs an LZ77 search with, and so the least
/// `*_max_window_bits` a [`Config`] may ask for: zlib and zlib-rs refuse a raw compressor
/// with an 8-bit window (see the module docs for what zring does when a client demands 8).
pub const COMPRESSOR_WINDOW_BITS_MIN: u8 = 9;
/// Window bits of every decompressor: the largest, so that whatever a client sends within
/// its agreed window decodes (zlib-rs allocates 32 KiB whatever the setting).
pub const DECOMPRESSOR_WINDOW_BITS: u8 = WINDOW_BITS_MAX;
/// Default compressor window for [`Config::default`]: 4 KiB. Without context takeover a
/// window longer than the message is unused; Python's websockets found 12 with memory level
/// 5 the best balance for typical WebSocket JSON.
pub const SERVER_WINDOW_BITS_DEFAULT: u8 = 12;
/// Default zlib memory level (block buffer size, 1..=9; zlib's own default is 8), the
/// websockets value: 14 KiB of block buffers instead of 112 KiB, at a small cost in ratio.
pub const MEMORY_LEVEL_DEFAULT: u8 = 5;
/// Default compression level (1 = fastest .. 9 = smallest). zlib's default.
pub const COMPRESSION_LEVEL_DEFAULT: u8 = 6;

const _: () = assert!(WINDOW_BITS_MIN < COMPRESSOR_WINDOW_BITS_MIN);
const _: () = assert!(COMPRESSOR_WINDOW_BITS_MIN <= SERVER_WINDOW_BITS_DEFAULT);
const _: () = assert!(SERVER_WINDOW_BITS_DEFAULT <= WINDOW_BITS_MAX);
const _: () = assert!(DECOMPRESSOR_WINDOW_BITS == WINDOW_BITS_MAX);
const _: () = assert!(MEMORY_LEVEL_DEFAULT >= 1 && MEMORY_LEVEL_DEFAULT <= 9);
const _: () = assert!(COMPRESSION_LEVEL_DEFAULT >= 1 && COMPRESSION_LEVEL_DEFAULT <= 9);
