//! WebSocket interop with independent clients: tungstenite (Rust, sync), Python `websockets`
//! (Debian python3-websockets 10.4, `tests/ws_clients/echo.py`) and node `ws`
//! (`tests/ws_clients/node`, installed with `npm ci`). Each echoes a text and a binary message
//! of 0 B, 1 B, 125 B, 126 B, 65535 B, 65536 B, 1 MiB and 16 MiB through the connection
//! manager and the example handler's `/ws`, checks every byte and the message type, then
//! closes with 1000 and must get 1000 back.
//!
//! Targets as in `ws_conformance.rs`: `condure` (Condure 1.9.1 passes all of it, 16 MiB
//! included), `zring_uring` and `zring_epoll`.
//!
//! Needs: `python3-websockets` for /usr/bin/python3, node with `npm` (the node client's
//! `node_modules` is installed by `scripts/setup.sh test`, or here on first use with `npm ci`).
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use support::Stack;

const SIZES: [usize; 8] = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20];

/// Exactly `n` bytes of UTF-8: "abcdefgh€" (11 bytes) repeated, padded with 'x' (as the
/// Python and node clients make it).
fn text_of(n: usize) -> String {
    let mut s = "abcdefgh\u{20ac}".repeat(n / 11);
    s.push_str(&"x".repeat(n % 11));
    assert_eq!(s.len(), n);
    s
}

fn bin_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
}

fn url(s: &Stack) -> String {
    format!("ws://127.0.0.1:{}/ws", s.port)
}

/// Lines every client prints for a full pass.
fn want_lines() -> Vec<String> {
    let mut v = Vec::new();
    for n in SIZES {
        v.push(format!("ok text {n}"));
        v.push(format!("ok binary {n}"));
    }
    v.push("closed 1000".into());
    v
}

thread_local! {
    /// This test runs zring with `--compression`: the client must have negotiated it.
    static EXPECT_DEFLATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn check_output(client: &str, out: std::process::Output) {
    if EXPECT_DEFLATE.with(|d| d.get()) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("extensions") && l.contains("permessage-deflate")),
            "{client} did not negotiate permessage-deflate: {stderr}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    assert!(
        out.status.success() && lines == want_lines(),
        "{client} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tungstenite_echo(s: &Stack) {
    use tungstenite::protocol::WebSocketConfig;
    use tungstenite::{Bytes, Message};
    let stream = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (mut ws, resp) = tungstenite::client::client_with_config(url(s), stream, Some(config))
        .expect("tungstenite handshake");
    assert_eq!(resp.status(), 101);
    for n in SIZES {
        let t = text_of(n);
        ws.send(Message::text(t.clone())).unwrap();
        match ws.read().expect("text echo") {
            Message::Text(got) => assert!(got.as_str() == t, "text {n}: differs"),
            other => panic!("text {n}: got {other:?}"),
        }
        let b = Bytes::from(bin_of(n));
        ws.send(Message::Binary(b.clone())).unwrap();
        match ws.read().expect("binary echo") {
            Message::Binary(got) => assert!(got == b, "binary {n}: differs"),
            other => panic!("binary {n}: got {other:?}"),
        }
    }
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "done".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1000);
            }
            Ok(Message::Close(None)) => panic!("close without a code"),
            Ok(other) => panic!("after close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing: {e}"),
        }
    }
}

fn python_echo(s: &Stack) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ws_clients/echo.py");
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|st| st.success());
    assert!(
        ok,
        "python3-websockets is not installed for /usr/bin/python3 (scripts/setup.sh test installs it)"
    );
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(url(s))
        .args(SIZES.map(|n| n.to_string()))
        .output()
        .expect("run echo.py");
    check_output("python websockets", out);
}

/// The node client's directory, with `node_modules` installed (`npm ci`, once per process).
fn node_dir() -> PathBuf {
    static ONCE: Mutex<bool> = Mutex::new(false);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ws_clients/node");
    let mut done = ONCE.lock().unwrap();
    if !*done && !dir.join("node_modules/ws/package.json").exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .expect("npm must be installed (apt-get install npm, or node 20 with npm)");
        assert!(st.success(), "npm ci in {} failed", dir.display());
    }
    *done = true;
    dir
}

fn node_echo(s: &Stack) {
    let dir = node_dir();
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("echo.js")
        .arg(url(s))
        .args(SIZES.map(|n| n.to_string()))
        .output()
        .expect("node must be installed");
    check_output("node ws", out);
}

/// One module per client with three tests; zring's are ignored until its WebSocket lands.
macro_rules! interop {
    ($($name:ident => $f:expr;)*) => {
        $(
            mod $name {
                use super::*;
                fn run(rt: &str) {
                    run_with(rt, &[]);
                }
                fn run_with(rt: &str, extra: &[&str]) {
                    let s = Stack::with_example(rt, extra);
                    let f: fn(&Stack) = $f;
                    f(&s);
                    // Still serving afterwards.
                    let r = support::exchange(
                        s.port,
                        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                        Duration::from_secs(5),
                    );
                    assert!(r.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&r));
                }
                #[test]
                fn condure() {
                    run("condure")
                }
                #[test]
                fn zring_uring() {
                    run("uring")
                }
                #[test]
                fn zring_epoll() {
                    run("epoll")
                }
                /// The same through permessage-deflate (`--compression`), where the client
                /// speaks it (Python `websockets` and node `ws` do; tungstenite does not).
                #[test]
                fn zring_uring_compressed() {
                    EXPECT_DEFLATE.with(|d| d.set(stringify!($name) != "tungstenite_client"));
                    run_with("uring", &["--compression"])
                }
                #[test]
                fn zring_epoll_compressed() {
                    EXPECT_DEFLATE.with(|d| d.set(stringify!($name) != "tungstenite_client"));
                    run_with("epoll", &["--compression"])
                }
            }
        )*
    };
}

interop! {
    tungstenite_client => tungstenite_echo;
    python_websockets_client => python_echo;
    node_ws_client => node_echo;
}
