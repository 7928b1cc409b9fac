//! Handler death, noticed at once: the stream ROUTER reports each handler connecting and
//! disconnecting (`ZMQ_ROUTER_NOTIFY`, a libzmq DRAFT option, 4.3), and a disconnect is
//! announced to the workers (`Inbox::handler_gone`), which fail that handler's sessions.
//!
//! A notice is a message `[routing id, ""]` read from the ROUTER (handlers send nothing else
//! there). A connect and a disconnect look alike, so the bridge remembers which identities
//! are connected: a notice for a connected one is its disconnect, any other a connect.
//! libzmq's own ids (anonymous peers, and the id a handover gives the old pipe) start with a
//! zero byte and are no handler's `from`: they are ignored.
//!
//! Known limit of that inference: when a second process takes a live handler's identity
//! over (`ZMQ_ROUTER_HANDOVER`), its connect reads as the first one's disconnect (which is
//! right for the first one's sessions), and from then on that identity's notices are read
//! the wrong way round until it connects again, so the new process's death is noticed only
//! by session expiry. The same happens if a handler restarts before the bridge has read its
//! old connection's disconnect notice (libzmq then reports that under the id a handover
//! gives the old pipe); the bridge reads the ROUTER as soon as it is readable, so a restart
//! would have to be faster than one bridge turn.
//!
//! A disconnect is announced `HANDLER_GONE_GRACE_MS` later (see there why), once the SUB has
//! nothing left to read (or a second grace passed), so the dead handler's last packets reach
//! the workers first. A handler that connects again under the same identity first has its
//! old sessions failed at once, before any packet of the new one is read: a restarted
//! handler knows nothing of the old sessions (a ZHTTP session lives in one process), and its
//! `seq` would not match theirs anyway.
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use super::Addr;
use crate::limits;
use crate::log;

/// libzmq's `ZMQ_ROUTER_NOTIFY` and its flags (zmq.h, DRAFT section; no setter in the zmq
/// crate).
const ZMQ_ROUTER_NOTIFY: i32 = 97;
const ZMQ_NOTIFY_CONNECT: i32 = 1;
const ZMQ_NOTIFY_DISCONNECT: i32 = 2;

/// Asks `router` for connect and disconnect notices. False when libzmq refuses (built
/// without its DRAFT API): handler deaths are then noticed only by session expiry.
pub(super) fn enable(router: &mut zmq::Socket) -> bool {
    let value: i32 = ZMQ_NOTIFY_CONNECT | ZMQ_NOTIFY_DISCONNECT;
    // SAFETY: `router` is a live socket owned by this thread (the pointer is valid for the
    // call); the option value is a C int read from a local that outlives the call, and its
    // size is passed with it, as zmq_setsockopt(3) requires.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            router.as_mut_ptr(),
            ZMQ_ROUTER_NOTIFY,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>(),
        )
    };
    rc == 0
}

/// What the bridge knows of handlers' ROUTER connections.
#[derive(Default)]
pub(super) struct Notices {
    /// Identities connected now. Bounded: past the bound a connect is not tracked, and that
    /// handler's death goes unnoticed (its sessions expire as before).
    connected: Vec<Addr>,
    /// Disconnected handlers not announced yet, with when their grace ends.
    pending: ArrayVec<(Addr, Instant), { limits::HANDLERS_GONE_MAX }>,
}

const GRACE: Duration = Duration::from_millis(limits::HANDLER_GONE_GRACE_MS);

impl Notices {
    /// A notice for routing id `id`. Returns a handler to announce now: one that connected
    /// again while its death was pending.
    pub fn notice(&mut self, id: &[u8], now: Instant) -> Option<Addr> {
        if id.first().is_none_or(|&b| b == 0) {
            return None; // libzmq's own id, not a handler's `from`
        }
        let Ok(addr) = Addr::try_from(id) else {
            return None; // longer than any `from`: no session names it
        };
        if let Some(i) = self.connected.iter().position(|a| *a == addr) {
            self.connected.swap_remove(i);
            log!(
                log::DEBUG,
                "zhttp",
                "handler {:?} disconnected",
                show(&addr)
            );
            if let Some(p) = self.pending.iter_mut().find(|(a, _)| *a == addr) {
                p.1 = now + GRACE;
            } else if self.pending.try_push((addr, now + GRACE)).is_err() {
                log!(
                    log::WARN,
                    "zhttp",
                    "too many handlers gone at once; sessions of {:?} will expire instead",
                    show(id)
                );
            }
            return None;
        }
        log!(log::DEBUG, "zhttp", "handler {:?} connected", show(&addr));
        if self.connected.len() < limits::HANDLERS_CONNECTED_MAX {
            self.connected.push(addr.clone());
        }
        let i = self.pending.iter().position(|(a, _)| *a == addr)?;
        Some(self.pending.swap_remove(i).0)
    }

    /// Handlers connected now (as far as notices tell; at most `HANDLERS_CONNECTED_MAX`).
    pub fn connected_count(&self) -> usize {
        self.connected.len()
    }

    pub fn any_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next handler whose death is due: its grace is over and the SUB has nothing more
    /// to read (`sub_readable`), or a second grace is over too.
    pub fn take_due(&mut self, now: Instant, sub_readable: bool) -> Option<Addr> {
        let i = self
            .pending
            .iter()
            .position(|&(_, at)| at <= now && (!sub_readable || at + GRACE <= now))?;
        Some(self.pending.swap_remove(i).0)
    }

    /// When the bridge must look at pending deaths again (`None`: none pending).
    pub fn next_check(&self, now: Instant) -> Option<Instant> {
        let at = self.pending.iter().map(|&(_, at)| at).min()?;
        // Once due, it waits for the SUB to empty: look again after a short retry.
        Some(if at > now {
            at
        } else {
            now + Duration::from_millis(limits::BRIDGE_RETRY_MS)
        })
    }
}

fn show(id: &[u8]) -> String {
    String::from_utf8_lossy(id).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_toggle_and_a_reconnect_announces_at_once() {
        let t0 = Instant::now();
        let mut n = Notices::default();
        assert_eq!(n.notice(b"h1", t0), None, "connect");
        assert_eq!(n.notice(b"h1", t0), None, "disconnect: pending");
        assert_eq!(n.take_due(t0, false), None, "within the grace");
        assert_eq!(n.next_check(t0), Some(t0 + GRACE));
        assert_eq!(
            n.take_due(t0 + GRACE, true),
            None,
            "the SUB still has packets"
        );
        let due = n.take_due(t0 + GRACE, false).expect("due");
        assert_eq!(&due[..], b"h1");
        assert_eq!(n.next_check(t0), None);
        // Disconnected then connected again within the grace: announced at the connect.
        assert_eq!(n.notice(b"h1", t0), None, "connect");
        assert_eq!(n.notice(b"h1", t0), None, "disconnect");
        assert_eq!(
            n.notice(b"h1", t0).as_deref(),
            Some(&b"h1"[..]),
            "reconnect"
        );
        assert_eq!(n.take_due(t0 + GRACE * 2, false), None);
        // libzmq's own ids and overlong ids are no handler's.
        assert_eq!(n.notice(b"\0abcd", t0), None);
        assert_eq!(n.notice(b"\0abcd", t0), None);
        assert_eq!(n.notice(&[b'x'; 65], t0), None);
        assert_eq!(n.notice(&[b'x'; 65], t0), None);
        assert_eq!(n.next_check(t0), None);
    }

    #[test]
    fn a_pending_death_is_announced_after_a_second_grace_even_under_traffic() {
        let t0 = Instant::now();
        let mut n = Notices::default();
        n.notice(b"h", t0);
        n.notice(b"h", t0);
        assert_eq!(
            n.take_due(t0 + GRACE * 2 - Duration::from_millis(1), true),
            None
        );
        assert!(n.take_due(t0 + GRACE * 2, true).is_some());
    }
}
