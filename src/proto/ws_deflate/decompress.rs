//! The decompressor: client-to-server messages (RFC 7692 §7.2.2), with a hard limit on
//! each message's size and a caller-chosen bound on the output of each call.

use std::fmt;

use zlib_rs::{Inflate, InflateError, InflateFlush, Status};

use super::{DecompressError, Params, DECOMPRESSOR_WINDOW_BITS, TRAILER};

/// Least output chunk one inflate pass is given.
const CHUNK_BYTES_MIN: usize = 256;
/// Largest output chunk one inflate pass is given: larger outputs take several passes, so
/// that a tiny input never costs a large zero-filled buffer.
const CHUNK_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(CHUNK_BYTES_MIN.is_power_of_two());
const _: () = assert!(CHUNK_BYTES_MIN < CHUNK_BYTES_MAX);

/// The outcome of one [`Decompressor::decompress`] call.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inflated {
    /// Input bytes used. The caller passes `input[consumed..]` to the next call.
    pub consumed: usize,
    /// Bytes appended to `out` by this call.
    pub produced: usize,
    /// The call stopped at `out_bytes_max`: more output may be waiting, so call again (with
    /// the rest of the input, which may be empty) after making room.
    pub output_full: bool,
    /// The message has ended (only ever with `fin`): all of it is in the output, and the
    /// next call starts the next message.
    pub done: bool,
}

/// Where the decompressor is within a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between messages.
    Idle,
    /// Inside a message.
    Body,
    /// Inside a message whose DEFLATE data ended with a block marked BFINAL (RFC 7692
    /// §7.2.3.4): the rest of its bytes, padding and the trailer, are skipped, and the
    /// stream restarts with the next message.
    Ended,
    /// A fatal error; every later call returns it again.
    Failed(DecompressError),
}

/// Decompresses one connection's incoming compressed messages, each fed in pieces.
///
/// Feed each piece of a message's payload (RSV1 was set on its first frame) in order, with
/// `fin` on the last, the way [`crate::proto::http1::ChunkedDecoder`] is fed: while
/// `consumed < input.len()` or `output_full`, call again with `input[consumed..]` and the
/// same `fin`; a message is over when `done`. Output is the same for every split of the
/// input and every `out_bytes_max`.
///
/// Bounds: one call appends at most `out_bytes_max` bytes to `out` and grows its capacity
/// by at most that much; a message that would decompress to more than `message_bytes_max`
/// bytes fails with [`DecompressError::MessageTooLarge`] before more than that is written.
/// The state (47 KiB) is allocated by the first compressed message and, when the client
/// agreed to no context takeover, freed at the end of each message.
///
/// Not detected: a payload whose DEFLATE data does not end where the appended trailer
/// completes an empty stored block (zlib-rs does not expose the block state). Without
/// context takeover the stream is dropped at the message end anyway; with it, the next
/// message decodes from a broken stream and fails as `Corrupt` or yields garbage, within
/// the same limits.
pub struct Decompressor {
    /// The zlib-rs state. `None` until needed, and between messages without context
    /// takeover.
    state: Option<Box<Inflate>>,
    phase: Phase,
    /// Output bytes of the current message. Invariant: `<= message_bytes_max`.
    message_bytes: u64,
    message_bytes_max: u64,
    /// Trailer bytes consumed by the inflater. Invariant: `<= 4`, 0 outside `Body`.
    trailer_fed: u8,
    /// The current message has had payload bytes.
    payload_seen: bool,
    no_context_takeover: bool,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Decompressor")
            .field("holds_state", &self.state.is_some())
            .field("phase", &self.phase)
            .field("message_bytes", &self.message_bytes)
            .field("message_bytes_max", &self.message_bytes_max)
            .field("trailer_fed", &self.trailer_fed)
            .field("payload_seen", &self.payload_seen)
            .field("no_context_takeover", &self.no_context_takeover)
            .finish()
    }
}

/// What one call may write to `out`: `cap` bytes after `out_start`.
struct Budget {
    out_start: usize,
    cap: usize,
    /// `cap` is what is left of the message limit, not the call's bound.
    limited_by_message: bool,
    /// Output bytes to offer the next pass: grows while passes fill it.
    chunk: usize,
}

/// What one inflate pass did.
struct Pass {
    used: usize,
    made: usize,
    /// The pass filled its whole buffer: more output may be waiting.
    filled: bool,
    /// It had room for output (it was not a probe at the limit).
    had_room: bool,
    stream_ended: bool,
    /// The data is not DEFLATE (after `made` bytes of output).
    corrupt: bool,
}

impl Pass {
    fn check(&self) -> Result<(), DecompressError> {
        if self.corrupt {
            Err(DecompressError::Corrupt)
        } else {
            Ok(())
        }
    }
}

impl Decompressor {
    /// A decompressor for the client-to-server direction of `params` that refuses messages
    /// larger than `message_bytes_max` once decompressed. Allocates nothing.
    pub fn new(params: &Params, message_bytes_max: u64) -> Self {
        Self {
            state: None,
            phase: Phase::Idle,
            message_bytes: 0,
            message_bytes_max,
            trailer_fed: 0,
            payload_seen: false,
            no_context_takeover: params.client_no_context_takeover,
        }
    }

    /// Decompresses `input`, the next piece of the current message's payload (or the first
    /// piece of a new message), appending at most `out_bytes_max` bytes to `out`. See the
    /// type docs for the calling loop. Errors are sticky.
    ///
    /// A message with an empty payload is the empty message, decoded without touching the
    /// stream: no compressor emits it (an empty message compresses to `00`), and feeding
    /// the trailer alone would leave the stream inside a stored block.
    ///
    /// Panics if `out_bytes_max` is 0.
    pub fn decompress(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
        out_bytes_max: usize,
    ) -> Result<Inflated, DecompressError> {
        assert!(out_bytes_max > 0, "out_bytes_max must allow progress");
        match self.phase {
            Phase::Failed(error) => return Err(error),
            Phase::Idle => self.begin(),
            Phase::Body | Phase::Ended => {}
        }
        let out_start = out.len();
        let inflated = self
            .run(input, fin, out, out_bytes_max)
            .inspect_err(|&error| {
                self.phase = Phase::Failed(error);
                // The connection is closing: give the memory back now.
                self.state = None;
            })?;
        assert!(inflated.consumed <= input.len());
        assert_eq!(out.len() - out_start, inflated.produced);
        assert!(inflated.produced <= out_bytes_max);
        assert!(self.message_bytes <= self.message_bytes_max);
        if inflated.done {
            self.end();
        }
        Ok(inflated)
    }

    /// Whether a message has begun and not yet ended.
    pub fn is_in_message(&self) -> bool {
        matches!(self.phase, Phase::Body | Phase::Ended)
    }

    /// Whether the decompressor holds its state (its memory) now.
    pub fn holds_state(&self) -> bool {
        self.state.is_some()
    }

    fn begin(&mut self) {
        assert_eq!(self.phase, Phase::Idle);
        assert_eq!(self.trailer_fed, 0);
        self.phase = Phase::Body;
        self.message_bytes = 0;
        self.payload_seen = false;
    }

    fn end(&mut self) {
        assert!(self.is_in_message());
        if self.no_context_takeover || self.phase == Phase::Ended {
            // Freed rather than reset: an idle connection holds no state. After BFINAL the
            // stream is over, and its window with it (zlib-rs cannot keep a window across
            // a reset); a client that refers back to it fails with `Corrupt`.
            self.state = None;
        }
        self.phase = Phase::Idle;
        self.trailer_fed = 0;
    }

    fn run(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
        out_bytes_max: usize,
    ) -> Result<Inflated, DecompressError> {
        self.payload_seen |= !input.is_empty();
        let mut budget = self.budget(out.len(), out_bytes_max, input.len());
        let mut consumed = 0;
        let mut output_full = false;
        // The inflater may hold output from the previous call: always try once.
        let mut maybe_pending = true;
        // Bounded: each pass consumes input, writes output, or ends the loop.
        loop {
            if self.phase == Phase::Ended {
                // §7.2.3.4: nothing after a BFINAL block carries data; skip it.
                consumed = input.len();
                break;
            }
            let from_input = consumed < input.len();
            let source: &[u8] = if from_input {
                &input[consumed..]
            } else if fin && self.payload_seen {
                &TRAILER[usize::from(self.trailer_fed)..]
            } else {
                &[]
            };
            if source.is_empty() && !maybe_pending {
                break;
            }
            let Some(pass) = self.step(source, out, &mut budget)? else {
                output_full = true;
                break;
            };
            maybe_pending = pass.filled;
            if from_input {
                consumed += pass.used;
            } else {
                self.trailer_fed += u8::try_from(pass.used).expect("at most 4 trailer bytes");
            }
            if pass.stream_ended {
                self.phase = Phase::Ended;
            } else if pass.used == 0 && pass.made == 0 {
                if !source.is_empty() && pass.had_room {
                    // Input and room, yet no progress: zlib's Z_BUF_ERROR on a stream that
                    // cannot go on.
                    return Err(DecompressError::Corrupt);
                }
                break;
            }
        }
        let produced = out.len() - budget.out_start;
        self.message_bytes += produced as u64;
        let payload_ended =
            self.phase == Phase::Ended || !self.payload_seen || self.trailer_fed == 4;
        Ok(Inflated {
            consumed,
            produced,
            output_full,
            done: fin && consumed == input.len() && !output_full && payload_ended,
        })
    }

    /// What a call may write: the smaller of its bound and what is left of the message.
    fn budget(&self, out_start: usize, out_bytes_max: usize, input_bytes: usize) -> Budget {
        let room = self.message_bytes_max - self.message_bytes;
        let limited_by_message = room <= out_bytes_max as u64;
        Budget {
            out_start,
            cap: if limited_by_message {
                room as usize
            } else {
                out_bytes_max
            },
            limited_by_message,
            chunk: input_bytes
                .saturating_mul(4)
                .clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX),
        }
    }

    /// One pass from `source`: into `out` while the budget lasts; at the message limit, a
    /// one-byte probe that fails the message if it yields anything. `None`: the call's
    /// bound is used up.
    fn step(
        &mut self,
        source: &[u8],
        out: &mut Vec<u8>,
        budget: &mut Budget,
    ) -> Result<Option<Pass>, DecompressError> {
        let written = out.len() - budget.out_start;
        if written < budget.cap {
            let length = budget.chunk.min(budget.cap - written);
            let pass = self.pass_into(source, out, budget.out_start + budget.cap, length)?;
            if pass.filled {
                budget.chunk = (budget.chunk * 2).min(CHUNK_BYTES_MAX);
            }
            return Ok(Some(pass));
        }
        if !budget.limited_by_message {
            return Ok(None);
        }
        // At the limit: would the message go on? Ask for one byte, on the stack.
        let mut probe = [0u8; 1];
        let mut pass = self.pass(source, &mut probe);
        // zlib may write the byte and then fail on what follows, in one call: the byte came
        // first in the stream, so the limit is what broke first.
        if pass.made > 0 {
            return Err(DecompressError::MessageTooLarge);
        }
        pass.check()?;
        pass.had_room = false;
        Ok(Some(pass))
    }

    /// One inflate pass writing at most `length` bytes to the end of `out`, whose capacity
    /// never exceeds `capacity_max`.
    fn pass_into(
        &mut self,
        source: &[u8],
        out: &mut Vec<u8>,
        capacity_max: usize,
        length: usize,
    ) -> Result<Pass, DecompressError> {
        let before = out.len();
        let wanted = before + length;
        assert!(wanted <= capacity_max);
        if out.capacity() < wanted {
            // Grow geometrically, but never past what this call may write.
            let target = wanted.max(out.capacity().saturating_mul(2).min(capacity_max));
            out.reserve_exact(target - before);
        }
        out.resize(wanted, 0);
        let pass = self.pass(source, &mut out[before..]);
        out.truncate(before + pass.made);
        pass.check()?;
        Ok(pass)
    }

    /// One inflate pass from `source` into `buffer`. A pass may write output and then meet
    /// corrupt data; the caller weighs the two with [`Pass::check`].
    fn pass(&mut self, source: &[u8], buffer: &mut [u8]) -> Pass {
        let state = self
            .state
            .get_or_insert_with(|| Box::new(Inflate::new(false, DECOMPRESSOR_WINDOW_BITS)));
        let (in_before, out_before) = (state.total_in(), state.total_out());
        let status = state.decompress(source, buffer, InflateFlush::NoFlush);
        let used = usize::try_from(state.total_in() - in_before).expect("fits the source");
        let made = usize::try_from(state.total_out() - out_before).expect("fits the buffer");
        assert!(used <= source.len());
        assert!(made <= buffer.len());
        let (stream_ended, corrupt) = match status {
            Ok(Status::Ok | Status::BufError) => (false, false),
            Ok(Status::StreamEnd) => (true, false),
            Err(InflateError::DataError | InflateError::NeedDict { .. }) => (false, true),
            Err(error @ (InflateError::StreamError | InflateError::MemError)) => {
                // A misused stream or a failed allocation (which aborts first with the
                // Rust allocator): not the peer's doing.
                panic!("zlib-rs inflate failed: {error:?}")
            }
        };
        Pass {
            used,
            made,
            filled: made == buffer.len(),
            had_room: true,
            stream_ended,
            corrupt,
        }
    }
}
