//! The ZHTTP session id zring gives a request: `W-S-N`, the worker's index, the
//! connection's slot and the worker's request counter in hex (Condure's format). The one
//! place that writes or reads it: handler packets name sessions by it, and the bridge routes
//! a packet to its worker by its first part.
use arrayvec::ArrayVec;

/// Longest id text: `65535-4294967295-ffffffffffffffff` is 33 bytes.
pub const CONN_ID_BYTES_MAX: usize = 40;

/// A session: which worker, which slot, and which request on that slot (a slot is reused
/// by later connections; the counter tells a late packet from a live one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnId {
    pub worker: u16,
    pub slot: u32,
    pub counter: u64,
}

impl ConnId {
    /// The id as it goes on the wire.
    pub fn encode(&self) -> ArrayVec<u8, CONN_ID_BYTES_MAX> {
        use std::io::Write;
        let mut buf = [0u8; CONN_ID_BYTES_MAX];
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cur, "{}-{}-{:x}", self.worker, self.slot, self.counter);
        let n = cur.position() as usize;
        ArrayVec::try_from(&buf[..n]).expect("an id fits CONN_ID_BYTES_MAX")
    }

    /// Reads a whole id; `None` for anything not of this form (another instance's ids,
    /// garbage from a handler).
    pub fn parse(id: &[u8]) -> Option<ConnId> {
        let s = std::str::from_utf8(id).ok()?;
        let mut it = s.splitn(3, '-');
        let worker = it.next()?.parse().ok()?;
        let slot = it.next()?.parse().ok()?;
        let counter = u64::from_str_radix(it.next()?, 16).ok()?;
        Some(ConnId {
            worker,
            slot,
            counter,
        })
    }

    /// Only the worker part, for routing (the bridge reads nothing else of an id).
    pub fn worker_of(id: &[u8]) -> Option<usize> {
        let dash = id.iter().position(|&b| b == b'-')?;
        let w = std::str::from_utf8(&id[..dash]).ok()?;
        if w.is_empty() || w.len() > 4 || !w.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        w.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let id = ConnId {
            worker: 65535,
            slot: u32::MAX,
            counter: u64::MAX,
        };
        let text = id.encode();
        assert_eq!(&text[..], b"65535-4294967295-ffffffffffffffff");
        assert_eq!(ConnId::parse(&text), Some(id));
        assert_eq!(ConnId::worker_of(b"3-7-1f"), Some(3));
        assert_eq!(
            ConnId::parse(b"3-7-1f"),
            Some(ConnId {
                worker: 3,
                slot: 7,
                counter: 0x1f
            })
        );
        for bad in [&b""[..], b"x-1-1", b"1-1", b"1--1", b"1-1-g", b"70000-1-1"] {
            assert_eq!(
                ConnId::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(ConnId::worker_of(b"12345-1-1"), None);
        assert_eq!(ConnId::worker_of(b"-1-1"), None);
    }
}
