//! Plain syscalls and C structs both runtimes need (the epoll runtime uses these too):
//! socket addresses, the wake eventfd, the fd limit.
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Storage for an address `accept` writes, and its length, at a stable place.
#[repr(C)]
pub struct PeerStorage {
    pub addr: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl PeerStorage {
    pub fn new() -> PeerStorage {
        PeerStorage {
            // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
            addr: unsafe { std::mem::zeroed() },
            len: SOCKADDR_STORAGE_BYTES,
        }
    }

    /// Re-arms the length before handing the storage to `accept` again.
    pub fn reset(&mut self) {
        self.len = SOCKADDR_STORAGE_BYTES;
    }

    /// The peer of an IPv4/IPv6 connection; `None` for unix sockets (and anything else).
    pub fn peer(&self) -> Option<SocketAddr> {
        let len = self.len as usize;
        match i32::from(self.addr.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, the length covers
                // it, and sockaddr_storage is aligned for every sockaddr type.
                let sin = unsafe { &*(&self.addr as *const _ as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &*(&self.addr as *const _ as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

impl Default for PeerStorage {
    fn default() -> Self {
        Self::new()
    }
}

const SOCKADDR_STORAGE_BYTES: libc::socklen_t = size_of::<libc::sockaddr_storage>() as _;

/// Empties the wake eventfd (non-blocking). Returns whether it had been written.
pub fn drain_eventfd(fd: RawFd) -> bool {
    let mut counter = [0u8; 8];
    // SAFETY: reads at most 8 bytes into an 8-byte local buffer.
    let n = unsafe { libc::read(fd, counter.as_mut_ptr().cast(), counter.len()) };
    n == 8
}

/// The soft `RLIMIT_NOFILE`: the kernel's cap on one ring's registered file table.
pub fn nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// Accepts one connection on a non-blocking listener (the epoll runtime's accept): the new
/// socket is non-blocking and close-on-exec.
pub fn accept_nonblocking(listener: RawFd, peer: &mut PeerStorage) -> io::Result<RawFd> {
    peer.reset();
    // SAFETY: `peer.addr`/`peer.len` are a valid sockaddr_storage and its length.
    let fd = unsafe {
        libc::accept4(
            listener,
            (&mut peer.addr as *mut libc::sockaddr_storage).cast(),
            &mut peer.len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// `recv` into `buf`; `Ok(0)` is end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `send` with `MSG_NOSIGNAL`: a peer that went away is an `EPIPE`, never a `SIGPIPE`.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes from `buf`.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `shutdown(SHUT_WR)`.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers.
    let rc = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt(SO_ERROR)`: how a non-blocking connect ended.
pub fn socket_error(fd: RawFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for the call and sized as the option needs.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match err {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A socket address in the kernel's layout, for `IORING_OP_CONNECT` (kept unmoved, boxed,
/// until the connect completes).
pub struct RawAddr {
    pub storage: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl RawAddr {
    pub fn new(addr: std::net::SocketAddr) -> RawAddr {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            std::net::SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            std::net::SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `addr` into a storage the way the kernel would.
    fn storage_of<T>(addr: &T) -> PeerStorage {
        let mut storage = PeerStorage::new();
        assert!(size_of::<T>() <= size_of::<libc::sockaddr_storage>());
        // SAFETY: copies size_of::<T>() bytes into the larger, aligned storage.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (addr as *const T).cast::<u8>(),
                (&mut storage.addr as *mut libc::sockaddr_storage).cast::<u8>(),
                size_of::<T>(),
            );
        }
        storage.len = size_of::<T>() as libc::socklen_t;
        storage
    }

    #[test]
    fn peer_v4() {
        // SAFETY: all-zero bytes are a valid sockaddr_in.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = 8080u16.to_be();
        sin.sin_addr.s_addr = u32::from(Ipv4Addr::new(127, 0, 0, 2)).to_be();
        let peer = storage_of(&sin).peer();
        assert_eq!(peer, Some("127.0.0.2:8080".parse().unwrap()));
    }

    #[test]
    fn peer_v6() {
        // SAFETY: all-zero bytes are a valid sockaddr_in6.
        let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = 443u16.to_be();
        sin6.sin6_addr.s6_addr = Ipv6Addr::LOCALHOST.octets();
        let peer = storage_of(&sin6).peer();
        assert_eq!(peer, Some("[::1]:443".parse().unwrap()));
    }

    #[test]
    fn peer_unix_and_truncated_are_none() {
        // SAFETY: all-zero bytes are a valid sockaddr_un.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        assert_eq!(storage_of(&sun).peer(), None);
        // SAFETY: as above.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        let mut short = storage_of(&sin);
        short.len = 4;
        assert_eq!(short.peer(), None);
    }
}
