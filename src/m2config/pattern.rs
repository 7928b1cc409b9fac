//! Mongrel2's route pattern language (src/pattern.c): Lua 5.1 patterns with `\` as the
//! escape instead of `%`, no captures (parentheses are skipped), anchored at the start of
//! the subject and at its end only by a final `$`.
//!
//! Items: `.` any byte, `\a \c \d \l \p \s \u \w \x \z` classes (uppercase negates), `\`
//! before any other byte quotes it, `[set]` and `[^set]` with ranges and classes, each item
//! optionally followed by `*` (longest), `+`, `-` (shortest) or `?`; `\bxy` balanced pair;
//! `\f[set]` frontier. Bytes compare as C's signed `char` and classes use the C locale, so a
//! byte ≥ 0x80 is in no class, as in Mongrel2 on x86.
//!
//! Differences: Mongrel2 reads past the end of a malformed pattern; zring refuses one when
//! the config loads ([`check`]). Backtracking can be exponential (`a*a*a*a*b`), so a match
//! gives up after [`MATCH_STEPS_MAX`] steps and reports no match.

/// Longest pattern accepted in a config. Also bounds the matcher's recursion depth, which
/// is at most one frame per pattern byte.
pub const PATTERN_BYTES_MAX: usize = 512;
/// Matcher steps (calls of the inner match) before a match attempt gives up as "no match".
/// Far above what a real route needs for a path of `limits.url_path` bytes; bounds the
/// time a hostile path can cost.
pub const MATCH_STEPS_MAX: u32 = 100_000;

const ESCAPE: u8 = b'\\';

/// Why a pattern was refused when the config loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// Longer than [`PATTERN_BYTES_MAX`].
    TooLong,
    /// Ends with a lone `\`.
    TrailingEscape,
    /// A `[` without its `]`.
    MissingBracket,
    /// `\b` not followed by two bytes.
    BadBalance,
    /// `\f` not followed by `[`.
    BadFrontier,
    /// Holds a NUL byte, which ends a C pattern early.
    Nul,
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PatternError::TooLong => "pattern too long",
            PatternError::TrailingEscape => "pattern ends with '\\'",
            PatternError::MissingBracket => "'[' without ']' in pattern",
            PatternError::BadBalance => "'\\b' needs two characters",
            PatternError::BadFrontier => "'\\f' must be followed by '['",
            PatternError::Nul => "NUL byte in pattern",
        })
    }
}

/// Checks that every item of `pattern` is complete, so matching never reads past its end.
pub fn check(pattern: &[u8]) -> Result<(), PatternError> {
    if pattern.len() > PATTERN_BYTES_MAX {
        return Err(PatternError::TooLong);
    }
    if pattern.contains(&0) {
        return Err(PatternError::Nul);
    }
    let mut at = 0;
    while at < pattern.len() {
        match (pattern[at], pattern.get(at + 1)) {
            (ESCAPE, Some(b'b')) => {
                if pattern.len() < at + 4 {
                    return Err(PatternError::BadBalance);
                }
                at += 4;
            }
            (ESCAPE, Some(b'f')) => {
                if pattern.get(at + 2) != Some(&b'[') {
                    return Err(PatternError::BadFrontier);
                }
                at = class_end_checked(pattern, at + 2)?;
            }
            _ => at = class_end_checked(pattern, at)?,
        }
    }
    Ok(())
}

/// `classend` that reports a malformed item instead of running off the end.
fn class_end_checked(pattern: &[u8], at: usize) -> Result<usize, PatternError> {
    match pattern[at] {
        ESCAPE => {
            if at + 1 >= pattern.len() {
                return Err(PatternError::TrailingEscape);
            }
            Ok(at + 2)
        }
        b'[' => {
            let mut p = at + 1;
            if pattern.get(p) == Some(&b'^') {
                p += 1;
            }
            loop {
                let Some(&byte) = pattern.get(p) else {
                    return Err(PatternError::MissingBracket);
                };
                p += 1;
                if byte == ESCAPE {
                    if p >= pattern.len() {
                        return Err(PatternError::MissingBracket);
                    }
                    p += 1;
                }
                if pattern.get(p) == Some(&b']') {
                    return Ok(p + 1);
                }
            }
        }
        _ => Ok(at + 1),
    }
}

/// Matches `pattern` (checked by [`check`]) against the start of `subject`. Returns the
/// length of the matched prefix, or `None` (also when the step budget runs out).
pub fn match_prefix(subject: &[u8], pattern: &[u8]) -> Option<usize> {
    debug_assert!(check(pattern).is_ok());
    let mut state = State {
        subject,
        pattern,
        steps: 0,
    };
    state.matches(0, 0)
}

struct State<'a> {
    subject: &'a [u8],
    pattern: &'a [u8],
    /// Invariant: at most MATCH_STEPS_MAX + 1.
    steps: u32,
}

/// The byte as C's signed `char` widened to `int`.
fn signed(byte: u8) -> i32 {
    i32::from(byte as i8)
}

/// `match_class`: C-locale ctype on a signed char (negative values are in no class).
fn match_class(c: i32, class: u8) -> bool {
    let byte = u8::try_from(c).ok().filter(u8::is_ascii);
    let result = match class.to_ascii_lowercase() {
        b'a' => byte.is_some_and(|b| b.is_ascii_alphabetic()),
        b'c' => byte.is_some_and(|b| b.is_ascii_control()),
        b'd' => byte.is_some_and(|b| b.is_ascii_digit()),
        b'l' => byte.is_some_and(|b| b.is_ascii_lowercase()),
        b'p' => byte.is_some_and(|b| b.is_ascii_punctuation()),
        // C isspace: space, \t \n \v \f \r.
        b's' => byte.is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')),
        b'u' => byte.is_some_and(|b| b.is_ascii_uppercase()),
        b'w' => byte.is_some_and(|b| b.is_ascii_alphanumeric()),
        b'x' => byte.is_some_and(|b| b.is_ascii_hexdigit()),
        b'z' => c == 0,
        _ => return signed(class) == c,
    };
    if class.is_ascii_lowercase() {
        result
    } else {
        !result
    }
}

impl State<'_> {
    /// Pattern byte at `at`, NUL past the end (C strings).
    fn p(&self, at: usize) -> u8 {
        self.pattern.get(at).copied().unwrap_or(0)
    }

    /// `classend` on a checked pattern.
    fn class_end(&self, at: usize) -> usize {
        class_end_checked(self.pattern, at).unwrap_or(self.pattern.len())
    }

    /// `matchbracketclass`: `at` is the `[`, `end` the closing `]`.
    fn bracket(&self, c: i32, mut at: usize, end: usize) -> bool {
        let mut sign = true;
        if self.p(at + 1) == b'^' {
            sign = false;
            at += 1;
        }
        loop {
            at += 1;
            if at >= end {
                return !sign;
            }
            if self.p(at) == ESCAPE {
                at += 1;
                if match_class(c, self.p(at)) {
                    return sign;
                }
            } else if self.p(at + 1) == b'-' && at + 2 < end {
                at += 2;
                if signed(self.p(at - 2)) <= c && c <= signed(self.p(at)) {
                    return sign;
                }
            } else if signed(self.p(at)) == c {
                return sign;
            }
        }
    }

    fn single(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&byte) = self.subject.get(s) else {
            return false;
        };
        let c = signed(byte);
        match self.p(p) {
            b'.' => true,
            ESCAPE => match_class(c, self.p(p + 1)),
            b'[' => self.bracket(c, p, ep - 1),
            other => signed(other) == c,
        }
    }

    fn balance(&self, s: usize, p: usize) -> Option<usize> {
        let (open, close) = (self.p(p), self.p(p + 1));
        if self.subject.get(s) != Some(&open) {
            return None;
        }
        let mut depth = 1;
        for (offset, &byte) in self.subject[s + 1..].iter().enumerate() {
            if byte == close {
                depth -= 1;
                if depth == 0 {
                    return Some(s + 1 + offset + 1);
                }
            } else if byte == open {
                depth += 1;
            }
        }
        None
    }

    fn matches(&mut self, mut s: usize, mut p: usize) -> Option<usize> {
        self.steps += 1;
        if self.steps > MATCH_STEPS_MAX {
            return None;
        }
        loop {
            match self.p(p) {
                b'(' | b')' => p += 1,
                0 if p >= self.pattern.len() => return Some(s),
                ESCAPE if self.p(p + 1) == b'b' => {
                    s = self.balance(s, p + 2)?;
                    p += 4;
                }
                ESCAPE if self.p(p + 1) == b'f' => {
                    p += 2;
                    let ep = self.class_end(p);
                    let previous = if s == 0 {
                        0
                    } else {
                        signed(self.subject[s - 1])
                    };
                    let current = self.subject.get(s).map_or(0, |&b| signed(b));
                    if self.bracket(previous, p, ep - 1) || !self.bracket(current, p, ep - 1) {
                        return None;
                    }
                    p = ep;
                }
                b'$' if p + 1 == self.pattern.len() => {
                    return (s == self.subject.len()).then_some(s);
                }
                _ => {
                    let ep = self.class_end(p);
                    let single = self.single(s, p, ep);
                    match self.p(ep) {
                        b'?' => {
                            if single {
                                if let Some(end) = self.matches(s + 1, ep + 1) {
                                    return Some(end);
                                }
                            }
                            p = ep + 1;
                        }
                        b'*' => return self.max_expand(s, p, ep),
                        b'+' => {
                            return if single {
                                self.max_expand(s + 1, p, ep)
                            } else {
                                None
                            }
                        }
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            if !single {
                                return None;
                            }
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Option<usize> {
        let mut count = 0;
        while self.single(s + count, p, ep) {
            count += 1;
        }
        loop {
            if let Some(end) = self.matches(s + count, ep + 1) {
                return Some(end);
            }
            if count == 0 || self.steps > MATCH_STEPS_MAX {
                return None;
            }
            count -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Option<usize> {
        loop {
            if let Some(end) = self.matches(s, ep + 1) {
                return Some(end);
            }
            if self.steps > MATCH_STEPS_MAX || !self.single(s, p, ep) {
                return None;
            }
            s += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(subject: &str, pattern: &str) -> Option<usize> {
        check(pattern.as_bytes()).unwrap();
        match_prefix(subject.as_bytes(), pattern.as_bytes())
    }

    #[test]
    fn items_and_quantifiers() {
        assert_eq!(m("123abc", "\\d+"), Some(3));
        assert_eq!(m("abc", "\\d+"), None);
        assert_eq!(m("abc", "\\d*"), Some(0));
        assert_eq!(m("aaab", "a-b"), Some(4));
        assert_eq!(m("ab", "a?b"), Some(2));
        assert_eq!(m("b", "a?b"), Some(1));
        assert_eq!(m("x.y", "x\\.y$"), Some(3));
        assert_eq!(m("x.yz", "x\\.y$"), None);
        assert_eq!(m("/users/42", "/users/(\\d+)$"), Some(9));
        assert_eq!(m("q", "[a-z]"), Some(1));
        assert_eq!(m("Q", "[^a-z]"), Some(1));
        assert_eq!(m("]", "[]]"), Some(1));
        assert_eq!(m("-", "[a\\-]"), Some(1));
        assert_eq!(m("A1", "\\u\\D"), None);
        assert_eq!(m("A_", "\\u\\W"), Some(2));
        assert_eq!(m("(a(b)c)d", "\\b()"), Some(7));
        assert_eq!(m("THE (quick) fox", "\\f[%a]"), None);
        assert_eq!(m("a$b", "a$b"), Some(3));
        assert_eq!(m("\u{e9}", "."), Some(1));
        assert_eq!(m("\u{e9}", "\\a"), None);
        assert_eq!(m("\u{e9}", "\\A"), Some(1));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert_eq!(check(b"abc\\"), Err(PatternError::TrailingEscape));
        assert_eq!(check(b"[abc"), Err(PatternError::MissingBracket));
        assert_eq!(check(b"[a\\"), Err(PatternError::MissingBracket));
        assert_eq!(check(b"\\bx"), Err(PatternError::BadBalance));
        assert_eq!(check(b"\\fx"), Err(PatternError::BadFrontier));
        assert_eq!(
            check(&[b'a'; PATTERN_BYTES_MAX + 1]),
            Err(PatternError::TooLong)
        );
    }

    #[test]
    fn backtracking_is_bounded() {
        let subject = "a".repeat(200);
        let started = std::time::Instant::now();
        assert_eq!(m(&subject, "a*a*a*a*a*a*a*b"), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
