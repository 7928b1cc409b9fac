//! Client mode (`--zserver-stream`, issue 13 phase 1) with real parts on both runtimes: a
//! ZHTTP requester over real ZeroMQ (`support::requester`), zring alone in client mode (no
//! `--listen`, as zurl runs), and a real HTTP origin on loopback (`support::origin`).
#[macro_use]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::origin::Origin;
use support::requester::{Endpoints, Replies, Requester};
use support::tn::Value;
use support::zhttp::{hdrs, int};
use support::{temp_dir, Proc};

const T: Duration = Duration::from_secs(20);

fn s(v: &str) -> Value {
    Value::Str(v.as_bytes().to_vec())
}

/// zring in client mode only, on `rt`; returns it with the requester's endpoints.
fn zring(rt: &str, extra: &[&str]) -> (Proc, Endpoints, std::path::PathBuf) {
    support::requester::client_mode_zring("client", rt, |c| {
        c.args(["--workers", "2"]).args(extra);
    })
}

fn get(r: &mut Requester, uri: &str, method: &str, extra: Vec<(&str, Value)>) -> Replies {
    let id = r.new_id();
    let mut fields = vec![
        ("method", s(method)),
        ("uri", s(uri)),
        ("headers", hdrs(&[("User-Agent", "client-mode-test")])),
        ("credits", int(200_000)),
        (
            "ext",
            Value::Dict(vec![(b"multi".to_vec(), Value::Bool(true))]),
        ),
    ];
    fields.extend(extra);
    r.start(&id, fields);
    r.collect(&id, 0, T)
}

both_runtimes! {
    http_exchanges(rt) {
        // Goal: GET, chunked, read-to-EOF, HEAD, 204, 304 and 1xx responses arrive whole
        // and correctly ended; the ack is a keep-alive from zring's --id; the origin sees
        // Host from the URI and the requester's headers.
        let origin = Origin::start();
        let (_z, ep, _d) = zring(rt, &[]);
        let mut r = Requester::connect(&ep, "req-a");
        let x = get(&mut r, &origin.url("/get"), "GET", vec![]);
        assert_eq!(x.kinds()[0], "keep-alive", "{:?}", x.packets);
        assert_eq!(x.packets[0].str_of("from").as_deref(), Some("zring-c"));
        assert_eq!(x.packets[0].get("seq").and_then(|v| v.as_int()), Some(0));
        assert_eq!(x.code(), Some(200));
        assert_eq!(x.header("X-Origin").as_deref(), Some("yes"));
        assert_eq!(x.body(), b"hello");
        let seen = origin.last();
        assert_eq!(seen.target, "/get");
        assert_eq!(seen.header("Host"), Some(format!("127.0.0.1:{}", origin.port).as_str()));
        assert_eq!(seen.header("User-Agent"), Some("client-mode-test"));
        for (path, method, code, body) in [
            ("/chunked", "GET", 200, &b"abcdefg"[..]),
            ("/eof", "GET", 200, b"until close"),
            ("/head", "HEAD", 200, b""),
            ("/head", "GET", 200, b"0123456789"),
            ("/204", "GET", 204, b""),
            ("/304", "GET", 304, b""),
            ("/continue", "GET", 200, b"ok"),
        ] {
            let x = get(&mut r, &origin.url(path), method, vec![]);
            assert_eq!(x.code(), Some(code), "{path} {method}: {:?}", x.packets);
            assert_eq!(x.body(), body, "{path} {method}");
            assert_eq!(x.last_kind(), "data", "{path} {method}");
        }
        // seq runs 0, 1, 2, ... per session.
        let seqs: Vec<i64> = x.packets.iter().filter_map(|p| p.get("seq")?.as_int()).collect();
        assert_eq!(seqs, (0..seqs.len() as i64).collect::<Vec<_>>());
    }

    request_bodies(rt) {
        // Goal: a one-packet POST goes with Content-Length; a POST in several packets goes
        // chunked, each later packet within the credits zring granted.
        let origin = Origin::start();
        let (_z, ep, _d) = zring(rt, &[]);
        let mut r = Requester::connect(&ep, "req-b");
        let x = get(&mut r, &origin.url("/echo"), "POST", vec![("body", s("a=1&b=2"))]);
        assert_eq!(x.body(), b"a=1&b=2");
        assert_eq!(x.header("X-Framing").as_deref(), Some("length 7"));
        let id = r.new_id();
        r.start(&id, vec![
            ("method", s("POST")),
            ("uri", s(&origin.url("/echo"))),
            ("body", s("first-")),
            ("more", Value::Bool(true)),
            ("credits", int(100_000)),
        ]);
        // ack, then a credit for the rest once the first bytes went out
        let ack = r.recv(T).unwrap();
        assert_eq!(ack.kind(), "keep-alive");
        let credit = r.recv(T).unwrap();
        assert_eq!(credit.kind(), "credit", "{credit:?}");
        let granted = credit.get("credits").and_then(|c| c.as_int()).unwrap();
        assert!(granted >= 6);
        r.send(&id, 1, vec![("body", s("second")), ("more", Value::Bool(true))]);
        r.send(&id, 2, vec![("body", s("-third"))]);
        let x = r.collect(&id, 0, T);
        assert_eq!(x.body(), b"first-second-third", "{:?}", x.packets);
        assert_eq!(x.header("X-Framing").as_deref(), Some("chunked"));
        assert_eq!(origin.last().body, b"first-second-third");
    }

    big_response_under_credits(rt) {
        // Goal: 10 MB streams through under 64 KiB of credits at a time: no body packet is
        // larger than the credits outstanding, and every byte arrives in order.
        let origin = Origin::start();
        let (_z, ep, _d) = zring(rt, &[]);
        let mut r = Requester::connect(&ep, "req-c");
        let id = r.new_id();
        let n = 10 * 1024 * 1024;
        r.start(&id, vec![
            ("method", s("GET")),
            ("uri", s(&origin.url(&format!("/big/{n}")))),
            ("credits", int(65_536)),
        ]);
        let x = r.collect(&id, 1, Duration::from_secs(30));
        let body = x.body();
        assert_eq!(body.len(), n);
        assert!(body.iter().enumerate().all(|(i, &b)| b == ((i % 65536) % 251) as u8));
        let biggest = x.packets.iter().filter_map(|p| p.get("body")?.as_bytes()).map(|b| b.len()).max();
        assert!(biggest.unwrap() <= 65_536);
    }

    failures_and_policy(rt) {
        // Goal: a refused port and an unresolvable name give remote-connection-failed;
        // --deny-out-internal refuses literals, /etc/hosts names and mapped IPv6 with
        // policy-violation, and ignore-policies lifts it.
        let origin = Origin::start();
        let (_z, ep, _d) = zring(rt, &[]);
        let mut r = Requester::connect(&ep, "req-d");
        let closed = support::free_port();
        let x = get(&mut r, &format!("http://127.0.0.1:{closed}/"), "GET", vec![]);
        assert_eq!(x.kinds(), ["keep-alive", "error"]);
        assert_eq!(x.condition().as_deref(), Some("remote-connection-failed"));
        let x = get(&mut r, "http://nonexistent.invalid/", "GET", vec![]);
        assert_eq!(x.condition().as_deref(), Some("remote-connection-failed"));
        let x = get(&mut r, "ftp://x/", "GET", vec![]);
        assert_eq!(x.condition().as_deref(), Some("bad-request"));
        drop(r);

        let (_z, ep, _d) = zring(rt, &["--deny-out-internal"]);
        let mut r = Requester::connect(&ep, "req-e");
        let port = origin.port;
        for uri in [
            format!("http://127.0.0.1:{port}/get"),
            format!("http://localhost:{port}/get"),
            format!("http://[::ffff:127.0.0.1]:{port}/get"),
            format!("http://0.0.0.0:{port}/get"),
        ] {
            let x = get(&mut r, &uri, "GET", vec![]);
            assert_eq!(x.condition().as_deref(), Some("policy-violation"), "{uri}");
        }
        let x = get(&mut r, &origin.url("/get"), "GET", vec![("ignore-policies", Value::Bool(true))]);
        assert_eq!(x.body(), b"hello");
        // connect-host is checked as well
        let x = get(&mut r, "http://example.test/get", "GET", vec![
            ("connect-host", s("127.0.0.1")),
            ("connect-port", int(port as i64)),
        ]);
        assert_eq!(x.condition().as_deref(), Some("policy-violation"));
    }

    redirects(rt) {
        // Goal: with follow-redirects the last hop's answer arrives; a 303 after POST is a
        // GET; nine hops fail; without the flag the 302 is relayed.
        let origin = Origin::start();
        let (_z, ep, _d) = zring(rt, &[]);
        let mut r = Requester::connect(&ep, "req-f");
        let follow = ("follow-redirects", Value::Bool(true));
        let x = get(&mut r, &origin.url("/redirect/3"), "GET", vec![follow.clone()]);
        assert_eq!((x.code(), x.body()), (Some(200), b"landed".to_vec()));
        let x = get(&mut r, &origin.url("/see-other"), "POST", vec![follow.clone(), ("body", s("zz"))]);
        assert_eq!(x.header("X-Method").as_deref(), Some("GET"));
        let x = get(&mut r, &origin.url("/redirect/9"), "GET", vec![follow.clone()]);
        assert_eq!(x.condition().as_deref(), Some("too-many-redirects"));
        let x = get(&mut r, &origin.url("/redirect/1"), "GET", vec![]);
        assert_eq!(x.code(), Some(302));
        assert_eq!(x.header("Location").as_deref(), Some("/redirect/0"));
    }

    zurl_fields_cancel_and_router_resp(rt) {
        // Goal: stream:false gets one packet; user-data is echoed in every reply; a
        // requester cancel closes the origin connection; router-resp replies come out of
        // the in-stream ROUTER.
        let origin = Origin::start();
        let (_z, ep, _d) = zring(rt, &[]);
        let mut r = Requester::connect(&ep, "req-g");
        let ud = Value::Dict(vec![(b"k".to_vec(), s("v"))]);
        let x = get(&mut r, &origin.url("/get"), "GET", vec![("stream", Value::Bool(false)), ("user-data", ud.clone())]);
        assert_eq!(x.kinds(), ["keep-alive", "data"]);
        assert!(x.packets.iter().all(|p| p.get("user-data") == Some(&ud)));
        assert_eq!(x.body(), b"hello");
        let x = get(&mut r, &origin.url("/get"), "GET", vec![("max-size", int(3))]);
        assert_eq!(x.condition().as_deref(), Some("max-size-exceeded"));
        let x = get(&mut r, &origin.url("/get"), "GET", vec![("router-resp", Value::Bool(true))]);
        assert_eq!(x.body(), b"hello");
        // cancel: a 10 MB response with few credits, then cancel: nothing more comes
        let id = r.new_id();
        r.start(&id, vec![("method", s("GET")), ("uri", s(&origin.url("/big/10000000"))), ("credits", int(1000))]);
        let _ack = r.recv(T).unwrap();
        let head = r.recv(T).unwrap();
        assert_eq!(head.get("code").and_then(|c| c.as_int()), Some(200));
        r.send(&id, 1, vec![("type", s("cancel"))]);
        let end = Instant::now() + Duration::from_millis(500);
        let mut after = 0;
        while Instant::now() < end {
            if let Some(p) = r.recv(Duration::from_millis(100)) {
                if p.get("id").and_then(|i| i.as_bytes()) == Some(id.as_bytes()) && p.get("body").is_none_or(|b| b.as_bytes() == Some(b"")) {
                    after += 1;
                }
            }
        }
        assert_eq!(after, 0, "no reply after cancel but the body already credited");
    }
}

both_runtimes! {
    req_mode(rt) {
        // Goal: --zserver-req answers a REQ requester with one packet (no from, seq or ext),
        // the whole body, or error with its condition; alongside the stream sockets.
        let origin = Origin::start();
        let dir = temp_dir(&format!("client-req-{rt}"));
        let req = format!("ipc://{}/req", dir.display());
        let (_z, _ep, _d) = zring(rt, &["--zserver-req", &req]);
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::REQ).unwrap();
        sock.set_rcvtimeo(20_000).unwrap();
        sock.set_linger(0).unwrap();
        sock.connect(&req).unwrap();
        let ask = |uri: &str| -> Value {
            let v = Value::Dict(vec![
                (b"id".to_vec(), s("q1")),
                (b"method".to_vec(), s("GET")),
                (b"uri".to_vec(), s(uri)),
            ]);
            let mut msg = b"T".to_vec();
            msg.extend(support::tn::encode(&v));
            sock.send(msg, 0).unwrap();
            let reply = sock.recv_bytes(0).expect("no req-mode reply");
            support::tn::decode(&reply[1..]).unwrap()
        };
        let r = ask(&origin.url("/chunked"));
        assert_eq!(r.keys(), ["id", "code", "reason", "headers", "body"]);
        assert_eq!(r.get("code").and_then(|c| c.as_int()), Some(200));
        assert_eq!(r.get("body").and_then(|b| b.as_bytes()), Some(&b"abcdefg"[..]));
        let r = ask("http://nonexistent.invalid/");
        assert_eq!(r.str_of("type").as_deref(), Some("error"));
        assert_eq!(r.str_of("condition").as_deref(), Some("remote-connection-failed"));
        assert!(r.get("from").is_none() && r.get("seq").is_none());
    }

    server_and_client_mode_in_one_process(rt) {
        // Goal: as Pushpin runs pushpin-connmgr: a --listen port (server mode) and client
        // mode in one zring; both work.
        let origin = Origin::start();
        let port = support::free_port();
        let dir = temp_dir(&format!("client-both-{rt}"));
        let zc = format!("ipc://{}/zc", dir.display());
        let listen = format!("127.0.0.1:{port}");
        let (mut z, ep, _d) = zring(rt, &["--listen", &listen, "--zclient-stream", &zc, "--handler-wait", "200"]);
        support::wait_port(port, &mut z, Duration::from_secs(10));
        let mut r = Requester::connect(&ep, "req-h");
        let x = get(&mut r, &origin.url("/get"), "GET", vec![]);
        assert_eq!(x.body(), b"hello");
        // No handler on the server side: the request waits --handler-wait, then gets 503.
        let url = format!("http://{listen}/x");
        let (rc, code) = support::curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]);
        assert_eq!((rc, code.as_str()), (0, "503"));
    }
}

#[test]
fn help_lists_client_mode_flags() {
    // Goal: Pushpin's C++ runner enables client mode only when `--help` mentions it.
    let out =
        support::proc::output(Command::new(env!("CARGO_BIN_EXE_zring")).arg("--help")).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--zserver-stream",
        "--zserver-req",
        "--zserver-connect",
        "--deny-out-internal",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}
