//! Byte classes and small pure helpers shared by the parser and the writer (RFC 9110 §5.6).

/// A 256-entry byte class, built at compile time (httparse's `byte_map!` idea).
type ByteClass = [bool; 256];

const fn byte_class(ranges: &[(u8, u8)]) -> ByteClass {
    let mut class = [false; 256];
    let mut index = 0;
    while index < ranges.len() {
        let (low, high) = ranges[index];
        let mut byte = low as usize;
        while byte <= high as usize {
            class[byte] = true;
            byte += 1;
        }
        index += 1;
    }
    class
}

/// `tchar` (RFC 9110 §5.6.2).
static TCHAR: ByteClass = byte_class(&[
    (b'!', b'!'),
    (b'#', b'\''),
    (b'*', b'+'),
    (b'-', b'.'),
    (b'0', b'9'),
    (b'A', b'Z'),
    (b'^', b'`'),
    (b'a', b'z'),
    (b'|', b'|'),
    (b'~', b'~'),
]);

/// `field-vchar / SP / HTAB` (RFC 9110 §5.5), which is also `reason-phrase` (RFC 9112 §4):
/// everything but controls other than HTAB, and DEL.
static FIELD_VALUE: ByteClass = byte_class(&[(b'\t', b'\t'), (b' ', b'~'), (0x80, 0xff)]);

/// Bytes of `uri-host [ ":" port ]` (RFC 3986 §3.2.2): reg-name (unreserved, pct-encoded,
/// sub-delims), IP-literal brackets, and the port colon. Notably not `/ ? # @` or
/// whitespace, which would let a `Host` value rewrite the URI built from it.
static HOST: ByteClass = byte_class(&[
    (b'!', b'!'),
    (b'$', b'.'),
    (b'0', b';'),
    (b'=', b'='),
    (b'A', b'['),
    (b']', b']'),
    (b'_', b'_'),
    (b'a', b'z'),
    (b'~', b'~'),
]);

pub(crate) fn is_tchar(byte: u8) -> bool {
    TCHAR[byte as usize]
}

pub(crate) fn is_field_value_byte(byte: u8) -> bool {
    FIELD_VALUE[byte as usize]
}

pub(crate) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&byte| is_tchar(byte))
}

pub(crate) fn is_host(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| HOST[byte as usize])
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
pub(crate) fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The non-empty elements of a comma-separated list, OWS trimmed (RFC 9110 §5.6.1:
/// recipients ignore empty elements).
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// Whether a comma-separated header value lists `token`, ASCII case-insensitively.
pub(crate) fn list_contains(value: &[u8], token: &[u8]) -> bool {
    list_elements(value).any(|element| element.eq_ignore_ascii_case(token))
}

/// `1*DIGIT` as a `u64`; `None` when empty, not all digits, or too large.
pub(crate) fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in bytes {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    Some(value)
}

/// A `Content-Length` field value: one `1*DIGIT`, or a list of identical ones, which
/// RFC 9110 §8.6 lets a recipient accept as that one value.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for element in value.split(|&byte| byte == b',').map(trim_ows) {
        let element_length = parse_decimal(element)?;
        match length {
            Some(previous) if previous != element_length => return None,
            _ => length = Some(element_length),
        }
    }
    length
}

/// Appends `value` in decimal, without going through `fmt`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends `value` in lower-case hex without leading zeros, as Condure's `{:x}` does.
pub(crate) fn push_hex(out: &mut Vec<u8>, mut value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = HEX[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_classes_match_the_grammar() {
        // Goal: the tables agree with the RFC's prose definitions for every byte.
        for byte in 0..=255u8 {
            let tchar = byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
            assert_eq!(is_tchar(byte), tchar, "tchar {byte:#x}");
            let field = byte == b'\t' || (0x20..0x7f).contains(&byte) || byte >= 0x80;
            assert_eq!(is_field_value_byte(byte), field, "field {byte:#x}");
            let host = byte.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&byte);
            assert_eq!(HOST[byte as usize], host, "host {byte:#x}");
        }
    }

    #[test]
    fn numbers_round_trip() {
        for value in [0, 1, 9, 10, 255, 4096, 65535, 1 << 40, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
            assert_eq!(parse_decimal(&out), Some(value));
            out.clear();
            push_hex(&mut out, value);
            assert_eq!(out, format!("{value:x}").as_bytes());
        }
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b""), None);
    }

    #[test]
    fn content_length_lists() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b"007", Some(7)),
            (b"5, 5", Some(5)),
            (b"5,5 ,\t5", Some(5)),
            (b"5, 6", None),
            (b"5,", None),
            (b"", None),
            (b" ", None),
            (b"-1", None),
            (b"0x10", None),
            (b"1 2", None),
        ];
        for &(value, expected) in cases {
            assert_eq!(parse_content_length(value), expected, "{value:?}");
        }
    }

    #[test]
    fn lists_skip_empty_elements() {
        let elements: Vec<&[u8]> = list_elements(b" , a ,,b\t, ").collect();
        assert_eq!(elements, [&b"a"[..], b"b"]);
        assert!(list_contains(b"Keep-Alive, Upgrade", b"keep-alive"));
        assert!(!list_contains(b"keep-alive-ish", b"keep-alive"));
    }
}
