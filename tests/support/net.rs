//! Ports, temp dirs and waiting for a listener.
use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::proc::Proc;

/// `n` distinct loopback TCP ports that were free a moment ago, outside the ephemeral range
/// (so client source ports cannot take them), never handed out twice by this process, and
/// reserved against the other test processes (nextest runs each test in its own): each
/// port handed out holds an exclusive `flock` on `/tmp/zring-test-ports/PORT` for the rest
/// of the process's life, and a port whose file another live process holds is skipped.
/// Without it two tests could pick the same port at once, and one's `wait_port` could find
/// the other's server listening there and talk to it. A program other than a test may still
/// take one first: servers that fail to bind are retried by their starters (`Stack`).
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::hash::{BuildHasher, Hasher};
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    static LOCKS: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let used = USED.get_or_init(Default::default);
    let dir = std::path::Path::new("/tmp/zring-test-ports");
    let _ = std::fs::create_dir_all(dir);
    let state = std::collections::hash_map::RandomState::new();
    let mut out = Vec::new();
    let mut tries = 0u64;
    while out.len() < n {
        tries += 1;
        assert!(tries < 100_000, "no free ports found");
        let mut h = state.build_hasher();
        h.write_u64(tries);
        h.write_u32(std::process::id());
        let p = 20_000 + (h.finish() % 12_000) as u16;
        let mut u = used.lock().unwrap();
        if u.contains(&p) {
            continue;
        }
        let Some(lock) = lock_port(dir, p) else {
            continue; // another test process holds it
        };
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("0.0.0.0", p)).is_ok()
        {
            u.insert(p);
            out.push(p);
            LOCKS.lock().unwrap().push(lock);
        }
    }
    out
}

/// The port's lock file, locked by this process; `None` if another process holds it.
fn lock_port(dir: &std::path::Path, port: u16) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
        .ok()?;
    // SAFETY: flock on an fd this function owns; released when the process exits.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (r == 0).then_some(f)
}

/// One port from `free_ports`.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Waits until `port` accepts TCP connections; Err (with the log tail) if `proc` exits
/// first or `timeout` passes.
pub fn try_wait_port(port: u16, proc: &mut Proc, timeout: Duration) -> Result<(), String> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = proc.exited() {
            return Err(format!(
                "{} exited ({st}) before listening on {port}\n{}",
                proc.name,
                proc.log_tail(40)
            ));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!(
                "{} is not listening on {port} after {timeout:?}\n{}",
                proc.name,
                proc.log_tail(40)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `try_wait_port` or panic.
pub fn wait_port(port: u16, proc: &mut Proc, timeout: Duration) {
    if let Err(e) = try_wait_port(port, proc, timeout) {
        panic!("{e}");
    }
}

/// A unique directory under /tmp, short enough for ipc paths; removed on drop unless the
/// test is failing (then its path is printed for the logs inside).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(20)
            .collect();
        let path = PathBuf::from(format!(
            "/tmp/zp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating temp dir");
        TempDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    pub fn s(&self, p: &str) -> String {
        self.join(p).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A fresh directory the caller removes (for owners with their own Drop, like `Stack`).
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = TempDir::new(tag);
    let path = d.path.clone();
    std::mem::forget(d);
    path
}

/// A loopback server for scripted origins: binds a free port and runs `serve` on each
/// accepted connection in a thread of its own, until dropped.
pub struct LoopbackServer {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    pub fn start(serve: fn(std::net::TcpStream)) -> LoopbackServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let port = free_ports(1)[0];
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("origin bind");
        l.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((c, _)) => {
                        std::thread::spawn(move || serve(c));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        LoopbackServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
