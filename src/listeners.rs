//! The listening sockets: bound by zring, or inherited, already listening, from systemd
//! (socket activation: `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, sd_listen_fds(3)) or
//! from the zring being replaced (`takeover`). An inherited socket is the same kernel
//! object as its giver's: connections waiting in its backlog stay there, and whichever
//! process accepts next gets them. Binding a new socket instead (even with `SO_REUSEPORT`)
//! makes a second queue, and closing the old one resets what waits in it.
//!
//! Inherited sockets are matched to the addresses zring wants (`--listen`, `--prometheus`)
//! by what `getsockname(2)` says they are bound to, never by their order. What no inherited
//! socket matches is bound here. This module knows nothing of what is served on them.
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::{ListenAddr, SocketFile};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: RawFd = 3;
/// A bound on `LISTEN_FDS` (a unit has a handful of sockets; this guards the loop).
pub const INHERITED_FDS_MAX: usize = 250;

/// Where a listening socket came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Bound by this process.
    Bound,
    /// Passed by systemd (socket activation).
    Activated,
    /// Taken over from the zring this one replaces.
    TakenOver,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Bound => "bound",
            Origin::Activated => "from systemd",
            Origin::TakenOver => "taken over",
        }
    }
}

/// An inherited listening socket, not yet matched to an address.
#[derive(Debug)]
pub struct Inherited {
    pub fd: RawFd,
    pub addr: ListenAddr,
    pub origin: Origin,
    /// systemd's `FileDescriptorName=` (from `LISTEN_FDNAMES`), for log lines.
    pub name: Option<String>,
}

/// The sockets systemd passed this process (none without socket activation). Each must be
/// a listening stream socket; each gets `FD_CLOEXEC` and `O_NONBLOCK`. The variables are
/// removed from the environment, so no child of zring takes the fds for its own.
pub fn activated() -> Result<Vec<Inherited>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new()); // meant for another process (sd_listen_fds(3))
    }
    let count: usize = count
        .parse()
        .map_err(|_| format!("LISTEN_FDS={count:?} is not a number"))?;
    if count > INHERITED_FDS_MAX {
        return Err(format!("LISTEN_FDS={count}: more than {INHERITED_FDS_MAX}"));
    }
    let names: Vec<String> = names
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let fd = SD_LISTEN_FDS_START + i as RawFd;
        let addr = inherit(fd).map_err(|e| format!("LISTEN_FDS: fd {fd}: {e}"))?;
        out.push(Inherited {
            fd,
            addr,
            origin: Origin::Activated,
            name: names.get(i).cloned().filter(|n| !n.is_empty()),
        });
    }
    Ok(out)
}

/// Checks that `fd` is a listening stream socket, makes it close-on-exec and non-blocking,
/// and returns what it is bound to.
pub fn inherit(fd: RawFd) -> Result<ListenAddr, String> {
    let int_opt = |level, name| -> std::io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid out pointers of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        match r {
            0 => Ok(v),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    let kind = int_opt(libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| e.to_string())?;
    if kind != libc::SOCK_STREAM {
        return Err("not a stream socket".into());
    }
    if int_opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(|e| e.to_string())? != 1 {
        return Err("not listening".into());
    }
    // SAFETY: fcntl on an fd we were given; only flag bits change.
    unsafe {
        let fd_flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, fd_flags | libc::FD_CLOEXEC);
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let addr = local_addr(fd).map_err(|e| format!("getsockname: {e}"))?;
    if let ListenAddr::Tcp(_) = addr {
        set_nodelay(fd);
    }
    Ok(addr)
}

/// What a socket is bound to (`getsockname(2)`): an IPv4 or IPv6 address, or a Unix path.
pub fn local_addr(fd: RawFd) -> std::io::Result<ListenAddr> {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` is large enough for any address, `len` says so.
    let r = unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(&ss as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Ok(ListenAddr::Tcp(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(&ss as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Ok(ListenAddr::Tcp(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))))
        }
        libc::AF_UNIX => {
            // SAFETY: the family says the storage holds a sockaddr_un.
            let a: &libc::sockaddr_un = unsafe { &*(&ss as *const libc::sockaddr_storage).cast() };
            let n = (len as usize)
                .saturating_sub(std::mem::size_of::<libc::sa_family_t>())
                .min(a.sun_path.len());
            let bytes: Vec<u8> = a.sun_path[..n]
                .iter()
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect();
            Ok(ListenAddr::Local(PathBuf::from(
                std::ffi::OsStr::from_bytes(&bytes),
            )))
        }
        f => Err(std::io::Error::other(format!("address family {f}"))),
    }
}

/// Whether a socket bound to `got` serves `want`: the same address, or, for a wanted
/// `0.0.0.0:port`, the IPv6 wildcard `[::]:port` (systemd's `ListenStream=PORT`, which
/// takes IPv4 connections too unless `BindIPv6Only=ipv6-only`).
pub fn matches(want: &ListenAddr, got: &ListenAddr) -> bool {
    match (want, got) {
        (ListenAddr::Tcp(SocketAddr::V4(w)), ListenAddr::Tcp(SocketAddr::V6(g)))
            if w.ip().is_unspecified() && g.ip().is_unspecified() =>
        {
            w.port() == g.port()
        }
        (ListenAddr::Tcp(w), ListenAddr::Tcp(g)) => w == g,
        (ListenAddr::Local(w), ListenAddr::Local(g)) => {
            w == g || std::fs::canonicalize(w).ok() == std::fs::canonicalize(g).ok() && w.exists()
        }
        _ => false,
    }
}

/// Gives each wanted address the inherited socket bound to it (`None`: bind it). Returns
/// the sockets matched, in `wanted`'s order, and the inherited ones nothing wanted.
pub fn assign(
    wanted: &[ListenAddr],
    inherited: Vec<Inherited>,
) -> (Vec<Option<Inherited>>, Vec<Inherited>) {
    let mut left = inherited;
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        // Exact matches first, so `[::]:80` and `0.0.0.0:80` both given go where they say.
        let i = left
            .iter()
            .position(|l| &l.addr == w)
            .or_else(|| left.iter().position(|l| matches(w, &l.addr)));
        out.push(i.map(|i| left.swap_remove(i)));
    }
    (out, left)
}

/// Binds a listening socket for `addr`: non-blocking, a deep backlog (the kernel caps it at
/// somaxconn), TCP_NODELAY inherited by accepted sockets. A Unix path is replaced.
pub fn bind(addr: &ListenAddr) -> Result<RawFd, String> {
    match addr {
        ListenAddr::Local(path) => {
            let _ = std::fs::remove_file(path);
            let l = std::os::unix::net::UnixListener::bind(path)
                .map_err(|e| format!("listen {}: {e}", path.display()))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let fd = l.into_raw_fd();
            // SAFETY: fd is a listening socket we own; raising its backlog is harmless.
            unsafe { libc::listen(fd, 65535) };
            Ok(fd)
        }
        ListenAddr::Tcp(sa) => tcp_bind(*sa).map_err(|e| format!("listen {sa}: {e}")),
    }
}

/// Gives a bound Unix socket's file the `mode=`, `user=` and `group=` of its `--listen`
/// (only a socket zring bound: an inherited one keeps what its binder gave it). A name that
/// does not resolve, or a chown zring may not do, is a startup error naming the socket.
pub fn apply_socket_file(path: &Path, f: &SocketFile) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let err =
        |what: &str, e: &dyn std::fmt::Display| format!("listen {}: {what}: {e}", path.display());
    if let Some(mode) = f.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| err("mode", &e))?;
    }
    let uid = match &f.user {
        Some(u) => Some(user_id(u).ok_or_else(|| err("user", &format!("no user {u:?}")))?),
        None => None,
    };
    let gid = match &f.group {
        Some(g) => Some(group_id(g).ok_or_else(|| err("group", &format!("no group {g:?}")))?),
        None => None,
    };
    if uid.is_some() || gid.is_some() {
        // -1 (as unsigned) leaves that id as it is (chown(2)).
        std::os::unix::fs::chown(path, uid, gid).map_err(|e| err("chown", &e))?;
    }
    Ok(())
}

/// A user name or numeric uid, as the system's user database knows it.
fn user_id(name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let c = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwnam_r writes only into `pwd` and `buf` (its length passed), and sets
    // `out` to `&pwd` or null; nothing is read from them after this function.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        let r = libc::getpwnam_r(
            c.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        );
        (r == 0 && !out.is_null()).then_some(pwd.pw_uid)
    }
}

/// A group name or numeric gid, as the system's group database knows it.
fn group_id(name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let c = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in `user_id`, with getgrnam_r and a `group` record.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        let r = libc::getgrnam_r(
            c.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        );
        (r == 0 && !out.is_null()).then_some(grp.gr_gid)
    }
}

fn tcp_bind(sa: SocketAddr) -> std::io::Result<RawFd> {
    let l = std::net::TcpListener::bind(sa)?;
    l.set_nonblocking(true)?;
    let fd = l.into_raw_fd();
    set_nodelay(fd);
    // SAFETY: fd is our listening socket.
    unsafe { libc::listen(fd, 65535) };
    Ok(fd)
}

/// Accepted sockets inherit TCP_NODELAY on Linux: responses are written whole.
fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: fd is a TCP socket; the option value points at a live c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub fn describe(a: &ListenAddr) -> String {
    match a {
        ListenAddr::Tcp(s) => s.to_string(),
        ListenAddr::Local(p) => p.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_sockets_are_matched_by_address_not_order() {
        // Goal: two real listening sockets, given in the opposite order, each go to the
        // address it is bound to; a wanted address nobody passed stays to bind, and a
        // passed socket nobody wants is returned.
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let take = |l: std::net::TcpListener| {
            let fd = l.into_raw_fd();
            Inherited {
                addr: inherit(fd).unwrap(),
                fd,
                origin: Origin::TakenOver,
                name: None,
            }
        };
        let (fa, fb, fc) = (take(a), take(b), take(c));
        let (a_fd, b_fd, c_fd) = (fa.fd, fb.fd, fc.fd);
        assert_eq!(fa.addr, ListenAddr::Tcp(aa));
        let other = ListenAddr::Tcp("127.0.0.1:1".parse().unwrap());
        let wanted = [ListenAddr::Tcp(aa), other, ListenAddr::Tcp(ba)];
        let (got, unused) = assign(&wanted, vec![fc, fb, fa]);
        let fds: Vec<Option<RawFd>> = got.iter().map(|g| g.as_ref().map(|g| g.fd)).collect();
        assert_eq!(fds, [Some(a_fd), None, Some(b_fd)]);
        assert_eq!(unused.len(), 1);
        assert_eq!(unused[0].fd, c_fd);
    }

    #[test]
    fn the_ipv4_wildcard_takes_the_ipv6_wildcard_and_unix_paths_match() {
        let v4: ListenAddr = ListenAddr::Tcp("0.0.0.0:8000".parse().unwrap());
        let v6: ListenAddr = ListenAddr::Tcp("[::]:8000".parse().unwrap());
        assert!(matches(&v4, &v6));
        assert!(!matches(
            &v4,
            &ListenAddr::Tcp("[::]:8001".parse().unwrap())
        ));
        assert!(!matches(&v6, &v4));
        let dir = std::env::temp_dir().join(format!("zring-listeners-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let fd = bind(&ListenAddr::Local(path.clone())).unwrap();
        let got = inherit(fd).unwrap();
        assert_eq!(got, ListenAddr::Local(path.clone()));
        assert!(matches(&ListenAddr::Local(path), &got));
        // A socket that is not listening is refused.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(inherit(s.into_raw_fd()).unwrap_err(), "not a stream socket");
        let _ = std::fs::remove_dir_all(dir);
    }
}
