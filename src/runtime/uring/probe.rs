//! `probe`: can this process use io_uring the way `run` does?
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, Probe};

use super::buf_ring::BufRing;
use super::ring::Ring;
use super::user_data::{self, Kind};

/// How long the self-test waits for its own loopback completions.
const SELF_TEST_WAIT: Duration = Duration::from_secs(2);

pub fn probe() -> Result<(), String> {
    let mut ring =
        Ring::new(8, 16, 16, Default::default()).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) => {
                "io_uring_setup denied (EPERM): seccomp profile or kernel.io_uring_disabled".into()
            }
            Some(libc::ENOSYS) => "io_uring_setup not available (ENOSYS): kernel or seccomp".into(),
            _ => format!("io_uring_setup failed: {e}"),
        })?;
    check_opcodes(&ring)?;
    ring.submitter()
        .register_files_sparse(2)
        .map_err(|e| format!("sparse registered file table unsupported: {e}"))?;
    // A worker's further rings notify ring 0 through a registered eventfd.
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nothing else owns.
    let efd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) };
    ring.register_notify(efd.as_raw_fd())
        .map_err(|e| format!("IORING_REGISTER_EVENTFD failed: {e}"))?;
    let mut bufs = BufRing::new(2, 64, 0).map_err(|e| format!("buffer ring memory: {e}"))?;
    bufs.register(&ring.submitter())
        .map_err(|e| format!("IORING_REGISTER_PBUF_RING unsupported (kernel < 5.19): {e}"))?;
    let result = recv_self_test(&mut ring, &mut bufs);
    // Drop order: the ring before `bufs`. After a failure a recv may still be armed on the
    // buffers: leak them rather than free memory the kernel could still write.
    drop(ring);
    if result.is_err() {
        std::mem::forget(bufs);
    }
    result
}

fn check_opcodes(ring: &Ring) -> Result<(), String> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("IORING_REGISTER_PROBE failed: {e}"))?;
    let needed = [
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::Shutdown::CODE, "SHUTDOWN"),
        (opcode::Close::CODE, "CLOSE"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        // Ring 0 reads the eventfds of a worker's further rings.
        (opcode::Read::CODE, "READ"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(format!("io_uring opcode IORING_OP_{name} unsupported"));
        }
    }
    Ok(())
}

/// Multishot recv on a registered socket from the buffer ring: one byte, then EOF.
fn recv_self_test(ring: &mut Ring, bufs: &mut BufRing) -> Result<(), String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    ring.submitter()
        .register_files_update(0, &[ours.as_raw_fd()])
        .map_err(|e| format!("registering a file: {e}"))?;
    ring.recv_multi(0, bufs.group(), user_data::encode(Kind::Probe, 0, 0));
    (&theirs)
        .write_all(b"x")
        .map_err(|e| format!("socketpair write: {e}"))?;
    let first = wait_one(ring)?;
    let bid = cqueue::buffer_select(first.flags());
    if first.result() != 1 || bid.is_none() || !cqueue::more(first.flags()) {
        // The recv may still be armed: leave it to ring teardown (bufs outlive the ring).
        return Err(format!(
            "multishot recv unsupported (result {})",
            first.result()
        ));
    }
    let bid = bid.expect("checked above");
    assert_eq!(bufs.take(bid, 1), b"x");
    bufs.recycle(bid);
    bufs.publish();
    drop(theirs);
    let last = wait_one(ring)?;
    ring.completed();
    if last.result() != 0 || cqueue::more(last.flags()) {
        return Err(format!(
            "multishot recv EOF misbehaves (result {})",
            last.result()
        ));
    }
    Ok(())
}

fn wait_one(ring: &mut Ring) -> Result<cqueue::Entry, String> {
    let give_up = Instant::now() + SELF_TEST_WAIT;
    let mut cqes = Vec::with_capacity(1);
    loop {
        ring.drain(&mut cqes, 1);
        if let Some(cqe) = cqes.pop() {
            return Ok(cqe);
        }
        let now = Instant::now();
        if now >= give_up {
            return Err("io_uring self-test: no completion".into());
        }
        ring.submit_and_wait(Some(give_up - now), false)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
    }
}
