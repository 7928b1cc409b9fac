//! Mongrel2 mode: `zring --m2-config FILE [--m2-server NAME]` (m2sh text) or `zring --m2-db
//! FILE [--m2-uuid UUID]` (the database `m2sh load` writes) serves a Mongrel2 config with its
//! handlers unchanged. This module turns the loaded config (`m2config`) into what the
//! runtime needs: listeners (plain or TLS) for `Config`, and one read-only [`Setup`], built
//! at start (and again on SIGHUP, [`reload`]) and handed (an `Arc`) to the workers
//! (`conn::m2`, `worker::m2`, through `conn::Settings`) and the bridge (`bridge::m2`).
//! Nothing here is global: tests build a `Setup` and run Mongrel2 connections in-process
//! beside ZHTTP ones. [`process`] is Mongrel2's process behaviour (pid file, chroot, daemon).
pub mod process;

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
    /// `download.flow_control`: a connection's first request carries `DOWNLOAD_CREDITS`,
    /// each reply written is acknowledged with a credits notice, and a connection may hold
    /// `DOWNLOAD_CREDITS_DEFAULT` bytes of unwritten replies (src/connection.c).
    pub download_flow_control: bool,
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
    /// Where `Dir` bases are relative to (`/` in the chroot, else the `chroot` taken
    /// relative to the working directory as Mongrel2's test mode does).
    pub root: PathBuf,
    /// `access_log`, opened for appending by the access log thread once the process is set
    /// up ([`Setup::open_access_logs`]); `None`: not logging.
    pub access_log: Option<crate::access_log::Target>,
}

/// Everything Mongrel2 mode needs at run time; built at start and on each SIGHUP (a
/// connection keeps the one it was accepted under).
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
    /// The config's settings as loaded (a reload compares them).
    pub settings: Vec<(String, String)>,
    /// zring runs in the served server's chroot: `Dir` bases are relative to `/`.
    pub chrooted: bool,
}

impl Setup {
    /// The process has chrooted (`process::start`): paths are now relative to `/`.
    pub fn enter_chroot(&mut self) {
        self.chrooted = true;
        for s in &mut self.servers {
            s.root = PathBuf::from("/");
        }
    }

    /// Opens each server's `access_log` for appending (at start once the process is set
    /// up, and on SIGHUP, which reopens it as Mongrel2 does for logrotate). The path is the
    /// chroot's when zring chrooted, else `chroot` + `access_log` (Mongrel2's test mode).
    /// `disable.access_logging` turns it off.
    pub fn open_access_logs(&mut self, log: &crate::access_log::AccessLog) -> Result<(), String> {
        if settings::int(&self.settings, "disable.access_logging") != 0 {
            return Ok(());
        }
        for s in &mut self.servers {
            let path = if self.chrooted {
                s.server.access_log.clone()
            } else {
                format!("{}{}", s.server.chroot, s.server.access_log)
            };
            let target = log
                .open(std::path::Path::new(&path))
                .map_err(|e| format!("access_log {path}: {e}"))?;
            s.access_log = Some(target);
        }
        Ok(())
    }

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

/// A loaded config and the servers of it to serve (indices into `config.servers`).
struct Loaded {
    /// The file's name, for messages.
    name: String,
    config: m2config::Config,
    chosen: Vec<usize>,
}

/// Reads `--m2-config` (m2sh text) or `--m2-db` (the database `m2sh load` writes) into one
/// `m2config::Config`, and picks the servers `--m2-uuid`/`--m2-server` name.
fn load(cfg: &Config) -> Result<Option<Loaded>, String> {
    let (name, config) = match (&cfg.m2_config, &cfg.m2_db) {
        (Some(path), _) => {
            let name = path.display().to_string();
            let text = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
            let config = m2config::load(&name, &text).map_err(|e| e.to_string())?;
            (name, config)
        }
        (None, Some(path)) => {
            let config = m2config::db::load(path).map_err(|e| e.to_string())?;
            (path.display().to_string(), config)
        }
        (None, None) => return Ok(None),
    };
    let list = |c: &m2config::Config| {
        c.servers
            .iter()
            .map(|s| format!("{} ({})", s.uuid, s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = if let Some(uuid) = cfg.m2_uuid.as_deref() {
        // Mongrel2 selects by uuid only (src/config/module.c `SERVER_QUERY`).
        let found = config.servers.iter().position(|s| s.uuid == uuid);
        vec![found.ok_or_else(|| {
            format!(
                "{name}: no server with uuid {uuid:?} (servers: {})",
                list(&config)
            )
        })?]
    } else if let Some(n) = cfg.m2_server.as_deref() {
        let found = config.server(Some(n)).map(|s| {
            config
                .servers
                .iter()
                .position(|x| std::ptr::eq(x, s))
                .unwrap_or(0)
        });
        vec![found
            .ok_or_else(|| format!("{name}: no server named {n:?} (servers: {})", list(&config)))?]
    } else {
        (0..config.servers.len()).collect()
    };
    Ok(Some(Loaded {
        name,
        config,
        chosen,
    }))
}

/// Loads the config named by `cfg.m2_config` or `cfg.m2_db` (`None` outside Mongrel2
/// mode), rewrites `cfg`'s listeners and limits from it, and returns the [`Setup`] built
/// from it.
pub fn prepare(cfg: &mut Config) -> Result<Option<Prepared>, String> {
    let Some(loaded) = load(cfg)? else {
        return Ok(None);
    };
    let built = build(cfg, loaded, None, false)?;
    // Listeners: one per server, TLS ones use `certdir` with `<uuid>.crt`/`<uuid>.key` as
    // the default identity, as Mongrel2 names its certificates.
    cfg.listen = built.listen;
    if let Some(dir) = built.certdir {
        cfg.tls_identities_dir = dir;
    }
    let int = |k: &str| settings::int(&built.settings, k);
    // Idle connections die after `limits.min_ping` (0: never), as in Mongrel2.
    let ping = int("limits.min_ping");
    cfg.stream_timeout_s = if ping <= 0 { 1 << 32 } else { ping as u64 };
    // `superpoll.max_fd` caps connections (Mongrel2 sets RLIMIT_NOFILE to it).
    let max_fd = int("superpoll.max_fd").clamp(cfg.workers as i64, 10_000_000) as usize;
    cfg.stream_maxconn = max_fd;
    cfg.req_maxconn = 0;
    // The request head plus an inline body must fit one connection's read buffer.
    cfg.buffer_size = cfg.buffer_size.max(8192);
    Ok(Some(Prepared {
        setup: Arc::new(built.setup),
        warning: built.warning,
    }))
}

/// SIGHUP: reads the config again (the same file or database, the same server selection)
/// into a new [`Setup`] for new connections; open ones keep the one they started with.
/// Handler indices stay valid across reloads: a handler with the same `send_spec` and
/// `recv_spec` keeps its index (and its bound sockets), new ones are appended, unused ones
/// stay bound. What a running process cannot change is refused with the reason (the old
/// setup stays): another set of servers, a handler whose identity changed. A server's new
/// `bind_addr`/`port`/`use_ssl` is ignored with a warning, as Mongrel2 keeps its listening
/// socket (`load_server` with `old_srv`); so are the settings that size the process.
pub fn reload(
    cfg: &Config,
    old: &Setup,
    log: &crate::access_log::AccessLog,
) -> Result<Prepared, String> {
    let loaded = load(cfg)?.ok_or("not in Mongrel2 mode")?;
    let built = build(cfg, loaded, Some(old), old.chrooted)?;
    let mut warning = built.warning;
    let mut notes = Vec::new();
    if built.setup.servers.len() != old.servers.len() {
        return Err(format!(
            "{} servers where {} were served: restart zring to change the servers",
            built.setup.servers.len(),
            old.servers.len()
        ));
    }
    for (new, was) in built.setup.servers.iter().zip(&old.servers) {
        if new.server.uuid != was.server.uuid {
            return Err(format!(
                "server {} is now {}: restart zring to change the servers",
                was.server.uuid, new.server.uuid
            ));
        }
        let (a, b) = (&new.server, &was.server);
        if (&a.bind_addr, a.port, a.use_ssl) != (&b.bind_addr, b.port, b.use_ssl) {
            notes.push(format!(
                "server {}: keeps listening on {}:{} (bind_addr, port and use_ssl need a restart)",
                a.uuid, b.bind_addr, b.port
            ));
        }
    }
    if old.proxies.is_empty() && !built.setup.proxies.is_empty() {
        // Workers size their backend slots at start, for Proxy routes only.
        return Err("the first Proxy route needs a restart of zring".into());
    }
    for key in RESTART_SETTINGS {
        let value = |s: &[(String, String)]| settings::int(s, key);
        if value(&built.settings) != value(&old.settings) {
            notes.push(format!("{key} keeps its value until a restart"));
        }
    }
    if !notes.is_empty() {
        let line = notes.join("; ");
        warning = Some(match warning {
            Some(w) => format!("{w}; {line}"),
            None => line,
        });
    }
    // Reopened, as Mongrel2's SIGHUP reopens its logs (logrotate moves them first).
    let mut setup = built.setup;
    setup.open_access_logs(log)?;
    Ok(Prepared {
        setup: Arc::new(setup),
        warning,
    })
}

/// Settings read into the process at start (`Config`), which a reload cannot change.
const RESTART_SETTINGS: &[&str] = &["limits.min_ping", "superpoll.max_fd"];

/// What [`build`] makes of a loaded config.
struct Built {
    setup: Setup,
    warning: Option<String>,
    listen: Vec<Listen>,
    certdir: Option<PathBuf>,
    settings: Vec<(String, String)>,
}

/// Handler indices of `config` mapped onto `old`'s list (reload): kept where the specs
/// match, appended where new. Errors when a kept handler's identity changed.
fn merge_handlers(
    config: &m2config::Config,
    old: &Setup,
) -> Result<(Vec<Handler>, Vec<usize>), String> {
    let mut merged = old.handlers.clone();
    let mut index = Vec::with_capacity(config.handlers.len());
    for h in &config.handlers {
        let same = merged
            .iter()
            .position(|o| o.send_spec == h.send_spec && o.recv_spec == h.recv_spec);
        match same {
            Some(i) if merged[i] != *h => {
                return Err(format!(
                    "handler {} / {}: send_ident, recv_ident, protocol or raw_payload changed: \
                     restart zring to apply",
                    h.send_spec, h.recv_spec
                ))
            }
            Some(i) => index.push(i),
            None => {
                merged.push(h.clone());
                index.push(merged.len() - 1);
            }
        }
    }
    Ok((merged, index))
}

fn build(
    cfg: &Config,
    loaded: Loaded,
    old: Option<&Setup>,
    chrooted: bool,
) -> Result<Built, String> {
    let Loaded {
        name,
        mut config,
        chosen,
    } = loaded;
    if let Some(old) = old {
        let (handlers, index) = merge_handlers(&config, old)?;
        for server in &mut config.servers {
            for host in &mut server.hosts {
                for route in &mut host.routes {
                    if let Target::Handler(i) = &mut route.target {
                        *i = index[*i];
                    }
                }
            }
        }
        config.handlers = handlers;
    }
    let chosen: Vec<&Server> = chosen.iter().map(|&i| &config.servers[i]).collect();
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
        download_flow_control: int("download.flow_control") != 0,
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
    let mut listen = Vec::new();
    let mut certdir = None;
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
            certdir = Some(PathBuf::from(dir));
        }
        listen.push(Listen {
            addr: ListenAddr::Tcp(std::net::SocketAddr::new(ip, s.port)),
            mode: Mode::Stream,
            tls: s.use_ssl,
            default_cert: s.use_ssl.then(|| s.uuid.clone()),
            socket_file: Default::default(),
        });
        listener_server.push(servers.len() as u16);
        servers.push(ServerRt {
            router: Router::new(&s.hosts, &s.default_host),
            tls: s.use_ssl,
            root: server_root(chrooted, s),
            access_log: None,
            server: s.clone(),
        });
    }
    let setup = Setup {
        servers,
        listener_server,
        handlers: config.handlers.clone(),
        mime: MimeMap::new(&config.mimetypes),
        limits,
        workers: cfg.workers as u32,
        proxies,
        settings: config.settings.clone(),
        chrooted,
    };
    Ok(Built {
        setup,
        warning,
        listen,
        certdir,
        settings: config.settings,
    })
}

/// Where a server's `Dir` bases are relative to: `/` once zring has chrooted there, else
/// the `chroot` taken relative to the working directory, as Mongrel2's test mode does.
fn server_root(chrooted: bool, s: &Server) -> PathBuf {
    if chrooted {
        PathBuf::from("/")
    } else if s.chroot.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(&s.chroot)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "\
json = Handler(send_spec='tcp://127.0.0.1:9997', send_ident='j', recv_spec='tcp://127.0.0.1:9996', recv_ident='')
tnet = Handler(send_spec='tcp://127.0.0.1:9995', send_ident='t', recv_spec='tcp://127.0.0.1:9994', recv_ident='', protocol='tnetstring')
main = Server(uuid='u-1', name='main', access_log='/a', error_log='/e', pid_file='/p',
    default_host='h', bind_addr='127.0.0.1', port=6767,
    hosts=[Host(name='h', routes={'/j': json, '/t': tnet})])
settings = {'disable.access_logging': 1}
servers = [main]
";

    /// Loads `CONF` as `--m2-config` does, then reloads `changed` over it.
    fn reload_over(changed: &str) -> (Arc<Setup>, Result<Prepared, String>) {
        let dir = std::env::temp_dir().join(format!(
            "zring-m2serve-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m2.conf");
        std::fs::write(&path, CONF).unwrap();
        let mut cfg = Config {
            m2_config: Some(path.clone()),
            ..Config::default()
        };
        let first = prepare(&mut cfg).unwrap().unwrap().setup;
        std::fs::write(&path, changed).unwrap();
        let (log, _writer) = crate::access_log::AccessLog::start().unwrap();
        let second = reload(&cfg, &first, &log);
        let _ = std::fs::remove_dir_all(&dir);
        (first, second)
    }

    #[test]
    fn reload_keeps_handler_indices_and_appends_new_ones() {
        // tnet goes, a new handler comes first in the file: json keeps index 0, tnet stays
        // bound at 1, the new one is appended at 2 and the route points there.
        let changed = CONF
            .replace("'/t': tnet", "'/n': new")
            .replace(
                "main = Server(",
                "new = Handler(send_spec='tcp://127.0.0.1:9993', send_ident='n', recv_spec='tcp://127.0.0.1:9992', recv_ident='')\nmain = Server(",
            );
        let (first, second) = reload_over(&changed);
        let second = second.unwrap();
        let (old, new) = (&first.handlers, &second.setup.handlers);
        assert_eq!(new.len(), 3);
        assert_eq!(new[..2], old[..]);
        assert_eq!(new[2].send_ident, "n");
        let routes = &second.setup.servers[0].server.hosts[0].routes;
        let target = |p: &str| {
            routes
                .iter()
                .find(|r| r.path == p)
                .map(|r| r.target.clone())
        };
        assert_eq!(target("/j"), Some(Target::Handler(0)));
        assert_eq!(target("/n"), Some(Target::Handler(2)));
        assert!(second.warning.is_none());
    }

    #[test]
    fn reload_refuses_what_a_running_process_cannot_change() {
        let (_, r) = reload_over(&CONF.replace("send_ident='j'", "send_ident='other'"));
        assert!(r.err().unwrap().contains("send_ident"));
        let (_, r) = reload_over(&CONF.replace("uuid='u-1'", "uuid='u-2'"));
        assert!(r.err().unwrap().contains("restart"));
        let (_, r) = reload_over(&CONF.replace(
            "'/t': tnet",
            "'/t': tnet, '/p': Proxy(addr='127.0.0.1', port=1)",
        ));
        assert!(r.err().unwrap().contains("Proxy"));
        let (_, r) = reload_over("servers = [");
        assert!(r.is_err());
        // Its access log is opened again (here: none, logging is disabled).
        let (_, r) = reload_over(CONF);
        assert!(r.unwrap().setup.servers[0].access_log.is_none());
        // A new port is kept with a warning (the listener stays), the rest applies.
        let (_, r) = reload_over(&CONF.replace("port=6767", "port=6768"));
        let p = r.unwrap();
        assert!(p
            .warning
            .unwrap()
            .contains("keeps listening on 127.0.0.1:6767"));
        assert_eq!(p.setup.servers[0].server.port, 6768);
    }
}
