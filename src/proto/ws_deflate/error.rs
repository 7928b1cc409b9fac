//! The errors of permessage-deflate and their one mapping to WebSocket close codes.

use std::fmt;

/// Why an incoming compressed message was refused. Both are fatal for the connection: the
/// caller fails it with [`close_code`](Self::close_code) (RFC 6455 §7.1.7). Errors are
/// sticky: every later call on the same [`super::Decompressor`] returns the same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecompressError {
    /// The payload is not a DEFLATE stream: a reserved block type, a bad Huffman table, a
    /// stored block whose length check fails, a distance beyond the data seen so far.
    /// RFC 7692 names no close code for this; zring sends 1002 (protocol error), as Python's
    /// websockets does, since the bytes break the wire format the extension agreed on, not
    /// the message type (1007 is what Node's ws sends).
    Corrupt,
    /// The decompressed message would be larger than the decompressor's
    /// `message_bytes_max`. Found before more than that many bytes are written. 1009
    /// (message too big, RFC 6455 §7.4.1).
    MessageTooLarge,
}

impl DecompressError {
    /// The WebSocket close code to fail the connection with. The only place these errors
    /// meet close codes.
    pub fn close_code(self) -> u16 {
        match self {
            DecompressError::Corrupt => 1002,
            DecompressError::MessageTooLarge => 1009,
        }
    }

    /// A one-line description, fit for a log line or a close reason.
    pub fn description(self) -> &'static str {
        match self {
            DecompressError::Corrupt => "invalid compressed data",
            DecompressError::MessageTooLarge => "decompressed message too large",
        }
    }
}

impl fmt::Display for DecompressError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.description())
    }
}

impl std::error::Error for DecompressError {}

/// A [`super::Config`] field outside its range: a startup error, reported by
/// [`super::Config::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigError {
    /// `server_max_window_bits` is not in
    /// [`COMPRESSOR_WINDOW_BITS_MIN`](super::COMPRESSOR_WINDOW_BITS_MIN)..=15.
    ServerMaxWindowBits,
    /// `client_max_window_bits` is not in
    /// [`COMPRESSOR_WINDOW_BITS_MIN`](super::COMPRESSOR_WINDOW_BITS_MIN)..=15: a client
    /// built on zlib cannot compress with an 8-bit window.
    ClientMaxWindowBits,
    /// `compression_level` is not in 1..=9.
    CompressionLevel,
    /// `memory_level` is not in 1..=9.
    MemoryLevel,
}

impl ConfigError {
    /// A one-line description, fit for a startup error message.
    pub fn description(self) -> &'static str {
        match self {
            ConfigError::ServerMaxWindowBits => "server_max_window_bits must be in 9..=15",
            ConfigError::ClientMaxWindowBits => "client_max_window_bits must be in 9..=15",
            ConfigError::CompressionLevel => "compression level must be in 1..=9",
            ConfigError::MemoryLevel => "memory level must be in 1..=9",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.description())
    }
}

impl std::error::Error for ConfigError {}
