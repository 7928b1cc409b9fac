//! The worker's side of the access logs (`access_log`): a turn's lines are queued per file
//! (by the `server` of `Output::AccessLog`: a Mongrel2 server's index, 0 for
//! `--access-log`) and handed to the writer thread once per turn, never waiting for it.
use super::Worker;
use crate::access_log::Target;

/// Queues a line for file `index` (written at the end of the turn).
pub(super) fn queue(pending: &mut Vec<Vec<u8>>, index: u16, line: &[u8]) {
    let index = index as usize;
    if pending.len() <= index {
        pending.resize_with(index + 1, Vec::new);
    }
    pending[index].extend_from_slice(line);
}

/// Hands the turn's lines to the writer: to the files of the worker's current Mongrel2
/// setup (so a SIGHUP's new setup takes them at once), or to `--access-log`. Lines the
/// writer cannot take now are dropped and counted.
pub(super) fn flush(w: &mut Worker) {
    if w.access_pending.iter().all(Vec::is_empty) {
        return;
    }
    let Some((log, zhttp)) = w.shared.access_log.get() else {
        w.access_pending.iter_mut().for_each(Vec::clear);
        return;
    };
    let stats = &w.shared.metrics.workers[w.index as usize];
    for (index, lines) in w.access_pending.iter_mut().enumerate() {
        if lines.is_empty() {
            continue;
        }
        let target: Option<Target> = match w.settings.m2.as_deref() {
            Some(setup) => setup.servers.get(index).and_then(|s| s.access_log),
            None => zhttp.filter(|_| index == 0),
        };
        match target {
            Some(t) => stats.access_log_dropped.add(log.write(t, lines)),
            None => lines.clear(),
        }
    }
}
