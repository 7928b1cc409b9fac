//! A Mongrel2 handler library from PyPI, on Python 3 and unchanged, serving through zring in
//! Mongrel2 mode. The library is uWSGI (`pip install uwsgi`, 2.0.31, with its `mongrel2`
//! plugin built in; scripts/setup.sh test puts it in a venv of Debian's python3 at
//! `M2_PYPI_VENV`): its `--zeromq PULL,PUB` socket is a Mongrel2 handler, and the app is
//! uWSGI's quick-start WSGI hello (`tests/m2_pypi/hello.py`). The Python-2-only libraries of
//! PyPI that were tried are listed in docs/mongrel2.md.
//!
//! Method: the same config, loaded by `m2sh` into a database, is served by zring as `mongrel2
//! config.sqlite UUID` (a symlink named `mongrel2`, both runtimes) and by mongrel2-core 1.12.2;
//! a raw HTTP request must get uWSGI's answer through each, the same bytes from both.
//!
//! uWSGI's answer is the app's status line and headers, then the close, without the body:
//! its plugin takes `zmq_sendmsg`'s byte count (libzmq ≥ 3) for an error, so after the head
//! it abandons the response and sends Mongrel2's empty close message. Mongrel2 delivers
//! exactly that too; the test asserts it, so a zring that lost or reordered a message, or
//! closed early, fails.
#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::peers::require_bin;
use support::{free_ports, wait_port, Proc, TempDir};

/// Where scripts/setup.sh test installs the library (outside the work tree, so each fresh
/// clone, CI's included, reuses the one build).
const M2_PYPI_VENV: &str = "/opt/zring-test/m2-pypi";
const SERVER_UUID: &str = "0c7f0e8e-6a55-4c57-9a3e-6d5f4b8a0001";
const HELLO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/m2_pypi/hello.py");

fn uwsgi() -> std::path::PathBuf {
    let bin = Path::new(M2_PYPI_VENV).join("bin/uwsgi");
    assert!(
        bin.is_file(),
        "{} is missing: scripts/setup.sh test installs uWSGI from PyPI there",
        bin.display()
    );
    bin
}

/// One Handler (tnetstring: uWSGI parses JSON only when built with libjansson) on `/`.
fn config(ports: &[u16]) -> String {
    format!(
        "app = Handler(send_spec='tcp://127.0.0.1:{}', send_ident='9e5e1b8e-0d4e-4a7c-8f0e-3b2a7c9d0001',\n\
         \x20   recv_spec='tcp://127.0.0.1:{}', recv_ident='', protocol='tnetstring')\n\
         main = Server(uuid='{SERVER_UUID}', access_log='/logs/access.log',\n\
         \x20   error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',\n\
         \x20   pid_file='/run/mongrel2.pid', bind_addr='127.0.0.1', port={},\n\
         \x20   hosts=[Host(name='localhost', routes={{'/': app}})])\n\
         settings = {{'server.daemonize': 0}}\n\
         servers = [main]\n",
        ports[0], ports[1], ports[2]
    )
}

/// The server (`mongrel2`, or zring with a runtime), uWSGI behind it: the response bytes of
/// `GET /hello?x=1`, and uWSGI's log.
fn serve_hello(kind: &str) -> (Vec<u8>, String) {
    let dir = TempDir::new(&format!("m2pypi-{kind}"));
    for sub in ["logs", "run", "bin"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let ports = free_ports(3);
    std::fs::write(dir.join("m2.conf"), config(&ports)).unwrap();
    let out = Command::new(require_bin("m2sh"))
        .args(["load", "-config", "m2.conf", "-db", "config.sqlite"])
        .current_dir(&dir.path)
        .env("LOGNAME", "zring")
        .output()
        .expect("running m2sh");
    assert!(out.status.success(), "m2sh load: {out:?}");
    let mut command = if kind == "mongrel2" {
        Command::new(require_bin("mongrel2"))
    } else {
        let link = dir.join("bin/mongrel2");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_zring"), &link).unwrap();
        Command::new(link)
    };
    command
        .args(["config.sqlite", SERVER_UUID])
        .current_dir(&dir.path);
    if kind != "mongrel2" {
        command.args(["--runtime", kind, "--workers", "2"]);
    }
    let mut server = Proc::spawn("server", &mut command, &dir.path);
    wait_port(ports[2], &mut server, Duration::from_secs(10));
    let mut app = Proc::spawn(
        "uwsgi",
        Command::new(uwsgi())
            .arg("--zeromq")
            .arg(format!(
                "tcp://127.0.0.1:{},tcp://127.0.0.1:{}",
                ports[0], ports[1]
            ))
            .args(["--wsgi-file", HELLO, "--need-app", "--die-on-term"]),
        &dir.path,
    );
    app.term_first = true;
    // A reply published before uWSGI's PUB is subscribed is lost (PUB/SUB slow joiner), and
    // the connection then waits for nothing: ask again on a new connection until answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        match get(ports[2], "/hello?x=1") {
            Ok(r) if !r.is_empty() => break r,
            other => assert!(
                Instant::now() < deadline,
                "{kind}: no answer from uWSGI: {other:?}\n{}\n{}",
                app.log_text(),
                server.log_text()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // uWSGI logs the request after its close message, so the client can see EOF first.
    let logged = Instant::now() + Duration::from_secs(10);
    while !app.log_text().contains(REQUEST_LOGGED) && Instant::now() < logged {
        std::thread::sleep(Duration::from_millis(50));
    }
    app.stop();
    server.stop();
    (got, app.log_text())
}

/// uWSGI's request log line for the request: the method, path and query it parsed.
const REQUEST_LOGGED: &str = "] GET /hello?x=1 => generated";

/// One request on a new connection; everything until the server closes it (uWSGI ends each
/// response with Mongrel2's empty close message).
fn get(port: u16, target: &str) -> Result<Vec<u8>, String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    match c.read_to_end(&mut got) {
        Ok(_) => Ok(got),
        Err(e) => Err(format!("{e}; have {:?}", String::from_utf8_lossy(&got))),
    }
}

both_runtimes! {
    uwsgi_hello_through_zring_as_through_mongrel2(rt) {
        let (zring, log) = serve_hello(rt);
        // uWSGI's request log: the method, path and query it parsed from zring's message.
        assert!(log.contains(REQUEST_LOGGED), "{log}");
        let text = String::from_utf8_lossy(&zring).into_owned();
        // The app's status and header, as uWSGI writes them; no body (see the top).
        assert_eq!(text, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n");
        let (mongrel2, _) = serve_hello("mongrel2");
        assert_eq!(text, String::from_utf8_lossy(&mongrel2), "zring vs mongrel2");
    }
}
