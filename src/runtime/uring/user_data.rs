//! The 64-bit `user_data` every SQE carries and its CQE hands back.
//!
//! Layout (high to low): op kind (8 bits) | slot generation (24 bits) | slot (32 bits).
//! Packed fields, not a pointer or a cookie into a side table: decoding needs no lookup,
//! and the generation lets every completion for a slot op be checked against the slot's
//! current life (a late completion landing on a reused slot is a bug the assert catches).
//! Ring-level ops (accept, wake, refused closes, ring notifications) use their own kinds; their
//! "slot" field is an accept index, a direct-descriptor index or a ring index, and their
//! generation is 0. Which ring an op was pushed to is known from the CQ it completes on.

/// What an operation is. `0` is never encoded, so a zeroed `user_data` is never valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Single-shot accept; slot field = accept index (see `Accepts`).
    Accept = 1,
    /// Cancel of an armed accept (gating or exit); slot field = accept index.
    AcceptCancel = 2,
    /// Multishot poll on the wake eventfd.
    Wake = 3,
    /// Cancel of the wake poll at exit.
    WakeCancel = 4,
    /// Close of a connection the driver refused; slot field = direct-descriptor index.
    RefusedClose = 5,
    /// Multishot recv of a slot.
    Recv = 6,
    /// Send of a slot.
    Send = 7,
    /// `shutdown(SHUT_WR)` of a slot.
    Shutdown = 8,
    /// Cancel of a slot's multishot recv (`PauseRecv`).
    RecvCancel = 9,
    /// Cancel of one of a slot's waiting ops (recv, send, connect) at `Close`.
    SlotCancel = 10,
    /// Close of a slot's direct descriptor.
    Close = 11,
    /// Ops issued by `probe` only.
    Probe = 12,
    /// Read, in ring 0, of a secondary ring's notification eventfd; slot field = that
    /// ring's index.
    RingNotify = 13,
    /// Cancel of a `RingNotify` at exit; slot field = the ring's index.
    RingNotifyCancel = 14,
    /// `IORING_OP_SOCKET` of an outbound connection, into a direct descriptor.
    Socket = 15,
    /// `IORING_OP_CONNECT` of an outbound connection.
    Connect = 16,
}

const KIND_BITS: u32 = 8;
const GENERATION_BITS: u32 = 24;
const SLOT_BITS: u32 = 32;
const GENERATION_SHIFT: u32 = SLOT_BITS;
const KIND_SHIFT: u32 = SLOT_BITS + GENERATION_BITS;
/// Generations wrap at this mask; 2^24 lives of one slot between two completions of the
/// same op is impossible (a slot is only reused once nothing of it is in flight).
pub const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

const _: () = assert!(KIND_BITS + GENERATION_BITS + SLOT_BITS == 64);
const _: () = assert!(Kind::Connect as u64 >> KIND_BITS == 0);

impl Kind {
    fn from_bits(bits: u8) -> Kind {
        match bits {
            1 => Kind::Accept,
            2 => Kind::AcceptCancel,
            3 => Kind::Wake,
            4 => Kind::WakeCancel,
            5 => Kind::RefusedClose,
            6 => Kind::Recv,
            7 => Kind::Send,
            8 => Kind::Shutdown,
            9 => Kind::RecvCancel,
            10 => Kind::SlotCancel,
            11 => Kind::Close,
            12 => Kind::Probe,
            13 => Kind::RingNotify,
            14 => Kind::RingNotifyCancel,
            15 => Kind::Socket,
            16 => Kind::Connect,
            // Only values made by `encode` reach the kernel and come back.
            other => panic!("user_data with unknown op kind {other}"),
        }
    }
}

/// Packs the three fields. `generation` must fit in 24 bits.
pub fn encode(kind: Kind, generation: u32, slot: u32) -> u64 {
    assert!(
        generation <= GENERATION_MASK,
        "generation {generation} overflows"
    );
    ((kind as u64) << KIND_SHIFT) | (u64::from(generation) << GENERATION_SHIFT) | u64::from(slot)
}

pub fn kind(user_data: u64) -> Kind {
    Kind::from_bits((user_data >> KIND_SHIFT) as u8)
}

pub fn generation(user_data: u64) -> u32 {
    (user_data >> GENERATION_SHIFT) as u32 & GENERATION_MASK
}

pub fn slot(user_data: u64) -> u32 {
    user_data as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let cases = [
            (Kind::Accept, 0, 0),
            (Kind::Recv, GENERATION_MASK, u32::MAX),
            (Kind::Close, 12345, 7),
            (Kind::Probe, 1, 1 << 31),
        ];
        for (k, g, s) in cases {
            let ud = encode(k, g, s);
            assert_eq!(kind(ud), k);
            assert_eq!(generation(ud), g);
            assert_eq!(slot(ud), s);
        }
    }

    #[test]
    #[should_panic]
    fn generation_overflow_panics() {
        let _ = encode(Kind::Send, GENERATION_MASK + 1, 0);
    }
}
