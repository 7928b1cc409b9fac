//! Parity of client mode with Debian's zurl 1.11 (`scripts/zurl-parity.py`): the same
//! requester runs GET, chunked, read-to-EOF, HEAD, 204, 304, POST, redirects, a refused
//! port, a DNS failure, `user-data`, `stream: false`, `max-size` and a 10 MB body under
//! credits against zurl and zring, each with the same local origin, and compares the reply
//! packets field by field (the intended differences are normalised there and listed in
//! docs/protocols.md). Then 9 WebSocket scenarios against a raw-socket WebSocket origin:
//! the 101 (code, reason, headers, credits), text, binary, a fragmented message, ping/pong
//! both ways, close codes from each side, a rejection, a refused connect, a frame over
//! zurl's buffer and four redirect cases; where zring and zurl differ on purpose the script
//! asserts each one's documented answer. Both runtimes.
#[macro_use]
mod support;

use std::process::Command;

both_runtimes! {
    zurl_parity(rt) {
        support::peers::require_bin("zurl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/zurl-parity.py");
        let out = support::proc::output(
            Command::new("/usr/bin/python3").args([script, env!("CARGO_BIN_EXE_zring"), rt]),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("0 of 23 scenarios differ"), "{text}");
        assert!(out.status.success());
    }
}
