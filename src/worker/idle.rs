//! The worker's idle connections, oldest first, one list per listener mode: the ones it may
//! close to make room when it is at its share of the connection limit. Idle means open and
//! waiting for a request that has not begun: a kept-alive connection between requests, or
//! a new one that has not sent a byte (`Conn::is_idle`). Never an open exchange, a
//! WebSocket or a Mongrel2 connection.
//!
//! Intrusive doubly linked lists over slot numbers: `touch` and `remove` are O(1) and
//! nothing is allocated after start (two `u32` per slot).
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

pub struct IdleList {
    links: Vec<Link>,
    /// `mode[slot]`: the list the slot is on, or `NOT_LINKED`.
    on: Vec<u8>,
    head: [u32; 2],
    tail: [u32; 2],
    len: [usize; 2],
}

const NOT_LINKED: u8 = u8::MAX;

impl IdleList {
    pub fn new(slots: usize) -> IdleList {
        IdleList {
            links: vec![
                Link {
                    prev: NIL,
                    next: NIL
                };
                slots
            ],
            on: vec![NOT_LINKED; slots],
            head: [NIL; 2],
            tail: [NIL; 2],
            len: [0; 2],
        }
    }

    /// Records whether `slot` (of list `mode`) is idle now. A connection that becomes idle
    /// goes to the back; one that stays idle keeps its place (its age counts from when it
    /// went idle).
    pub fn set(&mut self, slot: u32, mode: usize, idle: bool) {
        let linked = self.on[slot as usize] != NOT_LINKED;
        match (linked, idle) {
            (false, true) => self.push_back(slot, mode),
            (true, false) => self.remove(slot),
            _ => {}
        }
    }

    /// Takes the oldest idle slot of list `mode` off the list.
    pub fn pop_oldest(&mut self, mode: usize) -> Option<u32> {
        let s = self.head[mode];
        if s == NIL {
            return None;
        }
        self.remove(s);
        Some(s)
    }

    #[cfg(test)]
    pub fn len(&self, mode: usize) -> usize {
        self.len[mode]
    }

    fn push_back(&mut self, slot: u32, mode: usize) {
        let tail = self.tail[mode];
        self.links[slot as usize] = Link {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.head[mode] = slot;
        } else {
            self.links[tail as usize].next = slot;
        }
        self.tail[mode] = slot;
        self.on[slot as usize] = mode as u8;
        self.len[mode] += 1;
    }

    /// Takes `slot` off its list, if it is on one.
    pub fn remove(&mut self, slot: u32) {
        let mode = self.on[slot as usize];
        if mode == NOT_LINKED {
            return;
        }
        let mode = mode as usize;
        let Link { prev, next } = self.links[slot as usize];
        if prev == NIL {
            self.head[mode] = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail[mode] = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
        self.on[slot as usize] = NOT_LINKED;
        self.len[mode] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_first_per_mode_and_removal_anywhere() {
        let mut l = IdleList::new(8);
        for s in [3, 1, 4, 5] {
            l.set(s, 0, true);
        }
        l.set(2, 1, true);
        l.set(1, 0, true); // already idle: keeps its place
        l.set(4, 0, false); // busy again
        assert_eq!((l.len(0), l.len(1)), (3, 1));
        assert_eq!(l.pop_oldest(0), Some(3));
        l.set(3, 0, true); // idle again: now the newest
        assert_eq!(l.pop_oldest(0), Some(1));
        assert_eq!(l.pop_oldest(0), Some(5));
        assert_eq!(l.pop_oldest(0), Some(3));
        assert_eq!(l.pop_oldest(0), None);
        assert_eq!(l.pop_oldest(1), Some(2));
        l.remove(2); // not on a list: nothing happens
        assert_eq!((l.len(0), l.len(1)), (0, 0));
    }
}
