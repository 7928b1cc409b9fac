//! Parity with Condure 1.9.1: the same recording handler and the same client requests against
//! Condure and against zring (io_uring and epoll runtimes); the packets the handler receives
//! and the bytes the client receives must match after normalisation.
//!
//! Every case is three tests, `<case>::condure`, `<case>::zring_uring`, `<case>::zring_epoll`,
//! each with a fresh CM process (`--id parity-cm --workers 1`, one stream and one req port,
//! ipc endpoints in a temp dir). Condure's run is the reference, computed once per test
//! process (concurrently with the zring run).
//!
//! Normalised before comparing (everything else must be equal: keys, key order, value types,
//! values, socket and frame layout, client bytes):
//! * `id` values (string or list form) become `#<n>` by order of first appearance;
//! * `peer-port` becomes 0 (it must still be an int);
//! * `127.0.0.1:<port>` in `uri` and in the `Host` header becomes `127.0.0.1:PORT`/`REQPORT`;
//! * `Date:` header values in client bytes (Condure sends none).
//!
//! Not compared, because zring follows the issue instead of Condure: a handler `cancel` or
//! `error` before any response (Condure: empty reply; zring: 502 with a short body), and no
//! handler connected (zring: 503 after `--handler-wait`, never delivered later).
//!
//! Run: `cargo test --test parity` (`-- condure` for Condure only). `PEERS_DUMP=1` with
//! `--nocapture` prints every normalised transcript; `PEERS_SELF_CHECK=1` runs Condure in
//! place of zring to check the harness itself. `keepalive_encodings` takes ~46 s (Condure
//! sends keep-alives every 45 s) and runs all three CMs at once.
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::peers;
use support::peers::{hdrs, int, Cm, Cx, Transcript, Value, H1, H2, WAIT};

type R = Result<(), String>;

/// Declares the three tests of a parity case. `$extra` = extra CM flags, `$check` = assertions
/// that hold for every run (they document what Condure does).
macro_rules! parity_case {
    ($name:ident, $script:expr, $check:expr) => {
        parity_case!($name, $script, &[], $check);
    };
    ($name:ident, $script:expr, $extra:expr, $check:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn condure() {
                peers::parity(stringify!($name), $script, $extra, $check, Cm::Condure);
            }
            #[test]
            fn zring_uring() {
                peers::parity(stringify!($name), $script, $extra, $check, Cm::ZringUring);
            }
            #[test]
            fn zring_epoll() {
                peers::parity(stringify!($name), $script, $extra, $check, Cm::ZringEpoll);
            }
        }
    };
}

/// Declares three tests of a case where zring intentionally differs from Condure: each run
/// must succeed and pass `$check`, which asserts per CM.
macro_rules! own_case {
    ($name:ident, $script:expr, $check:expr) => {
        mod $name {
            use super::*;
            fn run(cm: Cm) {
                if !peers::enabled(cm) {
                    return;
                }
                let t = peers::run_case(cm, stringify!($name), $script, &[]);
                if let Some(e) = &t.error {
                    panic!(
                        "{}: {e}\n{}\n{}",
                        cm.name(),
                        t.dump(),
                        peers::tail(&t.cm_log, 40)
                    );
                }
                peers::dump_if_asked(&t);
                let check: fn(&Transcript) = $check;
                check(&t);
            }
            #[test]
            fn condure() {
                run(Cm::Condure);
            }
            #[test]
            fn zring_uring() {
                run(Cm::ZringUring);
            }
            #[test]
            fn zring_epoll() {
                run(Cm::ZringEpoll);
            }
        }
    };
}

fn request(method: &str, path: &str, host: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: zring-parity/1\r\nAccept: */*\r\n{extra}\r\n"
    )
}

fn ok_text(body: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("code", int(200)),
        ("reason", "OK".into()),
        ("headers", hdrs(&[("Content-Type", "text/plain")])),
        ("body", body.into()),
    ]
}

fn starts(t: &Transcript, i: usize, prefix: &str) {
    let got = t.client_text(i);
    assert!(
        got.starts_with(prefix),
        "{}: client event {i} should start with {prefix:?}, got {got:?}\n{}",
        t.cm.name(),
        t.dump()
    );
}

fn ends(t: &Transcript, i: usize, suffix: &str) {
    let got = t.client_text(i);
    assert!(
        got.ends_with(suffix),
        "{}: client event {i} should end with {suffix:?}, got {got:?}\n{}",
        t.cm.name(),
        t.dump()
    );
}

fn kinds(t: &Transcript, want: &[&str]) {
    assert_eq!(
        t.kinds(),
        want,
        "{}: packet kinds\n{}",
        t.cm.name(),
        t.dump()
    );
}

// ------------------------------------------------------------------------------------------
// GET with a query, twice on one persistent connection

fn get_query(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request("GET", "/hello?x=1&y=two%20words", &host, ""))?;
        c.response(false)?;
        c.send(request("GET", "/again", &host, "X-Extra: 1\r\n"))?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(&p, ok_text("hello\n"));
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("code", int(201)),
            ("reason", "Created".into()),
            (
                "headers",
                hdrs(&[("X-Custom", "a"), ("Content-Type", "application/json")]),
            ),
            ("body", "{\"ok\":true}".into()),
        ],
    );
    cx.join_clients()
}

parity_case!(get_query, get_query, |t| {
    kinds(t, &["pull:data", "pull:data"]);
    starts(t, 0, "HTTP/1.1 200 OK\r\n");
    ends(t, 0, "\r\n\r\nhello\n");
    starts(t, 1, "HTTP/1.1 201 Created\r\n");
    assert_eq!(t.client_events()[2].0, "open");
});

// ------------------------------------------------------------------------------------------
// HEAD

fn head(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request("HEAD", "/h", &host, ""))?;
        c.response(true)?;
        c.send(request("HEAD", "/h2", &host, ""))?;
        c.response(true)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("code", int(200)),
            ("reason", "OK".into()),
            (
                "headers",
                hdrs(&[("Content-Type", "text/plain"), ("Content-Length", "6")]),
            ),
            ("body", "".into()),
        ],
    );
    // An explicit length: for an empty, unframed HEAD answer Condure writes
    // `Content-Length: 0` (claiming a GET would return nothing) and zring, on purpose
    // (RFC 9110 §8.6), writes no length; that difference is not parity-checked.
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("code", int(200)),
            ("reason", "OK".into()),
            (
                "headers",
                hdrs(&[("Content-Type", "text/plain"), ("Content-Length", "0")]),
            ),
            ("body", "".into()),
        ],
    );
    cx.join_clients()
}

parity_case!(head, head, |t| {
    // The handler's Content-Length is kept, and no body follows it.
    assert_eq!(
        t.client_text(0),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n"
    );
    assert_eq!(
        t.client_text(1),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
    );
});

// ------------------------------------------------------------------------------------------
// POST with a Content-Length body: the handler grants credits, the body follows

fn post_body(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        let mut r = request(
            "POST",
            "/submit",
            &host,
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n",
        );
        r.push_str("hello=world");
        c.send(r)?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(&p, vec![("type", "credit".into()), ("credits", int(65536))]);
    let b = cx.h.expect("router", "data")?;
    cx.h.reply(&b, ok_text("got 11 bytes\n"));
    cx.join_clients()
}

parity_case!(post_body, post_body, |t| {
    kinds(t, &["pull:data", "router:parity-handler:data"]);
    assert_eq!(t.packets[0].v.get("more"), Some(&Value::Bool(true)));
    assert_eq!(
        t.packets[1].v.str_of("body").as_deref(),
        Some("hello=world")
    );
    starts(t, 0, "HTTP/1.1 200 OK\r\n");
});

/// The handler grants 4 credits at a time: the body arrives 4 bytes per packet.
fn post_trickle(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        let mut r = request("POST", "/trickle", &host, "Content-Length: 11\r\n");
        r.push_str("hello=world");
        c.send(r)?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("pull", "data")?;
    let mut got: Vec<u8> = Vec::new();
    loop {
        cx.h.reply(&p, vec![("type", "credit".into()), ("credits", int(4))]);
        let b = cx.h.expect("router", "data")?;
        got.extend(
            b.v.get("body")
                .and_then(Value::as_bytes)
                .unwrap_or_default(),
        );
        if b.v.get("more") != Some(&Value::Bool(true)) {
            break;
        }
        if got.len() > 11 {
            return Err("more body than sent".into());
        }
    }
    cx.h.reply(&p, ok_text(&format!("got {} bytes\n", got.len())));
    cx.join_clients()
}

parity_case!(post_trickle, post_trickle, |t| {
    starts(t, 0, "HTTP/1.1 200 OK\r\n");
    ends(t, 0, "got 11 bytes\n");
});

// ------------------------------------------------------------------------------------------
// POST with a chunked body

fn post_chunked(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        let mut r = request("POST", "/chunked", &host, "Transfer-Encoding: chunked\r\n");
        r.push_str("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        c.send(r)?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(&p, vec![("type", "credit".into()), ("credits", int(65536))]);
    let mut got: Vec<u8> = Vec::new();
    loop {
        let b = cx.h.expect("router", "data")?;
        got.extend(
            b.v.get("body")
                .and_then(Value::as_bytes)
                .unwrap_or_default(),
        );
        if b.v.get("more") != Some(&Value::Bool(true)) {
            break;
        }
    }
    cx.h.reply(&p, ok_text(&String::from_utf8_lossy(&got)));
    cx.join_clients()
}

parity_case!(post_chunked, post_chunked, |t| {
    // One packet per chunk, then an empty last packet without `body` or `more`.
    kinds(
        t,
        &[
            "pull:data",
            "router:parity-handler:data",
            "router:parity-handler:data",
            "router:parity-handler:data",
        ],
    );
    assert_eq!(
        t.packets[3].v.keys(),
        ["from", "id", "seq", "ext"],
        "{}",
        t.dump()
    );
    starts(t, 0, "HTTP/1.1 200 OK\r\n");
    ends(t, 0, "\r\n\r\nhello world");
});

// ------------------------------------------------------------------------------------------
// Expect: 100-continue

fn expect_continue(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request(
            "POST",
            "/upload",
            &host,
            "Content-Length: 5\r\nExpect: 100-continue\r\n",
        ))?;
        c.response(false)?; // the interim 100
        c.send("12345")?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(&p, vec![("type", "credit".into()), ("credits", int(65536))]);
    let b = cx.h.expect("router", "data")?;
    cx.h.reply(&b, ok_text("thanks\n"));
    cx.join_clients()
}

parity_case!(expect_continue, expect_continue, |t| {
    starts(t, 0, "HTTP/1.1 100 Continue\r\n");
    starts(t, 1, "HTTP/1.1 200 OK\r\n");
});

// ------------------------------------------------------------------------------------------
// Streamed response: head with `more`, then chunks; the CM returns credits as it writes

fn stream_response(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request("GET", "/stream", &host, ""))?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("pull", "data")?;
    let mut first = ok_text("part1\n");
    first.push(("more", true.into()));
    cx.h.reply(&p, first);
    cx.h.expect("router", "credit")?;
    cx.h.reply(&p, vec![("body", "part2\n".into()), ("more", true.into())]);
    cx.h.expect("router", "credit")?;
    cx.h.reply(&p, vec![("body", "part3\n".into())]);
    cx.join_clients()
}

parity_case!(stream_response, stream_response, |t| {
    // One credit per chunk written (body bytes only), none for the last one.
    kinds(
        t,
        &[
            "pull:data",
            "router:parity-handler:credit",
            "router:parity-handler:credit",
        ],
    );
    for p in &t.packets[1..] {
        assert_eq!(p.v.get("credits"), Some(&int(6)), "{}", t.dump());
    }
    assert_eq!(
        t.client_text(0),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: Transfer-Encoding\r\n\
         Transfer-Encoding: chunked\r\n\r\n6\r\npart1\n\r\n6\r\npart2\n\r\n6\r\npart3\n\r\n0\r\n\r\n"
    );
});

// ------------------------------------------------------------------------------------------
// The client disconnects mid-response: the CM sends `cancel`

fn client_disconnect(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request("GET", "/stream", &host, ""))?;
        c.head()?;
        c.part(b"part1\n")?;
        c.s.shutdown(std::net::Shutdown::Both).ok();
        Ok(())
    });
    let p = cx.h.expect("pull", "data")?;
    let mut first = ok_text("part1\n");
    first.push(("more", true.into()));
    cx.h.reply(&p, first);
    cx.h.expect("router", "cancel")?;
    cx.join_clients()
}

parity_case!(client_disconnect, client_disconnect, |t| {
    assert_eq!(t.kinds().last().unwrap(), "router:parity-handler:cancel");
});

// ------------------------------------------------------------------------------------------
// Handoff: H1 hands the session to H2, which answers

fn handoff(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request("GET", "/handoff", &host, ""))?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("pull", "data")?;
    let id = p.id();
    cx.h.send(H1, &id, vec![("type", "handoff-start".into())]);
    cx.h.expect("router:parity-handler", "handoff-proceed")?;
    cx.h.send(H2, &id, vec![("type", "keep-alive".into())]);
    let mut first = ok_text("from h2\n");
    first.push(("more", true.into()));
    cx.h.send(H2, &id, first);
    cx.h.expect("router:parity-handler-2", "credit")?;
    cx.h.send(H2, &id, vec![("body", "done\n".into())]);
    cx.join_clients()
}

parity_case!(handoff, handoff, |t| {
    starts(t, 0, "HTTP/1.1 200 OK\r\n");
});

// ------------------------------------------------------------------------------------------
// req mode

fn req_get(cx: &mut Cx) -> R {
    cx.req_client(|c| {
        let host = c.host();
        c.send(request("GET", "/reqmode?a=b", &host, ""))?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("req", "data")?;
    cx.h.reply_req(
        &p,
        vec![
            ("code", int(200)),
            ("reason", "OK".into()),
            ("headers", hdrs(&[("Content-Type", "text/plain")])),
            ("body", "req hello\n".into()),
        ],
    );
    cx.join_clients()
}

parity_case!(req_get, req_get, |t| {
    kinds(t, &["req:data"]);
    starts(t, 0, "HTTP/1.1 200 OK\r\n");
});

fn req_post(cx: &mut Cx) -> R {
    cx.req_client(|c| {
        let host = c.host();
        let mut r = request(
            "POST",
            "/reqmode",
            &host,
            "Content-Type: text/plain\r\nContent-Length: 9\r\n",
        );
        r.push_str("req body!");
        c.send(r)?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))
    });
    let p = cx.h.expect("req", "data")?;
    let n =
        p.v.get("body")
            .and_then(Value::as_bytes)
            .unwrap_or_default()
            .len();
    cx.h.reply_req(
        &p,
        vec![
            ("code", int(200)),
            ("reason", "OK".into()),
            ("headers", hdrs(&[("Content-Type", "text/plain")])),
            ("body", format!("got {n}\n").as_str().into()),
        ],
    );
    cx.join_clients()
}

parity_case!(req_post, req_post, |t| {
    kinds(t, &["req:data"]);
    assert_eq!(t.packets[0].v.str_of("body").as_deref(), Some("req body!"));
    ends(t, 0, "got 9\n");
});

// ------------------------------------------------------------------------------------------
// Intended differences: the handler ends the request before any response

fn handler_cancel(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request("GET", "/cancelled", &host, ""))?;
        c.response_or_close()
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(&p, vec![("type", "cancel".into())]);
    cx.join_clients()
}

fn handler_error(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request("GET", "/error", &host, ""))?;
        c.response_or_close()
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("type", "error".into()),
            ("condition", "bad-request".into()),
        ],
    );
    cx.join_clients()
}

/// Condure closes the connection without a byte; zring answers 502 with a short body. Neither
/// sends the handler anything back (no `cancel` for a session the handler ended).
fn empty_or_502(t: &Transcript) {
    let got = t.client_text(0);
    if t.cm == Cm::Condure {
        assert_eq!(
            t.client_events(),
            vec![("closed".to_string(), vec![])],
            "condure: expected an empty reply"
        );
    } else {
        assert!(
            got.starts_with("HTTP/1.1 502 "),
            "{}: expected a 502, got {got:?}",
            t.cm.name()
        );
        let body = got.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        assert!(
            !body.is_empty() && body.len() < 200,
            "{}: expected a short body, got {body:?}",
            t.cm.name()
        );
    }
    kinds(t, &["pull:data"]);
}

own_case!(handler_cancel, handler_cancel, empty_or_502);
own_case!(handler_error, handler_error, empty_or_502);

// ------------------------------------------------------------------------------------------
// Intended difference, zring only: no handler connected → 503 after --handler-wait, and the
// request is never delivered to a handler that connects later.

fn no_handler(cm: Cm) {
    if !peers::enabled(cm) {
        return;
    }
    let dir = peers::TempDir::new("nohandler");
    let cmp = peers::start_cm(cm, &dir, &["--handler-wait", "500"]);
    let port = cmp.port;
    let t0 = Instant::now();
    let client = std::thread::spawn(move || -> Result<Vec<u8>, String> {
        let mut c = peers::Client::connect(port)?;
        let host = c.host();
        c.send(request("GET", "/nobody", &host, ""))?;
        c.read_response(false, WAIT)
    });
    let resp = client
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{}: {e}", cm.name()));
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 503 "),
        "{}: expected a 503, got {text:?}",
        cm.name()
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{}: the 503 came after {took:?}, --handler-wait is 500 ms",
        cm.name()
    );
    let mut h = peers::Handler::connect(&cmp, &[H1]);
    if let Some(r) = h.recv(Duration::from_secs(1)) {
        panic!(
            "{}: a handler that connected after the 503 got {} {}",
            cm.name(),
            r.via,
            r.v
        );
    }
}

mod no_handler {
    use super::*;
    #[test]
    fn zring_uring() {
        no_handler(Cm::ZringUring);
    }
    #[test]
    fn zring_epoll() {
        no_handler(Cm::ZringEpoll);
    }
}

// ------------------------------------------------------------------------------------------
// Expect: 100-continue timing: does the interim response wait for the handler's credits?

fn continue_timing(cx: &mut Cx) -> R {
    let granted = Arc::new(AtomicBool::new(false));
    let g = granted.clone();
    cx.client(move |c| {
        let host = c.host();
        c.send(request(
            "POST",
            "/upload",
            &host,
            "Content-Length: 3\r\nExpect: 100-continue\r\n",
        ))?;
        c.response(false)?;
        let after = g.load(Ordering::Acquire);
        c.record("100-after-credit", after.to_string().as_bytes());
        c.send("abc")?;
        c.response(false)?;
        Ok(())
    });
    let p = cx.h.expect("pull", "data")?;
    std::thread::sleep(Duration::from_millis(300));
    granted.store(true, Ordering::Release);
    cx.h.reply(&p, vec![("type", "credit".into()), ("credits", int(100))]);
    let b = cx.h.expect("router", "data")?;
    cx.h.reply(&b, ok_text("ok\n"));
    cx.join_clients()
}

parity_case!(continue_timing, continue_timing, |t| {
    // The interim 100 goes out only once the handler has granted credits.
    assert_eq!(t.client_text(0), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(
        t.client_events()[1],
        ("100-after-credit".into(), b"true".to_vec())
    );
});

// ------------------------------------------------------------------------------------------
// HTTP/1.0: a plain response, then a streamed (close-delimited) one

fn http10(cx: &mut Cx) -> R {
    // One connection after the other, so the order of the two requests is fixed.
    cx.client(|c| {
        c.send("GET /old HTTP/1.0\r\nUser-Agent: zring-parity/1\r\n\r\n")?;
        c.response(false)?;
        c.closed_or_open(Duration::from_millis(300))?;
        let mut c2 = peers::Client::connect(c.port)?;
        c2.send("GET /old-stream HTTP/1.0\r\nHost: example.com\r\n\r\n")?;
        let r = c2.rest(WAIT);
        c.events.append(&mut c2.events);
        r.map(|_| ())
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(&p, ok_text("old\n"));
    let p = cx.h.expect("pull", "data")?;
    let mut first = ok_text("s1\n");
    first.push(("more", true.into()));
    cx.h.reply(&p, first);
    cx.h.expect("router", "credit")?;
    cx.h.reply(&p, vec![("body", "s2\n".into())]);
    cx.join_clients()
}

parity_case!(http10, http10, |t| {
    // No Host: the uri uses `localhost`. Not persistent; a streamed response is
    // close-delimited.
    assert_eq!(
        t.packets[0].v.str_of("uri").as_deref(),
        Some("http://localhost/old")
    );
    starts(t, 0, "HTTP/1.0 200 OK\r\n");
    assert_eq!(t.client_events()[1].0, "closed", "{}", t.dump());
    assert_eq!(
        t.client_text(2),
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\ns1\ns2\n"
    );
});

// ------------------------------------------------------------------------------------------
// Connection: close from the client; hop-by-hop headers from the handler are replaced

fn connection_close(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(request("GET", "/bye", &host, "Connection: close\r\n"))?;
        c.response(false)?;
        c.closed_or_open(Duration::from_secs(2))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("code", int(200)),
            ("reason", "OK".into()),
            (
                "headers",
                hdrs(&[
                    ("Content-Type", "text/plain"),
                    ("Connection", "keep-alive"),
                    ("Transfer-Encoding", "chunked"),
                    ("X-After", "1"),
                ]),
            ),
            ("body", "bye\n".into()),
        ],
    );
    cx.join_clients()
}

parity_case!(connection_close, connection_close, |t| {
    // The handler's Connection and Transfer-Encoding are dropped; the CM's own headers come
    // after the handler's.
    assert_eq!(
        t.client_text(0),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-After: 1\r\nConnection: close\r\n\
         Content-Length: 4\r\n\r\nbye\n"
    );
    assert_eq!(t.client_events()[1].0, "closed", "{}", t.dump());
});

// ------------------------------------------------------------------------------------------
// Keep-alives from the CM (~45 s cycle): one session handled by H1 (single-id form) and two by
// H2 (list form). Slow (up to ~50 s), so all three CMs run concurrently in one test.

fn keepalive(cx: &mut Cx) -> R {
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut sessions = Vec::new();
    for (path, owner) in [("/ka-a", H1), ("/ka-b", H2), ("/ka-c", H2)] {
        let d = done.clone();
        cx.client(move |c| {
            let host = c.host();
            c.send(request("GET", path, &host, ""))?;
            c.head()?;
            c.part(b"open\n")?;
            c.idle_until(&d, Duration::from_secs(70))
        });
        let p = cx.h.expect("pull", "data")?;
        let mut first = ok_text("open\n");
        first.push(("more", true.into()));
        cx.h.send(owner, &p.id(), first);
        cx.h.expect(&format!("router:{owner}"), "credit")?;
        sessions.push((p.id(), owner));
    }
    let n0 = cx.h.log.len();
    let is_ka =
        |r: &peers::Rec, who: &str| r.via == format!("router:{who}") && r.kind() == "keep-alive";
    let deadline = start + Duration::from_secs(56);
    while !(cx.h.log[n0..].iter().any(|r| is_ka(r, H1))
        && cx.h.log[n0..].iter().any(|r| is_ka(r, H2)))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            done.store(true, Ordering::Release);
            return Err(format!(
                "no keep-alive for both handlers within 56 s; received:\n{}",
                cx.h.log_summary()
            ));
        }
        cx.h.recv(left);
    }
    eprintln!(
        "{}: keep-alives after {:?}",
        cx.cm.cm.name(),
        start.elapsed()
    );
    // The two keep-alive packets go to two ROUTER sockets: their relative order is not
    // meaningful, so order them by socket.
    let mut tail = cx.h.log.split_off(n0);
    tail.sort_by(|a, b| a.via.cmp(&b.via));
    cx.h.log.extend(tail);
    // End the three responses one by one (no cancels racing each other), then let the
    // clients go.
    for (id, owner) in sessions {
        cx.h.send(owner, &id, vec![("body", "".into())]);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::Release);
    cx.join_clients()
}

#[test]
fn keepalive_encodings() {
    let runs: Vec<_> = Cm::ALL
        .into_iter()
        .filter(|cm| peers::enabled(*cm))
        .map(|cm| std::thread::spawn(move || peers::run_case(cm, "keepalive", keepalive, &[])))
        .collect();
    let ts: Vec<Transcript> = runs.into_iter().map(|j| j.join().unwrap()).collect();
    let condure = &ts[0];
    if let Some(e) = &condure.error {
        panic!("condure: {e}\n{}", condure.dump());
    }
    peers::dump_if_asked(condure);
    let ka: Vec<&peers::Rec> = condure
        .packets
        .iter()
        .filter(|r| r.kind() == "keep-alive")
        .collect();
    assert_eq!(ka.len(), 2, "{}", condure.dump());
    assert!(
        matches!(ka[0].v.get("id"), Some(Value::Str(_))),
        "single form: {}",
        ka[0].v
    );
    assert!(
        matches!(ka[1].v.get("id"), Some(Value::List(l)) if l.len() == 2),
        "list form: {}",
        ka[1].v
    );
    let mut failures = Vec::new();
    for t in &ts[1..] {
        if let Err(d) = peers::compare(condure, t) {
            failures.push(format!(
                "{} differs from condure:\n{d}\n{}",
                t.cm.name(),
                t.dump()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        condure.dump()
    );
}

// ------------------------------------------------------------------------------------------
// WebSocket: a scripted session (handshake with a subprotocol, text, binary, a fragmented
// message each way, ping, unsolicited pong, close). The handler waits for each `credit` the CM
// returns after writing its data, so the packet sequence is deterministic. Client bytes are
// compared per message (data fragments joined: how a CM frames what the handler sent is not
// part of parity).
//
// Condure's transcripts of these cases are recorded in tests/support/ws.condure.txt.

/// Like `parity_case!`, for the WebSocket scripts.
macro_rules! ws_parity_case {
    ($name:ident, $script:expr, $check:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn condure() {
                peers::parity(stringify!($name), $script, &[], $check, Cm::Condure);
            }
            #[test]
            fn zring_uring() {
                peers::parity(stringify!($name), $script, &[], $check, Cm::ZringUring);
            }
            #[test]
            fn zring_epoll() {
                peers::parity(stringify!($name), $script, &[], $check, Cm::ZringEpoll);
            }
        }
    };
}

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn ws_upgrade(host: &str, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.test\r\n{extra}\r\n"
    )
}

fn ws_session(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(ws_upgrade(
            &host,
            "/ws/parity?x=1",
            "Sec-WebSocket-Protocol: chat, superchat\r\nX-Test: 1\r\n",
        ))?;
        c.head()?;
        c.ws_send(true, 1, b"hello ws")?;
        c.ws_message()?;
        c.ws_send(true, 2, b"\x00\x01\x02\xffbin")?;
        c.ws_message()?;
        c.ws_send(false, 1, b"frag1 ")?;
        std::thread::sleep(Duration::from_millis(50));
        c.ws_send(false, 0, b"frag2 ")?;
        std::thread::sleep(Duration::from_millis(50));
        c.ws_send(true, 0, b"frag3")?;
        c.ws_message()?;
        c.ws_send(true, 9, b"pingdata")?;
        c.ws_message()?;
        c.ws_send(true, 10, b"unsolicited")?;
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"client done");
        c.ws_send(true, 8, &close)?;
        c.ws_message()?;
        c.closed_or_open(Duration::from_secs(2))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("code", int(101)),
            ("reason", "Switching Protocols".into()),
            ("headers", hdrs(&[("Sec-WebSocket-Protocol", "chat")])),
            ("credits", int(65536)),
        ],
    );
    // text
    cx.h.expect("router", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("content-type", "text".into()),
            ("body", "hello back".into()),
        ],
    );
    cx.h.expect("router", "credit")?;
    // binary
    cx.h.expect("router", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("content-type", "binary".into()),
            ("body", Value::Str(b"\xff\xfe\x00bin back".to_vec())),
        ],
    );
    cx.h.expect("router", "credit")?;
    // three fragments in; the answer goes out in two
    for _ in 0..3 {
        cx.h.expect("router", "data")?;
    }
    cx.h.reply(
        &p,
        vec![
            ("content-type", "text".into()),
            ("body", "part1 ".into()),
            ("more", true.into()),
        ],
    );
    cx.h.expect("router", "credit")?;
    cx.h.reply(
        &p,
        vec![("content-type", "text".into()), ("body", "part2".into())],
    );
    cx.h.expect("router", "credit")?;
    // ping → pong (the CM does not answer pings itself)
    let ping = cx.h.expect("router", "ping")?;
    let body = ping.v.get("body").cloned().unwrap_or(Value::Str(vec![]));
    cx.h.reply(&p, vec![("type", "pong".into()), ("body", body)]);
    cx.h.expect("router", "credit")?;
    cx.h.expect("router", "pong")?;
    // close → close
    cx.h.expect("router", "close")?;
    cx.h.reply(&p, vec![("type", "close".into()), ("code", int(1000))]);
    cx.join_clients()
}

ws_parity_case!(ws_session, ws_session, |t| {
    kinds(
        t,
        &[
            "pull:data",
            "router:parity-handler:data",
            "router:parity-handler:credit",
            "router:parity-handler:data",
            "router:parity-handler:credit",
            "router:parity-handler:data",
            "router:parity-handler:data",
            "router:parity-handler:data",
            "router:parity-handler:credit",
            "router:parity-handler:credit",
            "router:parity-handler:ping",
            "router:parity-handler:credit",
            "router:parity-handler:pong",
            "router:parity-handler:close",
        ],
    );
    let first = &t.packets[0].v;
    let uri = first.str_of("uri").unwrap_or_default();
    assert!(
        uri.starts_with("ws://127.0.0.1:") && uri.ends_with("/ws/parity?x=1"),
        "{uri}"
    );
    assert_eq!(
        first.get("stream"),
        None,
        "no `stream` on a WebSocket request"
    );
    // Client → handler: type and fragments.
    let p = |i: usize| &t.packets[i].v;
    assert_eq!(p(1).str_of("content-type").as_deref(), Some("text"));
    assert_eq!(p(1).str_of("body").as_deref(), Some("hello ws"));
    assert_eq!(p(3).str_of("content-type").as_deref(), Some("binary"));
    assert_eq!(p(5).get("more"), Some(&Value::Bool(true)));
    assert_eq!(p(6).get("more"), Some(&Value::Bool(true)));
    assert_eq!(p(7).get("more"), None);
    assert_eq!(p(7).str_of("body").as_deref(), Some("frag3"));
    // Credits returned are the body bytes written.
    assert_eq!(p(2).get("credits"), Some(&int(10)));
    assert_eq!(
        p(11).get("credits"),
        Some(&int(8)),
        "pong bytes are credited too"
    );
    assert_eq!(p(13).get("code"), Some(&int(1000)));
    assert_eq!(p(13).str_of("body").as_deref(), Some("client done"));
    // What the client saw.
    let head = t.client_text(0);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("Sec-WebSocket-Protocol: chat\r\n"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    let ev = t.client_events();
    let labels: Vec<&str> = ev.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "head",
            "ws text",
            "ws binary",
            "ws text",
            "ws pong",
            "ws close",
            "closed"
        ]
    );
    assert_eq!(ev[3].1, b"part1 part2");
    assert_eq!(ev[5].1, b"\x03\xe8");
});

/// A 101 without `credits`: the CM assumes its buffer size (Condure's workaround for
/// pushpin-proxy), so client messages flow anyway.
fn ws_zero_credits(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(ws_upgrade(&host, "/ws/nocredits", ""))?;
        c.head()?;
        for m in [&b"one"[..], b"two", b"three"] {
            c.ws_send(true, 1, m)?;
        }
        c.ws_message()?;
        c.ws_send(true, 8, &1000u16.to_be_bytes())?;
        c.ws_message()?;
        c.closed_or_open(Duration::from_secs(2))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("code", int(101)),
            ("reason", "Switching Protocols".into()),
            ("headers", hdrs(&[])),
        ],
    );
    for _ in 0..3 {
        cx.h.expect("router", "data")?;
    }
    cx.h.reply(
        &p,
        vec![("content-type", "text".into()), ("body", "got 3".into())],
    );
    cx.h.expect("router", "credit")?;
    cx.h.expect("router", "close")?;
    cx.h.reply(&p, vec![("type", "close".into()), ("code", int(1000))]);
    cx.join_clients()
}

ws_parity_case!(ws_zero_credits, ws_zero_credits, |t| {
    let bodies: Vec<String> = t.packets[1..4]
        .iter()
        .map(|r| r.v.str_of("body").unwrap_or_default())
        .collect();
    assert_eq!(bodies, ["one", "two", "three"], "{}", t.dump());
    let ev = t.client_events();
    assert_eq!(ev[1], ("ws text".to_string(), b"got 3".to_vec()));
    assert_eq!(ev[2], ("ws close".to_string(), b"\x03\xe8".to_vec()));
});

/// The handler refuses the upgrade with `error`/`rejected`: a plain HTTP response, then the
/// connection closes.
fn ws_rejected(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(ws_upgrade(&host, "/ws/private", ""))?;
        c.response(false)?;
        c.closed_or_open(Duration::from_secs(2))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("type", "error".into()),
            ("condition", "rejected".into()),
            ("code", int(403)),
            ("reason", "Forbidden".into()),
            (
                "headers",
                hdrs(&[("Content-Type", "text/plain"), ("X-Why", "private")]),
            ),
            ("body", "no entry\n".into()),
        ],
    );
    cx.join_clients()
}

ws_parity_case!(ws_rejected, ws_rejected, |t| {
    kinds(t, &["pull:data"]);
    // zring adds `Connection: close` (it closes after the refusal); Condure does not.
    assert_eq!(
        t.client_text(0).replace("Connection: close\r\n", ""),
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Why: private\r\n\
         Content-Length: 9\r\n\r\nno entry\n"
    );
    assert_eq!(t.client_events()[1].0, "closed", "{}", t.dump());
});

/// The client vanishes (TCP closed without a close frame): the CM cancels the session.
fn ws_cancel(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(ws_upgrade(&host, "/ws/vanish", ""))?;
        c.head()?;
        c.ws_send(true, 1, b"last words")?;
        c.ws_message()?;
        c.s.shutdown(std::net::Shutdown::Both).ok();
        Ok(())
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("code", int(101)),
            ("reason", "Switching Protocols".into()),
            ("headers", hdrs(&[])),
            ("credits", int(1000)),
        ],
    );
    cx.h.expect("router", "data")?;
    cx.h.reply(
        &p,
        vec![("content-type", "text".into()), ("body", "heard".into())],
    );
    cx.h.expect("router", "credit")?;
    cx.h.expect("router", "cancel")?;
    cx.join_clients()
}

ws_parity_case!(ws_cancel, ws_cancel, |t| {
    assert_eq!(t.kinds().last().unwrap(), "router:parity-handler:cancel");
});

/// The handler closes first (code and reason); the client answers; the CM passes the
/// client's close to the handler.
fn ws_handler_close(cx: &mut Cx) -> R {
    cx.client(|c| {
        let host = c.host();
        c.send(ws_upgrade(&host, "/ws/closing", ""))?;
        c.head()?;
        let (op, payload) = c.ws_message()?;
        if op != 8 {
            return Err(format!("expected a close frame, got opcode {op}"));
        }
        c.ws_send(true, 8, &payload[..2])?;
        c.closed_or_open(Duration::from_secs(2))
    });
    let p = cx.h.expect("pull", "data")?;
    cx.h.reply(
        &p,
        vec![
            ("code", int(101)),
            ("reason", "Switching Protocols".into()),
            ("headers", hdrs(&[])),
            ("credits", int(1000)),
        ],
    );
    cx.h.reply(
        &p,
        vec![
            ("type", "close".into()),
            ("code", int(4001)),
            ("body", "bye from handler".into()),
        ],
    );
    cx.h.expect("router", "close")?;
    cx.join_clients()
}

ws_parity_case!(ws_handler_close, ws_handler_close, |t| {
    let ev = t.client_events();
    assert_eq!(
        ev[1],
        ("ws close".to_string(), b"\x0f\xa1bye from handler".to_vec())
    );
    assert_eq!(ev[2].0, "closed", "{}", t.dump());
    let close = &t.packets.last().unwrap().v;
    assert_eq!(close.get("code"), Some(&int(4001)), "{}", t.dump());
});
