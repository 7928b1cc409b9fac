//! The outbound exchange driven directly, on simulated time: requester packets and origin
//! bytes in, ZHTTP replies and runtime commands out. No sockets, threads or clocks.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::conn::{Handlers, Pool, Settings};
use crate::metrics::WorkerStats;
use crate::proto::zhttp;

struct T {
    s: Settings,
    now: Instant,
    pool: Pool,
    handlers: Handlers,
    counter: u64,
    stats: WorkerStats,
    out: Vec<Output>,
}

const SLOT: u32 = 7;

impl T {
    fn new(deny: bool) -> T {
        let now = Instant::now();
        T {
            s: Settings {
                instance_id: Addr::try_from(&b"zring"[..]).unwrap(),
                worker: 0,
                buffer_size: 8192,
                body_buffer_size: 100_000,
                req_timeout: Duration::from_secs(30),
                stream_timeout: Duration::from_secs(1800),
                handler_wait: Duration::from_secs(5),
                tls_handshake_timeout: Duration::from_secs(10),
                head_timeout: Duration::from_secs(30),
                keepalive_timeout: Duration::from_secs(60),
                body_timeout: Duration::from_secs(10),
                body_min_bytes: 1024,
                messages_max: 100,
                compression: false,
                deflate: Default::default(),
                epoch: now,
                epoch_unix_ms: 0,
                m2: None,
                access_log: false,
                deny_out_internal: deny,
                ws_out_buffer_size: 8192,
                out_tls: None,
            },
            now,
            pool: Pool::default(),
            handlers: Handlers::default(),
            counter: 0,
            stats: WorkerStats::default(),
            out: Vec::new(),
        }
    }

    fn cx<R>(&mut self, f: impl FnOnce(&mut Ctx) -> R) -> R {
        let mut cx = Ctx {
            now: self.now,
            settings: &self.s,
            slot: SLOT,
            pool: &mut self.pool,
            handlers: &mut self.handlers,
            counter: &mut self.counter,
            stats: &self.stats,
            out: &mut self.out,
        };
        f(&mut cx)
    }

    fn start(&mut self, fields: &str) -> Option<OutConn> {
        let buf = packet(fields);
        let pkt = zc::decode(&buf).unwrap();
        self.cx(|cx| {
            let mut c = OutConn::start(cx, &pkt, &buf, Via::Stream)?;
            if !c.begin(cx, None) {
                return None;
            }
            c.flush(cx);
            Some(c)
        })
    }

    fn run(&mut self, c: &mut OutConn, f: impl FnOnce(&mut OutConn, &mut Ctx)) {
        self.cx(|cx| {
            f(c, cx);
            c.flush(cx);
        })
    }

    fn send(&mut self, c: &mut OutConn, fields: &str, seq: u32) {
        let buf = packet(fields);
        let pkt = zc::decode(&buf).unwrap();
        self.run(c, |c, cx| c.handle_packet(cx, &pkt, &buf, Some(seq)));
    }

    /// Takes the outputs: packets decoded (as a handler would read a reply), and commands.
    fn take(&mut self) -> (Vec<(zhttp::Packet, Vec<u8>)>, Vec<Command>) {
        let mut packets = Vec::new();
        let mut cmds = Vec::new();
        for o in self.out.drain(..) {
            match o {
                Output::Packet(p) => {
                    assert!(matches!(&p.route, Route::Pub(a) if &a[..] == b"req"));
                    packets.push((zhttp::decode(&p.data).unwrap(), p.data));
                }
                Output::Io(c) => cmds.push(c),
                Output::Resolve(q) => {
                    assert_eq!((q.slot, q.host.as_str()), (SLOT, "origin.test"));
                    cmds.push(Command::Close { slot: u32::MAX });
                }
                o => panic!("unexpected {o:?}"),
            }
        }
        (packets, cmds)
    }

    fn advance(&mut self, c: &mut OutConn, d: Duration) {
        self.now += d;
        let due = c.poll_timeout(&self.s).is_some_and(|t| t <= self.now);
        if due {
            self.run(c, |c, cx| c.handle_timeout(cx));
        }
    }
}

/// A requester packet from tnetstring fields given as `key=encoded;…`.
/// Origin bytes in (the runtime's buffer is the exchange's to decrypt in place).
fn recv(c: &mut OutConn, cx: &mut Ctx, data: &[u8]) {
    c.handle_recv(cx, &mut data.to_vec())
}

fn packet(fields: &str) -> Vec<u8> {
    let mut payload = String::new();
    for f in fields.split(';').filter(|f| !f.is_empty()) {
        let (k, v) = f.split_once('=').unwrap();
        payload.push_str(&format!("{}:{},{}", k.len(), k, v));
    }
    format!("T{}:{}}}", payload.len(), payload).into_bytes()
}

fn s(v: &str) -> String {
    format!("{}:{},", v.len(), v)
}

fn first(uri: &str, method: &str, extra: &str) -> String {
    format!(
        "from={};id={};seq=1:0#;method={};uri={};credits=3:100#;{extra}",
        s("req"),
        s("r1"),
        s(method),
        s(uri)
    )
}

fn kind(p: &zhttp::Packet) -> zhttp::Kind {
    p.kind
}

fn sent(cmds: &[Command]) -> String {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send { buf, .. } => Some(String::from_utf8_lossy(buf).into_owned()),
            _ => None,
        })
        .collect()
}

/// Start, resolve to `addr`, connect: returns the request bytes written.
fn connected(t: &mut T, c: &mut OutConn, addr: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    t.run(c, |c, cx| c.handle_resolved(cx, &[addr]));
    let (_, cmds) = t.take();
    assert!(matches!(cmds[..], [Command::Connect { slot: SLOT, addr: a }] if a == addr));
    t.run(c, |c, cx| c.handle_connected(cx, true));
    let (p, cmds) = t.take();
    assert!(p.is_empty());
    sent(&cmds)
}

#[test]
fn get_acks_at_once_then_head_and_body_under_credits() {
    // Goal: the ack (keep-alive, seq 0, from zring) precedes DNS; the head goes alone with
    // more; the body is cut to the requester's 100 credits and resumes on `credit`.
    let mut t = T::new(false);
    let mut c = t
        .start(&first("http://origin.test:8080/a?b", "GET", ""))
        .unwrap();
    let (p, cmds) = t.take();
    assert_eq!(p.len(), 1);
    assert_eq!(kind(&p[0].0), zhttp::Kind::KeepAlive);
    assert_eq!(p[0].0.from.unwrap().get(&p[0].1), b"zring");
    assert_eq!(
        p[0].0.ids,
        zhttp::Ids::One {
            id: p[0].0.ids.iter().next().unwrap().0,
            seq: Some(0)
        }
    );
    assert_eq!(cmds.len(), 1, "a resolve");
    let req = connected(&mut t, &mut c, "192.0.2.1:8080");
    assert_eq!(req, "GET /a?b HTTP/1.1\r\nHost: origin.test:8080\r\n\r\n");
    let body = "x".repeat(250);
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 250\r\nX-A: 1\r\n\r\n{body}");
    t.run(&mut c, |c, cx| recv(c, cx, resp.as_bytes()));
    let (p, cmds) = t.take();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].0.code, Some(200));
    assert!(p[0].0.more);
    assert_eq!(p[0].0.headers.len(), 2, "origin headers verbatim");
    assert_eq!(p[1].0.body.len(), 100);
    assert!(p[1].0.more);
    assert!(cmds.is_empty());
    t.send(
        &mut c,
        "from=5:3:req,;id=2:r1,;type=6:credit,;credits=3:500#",
        1,
    );
    let (p, cmds) = t.take();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.body.len(), 150);
    assert!(!p[0].0.more, "the last body packet ends the response");
    assert!(matches!(cmds[..], [Command::Close { slot: SLOT }]));
    assert!(t.cx(|cx| c.handle_closed(cx)));
}

#[test]
fn chunked_and_eof_bodies_head_204_304_and_1xx() {
    // Goal: every response framing ends the exchange at the right byte.
    for (method, resp, body, more_after_head) in [
        ("GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "abcde", true),
        ("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "", false),
        ("GET", "HTTP/1.1 204 No Content\r\n\r\n", "", false),
        ("GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", "", false),
        ("GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", true),
    ] {
        let mut t = T::new(false);
        let mut c = t.start(&first("http://origin.test/", method, "")).unwrap();
        t.take();
        connected(&mut t, &mut c, "192.0.2.1:80");
        t.run(&mut c, |c, cx| recv(c, cx, resp.as_bytes()));
        let (p, cmds) = t.take();
        assert!(p[0].0.code.is_some(), "{resp}");
        assert_ne!(p[0].0.code, Some(100));
        assert_eq!(p[0].0.more, more_after_head, "{resp}");
        let got: Vec<u8> = p[1..].iter().flat_map(|(q, b)| q.body.get(b).to_vec()).collect();
        assert_eq!(got, body.as_bytes(), "{resp}");
        assert!(!p.last().unwrap().0.more);
        assert!(matches!(cmds[..], [Command::Close { .. }]), "{resp}");
    }
    // Read to EOF.
    let mut t = T::new(false);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    connected(&mut t, &mut c, "192.0.2.1:80");
    t.run(&mut c, |c, cx| recv(c, cx, b"HTTP/1.0 200 OK\r\n\r\nuntil"));
    t.run(&mut c, |c, cx| recv(c, cx, b" close"));
    let (p, cmds) = t.take();
    assert_eq!(p.len(), 3);
    assert!(cmds.is_empty(), "not done before EOF");
    t.run(&mut c, |c, cx| c.handle_eof(cx));
    let (p, cmds) = t.take();
    assert_eq!(p.len(), 1);
    assert!(p[0].0.body.is_empty() && !p[0].0.more);
    assert!(matches!(cmds[..], [Command::Close { .. }]));
}

#[test]
fn post_streams_the_body_chunked_under_granted_credits() {
    // Goal: `more` without Content-Length → chunked; zring grants --buffer-size once the
    // first bytes are written, then what each send wrote; the last packet ends the chunks.
    let mut t = T::new(false);
    let mut c = t
        .start(&first(
            "http://origin.test/p",
            "POST",
            "body=3:abc,;more=4:true!",
        ))
        .unwrap();
    t.take();
    let req = connected(&mut t, &mut c, "192.0.2.1:80");
    assert!(req.ends_with("Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"));
    t.run(&mut c, |c, cx| c.handle_sent(cx, Vec::new()));
    let (p, _) = t.take();
    assert_eq!(p[0].0.kind, zhttp::Kind::Credit);
    assert_eq!(p[0].0.credits, Some(8192));
    t.send(&mut c, "from=5:3:req,;id=2:r1,;body=2:de,", 1);
    let (_, cmds) = t.take();
    assert_eq!(sent(&cmds), "2\r\nde\r\n0\r\n\r\n");
    // Fixed length when the requester says so.
    let mut t = T::new(false);
    let hdr = "headers=26:22:14:Content-Length,1:5,]]";
    let mut c = t
        .start(&first(
            "http://origin.test/p",
            "PUT",
            &format!("body=2:ab,;more=4:true!;{hdr}"),
        ))
        .unwrap();
    t.take();
    let req = connected(&mut t, &mut c, "192.0.2.1:80");
    assert!(req.ends_with("Content-Length: 5\r\n\r\nab"), "{req}");
    // An overrun of the grant fails the exchange.
    t.run(&mut c, |c, cx| c.handle_sent(cx, Vec::new()));
    t.take();
    let big = "y".repeat(9000);
    t.send(
        &mut c,
        &format!("from=5:3:req,;id=2:r1,;body={}", s(&big)),
        1,
    );
    let (p, cmds) = t.take();
    assert_eq!(
        p[0].0.condition.unwrap().get(&p[0].1),
        b"undefined-condition"
    );
    assert!(matches!(cmds[..], [Command::Close { .. }]));
}

#[test]
fn policy_refuses_internal_addresses_resolved_or_literal() {
    // Goal: --deny-out-internal judges every address; mapped IPv6 included; ignore-policies
    // lifts it; one allowed address among denied ones is used.
    let mut t = T::new(true);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    let addrs: Vec<SocketAddr> = ["10.0.0.1:80", "[::ffff:127.0.0.1]:80"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    t.run(&mut c, |c, cx| c.handle_resolved(cx, &addrs));
    let (p, cmds) = t.take();
    assert_eq!(p[0].0.condition.unwrap().get(&p[0].1), b"policy-violation");
    assert!(cmds.is_empty());
    assert!(c.is_released());
    for uri in [
        "http://[::ffff:10.0.0.1]/",
        "http://127.0.0.1:9/",
        "http://0.0.0.0/",
    ] {
        let mut t = T::new(true);
        assert!(t.start(&first(uri, "GET", "")).is_none());
        let (p, cmds) = t.take();
        assert_eq!(p.len(), 2, "ack, then the error");
        assert_eq!(p[1].0.condition.unwrap().get(&p[1].1), b"policy-violation");
        assert!(cmds.is_empty());
    }
    let mut t = T::new(true);
    let c = t.start(&first(
        "http://127.0.0.1:9/",
        "GET",
        "ignore-policies=4:true!",
    ));
    assert!(c.is_some());
    let (_, cmds) = t.take();
    assert!(matches!(cmds[..], [Command::Connect { .. }]));
    // Allowed and denied mixed: the allowed one is tried.
    let mut t = T::new(true);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    let addrs: Vec<SocketAddr> = ["10.0.0.1:80", "192.0.2.7:80"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    t.run(&mut c, |c, cx| c.handle_resolved(cx, &addrs));
    let (_, cmds) = t.take();
    assert!(matches!(cmds[..], [Command::Connect { addr, .. }] if addr == addrs[1]));
}

#[test]
fn dns_failure_refused_connects_and_timeouts_name_their_condition() {
    // Goal: DNS failure → remote-connection-failed (Pushpin fails over); each address is
    // tried in turn; the last refusal → remote-connection-failed; no DNS answer in time
    // → connection-timeout.
    let mut t = T::new(false);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    t.run(&mut c, |c, cx| c.handle_resolved(cx, &[]));
    let (p, _) = t.take();
    assert_eq!(
        p[0].0.condition.unwrap().get(&p[0].1),
        b"remote-connection-failed"
    );
    assert!(c.is_released());

    let mut t = T::new(false);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    let addrs: Vec<SocketAddr> = ["192.0.2.1:80", "192.0.2.2:80"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    t.run(&mut c, |c, cx| c.handle_resolved(cx, &addrs));
    t.take();
    t.run(&mut c, |c, cx| c.handle_connected(cx, false));
    let (_, cmds) = t.take();
    assert!(matches!(cmds[..], [Command::Close { .. }]));
    assert!(
        !t.cx(|cx| c.handle_closed(cx)),
        "the next address, same slot"
    );
    let (_, cmds) = t.take();
    assert!(matches!(cmds[..], [Command::Connect { addr, .. }] if addr == addrs[1]));
    t.run(&mut c, |c, cx| c.handle_connected(cx, false));
    t.take();
    assert!(t.cx(|cx| c.handle_closed(cx)));
    let (p, _) = t.take();
    assert_eq!(
        p[0].0.condition.unwrap().get(&p[0].1),
        b"remote-connection-failed"
    );

    let mut t = T::new(false);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    t.advance(&mut c, Duration::from_millis(limits::DNS_TIMEOUT_MS + 1));
    let (p, _) = t.take();
    assert_eq!(
        p[0].0.condition.unwrap().get(&p[0].1),
        b"connection-timeout"
    );
}

#[test]
fn keep_alives_expiry_cancel_and_seq() {
    // Goal: a keep-alive once zring was silent for half the interval, taking a seq; a
    // requester silent for 60 s loses the session with no
    // reply; `cancel` closes the origin connection with no reply; a wrong seq likewise.
    let mut t = T::new(false);
    let mut c = t
        .start(&first(
            "http://origin.test/",
            "GET",
            "ext=15:5:multi,4:true!}",
        ))
        .unwrap();
    t.take();
    connected(&mut t, &mut c, "192.0.2.1:80");
    assert!(c
        .keep_alive(&t.s, t.now + Duration::from_secs(22))
        .is_none());
    let k = c
        .keep_alive(&t.s, t.now + Duration::from_millis(22_600))
        .unwrap();
    assert_eq!((k.seq, k.multi, &k.id[..]), (1, true, &b"r1"[..]));
    t.advance(&mut c, Duration::from_secs(59));
    assert!(t.take().1.is_empty());
    t.advance(&mut c, Duration::from_millis(1_002));
    let (p, cmds) = t.take();
    assert!(p.is_empty(), "expiry is silent");
    assert!(matches!(cmds[..], [Command::Close { .. }]));

    let mut t = T::new(false);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    connected(&mut t, &mut c, "192.0.2.1:80");
    t.send(&mut c, "from=5:3:req,;id=2:r1,;type=10:keep-alive,", 1);
    assert!(t.take().1.is_empty());
    t.send(&mut c, "from=5:3:req,;id=2:r1,;type=6:cancel,", 2);
    let (p, cmds) = t.take();
    assert!(p.is_empty());
    assert!(matches!(cmds[..], [Command::Close { .. }]));

    let mut t = T::new(false);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    connected(&mut t, &mut c, "192.0.2.1:80");
    t.send(
        &mut c,
        "from=5:3:req,;id=2:r1,;type=6:credit,;credits=1:1#",
        5,
    );
    let (p, cmds) = t.take();
    assert!(p.is_empty());
    assert!(matches!(cmds[..], [Command::Close { .. }]));
}

#[test]
fn redirects_follow_up_to_eight_and_post_becomes_get_on_303() {
    // Goal: a 303 after a POST is followed as a GET without body on the same slot; the
    // ninth hop fails with too-many-redirects; without follow-redirects the 3xx is relayed.
    let mut t = T::new(false);
    let mut c = t
        .start(&first(
            "http://origin.test/a",
            "POST",
            "body=2:hi,;follow-redirects=4:true!",
        ))
        .unwrap();
    t.take();
    connected(&mut t, &mut c, "192.0.2.1:80");
    t.run(&mut c, |c, cx| {
        recv(
            c,
            cx,
            b"HTTP/1.1 303 See Other\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n",
        )
    });
    let (p, cmds) = t.take();
    assert!(p.is_empty());
    assert!(matches!(cmds[..], [Command::Close { .. }]));
    assert!(!t.cx(|cx| c.handle_closed(cx)));
    let (_, cmds) = t.take();
    assert_eq!(cmds.len(), 1, "resolved again");
    let req = connected(&mut t, &mut c, "192.0.2.1:80");
    assert!(req.starts_with("GET /b HTTP/1.1\r\n"), "{req}");
    assert!(!req.contains("Content-Length"), "{req}");
    for hop in 1..=8 {
        t.run(&mut c, |c, cx| {
            recv(c, cx, b"HTTP/1.1 302 Found\r\nLocation: /c\r\n\r\n")
        });
        let (p, _) = t.take();
        if hop == 8 {
            assert_eq!(
                p[0].0.condition.unwrap().get(&p[0].1),
                b"too-many-redirects"
            );
            return;
        }
        assert!(!t.cx(|cx| c.handle_closed(cx)));
        t.take();
        connected(&mut t, &mut c, "192.0.2.1:80");
    }
}

#[test]
fn stream_false_and_max_size_as_zurl() {
    // Goal: `stream: false` gets one packet with the whole body; `max-size` exceeded →
    // max-size-exceeded; `user-data` is echoed in every reply.
    let mut t = T::new(false);
    let ud = "user-data=8:1:k,1:v,}";
    let mut c = t
        .start(&first(
            "http://origin.test/",
            "GET",
            &format!("stream=5:false!;{ud}"),
        ))
        .unwrap();
    let (p, _) = t.take();
    assert!(p[0].1.windows(9).any(|w| w == b"user-data"));
    connected(&mut t, &mut c, "192.0.2.1:80");
    t.run(&mut c, |c, cx| {
        recv(c, cx, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    });
    assert!(t.take().0.is_empty());
    t.run(&mut c, |c, cx| recv(c, cx, b"cd"));
    let (p, _) = t.take();
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].0.code, p[0].0.body.get(&p[0].1)),
        (Some(200), &b"abcd"[..])
    );
    assert!(p[0].1.windows(9).any(|w| w == b"user-data"));

    let mut t = T::new(false);
    let mut c = t
        .start(&first("http://origin.test/", "GET", "max-size=1:3#"))
        .unwrap();
    t.take();
    connected(&mut t, &mut c, "192.0.2.1:80");
    t.run(&mut c, |c, cx| {
        recv(c, cx, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd")
    });
    let (p, _) = t.take();
    let last = p.last().unwrap();
    assert_eq!(last.0.condition.unwrap().get(&last.1), b"max-size-exceeded");
}

/// Connected, the origin answers a 302 to `location` (an internal address): the hop is
/// refused by `--deny-out-internal` with `policy-violation` and no connect.
fn refuses_a_redirect_to(t: &mut T, c: &mut OutConn, location: &str) {
    t.run(c, |c, cx| c.handle_connected(cx, true));
    t.take();
    let resp = format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\n\r\n");
    t.run(c, |c, cx| recv(c, cx, resp.as_bytes()));
    t.take();
    assert!(t.cx(|cx| c.handle_closed(cx)));
    let (p, cmds) = t.take();
    assert_eq!(p[0].0.condition.unwrap().get(&p[0].1), b"policy-violation");
    assert!(cmds.is_empty(), "no connect to the internal hop");
}

#[test]
fn a_redirect_to_an_internal_address_is_refused() {
    // Goal: --deny-out-internal judges every hop: a public origin's 302 to 127.0.0.1 ends
    // in policy-violation, with no connect to it.
    let mut t = T::new(true);
    let mut c = t
        .start(&first(
            "http://192.0.2.1/",
            "GET",
            "follow-redirects=4:true!",
        ))
        .unwrap();
    let (_, cmds) = t.take();
    assert!(matches!(cmds[..], [Command::Connect { .. }]));
    refuses_a_redirect_to(&mut t, &mut c, "http://127.0.0.1:6379/");
}

#[test]
fn the_origin_closing_after_the_body_does_not_cut_what_waits_for_credits() {
    // Goal: regression (found by tests/client_mode.rs on io_uring): a body read whole, then
    // the origin's EOF, while the requester still has to grant credits: the rest is
    // delivered when the credits come, not dropped.
    let mut t = T::new(false);
    let mut c = t.start(&first("http://origin.test/", "GET", "")).unwrap();
    t.take();
    connected(&mut t, &mut c, "192.0.2.1:80");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n{}",
        "z".repeat(300)
    );
    t.run(&mut c, |c, cx| recv(c, cx, resp.as_bytes()));
    t.run(&mut c, |c, cx| c.handle_eof(cx));
    let (p, cmds) = t.take();
    assert_eq!(p.len(), 2, "head, then 100 bytes");
    assert!(cmds.is_empty(), "not closed while 200 bytes wait");
    t.send(
        &mut c,
        "from=5:3:req,;id=2:r1,;type=6:credit,;credits=3:200#",
        1,
    );
    let (p, cmds) = t.take();
    assert_eq!(p[0].0.body.len(), 200);
    assert!(!p[0].0.more);
    assert!(matches!(cmds[..], [Command::Close { .. }]));
}

/// The outbound WebSocket session (`ws::WsOut`) under the same harness.
mod websocket {
    use super::*;
    use crate::proto::ws::{self as wsp, Opcode};

    /// The origin's 101 for the upgrade request `req`.
    fn switching(req: &str) -> Vec<u8> {
        accept_upgrade(req).1.into_bytes()
    }

    fn frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        wsp::encode_frame(&mut f, fin, false, opcode, payload);
        f
    }

    /// The idle state: no write buffer, no decoder, no carried bytes.
    fn assert_idle(c: &OutConn, when: &str) {
        assert_eq!(
            c.sh.out.capacity(),
            0,
            "{when}: the write buffer is back in the pool"
        );
        let OutSession::Ws(w) = &c.session else {
            panic!("a WebSocket session")
        };
        assert_eq!(w.held_bytes(), 0, "{when}: no buffer or decoder held");
    }

    /// Start, connect, answer 101: the open session and the upgrade request it wrote.
    fn open(t: &mut T, extra: &str) -> (OutConn, String) {
        let mut c = t
            .start(&first("ws://origin.test:9000/chat", "GET", extra))
            .unwrap();
        t.take();
        let req = connected(t, &mut c, "192.0.2.7:9000");
        assert!(req.starts_with("GET /chat HTTP/1.1\r\nHost: origin.test:9000\r\n"));
        assert!(req.contains("Upgrade: websocket\r\nConnection: Upgrade\r\n"));
        assert!(req.contains("Sec-WebSocket-Version: 13\r\n"));
        t.run(&mut c, |c, cx| c.handle_sent(cx, Vec::new()));
        t.run(&mut c, |c, cx| recv(c, cx, &switching(&req)));
        let (p, _) = t.take();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0.code, Some(101));
        assert_eq!(
            p[0].0.credits,
            Some(8192),
            "the requester gets --buffer-size"
        );
        (c, req)
    }

    #[test]
    fn upgrade_then_messages_both_ways_and_nothing_held_while_idle() {
        // Goal: after the 101 and after each message either way, an idle session holds no
        // write buffer and no decoder (the 1 KiB goal of an idle outbound WebSocket).
        let mut t = T::new(false);
        let (mut c, _) = open(&mut t, "");
        assert_idle(&c, "after the 101");

        // The origin's text message, in two reads split inside the frame header.
        let f = frame(true, Opcode::Text, b"hello requester");
        t.run(&mut c, |c, cx| recv(c, cx, &f[..1]));
        t.run(&mut c, |c, cx| recv(c, cx, &f[1..]));
        let (p, _) = t.take();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0.body.get(&p[0].1), b"hello requester");
        assert_eq!(p[0].0.content_type, Some(zhttp::ContentType::Text));
        assert_idle(&c, "after the origin's message");

        // The requester's binary message: one masked frame to the origin, then a credit
        // for its bytes once the send completes.
        t.send(
            &mut c,
            "from=5:3:req,;id=2:r1,;content-type=6:binary,;body=3:abc,",
            1,
        );
        let (_, cmds) = t.take();
        let Some(Command::Send { buf, .. }) = cmds.first() else {
            panic!("a send, got {cmds:?}")
        };
        assert_eq!(buf[0], 0x82, "FIN and binary");
        assert_eq!(buf[1], 0x80 | 3, "masked, 3 bytes");
        let mask = [buf[2], buf[3], buf[4], buf[5]];
        let payload: Vec<u8> = buf[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(payload, b"abc");
        let buf = buf.clone();
        t.run(&mut c, |c, cx| c.handle_sent(cx, buf));
        let (p, _) = t.take();
        assert_eq!(p.len(), 1);
        assert_eq!(kind(&p[0].0), zhttp::Kind::Credit);
        assert_eq!(p[0].0.credits, Some(3));
        assert_idle(&c, "after the requester's message");

        // A second origin message, past the 85 credits left of the first packet's 100: what
        // they allow goes, the rest waits in the carry until the requester's credit.
        let f = frame(true, Opcode::Binary, &[7; 300]);
        t.run(&mut c, |c, cx| recv(c, cx, &f));
        let (p, _) = t.take();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0.body.get(&p[0].1), &[7; 85][..]);
        assert!(p[0].0.more);
        let OutSession::Ws(w) = &c.session else {
            unreachable!()
        };
        assert!(w.held_bytes() >= 215, "the rest waits for credits");
        t.send(
            &mut c,
            "from=5:3:req,;id=2:r1,;type=6:credit,;credits=4:1000#",
            2,
        );
        let (p, _) = t.take();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0.body.get(&p[0].1), &[7; 215][..]);
        assert!(!p[0].0.more);
        assert_idle(&c, "after a second origin message");
    }

    #[test]
    fn a_fragmented_origin_message_keeps_its_decoder_until_it_ends() {
        let mut t = T::new(false);
        let (mut c, _) = open(&mut t, "");
        let first_part = frame(false, Opcode::Text, b"par");
        t.run(&mut c, |c, cx| recv(c, cx, &first_part));
        let (p, _) = t.take();
        assert!(
            p.is_empty(),
            "a piece short of the credits waits for the rest (whole pieces)"
        );
        let OutSession::Ws(w) = &c.session else {
            unreachable!()
        };
        assert!(
            w.held_bytes() > 0,
            "mid-message: the decoder and the piece are kept"
        );
        // A ping between the fragments is forwarded as it comes.
        let ping = frame(true, Opcode::Ping, b"p1");
        let last = frame(true, Opcode::Continuation, b"ts");
        t.run(&mut c, |c, cx| recv(c, cx, &[ping, last].concat()));
        let (p, _) = t.take();
        let kinds: Vec<_> = p.iter().map(|(p, _)| kind(p)).collect();
        assert_eq!(kinds, [zhttp::Kind::Ping, zhttp::Kind::Data]);
        assert_eq!(p[1].0.body.get(&p[1].1), b"parts");
        assert!(!p[1].0.more);
        assert_idle(&c, "after the message ended");
    }

    #[test]
    fn origin_close_code_reaches_the_requester_and_is_answered() {
        let mut t = T::new(false);
        let (mut c, _) = open(&mut t, "");
        let payload = wsp::ClosePayload::new(4001, "bye");
        let f = frame(true, Opcode::Close, payload.as_bytes());
        t.run(&mut c, |c, cx| recv(c, cx, &f));
        let (p, _) = t.take();
        assert_eq!(p.len(), 1);
        assert_eq!(kind(&p[0].0), zhttp::Kind::Close);
        assert_eq!(p[0].0.code, Some(4001));
        assert_eq!(p[0].0.body.get(&p[0].1), b"bye");
        // The requester's close goes to the origin as a masked close frame with its code.
        t.send(
            &mut c,
            "from=5:3:req,;id=2:r1,;type=5:close,;code=4:4001#",
            1,
        );
        let (_, cmds) = t.take();
        let Some(Command::Send { buf, .. }) = cmds.first() else {
            panic!("a send, got {cmds:?}")
        };
        assert_eq!(buf[0], 0x88, "FIN and close");
        let mask = [buf[2], buf[3], buf[4], buf[5]];
        let code = [buf[6] ^ mask[0], buf[7] ^ mask[1]];
        assert_eq!(u16::from_be_bytes(code), 4001);
    }

    #[test]
    fn a_masked_frame_from_the_origin_is_a_protocol_error() {
        // RFC 6455 §5.1: a client closes the connection on a masked frame from the server.
        let mut t = T::new(false);
        let (mut c, _) = open(&mut t, "");
        let mut f = Vec::new();
        wsp::encode_masked_frame(&mut f, true, false, Opcode::Text, b"x", [1, 2, 3, 4]);
        t.run(&mut c, |c, cx| recv(c, cx, &f));
        let (p, cmds) = t.take();
        assert_eq!(kind(&p[0].0), zhttp::Kind::Error);
        let Some(Command::Send { buf, .. }) = cmds.first() else {
            panic!("a close frame to the origin, got {cmds:?}")
        };
        let mask = [buf[2], buf[3], buf[4], buf[5]];
        let code = [buf[6] ^ mask[0], buf[7] ^ mask[1]];
        assert_eq!(u16::from_be_bytes(code), 1002);
    }
}

/// The `Sec-WebSocket-Key` of an upgrade request, and a 101 that accepts it.
fn accept_upgrade(req: &str) -> (String, String) {
    let key = req
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .to_string();
    let accept = crate::proto::ws::AcceptKey::from_key(key.as_bytes());
    let accept = String::from_utf8_lossy(accept.as_bytes()).into_owned();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    (key, resp)
}

fn ws_first(uri: &str, extra: &str) -> String {
    format!(
        "from={};id={};seq=1:0#;uri={};credits=3:100#;headers=19:15:6:X-Test,3:yes,]];{extra}",
        s("req"),
        s("r1"),
        s(uri)
    )
}

#[test]
fn an_upgrade_follows_redirects_with_a_fresh_key_up_to_eight() {
    // Goal: with follow-redirects a 3xx to an upgrade is followed (pushpin-connmgr): a
    // relative Location resolved against the ws URI, an absolute ws:// one to another host
    // and port; each hop resolves anew and sends the requester's headers with a new key;
    // the 101 of the last hop is what the requester gets. The ninth redirect →
    // too-many-redirects.
    let mut t = T::new(false);
    let mut c = t
        .start(&ws_first(
            "ws://origin.test/a/b",
            "follow-redirects=4:true!",
        ))
        .unwrap();
    let (p, _) = t.take();
    assert_eq!(kind(&p[0].0), zhttp::Kind::KeepAlive);
    let req = connected(&mut t, &mut c, "192.0.2.1:80");
    assert!(
        req.starts_with("GET /a/b HTTP/1.1\r\nHost: origin.test\r\n"),
        "{req}"
    );
    let (key1, _) = accept_upgrade(&req);
    t.run(&mut c, |c, cx| {
        recv(
            c,
            cx,
            b"HTTP/1.1 302 Found\r\nLocation: c?d=1\r\nContent-Length: 5\r\n\r\nmoved",
        )
    });
    let (p, cmds) = t.take();
    assert!(p.is_empty(), "a followed 3xx is not relayed");
    assert!(matches!(cmds[..], [Command::Close { .. }]));
    assert!(!t.cx(|cx| c.handle_closed(cx)));
    let (_, cmds) = t.take();
    assert_eq!(cmds.len(), 1, "resolved again");
    let req = connected(&mut t, &mut c, "192.0.2.1:80");
    assert!(
        req.starts_with("GET /a/c?d=1 HTTP/1.1\r\nHost: origin.test\r\n"),
        "{req}"
    );
    assert!(
        req.contains("X-Test: yes\r\n"),
        "the requester's headers again: {req}"
    );
    let (key2, _) = accept_upgrade(&req);
    assert_ne!(key1, key2, "a fresh key per hop");
    // An absolute ws:// Location to a literal address: connected without DNS.
    t.run(&mut c, |c, cx| {
        recv(
            c,
            cx,
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://192.0.2.9:8080/e\r\n\r\n",
        )
    });
    t.take();
    assert!(!t.cx(|cx| c.handle_closed(cx)));
    let (_, cmds) = t.take();
    assert!(
        matches!(cmds[..], [Command::Connect { addr, .. }] if addr == "192.0.2.9:8080".parse().unwrap())
    );
    t.run(&mut c, |c, cx| c.handle_connected(cx, true));
    let (_, cmds) = t.take();
    let req = sent(&cmds);
    assert!(
        req.starts_with("GET /e HTTP/1.1\r\nHost: 192.0.2.9:8080\r\n"),
        "{req}"
    );
    let (_, ok) = accept_upgrade(&req);
    t.run(&mut c, |c, cx| recv(c, cx, ok.as_bytes()));
    let (p, _) = t.take();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.code, Some(101));

    // Eight hops are followed; the ninth redirect fails.
    let mut t = T::new(false);
    let mut c = t
        .start(&ws_first("ws://192.0.2.1/", "follow-redirects=4:true!"))
        .unwrap();
    t.take();
    for hop in 0..=8 {
        t.run(&mut c, |c, cx| c.handle_connected(cx, true));
        t.take();
        t.run(&mut c, |c, cx| {
            recv(c, cx, b"HTTP/1.1 301 Moved\r\nLocation: /next\r\n\r\n")
        });
        let (p, _) = t.take();
        if hop == 8 {
            assert_eq!(p.len(), 1);
            assert_eq!(
                p[0].0.condition.unwrap().get(&p[0].1),
                b"too-many-redirects"
            );
            return;
        }
        assert!(p.is_empty(), "hop {hop}");
        assert!(!t.cx(|cx| c.handle_closed(cx)));
        t.take();
    }
    unreachable!();
}

#[test]
fn an_upgrade_redirect_not_followed_is_rejected_and_internal_hops_are_refused() {
    // Goal: without follow-redirects, or to an http:// Location, the 3xx is `rejected`
    // with its code, headers and body; under --deny-out-internal a hop to 127.0.0.1 is
    // policy-violation with no connect to it.
    for (extra, location) in [
        ("", "/x"),
        ("follow-redirects=4:true!", "http://192.0.2.1/x"),
    ] {
        let mut t = T::new(false);
        let mut c = t.start(&ws_first("ws://192.0.2.1/", extra)).unwrap();
        t.take();
        t.run(&mut c, |c, cx| c.handle_connected(cx, true));
        t.take();
        let resp =
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 2\r\n\r\nno");
        t.run(&mut c, |c, cx| recv(c, cx, resp.as_bytes()));
        let (p, _) = t.take();
        assert_eq!(p.len(), 1, "{extra} {location}");
        assert_eq!(p[0].0.condition.unwrap().get(&p[0].1), b"rejected");
        assert_eq!(p[0].0.code, Some(302));
        assert_eq!(p[0].0.body.get(&p[0].1), b"no");
    }

    let mut t = T::new(true);
    let mut c = t
        .start(&ws_first("ws://192.0.2.1/", "follow-redirects=4:true!"))
        .unwrap();
    t.take();
    refuses_a_redirect_to(&mut t, &mut c, "ws://127.0.0.1:6379/");
}

#[test]
fn wss_without_a_tls_configuration_fails_instead_of_going_out_in_plaintext() {
    // Goal: regression: `wss` was judged as plain by the TLS choice, so with no TLS
    // configuration the upgrade (and the requester's headers) would have gone out
    // unencrypted; it must fail with tls-error before any connect, as `https` does.
    let mut t = T::new(false);
    assert!(t.start(&ws_first("wss://192.0.2.1/", "")).is_none());
    let (p, cmds) = t.take();
    assert_eq!(
        p.last()
            .unwrap()
            .0
            .condition
            .unwrap()
            .get(&p.last().unwrap().1),
        b"tls-error"
    );
    assert!(cmds.is_empty(), "no connect");
}
