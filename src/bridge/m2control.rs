//! Mongrel2's control port (src/control.c): per served server a ZeroMQ REP socket bound at
//! its `control_port` (else the `control_port` setting, else `ipc://run/control`), owned by
//! the bridge thread like every other ZeroMQ socket. Requests are parsed and answered by
//! `proto::m2::control`; what needs the connections (`status what=net`, `kill`) is asked
//! of the workers through their inboxes ([`Ask`]) and answered when every worker asked has
//! posted its [`Answer`]. A worker builds its part of the table a bounded number of slots
//! per turn (`worker::m2`), so a large table never stalls its connections, and the bridge
//! never waits: while a request is out, that port is not read (REP: one at a time) and the
//! other sockets are served as usual.
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use crate::log;
use crate::m2serve::Setup;
use crate::proto::m2::control::{self, Command, Signal};

/// What the bridge asks a worker on behalf of a control request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// The rows of `status what=net` for server `server`'s connections.
    Net { server: u16 },
    /// Close connection `id` if it is server `server`'s.
    Kill { server: u16, id: u32 },
}

/// A worker's answer to an [`Ask`].
#[derive(Debug)]
pub enum Answer {
    /// Rendered `status what=net` rows (`control::encode_net_row`), concatenated.
    Net(Vec<u8>),
    /// Whether a connection with that id was there (and is now closing).
    Kill(bool),
}

/// Longest the bridge waits for the workers' answers before replying with what it has: a
/// worker answers within a few turns, so this only bites when one is stopping.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(2);
/// Requests one port answers per bridge turn without the workers (bounded work per turn).
const REQUESTS_PER_TURN_MAX: usize = 16;
/// How long a reply may wait in a closing control socket (`control_stop`, exit).
const LINGER_MS: i32 = 200;

struct Port {
    sock: Option<zmq::Socket>,
    server: u16,
}

/// A request waiting for the workers.
struct Pending {
    port: usize,
    ask: Ask,
    /// Workers that have not answered yet.
    waiting: Vec<bool>,
    rows: Vec<u8>,
    killed: bool,
    since: Instant,
}

/// The control sockets and the request out with the workers (at most one at a time).
pub struct Control {
    ports: Vec<Port>,
    pending: Option<Pending>,
}

/// The spec server `s` listens on for control requests (`Control_task`).
fn spec_of(setup: &Setup, s: usize) -> String {
    let server = &setup.servers[s].server;
    if !server.control_port.is_empty() {
        return server.control_port.clone();
    }
    setup
        .settings
        .iter()
        .find(|(k, _)| k == "control_port")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "ipc://run/control".to_string())
}

/// Binds every served server's control port; servers sharing a spec share the first one's
/// socket. A bind that fails is logged and the server runs without it, as Mongrel2's
/// control task exits and leaves the server running.
pub fn open(ctx: &zmq::Context, setup: &Setup) -> Control {
    let mut ports = Vec::new();
    let mut specs: Vec<String> = Vec::new();
    for s in 0..setup.servers.len() {
        let spec = spec_of(setup, s);
        if specs.contains(&spec) {
            continue;
        }
        specs.push(spec.clone());
        let sock = ctx.socket(zmq::REP).and_then(|sock| {
            sock.set_linger(LINGER_MS)?;
            sock.bind(&spec)?;
            Ok(sock)
        });
        match sock {
            Ok(sock) => {
                log!(log::INFO, "m2", "Setting up control socket in at {spec}");
                ports.push(Port {
                    sock: Some(sock),
                    server: s as u16,
                });
            }
            Err(e) => log!(
                log::ERROR,
                "m2",
                "Failed to bind control port to {spec}: {e}; running without it"
            ),
        }
    }
    Control {
        ports,
        pending: None,
    }
}

impl Control {
    /// Adds the sockets to read to a poll set: none while a request is out (its answer
    /// comes through the bridge's wake-up).
    pub fn poll_items<'a>(&'a self, items: &mut Vec<zmq::PollItem<'a>>) {
        if self.pending.is_some() {
            return;
        }
        for p in &self.ports {
            if let Some(sock) = &p.sock {
                items.push(sock.as_poll_item(zmq::POLLIN));
            }
        }
    }

    /// One bridge turn: finishes the request out with the workers when they have all
    /// answered, then reads new requests until one needs the workers.
    pub fn turn(&mut self, shared: &Shared, setup: &Setup) {
        if self.pending.is_some() && !self.collect(shared, setup) {
            return;
        }
        for port in 0..self.ports.len() {
            for _ in 0..REQUESTS_PER_TURN_MAX {
                let Some(sock) = &self.ports[port].sock else {
                    break;
                };
                let Ok(msg) = sock.recv_bytes(zmq::DONTWAIT) else {
                    break;
                };
                self.request(shared, setup, port, &msg);
                if self.pending.is_some() {
                    return;
                }
            }
        }
    }

    fn reply(&mut self, port: usize, bytes: &[u8]) {
        if let Some(sock) = &self.ports[port].sock {
            if let Err(e) = sock.send(bytes, zmq::DONTWAIT) {
                log!(log::WARN, "m2", "control port: reply not sent: {e}");
            }
        }
    }

    fn request(&mut self, shared: &Shared, setup: &Setup, port: usize, msg: &[u8]) {
        let server = self.ports[port].server;
        let command = match control::parse_request(msg) {
            Ok(c) => c,
            Err(canned) => {
                log!(log::WARN, "m2", "control port: refused a request");
                return self.reply(port, canned);
            }
        };
        let mut out = Vec::with_capacity(256);
        let info = &setup.servers[server as usize].server;
        match command {
            Command::Help => out.extend_from_slice(control::HELP),
            Command::Time => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                control::encode_time(&mut out, now);
            }
            Command::Uuid => control::encode_basic(&mut out, "uuid", info.uuid.as_bytes()),
            Command::Info => control::encode_info(
                &mut out,
                &control::Info {
                    port: i64::from(info.port),
                    bind_addr: &info.bind_addr,
                    uuid: &info.uuid,
                    chroot: &info.chroot,
                    access_log: &info.access_log,
                    error_log: &info.error_log,
                    pid_file: &info.pid_file,
                    default_hostname: &info.default_host,
                },
            ),
            Command::StatusTasks => tasks(&mut out, shared.inboxes.len()),
            Command::Signal(s) => {
                let sig = match s {
                    Signal::Stop => libc::SIGINT,
                    Signal::Reload => libc::SIGHUP,
                    Signal::Terminate => libc::SIGTERM,
                };
                // To the process, not this thread (which blocks them): main's sigwait.
                // SAFETY: kill(2) on our own pid with a valid signal number.
                let rc = unsafe { libc::kill(libc::getpid(), sig) };
                match rc {
                    0 => control::encode_basic(&mut out, "msg", b"signal sent to server"),
                    _ => out.extend_from_slice(control::SIGNAL_FAILED),
                }
            }
            Command::ControlStop => {
                control::encode_basic(&mut out, "msg", b"stopping the control port");
                self.reply(port, &out);
                log!(log::INFO, "m2", "Control port exiting.");
                self.ports[port].sock = None; // closed; the reply lingers out
                return;
            }
            Command::StatusNet => return self.ask(shared, port, Ask::Net { server }, None),
            Command::Kill(id) => {
                let worker = (id % setup.workers.max(1)) as usize;
                return self.ask(shared, port, Ask::Kill { server, id }, Some(worker));
            }
        }
        self.reply(port, &out);
    }

    /// Puts `ask` in the inbox of `only` (or of every worker) and waits for the answers.
    fn ask(&mut self, shared: &Shared, port: usize, ask: Ask, only: Option<usize>) {
        let mut waiting = vec![false; shared.inboxes.len()];
        for (w, inbox) in shared.inboxes.iter().enumerate() {
            if only.is_some_and(|o| o != w) {
                continue;
            }
            waiting[w] = true;
            *inbox.m2_answer.lock().unwrap() = None;
            *inbox.m2_ask.lock().unwrap() = Some(ask);
            inbox.m2_ask_pending.store(true, Ordering::SeqCst);
            inbox.wake();
        }
        self.pending = Some(Pending {
            port,
            ask,
            waiting,
            rows: Vec::new(),
            killed: false,
            since: Instant::now(),
        });
    }

    /// Takes the answers that came; replies once all have (or the wait ran out). True when
    /// nothing is out any more.
    fn collect(&mut self, shared: &Shared, _setup: &Setup) -> bool {
        let Some(p) = self.pending.as_mut() else {
            return true;
        };
        for (w, waiting) in p.waiting.iter_mut().enumerate() {
            if !*waiting {
                continue;
            }
            let Some(answer) = shared.inboxes[w].m2_answer.lock().unwrap().take() else {
                continue;
            };
            *waiting = false;
            match answer {
                Answer::Net(rows) => p.rows.extend_from_slice(&rows),
                Answer::Kill(found) => p.killed |= found,
            }
        }
        let late = p.since.elapsed() >= ANSWER_WAIT_MAX;
        if p.waiting.iter().any(|&w| w) && !late {
            return false;
        }
        if late {
            log!(
                log::WARN,
                "m2",
                "control port: a worker did not answer; replying with what came"
            );
            for (w, waiting) in p.waiting.iter().enumerate() {
                if *waiting {
                    // Withdrawn: a late answer must not be taken for the next request's.
                    shared.inboxes[w].m2_ask.lock().unwrap().take();
                }
            }
        }
        let p = self.pending.take().expect("checked above");
        let mut out = Vec::with_capacity(p.rows.len() + 160);
        match p.ask {
            Ask::Net { .. } => control::encode_table(&mut out, control::NET_HEADERS, &p.rows),
            Ask::Kill { .. } if p.killed => control::encode_basic(&mut out, "status", b"OK"),
            Ask::Kill { .. } => out.extend_from_slice(control::INVALID_ARGUMENT),
        }
        self.reply(p.port, &out);
        true
    }

    /// True while the bridge should come back within `ANSWER_WAIT_MAX` even without a
    /// wake-up (a request is out).
    pub fn waiting(&self) -> bool {
        self.pending.is_some()
    }
}

/// `status what=tasks`: Mongrel2 lists its coroutines; zring lists its threads (the bridge,
/// which answers, as Mongrel2's `control` task is `running`; then each worker).
fn tasks(out: &mut Vec<u8>, workers: usize) {
    let mut rows = Vec::with_capacity(64 * (workers + 1));
    control::encode_task_row(
        &mut rows,
        &control::TaskRow {
            id: 1,
            system: false,
            name: "control",
            state: "read handler",
            status: "running",
        },
    );
    for w in 0..workers {
        let name = format!("worker-{w}");
        control::encode_task_row(
            &mut rows,
            &control::TaskRow {
                id: w as i64 + 2,
                system: false,
                name: &name,
                state: "read fd",
                status: "idle",
            },
        );
    }
    control::encode_table(out, control::TASK_HEADERS, &rows);
}
