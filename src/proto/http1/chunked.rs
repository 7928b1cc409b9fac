//! The chunked transfer coding of request bodies (RFC 9112 §7.1), as a state machine fed
//! any split of the input.
//!
//! Strictness: CRLF is required wherever the grammar has CRLF; a bare LF (or bare CR) is
//! an error, not a line end. RFC 9112 §2.2 allows accepting a bare LF in the *head*
//! (httparse does), but in chunked framing a lenient parser is how a front proxy and a
//! back end come to disagree on where a body ends (request smuggling, RFC 9112 §11.2), so
//! zring rejects what it would otherwise have to guess at. Whitespace between the size and
//! `;` or CR is accepted (the BWS of `chunk-ext`, §7.1.1). Chunk extensions and trailer
//! fields are checked for stray bytes, counted against a bound, and skipped.

use super::syntax::{is_field_value_byte, is_tchar};
use super::Error;
use super::{CHUNK_EXT_BYTES_MAX, CHUNK_SIZE_DIGITS_MAX, TRAILER_BYTES_MAX};

/// Checks a `Content-Length` body against the caller's limit: [`Error::BodyTooLarge`] (413)
/// when `length > body_bytes_max`.
pub fn check_body_length(length: u64, body_bytes_max: u64) -> Result<(), Error> {
    if length > body_bytes_max {
        Err(Error::BodyTooLarge)
    } else {
        Ok(())
    }
}

/// The outcome of one [`ChunkedDecoder::decode`] call.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Input bytes used up by this call; the caller drops them and passes the rest next time.
    pub consumed: usize,
    /// Body bytes, borrowed from the input: part or all of one chunk's data.
    pub data: Option<&'a [u8]>,
    /// The body has ended: the last chunk and the trailer section have been read, and the
    /// input after `consumed` belongs to the next request.
    pub done: bool,
}

/// Where the decoder is in the chunked-body grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first hex digit of a chunk-size.
    SizeStart,
    /// Inside the hex digits.
    Size,
    /// Whitespace after the digits, before `;` or CR.
    SizeSpace,
    /// Inside chunk extensions, until CR.
    Extension,
    /// After the CR that ends the size line.
    SizeLf,
    /// Inside chunk data. Invariant: `data_left > 0`.
    Data,
    /// After chunk data, expecting CR.
    DataCr,
    /// After chunk data and CR, expecting LF.
    DataLf,
    /// At the start of a trailer field line or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value, until CR.
    TrailerValue,
    /// After the CR that ends a trailer field line.
    TrailerLf,
    /// After the CR of the final CRLF.
    EndLf,
    /// The body has ended.
    Done,
    /// A fatal error; every later call returns it again.
    Failed(Error),
}

/// Decodes a chunked request body without copying it.
///
/// Feed it the bytes after the head, in whatever pieces they arrive. Each
/// [`decode`](Self::decode) call returns as soon as it has body bytes to hand out, the body
/// has ended, or the input is used up; so call it again on `input[consumed..]` while
/// `consumed < input.len()` and not `done`. Output is the same for every split of the input.
/// Errors are sticky.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// While a size line is read: the size so far. In `State::Data`: the chunk's bytes not
    /// yet handed out. Invariant: `data_left > 0` in `State::Data`, 0 in the other states
    /// that follow a size line.
    data_left: u64,
    /// Hex digits read for the current chunk-size. Invariant: ≤ [`CHUNK_SIZE_DIGITS_MAX`].
    size_digits: usize,
    /// Bytes of the current size line after the digits. Invariant: ≤ [`CHUNK_EXT_BYTES_MAX`].
    extension_bytes: usize,
    /// Bytes of the trailer section so far. Invariant: ≤ [`TRAILER_BYTES_MAX`].
    trailer_bytes: usize,
    /// Sum of the chunk sizes accepted so far. Invariant: ≤ `body_bytes_max`.
    body_bytes: u64,
    body_bytes_max: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder with no body limit of its own (the caller enforces one, or none).
    pub fn new() -> Self {
        Self::with_body_limit(u64::MAX)
    }

    /// A decoder that fails with [`Error::BodyTooLarge`] (413) as soon as a chunk-size line
    /// takes the body past `body_bytes_max`, before any of that chunk's data is handed out.
    pub fn with_body_limit(body_bytes_max: u64) -> Self {
        Self {
            state: State::SizeStart,
            data_left: 0,
            size_digits: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
            body_bytes: 0,
            body_bytes_max,
        }
    }

    /// Whether the whole body, trailers included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes announced by the chunk-size lines read so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Consumes framing bytes from `input` until it reaches chunk data (returned as a
    /// borrowed slice), the end of the body, or the end of `input`. See the type docs for
    /// the calling loop.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, Error> {
        let mut position = 0;
        loop {
            match self.state {
                State::Failed(error) => return Err(error),
                State::Done => {
                    return Ok(Decoded {
                        consumed: position,
                        data: None,
                        done: true,
                    })
                }
                State::Data => return Ok(self.take_data(input, position)),
                _ => {}
            }
            let Some(&byte) = input.get(position) else {
                return Ok(Decoded {
                    consumed: position,
                    data: None,
                    done: false,
                });
            };
            position += 1;
            match self.step(byte) {
                Ok(state) => self.state = state,
                Err(error) => {
                    self.state = State::Failed(error);
                    return Err(error);
                }
            }
        }
    }

    /// Hands out as much of the current chunk's data as `input` holds.
    fn take_data<'a>(&mut self, input: &'a [u8], position: usize) -> Decoded<'a> {
        debug_assert!(self.data_left > 0);
        let available = &input[position..];
        if available.is_empty() {
            return Decoded {
                consumed: position,
                data: None,
                done: false,
            };
        }
        let take = usize::try_from(self.data_left)
            .map_or(available.len(), |left| left.min(available.len()));
        self.data_left -= take as u64;
        if self.data_left == 0 {
            self.state = State::DataCr;
        }
        Decoded {
            consumed: position + take,
            data: Some(&available[..take]),
            done: false,
        }
    }

    /// One framing byte: the next state, computed from the current one.
    fn step(&mut self, byte: u8) -> Result<State, Error> {
        match self.state {
            State::SizeStart => self.size_digit(byte).ok_or(Error::BadChunkSize),
            State::Size => match byte {
                b'\r' => Ok(State::SizeLf),
                b'\n' => Err(Error::BadChunkFraming),
                b';' => self.extension_byte(State::Extension),
                b' ' | b'\t' => self.extension_byte(State::SizeSpace),
                _ => self.size_digit(byte).ok_or(Error::BadChunkSize),
            },
            State::SizeSpace => match byte {
                b'\r' => Ok(State::SizeLf),
                b'\n' => Err(Error::BadChunkFraming),
                b';' => self.extension_byte(State::Extension),
                b' ' | b'\t' => self.extension_byte(State::SizeSpace),
                _ => Err(Error::BadChunkSize),
            },
            State::Extension => match byte {
                b'\r' => Ok(State::SizeLf),
                b'\n' => Err(Error::BadChunkFraming),
                _ if is_field_value_byte(byte) => self.extension_byte(State::Extension),
                _ => Err(Error::BadChunkExtension),
            },
            State::SizeLf => match byte {
                b'\n' => self.end_size_line(),
                _ => Err(Error::BadChunkFraming),
            },
            State::DataCr => match byte {
                b'\r' => Ok(State::DataLf),
                _ => Err(Error::BadChunkFraming),
            },
            State::DataLf => match byte {
                b'\n' => Ok(State::SizeStart),
                _ => Err(Error::BadChunkFraming),
            },
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::EndLf => self.trailer_byte(byte),
            // decode() never steps in these states.
            State::Data | State::Done | State::Failed(_) => Err(Error::BadChunkFraming),
        }
    }

    fn size_digit(&mut self, byte: u8) -> Option<State> {
        let digit = (byte as char).to_digit(16)?;
        if self.size_digits == CHUNK_SIZE_DIGITS_MAX {
            return None;
        }
        self.size_digits += 1;
        // Cannot overflow: at most 16 hex digits.
        self.data_left = (self.data_left << 4) | u64::from(digit);
        Some(State::Size)
    }

    fn extension_byte(&mut self, next: State) -> Result<State, Error> {
        self.extension_bytes += 1;
        if self.extension_bytes > CHUNK_EXT_BYTES_MAX {
            return Err(Error::BadChunkExtension);
        }
        Ok(next)
    }

    /// The size line is complete: start the chunk's data, or the trailer section.
    fn end_size_line(&mut self) -> Result<State, Error> {
        debug_assert!(self.size_digits > 0);
        let size = self.data_left;
        self.size_digits = 0;
        self.extension_bytes = 0;
        if size == 0 {
            return Ok(State::TrailerStart);
        }
        match self.body_bytes.checked_add(size) {
            Some(total) if total <= self.body_bytes_max => self.body_bytes = total,
            _ => return Err(Error::BodyTooLarge),
        }
        Ok(State::Data)
    }

    /// The trailer section: `*( field-line CRLF ) CRLF` (RFC 9112 §7.1.2), skipped.
    fn trailer_byte(&mut self, byte: u8) -> Result<State, Error> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > TRAILER_BYTES_MAX {
            return Err(Error::TrailerTooLarge);
        }
        match (self.state, byte) {
            (State::TrailerStart, b'\r') => Ok(State::EndLf),
            (State::TrailerStart, _) if is_tchar(byte) => Ok(State::TrailerName),
            (State::TrailerName, b':') => Ok(State::TrailerValue),
            (State::TrailerName, _) if is_tchar(byte) => Ok(State::TrailerName),
            (State::TrailerValue, b'\r') => Ok(State::TrailerLf),
            (State::TrailerValue, _) if is_field_value_byte(byte) => Ok(State::TrailerValue),
            (State::TrailerLf, b'\n') => Ok(State::TrailerStart),
            (State::EndLf, b'\n') => Ok(State::Done),
            (State::EndLf, _) => Err(Error::BadChunkFraming),
            _ => Err(Error::BadTrailer),
        }
    }
}
