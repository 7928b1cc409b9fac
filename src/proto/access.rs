//! The access log line of `--access-log`: the common log format (Apache's `%h %l %u %t
//! "%r" %>s %b`) followed by the request's duration in seconds and the handler's address:
//!
//! ```text
//! 127.0.0.1 - - [07/Dec/2026:12:39:26 +0000] "GET /hello HTTP/1.1" 200 6 0.000412 handler-1
//! ```
//!
//! The time is when the request head was read, in UTC. `%b` is the response body's bytes
//! (`-` for none, as Apache); the duration runs from the request head to the end of the
//! response (a WebSocket's: to its end); the handler is the `from` of its latest packet,
//! `-` if none answered. Bytes outside printable ASCII, `"` and `\` in the request line and
//! the handler are written `\xHH` (Apache's escaping), so a line is always one line.
use std::io::Write as _;

/// One request's entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub remote_addr: &'a [u8],
    /// When the request head was read, Unix time in milliseconds.
    pub time_unix_ms: u64,
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: &'a [u8],
    /// The status written; 0 when none was (the connection ended first).
    pub status: u16,
    /// Response body bytes; `None` prints `-`.
    pub bytes: Option<u64>,
    pub duration_us: u64,
    pub handler: Option<&'a [u8]>,
}

/// Appends `entry`'s line (newline included) to `out`.
pub fn encode(out: &mut Vec<u8>, e: &Entry) {
    escaped(out, e.remote_addr);
    out.extend_from_slice(b" - - [");
    date(out, e.time_unix_ms / 1000);
    out.extend_from_slice(b" +0000] \"");
    escaped(out, e.method);
    out.push(b' ');
    escaped(out, e.target);
    out.push(b' ');
    escaped(out, e.version);
    out.extend_from_slice(b"\" ");
    match e.status {
        0 => out.push(b'-'),
        s => {
            let _ = write!(out, "{s}");
        }
    }
    match e.bytes {
        Some(n) if n > 0 => {
            let _ = write!(out, " {n}");
        }
        _ => out.extend_from_slice(b" -"),
    }
    let _ = write!(
        out,
        " {}.{:06} ",
        e.duration_us / 1_000_000,
        e.duration_us % 1_000_000
    );
    match e.handler {
        Some(h) if !h.is_empty() => escaped(out, h),
        _ => out.push(b'-'),
    }
    out.push(b'\n');
}

fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `dd/Mon/yyyy:hh:mm:ss` for Unix seconds `t` (UTC; the civil calendar from days, Howard
/// Hinnant's `civil_from_days`).
fn date(out: &mut Vec<u8>, t: u64) {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(out, "{day:02}/");
    out.extend_from_slice(MONTHS[(month - 1) as usize]);
    let _ = write!(
        out,
        "/{year:04}:{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_in_common_log_format_with_duration_and_handler() {
        let mut out = Vec::new();
        encode(
            &mut out,
            &Entry {
                remote_addr: b"127.0.0.1",
                time_unix_ms: 971_182_536_000, // 2000-10-10 12:55:36 UTC (Apache's example, in UTC)
                method: b"GET",
                target: b"/apache_pb.gif",
                version: b"HTTP/1.0",
                status: 200,
                bytes: Some(2326),
                duration_us: 1_000_412,
                handler: Some(b"handler-1"),
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [10/Oct/2000:12:55:36 +0000] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 1.000412 handler-1\n"
        );
    }

    #[test]
    fn dates_escapes_and_missing_fields() {
        let mut out = Vec::new();
        encode(
            &mut out,
            &Entry {
                remote_addr: b"::1",
                time_unix_ms: 951_782_400_999, // 2000-02-29 00:00:00.999, a leap day
                method: b"GET",
                target: b"/a\"b\\c\n\xff",
                version: b"HTTP/1.1",
                status: 0,
                bytes: Some(0),
                duration_us: 42,
                handler: None,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "::1 - - [29/Feb/2000:00:00:00 +0000] \"GET /a\\x22b\\x5cc\\x0a\\xff HTTP/1.1\" - - 0.000042 -\n"
        );
        let mut out = Vec::new();
        date(&mut out, 0);
        date(&mut out, 1_798_761_599); // the last second of 2026
        assert_eq!(out, b"01/Jan/1970:00:00:0031/Dec/2026:23:59:59");
    }
}
