//! The `runtime` contract, on both runtimes. Each case runs a scripted driver
//! (`support::runtime::TestDriver`, echo by default) on a real loopback listener and plays
//! clients with std sockets; cases are serialized so fd counts are exact. Timing assertions are
//! about order ("after the deadline"), never tight durations.
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use support::runtime::{fd_count, serial, skip, Ev, Harness};
use zring::runtime::{Command, Kind};

/// Runs `$case(kind)` as two tests, one per runtime.
macro_rules! both_runtimes {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn uring() {
                super::$case(zring::runtime::Kind::Uring);
            }
            #[test]
            fn epoll() {
                super::$case(zring::runtime::Kind::Epoll);
            }
        }
    )*};
}

both_runtimes!(
    echo_round_trip,
    many_connections,
    large_send_to_slow_reader,
    pause_and_resume,
    shutdown_write,
    close_with_stuck_send,
    accept_gating,
    refused_connection_is_closed,
    wake_fd,
    timeouts_fire_after_deadline,
    eof_after_data,
    finished_closes_everything,
    no_fd_leak_over_many_cycles,
    unix_listener,
    large_upload,
    send_to_reset_peer,
    fan_out_burst,
    resume_many_at_once,
    connections_over_several_rings,
    fan_out_burst_over_rings,
    resume_many_at_once_over_rings,
    outbound_connect,
);

fn echo(client: &mut TcpStream, message: &[u8]) {
    client.write_all(message).expect("write");
    let mut back = vec![0; message.len()];
    client.read_exact(&mut back).expect("read echo");
    assert_eq!(back, message);
}

/// Reads until EOF (or reset); returns the bytes read.
fn read_to_end(client: &mut TcpStream) -> usize {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match client.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Goal: bytes sent come back; the driver sees the client's address.
fn echo_round_trip(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |_| {});
    let mut client = h.connect();
    echo(&mut client, b"hello");
    echo(&mut client, b"again");
    let slot = h.wait_accept(0);
    let peer = client.local_addr().unwrap();
    let accepted = h.state().events[0].clone();
    assert_eq!(
        accepted,
        Ev::Accept {
            slot,
            listener: 0,
            peer: Some(peer)
        }
    );
    drop(client);
    h.wait_for("close after eof", |s| {
        s.events.contains(&Ev::Closed { slot })
    });
    h.finish().expect("run");
}

/// Goal: 500 concurrent connections each get their own bytes back.
fn many_connections(kind: Kind) {
    const CLIENTS: usize = 500;
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 1024, |_| {});
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| h.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("client {i:04}").as_bytes())
            .unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut back = [0u8; 11];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, format!("client {i:04}").as_bytes());
    }
    h.wait_for("all accepted", |s| s.accepted_slots().len() == CLIENTS);
    drop(clients);
    h.wait_for("all closed", |s| {
        s.count(|e| matches!(e, Ev::Closed { .. })) == CLIENTS
    });
    h.finish().expect("run");
}

/// Goal: a send larger than the socket buffers reaches a slow reader whole and in order
/// (the runtime finishes partial writes itself), then comes back in `handle_sent`.
fn large_send_to_slow_reader(kind: Kind) {
    const BYTES: usize = 8 << 20;
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |s| s.echo = false);
    let mut client = h.connect();
    let slot = h.wait_accept(0);
    let data = pattern(BYTES);
    h.command(Command::Send {
        slot,
        buf: data.clone(),
    });
    // Let the socket buffers fill up, then read slowly for a while.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        h.state().count(|e| matches!(e, Ev::Sent { .. })),
        0,
        "sent before read"
    );
    let mut got = Vec::with_capacity(BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < BYTES {
        let n = client.read(&mut buf).expect("read");
        assert!(n > 0, "EOF after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if got.len() < BYTES / 8 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(got == data, "bytes differ");
    h.wait_for("handle_sent", |s| {
        s.events.contains(&Ev::Sent { slot, len: BYTES })
    });
    h.finish().expect("run");
}

/// Goal: data arriving while paused is not delivered until `ResumeRecv`, and then all of
/// it arrives, in order.
fn pause_and_resume(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |_| {});
    let mut client = h.connect();
    echo(&mut client, b"a");
    let slot = h.wait_accept(0);
    h.command_and_settle(Command::PauseRecv { slot });
    for chunk in [b"b", b"c", b"d"] {
        client.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.state().received[&slot], b"a", "delivered while paused");
    h.command(Command::ResumeRecv { slot });
    let mut back = [0u8; 3];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"bcd");
    assert_eq!(h.state().received[&slot], b"abcd");
    // Pause and resume again with nothing waiting; reading still works.
    h.command_and_settle(Command::PauseRecv { slot });
    h.command_and_settle(Command::ResumeRecv { slot });
    echo(&mut client, b"e");
    h.finish().expect("run");
}

/// Goal: after `ShutdownWrite` the client sees EOF, can still send, and the driver still
/// receives.
fn shutdown_write(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |s| s.echo = false);
    let mut client = h.connect();
    let slot = h.wait_accept(0);
    h.command(Command::ShutdownWrite { slot });
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).expect("read"), 0, "expected EOF");
    client.write_all(b"after").unwrap();
    h.wait_for("bytes after shutdown", |s| s.received[&slot] == b"after");
    client.shutdown(Shutdown::Write).unwrap();
    h.wait_for("eof", |s| s.events.contains(&Ev::Eof { slot }));
    h.wait_for("closed", |s| s.events.contains(&Ev::Closed { slot }));
    h.finish().expect("run");
}

/// Goal: `Close` aborts a send stuck on a client that never reads: `handle_closed` still
/// comes, `handle_sent` never does, and the slot works again afterwards.
fn close_with_stuck_send(kind: Kind) {
    const BYTES: usize = 32 << 20;
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 1, |s| s.echo = false);
    let client = h.connect();
    let slot = h.wait_accept(0);
    h.command(Command::Send {
        slot,
        buf: vec![7; BYTES],
    });
    std::thread::sleep(Duration::from_millis(200));
    h.command(Command::Close { slot });
    h.wait_for("closed", |s| s.events.contains(&Ev::Closed { slot }));
    assert_eq!(
        h.state().count(|e| matches!(e, Ev::Sent { .. })),
        0,
        "stuck send reported"
    );
    drop(client);
    // The only slot is free again: a new connection is served.
    h.state().echo = true;
    let mut client = h.connect();
    echo(&mut client, b"next");
    h.finish().expect("run");
}

/// Goal: while `accepting()` is false connections wait in the backlog; they are accepted
/// once it turns true, both at start and after a running period.
fn accept_gating(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |s| s.accepting = false);
    let mut first = h.connect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        h.state().accepted_slots().is_empty(),
        "accepted while not accepting"
    );
    h.state().accepting = true;
    h.wake();
    echo(&mut first, b"one");

    h.state().accepting = false;
    h.settle();
    let mut second = h.connect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        h.state().accepted_slots().len(),
        1,
        "accepted while not accepting"
    );
    h.state().accepting = true;
    h.wake();
    echo(&mut second, b"two");
    assert_eq!(h.state().accepted_slots().len(), 2);
    h.finish().expect("run");
}

/// Goal: a connection the driver refuses is closed at once.
fn refused_connection_is_closed(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |s| s.refuse = true);
    let mut client = h.connect();
    read_to_end(&mut client);
    h.state().refuse = false;
    let mut client = h.connect();
    echo(&mut client, b"ok");
    h.finish().expect("run");
}

/// Goal: each write of the wake eventfd reaches `handle_wake`.
fn wake_fd(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |_| {});
    for round in 1..=3 {
        h.wake();
        h.wait_for("wake", |s| s.wakes >= round);
    }
    h.finish().expect("run");
}

/// Goal: deadlines fire in order, never before they are due.
fn timeouts_fire_after_deadline(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let start = Instant::now();
    let deadlines = [
        start + Duration::from_millis(50),
        start + Duration::from_millis(150),
    ];
    let h = Harness::start(kind, 16, |s| s.deadlines.extend(deadlines));
    h.wait_for("two timeouts", |s| {
        s.count(|e| matches!(e, Ev::Timeout { .. })) == 2
    });
    // A deadline set later through a wake-up is honoured too.
    let later = Instant::now() + Duration::from_millis(30);
    h.state().deadlines.push_back(later);
    h.wake();
    h.wait_for("third timeout", |s| {
        s.count(|e| matches!(e, Ev::Timeout { .. })) == 3
    });
    let fired: Vec<(Instant, Instant)> = h
        .state()
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Timeout { now, deadline } => Some((*now, *deadline)),
            _ => None,
        })
        .collect();
    let expected = [deadlines[0], deadlines[1], later];
    for ((now, deadline), want) in fired.iter().zip(expected) {
        assert_eq!(*deadline, want, "out of order");
        assert!(now >= deadline, "fired before its deadline");
        assert!(
            *now < *deadline + Duration::from_secs(2),
            "fired far too late"
        );
    }
    h.finish().expect("run");
}

/// Goal: data then a half-close arrive as `handle_recv` then `handle_eof`; the echo still
/// gets out after the EOF.
fn eof_after_data(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |s| s.close_on_eof = false);
    let mut client = h.connect();
    let slot = h.wait_accept(0);
    client.write_all(b"bye").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    h.wait_for("eof", |s| s.events.contains(&Ev::Eof { slot }));
    let events = h.state().events.clone();
    let recv_at = events
        .iter()
        .position(|e| matches!(e, Ev::Recv { .. }))
        .expect("recv");
    let eof_at = events
        .iter()
        .position(|e| *e == Ev::Eof { slot })
        .expect("eof");
    assert!(recv_at < eof_at, "eof before data");
    let mut back = [0u8; 3];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"bye");
    h.command(Command::Close { slot });
    h.wait_for("closed", |s| s.events.contains(&Ev::Closed { slot }));
    assert_eq!(read_to_end(&mut client), 0);
    h.finish().expect("run");
}

/// Goal: `finished()` ends `run`, which closes the sockets still open.
fn finished_closes_everything(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let baseline = fd_count();
    let h = Harness::start(kind, 16, |_| {});
    let mut clients: Vec<TcpStream> = (0..3).map(|_| h.connect()).collect();
    for client in &mut clients {
        echo(client, b"x");
    }
    // One more whose send is stuck (the client never reads): exit must cancel it.
    let stuck = h.connect();
    let slot = h.wait_accept(3);
    h.command(Command::Send {
        slot,
        buf: vec![1; 32 << 20],
    });
    std::thread::sleep(Duration::from_millis(100));
    h.finish().expect("run");
    drop(stuck);
    for client in &mut clients {
        assert_eq!(read_to_end(client), 0, "no EOF after finish");
    }
    drop(clients);
    assert_eq!(fd_count(), baseline, "fds left after run");
}

/// Goal: many open/close cycles leave no fd behind; with io_uring, more cycles than the
/// registered file table has entries prove that direct descriptors are freed and reused,
/// and server sockets take no process fds at all.
fn no_fd_leak_over_many_cycles(kind: Kind) {
    const SLOTS: u32 = 8;
    const CYCLES: usize = 300;
    const HELD: usize = 5;
    let _serial = serial();
    if skip(kind) {
        return;
    }
    if kind == Kind::Uring {
        let table = zring::runtime::uring::files_max(SLOTS).unwrap() as usize;
        assert!(
            CYCLES > table,
            "cycles must exceed the file table ({table})"
        );
    }
    let baseline = fd_count();
    let h = Harness::start(kind, SLOTS, |_| {});
    for i in 0..CYCLES {
        let mut client = h.connect();
        echo(&mut client, format!("{i}").as_bytes());
    }
    h.wait_for("all closed", |s| {
        s.count(|e| matches!(e, Ev::Closed { .. })) == CYCLES
    });
    let mut held: Vec<TcpStream> = (0..HELD).map(|_| h.connect()).collect();
    for client in &mut held {
        echo(client, b"held");
    }
    let during = fd_count();
    // Listener + wake eventfd + ring or epoll fd, the clients, and (epoll only) the server
    // side of each connection.
    let server_side = if kind == Kind::Uring { 0 } else { HELD };
    assert_eq!(
        during,
        baseline + 3 + HELD + server_side,
        "unexpected fds while running"
    );
    drop(held);
    h.wait_for("held closed", |s| {
        s.count(|e| matches!(e, Ev::Closed { .. })) == CYCLES + HELD
    });
    h.finish().expect("run");
    assert_eq!(fd_count(), baseline, "fds left after run");
}

/// Goal: unix-socket listeners work, and their peer address is `None`.
fn unix_listener(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let path =
        std::env::temp_dir().join(format!("zring-test-{}-{kind:?}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind unix");
    listener.set_nonblocking(true).unwrap();
    let h = Harness::start_on(kind, 16, OwnedFd::from(listener), None, |_| {});
    let mut client = UnixStream::connect(&path).expect("connect unix");
    client
        .set_read_timeout(Some(support::runtime::CLIENT_TIMEOUT))
        .unwrap();
    client.write_all(b"unix").unwrap();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"unix");
    let slot = h.wait_accept(0);
    assert_eq!(
        h.state().events[0],
        Ev::Accept {
            slot,
            listener: 0,
            peer: None
        }
    );
    drop(client);
    h.wait_for("closed", |s| s.events.contains(&Ev::Closed { slot }));
    h.finish().expect("run");
    let _ = std::fs::remove_file(&path);
}

/// Goal: a fast upload much larger than the buffer ring arrives whole and in order (with
/// io_uring the provided buffers run dry and the recv is re-armed).
fn large_upload(kind: Kind) {
    const BYTES: usize = 16 << 20;
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |s| s.echo = false);
    let mut client = h.connect();
    let slot = h.wait_accept(0);
    let data = pattern(BYTES);
    client.write_all(&data).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    h.wait_for("eof", |s| s.events.contains(&Ev::Eof { slot }));
    assert!(h.state().received[&slot] == data, "upload differs");
    h.finish().expect("run");
}

/// Goal: a send to a peer that reset the connection returns its buffer (after the EOF the
/// reset caused), and no second EOF follows.
fn send_to_reset_peer(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, 16, |s| {
        s.echo = false;
        s.close_on_eof = false;
    });
    let client = h.connect();
    let slot = h.wait_accept(0);
    reset_on_close(&client);
    drop(client);
    h.wait_for("eof", |s| s.events.contains(&Ev::Eof { slot }));
    h.command(Command::Send {
        slot,
        buf: vec![3; 1 << 20],
    });
    h.wait_for("buffer back", |s| {
        s.events.contains(&Ev::Sent { slot, len: 1 << 20 })
    });
    assert_eq!(h.state().count(|e| *e == Ev::Eof { slot }), 1);
    h.command(Command::Close { slot });
    h.wait_for("closed", |s| s.events.contains(&Ev::Closed { slot }));
    h.finish().expect("run");
}

/// `SO_LINGER` 0: closing the socket sends a reset.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a valid linger struct and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// Goal: one turn issuing more operations than the submission queue holds (a fan-out of
/// one frame to every client, plus a pause and resume each) loses none of them.
fn fan_out_burst(kind: Kind) {
    fan_out_burst_with(kind, None);
}

/// As `fan_out_burst`, with the connections spread over six io_uring rings of one worker
/// (the cancels of the pauses go to each connection's own ring).
fn fan_out_burst_over_rings(kind: Kind) {
    fan_out_burst_with(kind, Some(500));
}

fn fan_out_burst_with(kind: Kind, files_per_ring: Option<u32>) {
    const CLIENTS: usize = 2500;
    const FRAME: &[u8] = b"frame to everyone";
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, CLIENTS as u32, |s| s.files_per_ring = files_per_ring);
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| h.connect()).collect();
    h.wait_for("all accepted", |s| s.accepted_slots().len() == CLIENTS);
    {
        let mut state = h.state();
        for slot in state.accepted_slots() {
            state.inject.push_back(Command::Send {
                slot,
                buf: FRAME.to_vec(),
            });
            state.inject.push_back(Command::PauseRecv { slot });
            state.inject.push_back(Command::ResumeRecv { slot });
        }
    }
    h.wake();
    for client in &mut clients {
        let mut frame = [0u8; FRAME.len()];
        client.read_exact(&mut frame).unwrap();
        assert_eq!(&frame, FRAME);
        echo(client, b"still reading");
    }
    h.finish().expect("run");
}

/// Goal: resuming more paused connections with data waiting than the buffer ring has
/// buffers loses nothing (io_uring: recvs end with ENOBUFS and are re-armed).
fn resume_many_at_once(kind: Kind) {
    resume_many_at_once_with(kind, None);
}

/// As `resume_many_at_once`, over five rings of 128 connections: each secondary ring's
/// buffer ring (`SUB_BUFFER_COUNT`) runs dry too.
fn resume_many_at_once_over_rings(kind: Kind) {
    const _: () = assert!(128 > zring::runtime::uring::SUB_BUFFER_COUNT as usize);
    resume_many_at_once_with(kind, Some(128));
}

fn resume_many_at_once_with(kind: Kind, files_per_ring: Option<u32>) {
    const CLIENTS: usize = 2 * zring::runtime::uring::BUFFER_COUNT as usize;
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let h = Harness::start(kind, CLIENTS as u32, |s| s.files_per_ring = files_per_ring);
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| h.connect()).collect();
    h.wait_for("all accepted", |s| s.accepted_slots().len() == CLIENTS);
    let slots = h.state().accepted_slots();
    {
        let mut state = h.state();
        let pauses = slots.iter().map(|&slot| Command::PauseRecv { slot });
        state.inject.extend(pauses);
    }
    h.settle();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("waiting {i:05}").as_bytes())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        h.state().count(|e| matches!(e, Ev::Recv { .. })),
        0,
        "read while paused"
    );
    {
        let mut state = h.state();
        let resumes = slots.iter().map(|&slot| Command::ResumeRecv { slot });
        state.inject.extend(resumes);
    }
    h.wake();
    for (i, client) in clients.iter_mut().enumerate() {
        let mut back = [0u8; 13];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, format!("waiting {i:05}").as_bytes());
    }
    h.finish().expect("run");
}

/// Goal (io_uring: one worker's connections over several rings): with rings of 122
/// connections (3 rings: 300 slots + the spare for armed accepts), 300 connections open
/// three rings; closing connections frees their
/// ring's table entries, which new connections reuse (no fourth ring opens, whichever
/// rings the closed ones were in); one shared buffer sent to every connection reaches the
/// clients of every ring; finishing with all three rings full closes everything, leaves
/// no fd, and `run` returns cleanly (it checks every ring's ops and files are accounted).
/// epoll runs the same script with one fd per connection.
fn connections_over_several_rings(kind: Kind) {
    const PER_RING: u32 = 122;
    const RINGS: usize = 3;
    const CLIENTS: usize = 300;
    const FRAME: &[u8] = b"one buffer, every ring";
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let baseline = fd_count();
    let h = Harness::start(kind, CLIENTS as u32, |s| s.files_per_ring = Some(PER_RING));
    // Listener and wake eventfd, the clients, and the server side: the rings' fds and each
    // secondary ring's eventfd (io_uring: direct descriptors take none), or the epoll fd and
    // one fd per connection.
    let server_side = match kind {
        Kind::Uring => 1 + 2 * (RINGS - 1),
        Kind::Epoll => 1 + CLIENTS,
    };
    let expected = baseline + 2 + CLIENTS + server_side;
    let connect = |n: usize| -> Vec<TcpStream> {
        let mut clients: Vec<TcpStream> = (0..n).map(|_| h.connect()).collect();
        for (i, client) in clients.iter_mut().enumerate() {
            echo(client, format!("client {i:04}").as_bytes());
        }
        clients
    };
    let closed = |s: &support::runtime::State| s.count(|e| matches!(e, Ev::Closed { .. }));
    let mut clients = connect(CLIENTS);
    assert_eq!(fd_count(), expected, "three rings for 300 connections");
    // Half of them go (the first rings' connections): as many new ones fit again.
    clients.drain(..CLIENTS / 2);
    h.wait_for("half closed", |s| closed(s) == CLIENTS / 2);
    clients.extend(connect(CLIENTS / 2));
    assert_eq!(fd_count(), expected, "freed entries reused, no new ring");
    // All of them go, and come back.
    drop(clients);
    h.wait_for("all closed", |s| closed(s) == CLIENTS + CLIENTS / 2);
    let mut clients = connect(CLIENTS);
    assert_eq!(fd_count(), expected, "all entries reused, no new ring");
    let slots = h.state().accepted_slots();
    let live = &slots[slots.len() - CLIENTS..];
    let frame: std::sync::Arc<[u8]> = FRAME.into();
    for &slot in live {
        let buf = frame.clone();
        h.state()
            .inject
            .push_back(Command::SendShared { slot, buf });
    }
    h.wake();
    for client in &mut clients {
        let mut got = [0u8; FRAME.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, FRAME);
    }
    h.wait_for("shared sends done", |s| {
        s.count(|e| matches!(e, Ev::Sent { len: 0, .. })) == CLIENTS
    });
    assert_eq!(
        std::sync::Arc::strong_count(&frame),
        1,
        "the runtime let go of every reference"
    );
    h.finish().expect("run");
    for client in &mut clients {
        assert_eq!(read_to_end(client), 0, "no EOF after finish");
    }
    drop(clients);
    assert_eq!(fd_count(), baseline, "fds left after run");
}

#[test]
fn uring_probe_reports_available() {
    if std::env::var_os("ZRING_TEST_SKIP_URING").is_some() {
        return;
    }
    zring::runtime::uring_available().expect("io_uring should work on this machine");
}

/// Goal: `Command::Connect` opens an outbound connection that then behaves as an accepted
/// one (recv, send, eof, close); a refused connect reports `Err` and the slot closes; a
/// `Close` right behind the `Connect` (io_uring: before the socket exists) gives
/// `handle_closed` and no `handle_connected`; no fd is left behind.
fn outbound_connect(kind: Kind) {
    let _serial = serial();
    if skip(kind) {
        return;
    }
    let baseline = fd_count();
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = backend.local_addr().unwrap();
    let h = Harness::start(kind, 16, |_| {});
    // Connect, echo both ways, peer closes.
    let slot = 15;
    h.command(Command::Connect { slot, addr });
    let (mut peer, _) = backend.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    h.wait_for("connected", |s| {
        s.events.contains(&Ev::Connected { slot, ok: true })
    });
    echo(&mut peer, b"through an outbound slot");
    drop(peer);
    h.wait_for("closed", |s| s.events.contains(&Ev::Closed { slot }));
    // Refused: nothing listens on a port just freed.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    h.command(Command::Connect {
        slot: 14,
        addr: dead,
    });
    h.wait_for("refused", |s| {
        s.events.contains(&Ev::Connected {
            slot: 14,
            ok: false,
        })
    });
    h.command(Command::Close { slot: 14 });
    h.wait_for("closed after refusal", |s| {
        s.events.contains(&Ev::Closed { slot: 14 })
    });
    // Close right behind the connect.
    {
        let mut state = h.state();
        state.inject.push_back(Command::Connect { slot: 13, addr });
        state.inject.push_back(Command::Close { slot: 13 });
    }
    h.wake();
    h.wait_for("closed while connecting", |s| {
        s.events.contains(&Ev::Closed { slot: 13 })
    });
    assert!(!h
        .state()
        .events
        .iter()
        .any(|e| matches!(e, Ev::Connected { slot: 13, .. })));
    // The slot works again (a new backend: the aborted connect may sit in the old one's
    // accept queue).
    let backend2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr2 = backend2.local_addr().unwrap();
    h.command(Command::Connect {
        slot: 13,
        addr: addr2,
    });
    let (mut peer, _) = backend2.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    h.wait_for("connected again", |s| {
        s.events.contains(&Ev::Connected { slot: 13, ok: true })
    });
    echo(&mut peer, b"again");
    h.finish().expect("run");
    drop(peer);
    drop(backend);
    drop(backend2);
    assert_eq!(fd_count(), baseline, "fds left behind");
}
