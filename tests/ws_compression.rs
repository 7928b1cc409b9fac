//! permessage-deflate (RFC 7692) through zring `--compression` and the example handler's
//! echo, on both runtimes, modelled on Autobahn's case groups 12 and 13: negotiation,
//! compressed messages of many sizes and fragmentations both ways, and the errors. The
//! client side compresses and inflates with flate2 (miniz_oxide), not with zring's codec.
#[macro_use]
mod support;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use support::ws::*;
use support::*;

const RSV1: u8 = 4;
const TRAILER: [u8; 4] = [0, 0, 0xff, 0xff];
const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate\r\n";

/// Raw DEFLATE of one whole message with a fresh compressor (the client takes over no
/// context: zring asks for `client_no_context_takeover`), trailer removed (§7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let before = c.total_in() as usize;
        out.reserve(64 * 1024);
        c.compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.ends_with(&TRAILER) {
            break;
        }
    }
    out.truncate(out.len() - 4);
    out
}

/// The client's inflater: one for the whole connection, since zring's compressor may take
/// over its context from message to message.
struct Inflater(Decompress);

impl Inflater {
    fn new() -> Self {
        Inflater(Decompress::new(false))
    }
    fn message(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TRAILER);
        let mut out = Vec::with_capacity(payload.len() * 4 + 1024);
        let start = self.0.total_in();
        loop {
            let used = (self.0.total_in() - start) as usize;
            out.reserve(256 * 1024);
            self.0
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
                .expect("zring sent valid DEFLATE");
            if (self.0.total_in() - start) as usize == input.len() && out.capacity() > out.len() {
                break;
            }
        }
        out
    }
}

fn stack(rt: &str) -> Stack {
    Stack::with_example(rt, &["--compression"])
}

/// Reads one whole message; checks RSV1 sits on its first frame only.
fn read_compressed(c: &mut Ws) -> (u8, bool, Vec<u8>) {
    let first = c.frame();
    assert_eq!(first.rsv & !RSV1, 0, "only RSV1 may be set");
    let (opcode, compressed) = (first.opcode, first.rsv & RSV1 != 0);
    let mut payload = first.payload;
    let mut fin = first.fin;
    while !fin {
        let f = c.frame();
        assert_eq!(f.opcode, CONT);
        assert_eq!(f.rsv, 0, "RSV1 on a continuation frame");
        payload.extend_from_slice(&f.payload);
        fin = f.fin;
    }
    (opcode, compressed, payload)
}

/// Sends `data` compressed, in `pieces` frames, and checks the echo inflates to `data`.
fn echo(c: &mut Ws, inf: &mut Inflater, opcode: u8, data: &[u8], pieces: usize) {
    let z = deflate(data);
    let step = z.len().div_ceil(pieces.max(1)).max(1);
    let chunks: Vec<&[u8]> = if z.is_empty() {
        vec![&[][..]]
    } else {
        z.chunks(step).collect()
    };
    let mut wire = Vec::new();
    for (i, ch) in chunks.iter().enumerate() {
        let (rsv, op) = if i == 0 { (RSV1, opcode) } else { (0, CONT) };
        wire.extend(c.masked(i + 1 == chunks.len(), rsv, op, ch));
    }
    c.write(&wire);
    let (got_op, compressed, payload) = read_compressed(c);
    assert_eq!(got_op, opcode);
    assert!(
        compressed,
        "the echo of a compressed message comes back compressed"
    );
    let plain = inf.message(&payload);
    assert_eq!(plain.len(), data.len());
    assert!(plain == data, "echo differs");
}

both_runtimes! {
    negotiation(rt) {
        let s = stack(rt);
        let ext = |offer: &str| {
            let c = Ws::connect_with(s.port, "/ws", offer);
            header_of(&c.head, "Sec-WebSocket-Extensions").0
        };
        let plain = ext(OFFER).expect("permessage-deflate accepted");
        assert!(plain.starts_with("permessage-deflate"), "{plain}");
        assert!(plain.contains("client_no_context_takeover"), "{plain}");
        // --compression-context shared (the default) answers every offer without server
        // context takeover (RFC 7692 §7.1.1.1), asked for or not; takeover does not.
        assert!(plain.contains("server_no_context_takeover"), "{plain}");
        let takeover = Stack::with_example(rt, &["--compression", "--compression-context", "takeover"]);
        let c = Ws::connect_with(takeover.port, "/ws", OFFER);
        let v = header_of(&c.head, "Sec-WebSocket-Extensions").0.unwrap();
        assert!(!v.contains("server_no_context_takeover"), "{v}");
        // The client asks for no server context takeover: it must be in the answer.
        let v = ext("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n").unwrap();
        assert!(v.contains("server_no_context_takeover"), "{v}");
        // A malformed first offer is declined and the next one taken.
        let v = ext("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=20, permessage-deflate\r\n").unwrap();
        assert!(!v.contains("=20"), "{v}");
        // Unknown extensions only: no extension in the answer.
        assert!(ext("Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n").is_none());
        // Without --compression nothing is negotiated, and RSV1 is a protocol error.
        let plain = Stack::with_example(rt, &[]);
        let mut c = Ws::connect_with(plain.port, "/ws", OFFER);
        assert!(header_of(&c.head, "Sec-WebSocket-Extensions").0.is_none(), "{}", c.head);
        let f = c.masked(true, RSV1, TEXT, &deflate(b"Hello"));
        c.write(&f);
        c.expect_close(Some(1002));
    }

    rfc_example_hello(rt) {
        // RFC 7692 §7.2.3.1: "Hello" is f2 48 cd c9 c9 07 00.
        let s = stack(rt);
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let f = c.masked(true, RSV1, TEXT, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        c.write(&f);
        let (op, compressed, payload) = read_compressed(&mut c);
        assert_eq!((op, compressed), (TEXT, true));
        assert_eq!(Inflater::new().message(&payload), b"Hello");
        // An uncompressed client message is fine too; zring compresses what it sends.
        c.text(b"plain");
        let (op, _, payload) = read_compressed(&mut c);
        assert_eq!(op, TEXT);
        assert!(!payload.is_empty());
    }

    sizes_and_fragments(rt) {
        // Autobahn 12.x/13.x style: many sizes, whole and fragmented, text and binary, on
        // one connection (the server keeps its context from message to message).
        let s = stack(rt);
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let mut inf = Inflater::new();
        let mut n = 0u32;
        for size in [0usize, 16, 64, 256, 1024, 4096, 16384, 65536, 131072, 262144, 1 << 20] {
            for pieces in [1, 3] {
                let text: Vec<u8> = (0..size).map(|i| b"zring deflate "[(i + n as usize) % 14]).collect();
                echo(&mut c, &mut inf, TEXT, &text, pieces);
                let mut x = n.wrapping_mul(2_654_435_761) | 1;
                let bin: Vec<u8> = (0..size).map(|_| { x ^= x << 13; x ^= x >> 17; x ^= x << 5; x as u8 }).collect();
                echo(&mut c, &mut inf, BINARY, &bin, pieces);
                n += 1;
            }
        }
        c.close(Some(1000), b"");
        c.expect_close(Some(1000));
    }

    takeover_shrinks_repeats(rt) {
        // With --compression-context takeover the server keeps its window between
        // messages: the same message compresses smaller the second time.
        let s = Stack::with_example(rt, &["--compression", "--compression-context", "takeover"]);
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let mut inf = Inflater::new();
        let msg: Vec<u8> = (0..1024u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let f = c.masked(true, RSV1, BINARY, &deflate(&msg));
            c.write(&f);
            let (_, _, payload) = read_compressed(&mut c);
            assert_eq!(inf.message(&payload), msg);
            sizes.push(payload.len());
        }
        assert!(sizes[1] < sizes[0] / 2, "no context takeover: {sizes:?}");
    }

    shared_context_repeats_exactly(rt) {
        // The default (shared) keeps no context: the same message is the same compressed
        // bytes every time, and each inflates alone with a fresh inflater.
        let s = stack(rt);
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let msg: Vec<u8> = (0..1024u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut payloads = Vec::new();
        for _ in 0..2 {
            let f = c.masked(true, RSV1, BINARY, &deflate(&msg));
            c.write(&f);
            let (_, compressed, payload) = read_compressed(&mut c);
            assert!(compressed);
            assert_eq!(Inflater::new().message(&payload), msg);
            payloads.push(payload);
        }
        assert_eq!(payloads[0], payloads[1], "no context kept between messages");
    }

    rsv1_misuse(rt) {
        let s = stack(rt);
        // RSV1 on a continuation frame.
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let z = deflate(b"fragmented message");
        let mut w = c.masked(false, RSV1, TEXT, &z[..4]);
        w.extend(c.masked(true, RSV1, CONT, &z[4..]));
        c.write(&w);
        c.expect_close(Some(1002));
        // RSV1 on a control frame.
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let f = c.masked(true, RSV1, PING, b"x");
        c.write(&f);
        c.expect_close(Some(1002));
    }

    corrupt_data(rt) {
        let s = stack(rt);
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let f = c.masked(true, RSV1, BINARY, &[0xff, 0xff, 0xff, 0xff, 0x00]);
        c.write(&f);
        c.expect_close(Some(1002));
    }

    inflated_text_not_utf8(rt) {
        let s = stack(rt);
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let f = c.masked(true, RSV1, TEXT, &deflate(b"valid then \xed\xa0\x80 a surrogate"));
        c.write(&f);
        c.expect_close(Some(1007));
    }

    decompression_bomb(rt) {
        // 65 MiB of zeros compress to ~65 KB; inflated it passes the 64 MiB limit: 1009,
        // and zring never holds the inflated message.
        let s = stack(rt);
        let mut c = Ws::connect_with(s.port, "/ws", OFFER);
        let z = deflate(&vec![0u8; 65 << 20]);
        assert!(z.len() < 200_000);
        let f = c.masked(true, RSV1, BINARY, &z);
        c.write_lenient(&f);
        // What was inflated before the limit went to the handler and may be echoed first.
        loop {
            let f = c.read_frame(WAIT).expect("frames, then a close");
            if f.opcode == CLOSE {
                assert_eq!(f.close_code(), Some(1009), "{}", show(&f.raw));
                break;
            }
        }
    }
}

/// The example handler's broadcast to `CLIENTS` real deflate clients: `(program, args)` runs
/// the client script, which opens them all, has the first send `broadcast <text>` for each
/// text and checks every client gets every text, inflated by its own library.
fn broadcast_clients(rt: &str, program: &str, dir: &std::path::Path, script: &str) {
    const CLIENTS: usize = 12;
    let s = stack(rt);
    let url = format!("ws://127.0.0.1:{}/ws/broadcast", s.port);
    // Compressible (JSON-like, repeated) and short texts, the same bytes twice.
    let long = "{\"sym\":\"ZRNG\",\"px\":101.25,\"qty\":300}".repeat(40);
    let texts = [long.as_str(), "short one", long.as_str()];
    let out = std::process::Command::new(program)
        .current_dir(dir)
        .arg(script)
        .arg(&url)
        .arg(CLIENTS.to_string())
        .args(texts)
        .output()
        .expect("run the broadcast client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("done\n"),
        "{program} {script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extensions: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("extension "))
        .collect();
    assert_eq!(extensions.len(), CLIENTS);
    for e in extensions {
        assert!(e.starts_with("permessage-deflate"), "{e}");
        assert!(e.contains("server_no_context_takeover"), "{e}");
    }
    let received = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(received, CLIENTS * texts.len(), "{stdout}");
}

fn python_broadcast(rt: &str) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ws_clients");
    broadcast_clients(rt, "/usr/bin/python3", &dir, "broadcast.py");
}

fn node_broadcast(rt: &str) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ws_clients/node");
    if !dir.join("node_modules/ws/package.json").exists() {
        let st = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .expect("npm must be installed (scripts/setup.sh test)");
        assert!(st.success(), "npm ci in {} failed", dir.display());
    }
    broadcast_clients(rt, "node", &dir, "broadcast.js");
}

// A broadcast to deflate clients through the shared compressed frame: Python `websockets`
// and node `ws` each decode every message, and each was answered server_no_context_takeover.
both_runtimes! {
    broadcast_python_websockets(rt) {
        python_broadcast(rt);
    }

    broadcast_node_ws(rt) {
        node_broadcast(rt);
    }
}
