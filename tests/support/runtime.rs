//! The runtime contract tests' driver: a scripted driver and a harness that runs
//! `runtime::run` on a thread while the test thread plays clients with std sockets.
//!
//! The driver echoes by default. The test steers it through `State` (behind a mutex) and
//! the wake eventfd: commands the test injects are issued from `handle_wake`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zring::runtime::{self, Command, Driver, Kind, Setup};

/// How long a test waits for a condition before failing (the happy path takes ms).
pub const WAIT_MAX: Duration = Duration::from_secs(10);
/// Client socket timeouts, so a broken runtime fails a test instead of hanging it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Listen backlog for test listeners (capped by `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Serializes the tests of one binary: fd counts must not see other tests' sockets.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether to skip an io_uring case: only when asked to (`ZRING_TEST_SKIP_URING=1`, for
/// sandboxes without io_uring). Otherwise io_uring must work.
pub fn skip(kind: Kind) -> bool {
    if kind != Kind::Uring {
        return false;
    }
    if std::env::var_os("ZRING_TEST_SKIP_URING").is_some() {
        // CI must run every case: a machine without io_uring fails there, never skips.
        assert!(
            std::env::var_os("CI").is_none(),
            "ZRING_TEST_SKIP_URING is not honoured under CI=true"
        );
        eprintln!("skipping io_uring case (ZRING_TEST_SKIP_URING)");
        return true;
    }
    if let Err(reason) = runtime::uring_available() {
        panic!("io_uring unavailable: {reason} (set ZRING_TEST_SKIP_URING=1 to skip)");
    }
    false
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ev {
    Accept {
        slot: u32,
        listener: usize,
        peer: Option<SocketAddr>,
    },
    Recv {
        slot: u32,
        len: usize,
    },
    Eof {
        slot: u32,
    },
    Sent {
        slot: u32,
        len: usize,
    },
    Closed {
        slot: u32,
    },
    Connected {
        slot: u32,
        ok: bool,
    },
    Wake,
    Timeout {
        now: Instant,
        deadline: Instant,
    },
}

/// What the test controls and observes.
pub struct State {
    pub events: Vec<Ev>,
    /// Every byte received per slot (for the slot's current or last connection).
    pub received: HashMap<u32, Vec<u8>>,
    pub accepting: bool,
    /// Refuse every connection (`handle_accept` returns `None`).
    pub refuse: bool,
    pub finish: bool,
    /// Echo what arrives.
    pub echo: bool,
    /// Close a slot once it reported EOF and its echo is flushed.
    pub close_on_eof: bool,
    /// Commands to issue at the next `handle_wake`.
    pub inject: VecDeque<Command>,
    /// Deadlines to be woken for, earliest first; each is popped when it fires.
    pub deadlines: VecDeque<Instant>,
    pub wakes: u64,
    /// Setup, read once at start: `Setup::files_per_ring` (io_uring: connections per ring).
    pub files_per_ring: Option<u32>,
}

impl State {
    fn new() -> State {
        State {
            events: Vec::new(),
            received: HashMap::new(),
            accepting: true,
            refuse: false,
            finish: false,
            echo: true,
            close_on_eof: true,
            inject: VecDeque::new(),
            deadlines: VecDeque::new(),
            wakes: 0,
            files_per_ring: None,
        }
    }

    pub fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }

    pub fn accepted_slots(&self) -> Vec<u32> {
        let slots = self.events.iter().filter_map(|e| match e {
            Ev::Accept { slot, .. } => Some(*slot),
            _ => None,
        });
        slots.collect()
    }
}

#[derive(Default)]
struct ConnState {
    /// A `Send` is in flight (the runtime has the buffer).
    sending: bool,
    /// Echo bytes waiting for the current send to finish.
    pending: Vec<u8>,
    /// Close once nothing is pending (EOF seen).
    close_when_flushed: bool,
    closing: bool,
    eof: bool,
}

pub struct TestDriver {
    shared: Arc<Mutex<State>>,
    free: Vec<u32>,
    conns: HashMap<u32, ConnState>,
    commands: VecDeque<Command>,
    /// Spare send buffers, reused.
    pool: Vec<Vec<u8>>,
}

impl TestDriver {
    fn new(shared: Arc<Mutex<State>>, slots_max: u32) -> TestDriver {
        TestDriver {
            shared,
            free: (0..slots_max).rev().collect(),
            conns: HashMap::new(),
            commands: VecDeque::new(),
            pool: Vec::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Issues the next echo send, or the close that waits for the echo to flush.
    fn flush(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_mut(&slot) else {
            return;
        };
        if conn.sending || conn.closing {
            return;
        }
        if !conn.pending.is_empty() {
            let mut buf = self.pool.pop().unwrap_or_default();
            std::mem::swap(&mut buf, &mut conn.pending);
            conn.sending = true;
            self.commands.push_back(Command::Send { slot, buf });
        } else if conn.close_when_flushed {
            conn.closing = true;
            self.commands.push_back(Command::Close { slot });
        }
    }
}

impl Driver for TestDriver {
    fn handle_accept(
        &mut self,
        _now: Instant,
        listener: usize,
        peer: Option<SocketAddr>,
    ) -> Option<u32> {
        if self.state().refuse {
            return None;
        }
        let slot = self.free.pop()?;
        assert!(self.conns.insert(slot, ConnState::default()).is_none());
        let mut state = self.state();
        state.received.insert(slot, Vec::new());
        state.events.push(Ev::Accept {
            slot,
            listener,
            peer,
        });
        Some(slot)
    }

    fn handle_recv(&mut self, _now: Instant, slot: u32, data: &mut [u8]) {
        assert!(!data.is_empty());
        let echo = {
            let mut state = self.state();
            state.events.push(Ev::Recv {
                slot,
                len: data.len(),
            });
            state
                .received
                .entry(slot)
                .or_default()
                .extend_from_slice(data);
            state.echo
        };
        let conn = self.conns.get_mut(&slot).expect("recv for an unknown slot");
        assert!(!conn.closing, "recv after Close");
        assert!(!conn.eof, "recv after eof");
        if echo {
            conn.pending.extend_from_slice(data);
            self.flush(slot);
        }
    }

    fn handle_eof(&mut self, _now: Instant, slot: u32) {
        let close_on_eof = {
            let mut state = self.state();
            state.events.push(Ev::Eof { slot });
            state.close_on_eof
        };
        let conn = self.conns.get_mut(&slot).expect("eof for an unknown slot");
        assert!(!conn.closing, "eof after Close");
        assert!(!conn.eof, "second eof for one connection");
        conn.eof = true;
        if close_on_eof {
            conn.close_when_flushed = true;
            self.flush(slot);
        }
    }

    fn handle_sent(&mut self, _now: Instant, slot: u32, mut buf: Vec<u8>) {
        self.state().events.push(Ev::Sent {
            slot,
            len: buf.len(),
        });
        let conn = self.conns.get_mut(&slot).expect("sent for an unknown slot");
        assert!(conn.sending, "handle_sent without a send");
        assert!(!conn.closing, "handle_sent after Close");
        conn.sending = false;
        buf.clear();
        self.pool.push(buf);
        self.flush(slot);
    }

    fn handle_connected(&mut self, _now: Instant, slot: u32, result: io::Result<()>) {
        let conn = self
            .conns
            .get_mut(&slot)
            .expect("connected for an unknown slot");
        assert!(!conn.closing, "handle_connected after Close");
        if result.is_err() {
            conn.eof = true;
        }
        self.state().events.push(Ev::Connected {
            slot,
            ok: result.is_ok(),
        });
    }

    fn handle_closed(&mut self, _now: Instant, slot: u32) {
        self.state().events.push(Ev::Closed { slot });
        let conn = self
            .conns
            .remove(&slot)
            .expect("closed for an unknown slot");
        assert!(conn.closing, "handle_closed without Close");
        self.free.push(slot);
    }

    fn handle_wake(&mut self, _now: Instant) {
        let injected: Vec<Command> = {
            let mut state = self.state();
            state.wakes += 1;
            state.events.push(Ev::Wake);
            state.inject.drain(..).collect()
        };
        for command in injected {
            match &command {
                Command::Send { slot, .. } | Command::SendShared { slot, .. } => {
                    let conn = self.conns.get_mut(slot).expect("inject Send: unknown slot");
                    assert!(!conn.sending, "test injected a second Send");
                    conn.sending = true;
                }
                Command::Close { slot } => {
                    self.conns
                        .get_mut(slot)
                        .expect("inject Close: unknown slot")
                        .closing = true;
                }
                Command::Connect { slot, .. } => {
                    let i = self
                        .free
                        .iter()
                        .position(|s| s == slot)
                        .expect("inject Connect: slot in use");
                    self.free.remove(i);
                    assert!(self.conns.insert(*slot, ConnState::default()).is_none());
                    self.state().received.insert(*slot, Vec::new());
                }
                _ => {}
            }
            self.commands.push_back(command);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let mut state = self.state();
        while let Some(&deadline) = state.deadlines.front() {
            if deadline > now {
                break;
            }
            state.deadlines.pop_front();
            state.events.push(Ev::Timeout { now, deadline });
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.state().deadlines.front().copied()
    }

    fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    fn accepting(&self) -> bool {
        self.state().accepting && !self.free.is_empty()
    }

    fn finished(&self) -> bool {
        self.state().finish
    }
}

/// A running runtime with its listener, wake fd and driver state.
pub struct Harness {
    pub kind: Kind,
    pub shared: Arc<Mutex<State>>,
    pub addr: Option<SocketAddr>,
    wake: OwnedFd,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// Keeps the listener open for the run.
    _listener: OwnedFd,
}

/// A non-blocking loopback TCP listener, as `main` would hand to workers.
pub fn tcp_listener() -> (OwnedFd, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    // std listens with a backlog of 128; a burst of test clients would overflow it and
    // wait for SYN retransmits (1 s each). Raise it as a server would.
    // SAFETY: listen on an fd we own; no pointers.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
    let addr = listener.local_addr().expect("local addr");
    (OwnedFd::from(listener), addr)
}

pub fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
    // SAFETY: a fresh fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Harness {
    /// Starts a runtime on a fresh loopback TCP listener.
    pub fn start(kind: Kind, slots_max: u32, configure: impl FnOnce(&mut State)) -> Harness {
        let (listener, addr) = tcp_listener();
        Harness::start_on(kind, slots_max, listener, Some(addr), configure)
    }

    pub fn start_on(
        kind: Kind,
        slots_max: u32,
        listener: OwnedFd,
        addr: Option<SocketAddr>,
        configure: impl FnOnce(&mut State),
    ) -> Harness {
        let mut state = State::new();
        configure(&mut state);
        let files_per_ring = state.files_per_ring;
        let shared = Arc::new(Mutex::new(state));
        let wake = eventfd();
        let setup = Setup {
            listeners: vec![listener.as_raw_fd()],
            wake_fd: wake.as_raw_fd(),
            slots_max,
            files_per_ring,
        };
        let driver_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            let mut driver = TestDriver::new(driver_shared, slots_max);
            runtime::run(kind, setup, &mut driver)
        });
        Harness {
            kind,
            shared,
            addr,
            wake,
            thread: Some(thread),
            _listener: listener,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the wake eventfd.
    pub fn wake(&self) {
        write_eventfd(self.wake.as_raw_fd());
    }

    /// Has the driver issue `command` (at its next wake-up).
    pub fn command(&self, command: Command) {
        self.state().inject.push_back(command);
        self.wake();
    }

    /// Has the driver issue `command` and waits until the runtime acted on it.
    pub fn command_and_settle(&self, command: Command) {
        self.state().inject.push_back(command);
        self.settle();
    }

    /// Waits until the runtime has run a full turn after this call: what the driver
    /// changed (commands, `accepting()`) has been acted on and submitted to the kernel.
    /// Two wake-ups: the first turn takes the change; the second starts only after the
    /// first turn's submit.
    pub fn settle(&self) {
        for _ in 0..2 {
            let wakes = self.state().wakes;
            self.wake();
            self.wait_for("a wake-up turn", |s| s.wakes > wakes);
        }
    }

    /// Polls `pred` until it holds; fails the test after `WAIT_MAX`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&State) -> bool) {
        let give_up = Instant::now() + WAIT_MAX;
        loop {
            if pred(&self.state()) {
                return;
            }
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("runtime ended while waiting for {what}");
            }
            assert!(Instant::now() < give_up, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the `n`th accepted connection (0-based) and returns its slot.
    pub fn wait_accept(&self, n: usize) -> u32 {
        self.wait_for("accept", |s| s.accepted_slots().len() > n);
        self.state().accepted_slots()[n]
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr.expect("tcp harness")).expect("connect");
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        stream
            .set_write_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        stream
    }

    /// Asks the driver to finish and returns what `run` returned.
    pub fn finish(mut self) -> io::Result<()> {
        self.state().finish = true;
        self.wake();
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("runtime thread panicked")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A failed test still stops its runtime thread.
        if let Some(thread) = self.thread.take() {
            self.state().finish = true;
            self.wake();
            let _ = thread.join();
        }
    }
}

pub fn write_eventfd(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from an 8-byte local.
    let n = unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    assert_eq!(n, 8, "eventfd write: {}", io::Error::last_os_error());
}

/// Open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}
