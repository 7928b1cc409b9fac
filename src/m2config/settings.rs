//! Mongrel2's settings (every `Setting_get_*` in the 1.12.2 source) and what zring does with
//! each. zring names the ones it does not implement in one warning line at start
//! ([`unsupported`]); none is ignored silently.

/// What zring does with a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Implemented with Mongrel2's meaning.
    Implemented,
    /// Accepted and meaningless for zring (a coroutine stack size, a buffer zring sizes
    /// itself): listed in the warning, with no effect.
    NotApplicable,
    /// Not implemented: listed in the warning.
    Unsupported,
}

/// A setting's value type in Mongrel2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Setting_get_int`: Mongrel2 reads it with `atoi`; zring requires a decimal integer.
    Int,
    /// `Setting_get_str`.
    Str,
}

/// Every setting Mongrel2 1.12.2 reads: name, type, Mongrel2's default, what zring does.
pub const KNOWN: &[(&str, Kind, &str, Support)] = &[
    ("limits.min_ping", Kind::Int, "120", Support::Implemented),
    (
        "limits.min_read_rate",
        Kind::Int,
        "300",
        Support::Implemented,
    ),
    (
        "limits.min_write_rate",
        Kind::Int,
        "300",
        Support::Implemented,
    ),
    (
        "limits.content_length",
        Kind::Int,
        "20480",
        Support::Implemented,
    ),
    (
        "limits.header_count",
        Kind::Int,
        "1280",
        Support::Implemented,
    ),
    (
        "limits.handler_targets",
        Kind::Int,
        "128",
        Support::Implemented,
    ),
    ("limits.tick_timer", Kind::Int, "10", Support::Implemented),
    ("limits.url_path", Kind::Int, "256", Support::Implemented),
    ("limits.host_name", Kind::Int, "256", Support::Implemented),
    (
        "limits.dir_max_path",
        Kind::Int,
        "256",
        Support::Implemented,
    ),
    (
        "limits.mime_ext_len",
        Kind::Int,
        "128",
        Support::Implemented,
    ),
    ("superpoll.max_fd", Kind::Int, "10240", Support::Implemented),
    ("upload.temp_store", Kind::Str, "", Support::Implemented),
    (
        "upload.temp_store_mode",
        Kind::Str,
        "0600",
        Support::Implemented,
    ),
    ("upload.stream", Kind::Int, "0", Support::Implemented),
    ("no_clobber_xff", Kind::Int, "0", Support::Implemented),
    (
        "download.flow_control",
        Kind::Int,
        "0",
        Support::Implemented,
    ),
    ("certdir", Kind::Str, "", Support::Implemented),
    ("server.daemonize", Kind::Int, "1", Support::Implemented),
    (
        "limits.buffer_size",
        Kind::Int,
        "4096",
        Support::NotApplicable,
    ),
    (
        "limits.client_read_retries",
        Kind::Int,
        "5",
        Support::NotApplicable,
    ),
    (
        "limits.connection_stack_size",
        Kind::Int,
        "32768",
        Support::NotApplicable,
    ),
    (
        "limits.fdtask_stack",
        Kind::Int,
        "102400",
        Support::NotApplicable,
    ),
    (
        "limits.handler_stack",
        Kind::Int,
        "102400",
        Support::NotApplicable,
    ),
    (
        "limits.dir_send_buffer",
        Kind::Int,
        "16384",
        Support::NotApplicable,
    ),
    ("limits.kill_limit", Kind::Int, "2", Support::Implemented),
    (
        "superpoll.hot_dividend",
        Kind::Int,
        "4",
        Support::NotApplicable,
    ),
    ("zeromq.threads", Kind::Int, "1", Support::NotApplicable),
    (
        "limits.proxy_read_retries",
        Kind::Int,
        "100",
        Support::NotApplicable,
    ),
    (
        "limits.proxy_read_retry_warn",
        Kind::Int,
        "10",
        Support::NotApplicable,
    ),
    (
        "disable.access_logging",
        Kind::Int,
        "0",
        Support::Implemented,
    ),
    ("net.tcp_keepalive", Kind::Int, "0", Support::Unsupported),
    ("request.relaxed", Kind::Int, "0", Support::Unsupported),
    ("ssl.verify_optional", Kind::Int, "0", Support::Unsupported),
    ("ssl.verify_required", Kind::Int, "0", Support::Unsupported),
    ("ssl.ca_chain", Kind::Str, "", Support::Unsupported),
    ("ssl_ciphers", Kind::Str, "", Support::Unsupported),
    (
        "control_port",
        Kind::Str,
        "ipc://run/control",
        Support::Implemented,
    ),
];

/// What zring does with `key`; `None` for a key Mongrel2 never reads (a typo, or a
/// plugin's): zring warns about those too.
pub fn support(key: &str) -> Option<Support> {
    KNOWN
        .iter()
        .find(|(name, ..)| *name == key)
        .map(|&(_, _, _, support)| support)
}

/// Checks a value's type: an integer setting must be a decimal integer (m2sh writes
/// numbers and strings alike as text, and Mongrel2's `atoi` turns garbage into 0).
pub fn check(key: &str, value: &str) -> Result<(), String> {
    let Some(&(_, kind, ..)) = KNOWN.iter().find(|(name, ..)| *name == key) else {
        return Ok(());
    };
    if kind == Kind::Int && value.parse::<i64>().is_err() {
        return Err(format!("'{value}' is not an integer"));
    }
    Ok(())
}

/// The integer value of a setting, or Mongrel2's default.
pub fn int(settings: &[(String, String)], key: &str) -> i64 {
    let text = settings
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
        .or_else(|| {
            KNOWN
                .iter()
                .find(|(name, ..)| *name == key)
                .map(|(_, _, d, _)| *d)
        });
    text.and_then(|text| text.parse().ok()).unwrap_or(0)
}

/// The settings given that zring does not implement or that Mongrel2 does not know, for
/// the one warning line at start.
pub fn unsupported(settings: &[(String, String)]) -> Vec<&str> {
    settings
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| support(name) != Some(Support::Implemented))
        .collect()
}
