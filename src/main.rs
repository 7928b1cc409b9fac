//! `zring`: startup, listeners, signals. Everything else lives in the library.
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use zring::access_log::AccessLog;
use zring::config::{self, Action, Config, ListenAddr, RuntimeChoice};
use zring::listeners::{self, Inherited, Origin};
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
    // Started as `mongrel2` (Pushpin's `mongrel2_bin=`, init scripts): Mongrel2's log lines,
    // which Pushpin's runner parses.
    let argv0 = std::env::args().next().unwrap_or_default();
    log::set_mongrel2_style(config::invoked_as_mongrel2(&argv0));
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
        "outbound_websocket: {} bytes (client mode: the exchange + its boxed session, idle)",
        std::mem::size_of::<zring::conn::out::OutConn>() + zring::conn::out::WS_SESSION_BYTES
    );
    println!(
        "websocket_decoder: {} bytes (only while a frame or message is half read)",
        zring::conn::WS_DECODER_BYTES
    );
}

/// One rustls configuration per tls listener (`None` for plain ones), all sharing one
/// provider and one identities directory (returned too, for SIGHUP). Every `default-cert`
/// must load now: a missing or bad identity is a startup error naming the file, not a
/// failure at the first client.
type TlsConfigs = (
    Vec<Option<Arc<rustls::ServerConfig>>>,
    Option<Arc<tls::Identities>>,
);

fn tls_configs(cfg: &Config) -> Result<TlsConfigs, String> {
    if !cfg.listen.iter().any(|l| l.tls) {
        return Ok((cfg.listen.iter().map(|_| None).collect(), None));
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
    let configs = cfg
        .listen
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
        .collect::<Result<_, _>>()?;
    Ok((configs, Some(identities)))
}

fn run(mut cfg: Config) -> Result<(), String> {
    let started = std::time::Instant::now();
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
    // Taken over from the running zring, passed by systemd, or bound here.
    // In Mongrel2 mode `--takeover-socket` lies in the chroot, as `pid_file` does: the
    // running zring is reached from outside it (this process chroots below).
    let taken = match (&cfg.takeover_socket, cfg.takeover, &m2) {
        (Some(path), true, None) => Some(zring::takeover::take(path)?),
        (Some(path), true, Some(setup)) => {
            let server = &setup.servers[0].server;
            let outside = zring::m2serve::process::outside_chroot(server, path);
            Some(zring::takeover::take(&outside)?)
        }
        _ => None,
    };
    if let Some(t) = &taken {
        if t.connect && cfg.zclient_connect && t.id == cfg.id {
            zring::takeover::close_fds(&t.fds);
            return Err(format!(
                "--takeover: the running zring connects to the handlers with --id {}: give \
                 this one another --id (handlers see both until the old one has drained)",
                cfg.id
            ));
        }
    }
    let sockets = Sockets::open(&cfg, taken.as_ref())?;
    let fds = sockets.listen.clone();
    // The config's absolute path and the chroot, taken before the chroot hides the outside.
    let m2_paths = m2.as_ref().map(|setup| {
        let source = cfg.m2_db.as_ref().or(cfg.m2_config.as_ref()).cloned();
        let absolute = source.as_ref().and_then(|p| std::fs::canonicalize(p).ok());
        let chroot = std::fs::canonicalize(&setup.servers[0].server.chroot).ok();
        (absolute, chroot)
    });
    // Then, before any thread exists, Mongrel2's pid file, chroot, daemon and privileges.
    let process = match m2.as_mut() {
        Some(setup) => Some(zring::m2serve::process::start(
            &setup.servers[0].server,
            &setup.settings,
            taken.is_some(),
        )?),
        None => None,
    };
    // A takeover that fails from here on puts the replaced zring's pid file back.
    let mut pid_file_restore = process.as_ref().and_then(|p| p.restore_guard());
    // The access log thread (after the daemon's fork: threads do not survive it).
    let (access, access_thread) =
        AccessLog::start().map_err(|e| format!("access log thread: {e}"))?;
    let access_zhttp = match &cfg.access_log {
        Some(path) => Some(
            access
                .open(path)
                .map_err(|e| format!("--access-log: {e}"))?,
        ),
        None => None,
    };
    if let (Some(setup), Some(p), Some(paths)) = (m2.as_mut(), &process, m2_paths) {
        m2_settle(&mut cfg, setup, p, paths, &access)?;
    }
    let mut infos = Vec::new();
    let (tls_configs, identities) = tls_configs(&cfg)?;
    for ((l, tls), origin) in cfg.listen.iter().zip(tls_configs).zip(&sockets.origins) {
        infos.push(ListenerInfo { mode: l.mode, tls });
        zring::log!(
            log::INFO,
            "zring",
            "listening on {}{}{}",
            listeners::describe(&l.addr),
            if l.tls { " (tls)" } else { "" },
            match origin {
                Origin::Bound => String::new(),
                o => format!(" ({})", o.describe()),
            }
        );
    }
    // Bound (or inherited) before, so a taken port is a startup error; served once the
    // workers run.
    let metrics_listener = sockets.prometheus.map(|fd| {
        // SAFETY: a listening TCP socket this process owns; the listener takes it.
        unsafe { std::net::TcpListener::from_raw_fd(fd) }
    });
    let shared = bridge::Shared::new(cfg.workers).map_err(|e| format!("eventfd: {e}"))?;
    let _ = shared.access_log.set((access.clone(), access_zhttp));
    let bridge = bridge::start(&cfg, m2.clone(), shared.clone())?;
    if !cfg.zserver_stream.is_empty() || !cfg.zserver_req.is_empty() {
        zring::resolver::spawn(&shared, zring::limits::DNS_THREADS)
            .map_err(|e| format!("resolver threads: {e}"))?;
        // The CA store is read here, once; https requests share what it held.
        let tls = zring::tls::client::ClientTls::load(zring::tls::config::provider())?;
        zring::log!(log::INFO, "zring", "client tls: {tls:?}");
        let _ = shared.out_tls.set(std::sync::Arc::new(tls));
    }
    let zmq_context = bridge.context();
    let bridge_thread = std::thread::Builder::new()
        .name("bridge".into())
        .spawn(move || bridge.run())
        .map_err(|e| e.to_string())?;
    // This process's takeover socket, before any worker accepts: a failure here leaves
    // the zring being replaced serving alone.
    let offer = match &cfg.takeover_socket {
        Some(path) => Some(zring::takeover::bind(path, taken.is_some())?),
        None => None,
    };
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
    if let Some(t) = taken {
        if let Some(r) = pid_file_restore.as_mut() {
            r.armed = false; // serving: the pid file is this process's now
        }
        // Serving on the shared sockets: the old zring may stop accepting.
        match t.finish() {
            Ok(()) => zring::log!(
                log::INFO,
                "zring",
                "takeover: serving; the old zring drains ({} ms after start)",
                started.elapsed().as_millis()
            ),
            Err(e) => zring::log!(log::WARN, "zring", "{e}"),
        }
    }
    if let Some(listener) = offer {
        let mut fds = sockets.listen.clone();
        fds.extend(sockets.prometheus);
        let offer = zring::takeover::Offer {
            listener,
            fds,
            id: cfg.id.clone(),
            connect: cfg.zclient_connect,
        };
        let shared = shared.clone();
        zring::takeover::serve(offer, move || {
            shared.handed_over.store(true, Ordering::SeqCst);
            request_takeover_drain();
        })
        .map_err(|e| format!("takeover thread: {e}"))?;
    }
    // SIGHUP reloads (TLS identities, the --config log level, access logs, a Mongrel2
    // config); SIGTERM drains, SIGINT stops.
    let first = loop {
        let sig = wait_signal(&signals);
        if sig != Signal::Hup {
            break sig;
        }
        reload_options(&cfg);
        if let Some(ids) = &identities {
            let (loaded, failed) = ids.reload_all(std::time::Instant::now());
            zring::log!(
                log::INFO,
                "zring",
                "SIGHUP: {loaded} TLS identities reloaded, {failed} kept (failed to load)"
            );
        }
        access.reopen();
        if let Some(running) = m2.as_mut() {
            m2_reload(&cfg, &zmq_context, &shared, running, &access);
            if let Some(p) = &process {
                let server = &running.servers[0].server;
                if let Err(e) = zring::m2serve::process::reopen_error_log(p, server) {
                    zring::log!(log::ERROR, "m2", "SIGHUP: {e}");
                }
            }
        }
    };
    let stop = |flag: &std::sync::atomic::AtomicBool| {
        flag.store(true, Ordering::SeqCst);
        for inbox in &shared.inboxes {
            inbox.wake();
        }
    };
    let draining = matches!(first, Signal::Term | Signal::TakenOver);
    if draining {
        // Drain: no more accepts; idle connections close, WebSockets get 1001, responses
        // under way finish until --shutdown-timeout, then the rest is cut.
        zring::log!(
            log::INFO,
            "zring",
            "{}: draining (up to {} ms; SIGTERM or SIGINT again stops at once)",
            match first {
                Signal::TakenOver => "taken over",
                _ => "SIGTERM",
            },
            cfg.shutdown_timeout_ms
        );
        stop(&shared.drain);
    } else {
        zring::log!(log::INFO, "zring", "stopping");
        stop(&shared.shutdown);
    }
    {
        let shared = shared.clone();
        // Signals other than these (SIGHUP, a takeover's drain request during a drain
        // already under way) change nothing once stopping.
        let wait_stop = move || loop {
            if let Signal::Term | Signal::Int = wait_signal(&signals) {
                return;
            }
        };
        std::thread::spawn(move || {
            // During a drain, a second SIGTERM or a SIGINT stops at once: every connection
            // is closed and its handler gets its cancel, as the first SIGINT does.
            if draining {
                wait_stop();
                zring::log!(log::INFO, "zring", "stopping at once");
                shared.shutdown.store(true, Ordering::SeqCst);
                for inbox in &shared.inboxes {
                    inbox.wake();
                }
            }
            // One more signal exits at once, as Condure does.
            wait_stop();
            std::process::exit(1);
        });
    }
    for w in workers {
        let _ = w.join();
    }
    let _ = bridge_thread.join();
    // Every line the workers queued is written before the exit (bounded: a stuck file
    // does not hold the exit up).
    if access.finish() {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !access_thread.is_finished() && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    // A successor serves on the sockets (and their paths) now; systemd owns its own.
    let handed_over = shared.handed_over.load(Ordering::SeqCst);
    for (l, origin) in cfg.listen.iter().zip(&sockets.origins) {
        if let (ListenAddr::Local(p), Origin::Bound, false) = (&l.addr, origin, handed_over) {
            let _ = std::fs::remove_file(p);
        }
    }
    if let (Some(p), false) = (&cfg.takeover_socket, handed_over) {
        let _ = std::fs::remove_file(p);
    }
    // As Mongrel2's `complete_shutdown`.
    if let Some(p) = process {
        zring::m2serve::process::remove_own_pid_file(&p.pid_file);
    }
    Ok(())
}

/// After Mongrel2's process steps (`m2serve::process::start`, for the first served
/// server): in its chroot, the config's path and the setup's paths are rebased into it;
/// the access logs are opened.
fn m2_settle(
    cfg: &mut Config,
    setup: &mut Arc<zring::m2serve::Setup>,
    process: &zring::m2serve::process::Process,
    (absolute, chroot): (Option<std::path::PathBuf>, Option<std::path::PathBuf>),
    access: &AccessLog,
) -> Result<(), String> {
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
    let own = Arc::get_mut(setup).expect("the setup is not shared before the threads start");
    if process.chrooted {
        own.enter_chroot();
    }
    own.open_access_logs(access)?;
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
    Ok(())
}

/// SIGHUP: the config read again becomes the setup of new connections (open ones keep
/// theirs); a config that fails to load or cannot apply leaves the running one, logged.
fn m2_reload(
    cfg: &Config,
    context: &zmq::Context,
    shared: &bridge::Shared,
    running: &mut Arc<zring::m2serve::Setup>,
    access: &AccessLog,
) {
    let result = zring::m2serve::reload(cfg, running, access).and_then(|p| {
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

/// SIGHUP: the `--config` file is read again and its log level applied (the other options
/// need a restart or a takeover). A file that fails to parse changes nothing.
fn reload_options(cfg: &Config) {
    let Some(path) = &cfg.config else {
        return;
    };
    match config::parse_argv(std::env::args()) {
        Ok(Action::Run(c)) => {
            log::set_level(c.log_level);
            zring::log!(
                log::INFO,
                "zring",
                "SIGHUP: {} read again; log level {}",
                path.display(),
                c.log_level
            );
        }
        Ok(_) => {}
        Err(e) => zring::log!(log::ERROR, "zring", "SIGHUP: {e}; the running options stay"),
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

/// The process's listening sockets by role (`--listen`s in order, `--prometheus`), and
/// where each came from.
struct Sockets {
    listen: Vec<RawFd>,
    origins: Vec<Origin>,
    prometheus: Option<RawFd>,
}

impl Sockets {
    /// Sockets taken over (`taken`) or passed by systemd go to the addresses they are bound
    /// to; the other addresses are bound here.
    fn open(cfg: &Config, taken: Option<&zring::takeover::Taken>) -> Result<Sockets, String> {
        let mut inherited = listeners::activated()?;
        for &fd in taken.map_or(&[][..], |t| &t.fds[..]) {
            let addr = listeners::inherit(fd).map_err(|e| format!("--takeover: fd {fd}: {e}"))?;
            inherited.push(Inherited {
                fd,
                addr,
                origin: Origin::TakenOver,
                name: None,
            });
        }
        let mut wanted: Vec<ListenAddr> = cfg.listen.iter().map(|l| l.addr.clone()).collect();
        if let Some(p) = &cfg.prometheus {
            wanted.push(ListenAddr::Tcp(p.addr));
        }
        let (matched, unused) = listeners::assign(&wanted, inherited);
        for u in unused {
            log!(
                log::WARN,
                "zring",
                "a socket {} ({}{}) matches no --listen or --prometheus: closed (what waits in \
                 its backlog is reset when its other holders close it)",
                listeners::describe(&u.addr),
                u.origin.describe(),
                u.name.map_or(String::new(), |n| format!(", {n}"))
            );
            // SAFETY: an inherited fd nothing else in this process uses.
            unsafe { libc::close(u.fd) };
        }
        let mut fds = Vec::with_capacity(wanted.len());
        let mut origins = Vec::with_capacity(wanted.len());
        for (i, (want, got)) in wanted.iter().zip(matched).enumerate() {
            let (fd, origin) = match got {
                Some(g) => (g.fd, g.origin),
                None if i == cfg.listen.len() => {
                    // --prometheus: a plain blocking std listener, as the metrics thread wants.
                    let ListenAddr::Tcp(addr) = want else {
                        unreachable!("--prometheus is a TCP address")
                    };
                    let l = std::net::TcpListener::bind(addr)
                        .map_err(|e| format!("--prometheus {addr}: {e}"))?;
                    (l.into_raw_fd(), Origin::Bound)
                }
                None => {
                    let fd = listeners::bind(want)?;
                    if let ListenAddr::Local(path) = want {
                        listeners::apply_socket_file(path, &cfg.listen[i].socket_file)?;
                    }
                    (fd, Origin::Bound)
                }
            };
            fds.push(fd);
            origins.push(origin);
        }
        let prometheus = cfg.prometheus.as_ref().and_then(|_| fds.pop());
        origins.truncate(cfg.listen.len());
        Ok(Sockets {
            listen: fds,
            origins,
            prometheus,
        })
    }
}

/// What `wait_signal` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Term,
    Int,
    Hup,
    /// A successor took the listening sockets over: drain as on SIGTERM (a SIGTERM this
    /// process queued to itself, `request_takeover_drain`, so a drain under way is not
    /// turned into a stop).
    TakenOver,
}

/// Marks the SIGTERM `request_takeover_drain` queues (`sigqueue`'s value).
const TAKEOVER_SIGNAL_VALUE: usize = 0x7a72_696e; // "zrin"

/// Asks the signal-waiting thread for a takeover's drain.
fn request_takeover_drain() {
    let value = libc::sigval {
        sival_ptr: TAKEOVER_SIGNAL_VALUE as *mut libc::c_void,
    };
    // SAFETY: queues a signal to this process; SIGTERM is blocked in every thread and
    // taken by `wait_signal`.
    unsafe { libc::sigqueue(libc::getpid(), libc::SIGTERM, value) };
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

/// Waits for SIGTERM, SIGINT or SIGHUP and returns which (a takeover's own SIGTERM apart).
fn wait_signal(set: &libc::sigset_t) -> Signal {
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is initialised; info is a valid out pointer.
        let sig = unsafe { libc::sigwaitinfo(set, &mut info) };
        match sig {
            libc::SIGTERM => {
                // SAFETY: the fields read exist for a queued signal (`SI_QUEUE`).
                let own = info.si_code == libc::SI_QUEUE
                    && unsafe { info.si_pid() } == std::process::id() as libc::pid_t
                    && unsafe { info.si_value().sival_ptr } as usize == TAKEOVER_SIGNAL_VALUE;
                return if own { Signal::TakenOver } else { Signal::Term };
            }
            libc::SIGINT => return Signal::Int,
            libc::SIGHUP => return Signal::Hup,
            _ => {}
        }
    }
}
