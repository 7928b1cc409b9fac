//! The handler bridge: one thread owns every ZeroMQ socket (a zmq socket belongs to one
//! thread), as Condure's `zhttpsocket` thread does. Workers hand it encoded packets through
//! one bounded outbox; it decodes each handler packet once, wraps it in an `Arc`, and hands
//! that one allocation to every worker one of its ids names (list-form ids can span workers).
//!
//! Wake-ups are eventfds: workers write the bridge's after queueing a batch; the bridge
//! writes a worker's after queueing packets for it. zmq's `ZMQ_FD` is edge-style, so the
//! bridge drains every socket until EAGAIN (or a batch bound) before it polls again.
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use crate::config::Config;
use crate::conn::ConnId;
use crate::limits;
use crate::log;
use crate::m2serve::Setup;
use crate::proto::zhttp;

pub mod client;
pub mod m2;
pub mod m2control;
mod notify;

/// A handler address (`from`), at most 64 bytes.
pub type Addr = ArrayVec<u8, { limits::ADDRESS_BYTES_MAX }>;

/// Where an outgoing packet goes.
#[derive(Clone, Debug)]
pub enum Route {
    /// First packet of a stream session: PUSH, round-robin to any handler.
    Push,
    /// Later packets of a stream session: ROUTER, to the handler with this identity.
    Router(Addr),
    /// A req-mode request: DEALER.
    Dealer,
    /// Mongrel2 mode: a request for handler `n` (its PUSH socket).
    M2(u16),
    /// Client mode: a reply on PUB, to the requester with this address.
    Pub(Addr),
    /// Client mode, `router-resp`: a reply out of the in-stream ROUTER to this identity.
    ClientRouter(Addr),
    /// Client mode, req: a reply along the request's envelope.
    ClientReq(Arc<Vec<Vec<u8>>>),
}

/// An encoded packet (`T` + tnetstring) on its way to a handler.
#[derive(Debug)]
pub struct OutPacket {
    pub route: Route,
    pub data: Vec<u8>,
    /// A first packet no handler took by then is dropped, so a handler that connects after
    /// the client got its 503 never sees it.
    pub expires: Option<Instant>,
}

/// A handler packet, decoded once and shared by every connection it names.
pub struct InPacket {
    pub msg: zmq::Message,
    /// Offset of the `T` payload within `msg` (after the `"<id> "` address prefix).
    pub offset: usize,
    pub packet: zhttp::Packet,
    /// True when it came from the req-mode DEALER.
    pub req: bool,
}

impl InPacket {
    /// The payload the packet's spans index into.
    pub fn buf(&self) -> &[u8] {
        &self.msg[self.offset..]
    }
}

/// A non-blocking eventfd.
pub struct EventFd(RawFd);

impl EventFd {
    pub fn new() -> std::io::Result<EventFd> {
        // SAFETY: plain syscall with constant flags.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }
    pub fn fd(&self) -> RawFd {
        self.0
    }
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid local; EAGAIN (counter saturated) is harmless.
        unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
    }
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid local; EAGAIN when already drained is fine.
        unsafe { libc::read(self.0, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the fd and close it once.
        unsafe { libc::close(self.0) };
    }
}

/// One worker's inbox from the bridge.
pub struct Inbox {
    pub queue: Mutex<VecDeque<Arc<InPacket>>>,
    /// Packets ever pushed to `queue` (only the bridge pushes): where a handler-gone notice
    /// stands among them.
    pushed: AtomicU64,
    /// Handlers whose connection to the ROUTER went away, each with the `pushed` count when
    /// that was announced: the worker fails the handler's sessions once it has dispatched
    /// exactly that many packets, so every packet the handler sent before it died is handled
    /// first and none sent after (by a handler restarted under the same identity) is
    /// mistaken for the dead one's. One entry per handler (a later notice moves its mark);
    /// bounded, handler identities being few.
    pub gone: Mutex<ArrayVec<(Addr, u64), { limits::HANDLERS_GONE_MAX }>>,
    pub wake: EventFd,
    /// Set when `wake` was written and the worker has not started draining since: further
    /// packets need no further wake-up (one eventfd write per burst, not per packet).
    pub wake_pending: AtomicBool,
    /// The worker's open connections, read by its peers to balance accepts.
    pub conns: AtomicUsize,
    /// Idle connections the worker closed to make room at its connection limit, and new
    /// connections it answered `503` there (counters for metrics).
    pub evicted_idle: AtomicU64,
    pub refused_503: AtomicU64,
    /// Mongrel2 replies for this worker (empty outside Mongrel2 mode).
    pub m2: m2::Queue,
    /// A reloaded Mongrel2 setup (SIGHUP) for this worker's new connections, handed over
    /// by the bridge once the handler sockets it names are bound; `m2_setup_pending` says
    /// one is there without taking the lock on every wake-up.
    pub m2_setup: Mutex<Option<Arc<Setup>>>,
    pub m2_setup_pending: AtomicBool,
    /// A control port request for this worker (`m2control::Ask`), `m2_ask_pending` saying
    /// one is there; the worker posts its `m2_answer` and wakes the bridge.
    pub m2_ask: Mutex<Option<m2control::Ask>>,
    pub m2_ask_pending: AtomicBool,
    pub m2_answer: Mutex<Option<m2control::Answer>>,
    /// Client mode: requester packets for this worker's outbound sessions.
    pub client: Mutex<VecDeque<Arc<client::ClientIn>>>,
    /// Client mode: the resolver's answers for this worker.
    pub resolved: Mutex<Vec<crate::resolver::Answer>>,
}

impl Inbox {
    fn new() -> std::io::Result<Inbox> {
        Ok(Inbox {
            queue: Mutex::new(VecDeque::new()),
            pushed: AtomicU64::new(0),
            gone: Mutex::new(ArrayVec::new()),
            wake: EventFd::new()?,
            wake_pending: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            evicted_idle: AtomicU64::new(0),
            refused_503: AtomicU64::new(0),
            m2: Default::default(),
            m2_setup: Mutex::new(None),
            m2_setup_pending: AtomicBool::new(false),
            m2_ask: Mutex::new(None),
            m2_ask_pending: AtomicBool::new(false),
            m2_answer: Mutex::new(None),
            client: Mutex::new(VecDeque::new()),
            resolved: Mutex::new(Vec::new()),
        })
    }

    /// Wakes the worker unless a wake-up is already pending.
    pub fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.wake.notify();
        }
    }

    /// Queues a handler packet for the worker (the bridge, and the harness standing in for
    /// it). True when the queue has reached its bound: the bridge stops reading handlers.
    pub fn push(&self, item: Arc<InPacket>) -> bool {
        let mut q = self.queue.lock().unwrap();
        q.push_back(item);
        self.pushed.fetch_add(1, Ordering::Relaxed);
        q.len() >= limits::WORKER_INBOX_PACKETS_MAX
    }

    /// Queues a requester packet (client mode). True when the queue is at its bound.
    pub fn push_client(&self, item: Arc<client::ClientIn>) -> bool {
        let mut q = self.client.lock().unwrap();
        q.push_back(item);
        q.len() >= client::CLIENT_INBOX_MAX
    }

    /// Packets ever queued for the worker (see `pushed`).
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// Tells the worker that handler `addr` is gone, after every packet queued so far (the
    /// caller wakes it). False when the notice could not be queued (too many at once).
    pub fn handler_gone(&self, addr: &Addr) -> bool {
        // Read by the thread that pushes (the bridge): no packet can slip in between.
        let mark = self.pushed.load(Ordering::Relaxed);
        let mut gone = self.gone.lock().unwrap();
        if let Some(e) = gone.iter_mut().find(|(a, _)| a == addr) {
            e.1 = mark;
            return true;
        }
        gone.try_push((addr.clone(), mark)).is_ok()
    }
}

/// State shared by the bridge thread and the workers.
pub struct Shared {
    pub inboxes: Vec<Inbox>,
    outbox: Mutex<Vec<OutPacket>>,
    outbox_len: AtomicUsize,
    pub bridge_wake: EventFd,
    /// As `Inbox::wake_pending`, for the bridge.
    bridge_wake_pending: AtomicBool,
    /// Set by the signal handler thread (SIGINT, or a second SIGTERM): workers close every
    /// connection at once; the bridge flushes and exits once they are done.
    pub shutdown: AtomicBool,
    /// Set by the signal handler thread on the first SIGTERM: workers stop accepting and
    /// drain (`worker::Worker::start_drain`), cutting what is left at `--shutdown-timeout`.
    pub drain: AtomicBool,
    /// Set once a successor has taken the listening sockets (`takeover`): the metrics
    /// thread stops accepting on the listener it now shares with it.
    pub handed_over: AtomicBool,
    /// The access log writer and the target of `--access-log` (Mongrel2 mode: none; its
    /// servers' targets are in the setup). Set by `main` before the workers start.
    pub access_log: std::sync::OnceLock<(
        crate::access_log::AccessLog,
        Option<crate::access_log::Target>,
    )>,
    /// Set by the workers once they have queued their last packets.
    pub workers_done: AtomicUsize,
    /// A reloaded Mongrel2 setup with its new handlers' sockets, from the signal thread to
    /// the bridge (`Bridge::take_reload`).
    pub m2_reload: Mutex<Vec<m2::Reload>>,
    /// Every worker's and the bridge's counters (`metrics`), read by the scraper.
    pub metrics: crate::metrics::Metrics,
    /// Client mode's DNS queries, served by `resolver::spawn`'s threads.
    pub resolver: crate::resolver::Resolver,
    /// Client mode's TLS configurations (the CA store read once): set by `main` before the
    /// workers start.
    pub out_tls: std::sync::OnceLock<Arc<crate::tls::client::ClientTls>>,
}

impl Shared {
    pub fn new(workers: usize) -> std::io::Result<Arc<Shared>> {
        let mut inboxes = Vec::with_capacity(workers);
        for _ in 0..workers {
            inboxes.push(Inbox::new()?);
        }
        Ok(Arc::new(Shared {
            inboxes,
            outbox: Mutex::new(Vec::new()),
            outbox_len: AtomicUsize::new(0),
            bridge_wake: EventFd::new()?,
            bridge_wake_pending: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            drain: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            access_log: std::sync::OnceLock::new(),
            workers_done: AtomicUsize::new(0),
            m2_reload: Mutex::new(Vec::new()),
            metrics: crate::metrics::Metrics::new(workers),
            resolver: crate::resolver::Resolver::new(limits::DNS_QUEUE_MAX),
            out_tls: std::sync::OnceLock::new(),
        }))
    }

    /// Queues a worker's batch of packets with one lock and one wake-up.
    pub fn send_batch(&self, batch: &mut Vec<OutPacket>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        self.outbox.lock().unwrap().append(batch);
        self.outbox_len.fetch_add(n, Ordering::Relaxed);
        self.wake_bridge();
    }

    /// Wakes the bridge unless a wake-up is already pending.
    pub fn wake_bridge(&self) {
        if !self.bridge_wake_pending.swap(true, Ordering::SeqCst) {
            self.bridge_wake.notify();
        }
    }

    /// Packets in the outbox now.
    pub fn outbox_len(&self) -> usize {
        self.outbox_len.load(Ordering::Relaxed)
    }

    /// True when the outbox is over its bound: workers stop reading clients until it drains.
    pub fn outbox_full(&self) -> bool {
        self.outbox_len.load(Ordering::Relaxed) >= limits::BRIDGE_OUTBOX_PACKETS_MAX
    }

    /// Starts a bridge turn: clears the wake-pending flag before the bridge reads anything
    /// a wake-up announces (the outbox, `workers_done`). A worker changes that state first
    /// and then calls `wake_bridge`; so either this turn sees the change, or the worker finds
    /// the flag clear and writes the eventfd, and the turn's wait returns at once.
    ///
    /// Clearing it later in the turn (it was cleared when taking the outbox, after the
    /// `workers_done` check) lost the last worker's "done": the flag could still be set by a
    /// wake-up whose eventfd the bridge had already drained, so that worker wrote nothing,
    /// the flag was then cleared, and the bridge waited in `zmq_poll` with no timeout.
    fn begin_bridge_turn(&self) {
        self.bridge_wake_pending.store(false, Ordering::SeqCst);
    }

    /// Takes every queued batch (the bridge thread; the in-process harness of
    /// `conn::tests` reads the outbox the same way).
    pub(crate) fn take_outbox(&self, into: &mut Vec<OutPacket>) {
        let mut q = self.outbox.lock().unwrap();
        std::mem::swap(&mut *q, into);
        drop(q);
        self.outbox_len.fetch_sub(into.len(), Ordering::Relaxed);
    }
}

const HELD_KINDS: usize = 3;
const HELD_PUSH: usize = 0;
const HELD_ROUTER: usize = 1;
const HELD_DEALER: usize = 2;

// Held queues and the stall counters share their indices.
const _: () = assert!(HELD_PUSH == crate::metrics::ZmqSocket::Push as usize);
const _: () = assert!(HELD_ROUTER == crate::metrics::ZmqSocket::Router as usize);
const _: () = assert!(HELD_DEALER == crate::metrics::ZmqSocket::Dealer as usize);

fn held_kind(r: &Route) -> usize {
    match r {
        Route::Push => HELD_PUSH,
        Route::Router(_) => HELD_ROUTER,
        Route::Dealer => HELD_DEALER,
        Route::M2(_) | Route::Pub(_) => HELD_PUSH,
        Route::ClientRouter(_) => HELD_ROUTER,
        Route::ClientReq(_) => HELD_DEALER,
    }
}

/// The bridge's ZeroMQ sockets.
struct Sockets {
    push: Option<zmq::Socket>,
    router: Option<zmq::Socket>,
    sub: Option<zmq::Socket>,
    dealer: Option<zmq::Socket>,
    /// The ROUTER reports handlers connecting and disconnecting (`notify`).
    notify: bool,
}

/// The high-water mark of the bridge's sockets: Condure 1.9.1's 5 % of all connections, but
/// at least `ZMQ_HWM_MIN`. The messages in flight on a socket grow with the connections
/// that are busy at once (an echo is two ROUTER packets: the message, then credits), not
/// with the limit; and libzmq tells a writer about its reader's progress only every HWM/2
/// messages, so a pipe takes about half its HWM before it reports full.
fn hwm(cfg: &Config) -> i32 {
    ((cfg.req_maxconn + cfg.stream_maxconn) / 20).clamp(limits::ZMQ_HWM_MIN, 100_000) as i32
}

fn attach(sock: &zmq::Socket, spec: &str, connect: bool, cfg: &Config) -> Result<(), String> {
    let r = if connect {
        sock.connect(spec)
    } else {
        sock.bind(spec)
    };
    r.map_err(|e| {
        format!(
            "zmq {} {spec}: {e}",
            if connect { "connect" } else { "bind" }
        )
    })?;
    if let (false, Some(mode), Some(path)) =
        (connect, cfg.ipc_file_mode, spec.strip_prefix("ipc://"))
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {path}: {e}"))?;
    }
    Ok(())
}

/// The ZHTTP sockets (none in Mongrel2 mode: `m2`, whose handlers have their own).
fn open_sockets(ctx: &zmq::Context, cfg: &Config, m2: bool, hwm: i32) -> Result<Sockets, String> {
    use crate::config::Mode;
    let zerr = |e: zmq::Error| format!("zmq: {e}");
    let want = |m: Mode| cfg.listen.iter().any(|l| l.mode == m);
    let mut s = Sockets {
        push: None,
        router: None,
        sub: None,
        dealer: None,
        notify: false,
    };
    if m2 {
        return Ok(s); // Mongrel2 mode: only the handlers' sockets (`m2`)
    }
    if want(Mode::Stream) {
        let push = ctx.socket(zmq::PUSH).map_err(zerr)?;
        push.set_sndhwm(hwm).map_err(zerr)?;
        // Queue only to handlers that are connected now, so an unclaimed request stays
        // here, where it can expire, instead of waiting for the next handler to connect.
        push.set_immediate(true).map_err(zerr)?;
        push.set_linger(0).map_err(zerr)?;
        let mut router = ctx.socket(zmq::ROUTER).map_err(zerr)?;
        router.set_sndhwm(hwm).map_err(zerr)?;
        router.set_router_mandatory(true).map_err(zerr)?;
        // A handler that restarts under the same identity takes the routing id over. Without
        // this libzmq keeps the id on the dead peer's pipe and leaves the new connection
        // anonymous (it is identified again only when it sends, and handlers never send on
        // this socket), so every later packet to that handler met EHOSTUNREACH for good.
        router.set_router_handover(true).map_err(zerr)?;
        router.set_linger(0).map_err(zerr)?;
        // Each handler connecting and disconnecting, so its death is noticed at once
        // (`notify`); before the bind, so every peer is reported.
        s.notify = notify::enable(&mut router);
        if !s.notify {
            log!(
                log::WARN,
                "zhttp",
                "libzmq has no ZMQ_ROUTER_NOTIFY (built without its DRAFT API): a handler's \
                 death will be noticed only when its sessions expire"
            );
        }
        let sub = ctx.socket(zmq::SUB).map_err(zerr)?;
        // Handlers publish; a PUB drops what the pipe can't hold. A deep SUB queue absorbs
        // a handler's burst while workers catch up (memory is only used while it's full).
        sub.set_rcvhwm(hwm.max(limits::SUB_RCVHWM_MIN))
            .map_err(zerr)?;
        sub.set_subscribe(format!("{} ", cfg.id).as_bytes())
            .map_err(zerr)?;
        let mut binds = (Vec::new(), Vec::new(), Vec::new());
        for base in &cfg.zclient_stream {
            let (a, b, c) = crate::config::stream_endpoints(base)?;
            attach(&push, &a, cfg.zclient_connect, cfg)?;
            attach(&router, &b, cfg.zclient_connect, cfg)?;
            attach(&sub, &c, cfg.zclient_connect, cfg)?;
            binds.0.push(a);
            binds.1.push(b);
            binds.2.push(c);
        }
        let verb = if cfg.zclient_connect {
            "connect"
        } else {
            "bind"
        };
        log!(
            log::INFO,
            "zhttp",
            "zhttp client {verb} {} {} {}",
            binds.0.join(","),
            binds.1.join(","),
            binds.2.join(",")
        );
        s.push = Some(push);
        s.router = Some(router);
        s.sub = Some(sub);
    }
    if want(Mode::Req) {
        let dealer = ctx.socket(zmq::DEALER).map_err(zerr)?;
        dealer.set_sndhwm(hwm).map_err(zerr)?;
        dealer.set_rcvhwm(hwm).map_err(zerr)?;
        dealer.set_immediate(true).map_err(zerr)?;
        dealer.set_linger(0).map_err(zerr)?;
        for spec in &cfg.zclient_req {
            attach(&dealer, spec, cfg.zclient_connect, cfg)?;
        }
        log!(
            log::INFO,
            "zhttp",
            "zhttp req client {} {}",
            if cfg.zclient_connect {
                "connect"
            } else {
                "bind"
            },
            cfg.zclient_req.join(",")
        );
        s.dealer = Some(dealer);
    }
    Ok(s)
}

/// SIGHUP in Mongrel2 mode: binds the handlers `setup` adds to `running` (the setup the
/// last reload, or the start, produced) and queues it for the bridge, which adopts the
/// sockets and hands the setup to the workers. A bind error refuses the reload.
pub fn submit_m2_reload(
    ctx: &zmq::Context,
    shared: &Shared,
    cfg: &Config,
    setup: Arc<Setup>,
    running: &Setup,
) -> Result<(), String> {
    let reload = m2::prepare_reload(ctx, setup, running.handlers.len(), hwm(cfg))?;
    shared.m2_reload.lock().unwrap().push(reload);
    shared.bridge_wake.notify();
    Ok(())
}

/// Opens the sockets (so bind errors surface at startup) and returns the bridge to run.
pub fn start(cfg: &Config, m2: Option<Arc<Setup>>, shared: Arc<Shared>) -> Result<Bridge, String> {
    start_with_hwm(cfg, m2, shared, hwm(cfg))
}

/// As `start`, with `hwm` as every socket's high-water mark instead of `hwm(cfg)`: tests
/// drive a socket to its HWM with a few packets.
#[doc(hidden)]
pub fn start_with_hwm(
    cfg: &Config,
    m2: Option<Arc<Setup>>,
    shared: Arc<Shared>,
    hwm: i32,
) -> Result<Bridge, String> {
    let ctx = zmq::Context::new();
    let sockets = open_sockets(&ctx, cfg, m2.is_some(), hwm)?;
    let client = client::open(&ctx, cfg, hwm)?;
    let m2 = m2.map(|setup| m2::open(&ctx, setup, hwm)).transpose()?;
    shared
        .metrics
        .bridge
        .handlers_known
        .store(sockets.notify, Ordering::Relaxed);
    Ok(Bridge {
        ctx,
        sockets,
        client,
        m2,
        shared,
        batch: Vec::new(),
        held: Default::default(),
        wake_pending: Vec::new(),
        notices: notify::Notices::default(),
    })
}

pub struct Bridge {
    ctx: zmq::Context,
    sockets: Sockets,
    /// Client mode's sockets (none open without `--zserver-*`).
    client: client::ClientSockets,
    /// Mongrel2 mode's handler sockets.
    m2: Option<m2::M2Sockets>,
    shared: Arc<Shared>,
    batch: Vec<OutPacket>,
    /// Packets a socket could not take yet (no handler connected, HWM reached), in order,
    /// one queue per socket. Bounded: past the bound the bridge takes no more from the
    /// outbox, so the outbox fills and workers stop reading clients.
    held: [VecDeque<OutPacket>; HELD_KINDS],
    wake_pending: Vec<bool>,
    /// Handlers connected to the ROUTER, and deaths not announced yet.
    notices: notify::Notices,
}

impl Bridge {
    /// The ZeroMQ context, for a reload's new handler sockets (`m2::open_handlers`).
    pub fn context(&self) -> zmq::Context {
        self.ctx.clone()
    }

    /// Adopts a reload's handler sockets and setup, then hands the setup to every worker:
    /// a worker can name a new handler only once its sockets are here.
    fn take_reload(&mut self) {
        let reloads = std::mem::take(&mut *self.shared.m2_reload.lock().unwrap());
        let Some(m) = self.m2.as_mut() else {
            return;
        };
        // In order: each one's sockets extend the handler list the previous one left.
        let Some(setup) = reloads.into_iter().map(|r| m.adopt(r)).last() else {
            return;
        };
        for inbox in &self.shared.inboxes {
            *inbox.m2_setup.lock().unwrap() = Some(setup.clone());
            inbox.m2_setup_pending.store(true, Ordering::SeqCst);
            inbox.wake();
        }
    }

    /// Runs until shutdown: every worker done and the outbox flushed.
    pub fn run(mut self) {
        self.wake_pending = vec![false; self.shared.inboxes.len()];
        let mut exit_by = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            self.shared.begin_bridge_turn();
            self.take_reload();
            let exiting =
                self.shared.workers_done.load(Ordering::SeqCst) == self.shared.inboxes.len();
            if !exiting {
                exit_by = Instant::now() + SHUTDOWN_FLUSH;
            }
            self.flush_outbox();
            if exiting && (self.held_len() == 0 || Instant::now() >= exit_by) {
                break;
            }
            let inbox_full = self.deliver_inbound();
            let control_waiting = self
                .m2
                .as_mut()
                .is_some_and(|m| m.control_turn(&self.shared));
            self.announce_due_deaths();
            let stats = &self.shared.metrics.bridge;
            stats.held.set(self.held_len() as i64);
            stats
                .handlers_connected
                .set(self.notices.connected_count() as i64);
            // Timed wake-ups only where readiness can't tell: a ROUTER head waiting on one
            // peer while another is writable (`router_pollout_useful`), a full inbox, held
            // first packets that may expire, the exit deadline, and a handler's death
            // whose grace ends.
            let mut timeout_ms = if self.held_len() > 0 || inbox_full || exiting || control_waiting
            {
                limits::BRIDGE_RETRY_MS as i64
            } else {
                -1
            };
            let now = Instant::now();
            if let Some(at) = self.notices.next_check(now) {
                let ms = at.saturating_duration_since(now).as_millis() as i64 + 1;
                timeout_ms = if timeout_ms < 0 {
                    ms
                } else {
                    timeout_ms.min(ms)
                };
            }
            self.poll(timeout_ms, inbox_full);
        }
        log!(log::DEBUG, "zhttp", "bridge stopped");
    }

    fn poll(&mut self, timeout_ms: i64, inbox_full: bool) {
        let router_pollout = self.router_pollout_useful();
        let read = if inbox_full {
            zmq::PollEvents::empty()
        } else {
            zmq::POLLIN
        };
        // A socket holding packets is also polled for POLLOUT, so they go the moment it can
        // take them (libzmq acknowledges a pipe's reads lazily, every HWM/2 messages, so a
        // busy socket looks full for a moment), rather than after a fixed retry delay.
        let write = |k: usize| {
            if self.held[k].is_empty() {
                zmq::PollEvents::empty()
            } else {
                zmq::POLLOUT
            }
        };
        let mut items = Vec::with_capacity(4);
        items.push(zmq::PollItem::from_fd(
            self.shared.bridge_wake.fd(),
            zmq::POLLIN,
        ));
        if let Some(s) = &self.sockets.sub {
            items.push(s.as_poll_item(read));
        }
        if let Some(s) = &self.sockets.dealer {
            items.push(s.as_poll_item(read | write(HELD_DEALER)));
        }
        if let Some(s) = &self.sockets.push {
            items.push(s.as_poll_item(write(HELD_PUSH)));
        }
        if let Some(s) = &self.sockets.router {
            // Always POLLIN: its input is libzmq's notice of a handler connecting or going
            // away, and it wakes the bridge for the ROUTER's commands (a peer gone, a peer
            // connected), which `read_router` then completes.
            let write = if router_pollout {
                zmq::POLLOUT
            } else {
                zmq::PollEvents::empty()
            };
            items.push(s.as_poll_item(zmq::POLLIN | write));
        }
        if let Some(m) = &self.m2 {
            m.poll_items(&mut items, read, !self.held[HELD_PUSH].is_empty());
        }
        self.client.poll_items(&mut items, read);
        // zmq_poll checks each socket's ZMQ_EVENTS before it blocks, so a message that
        // arrived while we were busy is not missed despite ZMQ_FD being edge-style.
        let _ = zmq::poll(&mut items, timeout_ms);
        if items[0].is_readable() {
            self.shared.bridge_wake.drain();
        }
        self.read_router();
    }

    /// Reads the ROUTER until it is empty: handlers send nothing on this socket but for
    /// libzmq's connect/disconnect notices (`notify`), which are handled; anything else is
    /// dropped. Reading, like `zmq_poll` asking for its events, is also what ends a dead
    /// peer's pipe: libzmq ends it only once its reader takes the end mark queued behind
    /// its messages (`waiting_for_delimiter`). Until then the pipe keeps the routing id, the
    /// packets the peer will never take and, if full, answers EAGAIN; zring used to read
    /// the ROUTER's events only while it held ROUTER packets, so a dead handler's pipe
    /// could stay for good. Polled for POLLIN on every turn, the ROUTER also wakes the
    /// bridge for its commands (a peer gone, a peer connected), so a packet meets a gone
    /// peer's EHOSTUNREACH rather than its dead pipe as soon as libzmq knows.
    fn read_router(&mut self) {
        let Some(s) = &self.sockets.router else {
            return;
        };
        // Bounded: notices come two frames each, one per handler connection change.
        for _ in 0..limits::BRIDGE_BATCH_PACKETS_MAX {
            let Ok(id) = s.recv_msg(zmq::DONTWAIT) else {
                return;
            };
            let mut frames = 1;
            let mut notice = id.get_more();
            let mut more = id.get_more();
            // The rest of a multipart message is there at once (libzmq delivers it whole).
            while more {
                match s.recv_msg(zmq::DONTWAIT) {
                    Ok(m) => {
                        frames += 1;
                        notice &= m.is_empty() && frames == 2;
                        more = m.get_more();
                    }
                    Err(_) => break,
                }
            }
            if !notice {
                log!(
                    log::DEBUG,
                    "zhttp",
                    "dropping a message a handler sent on the ROUTER"
                );
                continue;
            }
            if let Some(addr) = self.notices.notice(&id, Instant::now()) {
                // Connected again: fail the old sessions before reading any packet of the
                // new handler (see `notify`).
                announce_death(&self.shared, &addr);
            }
        }
    }

    /// Announces the handlers whose death is due (see `notify::Notices::take_due`).
    fn announce_due_deaths(&mut self) {
        if !self.notices.any_pending() {
            return;
        }
        let sub_readable = self
            .sockets
            .sub
            .as_ref()
            .is_some_and(|s| s.get_events().is_ok_and(|e| e.contains(zmq::POLLIN)));
        let now = Instant::now();
        while let Some(addr) = self.notices.take_due(now, sub_readable) {
            announce_death(&self.shared, &addr);
        }
    }

    fn flush_outbox(&mut self) {
        let now = Instant::now();
        // Retry what each socket held first, keeping order per socket. Held packets of one
        // socket (no handler yet on PUSH) never block another socket's packets.
        for k in 0..HELD_KINDS {
            self.flush_held(k, now);
        }
        for _ in 0..limits::BRIDGE_BATCH_PACKETS_MAX {
            if self.held_len() >= limits::BRIDGE_OUTBOX_PACKETS_MAX {
                return; // the outbox fills and workers stop reading clients
            }
            self.shared.take_outbox(&mut self.batch);
            if self.batch.is_empty() {
                return;
            }
            let mut batch = std::mem::take(&mut self.batch);
            for p in batch.drain(..) {
                let k = held_kind(&p.route);
                if !self.held[k].is_empty() {
                    self.held[k].push_back(p);
                } else if let Some(p) = self.send(p, now) {
                    // Counted once per packet held, not per retry.
                    self.shared.metrics.bridge.hwm_stalls[k].inc();
                    self.held[k].push_back(p);
                }
            }
            self.batch = batch;
        }
        if self.shared.outbox_len.load(Ordering::Relaxed) > 0 {
            self.shared.wake_bridge();
        }
    }

    /// True when ROUTER packets are held and polling the ROUTER for POLLOUT will tell when
    /// they can go: libzmq raises it as soon as a peer's pipe drains below its HWM (the
    /// reader's `activate_write`). With `ROUTER_MANDATORY` it reports POLLOUT while *any*
    /// peer's pipe has room, so when the ROUTER is writable now the held head is retried
    /// here; if it still meets EAGAIN it waits on another peer, POLLOUT would wake the
    /// bridge at once, over and over, and the `BRIDGE_RETRY_MS` timer retries it instead.
    fn router_pollout_useful(&mut self) -> bool {
        loop {
            let held = self.held[HELD_ROUTER].len();
            let Some(s) = &self.sockets.router else {
                return false;
            };
            if held == 0 {
                return false;
            }
            match s.get_events() {
                Ok(ev) if !ev.contains(zmq::POLLOUT) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            self.flush_held(HELD_ROUTER, Instant::now());
            if self.held[HELD_ROUTER].len() == held {
                return false;
            }
        }
    }

    /// Sends what socket kind `k` held, in order, until it takes no more.
    fn flush_held(&mut self, k: usize, now: Instant) {
        while let Some(p) = self.held[k].pop_front() {
            if let Some(p) = self.send(p, now) {
                self.held[k].push_front(p);
                break;
            }
        }
    }

    fn held_len(&self) -> usize {
        self.held.iter().map(|h| h.len()).sum()
    }

    /// Sends one packet; gives it back if the socket cannot take it now.
    fn send(&mut self, p: OutPacket, now: Instant) -> Option<OutPacket> {
        if p.expires.is_some_and(|t| now >= t) {
            self.shared.metrics.bridge.requests_expired.inc();
            log!(
                log::DEBUG,
                "zhttp",
                "dropping a request no handler took in time"
            );
            return None;
        }
        let r = match &p.route {
            Route::Push => self
                .sockets
                .push
                .as_ref()
                .map(|s| s.send(&p.data[..], zmq::DONTWAIT)),
            Route::Dealer => self.sockets.dealer.as_ref().map(|s| {
                s.send(&b""[..], zmq::SNDMORE | zmq::DONTWAIT)
                    .and_then(|_| s.send(&p.data[..], zmq::DONTWAIT))
            }),
            Route::Router(addr) => self.sockets.router.as_ref().map(|s| {
                s.send(&addr[..], zmq::SNDMORE | zmq::DONTWAIT)
                    .and_then(|_| s.send(&b""[..], zmq::SNDMORE | zmq::DONTWAIT))
                    .and_then(|_| s.send(&p.data[..], zmq::DONTWAIT))
            }),
            Route::M2(h) => self.m2.as_ref().map(|m| m.send(*h, &p.data)),
            Route::Pub(_) | Route::ClientRouter(_) | Route::ClientReq(_) => {
                self.client.send(&p.route, &p.data)
            }
        };
        match r {
            Some(Ok(())) | None => {
                if log::enabled(log::TRACE) {
                    log!(
                        log::TRACE,
                        "zhttp",
                        "OUT {:?} {}",
                        p.route,
                        String::from_utf8_lossy(&p.data[..p.data.len().min(1000)])
                    );
                }
                None
            }
            // ROUTER EAGAIN: that peer's pipe is at its HWM (the packet waits for POLLOUT,
            // `router_pollout_useful`). PUSH/DEALER EAGAIN: at the HWM, or no handler yet.
            Some(Err(zmq::Error::EAGAIN)) => Some(p),
            Some(Err(zmq::Error::EHOSTUNREACH)) => {
                log!(
                    log::DEBUG,
                    "zhttp",
                    "no handler {:?} connected; packet dropped",
                    p.route
                );
                None
            }
            Some(Err(e)) => {
                log!(log::WARN, "zhttp", "zmq send failed: {e}");
                None
            }
        }
    }

    /// Reads handler packets and routes them to workers. Returns true when some inbox is
    /// full, so the bridge stops reading and ZeroMQ's HWM pushes back on handlers.
    fn deliver_inbound(&mut self) -> bool {
        let mut full = false;
        for req in [false, true] {
            for _ in 0..limits::BRIDGE_BATCH_PACKETS_MAX {
                if full {
                    break;
                }
                let sock = if req {
                    self.sockets.dealer.as_ref()
                } else {
                    self.sockets.sub.as_ref()
                };
                let Some(sock) = sock else { break };
                let msg = match sock.recv_msg(zmq::DONTWAIT) {
                    Ok(m) => m,
                    Err(_) => break,
                };
                if req && msg.get_more() {
                    // DEALER envelope: the empty delimiter, then the payload.
                    match sock.recv_msg(zmq::DONTWAIT) {
                        Ok(m) => full = self.route(m, 0, true),
                        Err(_) => break,
                    }
                    continue;
                }
                if req {
                    full = self.route(msg, 0, true);
                    continue;
                }
                let offset = match zhttp::split_address(&msg) {
                    Some((_, payload)) => msg.len() - payload.len(),
                    None => {
                        self.shared.metrics.bridge.zhttp_invalid.inc();
                        log!(
                            log::WARN,
                            "zhttp",
                            "dropping packet without an address prefix"
                        );
                        continue;
                    }
                };
                full = self.route(msg, offset, false);
            }
        }
        if let (Some(m), false) = (self.m2.as_mut(), full) {
            full = m.deliver(&self.shared, &mut self.wake_pending);
        }
        if !full {
            full = self.client.deliver(&self.shared, &mut self.wake_pending);
        }
        for (w, pending) in self.wake_pending.iter_mut().enumerate() {
            if std::mem::take(pending) {
                self.shared.inboxes[w].wake();
            }
        }
        full
    }

    fn route(&mut self, msg: zmq::Message, offset: usize, req: bool) -> bool {
        let stats = &self.shared.metrics.bridge;
        let packet = match zhttp::decode(&msg[offset..]) {
            Ok(p) => {
                stats.zhttp_in[p.kind as usize].inc();
                p
            }
            Err(e) => {
                stats.zhttp_invalid.inc();
                log!(log::WARN, "zhttp", "dropping bad handler packet: {e:?}");
                return false;
            }
        };
        if log::enabled(log::TRACE) {
            let b = &msg[offset..];
            log!(
                log::TRACE,
                "zhttp",
                "IN {}",
                String::from_utf8_lossy(&b[..b.len().min(1000)])
            );
        }
        let item = Arc::new(InPacket {
            msg,
            offset,
            packet,
            req,
        });
        let buf = item.buf();
        let mut targets = [false; 64];
        let mut extra: Vec<usize> = Vec::new();
        for (id, _) in item.packet.ids.iter() {
            match ConnId::worker_of(id.get(buf)) {
                Some(w) if w < self.shared.inboxes.len() => {
                    if w < targets.len() {
                        targets[w] = true;
                    } else if !extra.contains(&w) {
                        extra.push(w);
                    }
                }
                _ => log!(
                    log::DEBUG,
                    "zhttp",
                    "packet for unknown id {:?}",
                    String::from_utf8_lossy(id.get(buf))
                ),
            }
        }
        let mut full = false;
        let ws = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| **t)
            .map(|(w, _)| w)
            .chain(extra);
        for w in ws {
            full |= self.shared.inboxes[w].push(item.clone());
            self.wake_pending[w] = true;
        }
        full
    }
}

/// Tells every worker that handler `addr` is gone, after the packets queued so far.
fn announce_death(shared: &Shared, addr: &Addr) {
    log!(
        log::DEBUG,
        "zhttp",
        "handler {:?} gone: failing its sessions",
        String::from_utf8_lossy(addr)
    );
    for inbox in &shared.inboxes {
        if !inbox.handler_gone(addr) {
            log!(
                log::WARN,
                "zhttp",
                "too many handlers gone at once; sessions of {:?} will expire instead",
                String::from_utf8_lossy(addr)
            );
        }
        inbox.wake();
    }
}

/// How long the bridge keeps retrying held packets at shutdown.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(stream_maxconn: usize, req_maxconn: usize) -> Config {
        Config {
            stream_maxconn,
            req_maxconn,
            ..Config::default()
        }
    }

    #[test]
    fn bridge_hwm_has_a_floor_and_follows_condure_above_it() {
        // The defaults (10,000 + 100) keep Condure 1.9.1's 5 %.
        assert_eq!(hwm(&Config::default()), 505);
        assert_eq!(hwm(&cfg(100_000, 100)), 5_005);
        // Small limits no longer shrink the queues to a few messages.
        assert_eq!(hwm(&cfg(2_000, 100)), limits::ZMQ_HWM_MIN as i32);
        assert_eq!(hwm(&cfg(20, 2)), limits::ZMQ_HWM_MIN as i32);
        // Still bounded at the top.
        assert_eq!(hwm(&cfg(9_000_000, 100)), 100_000);
    }
}
