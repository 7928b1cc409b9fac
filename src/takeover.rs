//! Takeover: a new zring takes the listening sockets of the running one, which then drains.
//!
//! The running zring (`--takeover-socket PATH`) listens on a Unix socket at `PATH`. A new
//! one started with `--takeover --takeover-socket PATH`:
//! 1. connects to `PATH` and sends `zring takeover 1 pid=<pid>\n`;
//! 2. gets one message, `zring listeners <n> id=<id> connect=<0|1>\n`, carrying the `n`
//!    listening sockets (`--listen`s and `--prometheus`) as `SCM_RIGHTS` (`listeners`
//!    matches them to its own addresses);
//! 3. starts serving on them (bridge, workers), puts its own takeover socket at `PATH`
//!    (bound aside, then renamed over it), and sends `drain\n`;
//! 4. the old one answers `draining\n` and drains as on SIGTERM: it stops accepting but
//!    keeps the sockets open until it exits, so what waits in their backlog is accepted by
//!    the new one, never reset.
//!
//! The listening sockets are ordinary fds in both runtimes (io_uring accepts *into* direct
//! descriptors, but listens on a regular fd), so they can be passed as they are.
//!
//! If the new one fails before step 3 (it closes the connection, or sends nothing for
//! [`DRAIN_WAIT`]), the old one goes on serving as if nothing happened. The old one serves
//! one successor: after `draining` its takeover socket closes.
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::log;

/// The most sockets one takeover passes (the kernel's `SCM_MAX_FD` is 253).
pub const FDS_MAX: usize = 64;
/// How long the old process waits for the new one's `drain` (its startup: bridge binds,
/// workers, TLS identities).
pub const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// How long a step of the exchange may take otherwise.
const STEP_WAIT: Duration = Duration::from_secs(5);
const HELLO: &str = "zring takeover 1";
const LINE_BYTES_MAX: usize = 256;

/// What the running zring offers its successor.
pub struct Offer {
    pub listener: UnixListener,
    /// The listening sockets to pass, in any order.
    pub fds: Vec<RawFd>,
    /// This process's `--id` and `--zclient-connect`, for the new one's checks.
    pub id: String,
    pub connect: bool,
}

/// What the new zring got from the old one; [`Taken::finish`] tells the old one to drain.
pub struct Taken {
    stream: UnixStream,
    pub fds: Vec<RawFd>,
    pub id: String,
    pub connect: bool,
}

/// Binds the takeover socket at `path`, replacing what is there only once bound: bound at
/// a name beside it, then renamed over it (a successor connecting meanwhile reaches one
/// process or the other, never nothing). Refuses a path where a zring answers unless
/// `replacing` (the takeover of that zring is under way).
pub fn bind(path: &Path, replacing: bool) -> Result<UnixListener, String> {
    if !replacing && UnixStream::connect(path).is_ok() {
        return Err(format!(
            "--takeover-socket {}: a zring is serving there; start with --takeover to replace it",
            path.display()
        ));
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{}", std::process::id()));
    let aside = PathBuf::from(aside);
    let _ = std::fs::remove_file(&aside);
    let listener = UnixListener::bind(&aside)
        .map_err(|e| format!("--takeover-socket {}: {e}", aside.display()))?;
    std::fs::rename(&aside, path).map_err(|e| {
        let _ = std::fs::remove_file(&aside);
        format!("--takeover-socket {}: {e}", path.display())
    })?;
    Ok(listener)
}

/// The new zring's side, steps 1 and 2.
pub fn take(path: &Path) -> Result<Taken, String> {
    let fail = |e: &dyn std::fmt::Display| format!("--takeover {}: {e}", path.display());
    let mut stream = UnixStream::connect(path).map_err(|e| fail(&e))?;
    stream
        .set_read_timeout(Some(STEP_WAIT))
        .map_err(|e| fail(&e))?;
    stream
        .set_write_timeout(Some(STEP_WAIT))
        .map_err(|e| fail(&e))?;
    writeln!(stream, "{HELLO} pid={}", std::process::id()).map_err(|e| fail(&e))?;
    let (line, fds) = recv_with_fds(&stream).map_err(|e| fail(&e))?;
    let parse = || -> Option<(usize, String, bool)> {
        let mut words = line.strip_prefix("zring listeners ")?.split(' ');
        let n = words.next()?.parse().ok()?;
        let id = words.next()?.strip_prefix("id=")?.to_owned();
        let connect = words.next()?.strip_prefix("connect=")? == "1";
        Some((n, id, connect))
    };
    let Some((n, id, connect)) = parse() else {
        close_fds(&fds);
        return Err(fail(&format!("unexpected answer {line:?}")));
    };
    if n != fds.len() {
        close_fds(&fds);
        return Err(fail(&format!("announced {n} sockets, got {}", fds.len())));
    }
    Ok(Taken {
        stream,
        fds,
        id,
        connect,
    })
}

impl Taken {
    /// Step 3's end: the old zring drains. Returns once it has said so.
    pub fn finish(mut self) -> Result<(), String> {
        self.stream
            .write_all(b"drain\n")
            .map_err(|e| format!("--takeover: telling the old zring to drain: {e}"))?;
        let mut answer = String::new();
        BufReader::new(&self.stream)
            .take(LINE_BYTES_MAX as u64)
            .read_line(&mut answer)
            .map_err(|e| format!("--takeover: the old zring's answer: {e}"))?;
        match answer.as_str() {
            "draining\n" => Ok(()),
            a => Err(format!("--takeover: the old zring answered {a:?}")),
        }
    }
}

/// The running zring's side: serves successors on its own thread until one has taken over;
/// then calls `drain` (which must start the drain) and ends.
pub fn serve(
    offer: Offer,
    handed_over: impl Fn() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("takeover".into())
        .spawn(move || {
            // Never ends on its own but by a takeover: the process exits around it.
            for stream in offer.listener.incoming() {
                let Ok(stream) = stream else { continue };
                match hand_over(&offer, &stream) {
                    Ok(pid) => {
                        log!(
                            log::INFO,
                            "zring",
                            "takeover: pid {pid} took the listeners; draining"
                        );
                        handed_over();
                        let _ = (&stream).write_all(b"draining\n");
                        return;
                    }
                    Err(e) => log!(log::WARN, "zring", "takeover failed ({e}); still serving"),
                }
            }
        })
}

/// One successor: its hello, the sockets, then its `drain` (the successor's pid), or why
/// not.
fn hand_over(offer: &Offer, stream: &UnixStream) -> Result<String, String> {
    stream
        .set_read_timeout(Some(STEP_WAIT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(STEP_WAIT))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream).take(LINE_BYTES_MAX as u64);
    let mut hello = String::new();
    reader.read_line(&mut hello).map_err(|e| e.to_string())?;
    let pid = hello
        .trim_end()
        .strip_prefix(HELLO)
        .and_then(|rest| rest.strip_prefix(" pid="))
        .ok_or_else(|| format!("unexpected hello {hello:?}"))?
        .to_owned();
    log!(
        log::INFO,
        "zring",
        "takeover: pid {pid} asks for the listeners; passing {}",
        offer.fds.len()
    );
    let line = format!(
        "zring listeners {} id={} connect={}\n",
        offer.fds.len(),
        offer.id,
        u8::from(offer.connect)
    );
    send_with_fds(stream, line.as_bytes(), &offer.fds).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(DRAIN_WAIT))
        .map_err(|e| e.to_string())?;
    let mut drain = String::new();
    reader.set_limit(LINE_BYTES_MAX as u64);
    reader.read_line(&mut drain).map_err(|e| e.to_string())?;
    match drain.as_str() {
        "drain\n" => Ok(pid),
        "" => Err(format!("pid {pid} went away before it served")),
        d => Err(format!("pid {pid} sent {d:?}")),
    }
}

/// Closes fds received in a takeover that will not be used.
pub fn close_fds(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: fds we received and own; nothing else refers to them.
        unsafe { libc::close(fd) };
    }
}

/// Space for `FDS_MAX` fds in a control message (`CMSG_SPACE`), as u64s for alignment.
const CMSG_WORDS: usize = (FDS_MAX * 4 + 32).div_ceil(8);

/// One `sendmsg` of `bytes` with `fds` attached (`SCM_RIGHTS`).
fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    assert!(
        fds.len() <= FDS_MAX,
        "more sockets than one takeover passes"
    );
    let mut control = [0u64; CMSG_WORDS];
    let fds_len = std::mem::size_of_val(fds) as u32;
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(fds_len) } as usize;
        assert!(msg.msg_controllen <= std::mem::size_of_val(&control));
        // SAFETY: msg_control points at `control`, large enough (asserted) for one header
        // and `fds`; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fds_len) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fds_len as usize,
            );
        }
    }
    let n = loop {
        // SAFETY: every pointer in `msg` refers to live locals for the call's duration.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match retry(n)? {
            Some(n) => break n,
            None => continue,
        }
    };
    if n != bytes.len() {
        return Err(std::io::Error::other("short sendmsg"));
    }
    Ok(())
}

/// A socket call's result: `None` to call again after `EINTR`. A socket with a timeout
/// (ours have) is not restarted by the kernel after an interruption, and io_uring's task
/// work interrupts like a signal (seen at startup, after the runtime probe's ring).
fn retry(n: isize) -> std::io::Result<Option<usize>> {
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// One `recvmsg`: a line (the whole message) and the fds attached, close-on-exec.
fn recv_with_fds(stream: &UnixStream) -> std::io::Result<(String, Vec<RawFd>)> {
    let mut buf = [0u8; LINE_BYTES_MAX];
    let mut control = [0u64; CMSG_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: `msg` points at live buffers of the sizes it states.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match retry(n)? {
            Some(n) => break n,
            None => continue,
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` and set `msg_controllen`; the CMSG macros walk
    // only within it, and each SCM_RIGHTS payload is a whole number of c_ints.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / 4 {
                    fds.push(std::ptr::read_unaligned(data.cast::<RawFd>().add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        close_fds(&fds);
        return Err(std::io::Error::other(
            "more sockets than one takeover passes",
        ));
    }
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok((line.trim_end_matches('\n').to_owned(), fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_pass_and_the_old_side_hears_drain() {
        // Goal: the exchange end to end between two threads over a real Unix socket: the
        // passed fd is another fd for the same listening socket (a connection queued on
        // it before the pass is accepted through the new fd), and `drain` is heard.
        let dir = std::env::temp_dir().join(format!("zring-takeover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let queued = std::net::TcpStream::connect(addr).unwrap();
        let offer = Offer {
            listener: bind(&path, false).unwrap(),
            fds: vec![tcp.as_raw_fd()],
            id: "zr".into(),
            connect: false,
        };
        assert!(bind(&path, false).is_err(), "a live socket is not replaced");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = serve(offer, move || tx.send(()).unwrap()).unwrap();
        let taken = take(&path).unwrap();
        assert_eq!((taken.id.as_str(), taken.connect), ("zr", false));
        assert_eq!(taken.fds.len(), 1);
        assert_ne!(taken.fds[0], tcp.as_raw_fd());
        assert!(rx.try_recv().is_err(), "no drain before `drain`");
        let fd = taken.fds[0];
        taken.finish().unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        thread.join().unwrap();
        drop(tcp); // the old process's fd closes: the socket lives on in the new fd
        use std::os::fd::FromRawFd;
        // SAFETY: the fd we received, owned by nobody else.
        let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        let (accepted, _) = l.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), queued.local_addr().unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }
}
