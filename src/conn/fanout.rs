//! Fan-out: one handler data packet for many WebSocket sessions (list-form ids) becomes one
//! frame, built once per worker and shared by every target's send, instead of a copy in
//! each target's `out`.
//!
//! An unmasked server frame is the same bytes for every target of the same payload and
//! flags, so the frame is an `Arc<[u8]>` the runtime keeps a reference to per send in
//! flight (`Command::SendShared`) and frees when the last completes. A target takes the
//! shared frame only when nothing else of its output is pending (no send in flight, `out`
//! empty), no fragmented message is open and nothing per connection transforms the bytes
//! (permessage-deflate with a context of its own); any other target goes through
//! `handle_packet` as usual,
//! which copies the frame into its `out` behind what is queued, so per-connection order
//! and every check (seq, credits, `--messages-max`) are the same either way.
//!
//! permessage-deflate targets that keep no server context (`--compression-context shared`,
//! the default: zring answers every offer with `server_no_context_takeover`) take the
//! frame's compressed form, made once per worker and message by the first of them: a
//! message compressed without context is the same bytes for every such target.
//!
//! TLS targets seal the shared frame (plain or compressed) straight into a small pooled
//! buffer (`Pool::take_small`), the send in flight: no copy into `out`, no framing or
//! compression per target, and in the steady state no allocation either (the buffer comes
//! back to the pool when the send completes and serves a target of the next round).
//!
//! Slow clients: a target whose socket is full keeps its send in flight in the kernel; the
//! next frames for it queue in its `out` (the copy path), bounded by the credits it gave
//! the handler (`--buffer-size`) and `--messages-max`. A handler that sends past those
//! gets the connection failed (1011), as Condure drops it ("received too much data from
//! handler"). No target ever waits for another.
use std::sync::{Arc, OnceLock};

use super::transport::Transport;
use super::ws::{self, WsSession};
use super::{Ctx, HandlerPacket};
use crate::proto::ws::{self as wsproto, Opcode};
use crate::proto::zhttp::{ContentType, Kind};
use crate::runtime::Command;

/// A frame shared by all eligible targets of a packet (and reused by following packets
/// with the same payload and flags: a broadcast of 100,000 ids is ~800 packets).
#[derive(Clone)]
pub struct SharedFrame {
    bytes: Arc<[u8]>,
    header_len: usize,
    /// The same message compressed for permessage-deflate targets without server context
    /// takeover: made by the first such target (one compression per worker and message),
    /// taken as it is by every later one.
    deflated: Arc<OnceLock<DeflatedFrame>>,
}

/// A shared frame's compressed form: RSV1 set, the payload one independent DEFLATE stream
/// (`ws_deflate::SharedCompressor`).
struct DeflatedFrame {
    bytes: Arc<[u8]>,
    /// The window it was compressed with: it fits every target whose agreed server window
    /// is at least this.
    window_bits: u8,
}

impl SharedFrame {
    /// The frame for a data packet with more than one id; `None` for anything else (it goes
    /// the ordinary way). `cache` is the frame of the previous packet: reused when the
    /// bytes would be the same, replaced otherwise.
    pub fn for_packet(
        pkt: HandlerPacket<'_>,
        cache: &mut Option<SharedFrame>,
    ) -> Option<SharedFrame> {
        let p = &pkt.packet;
        if p.kind != Kind::Data || p.ids.len() < 2 {
            return None;
        }
        let body = p.body.get(pkt.buf);
        let opcode = match p.content_type {
            Some(ContentType::Binary) => Opcode::Binary,
            _ => Opcode::Text,
        };
        let header = wsproto::encode_header(!p.more, false, opcode, body.len() as u64);
        let header = header.as_bytes();
        if let Some(f) = cache.as_ref() {
            if f.bytes[..f.header_len] == *header && f.bytes[f.header_len..] == *body {
                return Some(f.clone());
            }
        }
        let mut bytes = Vec::with_capacity(header.len() + body.len());
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(body);
        let frame = SharedFrame {
            bytes: bytes.into(),
            header_len: header.len(),
            deflated: Arc::default(),
        };
        *cache = Some(frame.clone());
        Some(frame)
    }

    /// The whole frame, for `Command::SendShared`.
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    fn payload_len(&self) -> u64 {
        (self.bytes.len() - self.header_len) as u64
    }

    /// The compressed frame for a target whose agreed server window is `window_bits`:
    /// compressed now if no target has needed it yet, `None` if it was compressed with a
    /// larger window than this target allows (that target compresses its own).
    fn deflated(&self, cx: &mut Ctx, window_bits: u8) -> Option<&Arc<[u8]>> {
        let frame = self.deflated.get_or_init(|| {
            // The plain frame's first byte: FIN and the opcode, which the compressed frame
            // keeps; RSV1 is added (RFC 7692 §6: on the first frame of a message).
            let first = self.bytes[0];
            let fin = first & 0x80 != 0;
            let opcode = Opcode::from_bits(first & 0x0f).expect("a data opcode");
            let body = &self.bytes[self.header_len..];
            let mut z = cx.pool.take();
            let config = &cx.settings.deflate;
            cx.pool
                .deflate
                .compress(config, window_bits, body, fin, &mut z);
            let header = wsproto::encode_header(fin, true, opcode, z.len() as u64);
            let mut bytes = Vec::with_capacity(header.as_bytes().len() + z.len());
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&z);
            cx.pool.give(z);
            DeflatedFrame {
                bytes: bytes.into(),
                window_bits,
            }
        });
        (frame.window_bits <= window_bits).then_some(&frame.bytes)
    }
}

impl WsSession {
    /// A data packet that `frame` was built from, for this open WebSocket. When the frame is
    /// exactly what this connection would write now, it takes it: the `SendShared` of
    /// `frame` goes out (before anything this connection asks for next). True when the
    /// packet was handled here (taken, or refused by the checks every packet passes);
    /// false when nothing happened and the caller handles it the ordinary way (copied into
    /// `out`).
    pub fn handle_packet_shared(
        &mut self,
        t: &mut Transport,
        cx: &mut Ctx,
        pkt: HandlerPacket<'_>,
        seq: Option<u32>,
        frame: &SharedFrame,
    ) -> bool {
        if !self.takes_shared_frame(t) {
            return false;
        }
        let bytes = match self.deflate.as_deref() {
            None => frame.bytes().clone(),
            Some(d) => match frame.deflated(cx, d.params.server_window_bits()) {
                Some(bytes) => bytes.clone(),
                None => return false,
            },
        };
        if !self.z.accept_packet(t, cx, pkt, seq) {
            return true; // refused (and failed) as the ordinary path would
        }
        // From here as `handler_message` for a data packet on an open WebSocket, with the
        // frame sent from the shared buffer instead of written into `out`.
        let p = pkt.packet;
        if let Some(c) = p.credits {
            self.z.credits += u64::from(c);
        }
        let len = frame.payload_len();
        if len > self.z.budget {
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "received too much data from handler"
            );
            self.fail(t, cx, wsproto::close_code::INTERNAL_ERROR, "");
            return true;
        }
        self.flags.tx_open = p.more;
        self.z.spend_budget(len);
        match t.tls.as_mut() {
            // One reference count per target, no copy: the runtime drops it on completion.
            None => cx.io(Command::SendShared {
                slot: cx.slot,
                buf: bytes,
            }),
            // TLS: the frame sealed from the shared buffer into a pooled one (no copy into
            // `out`, no framing per target), sent in the same batch as the plain targets'.
            Some(tls) => match tls.seal_frame(&bytes, cx.pool) {
                Ok(wire) => cx.io(Command::Send {
                    slot: cx.slot,
                    buf: wire,
                }),
                Err(e) => {
                    crate::log!(crate::log::DEBUG, "tls", "{e}: closing");
                    t.fail_sealing(cx);
                    return true;
                }
            },
        }
        // The send in flight; its body bytes earn credits back when it completes.
        t.sending = Some(len);
        self.pump(t, cx);
        true
    }

    /// Whether the shared frame (or its compressed form) is exactly what this connection
    /// would write now, with nothing of its own output before it: a permessage-deflate
    /// connection must keep no compression context (its own would make its bytes differ).
    fn takes_shared_frame(&self, t: &Transport) -> bool {
        t.is_open()
            && self.flags.phase == ws::Phase::Open
            && t.tls.as_ref().is_none_or(|tls| tls.takes_frames())
            && self.deflate.as_ref().is_none_or(|d| d.tx.is_none())
            && !self.flags.tx_open
            && !self.flags.close_sent
            && self.flags.frames_over == 0
            && t.sending.is_none()
            && t.out.is_empty()
    }
}

// What a connection does with a shared frame is tested through the worker, in
// `conn::tests::fanout`; here only which packets make one, and its bytes.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::harness::Reply;
    use crate::proto::zhttp;

    const ID: &str = "0-5-1";

    fn decode(raw: &[u8]) -> zhttp::Packet {
        zhttp::decode(raw).expect("valid packet")
    }

    fn view<'a>(raw: &'a [u8], packet: &'a zhttp::Packet) -> HandlerPacket<'a> {
        HandlerPacket { packet, buf: raw }
    }

    #[test]
    fn single_ids_and_other_kinds_are_not_shared() {
        let mut cache = None;
        let one = Reply::data(b"x").packet(&[(ID, 1)]);
        assert!(SharedFrame::for_packet(view(&one, &decode(&one)), &mut cache).is_none());
        let credit = Reply::credit(10).packet(&[(ID, 1), ("0-6-1", 0)]);
        assert!(SharedFrame::for_packet(view(&credit, &decode(&credit)), &mut cache).is_none());
        let binary = Reply::data(b"\x00\x01")
            .bytes("content-type", b"binary")
            .packet(&[(ID, 1), ("0-6-1", 0)]);
        let frame = SharedFrame::for_packet(view(&binary, &decode(&binary)), &mut cache).unwrap();
        assert_eq!(&frame.bytes()[..], b"\x82\x02\x00\x01");
    }
}
