//! Fuzz one whole worker (and so its connections) through the in-process harness
//! (`zring::conn::harness`, feature `harness`): scripted clients and a scripted ZHTTP
//! handler act in turns on simulated time, and invariants are checked after every action.
//!
//! The input is a byte-coded action list, so seeds can be written by hand (see
//! `fuzz/corpus/conn_script/README`). Each action is an opcode byte (`% 15`) and its
//! operand bytes; missing bytes read as 0, at most `ACTIONS_MAX` actions run:
//!
//! | op | action | operands |
//! |---|---|---|
//! | 0 | connect | listener (`%4`: stream, req, TLS, TLS listener with raw bytes) |
//! | 1 | write raw bytes | client, len (u8), bytes |
//! | 2 | write a request head | client, method, path, flags, Content-Length (u16le) |
//! | 3 | write body bytes | client, len (u16le `% 8193`), fill byte |
//! | 4 | write a chunk | client, len (u16le `% 4097`; 0 = last chunk), fill byte |
//! | 5 | write a WebSocket upgrade | client, flags |
//! | 6 | write a WebSocket frame | client, bits (opcode, fin, rsv1, unmasked), len, fill |
//! | 7 | client half-closes | client |
//! | 8 | client stalls / unstalls its reads | client, on (bit 0) |
//! | 9 | handler replies to the Nth session seen | n, packet (see `packet`) |
//! | 10 | handler replies to several sessions in list form | n, count, packet |
//! | 11 | advance simulated time | amount (index into `ADVANCE_MS`) |
//! | 12 | zring drains (SIGTERM); again: stops at once (SIGINT) | - |
//! | 13 | handler replies with a wrong `seq` | n, delta, packet |
//! | 14 | the bridge announces a handler gone | which (bit 0: `handler`, else `handler-2`) |
//!
//! A client operand picks among clients connected so far (`% count`); actions that do not
//! apply (no client, a write after the client's half-close, a connect past the limits) are
//! skipped.
//!
//! Invariants (a violation is a crash), after every action:
//! - no panic, and the harness's own checks hold: the runtime contract (one send in flight,
//!   nothing after `Close`, `ShutdownWrite` with nothing in flight, `handle_closed` after
//!   `Close`), every packet zring sends is a valid ZHTTP packet, the worker settles in a
//!   bounded number of turns and its timers in a bounded number of wake-ups;
//! - zring numbers its packets of each session 0, 1, 2, … (keep-alives included);
//! - the worker's connection count equals the clients whose slot was not released;
//! - per connection, what zring holds received (`spill` + `carry` + TLS ciphertext) stays
//!   within one request head (+ a req-mode body), two receive pieces and a TLS record, and
//!   what it holds for the client (`out` + TLS records + the send in flight) within the
//!   handler's credits (`--buffer-size`), plus the two packets a handler may send outside
//!   them (the response head's and the final one), plus `--messages-max` control frames
//!   and a fixed overhead.
//!
//! At the end every client unstalls and half-closes, and time runs past every timeout:
//! then no connection may be left and no timer pending (the sweep runs only while
//! connections exist).
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use zring::bridge::Route;
use zring::conn::harness::{self, Client, Harness, Reply, Session, RECV_PIECE_BYTES};

const ACTIONS_MAX: usize = 64;
const CLIENTS_MAX: usize = 8;
/// Sessions the handler remembers (the oldest are forgotten past this).
const SESSIONS_MAX: usize = 32;
/// Small limits, so credits, `--messages-max` and the timeouts are reachable.
const BUFFER_SIZE: usize = 2048;
const BODY_BUFFER_SIZE: usize = 4096;
const MESSAGES_MAX: usize = 8;
/// Largest body the scripted handler puts in one packet.
const PACKET_BODY_MAX: usize = 4096;
/// Plaintext a TLS client writes before its handshake completes (rustls buffers 64 KiB).
const TLS_EARLY_BYTES_MAX: usize = 40_000;
/// Simulated time the actions may spend in all (the end adds its own).
const ADVANCE_TOTAL_MAX: Duration = Duration::from_secs(300);
const ADVANCE_MS: [u64; 12] = [
    1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000, 11_000, 30_000, 61_000, 120_000,
];
/// Past every timeout of the fuzz config: session expiry (60 s), stream inactivity (30 s),
/// WebSocket close waits (2 × 5 s), linger (2 s), handler wait (5 s), credit delay (10 s),
/// head (5 s), keep-alive (10 s) and body-rate (2 s) deadlines.
const END_ADVANCE: Duration = Duration::from_secs(150);

/// What zring may hold for one client: the handler's streamed bytes under its credits, the
/// two packets it may send outside them (a response head's body and a final packet; both
/// bounded by this handler), `--messages-max` control frames (≤ 125 bytes + header), and a
/// fixed overhead (heads: the handler's ≤ 1 KiB and zring's own; chunk framing; TLS records).
const OUT_BOUND: usize = BUFFER_SIZE + 2 * PACKET_BODY_MAX + MESSAGES_MAX * 140 + 4096;
/// What zring may hold received: one head (+ a req-mode body), two receive pieces, and a
/// TLS record split across reads (ciphertext ≤ 2^14 + 2048, + its 5-byte header).
const IN_BOUND: usize = BUFFER_SIZE + BODY_BUFFER_SIZE + 2 * RECV_PIECE_BYTES + 18_437;

struct Sess {
    s: Session,
    req: bool,
}

struct Script<'a> {
    u: Unstructured<'a>,
    h: Harness,
    clients: Vec<Client>,
    sessions: Vec<Sess>,
    /// zring's next `seq` for each session id.
    zring_seq: HashMap<String, u32>,
    advanced: Duration,
    zring_shut_down: bool,
    /// `CONN_SCRIPT_TRACE` set: print each action and what both sides got (to read a
    /// crash input: `CONN_SCRIPT_TRACE=1 cargo fuzz run conn_script CRASH`).
    trace: bool,
    /// TLS clients before their handshake is done: plaintext written (an upper bound).
    tls_early: HashMap<Client, usize>,
}

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        self.u.arbitrary().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.u.len());
        self.u.bytes(n).unwrap_or_default().to_vec()
    }

    fn client(&mut self) -> Option<Client> {
        let b = self.byte();
        (!self.clients.is_empty()).then(|| self.clients[usize::from(b) % self.clients.len()])
    }

    /// A client that may still write. A TLS client whose handshake is not done (its reads
    /// stalled, say) buffers plaintext in rustls, which takes at most 64 KiB: past
    /// `TLS_EARLY_BYTES_MAX` it stops writing.
    fn writer(&mut self) -> Option<Client> {
        let c = self.client()?;
        if self.h.client_done_writing(c) {
            return None;
        }
        if let Some(early) = self.tls_early.get_mut(&c) {
            if self.h.tls_established(c) {
                self.tls_early.remove(&c);
            } else if *early > TLS_EARLY_BYTES_MAX {
                return None;
            } else {
                *early += 10_000; // no write is larger
            }
        }
        Some(c)
    }

    fn step(&mut self) {
        let op = self.byte() % 15;
        if self.trace {
            let (before, elapsed) = (self.u.len(), self.h.elapsed());
            eprintln!("action {op} at {elapsed:?} ({before} bytes left)");
        }
        match op {
            0 => {
                let l = self.byte() % 4;
                if self.zring_shut_down || self.clients.len() >= CLIENTS_MAX {
                    return;
                }
                let c = match l {
                    0 => self.h.connect_to(harness::STREAM),
                    1 => self.h.connect_to(harness::REQ),
                    2 => {
                        let c = self.h.connect_to(harness::TLS);
                        self.tls_early.insert(c, 0);
                        c
                    }
                    _ => self.h.connect_raw(harness::TLS),
                };
                self.clients.push(c);
            }
            1 => {
                let c = self.writer();
                let n = usize::from(self.byte());
                let bytes = self.take(n);
                if let Some(c) = c {
                    self.h.write(c, &bytes);
                }
            }
            2 => {
                let c = self.writer();
                let head = self.request_head();
                if let Some(c) = c {
                    self.h.write(c, &head);
                }
            }
            3 => {
                let c = self.writer();
                let n = usize::from(self.u16()) % 8193;
                let fill = self.byte();
                if let Some(c) = c {
                    self.h.write(c, &vec![fill; n]);
                }
            }
            4 => {
                let c = self.writer();
                let n = usize::from(self.u16()) % 4097;
                let fill = self.byte();
                let mut chunk = format!("{n:x}\r\n").into_bytes();
                chunk.extend(std::iter::repeat_n(fill, n));
                chunk.extend_from_slice(b"\r\n");
                if let Some(c) = c {
                    self.h.write(c, &chunk);
                }
            }
            5 => {
                let c = self.writer();
                let head = self.upgrade_head();
                if let Some(c) = c {
                    self.h.write(c, &head);
                }
            }
            6 => {
                let c = self.writer();
                let frame = self.ws_frame();
                if let Some(c) = c {
                    self.h.write(c, &frame);
                }
            }
            7 => {
                if let Some(c) = self.writer() {
                    self.h.client_shutdown(c);
                }
            }
            8 => {
                let c = self.client();
                let on = self.byte() & 1 == 1;
                if let Some(c) = c {
                    self.h.stall(c, on);
                }
            }
            9 => {
                let n = self.byte();
                let reply = self.packet();
                self.reply(n, 1, reply, None);
            }
            10 => {
                let n = self.byte();
                let count = usize::from(self.byte() % 4) + 2;
                let reply = self.packet();
                self.reply(n, count, reply, None);
            }
            11 => {
                let ms = ADVANCE_MS[usize::from(self.byte()) % ADVANCE_MS.len()];
                let by = Duration::from_millis(ms).min(ADVANCE_TOTAL_MAX - self.advanced);
                self.advanced += by;
                self.h.advance(by);
            }
            12 => {
                // The first is SIGTERM's drain, a second one stops at once (SIGINT).
                if self.zring_shut_down {
                    self.h.shutdown();
                } else {
                    self.zring_shut_down = true;
                    self.h.drain();
                }
            }
            13 => {
                let n = self.byte();
                let delta = u32::from(self.byte()) + 1;
                let reply = self.packet();
                self.reply(n, 1, reply, Some(delta));
            }
            _ => {
                let from = match self.byte() & 1 {
                    0 => harness::HANDLER,
                    _ => "handler-2",
                };
                self.h.handler_gone(from);
            }
        }
    }

    /// A request head: method, path, version and headers picked by the operand bytes.
    fn request_head(&mut self) -> Vec<u8> {
        const METHODS: [&str; 6] = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"];
        const PATHS: [&str; 4] = ["/", "/a?b=c", "/%20x", "*"];
        let method = METHODS[usize::from(self.byte()) % METHODS.len()];
        let path = PATHS[usize::from(self.byte()) % PATHS.len()];
        let flags = self.byte();
        let length = self.u16();
        let version = if flags & 0x80 != 0 { "1.0" } else { "1.1" };
        let mut head = format!("{method} {path} HTTP/{version}\r\nHost: example.com\r\n");
        if flags & 1 != 0 {
            head += &format!("Content-Length: {length}\r\n");
        }
        if flags & 2 != 0 {
            head += "Transfer-Encoding: chunked\r\n";
        }
        if flags & 4 != 0 {
            head += "Connection: close\r\n";
        }
        if flags & 8 != 0 {
            head += "Connection: keep-alive\r\n";
        }
        if flags & 16 != 0 {
            head += "Expect: 100-continue\r\n";
        }
        if flags & 32 != 0 {
            head += "X-Pad: ";
            head += &"p".repeat(usize::from(length) % 3000);
            head += "\r\n";
        }
        if flags & 64 != 0 {
            head += "Content-Type: text/plain\r\n";
        }
        head += "\r\n";
        head.into_bytes()
    }

    /// A WebSocket upgrade request; the flags break it or add extensions.
    fn upgrade_head(&mut self) -> Vec<u8> {
        let flags = self.byte();
        let version = if flags & 1 != 0 { "8" } else { "13" };
        let mut head = format!(
            "GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: {version}\r\n"
        );
        if flags & 2 != 0 {
            head += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
        }
        if flags & 4 != 0 {
            head += "Sec-WebSocket-Protocol: chat\r\n";
        }
        head += "\r\n";
        head.into_bytes()
    }

    /// A client frame: bits 0-3 opcode, 4 not fin, 5 RSV1, 6 unmasked; then the length
    /// (a byte; 126 and up read a u16le) and a fill byte. A close frame carries a code.
    fn ws_frame(&mut self) -> Vec<u8> {
        let bits = self.byte();
        let mut len = usize::from(self.byte());
        if len >= 126 {
            len = usize::from(self.u16()) % 8193;
        }
        let fill = self.byte();
        let opcode = bits & 0x0f;
        let mut payload = vec![fill; len];
        if opcode == 8 && len >= 2 {
            payload[..2].copy_from_slice(&1000u16.to_be_bytes());
        }
        let fin = if bits & 0x10 == 0 { 0x80 } else { 0 };
        let rsv1 = (bits & 0x20) << 1;
        let mut f = vec![fin | rsv1 | opcode];
        let mask = if bits & 0x40 == 0 { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(mask | len as u8),
            126..=0xffff => {
                f.push(mask | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => unreachable!(),
        }
        if mask != 0 {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            f.extend_from_slice(&key);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        f.extend_from_slice(&payload);
        f
    }

    /// A handler packet: kind (low nibble; high nibble: a response's code), flags (1
    /// Content-Length, 2 `Connection: close`, 4 chunked, 8 a protocol header; 0x10/0x20
    /// binary/text; 0x40 `more`; 0x80 `credits`; a close's code: 1), body length (u16le
    /// `% 4097`), body fill (`a` + n), credits (u16le; also the Content-Length and close code).
    fn packet(&mut self) -> Reply {
        const CODES: [i64; 9] = [200, 101, 204, 304, 404, 500, 100, 302, 999];
        let kind_byte = self.byte();
        let kind = (kind_byte & 0x0f) % 11;
        let flags = self.byte();
        let body_len = usize::from(self.u16()) % (PACKET_BODY_MAX + 1);
        let fill = b'a' + self.byte() % 26;
        let credits = i64::from(self.u16());
        let body = vec![fill; body_len];
        let mut r = match kind {
            0 => {
                let code = CODES[usize::from(kind_byte >> 4) % CODES.len()];
                let mut r = Reply::response(code, "OK");
                if flags & 1 != 0 {
                    r = r.header("Content-Length", &(credits % 5000).to_string());
                }
                if flags & 2 != 0 {
                    r = r.header("Connection", "close");
                }
                if flags & 4 != 0 {
                    r = r.header("Transfer-Encoding", "chunked");
                }
                if flags & 8 != 0 {
                    r = r.header("Sec-WebSocket-Protocol", "chat");
                }
                r.body(&body)
            }
            1 => {
                let r = Reply::data(&body);
                match flags & 0x30 {
                    0x10 => r.bytes("content-type", b"binary"),
                    0x20 => r.bytes("content-type", b"text"),
                    _ => r,
                }
            }
            2 => Reply::credit(credits),
            3 => Reply::kind("keep-alive"),
            4 => Reply::kind("cancel"),
            5 => Reply::kind("error")
                .bytes("condition", b"rejected")
                .int("code", 403)
                .body(&body[..body_len.min(64)]),
            6 => {
                let r = Reply::kind("close");
                match flags & 1 {
                    1 => r.int("code", 1000 + credits % 4000),
                    _ => r,
                }
            }
            7 => Reply::kind("ping").body(&body[..body_len.min(125)]),
            8 => Reply::kind("pong").body(&body[..body_len.min(125)]),
            9 => Reply::kind("handoff-start"),
            _ => Reply::data(&body).sent_by("handler-2"),
        };
        if kind <= 1 {
            if flags & 0x40 != 0 {
                r = r.more();
            }
            if flags & 0x80 != 0 {
                r = r.credits(credits);
            }
        }
        r
    }

    /// The handler sends `reply` to `count` sessions from the `n`th seen on (list form when
    /// more than one; req-mode sessions get theirs alone on the DEALER), or with its `seq`
    /// moved on by `wrong_seq`.
    fn reply(&mut self, n: u8, count: usize, reply: Reply, wrong_seq: Option<u32>) {
        if self.trace {
            eprintln!("  handler: session {n} (x{count}, wrong seq {wrong_seq:?}): {reply:?}");
        }
        if self.sessions.is_empty() {
            return;
        }
        let first = usize::from(n) % self.sessions.len();
        let sess = &mut self.sessions[first];
        if sess.req {
            let id = sess.s.id.clone();
            return self.h.reply_req(&id, reply);
        }
        if let Some(delta) = wrong_seq {
            let id = sess.s.id.clone();
            let seq = sess.s.seq.wrapping_add(delta);
            return self.h.reply_with_seq(&id, seq, reply);
        }
        let mut picked: Vec<&mut Session> = self
            .sessions
            .iter_mut()
            .skip(first)
            .filter(|s| !s.req)
            .take(count)
            .map(|s| &mut s.s)
            .collect();
        self.h.reply_many(&mut picked, reply);
    }

    /// Takes what zring sent the handler: learns new sessions, checks every `seq`.
    fn take_packets(&mut self) {
        for p in self.h.packets() {
            if self.trace {
                eprintln!("  to handler: {}", p.raw);
            }
            for (id, seq) in &p.ids {
                let next = self.zring_seq.entry(id.clone()).or_insert(0);
                if let Some(seq) = seq {
                    assert_eq!(*seq, *next, "zring's seq for {id}: {p:?}");
                    *next += 1;
                }
            }
            let req = match p.route {
                Route::Push => false,
                Route::Dealer => true,
                _ => continue,
            };
            if self.sessions.len() == SESSIONS_MAX {
                self.sessions.remove(0);
            }
            self.sessions.push(Sess {
                s: p.session(),
                req,
            });
        }
    }

    fn check(&mut self) {
        self.take_packets();
        let mut live = 0;
        for &c in &self.clients {
            let got = self.h.read(c); // the client reads what it received
            if self.trace && !got.is_empty() {
                eprintln!("  {c:?} got: {:?}", String::from_utf8_lossy(&got));
            }
            if self.h.is_closed(c) {
                assert_eq!(self.h.zring_buffered(c), None);
                continue;
            }
            live += 1;
            let (input, out) = self.h.zring_buffered(c).expect("a live client's slot");
            assert!(
                input <= IN_BOUND,
                "zring holds {input} B received from {c:?}"
            );
            assert!(out <= OUT_BOUND, "zring holds {out} B for {c:?}");
        }
        assert_eq!(
            self.h.conn_count(),
            live,
            "worker connections vs open clients"
        );
    }

    /// Every client unstalls and half-closes, and time passes every timeout: nothing may
    /// be left.
    fn finish(&mut self) {
        for &c in &self.clients {
            self.h.stall(c, false);
            if !self.h.client_done_writing(c) {
                self.h.client_shutdown(c);
            }
        }
        self.check();
        self.h.advance(END_ADVANCE);
        self.check();
        assert_eq!(
            self.h.conn_count(),
            0,
            "connections left after every timeout"
        );
        for &c in &self.clients {
            assert!(self.h.is_closed(c), "{c:?} not released");
        }
        assert_eq!(self.h.next_deadline(), None, "a timer with no connection");
        if self.zring_shut_down {
            assert!(
                self.h.finished(),
                "shut down with nothing open, yet not finished"
            );
        }
    }
}

fn fuzz_config() -> zring::config::Config {
    zring::config::Config {
        buffer_size: BUFFER_SIZE,
        body_buffer_size: BODY_BUFFER_SIZE,
        messages_max: MESSAGES_MAX,
        stream_timeout_s: 30,
        req_timeout_s: 10,
        compression: true,
        // Below `CLIENTS_MAX`, so closing idle connections for room and the 503 at the
        // limit are reached.
        stream_maxconn: 4,
        req_maxconn: 2,
        head_timeout_ms: 5_000,
        keepalive_timeout_ms: 10_000,
        body_timeout_ms: 2_000,
        body_min_bytes: 512,
        ..harness::config()
    }
}

fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CONN_SCRIPT_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script {
        u: Unstructured::new(data),
        h: Harness::with_config(fuzz_config()),
        clients: Vec::new(),
        sessions: Vec::new(),
        zring_seq: HashMap::new(),
        advanced: Duration::ZERO,
        zring_shut_down: false,
        tls_early: HashMap::new(),
        trace: trace(),
    };
    for _ in 0..ACTIONS_MAX {
        if script.u.is_empty() {
            break;
        }
        script.step();
        script.check();
    }
    script.finish();
});
