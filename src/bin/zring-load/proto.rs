//! The little protocol work a load client needs, written here rather than taken from zring so
//! that a bug in zring's own handshake code cannot hide itself: SHA-1 and base64 for the
//! `Sec-WebSocket-Accept` check, the response head checks, and a streaming parser for
//! server frames that keeps a few bytes of state per client instead of a buffer.

/// RFC 6455 §1.3.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// SHA-1 (FIPS 180-4), enough for the 60-byte key + GUID input.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

pub fn base64(data: &[u8]) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63]);
        out.push(T[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63]
        } else {
            b'='
        });
    }
    out
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub fn ws_accept(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.extend_from_slice(WS_GUID);
    base64(&sha1(&k))
}

/// Where the head ends (index just past `\r\n\r\n`), if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The value of header `name` in a response head (case-insensitive name, trimmed value).
pub fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (n, v) = (&line[..colon], &line[colon + 1..]);
        n.eq_ignore_ascii_case(name).then(|| v.trim_ascii())
    })
}

/// Checks a WebSocket handshake response head: `101` and the right accept value.
pub fn check_ws_head(head: &[u8], key: &[u8]) -> Result<(), &'static str> {
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err("handshake answered without 101");
    }
    match header(head, b"sec-websocket-accept") {
        Some(v) if v == ws_accept(key).as_slice() => Ok(()),
        Some(_) => Err("wrong Sec-WebSocket-Accept"),
        None => Err("no Sec-WebSocket-Accept"),
    }
}

/// The server's answer to our permessage-deflate offer: `Ok(true)` when it takes over its
/// context between messages (no `server_no_context_takeover`), `Ok(false)` when every
/// message stands alone; an error when it declined the offer.
pub fn deflate_answer(head: &[u8]) -> Result<bool, &'static str> {
    let value = header(head, b"sec-websocket-extensions")
        .ok_or("permessage-deflate offered, not agreed")?;
    let mut params = value.split(|&b| b == b';').map(<[u8]>::trim_ascii);
    if params.next() != Some(&b"permessage-deflate"[..]) {
        return Err("an extension other than permessage-deflate agreed");
    }
    Ok(!params.any(|p| p == b"server_no_context_takeover"))
}

/// Checks a keep-alive HTTP response head; returns the body length to expect.
pub fn check_http_head(head: &[u8]) -> Result<usize, &'static str> {
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err("request answered without 200");
    }
    if header(head, b"connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close")) {
        return Err("response closes the connection (not keep-alive)");
    }
    let len = header(head, b"content-length").ok_or("response without Content-Length")?;
    std::str::from_utf8(len)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad Content-Length")
}

/// What one parsed frame meant for the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole text message: the round and send timestamp it carried (0 when absent).
    Text {
        round: u32,
        ts_ns: u64,
    },
    Ping,
    Close,
}

/// Payload size the parser accepts in one frame; our messages are ~100 bytes, so a bigger
/// one is a broken server, not something to wait for.
const FRAME_PAYLOAD_MAX: u64 = 1 << 20;

/// Streaming parser of unmasked server frames: 16 bytes of state, fed any split of the
/// byte stream. Text payloads are read as `<round> <ts_ns> <padding>`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
pub struct FrameParser {
    ts: u64,
    /// Payload (or extended-length) bytes still to come.
    remaining: u32,
    round: u16,
    /// 0 = first header byte next, 1 = second, 2 = extended length, 3 = payload.
    state: u8,
    /// Low nibble: the message's opcode; bits 4–5: the payload field being read; bit 6: FIN.
    bits: u8,
}

impl FrameParser {
    /// Feeds `data`; `on` gets each event. Returns an error for what no server may send.
    /// With `deflate` (permessage-deflate was agreed) a message whose first frame has RSV1
    /// is compressed: its payload goes to `on_compressed` piece by piece (`true` with the
    /// last, possibly empty, piece) instead of being read here, and the caller inflates it
    /// and reports its `Event::Text` itself.
    pub fn feed(
        &mut self,
        data: &[u8],
        deflate: bool,
        mut on: impl FnMut(Event),
        mut on_compressed: impl FnMut(&[u8], bool),
    ) -> Result<(), &'static str> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                0 => {
                    let b = data[i];
                    let op = b & 0x0f;
                    let fin = b & 0x80 != 0;
                    let rsv1 = b & 0x40 != 0;
                    if b & 0x30 != 0 || (rsv1 && !deflate) {
                        return Err("frame with RSV bits no extension allows");
                    }
                    if rsv1 && !matches!(op, 1 | 2) {
                        return Err("RSV1 on a frame that does not start a data message");
                    }
                    if op == 0 {
                        // Continuation: keep the message's opcode, field position and
                        // compression.
                        self.bits = (self.bits & 0xbf) | if fin { 0x40 } else { 0 };
                    } else {
                        if !matches!(op, 1 | 2 | 8 | 9 | 10) {
                            return Err("frame with an unknown opcode");
                        }
                        let compressed = if rsv1 { COMPRESSED } else { 0 };
                        self.bits = op | compressed | if fin { 0x40 } else { 0 };
                        if op <= 2 {
                            self.ts = 0;
                            self.round = 0;
                        }
                    }
                    self.state = 1;
                    i += 1;
                }
                1 => {
                    let b = data[i];
                    if b & 0x80 != 0 {
                        return Err("masked server frame");
                    }
                    match b & 0x7f {
                        126 => (self.state, self.remaining) = (2, 2 << 24),
                        127 => (self.state, self.remaining) = (2, 8 << 24),
                        n => {
                            self.remaining = u32::from(n);
                            self.state = 3;
                        }
                    }
                    i += 1;
                    if self.state == 3 && self.remaining == 0 {
                        self.frame_end(&mut on, &mut on_compressed);
                    }
                }
                2 => {
                    // Extended length: the count of length bytes left sits in the top byte,
                    // the length so far below it (capped, so it fits).
                    let left = self.remaining >> 24;
                    let so_far = u64::from(self.remaining & 0x00ff_ffff);
                    let len = (so_far << 8) | u64::from(data[i]);
                    if len > FRAME_PAYLOAD_MAX {
                        return Err("frame larger than 1 MiB");
                    }
                    i += 1;
                    if left == 1 {
                        self.remaining = len as u32;
                        self.state = 3;
                        if self.remaining == 0 {
                            self.frame_end(&mut on, &mut on_compressed);
                        }
                    } else {
                        self.remaining = ((left - 1) << 24) | len as u32;
                    }
                }
                _ => {
                    let take = (self.remaining as usize).min(data.len() - i);
                    let last = take == self.remaining as usize && self.bits & 0x40 != 0;
                    if self.bits & COMPRESSED != 0 {
                        if take > 0 {
                            on_compressed(&data[i..i + take], last);
                        }
                    } else if self.bits & 0x0f == 1 {
                        for &b in &data[i..i + take] {
                            self.text_byte(b);
                        }
                    }
                    i += take;
                    self.remaining -= take as u32;
                    if self.remaining == 0 {
                        // A last piece already went with `last`; only an empty final frame
                        // still has to end the compressed message.
                        let ended = take > 0 && last;
                        self.frame_end(&mut on, &mut |piece: &[u8], end| {
                            if !ended {
                                on_compressed(piece, end)
                            }
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn text_byte(&mut self, b: u8) {
        let field = (self.bits >> 4) & 3;
        match (field, b) {
            (0, b'0'..=b'9') => {
                self.round = self
                    .round
                    .wrapping_mul(10)
                    .wrapping_add(u16::from(b - b'0'))
            }
            (1, b'0'..=b'9') => {
                self.ts = self.ts.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
            }
            (0 | 1, b' ') => self.bits += 0x10,
            _ => {}
        }
    }

    fn frame_end(
        &mut self,
        on: &mut impl FnMut(Event),
        on_compressed: &mut impl FnMut(&[u8], bool),
    ) {
        self.state = 0;
        let fin = self.bits & 0x40 != 0;
        if self.bits & COMPRESSED != 0 {
            if fin {
                on_compressed(&[], true);
                self.bits &= 0x0f;
            }
            return;
        }
        match self.bits & 0x0f {
            1 if fin => on(Event::Text {
                round: u32::from(self.round),
                ts_ns: self.ts,
            }),
            8 => on(Event::Close),
            9 => on(Event::Ping),
            _ => {}
        }
        if fin {
            self.bits &= 0x0f; // field position back to 0
        }
    }
}

/// `FrameParser::bits`: the message's first frame had RSV1 (permessage-deflate).
const COMPRESSED: u8 = 0x80;

/// The round and send timestamp a fan-out text carries (`<round> <ts_ns> <padding>`).
pub fn text_fields(text: &[u8]) -> (u32, u64) {
    let mut p = FrameParser {
        bits: 1,
        ..FrameParser::default()
    };
    for &b in text {
        p.text_byte(b);
    }
    (u32::from(p.round), p.ts)
}

/// Whether `text` is a whole fan-out payload of `size` bytes: the two fields, then only
/// padding (what zring-load sent through the handler, byte for byte after inflation).
pub fn payload_ok(text: &[u8], size: usize) -> bool {
    let mut fields = text.splitn(3, |&b| b == b' ');
    let round = fields.next().unwrap_or_default();
    let ts = fields.next().unwrap_or_default();
    let padding = fields.next().unwrap_or_default();
    text.len() == size
        && !round.is_empty()
        && round.iter().all(u8::is_ascii_digit)
        && ts.len() == 19
        && ts.iter().all(u8::is_ascii_digit)
        && padding.iter().all(|&b| b == b'x')
}

/// permessage-deflate's receiving side (RFC 7692 §7.2.2) for zring-load: a raw inflater
/// with a 32 KiB window, used for every client of a ring whose server keeps no context
/// (`server_no_context_takeover`: reset before each message), or one per client when the
/// server takes over its context. Independent of zring's own codec only in that it
/// inflates where zring deflates (both are zlib-rs); the real-client tests use other
/// libraries.
pub struct Inflater {
    state: zlib_rs::Inflate,
}

/// Largest inflated message: a fan-out payload is at most 65,535 bytes.
pub const INFLATED_BYTES_MAX: usize = 1 << 17;

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            state: zlib_rs::Inflate::new(false, 15),
        }
    }
}

impl Inflater {
    /// Inflates one whole message's payload (`00 00 ff ff` appended, §7.2.2) into `out`
    /// (at most its length); with `fresh` the state is reset first (no context takeover).
    /// Returns the inflated length.
    pub fn message(
        &mut self,
        payload: &[u8],
        fresh: bool,
        out: &mut [u8],
    ) -> Result<usize, &'static str> {
        if fresh {
            self.state.reset(false);
        }
        let start = self.state.total_out();
        let mut made = 0usize;
        for input in [payload, &[0x00, 0x00, 0xff, 0xff][..]] {
            let before_in = self.state.total_in();
            let r = self
                .state
                .decompress(input, &mut out[made..], zlib_rs::InflateFlush::SyncFlush)
                .map_err(|_| "corrupt DEFLATE data from the server")?;
            made = (self.state.total_out() - start) as usize;
            if matches!(r, zlib_rs::Status::StreamEnd) {
                return Err("a DEFLATE block with BFINAL");
            }
            if (self.state.total_in() - before_in) as usize != input.len() {
                return Err("inflated message larger than 128 KiB");
            }
        }
        Ok(made)
    }
}

/// A text frame as a server sends it (unmasked), for the floor sender.
pub fn server_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    let n = payload.len();
    if n < 126 {
        f.push(n as u8);
    } else if n < 65536 {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// The fan-out payload: `<round> <ts_ns> ` then padding to exactly `size` bytes (at least
/// the two fields). `ts` is the digits or the `{ts}` placeholder the handler substitutes
/// with 19 digits, so both give the same final size.
pub fn payload(round: u32, ts: &str, size: usize) -> Vec<u8> {
    let mut p = format!("{round} {ts} ").into_bytes();
    // A placeholder grows to 19 digits in the handler.
    let grown = if ts == "{ts}" { 19 - 4 } else { 0 };
    while p.len() + grown < size {
        p.push(b'x');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_example() {
        assert_eq!(
            ws_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_vec()
        );
        assert_eq!(base64(b"ab"), b"YWI=".to_vec());
    }

    #[test]
    fn frames_in_any_split() {
        let mut stream = server_text_frame(&payload(7, "1700000000000000000", 60));
        stream.extend(server_text_frame(&payload(8, "1700000000000000001", 300)));
        stream.extend([0x89, 0x00]); // ping
        for split in 1..stream.len() {
            let mut p = FrameParser::default();
            let mut got = Vec::new();
            p.feed(&stream[..split], false, |e| got.push(e), |_, _| panic!())
                .unwrap();
            p.feed(&stream[split..], false, |e| got.push(e), |_, _| panic!())
                .unwrap();
            assert_eq!(
                got,
                vec![
                    Event::Text {
                        round: 7,
                        ts_ns: 1_700_000_000_000_000_000
                    },
                    Event::Text {
                        round: 8,
                        ts_ns: 1_700_000_000_000_000_001
                    },
                    Event::Ping
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        for bad in [&[0x81u8, 0x85][..], &[0x83, 0x00], &[0xc1, 0x00]] {
            assert!(FrameParser::default()
                .feed(bad, false, |_| {}, |_, _| {})
                .is_err());
        }
        let big = [0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(FrameParser::default()
            .feed(&big, false, |_| {}, |_, _| {})
            .is_err());
        // RSV1 without deflate, and on a continuation or control frame with it.
        assert!(FrameParser::default()
            .feed(&[0xc1, 0x00], false, |_| {}, |_, _| {})
            .is_err());
        for bad in [&[0x41u8, 0x00, 0xc0, 0x00][..], &[0xc9, 0x00]] {
            assert!(FrameParser::default()
                .feed(bad, true, |_| {}, |_, _| {})
                .is_err());
        }
    }

    #[test]
    fn compressed_frames_in_any_split_inflate_to_the_payload() {
        // RFC 7692 §7.2.3.1 "Hello" whole, then split over a fragment and a continuation
        // (§7.2.3.1's second example), then an uncompressed text between them.
        let mut stream = vec![0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        stream.extend(server_text_frame(&payload(8, "1700000000000000001", 40)));
        stream.extend([
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ]);
        for split in 1..stream.len() {
            let mut p = FrameParser::default();
            let (mut got, mut messages, mut piece) = (Vec::new(), Vec::new(), Vec::new());
            for half in [&stream[..split], &stream[split..]] {
                p.feed(
                    half,
                    true,
                    |e| got.push(e),
                    |z, end| {
                        piece.extend_from_slice(z);
                        if end {
                            messages.push(std::mem::take(&mut piece));
                        }
                    },
                )
                .unwrap();
            }
            assert_eq!(got.len(), 1, "split at {split}");
            assert_eq!(messages.len(), 2, "split at {split}");
            let mut out = vec![0; 64];
            for m in messages {
                let n = Inflater::default().message(&m, true, &mut out).unwrap();
                assert_eq!(&out[..n], b"Hello");
            }
        }
    }

    #[test]
    fn payload_check() {
        let p = payload(12, "1700000000000000001", 64);
        assert!(payload_ok(&p, 64));
        assert_eq!(text_fields(&p), (12, 1_700_000_000_000_000_001));
        assert!(!payload_ok(&p, 65));
        let mut bad = p.clone();
        bad[60] = b'y';
        assert!(!payload_ok(&bad, 64));
    }

    #[test]
    fn payload_size_is_exact() {
        assert_eq!(payload(3, "1700000000000000000", 64).len(), 64);
        assert_eq!(payload(3, "{ts}", 64).len() + 15, 64);
    }
}
