//! Log lines in Condure's format on stdout: `[LEVEL] YYYY-MM-DD hh:mm:ss.mmm [module] text`.
//! Levels: 0 error, 1 warn, 2 info, 3 debug, 4+ trace (Condure's `--log-level`).
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(2);

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
