//! Mongrel2 mode: `zring --m2-config FILE [--m2-server NAME]` serves a Mongrel2 config with
//! its handlers unchanged. This module turns the parsed config (`m2config`) into what the
//! runtime needs: listeners (plain or TLS) for `Config`, and one read-only [`Setup`],
//! built at start and handed (an `Arc`) to the workers (`conn::m2`, `worker::m2`, through
//! `conn::Settings`) and the bridge (`bridge::m2`). Nothing here is global: tests build a
//! `Setup` and run Mongrel2 connections in-process beside ZHTTP ones.
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, Listen, ListenAddr, Mode};
use crate::m2config::mime::MimeMap;
use crate::m2config::route::Router;
use crate::m2config::{self, settings, Handler, Server, Target};

/// Mongrel2's settings as zring applies them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `limits.content_length`: bodies up to this are sent inline.
    pub content_length: u64,
    /// `limits.header_count`.
    pub header_count: usize,
    /// `limits.handler_targets`: most ids one reply may name.
    pub handler_targets: usize,
    /// `upload.temp_store`: mkstemp template for large bodies (`None`: 413).
    pub temp_store: Option<String>,
    /// `upload.temp_store_mode` (octal, default 0600).
    pub temp_store_mode: u32,
    /// `no_clobber_xff`.
    pub no_clobber_xff: bool,
    /// `upload.stream`: large bodies go to the handler in credit-driven messages.
    pub stream: bool,
    /// `limits.min_read_rate` / `limits.min_write_rate` (bytes/s, 0 = off) and
    /// `limits.kill_limit`: an idle connection dies when more than `kill_limit` of
    /// (idle past `min_ping`, read rate low, write rate low) hold (src/register.c).
    pub min_read_rate: u64,
    /// See `min_read_rate`.
    pub min_write_rate: u64,
    /// See `min_read_rate`.
    pub kill_limit: u32,
    /// `limits.tick_timer` (s): how often a spared idle connection is checked again.
    pub tick_s: u64,
}

/// One served `Server`.
#[derive(Debug)]
pub struct ServerRt {
    /// The config's server.
    pub server: Server,
    /// Its compiled routes.
    pub router: Router,
    /// `use_ssl`.
    pub tls: bool,
    /// Where `Dir` bases are relative to (the `chroot`, taken relative to the working
    /// directory as Mongrel2's test mode does; zring does not chroot).
    pub root: PathBuf,
}

/// Everything Mongrel2 mode needs at run time; built once at start.
#[derive(Debug)]
pub struct Setup {
    /// The served servers, in config order.
    pub servers: Vec<ServerRt>,
    /// Listener index → index into `servers`.
    pub listener_server: Vec<u16>,
    /// The config's handlers (routes point here by index).
    pub handlers: Vec<Handler>,
    /// Settings.
    pub limits: Limits,
    /// The MIME table for `Dir` routes.
    pub mime: MimeMap,
    /// Worker threads: connection ids are `n * workers + worker`.
    pub workers: u32,
    /// `Proxy` backends (`addr`, `port`) and the address each resolved to at load.
    pub proxies: Vec<(String, u16, std::net::SocketAddr)>,
}

impl Setup {
    /// The resolved address of a `Proxy` target.
    pub fn proxy_addr(&self, p: &m2config::Proxy) -> Option<std::net::SocketAddr> {
        self.proxies
            .iter()
            .find(|(a, b, _)| *a == p.addr && *b == p.port)
            .map(|x| x.2)
    }
}

/// Settings zring applies with Mongrel2's default value only (its limits are constants).
const FIXED_AT_DEFAULT: &[(&str, &str)] = &[
    ("limits.url_path", "256"),
    ("limits.host_name", "256"),
    ("limits.dir_max_path", "256"),
    ("limits.mime_ext_len", "128"),
];

/// What [`prepare`] gives back in Mongrel2 mode: the setup to hand to the workers and the
/// bridge, and the warning line (if any) to log.
pub struct Prepared {
    pub setup: Arc<Setup>,
    pub warning: Option<String>,
}

/// Loads the config named by `cfg.m2_config` (`None` outside Mongrel2 mode), rewrites
/// `cfg`'s listeners and limits from it, and returns the [`Setup`] built from it.
pub fn prepare(cfg: &mut Config) -> Result<Option<Prepared>, String> {
    let Some(path) = cfg.m2_config.clone() else {
        return Ok(None);
    };
    let name = path.display().to_string();
    let text = std::fs::read(&path).map_err(|e| format!("{name}: {e}"))?;
    let config = m2config::load(&name, &text).map_err(|e| e.to_string())?;
    let chosen: Vec<&Server> = match cfg.m2_server.as_deref() {
        Some(n) => vec![config.server(Some(n)).ok_or_else(|| {
            format!(
                "{name}: no server named {n:?} (servers: {})",
                config
                    .servers
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?],
        None => config.servers.iter().collect(),
    };
    // Proxy backends are resolved once, here (the workers never block on DNS). Mongrel2
    // resolves at each connect (`netdial`).
    let mut proxies = Vec::new();
    for s in &chosen {
        for h in &s.hosts {
            for r in &h.routes {
                if let Target::Proxy(p) = &r.target {
                    if proxies.iter().any(|(a, b, _)| *a == p.addr && *b == p.port) {
                        continue;
                    }
                    use std::net::ToSocketAddrs;
                    let addr = (p.addr.as_str(), p.port)
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| {
                            format!(
                                "{name}: server {:?}, host {:?}, route {:?}: cannot resolve Proxy \
                                 address {}:{}",
                                s.name, h.name, r.path, p.addr, p.port
                            )
                        })?;
                    proxies.push((p.addr.clone(), p.port, addr));
                }
            }
        }
    }
    let st = &config.settings;
    let int = |k: &str| settings::int(st, k);
    let text_setting = |k: &str| config.setting(k).filter(|v| !v.is_empty());
    let limits = Limits {
        content_length: int("limits.content_length").max(0) as u64,
        header_count: int("limits.header_count").clamp(1, 1 << 20) as usize,
        handler_targets: int("limits.handler_targets")
            .clamp(1, crate::proto::m2::HANDLER_TARGETS_MAX as i64)
            as usize,
        temp_store: text_setting("upload.temp_store").map(str::to_owned),
        temp_store_mode: text_setting("upload.temp_store_mode")
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .unwrap_or(0o600),
        no_clobber_xff: int("no_clobber_xff") != 0,
        stream: int("upload.stream") != 0,
        min_read_rate: int("limits.min_read_rate").max(0) as u64,
        min_write_rate: int("limits.min_write_rate").max(0) as u64,
        kill_limit: int("limits.kill_limit").clamp(0, 3) as u32,
        tick_s: int("limits.tick_timer").clamp(1, 3600) as u64,
    };
    let mut unsupported = settings::unsupported(st);
    // These zring applies at Mongrel2's default only: another value is named too.
    for (key, default) in FIXED_AT_DEFAULT {
        if config.setting(key).is_some_and(|v| v != *default) {
            unsupported.push(key);
        }
    }
    let warning = (!unsupported.is_empty()).then(|| {
        format!(
            "{name}: settings zring does not implement (no effect): {}",
            unsupported.join(", ")
        )
    });
    // Listeners: one per server, TLS ones use `certdir` with `<uuid>.crt`/`<uuid>.key` as
    // the default identity, as Mongrel2 names its certificates.
    cfg.listen.clear();
    let mut servers = Vec::new();
    let mut listener_server = Vec::new();
    for s in chosen {
        let ip: std::net::IpAddr = s.bind_addr.parse().map_err(|_| {
            format!(
                "{name}: server {:?}: bad bind_addr {:?}",
                s.name, s.bind_addr
            )
        })?;
        if s.use_ssl {
            let dir = text_setting("certdir").ok_or_else(|| {
                format!(
                    "{name}: server {:?} has use_ssl=1 but no certdir setting",
                    s.name
                )
            })?;
            cfg.tls_identities_dir = PathBuf::from(dir);
        }
        cfg.listen.push(Listen {
            addr: ListenAddr::Tcp(std::net::SocketAddr::new(ip, s.port)),
            mode: Mode::Stream,
            tls: s.use_ssl,
            default_cert: s.use_ssl.then(|| s.uuid.clone()),
        });
        listener_server.push(servers.len() as u16);
        let root = if s.chroot.is_empty() {
            PathBuf::from(".")
        } else {
            PathBuf::from(&s.chroot)
        };
        servers.push(ServerRt {
            router: Router::new(&s.hosts, &s.default_host),
            tls: s.use_ssl,
            root,
            server: s.clone(),
        });
    }
    // Idle connections die after `limits.min_ping` (0: never), as in Mongrel2.
    let ping = int("limits.min_ping");
    cfg.stream_timeout_s = if ping <= 0 { 1 << 32 } else { ping as u64 };
    // `superpoll.max_fd` caps connections (Mongrel2 sets RLIMIT_NOFILE to it).
    let max_fd = int("superpoll.max_fd").clamp(cfg.workers as i64, 10_000_000) as usize;
    cfg.stream_maxconn = max_fd;
    cfg.req_maxconn = 0;
    // The request head plus an inline body must fit one connection's read buffer.
    cfg.buffer_size = cfg.buffer_size.max(8192);
    let setup = Arc::new(Setup {
        servers,
        listener_server,
        handlers: config.handlers.clone(),
        mime: MimeMap::new(&config.mimetypes),
        limits,
        workers: cfg.workers as u32,
        proxies,
    });
    Ok(Some(Prepared { setup, warning }))
}

/// `mkstemp(3)` with Mongrel2's template, then `fchmod` to `upload.temp_store_mode`.
pub fn mkstemp(template: &str, mode: u32) -> std::io::Result<(String, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut buf = std::ffi::CString::new(template)
        .map_err(|_| std::io::ErrorKind::InvalidInput)?
        .into_bytes_with_nul();
    // SAFETY: buf is a NUL-terminated writable template; mkstemp only rewrites its XXXXXX.
    let fd = unsafe { libc::mkstemp(buf.as_mut_ptr().cast()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own; File takes it over.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    use std::os::unix::fs::PermissionsExt;
    let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
    buf.pop();
    Ok((String::from_utf8_lossy(&buf).into_owned(), file))
}
