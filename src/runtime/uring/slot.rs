//! The runtime's per-slot state: which direct descriptor a slot holds, what of it is in the
//! kernel, and the send buffer the kernel may be reading.
use super::user_data::GENERATION_MASK;
use crate::runtime::SendBuf;

/// Most ops one slot can have in the kernel at once: recv, recv cancel, send, shutdown,
/// slot cancel, close, and slack for a driver that shuts down twice (a connect is one op
/// at a time, before any of these).
pub const OPS_PER_SLOT_MAX: u8 = 8;

/// The runtime's bytes per slot (allocated for `slots_max` slots at start): keep it small,
/// it is paid for every possible connection.
const _: () = assert!(size_of::<Slot>() <= 48);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not bound to a connection; the driver may hand it out.
    Free,
    /// Bound to a direct descriptor; commands are accepted.
    Open,
    /// `Close` issued (or the run is exiting): waiting for the slot's ops to drain.
    Closing,
}

pub struct Slot {
    /// Invariant: changes (mod 2^24) exactly when the slot goes back to `Free`.
    pub generation: u32,
    pub state: State,
    /// Direct-descriptor index in the table of ring `lane`. Meaningful while not `Free`.
    pub file: u32,
    /// The ring (lane) the connection lives in, for its whole life: its descriptor is only
    /// valid there, so every op of the slot goes to that ring.
    pub lane: u16,
    /// Ops of this slot pushed whose last CQE has not arrived.
    /// Invariant: `in_flight <= OPS_PER_SLOT_MAX`; the slot leaves `Closing` only at 0.
    in_flight: u8,
    /// A multishot recv is in the kernel. Invariant: at most one per slot.
    pub recv_armed: bool,
    /// A cancel for the armed recv is in the kernel (`PauseRecv`).
    pub recv_cancelling: bool,
    /// The driver paused reading.
    pub recv_paused: bool,
    /// `SHUTDOWN`s in the kernel. The kernel always runs one on an io-wq thread and only
    /// then looks up the direct descriptor, so the slot's `CLOSE` must wait for them: a
    /// `CLOSE` first frees the table entry, the next accept takes it, and the late shutdown
    /// hits that new connection (its response never leaves).
    pub shutdowns: u8,
    /// `Close` came while `shutdowns > 0`: the last shutdown's completion closes the file.
    pub close_deferred: bool,
    /// `handle_eof` was called: no more `handle_recv` for this connection.
    pub eof: bool,

    /// The driver's buffer of the current `Send`. Invariant: `Some` while a send of it is
    /// in the kernel (the kernel reads it), so it is never dropped or moved before the CQE.
    pub send: Option<SendBuf>,
    /// Bytes of `send` already written. A `u32` (send buffers are bounded far below 4 GiB:
    /// `start_send` asserts it) keeps the slot within its 48 bytes.
    pub send_offset: u32,
}

impl Slot {
    pub fn new() -> Slot {
        Slot {
            generation: 0,
            state: State::Free,
            file: 0,
            lane: 0,
            in_flight: 0,
            recv_armed: false,
            recv_cancelling: false,
            recv_paused: false,
            shutdowns: 0,
            close_deferred: false,
            eof: false,
            send: None,
            send_offset: 0,
        }
    }

    /// Binds the slot to a freshly accepted direct descriptor of ring `lane`.
    pub fn open(&mut self, file: u32, lane: u16) {
        assert_eq!(
            self.state,
            State::Free,
            "driver reused a slot before handle_closed"
        );
        assert_eq!(self.in_flight, 0);
        assert!(self.send.is_none());
        let generation = self.generation;
        *self = Slot::new();
        self.generation = generation;
        self.state = State::Open;
        self.file = file;
        self.lane = lane;
    }

    /// An op of this slot is about to be pushed.
    pub fn op_started(&mut self) {
        assert_ne!(self.state, State::Free, "op on a free slot");
        assert!(
            self.in_flight < OPS_PER_SLOT_MAX,
            "too many ops in flight on one slot"
        );
        self.in_flight += 1;
    }

    /// An op's last CQE arrived. True when the slot has just drained while closing: the
    /// caller frees it.
    pub fn op_finished(&mut self) -> bool {
        assert!(self.in_flight > 0, "slot in-flight count underflow");
        self.in_flight -= 1;
        self.state == State::Closing && self.in_flight == 0
    }

    /// Back to `Free` with a new generation. Only once nothing is in flight.
    pub fn free(&mut self) {
        assert_eq!(self.state, State::Closing);
        assert_eq!(self.in_flight, 0, "slot freed with ops in flight");
        assert!(!self.recv_armed);
        assert!(self.shutdowns == 0 && !self.close_deferred);
        self.state = State::Free;
        self.send = None;
        self.generation = (self.generation + 1) & GENERATION_MASK;
    }
}
