//! The one way integration tests start processes. A `Proc` never outlives its test:
//!
//! * Drop stops it (SIGTERM first if asked, then SIGKILL), kills its process group (anything
//!   it started and left behind) and reaps it.
//! * If the test process dies without running Drop (SIGKILL, abort, `exit` while another
//!   thread holds a `Proc`, a panic in a thread nobody joins), the kernel kills the child:
//!   `PR_SET_PDEATHSIG(SIGKILL)` is set in the child before exec.
//!
//! pdeathsig fires when the *thread* that forked the child exits, not the process. Test
//! threads end with their test, but a `Proc` may be made on a short-lived thread and moved
//! out of it (or kept in a static), and would then be killed under the test's feet. So every
//! fork happens on one spawner thread that lives as long as the process: the signal comes
//! exactly when the test process is gone, whatever thread started the child.
//!
//! Each child leads its own process group (so the group kill reaches grandchildren such as
//! Pushpin's services) and is not reaped before Drop (`exited` peeks with `WNOWAIT`): its pid
//! and group id stay ours, so signalling them by number can never hit a stranger.
//! Grandchildren only die with the test process if their parent makes them (pdeathsig is not
//! inherited across fork); Drop's group kill covers the ordinary paths.
#![allow(dead_code)]

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A child process owned by a test (see the module docs for what Drop guarantees).
pub struct Proc {
    pub name: String,
    child: Child,
    /// Where stdout and stderr go, when started with `spawn`.
    pub log: Option<PathBuf>,
    /// `stop` sends SIGTERM and waits `grace` before SIGKILL.
    pub term_first: bool,
    pub grace: Duration,
}

impl Proc {
    /// Starts `cmd` with the stdio its caller set.
    pub fn start(name: &str, cmd: &mut Command) -> Proc {
        let child = spawn_guarded(cmd).unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Proc {
            name: name.into(),
            child,
            log: None,
            term_first: false,
            grace: Duration::from_secs(5),
        }
    }

    /// Starts `cmd` with stdout and stderr going to `<dir>/<name>.log` (printed on failure).
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("creating log file");
        let f2 = f.try_clone().expect("dup log file");
        cmd.stdin(Stdio::null()).stdout(f).stderr(f2);
        let mut p = Proc::start(name, cmd);
        p.log = Some(log);
        p
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its stdin, if piped (taken once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Its stdout, if piped (taken once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Some(status) once the process has exited. It stays unreaped until Drop.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        // SAFETY: zeroed siginfo_t is a valid out-parameter; waitid on our own child with
        // WNOWAIT leaves it reapable.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            if rc != 0 || info.si_pid() == 0 {
                return None;
            }
            let s = info.si_status();
            // Rebuild the wait(2) status word that ExitStatus wraps.
            let raw = match info.si_code {
                libc::CLD_EXITED => (s & 0xff) << 8,
                libc::CLD_KILLED => s,
                libc::CLD_DUMPED => s | 0x80,
                _ => return None,
            };
            Some(ExitStatus::from_raw(raw))
        }
    }

    /// Sends `sig` to the process (not its group) unless it has exited.
    pub fn signal(&mut self, sig: i32) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on the pid of our unreaped child.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// Waits up to `timeout` for exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(within)
    }

    /// SIGTERM (if `term_first`) then SIGKILL after `grace`; returns once it has exited.
    /// The process group is left alone, so a test can check what the process's own
    /// shutdown left running; Drop sweeps the group.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.term_first {
            if self.terminate(self.grace).is_some() {
                return;
            }
            eprintln!(
                "{} ignored SIGTERM for {:?}; killing",
                self.name, self.grace
            );
        }
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }

    pub fn log_text(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned()
    }

    /// Waits until the log holds `needle` (true) or `timeout` passes or the process exits
    /// (false).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if self.exited().is_some() || std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let t = self.log_text();
        let v: Vec<&str> = t.lines().collect();
        let from = v.len().saturating_sub(lines);
        format!(
            "--- last lines of {} ---\n{}",
            self.name,
            v[from..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        // The child is a zombie at worst, so its group id is still reserved for us.
        // SAFETY: kill(2) on the process group our own child leads.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() && self.log.is_some() {
            eprintln!("{}", self.log_tail(30));
        }
    }
}

/// Makes a child of `cmd` die with the test process (`PR_SET_PDEATHSIG`) and lead its own
/// process group. For commands run to completion on the calling thread (`output`,
/// `status`): the caller blocks until the child ends, so the forking thread outlives it.
/// Long-lived children go through `Proc`, which also forks on the spawner thread.
pub fn guard(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no signal will come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    };
    cmd
}

/// `cmd.output()` with `guard` (for commands expected to finish on their own).
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    guard(cmd).output()
}

type Job = (Command, mpsc::Sender<(Command, io::Result<Child>)>);

/// Spawns `cmd` (guarded) on the spawner thread; `cmd` is handed back unchanged.
fn spawn_guarded(cmd: &mut Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // Never exits (the static keeps a sender): pdeathsig then means "the process died".
        std::thread::Builder::new()
            .name("proc-spawner".into())
            .spawn(move || {
                for (mut cmd, back) in rx {
                    let r = cmd.spawn();
                    let _ = back.send((cmd, r));
                }
            })
            .expect("spawner thread");
        tx
    });
    let mut owned = std::mem::replace(cmd, Command::new(""));
    guard(&mut owned);
    let (back, answer) = mpsc::channel();
    tx.send((owned, back)).expect("spawner thread alive");
    let (owned, r) = answer.recv().expect("spawner thread answers");
    *cmd = owned;
    r
}

/// Pids of the live children of `ppid` (from /proc), with their command lines.
pub fn children_of(ppid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        if f.len() > 2 && f[1].parse::<i32>().ok() == Some(ppid) && f[0] != "Z" {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            out.push((pid, cmd.trim().to_string()));
        }
    }
    out
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .map(|i| !stat[i + 1..].trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}
