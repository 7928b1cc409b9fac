//! Mongrel2 `Proxy` routes end to end, on both runtimes: a tiny HTTP backend (std
//! `TcpListener` on loopback) behind `zring --m2-config`; curl and raw clients through it.
//! Checks: the head reaches the backend as the client sent it, GET/POST, keep-alive reuse
//! of one backend connection, switching to another route and back, a large streamed
//! (chunked) response, a backend that is down (502), one that closes before answering (502)
//! or mid-response (truncated, client closed), a read-until-close response, and the fd
//! count back to its baseline. When `mongrel2` and `m2sh` are installed, the same script
//! runs against Mongrel2 1.12.2 and what the backend receives is compared.
#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::peers;
use support::{free_ports, wait_port, Proc, TempDir};

const SERVER_UUID: &str = "f400bf85-4538-4f7a-8908-67e313d515c2";
const BIG: usize = 4 << 20;
const HUGE: usize = 64 << 20;

/// What the backend saw: accepted connections and each request (head + body).
#[derive(Default)]
struct Seen {
    connections: usize,
    requests: Vec<Vec<u8>>,
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// Serves one backend connection: requests until the client closes or a path says stop.
fn serve(mut s: TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let need = head_end + content_length(&buf[..head_end]);
        while buf.len() < need {
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let req: Vec<u8> = buf.drain(..need).collect();
        seen.lock().unwrap().requests.push(req.clone());
        let line = String::from_utf8_lossy(&req[..find(&req, b"\r\n").unwrap()]).into_owned();
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let w = |s: &mut TcpStream, b: &[u8]| s.write_all(b).is_ok();
        match path.as_str() {
            p if p.starts_with("/proxy/post") => {
                let body = format!("got {} bytes", req.len() - (need - content_length(&req)));
                let r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if !w(&mut s, r.as_bytes()) {
                    return;
                }
            }
            "/proxy/big" | "/proxy/huge" => {
                if !w(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                ) {
                    return;
                }
                let chunk = vec![b'x'; 65536];
                let total = if path == "/proxy/huge" { HUGE } else { BIG };
                for _ in 0..total / chunk.len() {
                    let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                    c.extend_from_slice(&chunk);
                    c.extend_from_slice(b"\r\n");
                    if !w(&mut s, &c) {
                        return;
                    }
                }
                if !w(&mut s, b"0\r\n\r\n") {
                    return;
                }
            }
            "/proxy/cut" => {
                // Promises 100000 bytes, sends 1000, closes.
                let _ = w(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
                let _ = w(&mut s, &[b'c'; 1000]);
                return;
            }
            "/proxy/nothing" => return,
            "/proxy/eof" => {
                let _ = w(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
                );
                return;
            }
            _ => {
                let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: yes\r\n\r\nhello";
                if !w(&mut s, r) {
                    return;
                }
            }
        }
    }
}

fn backend() -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(c) = c else { return };
            s2.lock().unwrap().connections += 1;
            let s3 = s2.clone();
            std::thread::spawn(move || serve(c, s3));
        }
    });
    (port, seen)
}

fn config(port: u16, backend: u16, down: u16) -> String {
    format!(
        "main = Server(uuid='{SERVER_UUID}', access_log='/logs/access.log',\n\
         \x20   error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',\n\
         \x20   pid_file='/run/mongrel2.pid', bind_addr='127.0.0.1', port={port},\n\
         \x20   hosts=[Host(name='localhost', routes={{\n\
         \x20      '/proxy/': Proxy(addr='127.0.0.1', port={backend}),\n\
         \x20      '/down/': Proxy(addr='127.0.0.1', port={down}),\n\
         \x20      '/static/': Dir(base='static/', index_file='index.html', default_ctype='text/plain')}})])\n\
         settings = {{'server.daemonize': 0}}\n\
         servers = [main]\n"
    )
}

struct Zring {
    _dir: TempDir,
    port: u16,
    proc: Proc,
}

fn start(kind: &str, backend_port: u16) -> Zring {
    let dir = TempDir::new(&format!("m2p-{kind}"));
    for sub in ["logs", "run", "tmp", "static"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("static/index.html"), "index\n").unwrap();
    let ports = free_ports(2);
    std::fs::write(
        dir.join("m2.conf"),
        config(ports[0], backend_port, ports[1]),
    )
    .unwrap();
    let mut proc = if kind == "mongrel2" {
        let out = Command::new(peers::require_bin("m2sh"))
            .args(["load", "-config", "m2.conf", "-db", "config.sqlite"])
            .current_dir(&dir.path)
            .env("LOGNAME", "zring")
            .output()
            .unwrap();
        assert!(out.status.success(), "m2sh load: {out:?}");
        Proc::spawn(
            "mongrel2",
            Command::new(peers::require_bin("mongrel2"))
                .args(["config.sqlite", SERVER_UUID])
                .current_dir(&dir.path),
            &dir.path,
        )
    } else {
        Proc::spawn(
            "zring",
            Command::new(env!("CARGO_BIN_EXE_zring"))
                .args([
                    "--m2-config",
                    "m2.conf",
                    "--runtime",
                    kind,
                    "--workers",
                    "2",
                ])
                .args(["--log-level", "2"])
                .current_dir(&dir.path),
            &dir.path,
        )
    };
    wait_port(ports[0], &mut proc, Duration::from_secs(10));
    Zring {
        _dir: dir,
        port: ports[0],
        proc,
    }
}

impl Zring {
    fn client(&self) -> TcpStream {
        let c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proc.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Reads one response with a Content-Length body.
fn read_response(c: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            if buf.len() >= i + 4 + content_length(&buf[..i + 4]) {
                return buf;
            }
        }
        let n = c.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn read_to_close(c: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = c.read_to_end(&mut v);
    v
}

fn get(z: &Zring, path: &str) -> Vec<u8> {
    let mut c = z.client();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_to_close(&mut c)
}

/// The keep-alive script; returns what the backend received (for the parity check).
fn keep_alive_script(z: &Zring, seen: &Arc<Mutex<Seen>>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut responses = Vec::new();
    let before = seen.lock().unwrap().connections;
    let first = seen.lock().unwrap().requests.len();
    let mut c = z.client();
    c.write_all(b"GET /proxy/a?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c);
    assert!(r.starts_with(b"HTTP/1.1 200 OK\r\n") && r.ends_with(b"\r\n\r\nhello"));
    assert!(find(&r, b"X-Backend: yes").is_some());
    responses.push(r);
    c.write_all(
        b"POST /proxy/post HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\nhello=world",
    )
    .unwrap();
    let r = read_response(&mut c);
    assert!(
        r.ends_with(b"got 11 bytes"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    c.write_all(b"GET /proxy/b HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut c).ends_with(b"hello"));
    // All three on one backend connection.
    assert_eq!(seen.lock().unwrap().connections, before + 1);
    let got = seen.lock().unwrap().requests[first..].to_vec();
    assert_eq!(got.len(), 3);
    // Forwarded exactly as sent: Host kept, nothing added.
    assert_eq!(
        got[0],
        b"GET /proxy/a?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n"
    );
    assert_eq!(
        got[1],
        b"POST /proxy/post HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\nhello=world"
    );
    (got, responses)
}

both_runtimes! {
    proxy_routes_forward_to_the_backend(rt) {
        let (bport, seen) = backend();
        let z = start(rt, bport);
        // Warm up, then take the fd baseline.
        assert!(get(&z, "/proxy/warm").ends_with(b"hello"));
        std::thread::sleep(Duration::from_millis(300));
        let baseline = z.fd_count();

        // curl through the proxy.
        let url = format!("http://127.0.0.1:{}/proxy/hello", z.port);
        let out = Command::new("curl").args(["-s", "--max-time", "10", &url]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
        let head = seen.lock().unwrap().requests.last().unwrap().clone();
        assert!(find(&head, format!("Host: 127.0.0.1:{}\r\n", z.port).as_bytes()).is_some());

        keep_alive_script(&z, &seen);

        // Switching routes on one connection: Dir, then back to the proxy (new backend
        // connection: the old one was closed when the route changed).
        let conns = seen.lock().unwrap().connections;
        let mut c = z.client();
        c.write_all(b"GET /proxy/x HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        assert!(read_response(&mut c).ends_with(b"hello"));
        c.write_all(b"GET /static/ HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        assert!(read_response(&mut c).ends_with(b"index\n"));
        c.write_all(b"GET /proxy/y HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        assert!(read_response(&mut c).ends_with(b"hello"));
        assert_eq!(seen.lock().unwrap().connections, conns + 2);
        drop(c);

        // A large chunked response, streamed (curl decodes it).
        let url = format!("http://127.0.0.1:{}/proxy/big", z.port);
        let out = Command::new("curl").args(["-s", "--max-time", "30", &url]).output().unwrap();
        assert_eq!(out.stdout.len(), BIG);
        assert!(out.stdout.iter().all(|&b| b == b'x'));

        // Backpressure: a client that does not read holds a 64 MiB response back at the
        // backend; zring's memory stays bounded; then it all arrives.
        let rss = |z: &Zring| {
            let st = std::fs::read_to_string(format!("/proc/{}/status", z.proc.pid())).unwrap();
            st.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap())
                .unwrap()
        };
        let before = rss(&z);
        let mut c = z.client();
        c.write_all(b"GET /proxy/huge HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        let held = rss(&z);
        assert!(held < before + 16 * 1024, "RSS grew from {before} kB to {held} kB");
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let mut tail = Vec::new();
        while !tail.ends_with(b"0\r\n\r\n") {
            let n = c
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("{e} after {total} bytes, tail {tail:?}"));
            assert!(n > 0);
            total += n;
            tail.extend_from_slice(&buf[..n]);
            let keep = tail.len().saturating_sub(8);
            tail.drain(..keep);
        }
        assert!(total > HUGE, "{total}");
        drop(c);

        // A 2 MiB upload, streamed to the backend under its bounds.
        let body = z._dir.join("tmp/body");
        std::fs::write(&body, vec![b'u'; 2 << 20]).unwrap();
        let url = format!("http://127.0.0.1:{}/proxy/post", z.port);
        let data = format!("@{}", body.display());
        let out = Command::new("curl")
            .args(["-s", "--max-time", "30", "-H", "Content-Type: application/octet-stream", "--data-binary", &data, &url])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("got {} bytes", 2 << 20));

        // Backend down, or closing before a response: Mongrel2's 502, then close.
        for path in ["/down/x", "/proxy/nothing"] {
            let r = get(&z, path);
            assert!(r.starts_with(b"HTTP/1.1 502 Bad Gateway\r\n") && r.ends_with(b"Bad Gateway"),
                "{path}: {}", String::from_utf8_lossy(&r));
        }
        // Backend closing mid-response: the client gets what came, then the close.
        let r = get(&z, "/proxy/cut");
        let body = &r[find(&r, b"\r\n\r\n").unwrap() + 4..];
        assert_eq!(body, &[b'c'; 1000][..]);
        // A response read until the backend closes.
        let r = get(&z, "/proxy/eof");
        assert!(r.ends_with(b"\r\n\r\nuntil close"), "{}", String::from_utf8_lossy(&r));

        // A client that goes mid-response leaves nothing behind.
        let mut c = z.client();
        c.write_all(b"GET /proxy/big HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut some = [0u8; 1000];
        c.read_exact(&mut some).unwrap();
        drop(c);

        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(z.fd_count(), baseline, "fds back to baseline");
        assert!(z.proc.log_text().lines().all(|l| !l.contains("panick")));
    }
}

/// The same keep-alive script against Mongrel2 1.12.2 (CI installs `mongrel2-core`): the
/// backend receives the same bytes from both, and the client the same responses; a dead
/// backend gives the same 502 (apart from `Server`).
#[test]
fn proxy_parity_with_mongrel2() {
    let (bport, seen) = backend();
    let m2 = start("mongrel2", bport);
    let from_m2 = keep_alive_script(&m2, &seen);
    drop(m2);
    let z = start("epoll", bport);
    let from_z = keep_alive_script(&z, &seen);
    assert_eq!(from_m2, from_z);
    drop(z);
    let bad: Vec<String> = ["mongrel2", "epoll"]
        .iter()
        .map(|kind| {
            let s = start(kind, bport);
            let r = String::from_utf8_lossy(&get(&s, "/down/x")).into_owned();
            r.lines()
                .filter(|l| !l.starts_with("Server:"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert_eq!(bad[0], bad[1]);
}
