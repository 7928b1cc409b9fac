//! A hashed timing wheel, one per worker: each slot (connection) has at most one deadline,
//! kept in an intrusive doubly linked list per wheel bucket, so `set` and `cancel` are O(1)
//! and nothing is allocated after startup. Deadlines further away than one rotation stay in
//! their bucket and are skipped until their rotation comes. The runtime arms one timeout:
//! `next_deadline`.
use std::time::{Duration, Instant};

/// Timer resolution. Coarser than any protocol timeout zring has (seconds), fine enough that
/// a 503 or a linger ends promptly.
pub const TICK_MS: u64 = 10;
/// Buckets in the wheel: one rotation is `BUCKETS * TICK_MS` = 40.96 s.
pub const BUCKETS: usize = 4096;
const NIL: u32 = u32::MAX;
/// Per-slot timer state, for `--sizes`.
pub const LINK_BYTES: usize = std::mem::size_of::<Link>();
const _: () = assert!(BUCKETS.is_power_of_two());

#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    /// Absolute tick of the deadline; `u64::MAX` when not linked.
    tick: u64,
}

pub struct Wheel {
    start: Instant,
    /// Invariant: every linked entry has `tick >= current` (entries due are removed by
    /// `expire` before `current` passes them).
    current: u64,
    heads: Vec<u32>,
    /// One bit per bucket, set while its list is non-empty: finding the next deadline, or
    /// the buckets to expire, costs a few words, not a walk over 4,096 buckets per turn.
    occupied: [u64; WORDS],
    links: Vec<Link>,
    len: usize,
}

const WORDS: usize = BUCKETS / 64;

impl Wheel {
    pub fn new(now: Instant, slots: usize) -> Wheel {
        Wheel {
            start: now,
            current: 0,
            heads: vec![NIL; BUCKETS],
            occupied: [0; WORDS],
            links: vec![
                Link {
                    prev: NIL,
                    next: NIL,
                    tick: u64::MAX
                };
                slots
            ],
            len: 0,
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        // Round up so a deadline never fires early.
        let ms = t
            .saturating_duration_since(self.start)
            .as_micros()
            .div_ceil(1000) as u64;
        ms.div_ceil(TICK_MS)
    }

    /// Sets (or moves, or with `None` clears) the slot's deadline.
    pub fn set(&mut self, slot: u32, deadline: Option<Instant>) {
        let tick = deadline.map(|d| self.tick_of(d).max(self.current));
        let link = self.links[slot as usize];
        if link.tick != u64::MAX {
            if Some(link.tick) == tick {
                return;
            }
            self.unlink(slot);
        }
        if let Some(tick) = tick {
            self.link(slot, tick);
        }
    }

    fn link(&mut self, slot: u32, tick: u64) {
        let b = (tick as usize) & (BUCKETS - 1);
        let head = self.heads[b];
        self.links[slot as usize] = Link {
            prev: NIL,
            next: head,
            tick,
        };
        if head != NIL {
            self.links[head as usize].prev = slot;
        }
        self.heads[b] = slot;
        self.occupied[b / 64] |= 1 << (b % 64);
        self.len += 1;
    }

    fn unlink(&mut self, slot: u32) {
        let Link { prev, next, tick } = self.links[slot as usize];
        assert_ne!(tick, u64::MAX, "unlinking a slot that has no deadline");
        if prev != NIL {
            self.links[prev as usize].next = next;
        } else {
            let b = (tick as usize) & (BUCKETS - 1);
            assert_eq!(self.heads[b], slot);
            self.heads[b] = next;
            if next == NIL {
                self.occupied[b / 64] &= !(1 << (b % 64));
            }
        }
        if next != NIL {
            self.links[next as usize].prev = prev;
        }
        self.links[slot as usize] = Link {
            prev: NIL,
            next: NIL,
            tick: u64::MAX,
        };
        self.len -= 1;
    }

    /// Removes every slot whose deadline is at or before `now` and appends it to `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<u32>) {
        let target = self.tick_of(now).saturating_sub(1).max(self.current);
        // Bounded: at most one rotation of buckets is ever visited.
        let steps = (target - self.current).min(BUCKETS as u64);
        let last = self.current + steps;
        let mut from = self.current;
        while let Some(t) = self.next_occupied(from) {
            if t > last {
                break;
            }
            from = t + 1;
            let b = (t as usize) & (BUCKETS - 1);
            let mut s = self.heads[b];
            while s != NIL {
                let next = self.links[s as usize].next;
                if self.links[s as usize].tick <= target {
                    self.unlink(s);
                    due.push(s);
                }
                s = next;
            }
        }
        self.current = target;
    }

    /// The earliest instant worth waking for: the start of the first non-empty bucket.
    /// Entries a rotation or more ahead make this early, never late; that costs one
    /// spurious wake-up per rotation, not a missed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let t = self.next_occupied(self.current);
        assert!(t.is_some(), "len > 0 but every bucket is empty");
        t.map(|t| self.start + Duration::from_millis((t + 1) * TICK_MS))
    }

    /// The first tick in `from .. from + BUCKETS` whose bucket holds entries.
    fn next_occupied(&self, from: u64) -> Option<u64> {
        let b = (from as usize) & (BUCKETS - 1);
        // Words from b's word around the wheel and back to it (its low bits last).
        for i in 0..=WORDS {
            let w = (b / 64 + i) % WORDS;
            let mut bits = self.occupied[w];
            if i == 0 {
                bits &= u64::MAX << (b % 64);
            } else if i == WORDS {
                bits &= !(u64::MAX << (b % 64));
            }
            if bits != 0 {
                let bucket = w * 64 + bits.trailing_zeros() as usize;
                let ahead = (bucket + BUCKETS - b) % BUCKETS;
                return Some(from + ahead as u64);
            }
        }
        None
    }

    pub fn is_set(&self, slot: u32) -> bool {
        self.links[slot as usize].tick != u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_not_before_deadline_and_in_order() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 8);
        w.set(1, Some(t0 + Duration::from_millis(100)));
        w.set(2, Some(t0 + Duration::from_millis(50)));
        w.set(3, Some(t0 + Duration::from_secs(100))); // beyond one rotation
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_millis(40), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + Duration::from_millis(60), &mut due);
        assert_eq!(due, vec![2]);
        w.expire(t0 + Duration::from_secs(50), &mut due);
        assert_eq!(due, vec![2, 1]);
        assert!(w.is_set(3));
        w.expire(t0 + Duration::from_secs(99), &mut due);
        assert_eq!(due.len(), 2);
        w.expire(t0 + Duration::from_millis(100_011), &mut due);
        assert_eq!(due, vec![2, 1, 3]);
        assert!(w.next_deadline().is_none());
    }

    #[test]
    fn move_and_clear() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 4);
        w.set(0, Some(t0 + Duration::from_millis(20)));
        w.set(0, Some(t0 + Duration::from_millis(500)));
        w.set(1, Some(t0 + Duration::from_millis(30)));
        w.set(1, None);
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_millis(100), &mut due);
        assert!(due.is_empty());
        let next = w.next_deadline().unwrap();
        assert!(next >= t0 + Duration::from_millis(500) && next <= t0 + Duration::from_millis(520));
    }

    /// Random deadlines across several rotations, expired at random steps, checked
    /// against a plain list: nothing fires early, nothing fires a tick late, and
    /// `next_deadline` is never after the earliest pending deadline.
    #[test]
    fn matches_a_plain_list() {
        let t0 = Instant::now();
        let slots = 300;
        let mut w = Wheel::new(t0, slots);
        let mut want: Vec<Option<u64>> = vec![None; slots]; // deadline in ms
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut now = 0u64;
        let mut due = Vec::new();
        for _ in 0..20_000 {
            let slot = (next() % slots as u64) as usize;
            let d = match next() % 4 {
                0 => None,
                1 => Some(now + next() % 200),
                2 => Some(now + next() % 50_000),
                _ => Some(now + next() % 150_000),
            };
            w.set(slot as u32, d.map(|ms| t0 + Duration::from_millis(ms)));
            want[slot] = d;
            if next() % 8 == 0 {
                now += next() % 3_000;
                due.clear();
                w.expire(t0 + Duration::from_millis(now), &mut due);
                for &s in &due {
                    let d = want[s as usize].take().expect("fired without a deadline");
                    assert!(d <= now, "fired early: {d} > {now}");
                }
                for (s, d) in want.iter().enumerate() {
                    if let Some(d) = d {
                        assert!(*d + TICK_MS > now, "slot {s} due at {d} missed at {now}");
                        assert!(w.is_set(s as u32));
                    }
                }
                if let Some(min) = want.iter().flatten().min() {
                    let at = w.next_deadline().expect("pending but no deadline");
                    assert!(at <= t0 + Duration::from_millis(min + 2 * TICK_MS));
                } else {
                    assert!(w.next_deadline().is_none());
                }
            }
        }
    }
}
