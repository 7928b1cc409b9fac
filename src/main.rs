//! `zring`: startup, listeners, signals. Everything else lives in the library.
use std::os::fd::{IntoRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use zring::config::{self, Action, Config, ListenAddr, RuntimeChoice};
use zring::runtime::Kind;
use zring::worker::ListenerInfo;
use zring::{bridge, log, tls};

fn main() {
    let action = match config::parse_argv(std::env::args()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zring: {e}");
            std::process::exit(2);
        }
    };
    let cfg = match action {
        Action::Help => return print!("{}", config::HELP),
        Action::Version => return println!("zring {}", env!("CARGO_PKG_VERSION")),
        Action::Sizes => return print_sizes(),
        Action::Run(c) => *c,
    };
    log::set_level(cfg.log_level);
    if let Err(e) = run(cfg) {
        zring::log!(log::ERROR, "zring", "{e}");
        std::process::exit(1);
    }
}

/// Condure's `--sizes`: what one connection costs in fixed per-slot state.
fn print_sizes() {
    println!(
        "connection: {} bytes",
        std::mem::size_of::<zring::conn::Conn>()
    );
    println!("timer_link: {} bytes", zring::timer::LINK_BYTES);
    println!(
        "outbound_exchange: {} bytes (client mode; + its boxed HTTP session while one runs)",
        std::mem::size_of::<zring::conn::out::OutConn>()
    );
    println!(
        "websocket_decoder: {} bytes (only while a frame or message is half read)",
        zring::conn::WS_DECODER_BYTES
    );
}

/// One rustls configuration per tls listener (`None` for plain ones), all sharing one
/// provider and one identities directory. Every `default-cert` must load now: a missing or
/// bad identity is a startup error naming the file, not a failure at the first client.
fn tls_configs(cfg: &Config) -> Result<Vec<Option<Arc<rustls::ServerConfig>>>, String> {
    if !cfg.listen.iter().any(|l| l.tls) {
        return Ok(cfg.listen.iter().map(|_| None).collect());
    }
    let dir = &cfg.tls_identities_dir;
    std::fs::read_dir(dir).map_err(|e| format!("--tls-identities-dir {}: {e}", dir.display()))?;
    let provider = tls::config::provider();
    let identities = tls::Identities::new(dir.clone(), provider.clone());
    tls::check_startup(
        &identities,
        cfg.listen
            .iter()
            .filter(|l| l.tls)
            .filter_map(|l| l.default_cert.as_deref()),
    )?;
    cfg.listen
        .iter()
        .map(|l| {
            l.tls
                .then(|| {
                    tls::server_config(
                        provider.clone(),
                        identities.clone(),
                        l.default_cert.as_deref(),
                    )
                })
                .transpose()
        })
        .collect()
}

fn run(mut cfg: Config) -> Result<(), String> {
    // Signals go to a dedicated wait, not to whichever thread happens to run; blocked from
    // the start, so one that comes while zring starts waits for the loop below.
    let signals = block_signals();
    raise_nofile_limit();
    // Mongrel2 mode: the config file names the listeners, handlers and limits.
    let mut m2 = match zring::m2serve::prepare(&mut cfg)? {
        Some(p) => {
            if let Some(warning) = p.warning {
                zring::log!(log::WARN, "m2", "{warning}");
            }
            Some(p.setup)
        }
        None => None,
    };
    let kind = choose_runtime(cfg.runtime)?;
    // Listening sockets first, as Mongrel2 (`load_server`): ports under 1024 need root.
    let mut fds = Vec::new();
    for l in &cfg.listen {
        fds.push(listen(&l.addr)?);
    }
    // Then, before any thread exists, Mongrel2's pid file, chroot, daemon and privileges.
    let process = match m2.as_mut() {
        Some(setup) => Some(m2_process(&mut cfg, setup)?),
        None => None,
    };
    let mut infos = Vec::new();
    let tls_configs = tls_configs(&cfg)?;
    for (l, tls) in cfg.listen.iter().zip(tls_configs) {
        infos.push(ListenerInfo { mode: l.mode, tls });
        zring::log!(
            log::INFO,
            "zring",
            "listening on {}{}",
            describe(&l.addr),
            if l.tls { " (tls)" } else { "" }
        );
    }
    // Bound now, so a taken port is a startup error; served once the workers run.
    let metrics_listener = match &cfg.prometheus {
        Some(p) => Some(
            std::net::TcpListener::bind(p.addr)
                .map_err(|e| format!("--prometheus {}: {e}", p.addr))?,
        ),
        None => None,
    };
    let shared = bridge::Shared::new(cfg.workers).map_err(|e| format!("eventfd: {e}"))?;
    let bridge = bridge::start(&cfg, m2.clone(), shared.clone())?;
    if !cfg.zserver_stream.is_empty() || !cfg.zserver_req.is_empty() {
        zring::resolver::spawn(&shared, zring::limits::DNS_THREADS)
            .map_err(|e| format!("resolver threads: {e}"))?;
    }
    let zmq_context = bridge.context();
    let bridge_thread = std::thread::Builder::new()
        .name("bridge".into())
        .spawn(move || bridge.run())
        .map_err(|e| e.to_string())?;
    let mut workers = Vec::new();
    for i in 0..cfg.workers {
        let listeners = (fds.clone(), infos.clone());
        let h = zring::worker::spawn(i, &cfg, m2.clone(), listeners, shared.clone(), kind)
            .map_err(|e| format!("spawning worker {i}: {e}"))?;
        workers.push(h);
    }
    if let (Some(listener), Some(p)) = (metrics_listener, &cfg.prometheus) {
        let stream = m2.is_none() && cfg.listen.iter().any(|l| l.mode == config::Mode::Stream);
        let server = zring::metrics::server::Server {
            listener,
            prefix: p.prefix.clone(),
            shared: shared.clone(),
            info: zring::metrics::Info {
                runtime: match kind {
                    Kind::Uring => "io_uring",
                    Kind::Epoll => "epoll",
                },
                maxconn: [cfg.stream_maxconn, cfg.req_maxconn],
            },
            stream,
        };
        server.spawn().map_err(|e| format!("metrics thread: {e}"))?;
        zring::log!(log::INFO, "zring", "metrics on http://{}/metrics", p.addr);
    }
    // SIGHUP reloads a Mongrel2 config; SIGTERM drains, SIGINT stops.
    let first = loop {
        let sig = wait_signal(&signals);
        if sig != libc::SIGHUP {
            break sig;
        }
        match m2.as_mut() {
            Some(running) => {
                m2_reload(&cfg, &zmq_context, &shared, running);
                if let Some(p) = &process {
                    let server = &running.servers[0].server;
                    if let Err(e) = zring::m2serve::process::reopen_error_log(p, server) {
                        zring::log!(log::ERROR, "m2", "SIGHUP: {e}");
                    }
                }
            }
            None => zring::log!(
                log::INFO,
                "zring",
                "SIGHUP: nothing to reload outside Mongrel2 mode"
            ),
        }
    };
    let stop = |flag: &std::sync::atomic::AtomicBool| {
        flag.store(true, Ordering::SeqCst);
        for inbox in &shared.inboxes {
            inbox.wake();
        }
    };
    if first == libc::SIGTERM {
        // Drain: no more accepts; idle connections close, WebSockets get 1001, responses
        // under way finish until --shutdown-timeout, then the rest is cut.
        zring::log!(
            log::INFO,
            "zring",
            "SIGTERM: draining (up to {} ms; SIGTERM or SIGINT again stops at once)",
            cfg.shutdown_timeout_ms
        );
        stop(&shared.drain);
    } else {
        zring::log!(log::INFO, "zring", "stopping");
        stop(&shared.shutdown);
    }
    {
        let shared = shared.clone();
        std::thread::spawn(move || {
            // During a drain, a second SIGTERM or a SIGINT stops at once: every connection
            // is closed and its handler gets its cancel, as the first SIGINT does.
            if first == libc::SIGTERM {
                while wait_signal(&signals) == libc::SIGHUP {}
                zring::log!(log::INFO, "zring", "stopping at once");
                shared.shutdown.store(true, Ordering::SeqCst);
                for inbox in &shared.inboxes {
                    inbox.wake();
                }
            }
            // One more signal exits at once, as Condure does.
            while wait_signal(&signals) == libc::SIGHUP {}
            std::process::exit(1);
        });
    }
    for w in workers {
        let _ = w.join();
    }
    let _ = bridge_thread.join();
    for l in &cfg.listen {
        if let ListenAddr::Local(p) = &l.addr {
            let _ = std::fs::remove_file(p);
        }
    }
    // As Mongrel2's `complete_shutdown`.
    if let Some(p) = process {
        let _ = std::fs::remove_file(&p.pid_file);
    }
    Ok(())
}

/// Mongrel2's process steps (`m2serve::process`) for the first served server; once in its
/// chroot, the config's path and the setup's paths are rebased into it.
fn m2_process(
    cfg: &mut Config,
    setup: &mut Arc<zring::m2serve::Setup>,
) -> Result<zring::m2serve::process::Process, String> {
    let server = setup.servers[0].server.clone();
    if setup.servers.len() > 1 {
        zring::log!(
            log::INFO,
            "m2",
            "{} servers: chroot, pid_file and error_log are server {}'s",
            setup.servers.len(),
            server.uuid
        );
    }
    // The config's absolute path, taken before the chroot hides the outside.
    let source = cfg.m2_db.as_ref().or(cfg.m2_config.as_ref()).cloned();
    let absolute = source.as_ref().and_then(|p| std::fs::canonicalize(p).ok());
    let chroot = std::fs::canonicalize(&server.chroot).ok();
    let process = zring::m2serve::process::start(&server, &setup.settings)?;
    let own = Arc::get_mut(setup).expect("the setup is not shared before the threads start");
    if process.chrooted {
        own.enter_chroot();
    }
    own.open_access_logs()?;
    if process.chrooted {
        // SIGHUP reads the config again: from inside the chroot when it lies there.
        let inside = match (absolute, chroot) {
            (Some(a), Some(c)) => a.strip_prefix(&c).ok().map(|r| Path::new("/").join(r)),
            _ => None,
        };
        match inside {
            Some(p) if cfg.m2_db.is_some() => cfg.m2_db = Some(p),
            Some(p) => cfg.m2_config = Some(p),
            None => zring::log!(
                log::WARN,
                "m2",
                "the config is outside the chroot {}: SIGHUP cannot read it again",
                server.chroot
            ),
        }
    }
    Ok(process)
}

/// SIGHUP: the config read again becomes the setup of new connections (open ones keep
/// theirs); a config that fails to load or cannot apply leaves the running one, logged.
fn m2_reload(
    cfg: &Config,
    context: &zmq::Context,
    shared: &bridge::Shared,
    running: &mut Arc<zring::m2serve::Setup>,
) {
    let result = zring::m2serve::reload(cfg, running).and_then(|p| {
        bridge::submit_m2_reload(context, shared, cfg, p.setup.clone(), running)?;
        Ok(p)
    });
    match result {
        Ok(p) => {
            if let Some(warning) = p.warning {
                zring::log!(log::WARN, "m2", "{warning}");
            }
            zring::log!(
                log::INFO,
                "m2",
                "SIGHUP: config reloaded; new connections use it"
            );
            *running = p.setup;
        }
        Err(e) => zring::log!(
            log::ERROR,
            "m2",
            "SIGHUP: reload refused, the running config stays: {e}"
        ),
    }
}

fn choose_runtime(choice: RuntimeChoice) -> Result<Kind, String> {
    match choice {
        RuntimeChoice::Epoll => Ok(Kind::Epoll),
        RuntimeChoice::Uring => {
            zring::runtime::uring_available().map_err(|e| format!("io_uring unavailable: {e}"))?;
            Ok(Kind::Uring)
        }
        RuntimeChoice::Auto => match zring::runtime::uring_available() {
            Ok(()) => {
                zring::log!(log::INFO, "zring", "runtime: io_uring");
                Ok(Kind::Uring)
            }
            Err(e) => {
                zring::log!(
                    log::INFO,
                    "zring",
                    "io_uring unavailable ({e}); using epoll"
                );
                Ok(Kind::Epoll)
            }
        },
    }
}

fn describe(a: &ListenAddr) -> String {
    match a {
        ListenAddr::Tcp(s) => s.to_string(),
        ListenAddr::Local(p) => p.display().to_string(),
    }
}

/// A non-blocking listening socket with a deep backlog (the kernel caps it at somaxconn).
/// Raises the soft `RLIMIT_NOFILE` to the hard one: it caps the fds of the epoll runtime
/// and each io_uring ring's registered file table, and distributions default it to 1,024.
fn raise_nofile_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            let from = l.rlim_cur;
            l.rlim_cur = l.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
                log!(
                    log::DEBUG,
                    "zring",
                    "RLIMIT_NOFILE raised from {from} to {}",
                    l.rlim_cur
                );
            }
        }
    }
}

fn listen(addr: &ListenAddr) -> Result<RawFd, String> {
    match addr {
        ListenAddr::Local(path) => {
            let _ = std::fs::remove_file(path);
            let l = std::os::unix::net::UnixListener::bind(path)
                .map_err(|e| format!("listen {}: {e}", path.display()))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let fd = l.into_raw_fd();
            // SAFETY: fd is a listening socket we own; raising its backlog is harmless.
            unsafe { libc::listen(fd, 65535) };
            Ok(fd)
        }
        ListenAddr::Tcp(sa) => tcp_listen(*sa).map_err(|e| format!("listen {sa}: {e}")),
    }
}

fn tcp_listen(sa: std::net::SocketAddr) -> std::io::Result<RawFd> {
    let l = std::net::TcpListener::bind(sa)?;
    l.set_nonblocking(true)?;
    let fd = l.into_raw_fd();
    let one: libc::c_int = 1;
    // SAFETY: fd is our listening socket; option values point at a live c_int.
    unsafe {
        // Accepted sockets inherit TCP_NODELAY on Linux: responses are written whole.
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            4,
        );
        libc::listen(fd, 65535);
    }
    Ok(fd)
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local; pthread_sigmask applies to this thread and is
    // inherited by threads spawned afterwards.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for SIGTERM, SIGINT or SIGHUP and returns which.
fn wait_signal(set: &libc::sigset_t) -> libc::c_int {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: set is initialised; sig is a valid out pointer.
        unsafe { libc::sigwait(set, &mut sig) };
        if sig == libc::SIGTERM || sig == libc::SIGINT || sig == libc::SIGHUP {
            return sig;
        }
    }
}
