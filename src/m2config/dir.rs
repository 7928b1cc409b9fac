//! Static files for `Dir` routes, the sans-IO half (src/dir.c `Dir_serve_file`,
//! `Dir_resolve_file`): which file a request names, and whether a resolved file may be
//! served. Opening, `stat` and `realpath` are the runtime's.
//!
//! Mongrel2 builds `base + "/" + (path after the route prefix)`, adding the `index_file`
//! when the path ends in `/` (and, when the path equals the prefix, `base + path`), then
//! percent-decodes the whole string, resolves it with `realpath` and serves it if the result
//! starts with the resolved base. zring decodes only the request part, normalizes it
//! lexically and refuses any `..` that would leave the base before touching the disk; the
//! runtime then resolves symlinks and calls [`is_within`].

use super::Dir;

/// Longest file path built (`limits.dir_max_path` applies to base and prefix in Mongrel2;
/// zring bounds the built relative path as well).
pub const DIR_PATH_BYTES_MAX: usize = 4096;

/// Why a request gets no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirError {
    /// Not `GET` or `HEAD`: 405.
    MethodNotAllowed,
    /// The path is shorter than the route prefix (Mongrel2's tree can route `/st` to
    /// `/static/`): 404.
    ShorterThanPrefix,
    /// A `..` that would leave the base, a NUL byte (`%00`), or a path past
    /// [`DIR_PATH_BYTES_MAX`]: 404, as Mongrel2 answers a failed `realpath` or prefix check.
    Refused,
}

impl DirError {
    /// The HTTP status Mongrel2 answers with.
    pub fn status(self) -> u16 {
        match self {
            DirError::MethodNotAllowed => 405,
            DirError::ShorterThanPrefix | DirError::Refused => 404,
        }
    }
}

/// Writes into `out` the file path relative to the `Dir`'s base, percent-decoded and
/// normalized (no `.`, `..` or empty segments, no leading `/`). `prefix` is the route's
/// literal prefix ([`super::route::Match::prefix`]).
pub fn resolve(
    dir: &Dir,
    method: &[u8],
    prefix: &str,
    path: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DirError> {
    if method != b"GET" && method != b"HEAD" {
        return Err(DirError::MethodNotAllowed);
    }
    let prefix = prefix.as_bytes();
    if prefix.len() > path.len() {
        return Err(DirError::ShorterThanPrefix);
    }
    let mut raw: Vec<u8> = Vec::with_capacity(path.len() + dir.index_file.len());
    if path.ends_with(b"/") {
        raw.extend_from_slice(&path[prefix.len()..]);
        raw.push(b'/');
        raw.extend_from_slice(dir.index_file.as_bytes());
    } else if path == prefix {
        raw.extend_from_slice(path);
    } else {
        raw.extend_from_slice(&path[prefix.len()..]);
    }
    let decoded = percent_decode(&raw);
    if decoded.contains(&0) || decoded.len() > DIR_PATH_BYTES_MAX {
        return Err(DirError::Refused);
    }
    out.clear();
    normalize(&decoded, out)
}

/// Mongrel2's `burl_decode`: `%` and two hex digits become that byte; nothing else
/// changes (`+` stays `+`).
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0;
    while at < input.len() {
        if input[at] == b'%' && at + 2 < input.len() {
            let (high, low) = (input[at + 1], input[at + 2]);
            if let (Some(high), Some(low)) = (hex(high), hex(low)) {
                out.push(high * 16 + low);
                at += 3;
                continue;
            }
        }
        out.push(input[at]);
        at += 1;
    }
    out
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|value| value as u8)
}

/// Lexical normalization within the base: `..` may not climb above it.
fn normalize(path: &[u8], out: &mut Vec<u8>) -> Result<(), DirError> {
    let mut depth = 0usize;
    for segment in path.split(|&byte| byte == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                depth = depth.checked_sub(1).ok_or(DirError::Refused)?;
                let cut = out.iter().rposition(|&byte| byte == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(segment);
                depth += 1;
            }
        }
    }
    Ok(())
}

/// Whether `resolved` (a `realpath`) lies inside `base` (the `realpath` of the `Dir`'s
/// base), compared by whole path components. Mongrel2 compares bytes, so its base
/// `/srv/www` also admits `/srv/wwwx/...` through a symlink; zring does not.
pub fn is_within(base: &std::path::Path, resolved: &std::path::Path) -> bool {
    resolved.starts_with(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Dir {
        Dir {
            base: "static/".into(),
            index_file: "index.html".into(),
            default_ctype: "text/plain".into(),
            cache_ttl: 0,
        }
    }

    fn file(prefix: &str, path: &str) -> Result<String, DirError> {
        let mut out = Vec::new();
        resolve(&dir(), b"GET", prefix, path.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn paths() {
        assert_eq!(file("/static/", "/static/").unwrap(), "index.html");
        assert_eq!(file("/static/", "/static/a/b.css").unwrap(), "a/b.css");
        assert_eq!(file("/static/", "/static/a/").unwrap(), "a/index.html");
        assert_eq!(file("/favicon.ico", "/favicon.ico").unwrap(), "favicon.ico");
        assert_eq!(file("/static/", "/static/a/../b").unwrap(), "b");
        assert_eq!(file("/static/", "/static/%61.txt").unwrap(), "a.txt");
        assert_eq!(file("/static/", "/static/a+b%2").unwrap(), "a+b%2");
        assert_eq!(file("/static/", "/static/../x"), Err(DirError::Refused));
        assert_eq!(file("/static/", "/static/%2e%2e/x"), Err(DirError::Refused));
        assert_eq!(file("/static/", "/static/a%00b"), Err(DirError::Refused));
        assert_eq!(file("/static/", "/st"), Err(DirError::ShorterThanPrefix));
        let mut out = Vec::new();
        assert_eq!(
            resolve(&dir(), b"POST", "/static/", b"/static/x", &mut out),
            Err(DirError::MethodNotAllowed)
        );
    }

    #[test]
    fn within() {
        use std::path::Path;
        assert!(is_within(Path::new("/srv/www"), Path::new("/srv/www/a")));
        assert!(!is_within(Path::new("/srv/www"), Path::new("/srv/wwwx/a")));
    }
}
