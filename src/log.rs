//! Log lines on stdout, in Condure's format: `[LEVEL] YYYY-MM-DD hh:mm:ss.mmm [module] text`;
//! or, when zring runs as `mongrel2` ([`set_mongrel2_style`]), in Mongrel2's (src/dbg.h,
//! src/dbg.c `fprintf_with_timestamp`): `Mon, 07 Dec 2026 12:04:12 GMT [INFO] (zring/module)
//! text`, `[ERROR]`/`[WARN]` likewise, debug and trace as `DEBUG zring/module: text`, which
//! is what Pushpin's runner parses (`Mongrel2Service::formatLogLine`).
//! Levels: 0 error, 1 warn, 2 info, 3 debug, 4+ trace (Condure's `--log-level`).
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(2);
static MONGREL2_STYLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes every later line in Mongrel2's format (zring started as `mongrel2`).
pub fn set_mongrel2_style(on: bool) {
    MONGREL2_STYLE.store(on, Ordering::Relaxed);
}

pub const ERROR: u8 = 0;
pub const WARN: u8 = 1;
pub const INFO: u8 = 2;
pub const DEBUG: u8 = 3;
pub const TRACE: u8 = 4;

pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

#[inline]
pub fn enabled(level: u8) -> bool {
    level <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line; callers go through the `log!` macro so disabled levels cost one load.
pub fn write(level: u8, module: &str, args: std::fmt::Arguments) {
    let tag = match level {
        ERROR => "ERR",
        WARN => "WARN",
        INFO => "INFO",
        DEBUG => "DEBUG",
        _ => "TRACE",
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut tm: libc::tm = unsafe_zeroed_tm();
    if MONGREL2_STYLE.load(Ordering::Relaxed) {
        // SAFETY: both pointers are to valid, writable locals of the right types.
        unsafe {
            libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
            libc::gmtime_r(&ts.tv_sec, &mut tm);
        }
        let line = mongrel2_line(level, &tm, module, args);
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
        return;
    }
    // SAFETY: both pointers are to valid, writable locals of the right types.
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        libc::localtime_r(&ts.tv_sec, &mut tm);
    }
    let line = format!(
        "[{tag}] {:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} [{module}] {args}\n",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ts.tv_nsec / 1_000_000
    );
    // One write per line so lines from several threads don't interleave.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// One line in Mongrel2's format: its `%a, %d %b %Y %H:%M:%S GMT` time stamp (UTC), then
/// `log_err`'s `[ERROR] (…)`, `log_warn`'s `[WARN] (…)`, `log_info`'s `[INFO] (…)` or
/// `debug`'s `DEBUG …:` with zring's module where Mongrel2 names its source file. A line
/// break inside the text would start a line Pushpin cannot parse: it becomes a space.
fn mongrel2_line(level: u8, tm: &libc::tm, module: &str, args: std::fmt::Arguments) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let text = args.to_string().replace(['\n', '\r'], " ");
    let stamp = format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[tm.tm_wday.clamp(0, 6) as usize],
        tm.tm_mday,
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    );
    match level {
        ERROR => format!("{stamp} [ERROR] (zring/{module}) {text}\n"),
        WARN => format!("{stamp} [WARN] (zring/{module}) {text}\n"),
        INFO => format!("{stamp} [INFO] (zring/{module}) {text}\n"),
        _ => format!("{stamp} DEBUG zring/{module}: {text}\n"),
    }
}

fn unsafe_zeroed_tm() -> libc::tm {
    // SAFETY: libc::tm is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `log!(level, "module", "format", args...)`
#[macro_export]
macro_rules! log {
    ($level:expr, $module:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, $module, format_args!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mongrel2_lines_look_like_mongrel2_s() {
        // Goal: the shape of Mongrel2 1.12.2's lines (`Mon, 07 Dec 2026 12:04:12 GMT [INFO]
        // (src/mongrel2.c:230) All loaded up, …`), which Pushpin's runner parses by the
        // first `[…]` (or `DEBUG`).
        let mut tm = unsafe_zeroed_tm();
        tm.tm_year = 126;
        tm.tm_mon = 11;
        tm.tm_mday = 7;
        tm.tm_wday = 1;
        tm.tm_hour = 12;
        tm.tm_min = 4;
        tm.tm_sec = 9;
        let line = |level, text: &str| mongrel2_line(level, &tm, "m2", format_args!("{text}"));
        assert_eq!(
            line(INFO, "up"),
            "Mon, 07 Dec 2026 12:04:09 GMT [INFO] (zring/m2) up\n"
        );
        assert_eq!(
            line(ERROR, "bad\nthing"),
            "Mon, 07 Dec 2026 12:04:09 GMT [ERROR] (zring/m2) bad thing\n"
        );
        assert_eq!(
            line(WARN, "w"),
            "Mon, 07 Dec 2026 12:04:09 GMT [WARN] (zring/m2) w\n"
        );
        assert_eq!(
            line(TRACE, "t"),
            "Mon, 07 Dec 2026 12:04:09 GMT DEBUG zring/m2: t\n"
        );
    }
}
