//! The compressor: server-to-client messages (RFC 7692 §7.2.1).

use std::fmt;

use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Method, Strategy};

use super::{Config, Params, TakeoverMemory, COMPRESSOR_WINDOW_BITS_MIN, TRAILER, WINDOW_BITS_MIN};

/// Output bytes reserved per compress pass beyond the input's size: room for block headers
/// and the sync flush's empty stored block, so that one pass usually suffices.
const OUTPUT_SLACK_BYTES: usize = 64;

/// Compresses one connection's outgoing messages, each fed in pieces.
///
/// Call [`compress`](Self::compress) with each piece of a message in order and `fin` on the
/// last one. Each call appends compressed bytes to `out`; together they are the message's
/// payload, to be sent with RSV1 set on its first frame. A non-final piece may produce no
/// bytes (the compressor buffers); [`flush`](Self::flush) forces out what is buffered when a
/// fragment must go now.
///
/// The state is allocated by the first message. Between messages it keeps: nothing without
/// context takeover; with it, the whole state ([`TakeoverMemory::State`]) or only the last
/// window of uncompressed bytes ([`TakeoverMemory::Window`]), from which the next message
/// rebuilds the state (zlib's `deflateSetDictionary`). A receiver cannot tell the two apart:
/// either way the next message may refer back to exactly the bytes its window holds.
pub struct Compressor {
    /// The zlib-rs state. Invariant: `Some` while `in_message`.
    state: Option<Box<Deflate>>,
    /// With [`Keep::Window`]: the last uncompressed bytes sent, at most `1 << window_bits`,
    /// the dictionary of the next message. Invariant: empty otherwise.
    history: Vec<u8>,
    keep: Keep,
    /// The agreed window, 8..=15.
    window_bits: u8,
    compression_level: u8,
    memory_level: u8,
    /// A message has begun and not yet ended (`fin`).
    in_message: bool,
}

/// What the compressor keeps between messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Nothing: no context takeover (or a Huffman-only stream, which refers to nothing).
    Nothing,
    /// The whole state.
    State,
    /// The last window of uncompressed bytes.
    Window,
}

impl Compressor {
    /// A compressor for the server-to-client direction of `params`, with the effort and
    /// memory of `config`. Allocates nothing.
    ///
    /// Panics if `config` does not pass [`Config::check`].
    pub fn new(params: &Params, config: &Config) -> Self {
        assert_eq!(config.check(), Ok(()), "unchecked ws_deflate::Config");
        let window_bits = params.server_window_bits();
        assert!(window_bits >= WINDOW_BITS_MIN);
        let keep = if params.server_no_context_takeover {
            Keep::Nothing
        } else {
            match config.server_takeover_memory {
                TakeoverMemory::State => Keep::State,
                // Literals only: no message refers back, so there is nothing to keep.
                TakeoverMemory::Window if window_bits < COMPRESSOR_WINDOW_BITS_MIN => Keep::Nothing,
                TakeoverMemory::Window => Keep::Window,
            }
        };
        Self {
            state: None,
            history: Vec::new(),
            keep,
            window_bits,
            compression_level: config.compression_level,
            memory_level: config.memory_level,
            in_message: false,
        }
    }

    /// Compresses `input`, the next piece of the current message (or the first piece of a
    /// new one), appending to `out`. With `fin` the message ends: the output is flushed and
    /// its trailing `00 00 ff ff` removed; a message whose bytes were all flushed already
    /// ends with the single byte `00` (RFC 7692 §7.2.3.6), and an empty message is `00`.
    pub fn compress(&mut self, input: &[u8], fin: bool, out: &mut Vec<u8>) {
        let start = out.len();
        let flush = if fin {
            DeflateFlush::SyncFlush
        } else {
            DeflateFlush::NoFlush
        };
        let state = self.begin();
        run(state, input, flush, out);
        if self.keep == Keep::Window {
            remember(&mut self.history, input, 1 << self.window_bits);
        }
        if fin {
            finish(out, start);
            self.end();
        }
    }

    /// Emits everything buffered for the current message, so that it can go out as a
    /// fragment now, at the cost of a few bytes of ratio. Does nothing between messages.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if !self.in_message {
            return;
        }
        let state = self.state.as_mut().expect("a message holds a state");
        run(state, &[], DeflateFlush::SyncFlush, out);
    }

    /// Whether a message has begun and not yet ended.
    pub fn is_in_message(&self) -> bool {
        self.in_message
    }

    /// Whether the compressor holds its state now.
    pub fn holds_state(&self) -> bool {
        self.state.is_some()
    }

    /// Heap bytes kept for the next message's dictionary ([`TakeoverMemory::Window`]).
    pub fn history_bytes(&self) -> usize {
        self.history.capacity()
    }

    /// Starts a message if none is under way, allocating the state if there is none.
    fn begin(&mut self) -> &mut Deflate {
        if !self.in_message {
            self.in_message = true;
            if self.state.is_none() {
                let mut state = self.new_state();
                if !self.history.is_empty() {
                    assert_eq!(self.keep, Keep::Window);
                    if let Err(error) = state.set_dictionary(&self.history) {
                        // Only on a stream that has started: a programmer error.
                        panic!("zlib-rs deflateSetDictionary failed: {error:?}");
                    }
                }
                self.state = Some(Box::new(state));
            }
        }
        self.state.as_mut().expect("a message holds a state")
    }

    fn end(&mut self) {
        assert!(self.in_message);
        self.in_message = false;
        if self.keep != Keep::State {
            // Freed rather than reset: an idle connection holds no state.
            self.state = None;
        }
    }

    fn new_state(&self) -> Deflate {
        new_state(self.window_bits, self.compression_level, self.memory_level)
    }
}

/// A raw-DEFLATE zlib-rs state for the agreed window `window_bits`.
fn new_state(window_bits: u8, compression_level: u8, memory_level: u8) -> Deflate {
    // A raw-DEFLATE compressor cannot run with an 8-bit window (see the module docs):
    // run a 9-bit one that emits literals only, which fits any window.
    let (window_bits, strategy) = if window_bits < COMPRESSOR_WINDOW_BITS_MIN {
        (COMPRESSOR_WINDOW_BITS_MIN, Strategy::HuffmanOnly)
    } else {
        (window_bits, Strategy::Default)
    };
    Deflate::new_with_config(DeflateConfig {
        level: i32::from(compression_level),
        method: Method::Deflated,
        // Negative: raw DEFLATE, no zlib header or checksum.
        window_bits: -i32::from(window_bits),
        mem_level: i32::from(memory_level),
        strategy,
    })
}

impl fmt::Debug for Compressor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Compressor")
            .field("holds_state", &self.state.is_some())
            .field("history_bytes", &self.history.len())
            .field("keep", &self.keep)
            .field("window_bits", &self.window_bits)
            .field("compression_level", &self.compression_level)
            .field("memory_level", &self.memory_level)
            .field("in_message", &self.in_message)
            .finish()
    }
}

/// Compresses messages without context takeover for every connection of a worker whose
/// agreed parameters include `server_no_context_takeover` (RFC 7692 §7.1.1.1): each message
/// (or each fragment of one) is an independent DEFLATE stream, so the bytes depend only on
/// the message and the window, and one compression serves every target of a fan-out.
///
/// Holds at most one zlib-rs state per window size, allocated by the first message that
/// needs it and reset (not freed) between messages: connections hold no compressor at all,
/// and a message costs no state allocation. A fragment (`fin` false) is flushed and keeps
/// its `00 00 ff ff`, so the next fragment may start a fresh stream: the receiver's
/// inflater reads on from a byte boundary, and nothing in the next fragment refers back.
#[derive(Default)]
pub struct SharedCompressor {
    /// Index `window_bits - WINDOW_BITS_MIN`. Invariant: a state is reset (no input fed
    /// since) whenever no call is under way.
    states: [Option<Box<Deflate>>; STATES_COUNT],
}

/// One state per window size from [`WINDOW_BITS_MIN`] to [`super::WINDOW_BITS_MAX`].
const STATES_COUNT: usize = (super::WINDOW_BITS_MAX - WINDOW_BITS_MIN + 1) as usize;

impl SharedCompressor {
    /// Appends to `out` the compressed payload of `input`: a whole message with `fin` (its
    /// trailer removed), else a fragment that the next call continues (trailer kept). The
    /// output fits any receiver whose agreed server window is at least `window_bits`.
    ///
    /// Panics if `config` does not pass [`Config::check`] or `window_bits` is out of range.
    pub fn compress(
        &mut self,
        config: &Config,
        window_bits: u8,
        input: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
    ) {
        assert!((WINDOW_BITS_MIN..=super::WINDOW_BITS_MAX).contains(&window_bits));
        let start = out.len();
        let index = usize::from(window_bits - WINDOW_BITS_MIN);
        let state = self.states[index].get_or_insert_with(|| {
            assert_eq!(config.check(), Ok(()), "unchecked ws_deflate::Config");
            Box::new(new_state(
                window_bits,
                config.compression_level,
                config.memory_level,
            ))
        });
        run(state, input, DeflateFlush::SyncFlush, out);
        // The next message starts from nothing, as the receiver expects.
        state.reset();
        if fin {
            finish(out, start);
        }
        assert!(out.len() > start, "a sync flush always writes bytes");
    }

    /// How many states (one per window size in use) are held.
    pub fn states_held(&self) -> usize {
        self.states.iter().filter(|s| s.is_some()).count()
    }
}

/// Feeds all of `input` to `state` with `flush`, appending the output to `out` until the
/// compressor has no more to give.
fn run(state: &mut Deflate, input: &[u8], flush: DeflateFlush, out: &mut Vec<u8>) {
    let mut consumed = 0;
    // Bounded: each pass consumes input or fills its whole output chunk, and the output of
    // a finite input is finite (zlib's compressBound).
    loop {
        let remaining = input.len() - consumed;
        let chunk = remaining + remaining / 8 + OUTPUT_SLACK_BYTES;
        let before = out.len();
        out.resize(before + chunk, 0);
        let (in_before, out_before) = (state.total_in(), state.total_out());
        let status = state.compress(&input[consumed..], &mut out[before..], flush);
        let used = usize::try_from(state.total_in() - in_before).expect("fits the input");
        let made = usize::try_from(state.total_out() - out_before).expect("fits the chunk");
        assert!(used <= remaining);
        assert!(made <= chunk);
        out.truncate(before + made);
        consumed += used;
        if let Err(error) = status {
            // Only a bad configuration or a misused stream: programmer errors.
            panic!("zlib-rs deflate failed: {error:?}");
        }
        if consumed == input.len() && made < chunk {
            return;
        }
        assert!(used > 0 || made > 0, "deflate makes progress");
    }
}

/// Keeps the last `window` bytes of everything compressed so far: the receiver's window.
/// Never grows `history` past `window` bytes.
fn remember(history: &mut Vec<u8>, input: &[u8], window: usize) {
    if history.capacity() < window {
        history.reserve_exact(window - history.len());
    }
    if input.len() >= window {
        history.clear();
        history.extend_from_slice(&input[input.len() - window..]);
    } else {
        let excess = (history.len() + input.len()).saturating_sub(window);
        history.drain(..excess);
        history.extend_from_slice(input);
    }
    assert!(history.len() <= window);
}

/// Ends the message written to `out[start..]`: removes the sync flush's `00 00 ff ff`, or
/// writes `00` when the flush found nothing to add (§7.2.1 steps 2 and 3, §7.2.3.6).
fn finish(out: &mut Vec<u8>, start: usize) {
    let produced = &out[start..];
    if produced.ends_with(&TRAILER) {
        out.truncate(out.len() - TRAILER.len());
    } else {
        // A sync flush right after another emits nothing (zlib returns Z_BUF_ERROR): the
        // stream already ends with an empty stored block, sent with an earlier piece.
        assert!(produced.is_empty(), "a sync flush ends with 00 00 ff ff");
        out.push(0x00);
    }
}
