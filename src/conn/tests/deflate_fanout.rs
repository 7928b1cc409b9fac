//! permessage-deflate and fan-out: with `--compression-context shared` (the default) every
//! offer is answered with `server_no_context_takeover`, a list-form message is compressed
//! once and the same compressed frame shared by every deflate target, plain targets keep
//! the plain frame; with `takeover` each deflate target compresses its own copy.
use flate2::{Decompress, FlushDecompress};

use super::harness::*;
use crate::config::{CompressionContext, Config};

const RSV1: u8 = 0x40;
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

fn harness(context: CompressionContext) -> Harness {
    Harness::with_config(Config {
        compression: true,
        compression_context: context,
        ..config()
    })
}

/// Connects with `offer` as its `Sec-WebSocket-Extensions` (none when empty), upgrades and
/// accepts: an open WebSocket, and the extension zring answered (empty when none).
fn open_offering(h: &mut Harness, offer: &str) -> (Client, Session, String) {
    let c = h.connect();
    open_on(h, c, offer)
}

/// As `open_offering`, on a client already connected (a TLS one, say).
fn open_on(h: &mut Harness, c: Client, offer: &str) -> (Client, Session, String) {
    let mut head = String::from(
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    if !offer.is_empty() {
        head.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
    }
    head.push_str("\r\n");
    h.write(c, head.as_bytes());
    let (_, mut s) = h.request();
    h.reply(
        &mut s,
        Reply::response(101, "Switching Protocols").credits(100_000),
    );
    let response = h.read_text(c);
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    let extension = response
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
        .unwrap_or("")
        .to_owned();
    (c, s, extension)
}

/// One unfragmented server frame: (first byte, payload), and nothing after it.
fn frame(bytes: &[u8]) -> (u8, &[u8]) {
    let (len, at) = match bytes[1] {
        126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 => panic!("no test frame is that long"),
        n => (usize::from(n), 2),
    };
    assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
    assert_eq!(bytes.len(), at + len, "one whole frame");
    (bytes[0], &bytes[at..])
}

/// Inflates one compressed message's payload with a fresh raw inflater (flate2, not zring's
/// codec): without server context takeover every message stands alone.
fn inflate(payloads: &[&[u8]]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input: Vec<u8> = payloads.concat();
    input.extend_from_slice(&TRAILER);
    let mut out = Vec::with_capacity(64 * 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("valid DEFLATE");
    assert_eq!(d.total_in() as usize, input.len(), "all of it inflated");
    out
}

fn json(n: usize) -> Vec<u8> {
    let mut s = String::from("[");
    for i in 0..n {
        s.push_str(&format!(
            "{{\"id\":{i},\"price\":{},\"sym\":\"ZRNG\"}},",
            i * 7 % 100
        ));
    }
    s.push(']');
    s.into_bytes()
}

#[test]
fn shared_mode_answers_every_offer_without_server_context() {
    // Goal: the default answers an offer that did not ask for it with
    // server_no_context_takeover (RFC 7692 §7.1.1.1), keeps the client's own requests, and
    // a plain client gets no extension.
    let mut h = harness(CompressionContext::Shared);
    let (_, _, e) = open_offering(&mut h, "permessage-deflate; client_max_window_bits");
    assert_eq!(
        e,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=12"
    );
    let (_, _, e) = open_offering(&mut h, "");
    assert_eq!(e, "");
    let mut t = harness(CompressionContext::Takeover);
    let (_, _, e) = open_offering(&mut t, "permessage-deflate");
    assert_eq!(
        e,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"
    );
}

#[test]
fn a_broadcast_is_compressed_once_and_shared_by_every_deflate_target() {
    // Goal: two deflate targets get the same compressed frame from one shared buffer (one
    // compression), which inflates to the message; the plain target gets the plain shared
    // frame; all three sends are shared.
    let mut h = harness(CompressionContext::Shared);
    let (c1, mut s1, _) = open_offering(&mut h, "permessage-deflate");
    let (c2, mut s2, _) = open_offering(&mut h, "");
    let (c3, mut s3, _) = open_offering(&mut h, "permessage-deflate; client_max_window_bits");
    let body = json(40);
    h.reply_many(&mut [&mut s1, &mut s2, &mut s3], Reply::data(&body));
    let (b1, b3) = (h.read(c1), h.read(c3));
    assert_eq!(b1, b3, "one compression for both deflate targets");
    let (first, payload) = frame(&b1);
    assert_eq!(first, 0x80 | RSV1 | 0x1, "FIN, RSV1, text");
    assert!(
        payload.len() < body.len() / 2,
        "compressed: {}",
        payload.len()
    );
    assert_eq!(inflate(&[payload]), body);
    let plain = h.read(c2);
    let (first, payload) = frame(&plain);
    assert_eq!((first, payload), (0x81, &body[..]));
    for c in [c1, c2, c3] {
        assert_eq!(h.sends(c), (2, 1), "the 101, then the shared frame");
    }
    // The next broadcast of the same bytes reuses the same compressed frame; each stands
    // alone (no context), so it is byte for byte the first one.
    h.reply_many(&mut [&mut s1, &mut s3], Reply::data(&body));
    assert_eq!(h.read(c1), b1);
    assert_eq!(h.read(c3), b1);
}

#[test]
fn takeover_mode_compresses_per_target() {
    // Goal: with per-connection context every deflate target compresses its own copy (no
    // shared send), and the second message refers back to the first (smaller).
    let mut h = harness(CompressionContext::Takeover);
    let (c1, mut s1, _) = open_offering(&mut h, "permessage-deflate");
    let (c2, mut s2, _) = open_offering(&mut h, "permessage-deflate");
    let body = json(40);
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(&body));
    let first = h.read(c1);
    assert_eq!(h.read(c2), first);
    assert_eq!(inflate(&[frame(&first).1]), body);
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(&body));
    let second = h.read(c1);
    assert!(
        frame(&second).1.len() < frame(&first).1.len() / 2,
        "context taken over"
    );
    for c in [c1, c2] {
        assert_eq!(h.sends(c), (3, 0), "no shared send");
    }
}

#[test]
fn a_client_asking_for_no_server_context_shares_even_in_takeover_mode() {
    // Goal: the shared compressed frame goes to any target whose agreed parameters keep no
    // server context, whatever the flag; a takeover target beside it compresses its own.
    let mut h = harness(CompressionContext::Takeover);
    let (c1, mut s1, e) = open_offering(&mut h, "permessage-deflate; server_no_context_takeover");
    assert!(e.contains("server_no_context_takeover"), "{e}");
    let (c2, mut s2, _) = open_offering(&mut h, "permessage-deflate; server_no_context_takeover");
    let (c3, mut s3, _) = open_offering(&mut h, "permessage-deflate");
    let body = json(10);
    h.reply_many(&mut [&mut s1, &mut s2, &mut s3], Reply::data(&body));
    for c in [c1, c2, c3] {
        assert_eq!(inflate(&[frame(&h.read(c)).1]), body);
    }
    assert_eq!(h.sends(c1), (2, 1));
    assert_eq!(h.sends(c2), (2, 1));
    assert_eq!(h.sends(c3), (2, 0));
}

#[test]
fn a_target_with_a_smaller_window_compresses_its_own() {
    // Goal: the shared compressed frame is made with the first deflate target's window; a
    // target that agreed a larger window takes it, one that agreed a smaller one gets its
    // own compression (never a frame that could refer past its window).
    let mut h = harness(CompressionContext::Shared);
    let (c1, mut s1, e) = open_offering(&mut h, "permessage-deflate; server_max_window_bits=10");
    assert!(e.contains("server_max_window_bits=10"), "{e}");
    let (c2, mut s2, _) = open_offering(&mut h, "permessage-deflate");
    let (c3, mut s3, _) = open_offering(&mut h, "permessage-deflate; server_max_window_bits=9");
    let body = json(60);
    h.reply_many(&mut [&mut s1, &mut s2, &mut s3], Reply::data(&body));
    let b1 = h.read(c1);
    assert_eq!(h.read(c2), b1, "window 10 fits a window of 12");
    assert_eq!(inflate(&[frame(&h.read(c3)).1]), body);
    assert_eq!(inflate(&[frame(&b1).1]), body);
    assert_eq!(h.sends(c1), (2, 1));
    assert_eq!(h.sends(c2), (2, 1));
    assert_eq!(h.sends(c3), (2, 0), "window 9: its own compression");
}

#[test]
fn one_to_one_messages_and_fragments_need_no_connection_compressor() {
    // Goal: without server context a single-id message is compressed by the worker's
    // compressor: the same message gives the same bytes every time (nothing kept), and a
    // fragmented message (handler `more`) inflates whole from its frames, RSV1 on the
    // first only.
    let mut h = harness(CompressionContext::Shared);
    let (c, mut s, _) = open_offering(&mut h, "permessage-deflate");
    let body = json(20);
    h.reply(&mut s, Reply::data(&body));
    let first = h.read(c);
    h.reply(&mut s, Reply::data(&body));
    assert_eq!(h.read(c), first, "no context kept between messages");
    assert_eq!(inflate(&[frame(&first).1]), body);
    let (a, b) = body.split_at(body.len() / 3);
    h.reply(&mut s, Reply::data(a).more());
    let f1 = h.read(c);
    let (first_byte, p1) = frame(&f1);
    assert_eq!(first_byte, RSV1 | 0x1, "no FIN, RSV1, text");
    assert!(p1.ends_with(&TRAILER), "a fragment keeps its sync flush");
    h.reply(&mut s, Reply::data(b));
    let f2 = h.read(c);
    let (first_byte, p2) = frame(&f2);
    assert_eq!(first_byte, 0x80, "FIN, continuation, no RSV1");
    assert_eq!(inflate(&[p1, p2]), body);
}

#[test]
fn a_fragmented_broadcast_shares_its_first_frame() {
    // Goal: a list-form fragment (`more`) is compressed once and shared; the continuation
    // goes per target, and each target's message inflates whole.
    let mut h = harness(CompressionContext::Shared);
    let (c1, mut s1, _) = open_offering(&mut h, "permessage-deflate");
    let (c2, mut s2, _) = open_offering(&mut h, "permessage-deflate");
    let body = json(20);
    let (a, b) = body.split_at(100);
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(a).more());
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(b));
    for c in [c1, c2] {
        let bytes = h.read(c);
        let first_len = 2 + usize::from(bytes[1] & 0x7f);
        let (x, p1) = frame(&bytes[..first_len]);
        let (y, p2) = frame(&bytes[first_len..]);
        assert_eq!((x, y), (RSV1 | 0x1, 0x80));
        assert_eq!(inflate(&[p1, p2]), body);
        assert_eq!(h.sends(c), (3, 1), "the first fragment shared");
    }
}

#[test]
fn tls_targets_seal_the_shared_frame() {
    // Goal: TLS targets take the shared frame (plain or compressed) sealed straight from
    // the shared buffer (counted as shared, not queued), and decrypt to the same bytes the
    // plain targets get; a stalled TLS target gets its second frame queued behind the
    // first, in order.
    let mut h = harness(CompressionContext::Shared);
    let t1 = h.connect_tls();
    let (t1, mut s1, _) = open_on(&mut h, t1, "");
    let t2 = h.connect_tls();
    let (t2, mut s2, _) = open_on(&mut h, t2, "permessage-deflate");
    let (p, mut s3, _) = open_offering(&mut h, "");
    let (z, mut s4, _) = open_offering(&mut h, "permessage-deflate");
    let body = json(30);
    h.reply_many(
        &mut [&mut s1, &mut s2, &mut s3, &mut s4],
        Reply::data(&body),
    );
    let plain = h.read(p);
    assert_eq!(h.read(t1), plain);
    assert_eq!(h.read(t2), h.read(z), "the same compressed frame");
    assert_eq!(h.fanout_outcomes(), (4, 0, 0));
    h.stall(t1, true);
    h.reply_many(&mut [&mut s1, &mut s3], Reply::data(b"a"));
    h.reply_many(&mut [&mut s1, &mut s3], Reply::data(b"b"));
    assert_eq!(h.read(p), b"\x81\x01a\x81\x01b");
    assert_eq!(h.fanout_outcomes(), (7, 1, 0), "t1's second frame queued");
    h.stall(t1, false);
    assert_eq!(h.read(t1), b"\x81\x01a\x81\x01b");
}

#[test]
fn a_second_broadcast_to_many_tls_targets_reuses_the_first_ones_buffers() {
    // Goal: a broadcast to more TLS targets than the pool's general list keeps
    // (`POOL_BUFFERS_MAX`) seals every target's record into a pooled small buffer, and the
    // next broadcast takes all of them from the pool: it allocates none. Method: 300 TLS
    // WebSockets, two broadcasts (each list-form packets of 100 ids), the pool's counters
    // read after each.
    const TARGETS: usize = 300;
    const _: () = assert!(TARGETS > crate::limits::POOL_BUFFERS_MAX);
    let mut h = harness(CompressionContext::Shared);
    let mut targets = Vec::new();
    for _ in 0..TARGETS {
        let c = h.connect_tls();
        targets.push(open_on(&mut h, c, ""));
    }
    fn broadcast(h: &mut Harness, targets: &mut [(Client, Session, String)], body: &[u8]) {
        // One packet per 100 ids (`PACKET_IDS_MAX` is 128), all reaching the worker in one
        // turn: every target's record is in flight at once.
        for chunk in targets.chunks_mut(100) {
            let mut sessions: Vec<&mut Session> = chunk.iter_mut().map(|t| &mut t.1).collect();
            h.reply_many_nodrive(&mut sessions, Reply::data(body));
        }
        h.drive();
        for (c, _, _) in targets.iter() {
            assert_eq!(h.read(*c), [b"\x81\x05".as_slice(), body].concat());
        }
    }
    let (before, _) = h.pool_counters();
    broadcast(&mut h, &mut targets, b"first");
    let (first, (free, _)) = h.pool_counters();
    let taken = |c: crate::conn::PoolCounters| c.small_reused + c.small_allocated;
    assert_eq!(
        taken(first) - taken(before),
        TARGETS as u64,
        "one per target"
    );
    assert_eq!(first.small_dropped, 0);
    assert!(
        free >= TARGETS,
        "every record's buffer came back: {free} free"
    );
    broadcast(&mut h, &mut targets, b"again");
    let (second, (free_after, _)) = h.pool_counters();
    assert_eq!(
        second.small_allocated, first.small_allocated,
        "none allocated"
    );
    assert_eq!(second.small_reused - first.small_reused, TARGETS as u64);
    assert_eq!(free_after, free, "and all of them back again");
    assert_eq!(
        h.fanout_outcomes(),
        (2 * TARGETS as u64, 0, 0),
        "all shared"
    );
}

#[test]
fn the_pool_frees_its_small_buffers_once_broadcasts_stop() {
    // Goal: the fan-out's pooled buffers stay while broadcasts keep coming, and are freed
    // within three shrink intervals after the last one (a held-back credit return may
    // take one for a moment). Method: 3 TLS targets, a broadcast every 5 s for 30 s, then
    // 30 s without.
    let mut h = harness(CompressionContext::Shared);
    let mut targets = Vec::new();
    for _ in 0..3 {
        let c = h.connect_tls();
        targets.push(open_on(&mut h, c, ""));
    }
    let interval = std::time::Duration::from_millis(crate::limits::POOL_SHRINK_INTERVAL_MS);
    let mut first = None;
    for _ in 0..6 {
        let mut sessions: Vec<&mut Session> = targets.iter_mut().map(|t| &mut t.1).collect();
        h.reply_many(&mut sessions, Reply::data(b"tick"));
        assert!(h.pool_counters().1 .0 >= 3);
        first.get_or_insert(h.pool_counters().0);
        h.advance(interval / 2);
    }
    let first = first.unwrap();
    let (kept, _) = h.pool_counters();
    assert_eq!(
        kept.small_allocated, first.small_allocated,
        "nothing allocated after the first round"
    );
    h.advance(interval * 3);
    let (shrunk, (free, bytes)) = h.pool_counters();
    assert_eq!((free, bytes), (0, 0), "freed once the rounds stopped");
    assert!(shrunk.small_shrunk >= 3);
}
