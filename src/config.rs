//! Command line: every flag of Condure 1.9.1 with its meaning and default, so Pushpin's
//! runner can start zring as `condure_bin`, plus zring's own flags. Hand-written so that
//! `--flag value` and `--flag=value` both work, as clap does for Condure.
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::limits;

/// Which ZHTTP mode a listener uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PUSH/ROUTER/SUB, streaming, WebSocket.
    Stream,
    /// DEALER, one request and one response.
    Req,
}

/// Where a listener listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Local(PathBuf),
}

/// One `--listen` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: ListenAddr,
    pub mode: Mode,
    pub tls: bool,
    pub default_cert: Option<String>,
    /// What a `local` listener's socket file gets once bound.
    pub socket_file: SocketFile,
}

/// `mode=` (octal), `user=` and `group=` of a `local` listener (pushpin-connmgr's, which
/// Pushpin's runner passes for a Unix-socket port that sets them): applied to the socket
/// file right after bind, so a front end running as another user may connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketFile {
    pub mode: Option<u32>,
    /// A user name or numeric uid.
    pub user: Option<String>,
    /// A group name or numeric gid.
    pub group: Option<String>,
}

/// `--prometheus`: where metrics are served, and the prefix of their names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prometheus {
    pub addr: SocketAddr,
    /// Prepended as is to every metric name (pushpin-connmgr's `prefix=`), e.g. `pushpin_`.
    pub prefix: String,
}

/// Which runtime the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// io_uring when it works here, else epoll with a log line.
    Auto,
    Uring,
    Epoll,
}

/// What zring's permessage-deflate compressor keeps between messages
/// (`--compression-context`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionContext {
    /// Every offer is answered with `server_no_context_takeover` (RFC 7692 §7.1.1.1), so a
    /// message is compressed the same for every connection: a fan-out is compressed once
    /// per worker, and no connection holds a compressor.
    Shared,
    /// Each connection keeps its own context (unless its client asks for none): a better
    /// ratio for chatty one-to-one sessions, one compression per target in a fan-out.
    Takeover,
}

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub log_level: u8,
    pub id: String,
    pub workers: usize,
    pub req_maxconn: usize,
    pub stream_maxconn: usize,
    pub buffer_size: usize,
    pub body_buffer_size: usize,
    pub messages_max: usize,
    pub req_timeout_s: u64,
    pub stream_timeout_s: u64,
    pub listen: Vec<Listen>,
    pub zclient_req: Vec<String>,
    pub zclient_stream: Vec<String>,
    pub zclient_connect: bool,
    /// Client mode (`--zserver-req`, `--zserver-stream`, `--zserver-connect`), as
    /// pushpin-connmgr: zring makes outbound requests for ZHTTP requesters.
    pub zserver_req: Vec<String>,
    pub zserver_stream: Vec<String>,
    pub zserver_connect: bool,
    /// `--deny-out-internal`: client mode refuses internal addresses (`conn::out::is_internal`).
    pub deny_out_internal: bool,
    /// `--ws-out-buffer-size`: an outbound WebSocket's window each way (`conn::out::ws`);
    /// `None`: `buffer_size`.
    pub ws_out_buffer_size: Option<usize>,
    pub ipc_file_mode: Option<u32>,
    pub tls_identities_dir: PathBuf,
    pub compression: bool,
    /// `--compression-context`: see [`CompressionContext`].
    pub compression_context: CompressionContext,
    pub runtime: RuntimeChoice,
    /// zring: how long a request waits for a handler before it gets a 503.
    pub handler_wait_ms: u64,
    /// SIGTERM's drain: how long in-flight exchanges may take before they are cut.
    pub shutdown_timeout_ms: u64,
    /// A TLS client must finish its handshake within this (ms).
    pub tls_handshake_timeout_ms: u64,
    /// A request head must be complete within this (ms) of accept, or of its first byte.
    pub head_timeout_ms: u64,
    /// A kept-alive connection with no next request is closed after this (ms).
    pub keepalive_timeout_ms: u64,
    /// A request body must progress by `body_min_bytes` in every period of this (ms).
    pub body_timeout_ms: u64,
    pub body_min_bytes: u64,
    /// zring: pin worker threads to cores.
    pub pin: bool,
    /// `--m2-config FILE`: serve a Mongrel2 config instead of ZHTTP (see `m2serve`).
    pub m2_config: Option<PathBuf>,
    /// `--m2-db FILE`: serve the sqlite config database `m2sh load` writes instead.
    pub m2_db: Option<PathBuf>,
    /// `--m2-server NAME`: the server of the Mongrel2 config to run, by name then uuid
    /// (default: all).
    pub m2_server: Option<String>,
    /// `--m2-uuid UUID`: the server to run, by uuid only (Mongrel2's second argument).
    pub m2_uuid: Option<String>,
    /// `--prometheus [addr:]port[,prefix=NAME]`: serve metrics and `/healthz` there.
    pub prometheus: Option<Prometheus>,
    /// `--takeover-socket PATH`: where this process offers its listening sockets to a
    /// successor (`takeover`).
    pub takeover_socket: Option<PathBuf>,
    /// `--takeover`: take the listening sockets of the zring at `takeover_socket`, then
    /// have it drain.
    pub takeover: bool,
    /// `--config FILE`: options read from a file (again on SIGHUP).
    pub config: Option<PathBuf>,
    /// `--access-log FILE`: one line per request, written by the access log thread.
    pub access_log: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: 2,
            id: "condure".into(),
            workers: 2,
            req_maxconn: 100,
            stream_maxconn: 10_000,
            buffer_size: 8192,
            body_buffer_size: 100_000,
            messages_max: 100,
            req_timeout_s: 30,
            stream_timeout_s: 1800,
            listen: Vec::new(),
            zclient_req: Vec::new(),
            zclient_stream: Vec::new(),
            zclient_connect: false,
            zserver_req: Vec::new(),
            zserver_stream: Vec::new(),
            zserver_connect: false,
            deny_out_internal: false,
            ws_out_buffer_size: None,
            ipc_file_mode: None,
            tls_identities_dir: PathBuf::from("."),
            compression: false,
            compression_context: CompressionContext::Shared,
            runtime: RuntimeChoice::Auto,
            handler_wait_ms: limits::HANDLER_WAIT_MS_DEFAULT,
            shutdown_timeout_ms: limits::SHUTDOWN_TIMEOUT_MS_DEFAULT,
            tls_handshake_timeout_ms: limits::TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
            head_timeout_ms: limits::HEAD_TIMEOUT_MS_DEFAULT,
            keepalive_timeout_ms: limits::KEEPALIVE_TIMEOUT_MS_DEFAULT,
            body_timeout_ms: limits::BODY_TIMEOUT_MS_DEFAULT,
            body_min_bytes: limits::BODY_MIN_BYTES_DEFAULT,
            pin: true,
            m2_config: None,
            m2_db: None,
            m2_server: None,
            m2_uuid: None,
            prometheus: None,
            takeover_socket: None,
            takeover: false,
            config: None,
            access_log: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Run(Box<Config>),
    Help,
    Version,
    Sizes,
}

pub const HELP: &str = "\
zring: HTTP/WebSocket connection manager (Condure-compatible)

USAGE:
    zring [OPTIONS]
    zring [OPTIONS] CONFIG.sqlite SERVER_UUID    Mongrel2's command line (--m2-db, --m2-uuid);
                                                 also what a symlink named mongrel2 runs

OPTIONS (Condure 1.9.1):
    --body-buffer-size <N>          Body buffer size for connections in req mode [default: 100000]
    --buffer-size <N>               Connection buffer size; the request head must fit [default: 8192]
    --compression                   Allow compression to be used
    -h, --help                      Print help information
    --id <ID>                       Instance ID [default: condure]
    --ipc-file-mode <octal>         Permissions for ZeroMQ IPC binds
    --listen <[addr:]port[,params...]>
                                    Port to listen on, repeatable; params: stream, req, tls,
                                    default-cert=<name>, local; for local: mode=<octal>,
                                    user=<name|uid>, group=<name|gid> [default: 0.0.0.0:8000,stream]
    --log-level <N>                 Log level, 0=error .. 4=trace [default: 2]
    --messages-max <N>              Maximum queued WebSocket messages per connection [default: 100]
    --req-maxconn <N>               Maximum concurrent connections in req mode [default: 100]
    --req-timeout <N>               Client timeout in req mode (seconds) [default: 30]
    --sizes                         Prints sizes of tasks and other objects
    --stream-maxconn <N>            Maximum concurrent connections in stream mode [default: 10000]
    --stream-timeout <N>            Client timeout in stream mode (seconds) [default: 1800]
    --tls-identities-dir <dir>      Directory containing certificates and private keys [default: .]
    -V, --version                   Print version information
    --workers <N>                   Number of worker threads [default: 2]
    --zclient-connect               ZeroMQ client sockets connect instead of bind
    --zclient-req <spec>            ZeroMQ client REQ spec, repeatable [default: ipc://client]
    --zclient-stream <spec-base>    ZeroMQ client PUSH/ROUTER/SUB spec base, repeatable [default: ipc://client]

OPTIONS (client mode, as pushpin-connmgr; outbound HTTP(S) and WebSocket (ws, wss) for ZHTTP
    requesters, as zurl):
    --zserver-stream <spec-base>    ZeroMQ server PULL (-in)/ROUTER (-in-stream)/PUB (-out) spec
                                    base, repeatable; tcp://host:P uses P, P+1, P+2
    --zserver-req <spec>            ZeroMQ server ROUTER spec for req mode, repeatable
    --zserver-connect               ZeroMQ server sockets connect instead of bind
    --deny-out-internal             Refuse outbound connections to internal addresses (loopback,
                                    private, link-local, 0/8, 100.64/10, unique-local IPv6,
                                    IPv4-mapped IPv6 of these); a request's ignore-policies lifts it
    --ws-out-buffer-size <N>        An outbound WebSocket's window: the credits its requester
                                    gets in the 101, and the most of an origin message zring
                                    gathers into one packet; 200000 is zurl's as Pushpin's
                                    runner sets it, which Pushpin 1.36 needs for messages
                                    over the window (docs/protocols.md) [default: --buffer-size]
    With --zserver-* and no --listen, zring runs client mode only (no server port).

OPTIONS (zring):
    --runtime <auto|uring|epoll>    Event loop; auto falls back to epoll without io_uring [default: auto]
    --compression-context <shared|takeover>
                                    With --compression: shared answers every permessage-deflate
                                    offer with server_no_context_takeover, so a message is
                                    compressed once per worker for all its targets and no
                                    connection holds a compressor; takeover keeps a context per
                                    connection (better ratio one-to-one, one compression per
                                    target) [default: shared]
    --handler-wait <ms>             A request no handler takes within this time gets a 503 [default: 5000]
    --tls-handshake-timeout <ms>    A TLS client that has not finished its handshake by then is dropped [default: 10000]
    --head-timeout <ms>             A request head must be complete this long after accept, or after
                                    its first byte on a kept-alive connection; else 408 (or a
                                    plain close if no byte came) [default: 30000]
    --keepalive-timeout <ms>        A kept-alive connection with no next request is closed [default: 60000]
    --body-timeout <ms>             While zring waits for a request body, it must progress by
                                    --body-min-bytes in every period of this; else 408 [default: 10000]
    --body-min-bytes <N>            See --body-timeout; 0 turns the body rate check off [default: 1024]
    --shutdown-timeout <ms>         On SIGTERM zring stops accepting, closes idle connections,
                                    sends WebSockets a close 1001 and lets HTTP responses under
                                    way finish for up to this long; what is left is then cut
                                    (handlers get cancel). A second SIGTERM, or SIGINT, stops at
                                    once [default: 10000]
    --no-pin                        Do not pin worker threads to cores
    --prometheus <[addr:]port[,prefix=NAME]>
                                    Serve Prometheus metrics (GET /metrics) and readiness
                                    (GET /healthz) on this address, as pushpin-connmgr; NAME
                                    is prepended to every metric name [default: off]
    --takeover-socket <path>        Offer this process's listening sockets to a successor on
                                    this Unix socket (see --takeover; in Mongrel2 mode, as
                                    root, a path in the chroot) [default: off]
    --takeover                      Restart or upgrade without dropping a connection: take the
                                    listening sockets of the zring serving --takeover-socket
                                    (the same kernel sockets: nothing in their backlog is
                                    lost), start serving, then have it drain as on SIGTERM
    --access-log <file>             Log every request to this file: common log format, then the
                                    duration (s) and the handler's address. Written by its own
                                    thread; lines it cannot take in time are dropped and counted
                                    (connmgr_access_log_dropped_total). Reopened on SIGHUP
    --config <file>                 Read options from this file, one per line (`log-level 3`;
                                    the command line wins); SIGHUP reads it again and applies
                                    the log level
    SIGHUP: re-reads the TLS identities, the --config file's log level, reopens the access
    log (and in Mongrel2 mode reloads the config); open connections are not touched.
    Socket activation: sockets passed by systemd (LISTEN_FDS) are used for the --listen and
    --prometheus addresses (in Mongrel2 mode: the servers' ports) they are bound to; the
    others are bound by zring.

OPTIONS (Mongrel2 mode; excludes --listen, --zclient-*, --tls-identities-dir):
    --m2-config <file>              Serve a Mongrel2 config (m2sh syntax) with its handlers
    --m2-db <file>                  Serve the config database `m2sh load` wrote (sqlite)
    --m2-server <name>              Only this server of the config (name or uuid) [default: all]
    --m2-uuid <uuid>                Only the server with this uuid, as mongrel2's second argument
                                    [default: all]
    As Mongrel2: the server's pid_file is written, chroot (when run as root) and
    server.daemonize are honoured, access_log/error_log are written; SIGHUP reloads the
    config for new connections, SIGINT/SIGTERM stop (a second one exits at once).
";

/// Parses a whole command line, program name first. Under the name `mongrel2` a config is
/// required (Mongrel2's usage line otherwise): such a binary must never fall back to
/// ZHTTP mode on port 8000.
pub fn parse_argv<I: IntoIterator<Item = String>>(argv: I) -> Result<Action, String> {
    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_default();
    let action = parse(argv)?;
    if let Action::Run(c) = &action {
        if invoked_as_mongrel2(&program) && c.m2_db.is_none() && c.m2_config.is_none() {
            return Err(
                "usage: mongrel2 config.sqlite server_uuid (or zring's flags, see --help)".into(),
            );
        }
    }
    Ok(action)
}

/// Parses `args` (without the program name). The error is one line for the user.
/// `--config FILE` puts the file's options (see [`options_file`]) before the command
/// line's, so the command line wins where both set an option.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Action, String> {
    let args: Vec<String> = args.into_iter().collect();
    let mut file = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.strip_prefix("--config") {
            Some("") => file = Some(it.next().ok_or("--config needs a value")?),
            Some(v) if v.starts_with('=') => file = Some(v[1..].to_string()),
            _ => rest.push(a),
        }
    }
    let mut all = match &file {
        Some(path) => options_file(path)?,
        None => Vec::new(),
    };
    all.extend(rest);
    let mut action = parse_args(all)?;
    if let Action::Run(c) = &mut action {
        c.config = file.map(PathBuf::from);
    }
    Ok(action)
}

/// The options of a `--config` file as command-line arguments: one option per line,
/// `name value`, `name = value` or a bare `name` for a flag, the leading `--` optional;
/// blank lines and lines starting with `#` are skipped. SIGHUP reads it again (the log
/// level applies at once; see `docs/operations.md`).
pub fn options_file(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--config {path}: {e}"))?;
    let mut args = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.find(|ch: char| ch == '=' || ch.is_whitespace()) {
            Some(i) => {
                let value =
                    line[i..].trim_start_matches(|ch: char| ch == '=' || ch.is_whitespace());
                (&line[..i], Some(value.trim()))
            }
            None => (line, None),
        };
        let name = name.trim_start_matches('-');
        if name == "config" {
            return Err(format!(
                "--config {path}: a config file cannot name another"
            ));
        }
        args.push(match value {
            Some(v) => format!("--{name}={v}"),
            None => format!("--{name}"),
        });
    }
    Ok(args)
}

fn parse_args(args: Vec<String>) -> Result<Action, String> {
    let mut c = Config::default();
    let mut args = args.into_iter();
    let mut sizes = false;
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        if !arg.starts_with('-') {
            positional.push(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            "--sizes" => sizes = true,
            "--compression" => c.compression = true,
            "--zclient-connect" => c.zclient_connect = true,
            "--zserver-connect" => c.zserver_connect = true,
            "--deny-out-internal" => c.deny_out_internal = true,
            "--zserver-req" => c.zserver_req.push(zmq_spec(&name, value()?)?),
            "--zserver-stream" => {
                let spec = zmq_spec(&name, value()?)?;
                crate::bridge::client::stream_endpoints(&spec)
                    .map_err(|e| format!("{name}: {e}"))?;
                c.zserver_stream.push(spec)
            }
            "--no-pin" => c.pin = false,
            "--takeover" => c.takeover = true,
            "--access-log" => c.access_log = Some(PathBuf::from(value()?)),
            "--takeover-socket" => c.takeover_socket = Some(PathBuf::from(value()?)),
            "--log-level" => c.log_level = number(&name, &value()?, 0, 255)? as u8,
            "--id" => c.id = value()?,
            "--workers" => {
                c.workers = number(&name, &value()?, 1, limits::WORKERS_MAX as u64)? as usize
            }
            "--req-maxconn" => {
                c.req_maxconn = number(&name, &value()?, 0, limits::CONNS_MAX)? as usize
            }
            "--stream-maxconn" => {
                c.stream_maxconn = number(&name, &value()?, 0, limits::CONNS_MAX)? as usize
            }
            "--buffer-size" => c.buffer_size = number(&name, &value()?, 1024, 1 << 30)? as usize,
            "--ws-out-buffer-size" => {
                c.ws_out_buffer_size = Some(number(&name, &value()?, 1024, 1 << 30)? as usize)
            }
            "--body-buffer-size" => {
                c.body_buffer_size = number(&name, &value()?, 0, 1 << 30)? as usize
            }
            "--messages-max" => c.messages_max = number(&name, &value()?, 1, 1 << 20)? as usize,
            "--req-timeout" => c.req_timeout_s = number(&name, &value()?, 1, 1 << 32)?,
            "--stream-timeout" => c.stream_timeout_s = number(&name, &value()?, 1, 1 << 32)?,
            "--handler-wait" => c.handler_wait_ms = number(&name, &value()?, 1, 1 << 32)?,
            "--shutdown-timeout" => c.shutdown_timeout_ms = number(&name, &value()?, 0, 1 << 32)?,
            "--tls-handshake-timeout" => {
                c.tls_handshake_timeout_ms = number(&name, &value()?, 1, 1 << 32)?
            }
            "--head-timeout" => c.head_timeout_ms = number(&name, &value()?, 1, 1 << 32)?,
            "--keepalive-timeout" => c.keepalive_timeout_ms = number(&name, &value()?, 1, 1 << 32)?,
            "--body-timeout" => c.body_timeout_ms = number(&name, &value()?, 1, 1 << 32)?,
            "--body-min-bytes" => c.body_min_bytes = number(&name, &value()?, 0, 1 << 30)?,
            "--listen" => c.listen.push(parse_listen(&value()?)?),
            "--zclient-req" => c.zclient_req.push(zmq_spec(&name, value()?)?),
            "--zclient-stream" => c.zclient_stream.push(zmq_spec(&name, value()?)?),
            "--ipc-file-mode" => {
                let v = value()?;
                let mode = u32::from_str_radix(&v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("--ipc-file-mode: {v:?} is not an octal file mode"))?;
                c.ipc_file_mode = Some(mode);
            }
            "--tls-identities-dir" => c.tls_identities_dir = PathBuf::from(value()?),
            "--m2-config" => c.m2_config = Some(PathBuf::from(value()?)),
            "--m2-db" => c.m2_db = Some(PathBuf::from(value()?)),
            "--m2-server" => c.m2_server = Some(value()?),
            "--m2-uuid" => c.m2_uuid = Some(value()?),
            "--prometheus" => c.prometheus = Some(parse_prometheus(&value()?)?),
            "--compression-context" => {
                c.compression_context = match value()?.as_str() {
                    "shared" => CompressionContext::Shared,
                    "takeover" => CompressionContext::Takeover,
                    v => {
                        return Err(format!(
                            "--compression-context: {v:?} is not one of shared, takeover"
                        ))
                    }
                }
            }
            "--runtime" => {
                c.runtime = match value()?.as_str() {
                    "auto" => RuntimeChoice::Auto,
                    "uring" | "io_uring" => RuntimeChoice::Uring,
                    "epoll" => RuntimeChoice::Epoll,
                    v => return Err(format!("--runtime: {v:?} is not one of auto, uring, epoll")),
                }
            }
            _ => return Err(format!("unknown argument {arg:?} (try --help)")),
        }
    }
    mongrel2_positional(&mut c, positional)?;
    if sizes {
        return Ok(Action::Sizes);
    }
    if c.m2_config.is_some() || c.m2_db.is_some() || c.m2_server.is_some() || c.m2_uuid.is_some() {
        check_m2_flags(&c)?;
    }
    if c.takeover && c.takeover_socket.is_none() {
        return Err("--takeover needs --takeover-socket (where the running zring listens)".into());
    }
    finish(&mut c)?;
    Ok(Action::Run(Box::new(c)))
}

/// Whether the program was started under Mongrel2's name (a symlink `mongrel2` → zring):
/// its command line is then Mongrel2's, as Pushpin's `mongrel2_bin=` and init scripts run it.
pub fn invoked_as_mongrel2(argv0: &str) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|name| name == "mongrel2")
}

/// Mongrel2's `mongrel2 config.sqlite server_uuid [config_module.so]` (src/mongrel2.c
/// `taskmain`): two plain arguments are `--m2-db` and `--m2-uuid`.
fn mongrel2_positional(c: &mut Config, positional: Vec<String>) -> Result<(), String> {
    match positional.len() {
        0 => Ok(()),
        2 if c.m2_db.is_none() && c.m2_config.is_none() && c.m2_uuid.is_none() => {
            let mut it = positional.into_iter();
            c.m2_db = it.next().map(PathBuf::from);
            c.m2_uuid = it.next();
            Ok(())
        }
        3 => Err("a config module (mongrel2's third argument) is not supported: the config is read from the sqlite database".into()),
        _ => Err(format!(
            "unexpected argument {:?}: plain arguments are Mongrel2's `config.sqlite server_uuid` (try --help)",
            positional[0]
        )),
    }
}

/// Refuses flags that make no sense with `--m2-config`/`--m2-db` (checked before defaults
/// apply): the Mongrel2 config names the ports, handlers and certificates.
fn check_m2_flags(c: &Config) -> Result<(), String> {
    match (&c.m2_config, &c.m2_db) {
        (None, None) => return Err("--m2-server and --m2-uuid need --m2-config or --m2-db".into()),
        (Some(_), Some(_)) => return Err("--m2-config and --m2-db exclude each other".into()),
        _ => {}
    }
    if c.m2_server.is_some() && c.m2_uuid.is_some() {
        return Err("--m2-server and --m2-uuid exclude each other".into());
    }
    if !c.listen.is_empty()
        || !c.zclient_stream.is_empty()
        || !c.zclient_req.is_empty()
        || !c.zserver_stream.is_empty()
        || !c.zserver_req.is_empty()
    {
        return Err(
            "Mongrel2 mode excludes --listen and --zclient-*: the config names the ports and handlers"
                .into(),
        );
    }
    if c.tls_identities_dir.as_os_str() != "." {
        return Err("Mongrel2 mode excludes --tls-identities-dir: use the certdir setting".into());
    }
    Ok(())
}

fn finish(c: &mut Config) -> Result<(), String> {
    if c.id.is_empty() || c.id.contains(' ') || c.id.len() > limits::ADDRESS_BYTES_MAX {
        return Err(format!(
            "--id {:?}: must be 1-64 bytes without spaces",
            c.id
        ));
    }
    // pushpin-connmgr: with a zserver spec the default listener is not added (client mode
    // alone, as zurl runs).
    if c.listen.is_empty() && c.zserver_stream.is_empty() && c.zserver_req.is_empty() {
        c.listen.push(parse_listen("0.0.0.0:8000,stream")?);
    }
    if c.zclient_req.is_empty() {
        c.zclient_req.push("ipc://client".into());
    }
    if c.zclient_stream.is_empty() {
        c.zclient_stream.push("ipc://client".into());
    }
    let has = |m: Mode| c.listen.iter().any(|l| l.mode == m);
    if has(Mode::Req) && c.req_maxconn < c.workers {
        return Err(format!(
            "--req-maxconn must be at least --workers ({})",
            c.workers
        ));
    }
    if has(Mode::Stream) && c.stream_maxconn < c.workers {
        return Err(format!(
            "--stream-maxconn must be at least --workers ({})",
            c.workers
        ));
    }
    if (c.req_maxconn + c.stream_maxconn) as u64 > limits::CONNS_MAX {
        return Err("--req-maxconn + --stream-maxconn must be at most 10000000".into());
    }
    Ok(())
}

fn number(name: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("{name}: {v:?} is not a number"))?;
    if n < min || n > max {
        return Err(format!("{name}: {n} is out of range {min}..={max}"));
    }
    Ok(n)
}

fn zmq_spec(name: &str, v: String) -> Result<String, String> {
    if v.starts_with("ipc://") || v.starts_with("tcp://") {
        Ok(v)
    } else {
        Err(format!("{name}: {v:?} must start with ipc:// or tcp://"))
    }
}

/// `[addr:]port[,param...]`, params `stream`, `req`, `tls`, `default-cert=<name>`, `local`,
/// and for `local`: `mode=<octal>`, `user=`, `group=`.
pub fn parse_listen(spec: &str) -> Result<Listen, String> {
    let mut parts = spec.split(',');
    let first = parts.next().unwrap_or_default();
    let (mut mode, mut tls, mut local, mut default_cert) = (Mode::Stream, false, false, None);
    let mut socket_file = SocketFile::default();
    for p in parts {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        };
        match (k, v) {
            ("stream", None) => mode = Mode::Stream,
            ("req", None) => mode = Mode::Req,
            ("tls", None) => tls = true,
            ("local", None) => local = true,
            ("default-cert", Some(name)) if !name.is_empty() => default_cert = Some(name.into()),
            ("mode", Some(m)) => {
                let m = u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|&m| m <= 0o7777)
                    .ok_or_else(|| format!("--listen {spec:?}: mode {m:?} is not octal"))?;
                socket_file.mode = Some(m);
            }
            ("user", Some(u)) if !u.is_empty() => socket_file.user = Some(u.into()),
            ("group", Some(g)) if !g.is_empty() => socket_file.group = Some(g.into()),
            _ => return Err(format!("--listen {spec:?}: unknown parameter {p:?}")),
        }
    }
    let addr = if local {
        if first.is_empty() {
            return Err(format!("--listen {spec:?}: local needs a path"));
        }
        ListenAddr::Local(PathBuf::from(first))
    } else if let Ok(port) = first.parse::<u16>() {
        ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], port)))
    } else {
        ListenAddr::Tcp(
            first
                .parse()
                .map_err(|_| format!("--listen {spec:?}: {first:?} is not [addr:]port"))?,
        )
    };
    if tls && local {
        return Err(format!("--listen {spec:?}: tls and local do not combine"));
    }
    if !local && socket_file != SocketFile::default() {
        return Err(format!(
            "--listen {spec:?}: mode, user and group are for local (Unix socket) listeners"
        ));
    }
    Ok(Listen {
        addr,
        mode,
        tls,
        default_cert,
        socket_file,
    })
}

/// `[addr:]port[,prefix=NAME]`, pushpin-connmgr's `--prometheus` (a bare port listens on
/// every address). The prefix must keep metric names valid: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn parse_prometheus(spec: &str) -> Result<Prometheus, String> {
    let mut parts = spec.split(',');
    let first = parts.next().unwrap_or_default();
    let mut prefix = String::new();
    for p in parts {
        match p.split_once('=') {
            Some(("prefix", v)) => prefix = v.to_string(),
            _ => return Err(format!("--prometheus {spec:?}: unknown parameter {p:?}")),
        }
    }
    let name_ok = prefix.chars().enumerate().all(|(i, ch)| {
        ch.is_ascii_alphabetic() || ch == '_' || ch == ':' || (i > 0 && ch.is_ascii_digit())
    });
    if !name_ok {
        return Err(format!(
            "--prometheus {spec:?}: prefix {prefix:?} would make invalid metric names"
        ));
    }
    let addr = match first.parse::<u16>() {
        Ok(port) => SocketAddr::from(([0, 0, 0, 0], port)),
        Err(_) => first
            .parse()
            .map_err(|_| format!("--prometheus {spec:?}: {first:?} is not [addr:]port"))?,
    };
    Ok(Prometheus { addr, prefix })
}

/// The three endpoints of a stream spec base: (PUSH, ROUTER, SUB), as Condure derives them.
pub fn stream_endpoints(base: &str) -> Result<(String, String, String), String> {
    if let Some(path) = base.strip_prefix("ipc://") {
        return Ok((
            format!("ipc://{path}-out"),
            format!("ipc://{path}-out-stream"),
            format!("ipc://{path}-in"),
        ));
    }
    let rest = base
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("bad spec {base:?}"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{base:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{base:?} has a bad port"))?;
    if port > u16::MAX - 2 {
        return Err(format!("{base:?}: port + 2 must be a port"));
    }
    Ok((
        format!("tcp://{host}:{port}"),
        format!("tcp://{host}:{}", port + 1),
        format!("tcp://{host}:{}", port + 2),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Action::Run(c) => Ok(*c),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults_match_condure() {
        let c = run(&[]).unwrap();
        assert_eq!(c.listen, vec![parse_listen("0.0.0.0:8000,stream").unwrap()]);
        assert_eq!(
            (c.workers, c.buffer_size, c.stream_maxconn),
            (2, 8192, 10_000)
        );
        assert_eq!(c.zclient_stream, vec!["ipc://client".to_string()]);
        assert_eq!(c.id, "condure");
    }

    #[test]
    fn pushpin_runner_command_line() {
        let c = run(&[
            "--log-level=3",
            "--listen=127.0.0.1:17999,stream",
            "--listen=0.0.0.0:443,stream,tls,default-cert=default_443",
            "--zclient-stream=ipc:///tmp/pp/run/pushpin-condure",
            "--buffer-size=8192",
            "--stream-maxconn=50000",
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[1].tls);
        assert_eq!(c.listen[1].default_cert.as_deref(), Some("default_443"));
        assert_eq!(c.stream_maxconn, 50_000);
    }

    #[test]
    fn client_mode_flags_as_pushpin_runs_them() {
        // Pushpin's runner adds these to the server flags.
        let c = run(&[
            "--listen=127.0.0.1:7999,stream",
            "--zclient-stream=ipc:///r/condure",
            "--zserver-stream=ipc:///r/connmgr-client",
            "--deny-out-internal",
        ])
        .unwrap();
        assert_eq!(
            c.zserver_stream,
            vec!["ipc:///r/connmgr-client".to_string()]
        );
        assert!(c.deny_out_internal);
        assert_eq!(c.listen.len(), 1);
        // zurl's role: client mode alone, no default listener.
        let c = run(&[
            "--zserver-stream",
            "tcp://127.0.0.1:5000",
            "--zserver-connect",
        ])
        .unwrap();
        assert!(c.listen.is_empty());
        assert!(c.zserver_connect);
        let c = run(&["--zserver-req", "ipc://req"]).unwrap();
        assert!(c.listen.is_empty());
        assert!(run(&["--zserver-stream", "tcp://h"]).is_err());
        assert!(run(&["--zserver-stream", "inproc://x"]).is_err());
        assert!(HELP.contains("--zserver-stream"));
        assert!(HELP.contains("--deny-out-internal"));
    }

    #[test]
    fn ws_out_buffer_size_defaults_to_buffer_size() {
        let c = run(&["--zserver-stream=ipc:///r/c", "--buffer-size=4096"]).unwrap();
        assert_eq!(c.ws_out_buffer_size, None);
        let c = run(&["--zserver-stream=ipc:///r/c", "--ws-out-buffer-size=200000"]).unwrap();
        assert_eq!(c.ws_out_buffer_size, Some(200_000));
        assert!(run(&["--ws-out-buffer-size=100"]).is_err());
        assert!(HELP.contains("--ws-out-buffer-size"));
    }

    #[test]
    fn listen_grammar() {
        let l = parse_listen("8000").unwrap();
        assert_eq!(l.addr, ListenAddr::Tcp("0.0.0.0:8000".parse().unwrap()));
        let l = parse_listen("[::1]:9,req").unwrap();
        assert_eq!(
            (l.addr, l.mode),
            (ListenAddr::Tcp("[::1]:9".parse().unwrap()), Mode::Req)
        );
        let l = parse_listen("/tmp/s,local,stream").unwrap();
        assert_eq!(l.addr, ListenAddr::Local("/tmp/s".into()));
        assert!(parse_listen("8000,bogus").is_err());
        assert!(parse_listen("nope:x").is_err());
    }

    #[test]
    fn prometheus_flag_as_pushpin_connmgr() {
        let p = run(&["--prometheus", "9100"]).unwrap().prometheus.unwrap();
        assert_eq!(p.addr, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(p.prefix, "");
        let p = run(&["--prometheus=127.0.0.1:9100,prefix=pushpin_"])
            .unwrap()
            .prometheus
            .unwrap();
        assert_eq!(
            (p.addr, p.prefix.as_str()),
            ("127.0.0.1:9100".parse().unwrap(), "pushpin_")
        );
        assert!(run(&[]).unwrap().prometheus.is_none());
        for bad in ["x", "9100,bogus", "9100,prefix=1a", "9100,prefix=a-b"] {
            let e = run(&["--prometheus", bad]).unwrap_err();
            assert!(e.starts_with("--prometheus"), "{e}");
        }
    }

    #[test]
    fn endpoints_derive_like_condure() {
        let (a, b, c) = stream_endpoints("ipc://client").unwrap();
        assert_eq!(
            (a.as_str(), b.as_str(), c.as_str()),
            (
                "ipc://client-out",
                "ipc://client-out-stream",
                "ipc://client-in"
            )
        );
        let (a, b, c) = stream_endpoints("tcp://127.0.0.1:5000").unwrap();
        assert_eq!(
            (a.as_str(), b.as_str(), c.as_str()),
            (
                "tcp://127.0.0.1:5000",
                "tcp://127.0.0.1:5001",
                "tcp://127.0.0.1:5002"
            )
        );
    }

    #[test]
    fn mongrel2_command_line() {
        let c = run(&["config.sqlite", "f400bf85-4538"]).unwrap();
        assert_eq!(
            c.m2_db.as_deref(),
            Some(std::path::Path::new("config.sqlite"))
        );
        assert_eq!(c.m2_uuid.as_deref(), Some("f400bf85-4538"));
        let c = run(&["--runtime", "epoll", "--m2-db", "c.db", "--m2-uuid", "u"]).unwrap();
        assert_eq!((c.m2_db.is_some(), c.m2_uuid.as_deref()), (true, Some("u")));
        assert!(run(&["c.db", "u", "m.so"])
            .unwrap_err()
            .contains("config module"));
        assert!(run(&["c.db"]).is_err());
        assert!(run(&["--m2-uuid", "u"]).is_err());
        assert!(run(&["--m2-db", "c.db", "--m2-config", "m2.conf"]).is_err());
        assert!(run(&["--m2-db", "c.db", "--listen", "80"]).is_err());
        let argv = |a: &[&str]| parse_argv(a.iter().map(|s| s.to_string()));
        assert!(argv(&["/x/mongrel2"])
            .unwrap_err()
            .starts_with("usage: mongrel2"));
        assert!(matches!(
            argv(&["/x/mongrel2", "c.db", "u"]),
            Ok(Action::Run(_))
        ));
        assert!(matches!(argv(&["/x/zring"]), Ok(Action::Run(_))));
        assert!(invoked_as_mongrel2("/usr/local/bin/mongrel2"));
        assert!(invoked_as_mongrel2("mongrel2"));
        assert!(!invoked_as_mongrel2("/usr/bin/zring"));
    }

    #[test]
    fn config_file_options_come_before_the_command_line() {
        // Goal: `--config`'s lines are options (with or without `--`, `=` or a space, bare
        // flags, comments); the command line wins; `--listen` adds up; errors name the file.
        let dir = std::env::temp_dir().join(format!("zring-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zring.conf");
        std::fs::write(
            &path,
            "# options\nlog-level 3\n--workers=4\nlisten = 127.0.0.1:9000\n\nno-pin\n",
        )
        .unwrap();
        let p = path.display().to_string();
        let c = run(&["--config", &p, "--log-level", "1", "--listen", "9001"]).unwrap();
        assert_eq!((c.log_level, c.workers, c.pin), (1, 4, false));
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.config.as_deref(), Some(path.as_path()));
        let c = run(&[&format!("--config={p}")]).unwrap();
        assert_eq!(c.log_level, 3);
        std::fs::write(&path, "workers many\n").unwrap();
        assert!(run(&["--config", &p]).unwrap_err().starts_with("--workers"));
        std::fs::write(&path, "config other.conf\n").unwrap();
        assert!(run(&["--config", &p])
            .unwrap_err()
            .contains("cannot name another"));
        assert!(run(&["--config", "/nonexistent/zring.conf"])
            .unwrap_err()
            .starts_with("--config /nonexistent/zring.conf"));
        assert!(run(&["--takeover"])
            .unwrap_err()
            .contains("--takeover-socket"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_flags_are_one_line_errors() {
        for args in [
            &["--workers", "x"][..],
            &["--bogus"],
            &["--workers"],
            &["--runtime", "kqueue"],
            &["--compression-context", "none"],
            &["--id", "a b"],
        ] {
            let e = run(args).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
