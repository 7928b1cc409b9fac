//! Access logs, written off the workers' threads: `--access-log FILE` (ZHTTP mode) and each
//! Mongrel2 server's `access_log`, one code path for both.
//!
//! A connection emits a finished line (`Output::AccessLog`); its worker appends it to a
//! buffer per file and, once per turn, hands each non-empty buffer to the writer thread
//! through one bounded channel ([`BATCHES_QUEUED_MAX`] batches). A worker never waits for
//! the writer: when the channel is full the batch is dropped, and its lines are counted
//! (`connmgr_access_log_dropped_total`, the dropping worker's counter). The writer appends
//! each batch with one `write(2)` (`O_APPEND`, so lines from the workers stay whole) and, on
//! SIGHUP ([`AccessLog::reopen`]), opens every file again by its path: rotation is
//! `mv access.log access.log.1` then SIGHUP.
//!
//! Files are opened by the caller ([`AccessLog::open`]) so that a path that cannot be
//! opened is an error at startup (or at a Mongrel2 reload), and the writer gets the open
//! file. A path opened twice is one target.
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::log;

/// Batches (one per worker turn and file) waiting for the writer. A batch holds one turn's
/// lines, and a turn's work is bounded (completions per turn), so this bounds the memory
/// held for a writer that lags: what comes past it is dropped and counted.
pub const BATCHES_QUEUED_MAX: usize = 1024;

/// One file of the writer's, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target(u16);

enum Message {
    Lines(Target, Vec<u8>),
    /// Everything queued before it is written: the writer ends.
    Finish,
}

/// A target: its path, and its file until the writer takes it.
struct Entry {
    path: PathBuf,
    file: Option<File>,
}

/// The handle workers and `main` hold (cheap to clone). The writer thread ends at
/// [`AccessLog::finish`], or once every handle is gone, having written what was queued.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<Message>,
    /// Every target, by index (`open`'s dedup, the writer's new files and reopen). Files
    /// go to the writer through this, not the channel, so `open` never waits for a writer
    /// that is stuck.
    entries: Arc<Mutex<Vec<Entry>>>,
    /// Set by `reopen`, taken by the writer before its next write.
    reopen: Arc<AtomicBool>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn start() -> std::io::Result<(AccessLog, std::thread::JoinHandle<()>)> {
        let (tx, rx) = sync_channel(BATCHES_QUEUED_MAX);
        let entries = Arc::new(Mutex::new(Vec::new()));
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            rx,
            files: Vec::new(),
            entries: entries.clone(),
            reopen: reopen.clone(),
            failing: false,
        };
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        let log = AccessLog {
            inner: Arc::new(Inner {
                tx,
                entries,
                reopen,
            }),
        };
        Ok((log, thread))
    }

    /// Opens `path` for appending (created if missing) and gives it to the writer; the
    /// same path again is the same target.
    pub fn open(&self, path: &Path) -> Result<Target, String> {
        let mut entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = entries.iter().position(|e| e.path == path) {
            return Ok(Target(i as u16));
        }
        let index = u16::try_from(entries.len())
            .ok()
            .filter(|&i| i < u16::MAX)
            .ok_or_else(|| "too many access logs".to_string())?;
        let file = append(path).map_err(|e| format!("access log {}: {e}", path.display()))?;
        entries.push(Entry {
            path: path.to_path_buf(),
            file: Some(file),
        });
        Ok(Target(index))
    }

    /// Hands `lines` (whole lines) to the writer and leaves `lines` empty. Never waits:
    /// with the writer behind by `BATCHES_QUEUED_MAX` batches, the lines are dropped and
    /// their count returned (to be counted by the caller).
    #[must_use]
    pub fn write(&self, target: Target, lines: &mut Vec<u8>) -> u64 {
        if lines.is_empty() {
            return 0;
        }
        let batch = std::mem::take(lines);
        match self.inner.tx.try_send(Message::Lines(target, batch)) {
            Ok(()) => 0,
            Err(TrySendError::Full(Message::Lines(_, b)))
            | Err(TrySendError::Disconnected(Message::Lines(_, b))) => {
                let dropped = b.iter().filter(|&&c| c == b'\n').count() as u64;
                // Keep the buffer (cleared) for the next turn.
                *lines = b;
                lines.clear();
                dropped
            }
            Err(_) => unreachable!("only lines are sent here"),
        }
    }

    /// At exit, once no worker writes any more: the writer writes what is queued and ends.
    /// False when its queue is full (a stuck file): then it will not end soon.
    pub fn finish(&self) -> bool {
        self.inner.tx.try_send(Message::Finish).is_ok()
    }

    /// SIGHUP: the writer opens every file again by its path before its next write.
    pub fn reopen(&self) {
        self.inner.reopen.store(true, Ordering::SeqCst);
        // An empty batch wakes the writer if it is idle (nothing to reopen for otherwise).
        let _ = self
            .inner
            .tx
            .try_send(Message::Lines(Target(u16::MAX), Vec::new()));
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
}

struct Writer {
    rx: Receiver<Message>,
    /// By target index, taken from `entries` when a batch names a target not seen yet.
    files: Vec<Option<File>>,
    entries: Arc<Mutex<Vec<Entry>>>,
    reopen: Arc<AtomicBool>,
    /// A write failed and was logged; logged again only after one succeeds.
    failing: bool,
}

impl Writer {
    fn run(mut self) {
        // Ends at `Finish`, or when every handle is gone and the queue is empty.
        while let Ok(message) = self.rx.recv() {
            if self.reopen.swap(false, Ordering::SeqCst) {
                self.reopen_all();
            }
            match message {
                Message::Lines(Target(i), lines) => self.append(i as usize, &lines),
                Message::Finish => return,
            }
        }
    }

    fn append(&mut self, index: usize, lines: &[u8]) {
        if index >= self.files.len() && index != u16::MAX as usize {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let known = self.files.len();
            self.files
                .extend(entries[known..].iter_mut().map(|e| e.file.take()));
        }
        let Some(Some(file)) = self.files.get_mut(index) else {
            return; // the reopen wake-up (no target)
        };
        match file.write_all(lines) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                log!(log::ERROR, "access-log", "writing: {e}; lines are lost");
            }
            Err(_) => {}
        }
    }

    fn reopen_all(&mut self) {
        let paths: Vec<PathBuf> = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.iter().map(|e| e.path.clone()).collect()
        };
        for (i, path) in paths.iter().enumerate() {
            match append(path) {
                Ok(f) => match self.files.get_mut(i) {
                    Some(slot) => *slot = Some(f),
                    // Not written to yet: its entry's file is replaced.
                    None => {
                        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                        entries[i].file = Some(f);
                    }
                },
                // The old file stays open: lines keep going somewhere.
                Err(e) => log!(
                    log::ERROR,
                    "access-log",
                    "reopening {}: {e}; still writing to the old file",
                    path.display()
                ),
            }
        }
        log!(log::INFO, "access-log", "reopened {} file(s)", paths.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_reopen_follows_a_rename() {
        // Goal: batches land in order; after a rename and `reopen` new lines go to a new
        // file at the path and none to the renamed one; the same path is one target.
        let dir = std::env::temp_dir().join(format!("zring-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let (log, thread) = AccessLog::start().unwrap();
        let t = log.open(&path).unwrap();
        assert_eq!(log.open(&path).unwrap(), t);
        let mut b = b"one\ntwo\n".to_vec();
        assert_eq!(log.write(t, &mut b), 0);
        assert!(b.is_empty());
        let wait_for = |p: &Path, want: &str| {
            for _ in 0..500 {
                if std::fs::read_to_string(p).unwrap_or_default() == want {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("{} never became {want:?}", p.display());
        };
        wait_for(&path, "one\ntwo\n");
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        log.reopen();
        let mut b = b"three\n".to_vec();
        assert_eq!(log.write(t, &mut b), 0);
        wait_for(&path, "three\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert!(log.finish());
        thread.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
