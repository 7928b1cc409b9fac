//! epoll runtime (mio): the fallback where io_uring is unavailable. Same contract and
//! observable behaviour as `uring`; sockets use process fds, so one process holds at most
//! `RLIMIT_NOFILE` (20,000 here) connections across all its epoll workers.
//!
//! # How it works
//! - **Accept**: every listener is registered (read interest) in this worker's `Poll`; the
//!   same fd is registered by every worker. mio is edge-triggered, so a listener that
//!   signalled is remembered as ready until `accept4` says `EWOULDBLOCK`: that makes it
//!   behave level-triggered when accepting stops half-way (driver at its limit, per-turn
//!   bound, backoff) and resumes later. Another worker may take the connections first:
//!   spurious wake-ups are expected. Accepting pauses for [`ACCEPT_BACKOFF`] on
//!   `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`.
//! - **Sockets**: `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)` into an `OwnedFd`, registered
//!   read + write, edge-triggered, once. Raw `recv`/`send` rather than mio's stream types:
//!   one code path for TCP and unix sockets, and `send(MSG_NOSIGNAL)` for both (std's
//!   `UnixStream` writes with `write(2)`, which raises `SIGPIPE`).
//! - **Reads**: into one per-worker scratch buffer ([`READ_BUFFER_BYTES`]) → `handle_recv`;
//!   no buffer per connection. At most [`READS_PER_SLOT_PER_TURN_MAX`] reads per
//!   connection per turn (fairness); a connection cut short is queued and read again next
//!   turn without waiting. `0` bytes or an error → `handle_eof`.
//! - **Pause/resume**: re-registration with write interest only / read + write; resume
//!   always tries one read (an edge may have passed while paused).
//! - **Sends**: written at once when the command arrives, the rest on write readiness.
//!   `handle_sent` comes in the next turn (never from inside `poll_command` draining), as
//!   with io_uring. A failed send gives `handle_eof` (if not given yet) and then
//!   `handle_sent` with the unwritten buffer.
//! - **Connect** (`Command::Connect`, outbound): mio's non-blocking `TcpStream::connect`,
//!   registered like an accepted socket; the first write readiness (or error) ends it:
//!   `SO_ERROR` → `handle_connected`, then reads start. A connect that fails at once is
//!   reported next turn (the slot then holds no socket; `Close` just forgets it).
//! - **Close**: deregister, close, `handle_closed` at once (nothing is in flight).
//! - **Wake/timer**: the wake eventfd is registered too (drained on each event);
//!   `handle_wake` at most once per turn. The wait's timeout is the driver's deadline (mio
//!   rounds it up to whole ms, so a sub-ms deadline does not spin).
//! - **Exit**: once `driver.finished()`, every connection is closed; no driver method is
//!   called after that.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::uring::sys::{self, PeerStorage};
use super::{Command, Driver, SendBuf, Setup};

/// Readiness events taken per `epoll_wait`; more wait for the next turn.
pub const EVENTS_MAX: usize = 1024;
/// The one read buffer of a worker. 16 KiB takes a typical request or a burst of frames
/// in one `recv`, yet stays small next to the socket buffers.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Reads per connection per turn (64 KiB): a fast sender cannot starve the others.
pub const READS_PER_SLOT_PER_TURN_MAX: usize = 4;
/// Accepts per listener per turn, so a connection storm leaves room for I/O.
pub const ACCEPTS_PER_LISTENER_PER_TURN_MAX: usize = 64;
/// Pause of accepting after `EMFILE`/`ENFILE`/`ENOMEM`: long enough not to spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const WAKE_TOKEN: Token = Token(usize::MAX);

/// Listener `index` is `Token(usize::MAX - 1 - index)`; slots are `Token(slot)`.
fn listener_token(index: usize) -> Token {
    Token(usize::MAX - 1 - index)
}

/// Bytes per slot (allocated for `slots_max` slots at start).
const _: () = assert!(size_of::<Option<Conn>>() <= 48);

struct Conn {
    fd: OwnedFd,
    /// The current `Send`'s buffer and how much of it is written.
    send: Option<SendBuf>,
    send_offset: usize,
    /// The send finished (or failed) during command handling; `handle_sent` is due.
    send_done: bool,
    send_failed: bool,
    paused: bool,
    /// `handle_eof` was called: no more reads.
    eof: bool,
    /// In `read_queue`: more may be readable without a new edge.
    read_queued: bool,
    /// An outbound connect is in progress: the first write readiness ends it.
    connecting: bool,
}

struct Loop<'d> {
    poll: Poll,
    events: Events,
    /// Indexed by slot; `None` is a free slot. Allocated once (`slots_max` entries).
    conns: Vec<Option<Conn>>,
    listeners: Vec<RawFd>,
    /// Listener signalled and has not said `EWOULDBLOCK` since.
    listener_ready: Vec<bool>,
    wake_fd: RawFd,
    read_buffer: Box<[u8]>,
    /// Slots to read from without waiting for an edge. Two vectors swapped each turn.
    read_queue: Vec<u32>,
    read_queue_next: Vec<u32>,
    /// Slots whose `handle_sent` is due next turn.
    sends_done: Vec<u32>,
    accept_backoff_until: Option<Instant>,
    /// Last time running out of fds was logged (at most one warning per `FD_WARN_EVERY`).
    fd_warned_at: Option<Instant>,
    woken: bool,
    peer: PeerStorage,
    /// Connects that failed before or at registration, reported next turn.
    connect_failed: Vec<(u32, io::Error)>,
    /// Slots whose connect failed before a socket existed: `Close` only forgets them.
    failed_placeholders: Vec<u32>,
    driver: &'d mut dyn Driver,
}

/// How often "out of fds" is logged while it lasts.
const FD_WARN_EVERY: Duration = Duration::from_secs(10);

/// Runs `driver` on a mio `Poll` until `driver.finished()`.
pub fn run(setup: Setup, driver: &mut dyn Driver) -> io::Result<()> {
    assert!(setup.slots_max > 0, "slots_max must be positive");
    let poll = Poll::new()?;
    for (index, &fd) in setup.listeners.iter().enumerate() {
        poll.registry().register(
            &mut SourceFd(&fd),
            listener_token(index),
            Interest::READABLE,
        )?;
    }
    poll.registry().register(
        &mut SourceFd(&setup.wake_fd),
        WAKE_TOKEN,
        Interest::READABLE,
    )?;
    let slots_max = setup.slots_max as usize;
    let mut event_loop = Loop {
        poll,
        events: Events::with_capacity(EVENTS_MAX),
        conns: (0..slots_max).map(|_| None).collect(),
        listener_ready: vec![true; setup.listeners.len()],
        listeners: setup.listeners,
        wake_fd: setup.wake_fd,
        read_buffer: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
        read_queue: Vec::new(),
        read_queue_next: Vec::new(),
        sends_done: Vec::new(),
        accept_backoff_until: None,
        fd_warned_at: None,
        woken: false,
        peer: PeerStorage::new(),
        connect_failed: Vec::new(),
        failed_placeholders: Vec::new(),
        driver,
    };
    if let Ok(limit) = sys::nofile_limit() {
        if u64::from(setup.slots_max) > limit {
            crate::log!(
                crate::log::WARN,
                "epoll",
                "this worker may hold {} connections but RLIMIT_NOFILE is {limit}: the epoll \
                 runtime needs one fd per connection, so the process holds fewer; the \
                 io_uring runtime does not (direct descriptors)",
                setup.slots_max
            );
        }
    }
    let result = event_loop.run();
    event_loop.exit();
    result
}

impl Loop<'_> {
    fn run(&mut self) -> io::Result<()> {
        // The event loop proper: ends only when the driver says it is finished.
        loop {
            let now = Instant::now();
            self.deliver_sends(now);
            self.deliver_connect_failures(now);
            self.handle_events(now);
            self.read_queued(now);
            self.accept(now);
            self.call_driver(now);
            if self.driver.finished() {
                return Ok(());
            }
            let timeout = self.wait_timeout(now);
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
                Err(e) => return Err(e),
            }
        }
    }

    fn handle_events(&mut self, now: Instant) {
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            let token = event.token();
            if token == WAKE_TOKEN {
                sys::drain_eventfd(self.wake_fd);
                self.woken = true;
            } else if token.0 > usize::MAX - 1 - self.listeners.len() {
                self.listener_ready[usize::MAX - 1 - token.0] = true;
            } else {
                let slot = token.0 as u32;
                if self.conns[slot as usize]
                    .as_ref()
                    .is_some_and(|c| c.connecting)
                {
                    if event.is_writable() || event.is_error() || event.is_write_closed() {
                        self.connect_done(now, slot);
                    }
                    continue;
                }
                if event.is_writable() || event.is_error() {
                    self.write(now, slot);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.queue_read(slot);
                }
            }
        }
        self.events = events;
    }

    fn queue_read(&mut self, slot: u32) {
        let Some(conn) = self.conns[slot as usize].as_mut() else {
            return; // Closed after the event was reported.
        };
        if !conn.read_queued && !conn.eof {
            conn.read_queued = true;
            self.read_queue.push(slot);
        }
    }

    /// Reads every queued connection (bounded per connection); those cut short by the bound
    /// stay queued for the next turn.
    fn read_queued(&mut self, now: Instant) {
        let mut queue = std::mem::take(&mut self.read_queue);
        for &slot in &queue {
            let Some(conn) = self.conns[slot as usize].as_mut() else {
                continue;
            };
            if !conn.read_queued {
                continue; // A new connection in a reused slot; not queued.
            }
            if conn.paused || conn.eof {
                conn.read_queued = false;
                continue;
            }
            if self.read_some(now, slot) {
                self.read_queue_next.push(slot);
            } else if let Some(conn) = self.conns[slot as usize].as_mut() {
                conn.read_queued = false;
            }
        }
        queue.clear();
        self.read_queue = std::mem::replace(&mut self.read_queue_next, queue);
    }

    /// Reads until `EWOULDBLOCK`, EOF, or the per-turn bound. True if more may be readable.
    fn read_some(&mut self, now: Instant, slot: u32) -> bool {
        for _ in 0..READS_PER_SLOT_PER_TURN_MAX {
            let conn = self.conns[slot as usize]
                .as_mut()
                .expect("queued slot is open");
            match sys::recv(conn.fd.as_raw_fd(), &mut self.read_buffer) {
                Ok(0) => {
                    conn.eof = true;
                    self.driver.handle_eof(now, slot);
                    return false;
                }
                Ok(n) => self
                    .driver
                    .handle_recv(now, slot, &mut self.read_buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.eof = true;
                    self.driver.handle_eof(now, slot);
                    return false;
                }
            }
        }
        true
    }

    /// Writes what it can of the slot's send; `handle_sent` when done or failed.
    fn write(&mut self, now: Instant, slot: u32) {
        if !self.write_some(slot) {
            return;
        }
        self.finish_send(now, slot);
    }

    /// True when the send is finished (written or failed).
    fn write_some(&mut self, slot: u32) -> bool {
        let Some(conn) = self.conns[slot as usize].as_mut() else {
            return false;
        };
        let Some(buf) = conn.send.as_ref().map(SendBuf::bytes) else {
            return false;
        };
        if conn.send_done {
            return false; // Already finished; delivered next turn.
        }
        while conn.send_offset < buf.len() {
            match sys::send(conn.fd.as_raw_fd(), &buf[conn.send_offset..]) {
                Ok(n) => conn.send_offset += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.send_failed = true;
                    break;
                }
            }
        }
        conn.send_done = true;
        true
    }

    fn finish_send(&mut self, now: Instant, slot: u32) {
        let conn = self.conns[slot as usize]
            .as_mut()
            .expect("finished send on open slot");
        assert!(conn.send_done);
        let buf = conn.send.take().expect("finished send has a buffer");
        conn.send_done = false;
        let report_eof = std::mem::take(&mut conn.send_failed) && !conn.eof;
        if report_eof {
            conn.eof = true;
            self.driver.handle_eof(now, slot);
        }
        self.driver.handle_sent(now, slot, buf.into_returned());
    }

    /// `handle_sent` for sends that finished while commands were handled last turn.
    fn deliver_sends(&mut self, now: Instant) {
        let mut done = std::mem::take(&mut self.sends_done);
        for &slot in &done {
            let due = self.conns[slot as usize]
                .as_ref()
                .is_some_and(|c| c.send_done);
            if due {
                self.finish_send(now, slot);
            }
        }
        done.clear();
        self.sends_done = done;
    }

    fn accept(&mut self, now: Instant) {
        if self.accept_backoff_until.is_some_and(|until| now >= until) {
            self.accept_backoff_until = None;
        }
        for index in 0..self.listeners.len() {
            for _ in 0..ACCEPTS_PER_LISTENER_PER_TURN_MAX {
                if !self.listener_ready[index]
                    || self.accept_backoff_until.is_some()
                    || !self.driver.accepting()
                {
                    break;
                }
                self.accept_one(now, index);
            }
        }
    }

    fn accept_one(&mut self, now: Instant, index: usize) {
        let fd = match sys::accept_nonblocking(self.listeners[index], &mut self.peer) {
            Ok(fd) => fd,
            Err(e) => return self.on_accept_error(now, index, e),
        };
        // SAFETY: accept4 just returned this fd; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let peer = self.peer.peer();
        let Some(slot) = self.driver.handle_accept(now, index, peer) else {
            return; // Refused: dropping `fd` closes it.
        };
        let slots_max = self.conns.len();
        assert!(
            (slot as usize) < slots_max,
            "slot {slot} beyond slots_max {slots_max}"
        );
        let entry = &mut self.conns[slot as usize];
        assert!(
            entry.is_none(),
            "driver reused slot {slot} before handle_closed"
        );
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = self.poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            Token(slot as usize),
            interest,
        );
        *entry = Some(Conn {
            fd,
            send: None,
            send_offset: 0,
            send_done: false,
            send_failed: false,
            paused: false,
            eof: false,
            read_queued: false,
            connecting: false,
        });
        if registered.is_err() {
            // Out of kernel memory for the registration: the driver learns it as a failed
            // socket and closes the slot.
            let conn = entry.as_mut().expect("just set");
            conn.eof = true;
            self.driver.handle_eof(now, slot);
        }
    }

    fn on_accept_error(&mut self, now: Instant, index: usize, e: io::Error) {
        match e.raw_os_error() {
            Some(libc::EAGAIN) => self.listener_ready[index] = false,
            // This connection failed; the next one may not (accept(2)).
            Some(
                libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::EINTR
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::ENONET,
            ) => {}
            // Out of fds or memory, or a broken listener: retrying at once would spin.
            // New connections wait in the listen backlog meanwhile; say why, now and then.
            errno => {
                self.accept_backoff_until = Some(now + ACCEPT_BACKOFF);
                let quiet = self
                    .fd_warned_at
                    .is_some_and(|at| now.duration_since(at) < FD_WARN_EVERY);
                if matches!(errno, Some(libc::EMFILE | libc::ENFILE)) && !quiet {
                    self.fd_warned_at = Some(now);
                    let limit = sys::nofile_limit().unwrap_or(0);
                    crate::log!(
                        crate::log::WARN,
                        "epoll",
                        "accept: {e} (RLIMIT_NOFILE {limit}): no new connections until fds \
                         are freed; they wait in the listen backlog. The epoll runtime needs \
                         one fd per connection; the io_uring runtime does not"
                    );
                }
            }
        }
    }

    fn call_driver(&mut self, now: Instant) {
        if std::mem::take(&mut self.woken) {
            self.driver.handle_wake(now);
        }
        if self
            .driver
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.driver.handle_timeout(now);
        }
        while let Some(command) = self.driver.poll_command() {
            self.on_command(now, command);
        }
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Send { slot, buf } => self.start_send(slot, SendBuf::Owned(buf)),
            Command::SendShared { slot, buf } => self.start_send(slot, SendBuf::Shared(buf)),
            Command::PauseRecv { slot } => {
                let conn = self.open_conn(slot);
                if !conn.paused {
                    conn.paused = true;
                    self.reregister(slot, Interest::WRITABLE);
                }
            }
            Command::ResumeRecv { slot } => {
                let conn = self.open_conn(slot);
                if conn.paused {
                    conn.paused = false;
                    self.reregister(slot, Interest::READABLE | Interest::WRITABLE);
                    // An edge may have come and gone while paused: look once.
                    self.queue_read(slot);
                }
            }
            Command::ShutdownWrite { slot } => {
                let conn = self.open_conn(slot);
                // ENOTCONN (peer already gone) is reported by reads; nothing to do here.
                let _ = sys::shutdown_write(conn.fd.as_raw_fd());
            }
            Command::Close { slot } => {
                self.close(slot);
                self.driver.handle_closed(now, slot);
            }
            Command::Connect { slot, addr } => self.connect(now, slot, addr),
        }
    }

    /// Starts a non-blocking connect (mio); its first write readiness ends it.
    fn connect(&mut self, now: Instant, slot: u32, addr: std::net::SocketAddr) {
        assert!(
            self.conns[slot as usize].is_none(),
            "Connect on slot {slot} that is in use"
        );
        let stream = match mio::net::TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                // No socket: the slot holds a closed placeholder the driver `Close`s.
                self.connect_failed.push((slot, e));
                let _ = now;
                return;
            }
        };
        use std::os::fd::IntoRawFd;
        // SAFETY: into_raw_fd hands over the only owner of the fd.
        let fd = unsafe { OwnedFd::from_raw_fd(stream.into_raw_fd()) };
        let registered = self.poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            Token(slot as usize),
            Interest::READABLE | Interest::WRITABLE,
        );
        let failed = registered.err();
        self.conns[slot as usize] = Some(Conn {
            fd,
            send: None,
            send_offset: 0,
            send_done: false,
            send_failed: false,
            paused: false,
            eof: false,
            read_queued: false,
            connecting: failed.is_none(),
        });
        if let Some(e) = failed {
            self.conns[slot as usize].as_mut().expect("just set").eof = true;
            self.connect_failed.push((slot, e));
        }
    }

    /// The connect of `slot` finished: `SO_ERROR` says how.
    fn connect_done(&mut self, now: Instant, slot: u32) {
        let conn = self.conns[slot as usize].as_mut().expect("connecting slot");
        conn.connecting = false;
        match sys::socket_error(conn.fd.as_raw_fd()) {
            Ok(()) => {
                self.driver.handle_connected(now, slot, Ok(()));
                self.queue_read(slot);
            }
            Err(e) => {
                conn.eof = true;
                self.driver.handle_connected(now, slot, Err(e));
            }
        }
    }

    /// Connects that failed at once, reported on the next turn (never while commands run).
    fn deliver_connect_failures(&mut self, now: Instant) {
        for (slot, e) in std::mem::take(&mut self.connect_failed) {
            if self.conns[slot as usize].is_none() {
                // Failed before a socket existed: a placeholder that `Close` removes.
                self.failed_placeholders.push(slot);
            }
            self.driver.handle_connected(now, slot, Err(e));
        }
    }

    fn start_send(&mut self, slot: u32, buf: SendBuf) {
        let conn = self.open_conn(slot);
        assert!(conn.send.is_none(), "second Send in flight on slot {slot}");
        conn.send = Some(buf);
        conn.send_offset = 0;
        if self.write_some(slot) {
            self.sends_done.push(slot);
        }
    }

    fn open_conn(&mut self, slot: u32) -> &mut Conn {
        let conn = self.conns[slot as usize].as_mut();
        conn.unwrap_or_else(|| panic!("command for slot {slot} that is not open"))
    }

    fn reregister(&mut self, slot: u32, interest: Interest) {
        let conn = self.conns[slot as usize].as_ref().expect("open slot");
        let fd = conn.fd.as_raw_fd();
        let registry = self.poll.registry();
        // ENOMEM only; reads then simply stay as they were (pause is best effort, as the
        // contract allows data already in flight).
        let _ = registry.reregister(&mut SourceFd(&fd), Token(slot as usize), interest);
    }

    /// Deregisters and closes the slot's socket, dropping any unsent buffer.
    fn close(&mut self, slot: u32) {
        if let Some(i) = self.failed_placeholders.iter().position(|&s| s == slot) {
            self.failed_placeholders.swap_remove(i);
            return;
        }
        let conn = self.conns[slot as usize].take();
        let conn = conn.unwrap_or_else(|| panic!("Close for slot {slot} that is not open"));
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&conn.fd.as_raw_fd()));
        drop(conn);
    }

    fn wait_timeout(&self, now: Instant) -> Option<Duration> {
        let accepting = self.accept_backoff_until.is_none() && self.driver.accepting();
        let busy = !self.read_queue.is_empty()
            || !self.sends_done.is_empty()
            || !self.connect_failed.is_empty()
            || (accepting && self.listener_ready.iter().any(|&ready| ready));
        if busy {
            return Some(Duration::ZERO);
        }
        let deadline = match (self.driver.poll_timeout(), self.accept_backoff_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        deadline.map(|d| d.saturating_duration_since(now))
    }

    /// Closes every connection still open. No driver calls.
    fn exit(&mut self) {
        for slot in 0..self.conns.len() as u32 {
            if self.conns[slot as usize].is_some() {
                self.close(slot);
            }
        }
    }
}
