//! The client engine: threads that each own many io_uring rings. Every client socket is a
//! direct descriptor (`IORING_OP_SOCKET` with `IORING_FILE_INDEX_ALLOC`) in its ring's
//! registered file table, so no socket takes a slot in the process fd table (capped at
//! 20,000 here) and each ring's table stays under that cap. A client is 24 bytes
//! (`Client`); a buffer is taken from the ring's provided-buffer ring only while data is
//! being read, and a connection being set up borrows one of a few `Pending` entries.
//!
//! Ring groups: 0 = the clients of the server under test, 1 = the floor's clients, 2 = the
//! floor's server side (accepted sockets the floor sender writes to).
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::bufring::BufRing;
use crate::proto::{self, Event, FrameParser};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Ws,
    Http,
}

/// What the engine needs from the command line.
pub struct Config {
    pub mode: Mode,
    pub http_get: bool,
    pub path: String,
    pub idle_path: String,
    pub targets: Vec<SocketAddrV4>,
    pub src_ips: Vec<Ipv4Addr>,
    pub connect_timeout: Duration,
    pub bufs: u16,
    pub buf_size: u32,
    /// Connections being set up at once per ring (the `Pending` entries).
    pub inflight: u16,
    /// Connects per second, per thread.
    pub rate_per_thread: f64,
    /// `--deflate`: offer permessage-deflate (as browsers do), inflate what arrives and
    /// check its text; the floor's clients expect the floor's pre-compressed frame.
    pub deflate: bool,
    /// `--payload`: the size every inflated fan-out text must have.
    pub payload: usize,
    /// `--tls`: the clients of the server under test speak TLS (rustls, verifying the
    /// server as `localhost` against `--ca`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `--tls` with a floor: the floor's server side (zring's own configuration), whose
    /// clients are TLS clients as `tls` configures them.
    pub floor_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Counters of one client group.
#[derive(Default)]
pub struct Group {
    pub attempts: AtomicU64,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    /// Closed by the server (or a protocol error) after being connected.
    pub closed: AtomicU64,
    /// Of `connected` and `closed`: the fan-out members.
    pub members_connected: AtomicU64,
    pub members_closed: AtomicU64,
}

/// One thread's arrivals in a round: (round, latencies in µs, the target index of each).
pub type RoundLatencies = (u32, Vec<u32>, Vec<u8>);

/// Errors kept for the report: the first few messages, the rest only counted.
const ERRORS_KEPT: usize = 8;

pub struct Shared {
    pub cfg: Config,
    pub stop: AtomicBool,
    /// Group being connected: 0 none, 1 = group 0, 2 = group 1 (and group 2 accepting).
    pub connecting: AtomicU8,
    pub groups: [Group; 2],
    pub protocol_errors: AtomicU64,
    pub errors: Mutex<Vec<String>>,
    /// The fan-out round being measured (0: none); messages of other rounds count as late.
    pub round: AtomicU32,
    pub received: AtomicU64,
    pub late: AtomicU64,
    pub dups: AtomicU64,
    pub pings: AtomicU64,
    /// Per thread: (round, arrival latencies in µs, the target index of each), handed to
    /// the coordinator.
    pub lat: Vec<Mutex<RoundLatencies>>,
    /// Per `--target`: fan-out members connected, and of those closed (as `Group`'s).
    pub target_members_connected: Vec<AtomicU64>,
    pub target_members_closed: Vec<AtomicU64>,
    /// The floor: the listening socket, accepted count, and the send trigger.
    pub floor_listen_fd: AtomicI32,
    pub floor_port: AtomicU32,
    pub floor_accepted: AtomicU64,
    /// Accepted floor sockets ready for a round: all of them, or with TLS those whose
    /// handshake is done (a round expects this many).
    pub floor_ready: AtomicU64,
    pub floor_accept_errors: AtomicU64,
    /// `--tls`: the cipher suite the first client of each group (0: the server under
    /// test's, 1: the floor's) negotiated.
    pub tls_suites: Mutex<[Option<String>; 2]>,
    pub floor_round: AtomicU32,
    pub floor_frame: Mutex<Vec<u8>>,
    pub floor_sent: AtomicU64,
    pub floor_send_errors: AtomicU64,
    /// One eventfd per thread: its rings' completions and the coordinator both write it.
    pub wake: Vec<RawFd>,
    pub ready: AtomicU32,
    /// Set to close every floor socket (`--floor-first`); threads count themselves done.
    pub close_floor: AtomicBool,
    pub floor_closed_threads: AtomicU32,
    pub fatal: Mutex<Option<String>>,
    pub ring_bytes: AtomicU64,
}

impl Shared {
    pub fn new(cfg: Config, threads: usize) -> std::io::Result<Shared> {
        let targets = cfg.targets.len();
        assert!(targets <= TARGETS_MAX);
        let mut wake = Vec::new();
        for _ in 0..threads {
            // SAFETY: plain syscall.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            wake.push(fd);
        }
        Ok(Shared {
            cfg,
            stop: AtomicBool::new(false),
            connecting: AtomicU8::new(0),
            groups: Default::default(),
            protocol_errors: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            round: AtomicU32::new(0),
            received: AtomicU64::new(0),
            late: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            lat: (0..threads)
                .map(|_| Mutex::new((0, Vec::new(), Vec::new())))
                .collect(),
            target_members_connected: (0..targets).map(|_| AtomicU64::new(0)).collect(),
            target_members_closed: (0..targets).map(|_| AtomicU64::new(0)).collect(),
            floor_listen_fd: AtomicI32::new(-1),
            floor_port: AtomicU32::new(0),
            floor_accepted: AtomicU64::new(0),
            floor_ready: AtomicU64::new(0),
            floor_accept_errors: AtomicU64::new(0),
            tls_suites: Mutex::new([None, None]),
            floor_round: AtomicU32::new(0),
            floor_frame: Mutex::new(Vec::new()),
            floor_sent: AtomicU64::new(0),
            floor_send_errors: AtomicU64::new(0),
            wake,
            ready: AtomicU32::new(0),
            close_floor: AtomicBool::new(false),
            floor_closed_threads: AtomicU32::new(0),
            fatal: Mutex::new(None),
            ring_bytes: AtomicU64::new(0),
        })
    }

    pub fn wake_all(&self) {
        for &fd in &self.wake {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a local to our eventfd; EAGAIN (saturated) is fine.
            unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        }
    }

    pub fn error(&self, msg: String) {
        let mut e = self.errors.lock().unwrap();
        if e.len() < ERRORS_KEPT && !e.contains(&msg) {
            e.push(msg);
        }
    }
}

/// One ring to create: its id (spreads addresses), group, how many sockets it should hold,
/// and its registered table size.
#[derive(Clone, Copy, Debug)]
pub struct RingSpec {
    pub id: u32,
    pub group: u8,
    pub target: u32,
    pub table: u32,
    /// Group 0: how many of `target` are fan-out members (on `path`); the rest connect to
    /// `idle_path` and only stay connected.
    pub members: u32,
}

// Operations, in the top byte of user_data; the generation of the slot and the slot (file
// index) below. A completion whose generation is not the slot's current one belongs to a
// socket that is gone and is dropped (its buffer returned).
const OP_SOCKET: u8 = 1;
const OP_SETUP: u8 = 2;
const OP_CONNECT: u8 = 3;
const OP_SEND: u8 = 4;
const OP_RECV: u8 = 5;
const OP_CANCEL: u8 = 6;
const OP_CLOSE: u8 = 7;
const OP_ACCEPT: u8 = 8;
const OP_FLOOR_SEND: u8 = 9;
/// The TLS floor's server side reading its handshakes.
const OP_FLOOR_RECV: u8 = 10;

fn ud(op: u8, gen: u16, slot: u32) -> u64 {
    (u64::from(op) << 56) | (u64::from(gen) << 32) | u64::from(slot)
}

const FREE: u8 = 0;
const CONNECTING: u8 = 1;
const HANDSHAKE: u8 = 2;
const OPEN: u8 = 3;
const DEAD: u8 = 4;

const REARM_QUEUED: u8 = 1;
/// The client connected to the fan-out path (and counts in a round's expected total).
const MEMBER: u8 = 2;
/// permessage-deflate was agreed: compressed messages are inflated.
const DEFLATE: u8 = 4;
/// With DEFLATE: the server takes over its context (no `server_no_context_takeover` in its
/// answer), so the client keeps an inflater of its own (`Ring::inflaters`).
const TAKEOVER: u8 = 8;
/// The client's `--target` index lives in the flags above this shift (4 bits).
const TARGET_SHIFT: u8 = 4;
/// Targets a run may spread its clients over (the index must fit the flags).
pub const TARGETS_MAX: usize = 1 << (8 - TARGET_SHIFT);
const _: () = assert!(
    REARM_QUEUED < 1 << TARGET_SHIFT
        && MEMBER < 1 << TARGET_SHIFT
        && DEFLATE < 1 << TARGET_SHIFT
        && TAKEOVER < 1 << TARGET_SHIFT
);

/// A client: 24 bytes, whatever its state.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Client {
    parser: FrameParser,
    gen: u16,
    /// Last fan-out round this client received (duplicates are counted, not measured).
    last_round: u16,
    state: u8,
    flags: u8,
    /// The `Pending` entry while connecting.
    pend: u16,
}

const _: () = assert!(std::mem::size_of::<Client>() == 24);

/// A connection being set up: its addresses (read by the kernel at submission), request
/// bytes (read by the SEND), WebSocket key and the response head read so far.
struct Pending {
    used: bool,
    slot: u32,
    started: Instant,
    src: libc::sockaddr_in,
    dst: libc::sockaddr_in,
    req: Vec<u8>,
    key: [u8; 24],
    head: Vec<u8>,
    body_left: usize,
    member: bool,
    /// Index of `dst` in `--target`.
    target: u8,
}

/// `--tls`: room for a client's handshake flights and its upgrade request, appended in
/// `Pending::req` (ClientHello ~0.3 KiB; Finished and the request ~0.3 KiB).
const TLS_FLIGHTS_BYTES: usize = 4096;

/// Largest response head (plus body, in http mode) a handshake may take.
const HEAD_MAX: usize = 8192;

static ONE: libc::c_int = 1;

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// `setsockopt(IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)` on a direct descriptor: the bind
/// then takes no port, and connect picks one unique per destination, so one source address
/// serves ~64k connections to every server port.
fn setsockopt_no_port(slot: u32) -> squeue::Entry {
    setsockopt(
        slot,
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        (&ONE as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>(),
    )
}

/// `SO_LINGER` {on, 0}: the close that follows resets the connection, so neither end stays
/// in TIME_WAIT. The floor's pairs close this way: 100,000 TIME_WAIT entries left in the
/// kernel's connection hash would slow every lookup during the fan-out measured next.
static LINGER_RESET: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};

fn setsockopt_linger_reset(slot: u32) -> squeue::Entry {
    setsockopt(
        slot,
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        (&LINGER_RESET as *const libc::linger).cast(),
        std::mem::size_of::<libc::linger>(),
    )
}

/// `setsockopt` on a direct descriptor, as an `IORING_OP_URING_CMD`
/// (`SOCKET_URING_OP_SETSOCKOPT`, kernel ≥ 6.7). `value` must be static.
fn setsockopt(
    slot: u32,
    level: libc::c_int,
    name: libc::c_int,
    value: *const libc::c_void,
    len: usize,
) -> squeue::Entry {
    const SOCKET_URING_OP_SETSOCKOPT: u32 = 3;
    let level_name = (level as u32 as u64) | ((name as u32 as u64) << 32);
    let mut cmd = [0u8; 16];
    cmd[..8].copy_from_slice(&(value as u64).to_le_bytes());
    let e = opcode::UringCmd16::new(types::Fixed(slot), SOCKET_URING_OP_SETSOCKOPT)
        .addr(Some(level_name))
        .cmd(cmd)
        .build();
    // The builder has no field for `optlen` (bytes 44..48 of the SQE, shared with
    // file_index), so it is patched into the raw entry.
    // SAFETY: `Entry` is `repr(C)` over the 64-byte `io_uring_sqe`.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(e) };
    raw[44..48].copy_from_slice(&(len as u32).to_le_bytes());
    // SAFETY: as above; any byte pattern is a valid SQE value.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

const SQ_ENTRIES: u32 = 1024;
const SQ_ENTRIES_FLOOR: u32 = 4096;
const CQ_ENTRIES: u32 = 8192;
const BUF_GROUP: u16 = 0;
/// SENDs per submit for the floor, between which the thread reads what arrived (as a
/// server would interleave its sends with its other work).
const FLOOR_BATCH: usize = 4096;

struct Ring {
    // Declared first, dropped first: the kernel stops using the buffer ring with it.
    ring: IoUring,
    bufs: BufRing,
    spec: RingSpec,
    clients: Vec<Client>,
    pend: Vec<Pending>,
    free: Vec<u16>,
    /// Slots whose multishot recv ended (no buffer left) and must be re-armed; a slot is in
    /// it at most once (REARM_QUEUED), so it is bounded by the table.
    rearm: Vec<u32>,
    /// Group 2: accepted sockets, and whether a multishot accept is armed.
    accepted: Vec<u32>,
    accept_armed: bool,
    /// Sockets created so far (group 0/1).
    attempts: u32,
    /// permessage-deflate: the inflater of every client without context takeover (reset
    /// per message), its output, compressed messages split over reads (by slot, until
    /// whole; rare: fan-out messages are small), and the inflaters of clients whose server
    /// takes over its context (47 KiB each: for small runs only).
    inflater: proto::Inflater,
    inflated: Vec<u8>,
    partial: std::collections::HashMap<u32, Vec<u8>>,
    inflaters: std::collections::HashMap<u32, Box<proto::Inflater>>,
    /// `--tls`: each client's rustls connection, by slot (empty without TLS), and the
    /// plaintext of the read being handled.
    tls: Vec<Option<Box<rustls::ClientConnection>>>,
    plain: Vec<u8>,
    /// Group 2 with `--tls`: each accepted socket's server session (by slot); the records
    /// sealed for the round being sent (one per client, sent from here: the buffer is
    /// reserved for the whole round so no queued SEND's bytes move); handshake flight
    /// buffers of finished handshakes, kept until the next round (a SEND may still point
    /// into them).
    floor_tls: Vec<Option<Box<FloorTls>>>,
    sealed: Vec<u8>,
    retired: Vec<Vec<u8>>,
    /// This ring has reported its clients' cipher suite (`Shared::tls_suites`).
    suite_noted: bool,
}

/// The TLS floor's server side of one pair: zring's own session over rustls, the bytes
/// its last `feed` left unconsumed, and the handshake flights it wrote (sent from here).
struct FloorTls {
    session: zring::tls::Session,
    unconsumed: Vec<u8>,
    out: Vec<u8>,
    ready: bool,
}

/// Room for the floor server's handshake flights (ServerHello to Finished with one P-256
/// leaf, then its session tickets: ~1.5 KiB), appended in `FloorTls::out`.
const FLOOR_TLS_FLIGHTS_BYTES: usize = 4096;

/// Where the bytes `on_data` handles are: a provided buffer, or `Ring::plain` (decrypted).
#[derive(Clone, Copy)]
enum Src {
    Buf(u16, usize),
    Plain,
}

fn source<'a>(bufs: &'a BufRing, plain: &'a [u8], src: Src) -> &'a [u8] {
    match src {
        Src::Buf(bid, len) => bufs.data(bid, len),
        Src::Plain => plain,
    }
}

/// Completions copied out of the ring before they are handled.
#[derive(Clone, Copy)]
struct Cqe {
    ud: u64,
    res: i32,
    flags: u32,
}

fn errno_name(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

impl Ring {
    fn new(spec: RingSpec, cfg: &Config, wake: RawFd) -> std::io::Result<Ring> {
        let sq = if spec.group == 2 {
            SQ_ENTRIES_FLOOR
        } else {
            SQ_ENTRIES
        };
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(sq)?;
        ring.submitter().register_files_sparse(spec.table)?;
        ring.submitter().register_eventfd(wake)?;
        let (count, size) = if spec.group == 2 && cfg.floor_tls.is_none() {
            (1, 64) // the floor's server side reads nothing (but TLS handshakes)
        } else {
            (cfg.bufs, cfg.buf_size)
        };
        let bufs = BufRing::new(&ring, count, size, BUF_GROUP)?;
        let pend = if spec.group == 2 { 0 } else { cfg.inflight };
        Ok(Ring {
            ring,
            bufs,
            spec,
            clients: vec![Client::default(); spec.table as usize],
            pend: (0..pend)
                .map(|_| Pending {
                    used: false,
                    slot: 0,
                    started: Instant::now(),
                    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
                    src: unsafe { std::mem::zeroed() },
                    // SAFETY: as above.
                    dst: unsafe { std::mem::zeroed() },
                    req: Vec::with_capacity(512),
                    key: [0; 24],
                    head: Vec::new(),
                    body_left: 0,
                    member: false,
                    target: 0,
                })
                .collect(),
            free: (0..pend).rev().collect(),
            rearm: Vec::new(),
            accepted: Vec::new(),
            accept_armed: false,
            attempts: 0,
            inflater: proto::Inflater::default(),
            inflated: if cfg.deflate {
                vec![0; proto::INFLATED_BYTES_MAX]
            } else {
                Vec::new()
            },
            partial: Default::default(),
            inflaters: Default::default(),
            tls: match (&cfg.tls, spec.group) {
                (Some(_), 0) => (0..spec.table).map(|_| None).collect(),
                (Some(_), 1) if cfg.floor_tls.is_some() => (0..spec.table).map(|_| None).collect(),
                _ => Vec::new(),
            },
            plain: Vec::new(),
            floor_tls: match (&cfg.floor_tls, spec.group) {
                (Some(_), 2) => (0..spec.table).map(|_| None).collect(),
                _ => Vec::new(),
            },
            sealed: Vec::new(),
            retired: Vec::new(),
            suite_noted: false,
        })
    }

    fn memory(&self) -> usize {
        self.bufs.bytes()
            + self.clients.capacity() * std::mem::size_of::<Client>()
            + self.pend.len() * (std::mem::size_of::<Pending>() + 512)
    }

    /// Queues one SQE, submitting first if the queue is full.
    fn push(&mut self, e: &squeue::Entry) {
        loop {
            // SAFETY: every pointer an entry carries (addresses, request bytes, frames,
            // the setsockopt value) points into memory that outlives the operation: the
            // `Pending` entries and frames are never moved or freed while the ring lives.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return;
            }
            self.submit();
        }
    }

    fn submit(&mut self) {
        match self.ring.submit() {
            Ok(_) => {}
            // The CQ is full of overflowed completions: the caller reaps, then submits again.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => {
                // Not the server's doing: the ring itself is broken. Say so and stop.
                eprintln!(
                    "zring-load: FAILED: io_uring_enter on ring {}: {e}",
                    self.spec.id
                );
                std::process::exit(1);
            }
        }
    }

    /// Starts one connection: a socket straight into the table, at a slot the kernel picks.
    fn start_connect(&mut self, sh: &Shared) -> bool {
        let Some(p) = self.free.pop() else {
            return false;
        };
        let cfg = &sh.cfg;
        let targets = cfg.targets.len().max(1);
        // Targets in turn (round-robin, as DNS or an L4 balancer would spread clients).
        let attempt = self.attempts as usize + self.spec.id as usize;
        let target = attempt % targets;
        // Sources spread over the addresses; counted per target turn, so each target sees
        // every source address (1031 is prime: the walk visits them all).
        let n = (attempt / targets) * 1031 + self.spec.id as usize;
        self.attempts += 1;
        let src = cfg.src_ips[n % cfg.src_ips.len()];
        let dst = if self.spec.group == 1 {
            let port = sh.floor_port.load(Ordering::Relaxed) as u16;
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
        } else {
            cfg.targets[target]
        };
        let member = self.attempts <= self.spec.members;
        let pe = &mut self.pend[p as usize];
        pe.used = true;
        pe.member = member;
        pe.target = target as u8;
        pe.slot = u32::MAX;
        pe.started = Instant::now();
        pe.src = sockaddr(SocketAddrV4::new(src, 0));
        pe.dst = sockaddr(dst);
        pe.head.clear();
        pe.body_left = 0;
        let e = opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
            .file_index(Some(types::DestinationSlot::auto_target()))
            .build()
            .user_data(ud(OP_SOCKET, 0, u32::from(p)));
        self.push(&e);
        sh.groups[self.spec.group as usize]
            .attempts
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    fn free_pending(&mut self, p: u16) {
        let pe = &mut self.pend[p as usize];
        if pe.used {
            pe.used = false;
            if pe.head.capacity() > HEAD_MAX {
                pe.head = Vec::new();
            }
            self.free.push(p);
        }
    }

    /// Drops a socket: cancels what is in flight on it (a multishot recv holds the socket
    /// open otherwise), then closes the table slot.
    fn kill(&mut self, slot: u32) {
        let c = &mut self.clients[slot as usize];
        let gen = c.gen;
        let was = c.state;
        c.state = DEAD;
        if c.flags & DEFLATE != 0 {
            self.partial.remove(&slot);
            self.inflaters.remove(&slot);
        }
        if let Some(tls) = self.tls.get_mut(slot as usize) {
            *tls = None;
        }
        if was == CONNECTING || was == HANDSHAKE {
            let p = c.pend;
            self.free_pending(p);
        }
        // Each op that may wait is cancelled by its user_data, which the kernel finds in a
        // hash table; a cancel by descriptor walks every request of the ring, which made
        // closing a whole ring quadratic (tens of seconds for 100,000 clients).
        let waiting: &[u8] = match was {
            CONNECTING => &[OP_CONNECT],
            HANDSHAKE => &[OP_SEND, OP_RECV],
            OPEN => &[OP_RECV],
            _ => &[],
        };
        for &op in waiting {
            let cancel = opcode::AsyncCancel::new(ud(op, gen, slot))
                .build()
                .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
                .user_data(ud(OP_CANCEL, gen, slot));
            self.push(&cancel);
        }
        self.close_file(slot, gen);
    }

    fn close_file(&mut self, slot: u32, gen: u16) {
        let close = opcode::Close::new(types::Fixed(slot))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(ud(OP_CLOSE, gen, slot));
        self.push(&close);
    }

    fn fail(&mut self, sh: &Shared, slot: u32, why: &str) {
        let st = self.clients[slot as usize].state;
        if st == DEAD || st == FREE {
            return;
        }
        let g = &sh.groups[self.spec.group as usize];
        if st == OPEN {
            g.closed.fetch_add(1, Ordering::Relaxed);
            let flags = self.clients[slot as usize].flags;
            if flags & MEMBER != 0 {
                g.members_closed.fetch_add(1, Ordering::Relaxed);
                if self.spec.group == 0 {
                    sh.target_members_closed[usize::from(flags >> TARGET_SHIFT)]
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            g.failed.fetch_add(1, Ordering::Relaxed);
        }
        sh.error(why.to_string());
        self.kill(slot);
    }

    fn arm_recv(&mut self, slot: u32) {
        let gen = self.clients[slot as usize].gen;
        let e = opcode::RecvMulti::new(types::Fixed(slot), BUF_GROUP)
            .build()
            .user_data(ud(OP_RECV, gen, slot));
        self.push(&e);
    }

    /// The client is set up: it now only waits for frames.
    fn opened(&mut self, sh: &Shared, slot: u32) {
        let c = &mut self.clients[slot as usize];
        c.state = OPEN;
        if self.spec.group == 1 && sh.cfg.deflate {
            // The floor's frame is compressed without context, as zring's shared mode.
            c.flags |= DEFLATE;
        }
        let p = c.pend;
        let g = &sh.groups[self.spec.group as usize];
        let pe = &self.pend[p as usize];
        if pe.member {
            c.flags |= MEMBER;
            g.members_connected.fetch_add(1, Ordering::Relaxed);
            if self.spec.group == 0 {
                c.flags |= pe.target << TARGET_SHIFT;
                sh.target_members_connected[usize::from(pe.target)].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.free_pending(p);
        g.connected.fetch_add(1, Ordering::Relaxed);
    }

    fn on_socket(&mut self, sh: &Shared, p: u16, res: i32) {
        if res < 0 {
            sh.groups[self.spec.group as usize]
                .failed
                .fetch_add(1, Ordering::Relaxed);
            sh.error(format!("socket: {}", errno_name(-res)));
            self.free_pending(p);
            return;
        }
        let slot = res as u32;
        let Some(c) = self.clients.get_mut(slot as usize) else {
            // Cannot happen (the table is this size); a kernel that did it gets a failure.
            sh.groups[self.spec.group as usize]
                .failed
                .fetch_add(1, Ordering::Relaxed);
            self.free_pending(p);
            return;
        };
        let gen = c.gen.wrapping_add(1);
        *c = Client {
            gen,
            state: CONNECTING,
            pend: p,
            ..Client::default()
        };
        let pe = &mut self.pend[p as usize];
        pe.slot = slot;
        let (src, dst) = (
            &pe.src as *const libc::sockaddr_in as *const libc::sockaddr,
            &pe.dst as *const libc::sockaddr_in as *const libc::sockaddr,
        );
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let link = squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS;
        self.push(
            &setsockopt_no_port(slot)
                .flags(link)
                .user_data(ud(OP_SETUP, gen, slot)),
        );
        self.push(
            &opcode::Bind::new(types::Fixed(slot), src, len)
                .build()
                .flags(link)
                .user_data(ud(OP_SETUP, gen, slot)),
        );
        self.push(
            &opcode::Connect::new(types::Fixed(slot), dst, len)
                .build()
                .user_data(ud(OP_CONNECT, gen, slot)),
        );
    }

    fn on_connect(&mut self, sh: &Shared, slot: u32) {
        let floor = self.spec.group == 1;
        let raw_or_idle = (floor && sh.cfg.floor_tls.is_none())
            || (sh.cfg.mode == Mode::Http && !sh.cfg.http_get);
        self.arm_recv(slot);
        if raw_or_idle {
            return self.opened(sh, slot);
        }
        let c = &mut self.clients[slot as usize];
        c.state = HANDSHAKE;
        let gen = c.gen;
        let p = c.pend as usize;
        let cfg = &sh.cfg;
        if let (true, Some(config)) = (floor, cfg.tls.as_ref()) {
            // A TLS floor client: the handshake only (no upgrade); open once it is done.
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
            let mut conn = match rustls::ClientConnection::new(config.clone(), name) {
                Ok(conn) => Box::new(conn),
                Err(e) => return self.fail(sh, slot, &format!("tls: {e}")),
            };
            let pe = &mut self.pend[p];
            pe.req.clear();
            pe.req.reserve(TLS_FLIGHTS_BYTES);
            while conn.wants_write() {
                conn.write_tls(&mut pe.req).expect("writing to a Vec");
            }
            self.tls[slot as usize] = Some(conn);
            return self.send_req(slot, gen, p, 0);
        }
        let pe = &mut self.pend[p];
        let host = std::net::SocketAddr::V4(unsafe_dst(&pe.dst));
        let path = if pe.member { &cfg.path } else { &cfg.idle_path };
        pe.req.clear();
        if cfg.mode == Mode::Ws {
            // A key per connection: base64 of 16 bytes from the ring, slot and generation.
            let mut raw = [0u8; 16];
            raw[..4].copy_from_slice(&self.spec.id.to_le_bytes());
            raw[4..8].copy_from_slice(&slot.to_le_bytes());
            raw[8..10].copy_from_slice(&gen.to_le_bytes());
            raw[10..16].copy_from_slice(b"zring!");
            pe.key.copy_from_slice(&proto::base64(&raw));
            pe.req.extend_from_slice(
                format!(
                    "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
                    path
                )
                .as_bytes(),
            );
            pe.req.extend_from_slice(&pe.key);
            if cfg.deflate {
                // What browsers offer.
                pe.req.extend_from_slice(
                    b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                );
            }
            pe.req.extend_from_slice(b"\r\n\r\n");
        } else {
            pe.req.extend_from_slice(
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
            );
        }
        if let Some(config) = cfg.tls.as_ref().filter(|_| self.spec.group == 0) {
            // The request waits in rustls until the handshake is done; the ClientHello
            // goes now.
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
            let mut conn = match rustls::ClientConnection::new(config.clone(), name) {
                Ok(conn) => Box::new(conn),
                Err(e) => return self.fail(sh, slot, &format!("tls: {e}")),
            };
            let pe = &mut self.pend[p];
            let written = std::io::Write::write_all(&mut conn.writer(), &pe.req);
            assert!(written.is_ok(), "rustls buffers early plaintext");
            pe.req.clear();
            // Room for every flight of the handshake (they are appended, see `decrypt`).
            pe.req.reserve(TLS_FLIGHTS_BYTES);
            while conn.wants_write() {
                conn.write_tls(&mut pe.req).expect("writing to a Vec");
            }
            self.tls[slot as usize] = Some(conn);
        }
        self.send_req(slot, gen, p, 0);
    }

    /// Sends `pend[p].req[start..]`. The buffer is rewritten only when the connection is
    /// set up again, long after the kernel copied it.
    fn send_req(&mut self, slot: u32, gen: u16, p: usize, start: usize) {
        let pe = &self.pend[p];
        let bytes = &pe.req[start..];
        let e = opcode::Send::new(types::Fixed(slot), bytes.as_ptr(), bytes.len() as u32)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(ud(OP_SEND, gen, slot));
        self.push(&e);
    }

    /// `--tls`: ciphertext from the server into rustls; the plaintext into `Ring::plain`
    /// (returned), and during the handshake what rustls answers sent at once.
    fn decrypt(&mut self, slot: u32, src: Src) -> Result<Vec<u8>, String> {
        let mut conn = self.tls[slot as usize].take().expect("a TLS client");
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let mut input = source(&self.bufs, &[], src);
        let mut result = Ok(());
        // Bounded: each pass consumes input (rustls takes what its buffer can) or stops.
        while !input.is_empty() && result.is_ok() {
            result = match conn.read_tls(&mut input) {
                Ok(0) => Err("tls: no progress".to_string()),
                Ok(_) => conn
                    .process_new_packets()
                    .map(|_| ())
                    .map_err(|e| format!("tls: {e}")),
                Err(e) => Err(format!("tls read: {e}")),
            };
            let mut chunk = [0u8; 16 * 1024];
            while result.is_ok() {
                match std::io::Read::read(&mut conn.reader(), &mut chunk) {
                    Ok(0) => result = Err("tls: close_notify from the server".into()),
                    Ok(n) => plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => result = Err(format!("tls: {e}")),
                }
            }
        }
        let client = self.clients[slot as usize];
        if result.is_ok() && client.state == HANDSHAKE && conn.wants_write() {
            // Appended, never overwritten: a SEND of an earlier flight may still wait in
            // the submission queue (two reads in one batch), pointing into this buffer.
            let p = client.pend as usize;
            let pe = &mut self.pend[p];
            let (start, capacity) = (pe.req.len(), pe.req.capacity());
            while conn.wants_write() {
                conn.write_tls(&mut pe.req).expect("writing to a Vec");
            }
            if pe.req.capacity() != capacity {
                // Moved under a queued SEND: cannot happen within TLS_FLIGHTS_BYTES.
                result = Err("tls: handshake flights larger than their buffer".into());
            } else {
                self.send_req(slot, client.gen, p, start);
            }
        }
        self.tls[slot as usize] = Some(conn);
        result.map(|()| plain)
    }

    /// A TLS client whose handshake just finished: its suite noted (once per ring), and a
    /// floor client opened (it has no upgrade to wait for).
    fn tls_handshake_done(&mut self, sh: &Shared, slot: u32) {
        if self.clients[slot as usize].state != HANDSHAKE {
            return;
        }
        let Some(conn) = self.tls[slot as usize].as_ref() else {
            return;
        };
        if conn.is_handshaking() {
            return;
        }
        if !self.suite_noted {
            self.suite_noted = true;
            let suite = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()));
            let mut suites = sh.tls_suites.lock().unwrap();
            let noted = &mut suites[usize::from(self.spec.group.min(1))];
            if noted.is_none() {
                *noted = suite;
            }
        }
        if self.spec.group == 1 {
            self.opened(sh, slot);
        }
    }

    /// Data for a client still in its handshake: collect the head (and, in http mode, the
    /// body), check it; returns the bytes after it (frames) on success.
    fn on_handshake_data(&mut self, sh: &Shared, slot: u32, data: &[u8]) -> Option<usize> {
        let p = self.clients[slot as usize].pend as usize;
        let pe = &mut self.pend[p];
        if pe.body_left > 0 {
            // http mode: the rest of a body.
            let take = pe.body_left.min(data.len());
            pe.body_left -= take;
            if pe.body_left == 0 {
                self.opened(sh, slot);
                return Some(take);
            }
            return None;
        }
        let before = pe.head.len();
        pe.head
            .extend_from_slice(&data[..data.len().min(HEAD_MAX - before)]);
        let Some(end) = proto::head_end(&pe.head) else {
            if pe.head.len() >= HEAD_MAX {
                self.fail(sh, slot, "response head larger than 8 KiB");
            }
            return None;
        };
        let used = end - before; // bytes of `data` that were head
        let checked = match sh.cfg.mode {
            Mode::Ws => proto::check_ws_head(&pe.head[..end], &pe.key).map(|()| 0),
            Mode::Http => proto::check_http_head(&pe.head[..end]),
        };
        let checked = match (checked, sh.cfg.mode == Mode::Ws && sh.cfg.deflate) {
            (Ok(body), true) => match proto::deflate_answer(&pe.head[..end]) {
                Err(why) => Err(why),
                Ok(takeover) => {
                    let c = &mut self.clients[slot as usize];
                    c.flags |= DEFLATE | if takeover { TAKEOVER } else { 0 };
                    Ok(body)
                }
            },
            (other, _) => other,
        };
        match checked {
            Err(why) => {
                let status = pe.head[..end]
                    .split(|&b| b == b'\r')
                    .next()
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .unwrap_or_default();
                self.fail(sh, slot, &format!("{why}: {status}"));
                None
            }
            Ok(body) => {
                let take = body.min(data.len() - used);
                if take < body {
                    self.pend[p].body_left = body - take;
                    return None;
                }
                self.opened(sh, slot);
                Some(used + take)
            }
        }
    }

    fn on_recv(&mut self, sh: &Shared, st: &mut ThreadStats, c: Cqe) {
        let slot = (c.ud & 0xffff_ffff) as u32;
        let gen = ((c.ud >> 32) & 0xffff) as u16;
        let bid = cqueue::buffer_select(c.flags);
        let live = self
            .clients
            .get(slot as usize)
            .is_some_and(|cl| cl.gen == gen && matches!(cl.state, HANDSHAKE | OPEN));
        if live && c.res > 0 {
            if let Some(bid) = bid {
                let src = Src::Buf(bid, c.res as usize);
                if self.tls.get(slot as usize).is_some_and(Option::is_some) {
                    match self.decrypt(slot, src) {
                        Ok(plain) => {
                            self.plain = plain;
                            self.tls_handshake_done(sh, slot);
                            if !self.plain.is_empty() {
                                self.on_data(sh, st, slot, Src::Plain);
                            }
                        }
                        Err(why) => self.fail(sh, slot, &why),
                    }
                } else {
                    self.on_data(sh, st, slot, src);
                }
            }
        }
        if let Some(bid) = bid {
            self.bufs.put(bid);
        }
        let live = self
            .clients
            .get(slot as usize)
            .is_some_and(|cl| cl.gen == gen && matches!(cl.state, HANDSHAKE | OPEN));
        if !live {
            return;
        }
        if c.res == 0 {
            return self.fail(sh, slot, "closed by the server");
        }
        if c.res < 0 && c.res != -libc::ENOBUFS {
            return self.fail(sh, slot, &format!("recv: {}", errno_name(-c.res)));
        }
        if !cqueue::more(c.flags) {
            // Out of buffers (or the kernel ended the multishot): arm again after this
            // batch, when buffers are back.
            let cl = &mut self.clients[slot as usize];
            if cl.flags & REARM_QUEUED == 0 {
                cl.flags |= REARM_QUEUED;
                self.rearm.push(slot);
            }
        }
    }

    fn on_data(&mut self, sh: &Shared, st: &mut ThreadStats, slot: u32, src: Src) {
        let size = source(&self.bufs, &self.plain, src).len();
        let mut at = 0;
        if self.clients[slot as usize].state == HANDSHAKE {
            // Copy out of the buffer ring borrow: handshake data is rare and small.
            let data = source(&self.bufs, &self.plain, src).to_vec();
            match self.on_handshake_data(sh, slot, &data) {
                Some(used) => at = used,
                None => return,
            }
        }
        if at >= size {
            return;
        }
        if sh.cfg.mode == Mode::Http && self.spec.group == 0 {
            sh.protocol_errors.fetch_add(1, Ordering::Relaxed);
            return self.fail(sh, slot, "unexpected bytes on an idle HTTP connection");
        }
        let client = self.clients[slot as usize];
        let mut parser = client.parser;
        let deflate = client.flags & DEFLATE != 0;
        let mut events: [Option<Event>; 8] = Default::default();
        let mut n_ev = 0;
        let mut texts: [Option<Event>; 8] = Default::default();
        let mut n_texts = 0;
        let mut overflow = false;
        let mut texts_overflow = false;
        let mut inflate_error = None;
        let data = source(&self.bufs, &self.plain, src);
        let (partial, inflaters) = (&mut self.partial, &mut self.inflaters);
        let (shared_inflater, inflated) = (&mut self.inflater, &mut self.inflated);
        let payload_bytes = sh.cfg.payload;
        let res = parser.feed(
            &data[at..],
            deflate,
            |e| {
                if n_ev < events.len() {
                    events[n_ev] = Some(e);
                    n_ev += 1;
                } else {
                    overflow = true; // more than 8 frames in one read: only counted below
                }
            },
            |piece, end| {
                // A message whole in this read is inflated straight from the buffer; one
                // split over reads is gathered first.
                let held = partial.get_mut(&slot);
                let message: std::borrow::Cow<[u8]> = match (held, end) {
                    (None, true) => piece.into(),
                    (Some(buf), true) => {
                        buf.extend_from_slice(piece);
                        partial.remove(&slot).unwrap_or_default().into()
                    }
                    (Some(buf), false) => return buf.extend_from_slice(piece),
                    (None, false) => {
                        partial.insert(slot, piece.to_vec());
                        return;
                    }
                };
                let inflater = match client.flags & TAKEOVER != 0 {
                    true => &mut **inflaters.entry(slot).or_default(),
                    false => &mut *shared_inflater,
                };
                let fresh = client.flags & TAKEOVER == 0;
                let text = match inflater.message(&message, fresh, inflated) {
                    Ok(n) => &inflated[..n],
                    Err(why) => return inflate_error = Some(why),
                };
                if !proto::payload_ok(text, payload_bytes) {
                    return inflate_error = Some("inflated text is not the payload sent");
                }
                let (round, ts_ns) = proto::text_fields(text);
                if n_texts < texts.len() {
                    texts[n_texts] = Some(Event::Text { round, ts_ns });
                    n_texts += 1;
                } else {
                    texts_overflow = true;
                }
            },
        );
        self.clients[slot as usize].parser = parser;
        if let Err(why) = res {
            sh.protocol_errors.fetch_add(1, Ordering::Relaxed);
            return self.fail(sh, slot, why);
        }
        if let Some(why) = inflate_error {
            sh.protocol_errors.fetch_add(1, Ordering::Relaxed);
            return self.fail(sh, slot, why);
        }
        if overflow || texts_overflow {
            st.overflow += 1;
        }
        let events = events.into_iter().take(n_ev);
        for e in events.chain(texts.into_iter().take(n_texts)).flatten() {
            match e {
                Event::Text { round, ts_ns } => {
                    let cl = &mut self.clients[slot as usize];
                    let current = sh.round.load(Ordering::Relaxed);
                    if round != current || round == 0 {
                        st.late += 1;
                    } else if cl.last_round == round as u16 {
                        st.dups += 1;
                    } else {
                        cl.last_round = round as u16;
                        let now = realtime_ns();
                        let target = cl.flags >> TARGET_SHIFT;
                        st.record(round, target, now.saturating_sub(ts_ns) / 1000);
                    }
                }
                Event::Ping => st.pings += 1,
                Event::Close => return self.fail(sh, slot, "close frame from the server"),
            }
        }
    }

    fn on_accept(&mut self, sh: &Shared, c: Cqe) {
        if c.res >= 0 {
            let slot = c.res as u32;
            self.accepted.push(slot);
            sh.floor_accepted.fetch_add(1, Ordering::Relaxed);
            match (&sh.cfg.floor_tls, self.floor_tls.get_mut(slot as usize)) {
                (Some(config), Some(entry)) => {
                    *entry = Some(Box::new(FloorTls {
                        session: zring::tls::Session::new(config.clone()),
                        unconsumed: Vec::new(),
                        out: Vec::with_capacity(FLOOR_TLS_FLIGHTS_BYTES),
                        ready: false,
                    }));
                    self.clients[slot as usize].flags = 0;
                    self.arm_floor_recv(slot);
                }
                _ => {
                    sh.floor_ready.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else if c.res != -libc::ECANCELED {
            sh.floor_accept_errors.fetch_add(1, Ordering::Relaxed);
            sh.error(format!("floor accept: {}", errno_name(-c.res)));
        }
        if !cqueue::more(c.flags) {
            self.accept_armed = false;
        }
    }

    fn arm_floor_recv(&mut self, slot: u32) {
        let e = opcode::RecvMulti::new(types::Fixed(slot), BUF_GROUP)
            .build()
            .user_data(ud(OP_FLOOR_RECV, 0, slot));
        self.push(&e);
    }

    /// Group 2 with TLS: a handshake's bytes into the socket's server session; its answer
    /// sent from `FloorTls::out`, and the socket counted ready once the handshake is done.
    fn on_floor_recv(&mut self, sh: &Shared, c: Cqe) {
        let slot = (c.ud & 0xffff_ffff) as u32;
        let bid = cqueue::buffer_select(c.flags);
        let mut failed = None;
        let mut send = None;
        if let (Some(bid), true) = (bid, c.res > 0) {
            if let Some(Some(ft)) = self.floor_tls.get_mut(slot as usize) {
                ft.unconsumed
                    .extend_from_slice(self.bufs.data(bid, c.res as usize));
                let (start, capacity) = (ft.out.len(), ft.out.capacity());
                let mut plain = Vec::new();
                match ft.session.feed(&mut ft.unconsumed, &mut plain, &mut ft.out) {
                    Ok(fed) => {
                        ft.unconsumed.drain(..fed.consumed);
                    }
                    Err(e) => failed = Some(format!("floor tls: {e}")),
                }
                if ft.out.capacity() != capacity {
                    // Moved under a queued SEND: cannot happen within the flights' room.
                    failed = Some("floor tls: handshake flights larger than their buffer".into());
                } else if ft.out.len() > start {
                    send = Some((ft.out[start..].as_ptr(), ft.out.len() - start));
                }
                if failed.is_none() && !ft.ready && !ft.session.is_handshaking() {
                    ft.ready = true;
                    sh.floor_ready.fetch_add(1, Ordering::Relaxed);
                    // Freed at the next round, when every SEND from it is long done.
                    self.retired.push(std::mem::take(&mut ft.out));
                }
            }
        }
        if let Some(bid) = bid {
            self.bufs.put(bid);
        }
        if let Some((ptr, len)) = send {
            let e = opcode::Send::new(types::Fixed(slot), ptr, len as u32)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(ud(OP_FLOOR_SEND, 0, slot));
            self.push(&e);
        }
        if let Some(why) = failed {
            sh.floor_send_errors.fetch_add(1, Ordering::Relaxed);
            sh.error(why);
            return;
        }
        let alive = self
            .floor_tls
            .get(slot as usize)
            .is_some_and(Option::is_some);
        // A multishot recv ends when the buffers ran out: armed again after this batch.
        if alive && !cqueue::more(c.flags) && (c.res > 0 || c.res == -libc::ENOBUFS) {
            let cl = &mut self.clients[slot as usize];
            if cl.flags & REARM_QUEUED == 0 {
                cl.flags |= REARM_QUEUED;
                self.rearm.push(slot);
            }
        }
    }

    /// Group 2: keep one multishot accept armed until this ring has its share, then cancel
    /// it so the table never fills (a full table would drop accepted connections).
    fn manage_accept(&mut self, sh: &Shared) {
        let fd = sh.floor_listen_fd.load(Ordering::Relaxed);
        if fd < 0 || sh.connecting.load(Ordering::Relaxed) != 2 {
            return;
        }
        let want = (self.accepted.len() as u32) < self.spec.target;
        if want && !self.accept_armed {
            let e = opcode::AcceptMulti::new(types::Fd(fd))
                .allocate_file_index(true)
                .build()
                .user_data(ud(OP_ACCEPT, 0, 0));
            self.push(&e);
            self.accept_armed = true;
        } else if !want && self.accept_armed {
            let e = opcode::AsyncCancel::new(ud(OP_ACCEPT, 0, 0))
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(ud(OP_CANCEL, 0, 0));
            self.push(&e);
            self.accept_armed = false;
        }
    }

    /// Group 2: the floor sender. The same frame to accepted sockets `from..` (at most
    /// `FLOOR_BATCH`), batched SENDs on registered files, no completion unless one fails.
    /// Returns where the next batch starts.
    ///
    /// With TLS each socket gets the frame sealed into a record by its own session (zring's
    /// `Session::encrypt`, as zring seals a message per client), appended to `sealed`.
    fn floor_send(&mut self, sh: &Shared, frame: &[u8], from: usize) -> usize {
        let to = (from + FLOOR_BATCH).min(self.accepted.len());
        let tls = !self.floor_tls.is_empty();
        if tls && from == 0 {
            self.retired.clear();
            self.sealed.clear();
            // Records of at most 16 KiB of plaintext, each with a header, content type and
            // tag (≤ 29 bytes in TLS 1.3 and 1.2): room for the whole round, reserved once.
            let per_client = frame.len() + 64 * (frame.len() / 16_384 + 1);
            self.sealed.reserve(self.accepted.len() * per_client);
        }
        let mut sent = 0u64;
        for i in from..to {
            let slot = self.accepted[i];
            let (ptr, len) = if tls {
                let Some(Some(ft)) = self.floor_tls.get_mut(slot as usize) else {
                    continue;
                };
                if !ft.ready {
                    continue;
                }
                let (start, capacity) = (self.sealed.len(), self.sealed.capacity());
                let res = ft
                    .session
                    .encrypt(&mut ft.unconsumed, frame, &mut self.sealed);
                if let Err(e) = res {
                    sh.floor_send_errors.fetch_add(1, Ordering::Relaxed);
                    sh.error(format!("floor tls seal: {e}"));
                    continue;
                }
                assert_eq!(
                    self.sealed.capacity(),
                    capacity,
                    "sealed records outgrew their room"
                );
                (self.sealed[start..].as_ptr(), self.sealed.len() - start)
            } else {
                (frame.as_ptr(), frame.len())
            };
            let e = opcode::Send::new(types::Fixed(slot), ptr, len as u32)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(ud(OP_FLOOR_SEND, 0, slot));
            self.push(&e);
            sent += 1;
        }
        self.submit();
        sh.floor_sent.fetch_add(sent, Ordering::Relaxed);
        to
    }

    /// Closes every socket of a floor ring (both ends are ours: nothing to count).
    fn close_floor(&mut self) {
        match self.spec.group {
            1 => {
                for slot in 0..self.clients.len() as u32 {
                    let state = self.clients[slot as usize].state;
                    if state == OPEN {
                        let gen = self.clients[slot as usize].gen;
                        let e = setsockopt_linger_reset(slot)
                            .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
                            .user_data(ud(OP_CANCEL, gen, slot));
                        self.push(&e);
                    }
                    if matches!(state, CONNECTING | HANDSHAKE | OPEN) {
                        self.kill(slot);
                    }
                }
            }
            2 => {
                // The floor's server side has nothing waiting (its sends completed) but,
                // with TLS, its multishot recv.
                for slot in std::mem::take(&mut self.accepted) {
                    if let Some(Some(_)) = self.floor_tls.get_mut(slot as usize).map(Option::take) {
                        let cancel = opcode::AsyncCancel::new(ud(OP_FLOOR_RECV, 0, slot))
                            .build()
                            .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
                            .user_data(ud(OP_CANCEL, 0, slot));
                        self.push(&cancel);
                    }
                    self.close_file(slot, 0);
                }
                self.sealed = Vec::new();
                self.retired.clear();
            }
            _ => return,
        }
        self.submit();
    }

    /// Reaps and handles every completion; returns how many.
    fn reap(&mut self, sh: &Shared, st: &mut ThreadStats) -> usize {
        let mut total = 0;
        let mut batch = [Cqe {
            ud: 0,
            res: 0,
            flags: 0,
        }; 256];
        loop {
            // Completions past the CQ's size wait in the kernel's overflow list, and only
            // an enter moves them into the CQ; nothing signals the eventfd for them. Without
            // this, a burst bigger than the CQ strands some until the ring's next submit
            // (a stall of up to a second in a floor round).
            if self.ring.submission().cq_overflow() {
                self.submit();
            }
            let mut n = 0;
            {
                let mut cq = self.ring.completion();
                cq.sync();
                for e in cq.by_ref().take(batch.len()) {
                    batch[n] = Cqe {
                        ud: e.user_data(),
                        res: e.result(),
                        flags: e.flags(),
                    };
                    n += 1;
                }
            }
            if n == 0 {
                break;
            }
            total += n;
            for c in &batch[..n] {
                self.handle(sh, st, *c);
            }
            self.bufs.publish();
            for slot in std::mem::take(&mut self.rearm) {
                let cl = &mut self.clients[slot as usize];
                cl.flags &= !REARM_QUEUED;
                if self.spec.group == 2 {
                    if self
                        .floor_tls
                        .get(slot as usize)
                        .is_some_and(Option::is_some)
                    {
                        self.arm_floor_recv(slot);
                    }
                } else if matches!(cl.state, HANDSHAKE | OPEN) {
                    self.arm_recv(slot);
                }
            }
            if !self.ring.submission().is_empty() {
                self.submit();
            }
        }
        total
    }

    fn handle(&mut self, sh: &Shared, st: &mut ThreadStats, c: Cqe) {
        let op = (c.ud >> 56) as u8;
        let gen = ((c.ud >> 32) & 0xffff) as u16;
        let slot = (c.ud & 0xffff_ffff) as u32;
        let current = |r: &Ring| {
            r.clients
                .get(slot as usize)
                .is_some_and(|cl| cl.gen == gen && cl.state != DEAD && cl.state != FREE)
        };
        match op {
            OP_SOCKET => self.on_socket(sh, slot as u16, c.res),
            OP_SETUP if current(self) => {
                let what = format!("bind/setsockopt: {}", errno_name(-c.res));
                self.fail(sh, slot, &what);
            }
            OP_CONNECT if current(self) => {
                if c.res < 0 {
                    let what = format!("connect: {}", errno_name(-c.res));
                    self.fail(sh, slot, &what);
                } else {
                    self.on_connect(sh, slot);
                }
            }
            OP_SEND if current(self) && c.res < 0 => {
                let what = format!("send: {}", errno_name(-c.res));
                self.fail(sh, slot, &what);
            }
            OP_RECV => self.on_recv(sh, st, c),
            OP_ACCEPT => self.on_accept(sh, c),
            OP_FLOOR_RECV => self.on_floor_recv(sh, c),
            OP_FLOOR_SEND => {
                sh.floor_send_errors.fetch_add(1, Ordering::Relaxed);
                if c.res < 0 {
                    sh.error(format!("floor send: {}", errno_name(-c.res)));
                } else {
                    sh.error("floor send: short write".into());
                }
            }
            _ => {} // stale completions, cancels, closes
        }
    }

    /// Fails connections whose setup has taken longer than the connect timeout.
    fn sweep(&mut self, sh: &Shared, now: Instant) {
        for p in 0..self.pend.len() {
            let pe = &self.pend[p];
            if !pe.used || pe.slot == u32::MAX {
                continue;
            }
            if now.duration_since(pe.started) > sh.cfg.connect_timeout {
                let slot = pe.slot;
                let what = match self.clients[slot as usize].state {
                    CONNECTING => "connect timed out",
                    _ => "no handshake response in time",
                };
                self.fail(sh, slot, what);
            }
        }
    }
}

fn unsafe_dst(a: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
        u16::from_be(a.sin_port),
    )
}

pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A thread's counters, added to the shared ones after each turn.
#[derive(Default)]
struct ThreadStats {
    late: u64,
    dups: u64,
    pings: u64,
    overflow: u64,
    lat_round: u32,
    lat: Vec<u32>,
    lat_target: Vec<u8>,
}

impl ThreadStats {
    fn record(&mut self, round: u32, target: u8, us: u64) {
        if round != self.lat_round {
            self.lat.clear();
            self.lat_target.clear();
            self.lat_round = round;
        }
        self.lat.push(us.min(u64::from(u32::MAX)) as u32);
        self.lat_target.push(target);
    }

    fn flush(&mut self, sh: &Shared, t: usize) {
        if !self.lat.is_empty() {
            let n = self.lat.len() as u64;
            {
                let mut slot = sh.lat[t].lock().unwrap();
                if slot.0 == self.lat_round {
                    slot.1.extend_from_slice(&self.lat);
                    slot.2.extend_from_slice(&self.lat_target);
                }
            }
            self.lat.clear();
            self.lat_target.clear();
            sh.received.fetch_add(n, Ordering::Release);
        }
        for (v, a) in [
            (&mut self.late, &sh.late),
            (&mut self.dups, &sh.dups),
            (&mut self.pings, &sh.pings),
        ] {
            if *v > 0 {
                a.fetch_add(std::mem::take(v), Ordering::Relaxed);
            }
        }
        self.overflow = 0;
    }
}

/// One thread: creates its rings, then connects, reads and sends until told to stop.
pub fn run_thread(t: usize, specs: Vec<RingSpec>, sh: Arc<Shared>) {
    let wake = sh.wake[t];
    let mut rings = Vec::new();
    for spec in specs {
        match Ring::new(spec, &sh.cfg, wake) {
            Ok(r) => {
                sh.ring_bytes
                    .fetch_add(r.memory() as u64, Ordering::Relaxed);
                rings.push(r)
            }
            Err(e) => {
                *sh.fatal.lock().unwrap() =
                    Some(format!("ring {} (table {}): {e}", spec.id, spec.table));
                sh.ready.fetch_add(1, Ordering::Release);
                return;
            }
        }
    }
    sh.ready.fetch_add(1, Ordering::Release);
    let mut st = ThreadStats::default();
    let mut tokens = 0.0f64;
    let mut last = Instant::now();
    let mut last_sweep = last;
    let mut next_ring = 0usize;
    let mut floor_round_seen = 0u32;
    let mut floor_closed = false;
    let mut frame: Vec<u8> = Vec::new();
    let mut floor_at: Option<(usize, usize)> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        let mut buf = 0u64;
        // SAFETY: reads 8 bytes into a local from our non-blocking eventfd.
        unsafe { libc::read(wake, (&mut buf as *mut u64).cast(), 8) };
        let now = Instant::now();
        let connecting = sh.connecting.load(Ordering::Relaxed);
        let mut want_more = false;
        if connecting != 0 {
            let group = connecting - 1;
            tokens += now.duration_since(last).as_secs_f64() * sh.cfg.rate_per_thread;
            // A burst of at most 10 ms' worth (or one).
            tokens = tokens.min((sh.cfg.rate_per_thread / 100.0).max(1.0));
            let n = rings.len();
            let mut idle_rings = 0;
            while tokens >= 1.0 && idle_rings < n {
                let r = &mut rings[next_ring % n];
                next_ring = next_ring.wrapping_add(1);
                if r.spec.group == group && r.attempts < r.spec.target && r.start_connect(&sh) {
                    tokens -= 1.0;
                    idle_rings = 0;
                } else {
                    idle_rings += 1;
                }
            }
            want_more = rings
                .iter()
                .any(|r| r.spec.group == group && r.attempts < r.spec.target);
        }
        last = now;
        if !floor_closed && sh.close_floor.load(Ordering::Acquire) {
            floor_closed = true;
            for r in rings.iter_mut() {
                r.close_floor();
            }
            sh.floor_closed_threads.fetch_add(1, Ordering::Release);
        }
        let fr = sh.floor_round.load(Ordering::Acquire);
        if fr != floor_round_seen {
            floor_round_seen = fr;
            frame.clear();
            frame.extend_from_slice(&sh.floor_frame.lock().unwrap());
            // The frame buffer must outlive the sends; it is replaced only next round, by
            // which time every send has completed (the coordinator waits for receipt).
            floor_at = Some((0, 0));
        }
        let mut sending = false;
        if let Some((ri, at)) = floor_at {
            // One batch per turn, then a turn of reading.
            floor_at = match rings.get_mut(ri) {
                None => None,
                Some(r) if r.spec.group != 2 || at >= r.accepted.len() => Some((ri + 1, 0)),
                Some(r) => Some((ri, r.floor_send(&sh, &frame, at))),
            };
            sending = floor_at.is_some();
        }
        for r in rings.iter_mut() {
            if r.spec.group == 2 {
                r.manage_accept(&sh);
            }
            if !r.ring.submission().is_empty() {
                r.submit();
            }
            r.reap(&sh, &mut st);
        }
        st.flush(&sh, t);
        if now.duration_since(last_sweep) > Duration::from_millis(200) {
            last_sweep = now;
            for r in rings.iter_mut() {
                r.sweep(&sh, now);
                if !r.ring.submission().is_empty() {
                    r.submit();
                }
            }
        }
        let timeout = if sending {
            0
        } else if want_more {
            1
        } else {
            100
        };
        let mut pfd = libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one pollfd in a local.
        unsafe { libc::poll(&mut pfd, 1, timeout) };
    }
}
