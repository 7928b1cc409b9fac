//! Replies from a handler: `UUID SP LEN:ID[ SP ID]*, SP BODY`, one ZeroMQ frame, parsed
//! without copying (src/handler_parser.rl, src/handler.c).
//!
//! The grammar is Mongrel2's Ragel machine:
//! ```text
//! Reply   = UUID ' ' Length ':' IdList ',' ' ' Body
//! UUID    = [A-Za-z0-9-]+
//! Length  = [0-9]+                      -- must equal the byte length of IdList
//! IdList  = ('X ')? ([0-9]+ ' '?)*      -- a trailing space is allowed, two in a row not
//! Body    = any*                        -- raw bytes; empty means "close"
//! ```
//! `X ` marks an extended reply, whose body is one tnetstring list `[key, args]`
//! ([`parse_extended`]). Mongrel2 skips a reply with no ids; so does [`parse_reply`], by
//! returning [`ReplyError::NoIds`].

use crate::proto::tnetstring::{self, Dict, Value};

/// Why a reply was dropped. Mongrel2 drops each of these with a log line and goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// The message is empty.
    Empty,
    /// The UUID is empty or holds a byte outside `[A-Za-z0-9-]`, or no space follows it.
    BadUuid,
    /// The id list's length prefix is missing, not decimal, or not followed by `:`.
    BadLength,
    /// The length prefix does not equal the id list's actual length, or the message ends
    /// inside the id list.
    LengthMismatch,
    /// The id list holds something other than digits separated by single spaces (after an
    /// optional `X `): a letter, two spaces, a leading space.
    BadId,
    /// More ids than the configured `limits.handler_targets`.
    TooManyIds,
    /// The id list is well-formed but empty.
    NoIds,
    /// The `,` after the id list is not followed by a space (a message ending right after
    /// the `,` included).
    MissingSpace,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplyError::Empty => "empty reply",
            ReplyError::BadUuid => "bad sender uuid",
            ReplyError::BadLength => "bad id list length",
            ReplyError::LengthMismatch => "id list length does not match",
            ReplyError::BadId => "bad id in id list",
            ReplyError::TooManyIds => "more ids than limits.handler_targets",
            ReplyError::NoIds => "reply names no connection",
            ReplyError::MissingSpace => "no space after the id list",
        })
    }
}

impl std::error::Error for ReplyError {}

/// A parsed reply, borrowing the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The sender UUID. Mongrel2 does not compare it with anything.
    pub uuid: &'a [u8],
    /// The id list opened with `X `: the body is an extended request.
    pub extended: bool,
    /// The id list without `X `. Invariant: digits separated by single spaces, possibly one
    /// trailing space, with `id_count` digit runs.
    ids: &'a [u8],
    /// Number of ids. Invariant: 1..=targets_max.
    id_count: usize,
    /// Everything after `, `.
    pub body: &'a [u8],
}

impl<'a> Reply<'a> {
    /// The ids, in order, as Mongrel2's `strtoul` reads them: a value past `u64::MAX`
    /// saturates. Repeated ids are kept (Mongrel2 delivers to each).
    pub fn ids(&self) -> Ids<'a> {
        Ids { rest: self.ids }
    }

    /// How many ids the reply names.
    pub fn id_count(&self) -> usize {
        self.id_count
    }

    /// A plain reply with an empty body: close every named connection.
    pub fn is_close(&self) -> bool {
        !self.extended && self.body.is_empty()
    }
}

/// Iterator over a reply's ids.
#[derive(Debug, Clone)]
pub struct Ids<'a> {
    rest: &'a [u8],
}

impl Iterator for Ids<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let start = self.rest.iter().position(u8::is_ascii_digit)?;
        let digits = &self.rest[start..];
        let end = digits
            .iter()
            .position(|byte| !byte.is_ascii_digit())
            .unwrap_or(digits.len());
        self.rest = &digits[end..];
        Some(strtoul(&digits[..end]))
    }
}

/// Decimal digits to `u64`, saturating like `strtoul`.
fn strtoul(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |value, &digit| {
        value
            .checked_mul(10)
            .and_then(|value| value.checked_add(u64::from(digit - b'0')))
            .unwrap_or(u64::MAX)
    })
}

/// The connection id an id from a reply names, if it can name one: zring's ids are `u32`.
/// Mongrel2 casts the `unsigned long` to `int` and so would deliver `4294967297` to
/// connection 1; zring treats any id past `u32::MAX` as unknown instead.
pub fn conn_id(id: u64) -> Option<u32> {
    u32::try_from(id).ok()
}

/// The number Mongrel2 prints for an id in a disconnect notice: the `(int)` cast of what
/// `strtoul` read.
pub fn mongrel2_int_id(id: u64) -> i32 {
    id as i32
}

/// Longest length prefix read. Ten digits reach past any id list that fits
/// [`super::HANDLER_TARGETS_MAX`] ids; longer prefixes cannot match and are refused early.
const LENGTH_DIGITS_MAX: usize = 10;

/// Parses a reply, allowing at most `targets_max` ids (`limits.handler_targets`).
pub fn parse_reply(message: &[u8], targets_max: usize) -> Result<Reply<'_>, ReplyError> {
    if message.is_empty() {
        return Err(ReplyError::Empty);
    }
    let uuid_len = message
        .iter()
        .position(|&byte| !(byte.is_ascii_alphanumeric() || byte == b'-'))
        .unwrap_or(message.len());
    if uuid_len == 0 || message.get(uuid_len) != Some(&b' ') {
        return Err(ReplyError::BadUuid);
    }
    let uuid = &message[..uuid_len];
    let rest = &message[uuid_len + 1..];
    let digit_count = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digit_count == 0 || rest.get(digit_count) != Some(&b':') {
        return Err(ReplyError::BadLength);
    }
    if digit_count > LENGTH_DIGITS_MAX {
        return Err(ReplyError::LengthMismatch);
    }
    let declared = strtoul(&rest[..digit_count]);
    let list_start = digit_count + 1;
    let list_len = usize::try_from(declared).map_err(|_| ReplyError::LengthMismatch)?;
    // The declared list must end inside the message and be followed by `,`.
    let comma_at = list_start
        .checked_add(list_len)
        .filter(|&at| at < rest.len())
        .ok_or(ReplyError::LengthMismatch)?;
    let list = &rest[list_start..comma_at];
    let (extended, ids) = match list.strip_prefix(b"X ") {
        Some(ids) => (true, ids),
        None => (false, list),
    };
    let id_count = check_ids(ids, targets_max)?;
    if rest[comma_at] != b',' {
        // The list's grammar ended where the length says it should not.
        return Err(ReplyError::LengthMismatch);
    }
    if rest.get(comma_at + 1) != Some(&b' ') {
        return Err(ReplyError::MissingSpace);
    }
    if id_count == 0 {
        return Err(ReplyError::NoIds);
    }
    Ok(Reply {
        uuid,
        extended,
        ids,
        id_count,
        body: &rest[comma_at + 2..],
    })
}

/// Checks `([0-9]+ ' '?)*` and counts the ids.
fn check_ids(ids: &[u8], targets_max: usize) -> Result<usize, ReplyError> {
    let mut count = 0;
    let mut previous = b' ';
    for (index, &byte) in ids.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                if previous == b' ' {
                    count += 1;
                    if count > targets_max {
                        return Err(ReplyError::TooManyIds);
                    }
                }
            }
            // A space only ends an id: not first, not after another space.
            b' ' if index > 0 && previous != b' ' => {}
            // A ',' inside the declared length means the length lies.
            b',' => return Err(ReplyError::LengthMismatch),
            _ => return Err(ReplyError::BadId),
        }
        previous = byte;
    }
    Ok(count)
}

/// Why an extended body was not understood. Mongrel2 drops such a reply silently for open
/// connections; for ids that name no connection it still sends a disconnect notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendedError {
    /// Not one tnetstring, or bytes after it.
    NotTnetstring,
    /// Not a list of exactly two elements.
    NotPair,
    /// The first element is not a byte string.
    KeyNotString,
}

/// A parsed extended request `[key, args]`.
#[derive(Debug, Clone, Copy)]
pub enum Extended<'a> {
    /// `["ctl", {…}]` with a dict: Mongrel2 handles it itself.
    Control(Control),
    /// `["ctl", x]` where `x` is not a dict: Mongrel2 disconnects the connection.
    BadControl,
    /// Any other key: Mongrel2 hands it to a filter plugin registered for it; with none
    /// (zring loads no plugins), it disconnects the connection.
    Other {
        /// The key.
        key: &'a [u8],
        /// The arguments.
        args: Value<'a>,
    },
}

/// The keys of a `ctl` dict that Mongrel2 acts on; only their presence counts, except the
/// value of `credits` (src/handler.c `handler_process_control_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Control {
    /// `keep-alive`: refresh the connection's idle timer.
    pub keep_alive: bool,
    /// `credits`: grant this many `upload.stream` bytes (may be negative, as in Mongrel2).
    pub credits: Option<i64>,
    /// `credits` was present but not an integer. Mongrel2 reads the union's number field
    /// anyway (garbage); zring disconnects the connection instead.
    pub bad_credits: bool,
    /// `cancel`: disconnect the connection (unless it is already closing).
    pub cancel: bool,
}

impl Extended<'_> {
    /// Whether this is a `ctl` cancel: for an id naming no connection Mongrel2 then sends
    /// no disconnect notice.
    pub fn is_cancel(&self) -> bool {
        matches!(self, Extended::Control(control) if control.cancel)
    }
}

/// Parses an extended reply's body.
pub fn parse_extended(body: &[u8]) -> Result<Extended<'_>, ExtendedError> {
    let (value, used) = tnetstring::parse(body).map_err(|_| ExtendedError::NotTnetstring)?;
    if used != body.len() {
        return Err(ExtendedError::NotTnetstring);
    }
    let list = value.as_list().ok_or(ExtendedError::NotPair)?;
    let mut items = list.iter();
    let (Some(key), Some(args), None) = (items.next(), items.next(), items.next()) else {
        return Err(ExtendedError::NotPair);
    };
    let key = key.as_bytes().ok_or(ExtendedError::KeyNotString)?;
    if key != b"ctl" {
        return Ok(Extended::Other { key, args });
    }
    Ok(match args.as_dict() {
        Some(dict) => Extended::Control(control(dict)),
        None => Extended::BadControl,
    })
}

fn control(dict: Dict<'_>) -> Control {
    let credits = dict.get(b"credits");
    Control {
        keep_alive: dict.get(b"keep-alive").is_some(),
        credits: credits.and_then(|value| value.as_int()),
        bad_credits: credits.is_some_and(|value| value.as_int().is_none()),
        cancel: dict.get(b"cancel").is_some(),
    }
}

/// What a reply asks of each connection it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Write the body raw.
    Data,
    /// Empty body: close.
    Close,
    /// `["ctl", {…}]`.
    Control(Control),
    /// `ctl` with no dict, or a key no plugin handles: Mongrel2 disconnects.
    Kill,
    /// An extended body that does not parse: dropped for live ids.
    Ignore,
}
