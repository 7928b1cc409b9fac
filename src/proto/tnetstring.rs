//! tnetstring: the value encoding inside every ZHTTP packet.
//!
//! A value is `<length>:<payload><tag>`, where `<length>` is the payload size in decimal and
//! `<tag>` is one of `,` (byte string), `#` (integer), `!` (boolean), `~` (null), `^`
//! (float), `]` (list) and `}` (dict: alternating keys and values, keys are byte strings).
//!
//! This layer owns bytes only: no sockets, no ZHTTP semantics.
//!
//! Decoding ([`parse`]) borrows from the input and allocates nothing. It checks the whole
//! value once, iteratively and within [`DEPTH_MAX`], so the lazy [`List`] and [`Dict`]
//! iterators that follow can neither fail, recurse nor panic. Decoding is lenient in one way
//! Condure is too: length prefixes may carry leading zeros.
//!
//! Encoding ([`Writer`]) appends canonical tnetstring (no leading zeros, no padding) to a
//! caller-owned `Vec<u8>`, which is what Condure writes and so what handlers see.

use core::fmt;

/// Most decimal digits a length prefix may have when decoding, so a payload is under 10^9
/// bytes. Bounds the prefix scan and keeps every offset well inside `u32`.
pub const LENGTH_DIGITS_MAX: usize = 9;

/// Deepest nesting of lists and dicts, counting the outermost container as 1. ZHTTP needs 3
/// (root dict → `headers` list → header pair); the rest is headroom for handler extras.
/// Both the decoder and the [`Writer`] enforce it.
pub const DEPTH_MAX: usize = 8;

/// Why a tnetstring could not be decoded. Every variant means the input is malformed; the
/// caller drops it (for ZHTTP: the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The input, or the list or dict around a value, ends before the value does.
    Truncated,
    /// The length prefix is empty, has a non-digit before `:`, or has more than
    /// [`LENGTH_DIGITS_MAX`] digits.
    BadLength,
    /// The byte after the payload is not a known type tag.
    BadTag,
    /// An integer payload is not a decimal `i64`.
    BadInt,
    /// A float payload is not a decimal floating-point number.
    BadFloat,
    /// A boolean payload is neither `true` nor `false`.
    BadBool,
    /// A null payload is not empty.
    BadNull,
    /// A dict key is not a byte string.
    BadKey,
    /// A dict ends after a key, without its value.
    MissingValue,
    /// Lists and dicts nest deeper than [`DEPTH_MAX`].
    TooDeep,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::Truncated => "value extends past its input or container",
            Error::BadLength => "bad length prefix",
            Error::BadTag => "unknown type tag",
            Error::BadInt => "bad integer",
            Error::BadFloat => "bad float",
            Error::BadBool => "bad boolean",
            Error::BadNull => "non-empty null",
            Error::BadKey => "dict key is not a byte string",
            Error::MissingValue => "dict key without value",
            Error::TooDeep => "nested too deeply",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Error {}

const TAG_BYTES: u8 = b',';
const TAG_INT: u8 = b'#';
const TAG_BOOL: u8 = b'!';
const TAG_NULL: u8 = b'~';
const TAG_FLOAT: u8 = b'^';
const TAG_LIST: u8 = b']';
const TAG_DICT: u8 = b'}';

/// A decoded value, borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// A byte string (`,`); not necessarily UTF-8.
    Bytes(&'a [u8]),
    /// An integer (`#`).
    Int(i64),
    /// A boolean (`!`).
    Bool(bool),
    /// Null (`~`).
    Null,
    /// A float (`^`).
    Float(f64),
    /// A list (`]`), iterated lazily.
    List(List<'a>),
    /// A dict (`}`), iterated lazily.
    Dict(Dict<'a>),
}

impl<'a> Value<'a> {
    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(int) => Some(int),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(flag) => Some(flag),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<List<'a>> {
        match *self {
            Value::List(list) => Some(list),
            _ => None,
        }
    }

    /// The dict, if this is one.
    pub fn as_dict(&self) -> Option<Dict<'a>> {
        match *self {
            Value::Dict(dict) => Some(dict),
            _ => None,
        }
    }
}

/// A list's payload. Only [`parse`] makes one, after checking every element in it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct List<'a> {
    /// Invariant: a concatenation of well-formed values, nested within [`DEPTH_MAX`].
    payload: &'a [u8],
}

impl<'a> List<'a> {
    /// The elements in order.
    pub fn iter(&self) -> Iter<'a> {
        Iter { rest: self.payload }
    }

    /// True if the list has no elements.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

impl<'a> IntoIterator for List<'a> {
    type Item = Value<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// A dict's payload. Only [`parse`] makes one, after checking every entry in it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dict<'a> {
    /// Invariant: alternating byte-string keys and well-formed values, even in count.
    payload: &'a [u8],
}

impl<'a> Dict<'a> {
    /// The entries as `(key, value)`, in wire order. Duplicate keys are all yielded.
    pub fn iter(&self) -> DictIter<'a> {
        DictIter {
            values: Iter { rest: self.payload },
        }
    }

    /// The value of the first entry whose key is `key`.
    pub fn get(&self, key: &[u8]) -> Option<Value<'a>> {
        self.iter()
            .find(|(entry_key, _)| *entry_key == key)
            .map(|(_, value)| value)
    }

    /// True if the dict has no entries.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// The entries as `(key, value, encoded value)`: the value's own bytes, tag included,
    /// for passing a value on verbatim (ZHTTP's `user-data` echo, [`Writer::raw`]).
    pub fn iter_raw(&self) -> RawDictIter<'a> {
        RawDictIter {
            values: Iter { rest: self.payload },
        }
    }
}

/// Iterator over a [`Dict`]'s entries with each value's encoded bytes.
#[derive(Clone, Debug)]
pub struct RawDictIter<'a> {
    values: Iter<'a>,
}

impl<'a> Iterator for RawDictIter<'a> {
    type Item = (&'a [u8], Value<'a>, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.values.next()?.as_bytes();
        let before = self.values.rest;
        let value = self.values.next();
        let raw = &before[..before.len() - self.values.rest.len()];
        debug_assert!(key.is_some() && value.is_some(), "checked dict malformed");
        Some((key?, value?, raw))
    }
}

impl<'a> IntoIterator for Dict<'a> {
    type Item = (&'a [u8], Value<'a>);
    type IntoIter = DictIter<'a>;

    fn into_iter(self) -> DictIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`List`]'s elements.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        // The payload was checked by `parse`, so this cannot fail; if it somehow did, end the
        // iteration rather than panic.
        let decoded = read_frame(self.rest, 0).and_then(|frame| {
            let value = value_of(self.rest, &frame)?;
            Ok((value, frame.next()))
        });
        match decoded {
            Ok((value, next)) => {
                self.rest = self.rest.get(next..).unwrap_or(&[]);
                Some(value)
            }
            Err(_) => {
                debug_assert!(false, "checked tnetstring failed to decode");
                self.rest = &[];
                None
            }
        }
    }
}

/// Iterator over a [`Dict`]'s entries.
#[derive(Clone, Debug)]
pub struct DictIter<'a> {
    values: Iter<'a>,
}

impl<'a> Iterator for DictIter<'a> {
    type Item = (&'a [u8], Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.values.next()?.as_bytes();
        let value = self.values.next();
        debug_assert!(key.is_some() && value.is_some(), "checked dict malformed");
        Some((key?, value?))
    }
}

/// One value's position: payload at `start..end`, tag byte at `end`.
struct Frame {
    tag: u8,
    start: usize,
    end: usize,
}

impl Frame {
    /// Offset just past the tag byte.
    fn next(&self) -> usize {
        self.end + 1
    }

    fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start..self.end).unwrap_or(&[])
    }
}

/// Reads the length prefix and tag of the value at `pos`, which must end (tag included)
/// within `window`.
fn read_frame(window: &[u8], pos: usize) -> Result<Frame, Error> {
    let mut length: usize = 0;
    let mut cursor = pos;
    loop {
        let Some(&byte) = window.get(cursor) else {
            return Err(Error::Truncated);
        };
        match byte {
            b'0'..=b'9' if cursor - pos < LENGTH_DIGITS_MAX => {
                // At most 9 digits: below 10^9, no overflow even for a 32-bit usize.
                length = length * 10 + usize::from(byte - b'0');
                cursor += 1;
            }
            b':' if cursor > pos => break,
            _ => return Err(Error::BadLength),
        }
    }
    let start = cursor + 1;
    let end = start.checked_add(length).ok_or(Error::Truncated)?;
    let tag = *window.get(end).ok_or(Error::Truncated)?;
    Ok(Frame { tag, start, end })
}

fn is_container(tag: u8) -> bool {
    tag == TAG_LIST || tag == TAG_DICT
}

/// Decodes a scalar payload, or wraps a container payload without looking inside.
fn value_of<'a>(buf: &'a [u8], frame: &Frame) -> Result<Value<'a>, Error> {
    let payload = frame.payload(buf);
    let value = match frame.tag {
        TAG_BYTES => Value::Bytes(payload),
        TAG_INT => Value::Int(parse_int(payload).ok_or(Error::BadInt)?),
        TAG_FLOAT => Value::Float(parse_float(payload).ok_or(Error::BadFloat)?),
        TAG_BOOL => match payload {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return Err(Error::BadBool),
        },
        TAG_NULL if payload.is_empty() => Value::Null,
        TAG_NULL => return Err(Error::BadNull),
        TAG_LIST => Value::List(List { payload }),
        TAG_DICT => Value::Dict(Dict { payload }),
        _ => return Err(Error::BadTag),
    };
    Ok(value)
}

/// Parses a decimal `i64` with an optional sign, accepting exactly what Condure's
/// `str::parse::<isize>` accepts on 64-bit targets, without its UTF-8 pass.
fn parse_int(payload: &[u8]) -> Option<i64> {
    let (negative, digits) = match payload {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, payload),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(byte - b'0');
        // Accumulate on the payload's own side of zero so that i64::MIN fits.
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// Parses a float as Condure does (Rust's `FromStr`), without allocating.
fn parse_float(payload: &[u8]) -> Option<f64> {
    core::str::from_utf8(payload).ok()?.parse().ok()
}

/// A list or dict being checked by [`check_nested`].
#[derive(Clone, Copy)]
struct Open {
    /// Where the container's payload ends.
    end: usize,
    dict: bool,
    /// Values seen so far (keys and values both count in a dict).
    count: usize,
}

/// Checks everything inside the container `top` with an explicit stack of at most
/// [`DEPTH_MAX`] entries: no recursion, and every loop turn either consumes at least three
/// bytes or closes a container.
fn check_nested(buf: &[u8], top: &Frame) -> Result<(), Error> {
    let closed = Open {
        end: 0,
        dict: false,
        count: 0,
    };
    let mut stack = [closed; DEPTH_MAX];
    stack[0] = Open {
        end: top.end,
        dict: top.tag == TAG_DICT,
        count: 0,
    };
    let mut depth = 1;
    let mut pos = top.start;
    while depth > 0 {
        let open = &mut stack[depth - 1];
        if pos == open.end {
            if open.dict && open.count % 2 == 1 {
                return Err(Error::MissingValue);
            }
            pos = open.end + 1;
            depth -= 1;
            continue;
        }
        let window = buf.get(..open.end).ok_or(Error::Truncated)?;
        let frame = read_frame(window, pos)?;
        if open.dict && open.count % 2 == 0 && frame.tag != TAG_BYTES {
            return Err(Error::BadKey);
        }
        open.count += 1;
        if is_container(frame.tag) {
            if depth == DEPTH_MAX {
                return Err(Error::TooDeep);
            }
            stack[depth] = Open {
                end: frame.end,
                dict: frame.tag == TAG_DICT,
                count: 0,
            };
            depth += 1;
            pos = frame.start;
        } else {
            value_of(buf, &frame)?;
            pos = frame.next();
        }
    }
    Ok(())
}

/// Decodes the value at the start of `buf`, returning it and the number of bytes it took.
/// Bytes after the value are not looked at.
///
/// The whole value is checked here, including everything nested in it, so iterating the
/// returned [`List`]s and [`Dict`]s afterwards cannot fail.
pub fn parse(buf: &[u8]) -> Result<(Value<'_>, usize), Error> {
    let frame = read_frame(buf, 0)?;
    if is_container(frame.tag) {
        check_nested(buf, &frame)?;
    }
    let value = value_of(buf, &frame)?;
    Ok((value, frame.next()))
}

/// Number of decimal digits in `value`.
fn digit_count(mut value: usize) -> usize {
    let mut count = 1;
    while value >= 10 {
        value /= 10;
        count += 1;
    }
    count
}

/// Writes `value` in decimal into `slot`, which must be exactly `digit_count(value)` long.
fn write_digits(slot: &mut [u8], mut value: usize) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
    debug_assert_eq!(value, 0);
}

/// A container opened by [`Writer`] and not yet closed.
#[derive(Clone, Copy)]
struct Pending {
    /// Where the length prefix goes.
    prefix_at: usize,
    /// Bytes reserved for the length digits; the `:` follows them.
    digits: usize,
    tag: u8,
}

/// Appends canonical tnetstring to a caller-owned buffer.
///
/// A list or dict's length is unknown until it is closed, so `begin_*` reserves room for a
/// guessed number of length digits and `end_*` writes the real length there. Only when the
/// guess was wrong does `end_*` move the payload, once, by the difference. The `*_sized`
/// variants take a size hint for large containers (a ZHTTP root dict holding a body) so the
/// guess is right and nothing moves; the plain variants guess two digits, which fits the
/// small containers (header pairs, `ext`, id entries) and makes a wrong guess cheap.
///
/// # Panics
/// Opening more than [`DEPTH_MAX`] containers, closing one with the wrong `end_*`, or
/// finishing with one still open. All three are programming errors, not input errors.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Invariant: `pending[..depth]` are the open containers, outermost first.
    pending: [Pending; DEPTH_MAX],
    depth: usize,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`; what `out` already holds is left alone.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        let unused = Pending {
            prefix_at: 0,
            digits: 0,
            tag: 0,
        };
        Writer {
            out,
            pending: [unused; DEPTH_MAX],
            depth: 0,
        }
    }

    fn scalar(&mut self, payload: &[u8], tag: u8) {
        self.length(payload.len());
        self.out.extend_from_slice(payload);
        self.out.push(tag);
    }

    fn length(&mut self, length: usize) {
        let mut digits = [0u8; 20];
        let count = digit_count(length);
        write_digits(&mut digits[..count], length);
        self.out.extend_from_slice(&digits[..count]);
        self.out.push(b':');
    }

    /// Appends a byte string.
    pub fn bytes(&mut self, value: &[u8]) {
        self.scalar(value, TAG_BYTES);
    }

    /// Appends an integer.
    pub fn int(&mut self, value: i64) {
        let mut digits = [0u8; 20];
        let magnitude = value.unsigned_abs();
        let count = digit_count_u64(magnitude);
        let sign = usize::from(value < 0);
        digits[0] = b'-';
        let mut rest = magnitude;
        for byte in digits[sign..sign + count].iter_mut().rev() {
            *byte = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        self.scalar(&digits[..sign + count], TAG_INT);
    }

    /// Appends a boolean.
    pub fn bool(&mut self, value: bool) {
        let payload: &[u8] = if value { b"true" } else { b"false" };
        self.scalar(payload, TAG_BOOL);
    }

    /// Appends an already encoded value (one whole tnetstring, as
    /// [`Dict::iter_raw`] yields it) as is.
    pub fn raw(&mut self, encoded: &[u8]) {
        debug_assert!(
            parse(encoded).is_ok_and(|(_, used)| used == encoded.len()),
            "Writer::raw takes exactly one encoded value"
        );
        self.out.extend_from_slice(encoded);
    }

    /// Appends null.
    pub fn null(&mut self) {
        self.scalar(b"", TAG_NULL);
    }

    /// Appends a float, in Rust's shortest round-trip form (`1.5`, `1e300`, `NaN`, `inf`).
    pub fn float(&mut self, value: f64) {
        use std::io::Write as _;
        let mut text = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        // The shortest round-trip form of any f64 is at most 24 bytes, so this fits.
        let written = match write!(cursor, "{value:?}") {
            Ok(()) => cursor.position() as usize,
            Err(_) => 0,
        };
        self.scalar(&text[..written], TAG_FLOAT);
    }

    /// Opens a list. Close it with [`Writer::end_list`].
    pub fn begin_list(&mut self) {
        self.begin(TAG_LIST, 10);
    }

    /// Opens a list whose payload is expected to be about `size_hint` bytes.
    pub fn begin_list_sized(&mut self, size_hint: usize) {
        self.begin(TAG_LIST, size_hint);
    }

    /// Closes the innermost open container, which must be a list.
    pub fn end_list(&mut self) {
        self.end(TAG_LIST);
    }

    /// Opens a dict; write keys and values alternately. Close it with [`Writer::end_dict`].
    pub fn begin_dict(&mut self) {
        self.begin(TAG_DICT, 10);
    }

    /// Opens a dict whose payload is expected to be about `size_hint` bytes.
    pub fn begin_dict_sized(&mut self, size_hint: usize) {
        self.begin(TAG_DICT, size_hint);
    }

    /// Closes the innermost open container, which must be a dict.
    pub fn end_dict(&mut self) {
        self.end(TAG_DICT);
    }

    /// Checks that every container was closed. Returns the number of bytes now in `out`.
    pub fn finish(self) -> usize {
        assert_eq!(
            self.depth, 0,
            "tnetstring writer finished with open containers"
        );
        self.out.len()
    }

    fn begin(&mut self, tag: u8, size_hint: usize) {
        assert!(
            self.depth < DEPTH_MAX,
            "tnetstring writer nested too deeply"
        );
        let digits = digit_count(size_hint);
        let prefix_at = self.out.len();
        self.out.resize(prefix_at + digits + 1, b'0');
        self.pending[self.depth] = Pending {
            prefix_at,
            digits,
            tag,
        };
        self.depth += 1;
    }

    fn end(&mut self, tag: u8) {
        assert!(self.depth > 0, "tnetstring writer: end without begin");
        let open = self.pending[self.depth - 1];
        assert_eq!(open.tag, tag, "tnetstring writer: mismatched end");
        self.depth -= 1;

        let payload_at = open.prefix_at + open.digits + 1;
        let old_len = self.out.len();
        let length = old_len - payload_at;
        let digits = digit_count(length);
        if digits > open.digits {
            let grow = digits - open.digits;
            self.out.resize(old_len + grow, 0);
            self.out.copy_within(payload_at..old_len, payload_at + grow);
        } else if digits < open.digits {
            let shrink = open.digits - digits;
            self.out
                .copy_within(payload_at..old_len, payload_at - shrink);
            self.out.truncate(old_len - shrink);
        }
        let prefix = &mut self.out[open.prefix_at..open.prefix_at + digits + 1];
        write_digits(&mut prefix[..digits], length);
        prefix[digits] = b':';
        self.out.push(tag);
    }
}

fn digit_count_u64(mut value: u64) -> usize {
    let mut count = 1;
    while value >= 10 {
        value /= 10;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Value<'_>, Error> {
        let (value, used) = parse(input)?;
        assert_eq!(
            used,
            input.len(),
            "parse consumed {used} of {}",
            input.len()
        );
        Ok(value)
    }

    /// Walks a value completely, as a consumer would, counting the values seen.
    fn walk(value: Value<'_>) -> usize {
        match value {
            Value::List(list) => 1 + list.iter().map(walk).sum::<usize>(),
            Value::Dict(dict) => 1 + dict.iter().map(|(_, value)| 1 + walk(value)).sum::<usize>(),
            _ => 1,
        }
    }

    #[test]
    fn scalars_decode() {
        let cases: &[(&[u8], Value<'_>)] = &[
            (b"0:,", Value::Bytes(b"")),
            (b"5:hello,", Value::Bytes(b"hello")),
            (b"3:a:b,", Value::Bytes(b"a:b")),
            (b"1:0#", Value::Int(0)),
            (b"2:42#", Value::Int(42)),
            (b"3:-17#", Value::Int(-17)),
            (b"19:9223372036854775807#", Value::Int(i64::MAX)),
            (b"20:-9223372036854775808#", Value::Int(i64::MIN)),
            (b"2:+5#", Value::Int(5)),
            (b"3:007#", Value::Int(7)),
            (b"2:-0#", Value::Int(0)),
            (b"4:true!", Value::Bool(true)),
            (b"5:false!", Value::Bool(false)),
            (b"0:~", Value::Null),
            (b"3:1.5^", Value::Float(1.5)),
            (b"4:-2e3^", Value::Float(-2000.0)),
            // Leading zeros in a length are tolerated, as Condure does.
            (b"05:hello,", Value::Bytes(b"hello")),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_all(input), Ok(*expected), "input {:?}", show(input));
        }
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        let cases: &[(&[u8], Error)] = &[
            (b"", Error::Truncated),
            (b"5", Error::Truncated),
            (b"5:hel", Error::Truncated),
            (b"5:hello", Error::Truncated),
            (b":hello,", Error::BadLength),
            (b"x:,", Error::BadLength),
            (b"-1:,", Error::BadLength),
            (b" 1:a,", Error::BadLength),
            (b"1 :a,", Error::BadLength),
            (b"1234567890:,", Error::BadLength),
            (b"999999999:,", Error::Truncated),
            (b"5:hello?", Error::BadTag),
            (b"5:hello]x", Error::BadLength),
            (b"1:x#", Error::BadInt),
            (b"0:#", Error::BadInt),
            (b"1:-#", Error::BadInt),
            (b"1:+#", Error::BadInt),
            (b"3:--1#", Error::BadInt),
            (b"3:1-1#", Error::BadInt),
            (b"2: 1#", Error::BadInt),
            (b"19:9223372036854775808#", Error::BadInt),
            (b"3:1.x^", Error::BadFloat),
            (b"4:True!", Error::BadBool),
            (b"1:1!", Error::BadBool),
            (b"1:x~", Error::BadNull),
            (b"4:1:a#}", Error::BadKey),
            (b"4:1:a,}", Error::MissingValue),
            (b"6:4:abc,]", Error::Truncated),
            (b"7:3:abc,]", Error::Truncated),
            (b"3:0:~}", Error::BadKey),
            (b"4:9:a,]", Error::Truncated),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse(input).map(|(_, used)| used),
                Err(*expected),
                "input {:?}",
                show(input)
            );
        }
    }

    #[test]
    fn int_parsing_matches_std() {
        // Condure parses ints with `str::parse`; the hand-written parser must agree.
        let cases = [
            "0",
            "-0",
            "+0",
            "7",
            "+7",
            "-7",
            "007",
            "",
            "-",
            "+",
            "+-1",
            "-+1",
            "--1",
            " 1",
            "1 ",
            "1_0",
            "1e3",
            "0x10",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
        ];
        for case in cases {
            assert_eq!(
                parse_int(case.as_bytes()),
                case.parse::<i64>().ok(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn nested_values_decode_and_iterate() {
        let input = b"67:3:key,5:value,4:list,21:1:1#4:true!0:~4:1:x,]]4:dict,10:1:k,3:1.5^}}";
        let value = parse_all(input).unwrap();
        let dict = value.as_dict().unwrap();
        assert_eq!(dict.get(b"key"), Some(Value::Bytes(b"value")));
        assert_eq!(dict.get(b"missing"), None);
        let list: Vec<Value<'_>> = dict
            .get(b"list")
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(list.len(), 4);
        assert_eq!(list[0], Value::Int(1));
        assert_eq!(list[1], Value::Bool(true));
        assert_eq!(list[2], Value::Null);
        let inner: Vec<Value<'_>> = list[3].as_list().unwrap().iter().collect();
        assert_eq!(inner, [Value::Bytes(b"x")]);
        let inner_dict = dict.get(b"dict").unwrap().as_dict().unwrap();
        assert_eq!(inner_dict.get(b"k"), Some(Value::Float(1.5)));
        assert_eq!(walk(value), 14);
    }

    #[test]
    fn trailing_bytes_are_left_unread() {
        assert_eq!(parse(b"1:a,rest"), Ok((Value::Bytes(b"a"), 4)));
    }

    /// Builds `depth` nested lists around a null.
    fn nested_lists(depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = Writer::new(&mut out);
        for _ in 0..depth {
            writer.begin_list();
        }
        writer.null();
        for _ in 0..depth {
            writer.end_list();
        }
        writer.finish();
        out
    }

    #[test]
    fn depth_limit() {
        let deepest = nested_lists(DEPTH_MAX);
        let value = parse_all(&deepest).unwrap();
        assert_eq!(walk(value), DEPTH_MAX + 1);

        // One level more, built by hand since the writer refuses it.
        let mut too_deep = b"0:~".to_vec();
        for _ in 0..=DEPTH_MAX {
            let mut outer = format!("{}:", too_deep.len()).into_bytes();
            outer.extend_from_slice(&too_deep);
            outer.push(b']');
            too_deep = outer;
        }
        assert_eq!(parse(&too_deep).map(|_| ()), Err(Error::TooDeep));

        // A deep value inside a byte string is just bytes.
        let mut wrapped = format!("{}:", too_deep.len()).into_bytes();
        wrapped.extend_from_slice(&too_deep);
        wrapped.push(b',');
        assert_eq!(parse_all(&wrapped), Ok(Value::Bytes(&too_deep)));
    }

    #[test]
    #[should_panic(expected = "nested too deeply")]
    fn writer_refuses_excess_depth() {
        nested_lists(DEPTH_MAX + 1);
    }

    #[test]
    fn every_proper_prefix_is_an_error() {
        let input: &[u8] =
            b"78:4:from,7:condure,2:id,27:23:2:id,5:0-0-6,3:seq,1:3#}]3:ext,15:5:multi,4:true!}}";
        assert!(parse_all(input).is_ok());
        for split in 0..input.len() {
            assert!(parse(&input[..split]).is_err(), "prefix of {split} bytes");
        }
    }

    #[test]
    fn every_single_byte_change_is_handled() {
        // Goal: no byte flip makes the decoder or the iterators panic. Method: flip each
        // byte to each of a set of interesting values, then parse and walk.
        let input: &[u8] = b"48:4:list,21:1:1#4:true!0:~3:1.5^]4:dict,7:1:k,0:,}}";
        for position in 0..input.len() {
            for replacement in [
                b'0', b'9', b':', b',', b'#', b'!', b'~', b'^', b']', b'}', 0xff,
            ] {
                let mut mutated = input.to_vec();
                mutated[position] = replacement;
                if let Ok((value, _)) = parse(&mutated) {
                    walk(value);
                }
            }
        }
    }

    #[test]
    fn writer_round_trips_every_type() {
        let mut out = b"T".to_vec();
        let mut writer = Writer::new(&mut out);
        writer.begin_dict();
        writer.bytes(b"bytes");
        writer.bytes(b"a,b:c");
        writer.bytes(b"int");
        writer.int(-1234567890123);
        writer.bytes(b"bool");
        writer.bool(false);
        writer.bytes(b"null");
        writer.null();
        writer.bytes(b"float");
        writer.float(0.25);
        writer.bytes(b"list");
        writer.begin_list();
        writer.int(i64::MIN);
        writer.int(i64::MAX);
        writer.begin_dict();
        writer.end_dict();
        writer.begin_list();
        writer.end_list();
        writer.end_list();
        writer.end_dict();
        let written = writer.finish();
        assert_eq!(written, out.len());
        assert_eq!(
            show(&out),
            "T144:5:bytes,5:a,b:c,3:int,14:-1234567890123#4:bool,5:false!4:null,0:~5:float,\
             4:0.25^4:list,53:20:-9223372036854775808#19:9223372036854775807#0:}0:]]}"
        );

        let value = parse_all(&out[1..]).unwrap();
        let dict = value.as_dict().unwrap();
        assert_eq!(dict.get(b"bytes"), Some(Value::Bytes(b"a,b:c")));
        assert_eq!(dict.get(b"int"), Some(Value::Int(-1234567890123)));
        assert_eq!(dict.get(b"bool"), Some(Value::Bool(false)));
        assert_eq!(dict.get(b"null"), Some(Value::Null));
        assert_eq!(dict.get(b"float"), Some(Value::Float(0.25)));
        let list: Vec<Value<'_>> = dict
            .get(b"list")
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(list[0], Value::Int(i64::MIN));
        assert_eq!(list[1], Value::Int(i64::MAX));
        assert!(list[2].as_dict().unwrap().is_empty());
        assert!(list[3].as_list().unwrap().is_empty());
    }

    #[test]
    fn writer_lengths_are_canonical_whatever_the_hint() {
        // Goal: a length prefix never keeps padding, whether the guess was too small, too
        // large or right. Method: payload sizes across digit boundaries, several hints.
        let body = [b'x'; 12345];
        for body_len in [
            0usize, 1, 5, 6, 7, 8, 9, 10, 95, 96, 97, 98, 99, 100, 995, 996, 12345,
        ] {
            for hint in [0usize, 10, 100, 100_000, 10_000_000] {
                let mut out = Vec::new();
                let mut writer = Writer::new(&mut out);
                writer.begin_list_sized(hint);
                writer.bytes(&body[..body_len]);
                writer.end_list();
                writer.finish();
                let expected = format!("{}:{body_len}:", digit_count(body_len) + body_len + 2);
                assert!(
                    out.starts_with(expected.as_bytes()),
                    "{}",
                    show(&out[..20.min(out.len())])
                );
                assert_eq!(
                    parse_all(&out).unwrap().as_list().unwrap().iter().count(),
                    1
                );
            }
        }
    }

    #[test]
    fn writer_appends_after_existing_bytes() {
        let mut out = b"prefix ".to_vec();
        let mut writer = Writer::new(&mut out);
        writer.begin_list_sized(1_000_000);
        writer.bytes(b"a");
        writer.end_list();
        writer.finish();
        assert_eq!(out, b"prefix 4:1:a,]");
    }

    #[test]
    fn int_and_float_round_trip() {
        for value in [0i64, 1, -1, 9, 10, -10, 99, 100, 12345, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            let mut writer = Writer::new(&mut out);
            writer.int(value);
            writer.finish();
            assert_eq!(parse_all(&out), Ok(Value::Int(value)));
        }
        for value in [0.0f64, -0.5, 1e300, 1e-300, f64::MAX, f64::INFINITY] {
            let mut out = Vec::new();
            let mut writer = Writer::new(&mut out);
            writer.float(value);
            writer.finish();
            assert_eq!(parse_all(&out), Ok(Value::Float(value)));
        }
    }

    fn show(bytes: &[u8]) -> String {
        bytes.escape_ascii().to_string()
    }
}
