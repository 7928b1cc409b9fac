//! Fan-out through zring and the example handler: `broadcast <text>` on `/ws/broadcast`
//! makes the handler send `<text>` to every member as list-form packets of up to 128 ids.
//! zring builds one frame per packet and worker and shares it among the targets; a client
//! that does not read must not hold up the others, and zring's memory must stay bounded
//! while it is stuck. With io_uring the connections are spread over several rings per
//! worker (rings of 100 connections), so the shared sends go to every ring.
#[macro_use]
mod support;

use std::time::Duration;

use support::ws::Ws;
use support::Stack;

/// Connections per io_uring ring for these tests: 2 workers × ~150 connections → 2 rings
/// each.
const FILES_PER_RING: &str = "100";
const READERS: usize = 150;
const STALLED: usize = 100;
const MESSAGES: usize = 100;
/// Big enough that a stalled client's socket buffers fill within the run.
const MESSAGE_BYTES: usize = 2000;
const READ_WAIT: Duration = Duration::from_secs(30);

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The `m`th broadcast's text: its number first, padded to `MESSAGE_BYTES`.
fn message(m: usize) -> Vec<u8> {
    let mut text = format!("{m:05} ").into_bytes();
    text.resize(MESSAGE_BYTES, b'a' + (m % 26) as u8);
    text
}

/// Reads `MESSAGES` broadcasts, which must arrive whole and in order.
fn read_all_broadcasts(c: &mut Ws) {
    for m in 0..MESSAGES {
        let (_, data, _) = c.read_message(READ_WAIT);
        assert_eq!(data, message(m), "broadcast {m} differs or is out of order");
    }
}

/// A member whose socket takes little before it stops the sender: the receive buffer is
/// set before connecting (so the window is small from the start; shrinking it later makes
/// the kernel drop data and back off for seconds).
fn small_buffer_member(port: u16) -> Ws {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a fresh socket we own; pointers are to live locals.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let bytes: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            4,
        );
        assert_eq!(rc, 0);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = port.to_be();
        sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    };
    let request = support::ws::upgrade_request("/ws/broadcast", "");
    let c = Ws::handshake_on(stream, request.as_bytes()).expect("handshake");
    assert!(c.head.starts_with("HTTP/1.1 101 "), "{}", c.head);
    c
}

both_runtimes! {
    // Goal: 150 reading clients get every one of 100 broadcasts (2 KB each), whole and in
    // order, while 100 other members read nothing (their sockets fill up and their sends
    // stay in flight); zring's memory grows by no more than a bound while they are stuck
    // (per client at most its credits: the handler holds back the rest); and once the
    // stalled clients read, they get every broadcast too.
    broadcast_reaches_readers_past_stalled_clients(rt) {
        let env = [("ZRING_URING_FILES_PER_RING", FILES_PER_RING)];
        let srv = Stack::with_example_env(rt, &[], &env);
        let stalled: Vec<Ws> = (0..STALLED)
            .map(|_| small_buffer_member(srv.port))
            .collect();
        let mut readers: Vec<Ws> = (0..READERS)
            .map(|_| Ws::connect(srv.port, "/ws/broadcast"))
            .collect();
        let mut commander = readers.pop().unwrap();
        let before = rss_kib(srv.zring.pid());
        for m in 0..MESSAGES {
            let mut command = b"broadcast ".to_vec();
            command.extend_from_slice(&message(m));
            commander.text(&command);
        }
        readers.push(commander);
        // Readers in a few threads, so none waits behind another's reads.
        let groups: Vec<Vec<Ws>> = {
            let mut groups: Vec<Vec<Ws>> = (0..6).map(|_| Vec::new()).collect();
            for (i, c) in readers.into_iter().enumerate() {
                groups[i % 6].push(c);
            }
            groups
        };
        let threads: Vec<_> = groups
            .into_iter()
            .map(|mut group| {
                std::thread::spawn(move || {
                    for c in &mut group {
                        read_all_broadcasts(c);
                    }
                    group
                })
            })
            .collect();
        let readers: Vec<Vec<Ws>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let after = rss_kib(srv.zring.pid());
        // Per stalled client zring holds at most its credits (--buffer-size, 8 KiB) plus the
        // send in flight; the rest waits in the handler. 100 × 16 KiB = 1.6 MiB, plus the
        // pools and allocator arenas a burst warms up (~11 MiB measured): not 100 × 200 KB.
        assert!(
            after < before + 32 * 1024,
            "zring grew from {before} KiB to {after} KiB with {STALLED} stalled clients"
        );
        // The stalled clients were only held back: reading now, they get everything.
        let mut stalled = stalled;
        for c in &mut stalled {
            read_all_broadcasts(c);
        }
        drop(readers);
    }
}

/// Connections per ring for the mass-close test: the second ring of each worker closes
/// ~2,500 connections at once, ~4 completions each, well past its 4,096-entry CQ.
const MASS_FILES_PER_RING: &str = "2500";
const MASS_CLIENTS: usize = 10_000;

both_runtimes! {
    // Goal: zring holding 10,000 WebSockets exits promptly on SIGTERM, each client told why
    // (1001). With io_uring, the completions of closing a whole secondary ring overflow its
    // CQ; they once stayed in the kernel's overflow list, unseen, and zring never exited.
    sigterm_with_full_rings_exits(rt) {
        let env = [("ZRING_URING_FILES_PER_RING", MASS_FILES_PER_RING)];
        let mut srv = Stack::with_example_env(rt, &["--stream-maxconn", "12000"], &env);
        let mut clients: Vec<Ws> = (0..MASS_CLIENTS)
            .map(|_| Ws::connect(srv.port, "/ws"))
            .collect();
        let status = srv.zring.terminate(Duration::from_secs(30));
        assert!(status.is_some(), "zring still running 30 s after SIGTERM");
        for c in clients.iter_mut().step_by(97) {
            let f = c.read_frame(Duration::from_secs(5)).expect("a close frame");
            assert_eq!(f.close_code(), Some(1001));
        }
    }
}
