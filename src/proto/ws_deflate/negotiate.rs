//! Negotiation: the client's `Sec-WebSocket-Extensions` offers in, agreed [`Params`] and the
//! response header value out (RFC 7692 §5, §7.1).
//!
//! Grammar (RFC 6455 §9.1, with the list rules of RFC 9110 §5.6.1):
//! `extension *( "," extension )`, `extension = token *( ";" param )`,
//! `param = token [ "=" ( token / quoted-string ) ]`, optional whitespace around every
//! delimiter, empty list elements skipped. A quoted value must unescape to a token.
//!
//! An element that breaks the grammar, or a `permessage-deflate` offer with an unknown,
//! repeated or malformed parameter, is declined and the next element tried (RFC 7692 §7:
//! "decline an extension negotiation offer ... if ..."). Other extensions are ignored. The
//! first acceptable offer wins (§5); Condure does the same, but answers 400 to a header it
//! cannot parse, where zring only declines the broken element.

use std::ops::RangeInclusive;

use super::{
    ConfigError, COMPRESSION_LEVEL_DEFAULT, COMPRESSOR_WINDOW_BITS_MIN, EXTENSION_NAME,
    MEMORY_LEVEL_DEFAULT, SERVER_WINDOW_BITS_DEFAULT, WINDOW_BITS_MAX, WINDOW_BITS_MIN,
};

/// Server policy: what zring asks for in its responses, and how hard its compressor works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Answer every offer with `server_no_context_takeover` (allowed whether or not the
    /// client offered it, RFC 7692 §7.1.1.1): the compressor keeps nothing between
    /// messages. Otherwise it keeps what `server_takeover_memory` says, unless the client
    /// asked for `server_no_context_takeover` itself.
    pub server_no_context_takeover: bool,
    /// Answer every offer with `client_no_context_takeover` (allowed whether or not the
    /// client offered it, §7.1.1.2): the decompressor state is freed after each message.
    pub client_no_context_takeover: bool,
    /// Largest window the compressor uses, 9..=15; less when the client's
    /// `server_max_window_bits` asks for less. Sent in the response when below 15.
    pub server_max_window_bits: u8,
    /// Window to ask the client to compress with, 9..=15, sent only when the client offered
    /// `client_max_window_bits` (§7.1.2.2 forbids it otherwise) and when below 15. It saves
    /// the client memory, not zring's: see [`super::DECOMPRESSOR_WINDOW_BITS`].
    pub client_max_window_bits: u8,
    /// zlib compression level, 1 (fastest) ..= 9 (smallest).
    pub compression_level: u8,
    /// zlib memory level, 1..=9: the compressor's block buffers are `7 << (level + 6)` bytes.
    pub memory_level: u8,
    /// What the compressor keeps between messages when context takeover is agreed (that
    /// is, with `server_no_context_takeover` false and not offered).
    pub server_takeover_memory: TakeoverMemory,
}

/// What a [`super::Compressor`] keeps between messages under context takeover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverMemory {
    /// The whole zlib-rs state, 165 KiB at window 12 and memory level 5: nothing to redo
    /// per message.
    State,
    /// Only the last window of uncompressed bytes, `1 << window_bits` (4 KiB at window 12).
    /// Each message allocates a state and loads those bytes into it, which costs about what
    /// a message without context takeover costs, for the ratio of context takeover.
    Window,
}

impl Default for Config {
    /// Memory first, ratio second. Server to client: context takeover, keeping only the
    /// 4 KiB window between messages ([`TakeoverMemory::Window`]): context takeover's ratio
    /// (half the bytes of no takeover on a stream of 1 KiB JSON messages) at about no
    /// takeover's CPU cost. Client to server: `client_no_context_takeover`, since the
    /// decompressor cannot shrink its 47 KiB. So an idle connection holds 4 KiB. zlib's
    /// level 6 at memory level 5.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: true,
            server_max_window_bits: SERVER_WINDOW_BITS_DEFAULT,
            client_max_window_bits: WINDOW_BITS_MAX,
            compression_level: COMPRESSION_LEVEL_DEFAULT,
            memory_level: MEMORY_LEVEL_DEFAULT,
            server_takeover_memory: TakeoverMemory::Window,
        }
    }
}

impl Config {
    const OWN_WINDOW_BITS: RangeInclusive<u8> = COMPRESSOR_WINDOW_BITS_MIN..=WINDOW_BITS_MAX;
    const LEVELS: RangeInclusive<u8> = 1..=9;

    /// Checks every field against its range. Call once at startup; [`negotiate`] and
    /// [`super::Compressor::new`] assert a checked config.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !Self::OWN_WINDOW_BITS.contains(&self.server_max_window_bits) {
            return Err(ConfigError::ServerMaxWindowBits);
        }
        if !Self::OWN_WINDOW_BITS.contains(&self.client_max_window_bits) {
            return Err(ConfigError::ClientMaxWindowBits);
        }
        if !Self::LEVELS.contains(&self.compression_level) {
            return Err(ConfigError::CompressionLevel);
        }
        if !Self::LEVELS.contains(&self.memory_level) {
            return Err(ConfigError::MemoryLevel);
        }
        Ok(())
    }
}

/// The agreed parameters of one connection, exactly as the response states them (RFC 7692
/// §7.1). Build the codecs from them: [`super::Compressor::new`] (server to client) and
/// [`super::Decompressor::new`] (client to server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// zring resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message, so zring may free its
    /// decompressor.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits` in the response: the compressor's window (8..=15). `None`
    /// means absent, that is 15.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits` in the response: the most the client's window may be
    /// (8..=15). `None` means absent, that is 15.
    pub client_max_window_bits: Option<u8>,
}

impl Params {
    /// The window zring's compressor must stay within.
    pub fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(WINDOW_BITS_MAX)
    }

    /// The window the client's compressor must stay within.
    pub fn client_window_bits(&self) -> u8 {
        self.client_max_window_bits.unwrap_or(WINDOW_BITS_MAX)
    }

    /// Appends the `Sec-WebSocket-Extensions` response value, e.g.
    /// `permessage-deflate; server_no_context_takeover; server_max_window_bits=12`.
    pub fn encode_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(EXTENSION_NAME.as_bytes());
        if self.server_no_context_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.extend_from_slice(b"; server_max_window_bits=");
            push_window_bits(out, bits);
        }
        if let Some(bits) = self.client_max_window_bits {
            out.extend_from_slice(b"; client_max_window_bits=");
            push_window_bits(out, bits);
        }
    }
}

impl Params {
    /// The same agreement seen from the other end (client mode): zring's compressor then
    /// runs the client-to-server direction and its decompressor the server-to-client one,
    /// so `server_*` and `client_*` trade places. `own_window_bits_max` caps the window
    /// zring compresses with (a smaller window than agreed is always allowed, RFC 7692
    /// §7.1.2.2), so the compressor costs what the server side's does.
    pub fn mirrored(&self, own_window_bits_max: u8) -> Params {
        let own = self.client_window_bits().min(own_window_bits_max);
        Params {
            server_no_context_takeover: self.client_no_context_takeover,
            client_no_context_takeover: self.server_no_context_takeover,
            server_max_window_bits: Some(own),
            client_max_window_bits: self.server_max_window_bits,
        }
    }
}

/// What client mode offers an origin under `--compression` (RFC 7692 §7.1.2.2: the server
/// may then cap zring's window).
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The origin's answer broke RFC 7692 §7.1: a malformed or repeated `permessage-deflate`
/// element, or one zring did not offer. The client fails the connection (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse;

/// Reads the `Sec-WebSocket-Extensions` values of an origin's 101 (client mode): the agreed
/// parameters when it accepted `permessage-deflate`, `None` when it did not. `offered`:
/// whether zring sent [`CLIENT_OFFER`]; an acceptance of an offer never made is an error.
/// Other extensions (such as Pushpin's `grip`) are left to whoever offered them.
pub fn parse_response<'a, I>(header_values: I, offered: bool) -> Result<Option<Params>, BadResponse>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut agreed = None;
    for value in header_values {
        let mut cursor = Cursor {
            bytes: value,
            at: 0,
        };
        // Bounded: every element consumes at least one byte (itself or its comma).
        while !cursor.at_end() {
            let start = cursor.at;
            let element = cursor.element().map_err(|_| BadResponse)?;
            assert!(cursor.at > start, "parsing makes progress");
            let Some(answer) = element else { continue };
            if !offered || agreed.is_some() {
                return Err(BadResponse);
            }
            agreed = Some(Params {
                server_no_context_takeover: answer.server_no_context_takeover,
                client_no_context_takeover: answer.client_no_context_takeover,
                server_max_window_bits: answer.server_max_window_bits,
                // §7.1.2.2: in a response the value is required.
                client_max_window_bits: match answer.client_max_window_bits {
                    Some(None) => return Err(BadResponse),
                    Some(bits) => bits,
                    None => None,
                },
            });
        }
    }
    Ok(agreed)
}

fn push_window_bits(out: &mut Vec<u8>, bits: u8) {
    assert!((WINDOW_BITS_MIN..=WINDOW_BITS_MAX).contains(&bits));
    if bits >= 10 {
        out.push(b'1');
    }
    out.push(b'0' + bits % 10);
}

/// Picks the first acceptable `permessage-deflate` offer in `header_values` (every
/// `Sec-WebSocket-Extensions` field value of the request, in order) and returns the agreed
/// parameters; `None` when there is no acceptable offer, and the connection runs
/// uncompressed. Never fails the handshake.
///
/// Panics if `config` does not pass [`Config::check`].
pub fn negotiate<'a, I>(config: &Config, header_values: I) -> Option<Params>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    assert_eq!(config.check(), Ok(()), "unchecked ws_deflate::Config");
    for value in header_values {
        let mut cursor = Cursor {
            bytes: value,
            at: 0,
        };
        // Bounded: every pass consumes at least one byte (an element or its comma).
        while !cursor.at_end() {
            let start = cursor.at;
            let offer = cursor.element();
            if offer.is_err() {
                cursor.at = start;
                cursor.skip_element();
            }
            assert!(cursor.at > start, "negotiation makes progress");
            if let Ok(Some(offer)) = offer {
                return Some(accept(config, &offer));
            }
        }
    }
    None
}

/// A well-formed `permessage-deflate` offer: each parameter at most once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// `server_max_window_bits=N`, N in 8..=15 (a value is required).
    server_max_window_bits: Option<u8>,
    /// `client_max_window_bits[=N]`: `Some(None)` without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Answers a well-formed offer under `config` (RFC 7692 §7.1). Every well-formed offer is
/// acceptable: even `server_max_window_bits=8`, see the module docs.
fn accept(config: &Config, offer: &Offer) -> Params {
    // §7.1.2.1: answer with the same or a smaller value; a server may also send one unasked.
    let server_bits = offer
        .server_max_window_bits
        .map_or(config.server_max_window_bits, |bits| {
            bits.min(config.server_max_window_bits)
        });
    let server_max_window_bits = (offer.server_max_window_bits.is_some()
        || server_bits < WINDOW_BITS_MAX)
        .then_some(server_bits);
    // §7.1.2.2: only if offered, with a value no larger than the offered one. zring has no
    // use for it unless configured below 15.
    let client_max_window_bits = match offer.client_max_window_bits {
        Some(offered) if config.client_max_window_bits < WINDOW_BITS_MAX => {
            Some(offered.map_or(config.client_max_window_bits, |bits| {
                bits.min(config.client_max_window_bits)
            }))
        }
        _ => None,
    };
    Params {
        server_no_context_takeover: offer.server_no_context_takeover
            || config.server_no_context_takeover,
        client_no_context_takeover: offer.client_no_context_takeover
            || config.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    }
}

/// The grammar broke, or an offer is unacceptable as written: decline the element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Declined;

/// A parameter value: the bytes between the delimiters, quotes and escapes included.
#[derive(Debug, Clone, Copy)]
struct Value<'a> {
    raw: &'a [u8],
    quoted: bool,
}

impl Value<'_> {
    /// The value with quotes and escapes removed (RFC 9110 §5.6.4).
    fn unescaped(&self) -> impl Iterator<Item = u8> + '_ {
        let inner = if self.quoted {
            &self.raw[1..self.raw.len() - 1]
        } else {
            self.raw
        };
        let mut escaped = false;
        inner.iter().copied().filter(move |&byte| {
            let keep = escaped || byte != b'\\';
            escaped = !escaped && byte == b'\\';
            keep
        })
    }

    /// Window bits: `1*DIGIT` without a leading zero, 8..=15 (RFC 7692 §7.1.2.1), after
    /// unescaping (RFC 6455 §9.1).
    fn window_bits(&self) -> Result<u8, Declined> {
        let mut value: u8 = 0;
        // Two digits at most: enough for 15, and no overflow.
        for (digits, byte) in self.unescaped().enumerate() {
            if !byte.is_ascii_digit() || (digits == 0 && byte == b'0') || digits == 2 {
                return Err(Declined);
            }
            value = value * 10 + (byte - b'0');
        }
        if (WINDOW_BITS_MIN..=WINDOW_BITS_MAX).contains(&value) {
            Ok(value)
        } else {
            Err(Declined)
        }
    }
}

/// A position in one header field value. Invariant: `at <= bytes.len()`.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> Result<&'a [u8], Declined> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        if self.at == start {
            return Err(Declined);
        }
        Ok(&self.bytes[start..self.at])
    }

    /// A quoted-string, quotes included. Unterminated, or with a control byte: `Declined`.
    fn quoted_string(&mut self) -> Result<&'a [u8], Declined> {
        let start = self.at;
        self.at += 1; // the opening quote
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(&self.bytes[start..self.at]);
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(byte) if is_quoted_byte(byte) || byte == b'"' || byte == b'\\' => {
                            self.at += 1;
                        }
                        _ => return Err(Declined),
                    }
                }
                Some(byte) if is_quoted_byte(byte) => self.at += 1,
                _ => return Err(Declined),
            }
        }
    }

    /// One list element and the comma after it. `Ok(None)`: an empty element or another
    /// extension, ignored. `Ok(Some(offer))`: a well-formed `permessage-deflate` offer.
    fn element(&mut self) -> Result<Option<Offer>, Declined> {
        self.skip_ows();
        if self.end_of_element() {
            return Ok(None);
        }
        let name = self.token()?;
        let mut offer = name
            .eq_ignore_ascii_case(EXTENSION_NAME.as_bytes())
            .then(Offer::default);
        self.skip_ows();
        while self.peek() == Some(b';') {
            self.at += 1;
            self.skip_ows();
            let param = self.token()?;
            self.skip_ows();
            let value = if self.peek() == Some(b'=') {
                self.at += 1;
                self.skip_ows();
                let quoted = self.peek() == Some(b'"');
                let raw = if quoted {
                    self.quoted_string()?
                } else {
                    self.token()?
                };
                self.skip_ows();
                Some(Value { raw, quoted })
            } else {
                None
            };
            if let Some(offer) = offer.as_mut() {
                add_param(offer, param, value)?;
            }
        }
        if self.end_of_element() {
            Ok(offer)
        } else {
            Err(Declined)
        }
    }

    /// At a comma (consumed) or the end of the value.
    fn end_of_element(&mut self) -> bool {
        match self.peek() {
            None => true,
            Some(b',') => {
                self.at += 1;
                true
            }
            Some(_) => false,
        }
    }

    /// Skips to just past the next comma outside a quoted-string, or to the end.
    fn skip_element(&mut self) {
        let mut quoted = false;
        let mut escaped = false;
        while let Some(byte) = self.peek() {
            self.at += 1;
            if escaped {
                escaped = false;
            } else if quoted {
                escaped = byte == b'\\';
                quoted = byte != b'"';
            } else if byte == b'"' {
                quoted = true;
            } else if byte == b',' {
                return;
            }
        }
    }
}

/// Adds one parameter to an offer; unknown, repeated or malformed ones decline it
/// (RFC 7692 §7: each parameter at most once, no parameter not defined for an offer).
fn add_param(offer: &mut Offer, name: &[u8], value: Option<Value>) -> Result<(), Declined> {
    let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
    if is("server_no_context_takeover") {
        set_flag(&mut offer.server_no_context_takeover, value)
    } else if is("client_no_context_takeover") {
        set_flag(&mut offer.client_no_context_takeover, value)
    } else if is("server_max_window_bits") {
        // §7.1.2.1: a value is required.
        let bits = value.ok_or(Declined)?.window_bits()?;
        set_once(&mut offer.server_max_window_bits, bits)
    } else if is("client_max_window_bits") {
        // §7.1.2.2: the value is optional.
        let bits = value.map(|value| value.window_bits()).transpose()?;
        set_once(&mut offer.client_max_window_bits, bits)
    } else {
        Err(Declined)
    }
}

/// The `*_no_context_takeover` parameters take no value (§7.1.1.1, §7.1.1.2).
fn set_flag(flag: &mut bool, value: Option<Value>) -> Result<(), Declined> {
    if value.is_some() || *flag {
        return Err(Declined);
    }
    *flag = true;
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), Declined> {
    if slot.is_some() {
        return Err(Declined);
    }
    *slot = Some(value);
    Ok(())
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `qdtext` and the bytes a `quoted-pair` may escape, bar `"` and `\`: HTAB, SP, VCHAR,
/// obs-text (RFC 9110 §5.6.4).
fn is_quoted_byte(byte: u8) -> bool {
    let visible = (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'\\';
    byte == b'\t' || byte == b' ' || visible || byte >= 0x80
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn origin_answers() {
        // Goal: client mode reads an origin's answer exactly (RFC 7692 §7.1): the agreed
        // parameters, none when deflate was not accepted, and a refusal of an answer that
        // was not offered, repeated, malformed or without client_max_window_bits's value.
        let agreed = parse_response(
            [
                &b"grip, permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
                    [..],
            ],
            true,
        );
        let params = agreed.unwrap().unwrap();
        assert!(params.server_no_context_takeover && !params.client_no_context_takeover);
        assert_eq!(params.client_max_window_bits, Some(10));
        let own = params.mirrored(12);
        assert_eq!(
            own.server_max_window_bits,
            Some(10),
            "zring compresses with 10"
        );
        assert!(
            own.client_no_context_takeover,
            "the origin resets its compressor"
        );
        assert!(own.mirrored(12).server_no_context_takeover);
        assert_eq!(parse_response([&b"grip"[..]], true), Ok(None));
        assert_eq!(
            parse_response([&b"permessage-deflate"[..]], false),
            Err(BadResponse)
        );
        let twice = [&b"permessage-deflate"[..], &b"permessage-deflate"[..]];
        assert_eq!(parse_response(twice, true), Err(BadResponse));
        let bad = [&b"permessage-deflate; client_max_window_bits"[..]];
        assert_eq!(parse_response(bad, true), Err(BadResponse));
        let bad = [&b"permessage-deflate; unknown"[..]];
        assert_eq!(parse_response(bad, true), Err(BadResponse));
        assert_eq!(parse_response(std::iter::empty(), true), Ok(None));
    }
}
