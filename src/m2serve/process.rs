//! Mongrel2's process behaviour (src/mongrel2.c `clear_pid_file`, `attempt_chroot_drop`,
//! src/unixy.c), for the server whose `chroot`, `pid_file` and `error_log` zring takes:
//!
//! 1. a pid file left by a dead process is removed; a live one refuses the start;
//! 2. as root, `chroot(2)` to `chroot` and `chdir("/")`; otherwise (chroot fails) "test
//!    mode": paths stay relative to the working directory, the pid file at `.` + pid_file;
//! 3. `server.daemonize` (default 1): `daemon(3)`, keeping stdio open as Mongrel2 does;
//! 4. the pid file is written (the daemon's pid);
//! 5. in the chroot, uid and gid become the owner of its `/`;
//! 6. in the chroot, zring's log (stdout, and stderr) goes to `error_log`, appended.
//!
//! Called once, before any thread starts (a fork keeps only the calling thread), after the
//! listening sockets are bound (ports under 1024 need root).
use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::m2config::{settings, Server};

/// What [`start`] did, for the rest of the start and for the shutdown.
#[derive(Debug)]
pub struct Process {
    /// The process is in the server's chroot (paths are now relative to it).
    pub chrooted: bool,
    /// The pid file written (removed at shutdown).
    pub pid_file: PathBuf,
    /// A takeover's: what the pid file held before (the replaced zring's pid), put back if
    /// this process fails before it serves (`PidFileRestore`).
    pub replaced: Option<Vec<u8>>,
}

/// Until disarmed, puts a takeover's replaced pid file back when dropped: a successor that
/// fails to start leaves the running zring's pid in it, as it found it.
pub struct PidFileRestore {
    path: PathBuf,
    previous: Vec<u8>,
    pub armed: bool,
}

impl Process {
    pub fn restore_guard(&self) -> Option<PidFileRestore> {
        Some(PidFileRestore {
            path: self.pid_file.clone(),
            previous: self.replaced.clone()?,
            armed: true,
        })
    }
}

impl Drop for PidFileRestore {
    fn drop(&mut self) {
        if self.armed && holds_own_pid(&self.path) {
            let _ = std::fs::write(&self.path, &self.previous);
        }
    }
}

/// Steps 1-6 for `server` with the config's `settings`.
/// `replacing`: a takeover (`--takeover`) is under way, and the live pid in the pid file is
/// the zring being replaced: the file is replaced, not refused.
pub fn start(
    server: &Server,
    settings: &[(String, String)],
    replacing: bool,
) -> Result<Process, String> {
    // 1. As `clear_pid_file`: the chroot is a string prefix of the pid file's path.
    let outside = PathBuf::from(format!("{}{}", server.chroot, server.pid_file));
    if !replacing {
        remove_dead_pid_file(&outside)?;
    }
    // 2.
    let chrooted = !server.chroot.is_empty() && chroot(&server.chroot)?;
    if !server.chroot.is_empty() && !chrooted {
        crate::log!(
            crate::log::INFO,
            "m2",
            "couldn't chroot to {} (not root), assuming test mode",
            server.chroot
        );
    }
    // 3.
    if settings::int(settings, "server.daemonize") != 0 {
        // SAFETY: no thread has been started yet (the caller's contract), so the child
        // that goes on is complete. nochdir: in the chroot `/` is already the directory.
        if unsafe { libc::daemon(1, 1) } != 0 {
            return Err(format!(
                "failed to daemonize: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // 4. In test mode the pid file is `.` + pid_file (relative to the working directory).
    let pid_file = match (chrooted, server.chroot.is_empty()) {
        (false, false) => PathBuf::from(format!(".{}", server.pid_file)),
        _ => PathBuf::from(&server.pid_file),
    };
    let replaced = match replacing {
        true => Some(replace_pid_file(&pid_file)?),
        false => {
            write_pid_file(&pid_file)?;
            None
        }
    };
    // 5 and 6.
    if chrooted {
        drop_privileges(Path::new("/"))?;
        redirect_log(&server.error_log)?;
    }
    Ok(Process {
        chrooted,
        pid_file,
        replaced,
    })
}

/// Removes `path` when the pid in it is no live process (`Unixy_remove_dead_pidfile`).
pub fn remove_dead_pid_file(path: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(()); // none: nothing runs
    };
    let Some(pid) = leading_int(&text) else {
        return Ok(()); // unreadable, as Mongrel2: writing it fails next ("already exists")
    };
    // SAFETY: signal 0 only checks that the process exists.
    if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
        return Err(format!(
            "process {pid} (pid file {}) is still running, shut it down first",
            path.display()
        ));
    }
    crate::log!(
        crate::log::INFO,
        "m2",
        "process {pid} is not running anymore, removing pid file {}",
        path.display()
    );
    std::fs::remove_file(path).map_err(|e| format!("removing pid file {}: {e}", path.display()))
}

/// `fscanf("%d")`: optional whitespace, a sign, digits.
fn leading_int(text: &str) -> Option<i32> {
    let t = text.trim_start();
    let end = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(t.len(), |(i, _)| i);
    t[..end].parse().ok()
}

/// `Unixy_pid_file`: refuses an existing file, then writes the pid without a newline.
fn write_pid_file(path: &Path) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("pid file {}: {e}", path.display()))?;
    write!(file, "{}", std::process::id()).map_err(|e| format!("pid file {}: {e}", path.display()))
}

/// A takeover's pid file: written beside, then renamed over the replaced zring's (whose
/// exit then leaves it, `remove_own_pid_file`). Returns what it held.
fn replace_pid_file(path: &Path) -> Result<Vec<u8>, String> {
    let previous = std::fs::read(path).unwrap_or_default();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{}", std::process::id()));
    let aside = PathBuf::from(aside);
    let _ = std::fs::remove_file(&aside);
    write_pid_file(&aside)?;
    std::fs::rename(&aside, path).map_err(|e| {
        let _ = std::fs::remove_file(&aside);
        format!("pid file {}: {e}", path.display())
    })?;
    Ok(previous)
}

fn holds_own_pid(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| leading_int(&t))
        .is_some_and(|pid| pid == std::process::id() as i32)
}

/// At exit (Mongrel2's `complete_shutdown`): the pid file goes if it is still this
/// process's (after a takeover it names the successor).
pub fn remove_own_pid_file(path: &Path) {
    if holds_own_pid(path) {
        let _ = std::fs::remove_file(path);
    }
}

/// Where a path the config names inside the server's chroot (as `pid_file`) is seen from
/// outside it, before `start` chroots: under the chroot when this process will chroot (root),
/// as it is otherwise (test mode). `--takeover` connects to the running zring's
/// `--takeover-socket` through it.
pub fn outside_chroot(server: &Server, path: &Path) -> PathBuf {
    // SAFETY: a getter without arguments.
    let root = unsafe { libc::geteuid() } == 0;
    match (server.chroot.is_empty(), root) {
        // In the chroot, `/` and the working directory are both the chroot.
        (false, true) => Path::new(&server.chroot).join(path.strip_prefix("/").unwrap_or(path)),
        _ => path.to_owned(),
    }
}

/// `chroot(2)` and `chdir("/")`: `Ok(false)` when not permitted (not root: test mode).
fn chroot(dir: &str) -> Result<bool, String> {
    let c = CString::new(dir).map_err(|_| format!("chroot {dir:?}: NUL in path"))?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::chroot(c.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EPERM) => Ok(false),
            _ => Err(format!("chroot {dir}: {e}")),
        };
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir / in chroot {dir}: {e}"))?;
    Ok(true)
}

/// `Unixy_drop_priv(dir)`: gid, then uid, become the owner of `dir` (real and effective).
fn drop_privileges(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| format!("stat {}: {e}", dir.display()))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    // SAFETY: plain id syscalls; the results are checked below.
    let ok = unsafe { libc::setregid(gid, gid) == 0 && libc::setreuid(uid, uid) == 0 };
    // SAFETY: getters without arguments.
    let now = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if !ok || now != (uid, uid, gid, gid) {
        return Err(format!(
            "failed to drop privileges to uid {uid}, gid {gid} (the owner of the chroot): {}",
            std::io::Error::last_os_error()
        ));
    }
    crate::log!(
        crate::log::INFO,
        "m2",
        "now running as uid {uid}, gid {gid}"
    );
    Ok(())
}

/// SIGHUP: `error_log` opened again (in the chroot only, where zring logs there), as
/// Mongrel2 reopens its logs for logrotate.
pub fn reopen_error_log(process: &Process, server: &Server) -> Result<(), String> {
    match process.chrooted {
        true => redirect_log(&server.error_log),
        false => Ok(()),
    }
}

/// Appends zring's log (stdout) and stderr to `path`, as Mongrel2 sends its log to
/// `error_log` once chrooted.
fn redirect_log(path: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| format!("error_log {path}: {e}"))?;
    for fd in [1, 2] {
        // SAFETY: both fds are valid; dup2 replaces `fd` atomically.
        if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
            return Err(format!(
                "error_log {path}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_text_reads_as_fscanf() {
        assert_eq!(leading_int("123"), Some(123));
        assert_eq!(leading_int(" 42\n"), Some(42));
        assert_eq!(leading_int("-1"), Some(-1));
        assert_eq!(leading_int("x1"), None);
    }

    #[test]
    fn stale_pid_file_is_removed_and_a_live_one_refuses() {
        let dir = std::env::temp_dir().join(format!("zring-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.pid");
        // A live process: this one.
        std::fs::write(&path, std::process::id().to_string()).unwrap();
        let e = remove_dead_pid_file(&path).unwrap_err();
        assert!(e.contains("still running"), "{e}");
        assert!(path.exists());
        // A dead one: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(&path, dead.to_string()).unwrap();
        remove_dead_pid_file(&path).unwrap();
        assert!(!path.exists());
        // Written fresh: the pid, no newline; a second write is refused.
        write_pid_file(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::process::id().to_string()
        );
        assert!(write_pid_file(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
