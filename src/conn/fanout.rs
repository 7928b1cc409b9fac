//! Fan-out: one handler data packet for many WebSocket sessions (list-form ids) becomes one
//! frame, built once per worker and shared by every target's send, instead of a copy in
//! each target's `out`.
//!
//! An unmasked server frame is the same bytes for every target of the same payload and
//! flags, so the frame is an `Arc<[u8]>` the runtime keeps a reference to per send in
//! flight (`Command::SendShared`) and frees when the last completes. A target takes the
//! shared frame only when nothing else of its output is pending (no send in flight, `out`
//! empty), no fragmented message is open and nothing per connection transforms the bytes
//! (permessage-deflate, TLS); any other target goes through `handle_packet` as usual,
//! which copies the frame into its `out` behind what is queued, so per-connection order
//! and every check (seq, credits, `--messages-max`) are the same either way.
//!
//! Slow clients: a target whose socket is full keeps its send in flight in the kernel; the
//! next frames for it queue in its `out` (the copy path), bounded by the credits it gave
//! the handler (`--buffer-size`) and `--messages-max`. A handler that sends past those
//! gets the connection failed (1011), as Condure drops it ("received too much data from
//! handler"). No target ever waits for another.
use std::sync::Arc;

use super::{ws, Conn, Ctx, State};
use crate::bridge::InPacket;
use crate::proto::ws::{self as wsproto, Opcode};
use crate::proto::zhttp::{ContentType, Kind};

/// A frame shared by all eligible targets of a packet (and reused by following packets
/// with the same payload and flags: a broadcast of 100,000 ids is ~800 packets).
#[derive(Clone)]
pub struct SharedFrame {
    bytes: Arc<[u8]>,
    header_len: usize,
}

impl SharedFrame {
    /// The frame for a data packet with more than one id; `None` for anything else (it goes
    /// the ordinary way). `cache` is the frame of the previous packet: reused when the
    /// bytes would be the same, replaced otherwise.
    pub fn for_packet(pkt: &InPacket, cache: &mut Option<SharedFrame>) -> Option<SharedFrame> {
        let p = &pkt.packet;
        if p.kind != Kind::Data || p.ids.len() < 2 {
            return None;
        }
        let body = p.body.get(pkt.buf());
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
}

impl Conn {
    /// A handler packet that `frame` was built from. Returns true when this connection
    /// takes the shared frame: the caller must then issue `Command::SendShared` with
    /// `frame.bytes()` for this slot *before* the commands of `poll_io`. Otherwise the
    /// packet was handled as by [`Conn::handle_packet`] (copied into `out`, or refused).
    pub fn handle_packet_shared(
        &mut self,
        cx: &mut Ctx,
        pkt: &InPacket,
        seq: Option<u32>,
        frame: &SharedFrame,
    ) -> bool {
        if !self.takes_shared_frame() {
            self.handle_packet(cx, pkt, seq);
            return false;
        }
        if !self.accept_packet(cx, pkt, seq) {
            return false;
        }
        // From here as `ws_handler_message` for a data packet on an open WebSocket, with
        // the frame sent from the shared buffer instead of written into `out`.
        let p = &pkt.packet;
        if let Some(c) = p.credits {
            self.credits += u64::from(c);
        }
        let len = frame.payload_len();
        if len > self.budget {
            crate::log!(
                crate::log::DEBUG,
                "conn",
                "received too much data from handler"
            );
            self.ws_fail(cx, wsproto::close_code::INTERNAL_ERROR, "");
            return false;
        }
        self.wsf.tx_open = p.more;
        self.spend_budget(len);
        // The send in flight; its body bytes earn credits back when it completes.
        self.sending = Some(len);
        self.ws_pump(cx);
        true
    }

    /// Whether the shared frame is exactly what this connection would write now, with
    /// nothing of its own output before it.
    fn takes_shared_frame(&self) -> bool {
        self.state == State::Session
            && self.wsf.phase == ws::Phase::Open
            && self.tls.is_none()
            && self.deflate.is_none()
            && !self.wsf.tx_open
            && !self.wsf.close_sent
            && self.wsf.frames_over == 0
            && self.sending.is_none()
            && self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::bridge::{Addr, OutPacket};
    use crate::config::Mode;
    use crate::conn::{Handlers, Pool, Settings};
    use crate::limits;
    use crate::proto::tnetstring::Writer;
    use crate::proto::zhttp;
    use crate::runtime::Command;

    const SLOT: u32 = 5;
    const ID: &[u8] = b"0-5-1";

    struct World {
        settings: Settings,
        packets: Vec<OutPacket>,
        pool: Pool,
        handlers: Handlers,
        counter: u64,
        cmds: VecDeque<Command>,
        now: Instant,
    }

    impl World {
        fn new() -> World {
            let now = Instant::now();
            World {
                settings: Settings {
                    instance_id: Addr::try_from(&b"zring-test"[..]).unwrap(),
                    worker: 0,
                    buffer_size: 8192,
                    body_buffer_size: 100_000,
                    req_timeout: Duration::from_secs(30),
                    stream_timeout: Duration::from_secs(1800),
                    handler_wait: Duration::from_secs(5),
                    tls_handshake_timeout: Duration::from_secs(10),
                    messages_max: 100,
                    compression: false,
                    deflate: Default::default(),
                    epoch: now,
                },
                packets: Vec::new(),
                pool: Pool::default(),
                handlers: Handlers::default(),
                counter: 0,
                cmds: VecDeque::new(),
                now,
            }
        }

        fn with<R>(&mut self, conn: &mut Conn, f: impl FnOnce(&mut Conn, &mut Ctx) -> R) -> R {
            let mut cx = Ctx {
                now: self.now,
                settings: &self.settings,
                slot: SLOT,
                packets: &mut self.packets,
                pool: &mut self.pool,
                handlers: &mut self.handlers,
                counter: &mut self.counter,
            };
            let r = f(conn, &mut cx);
            conn.poll_io(SLOT, false, &mut self.cmds, &mut self.pool);
            r
        }

        /// A connection with an open WebSocket session (handshake done, 101 written).
        fn open_ws(&mut self) -> Conn {
            let mut conn = Conn::new(self.now, &self.settings, Mode::Stream, None, None);
            let mut req = b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
                Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                Sec-WebSocket-Version: 13\r\n\r\n"
                .to_vec();
            self.with(&mut conn, |c, cx| c.handle_recv(cx, &mut req));
            let accept = handler_packet(ID, 0, |w| {
                w.bytes(b"code");
                w.int(101);
                w.bytes(b"reason");
                w.bytes(b"Switching Protocols");
                w.bytes(b"credits");
                w.int(100_000);
            });
            self.with(&mut conn, |c, cx| c.handle_packet(cx, &accept, Some(0)));
            let Some(Command::Send { buf, .. }) = self.cmds.pop_front() else {
                panic!("the 101 goes out");
            };
            assert!(buf.starts_with(b"HTTP/1.1 101"));
            self.with(&mut conn, |c, cx| c.handle_sent(cx, buf));
            self.cmds.clear();
            self.packets.clear();
            conn
        }
    }

    /// A handler packet (`T` + dict) for `id`, with `fields` added.
    fn handler_packet(id: &[u8], seq: u32, fields: impl FnOnce(&mut Writer)) -> InPacket {
        list_packet(&[(id, seq)], fields)
    }

    /// A handler packet for several ids (list form when more than one).
    fn list_packet(ids: &[(&[u8], u32)], fields: impl FnOnce(&mut Writer)) -> InPacket {
        let mut out = b"T".to_vec();
        let mut w = Writer::new(&mut out);
        w.begin_dict();
        w.bytes(b"from");
        w.bytes(b"handler");
        w.bytes(b"id");
        if let [(id, seq)] = ids {
            w.bytes(id);
            w.bytes(b"seq");
            w.int(i64::from(*seq));
        } else {
            w.begin_list();
            for (id, seq) in ids {
                w.begin_dict();
                w.bytes(b"id");
                w.bytes(id);
                w.bytes(b"seq");
                w.int(i64::from(*seq));
                w.end_dict();
            }
            w.end_list();
        }
        fields(&mut w);
        w.end_dict();
        w.finish();
        let packet = zhttp::decode(&out).expect("valid packet");
        InPacket {
            msg: zmq::Message::from(&out[..]),
            offset: 0,
            packet,
            req: false,
        }
    }

    fn broadcast(seq: u32, body: &[u8]) -> InPacket {
        list_packet(&[(ID, seq), (b"1-9-3", 0)], |w| {
            w.bytes(b"body");
            w.bytes(body);
        })
    }

    #[test]
    fn shared_frame_then_copies_behind_a_send_in_flight() {
        let mut world = World::new();
        let mut conn = world.open_ws();
        let mut cache = None;
        let first = broadcast(1, b"hello");
        let frame = SharedFrame::for_packet(&first, &mut cache).expect("list-form data");
        assert_eq!(&frame.bytes()[..], b"\x81\x05hello");
        let took = world.with(&mut conn, |c, cx| {
            c.handle_packet_shared(cx, &first, Some(1), &frame)
        });
        assert!(took, "an idle open WebSocket takes the shared frame");
        assert!(
            world.cmds.is_empty(),
            "nothing of its own: the caller sends"
        );

        // Same payload: the same buffer, not a new one.
        let second = broadcast(2, b"hello");
        let again = SharedFrame::for_packet(&second, &mut cache).unwrap();
        assert!(Arc::ptr_eq(again.bytes(), frame.bytes()));
        // The shared send is still in flight: this one is copied behind it, in order.
        let took = world.with(&mut conn, |c, cx| {
            c.handle_packet_shared(cx, &second, Some(2), &again)
        });
        assert!(!took);
        assert!(world.cmds.is_empty(), "one send in flight at a time");
        world.with(&mut conn, |c, cx| c.handle_sent(cx, Vec::new()));
        let Some(Command::Send { buf, .. }) = world.cmds.pop_front() else {
            panic!("the queued copy goes out after the shared send");
        };
        assert_eq!(buf, b"\x81\x05hello");
        world.with(&mut conn, |c, cx| c.handle_sent(cx, buf));
        // The frames' bytes earned credits, held back while the handler has most of its
        // budget (no packet per frame in a fan-out round), then returned together.
        let credit_packet = |world: &World, n: &str| {
            world.packets.iter().any(|p| {
                let text = String::from_utf8_lossy(&p.data);
                text.contains("credit") && text.contains(n)
            })
        };
        assert!(!credit_packet(&world, "credits"), "credits held back");
        world.now += Duration::from_millis(limits::CREDIT_RETURN_DELAY_MS);
        world.with(&mut conn, |c, cx| c.handle_timeout(cx));
        assert!(
            credit_packet(&world, "2:10#"),
            "both frames' credits returned in one packet"
        );
    }

    #[test]
    fn shared_frame_respects_seq_and_credits() {
        let mut world = World::new();
        let mut conn = world.open_ws();
        let mut cache = None;
        // Wrong seq: the session fails as on the ordinary path (502 is not possible after
        // the 101; the connection closes).
        let bad = broadcast(7, b"x");
        let frame = SharedFrame::for_packet(&bad, &mut cache).unwrap();
        let took = world.with(&mut conn, |c, cx| {
            c.handle_packet_shared(cx, &bad, Some(7), &frame)
        });
        assert!(!took);
        assert!(
            world
                .cmds
                .iter()
                .all(|c| !matches!(c, Command::SendShared { .. })),
            "nothing shared to a failed session"
        );

        // More than the handler's budget (our initial credits, --buffer-size): dropped
        // with 1011, as Condure drops it.
        let mut world = World::new();
        let mut conn = world.open_ws();
        let big = vec![b'a'; world.settings.buffer_size + 1];
        let over = broadcast(1, &big);
        let frame = SharedFrame::for_packet(&over, &mut cache).unwrap();
        let took = world.with(&mut conn, |c, cx| {
            c.handle_packet_shared(cx, &over, Some(1), &frame)
        });
        assert!(!took);
        let Some(Command::Send { buf, .. }) = world.cmds.pop_front() else {
            panic!("a close frame goes out");
        };
        assert_eq!(&buf[..4], b"\x88\x02\x03\xf3", "close 1011");
    }

    #[test]
    fn single_ids_and_other_kinds_are_not_shared() {
        let mut cache = None;
        let one = handler_packet(ID, 1, |w| {
            w.bytes(b"body");
            w.bytes(b"x");
        });
        assert!(SharedFrame::for_packet(&one, &mut cache).is_none());
        let credit = list_packet(&[(ID, 1), (b"0-6-1", 0)], |w| {
            w.bytes(b"type");
            w.bytes(b"credit");
            w.bytes(b"credits");
            w.int(10);
        });
        assert!(SharedFrame::for_packet(&credit, &mut cache).is_none());
        let binary = list_packet(&[(ID, 1), (b"0-6-1", 0)], |w| {
            w.bytes(b"content-type");
            w.bytes(b"binary");
            w.bytes(b"body");
            w.bytes(b"\x00\x01");
        });
        let frame = SharedFrame::for_packet(&binary, &mut cache).unwrap();
        assert_eq!(&frame.bytes()[..], b"\x82\x02\x00\x01");
    }
}
