//! Client mode through a real worker on simulated time: requester packets in (as the bridge
//! queues them), DNS answered by the test (as a resolver thread would), outbound connects
//! settled by the test, origin bytes in and out on fake sockets; the replies as the bridge
//! would publish them. Covers the worker's part: slots, the (`from`, `id`) table, resolver
//! answers as events, the batched keep-alive sweep, expiry and shutdown.
use std::net::SocketAddr;
use std::time::Duration;

use super::harness::*;
use crate::bridge::Route;
use crate::config::Config;

const REQUESTER: &str = "proxy_1";

fn client_harness() -> Harness {
    Harness::with_config(Config {
        zserver_stream: vec!["ipc://unused".into()],
        ..config()
    })
}

/// With 4,500 outbound slots the sweep visits 10 neighbouring slots per 100 ms step, so
/// sessions on neighbouring slots share a keep-alive packet (as in production, where a
/// worker's share of `--stream-maxconn` is thousands).
fn client_harness_wide() -> Harness {
    Harness::with_config(Config {
        zserver_stream: vec!["ipc://unused".into()],
        stream_maxconn: 4_500,
        ..config()
    })
}

fn first(id: &str, uri: &str) -> Vec<u8> {
    Reply::default()
        .sent_by(REQUESTER)
        .bytes("method", b"GET")
        .bytes("uri", uri.as_bytes())
        .int("credits", 100_000)
        .packet(&[(id, 0)])
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_get_through_the_worker() {
    // Goal: ack at once, DNS as an event, connect on an outbound slot, the request on the
    // wire, head and body back to the requester on PUB, the origin socket closed after.
    let mut h = client_harness();
    h.requester_send(true, first("r1", "http://origin.test:8080/x"));
    let ack = h.packet();
    assert_eq!(
        (ack.kind.as_str(), ack.from.as_str()),
        ("keep-alive", INSTANCE)
    );
    assert_eq!(ack.ids, [("r1".to_string(), Some(0))]);
    assert!(matches!(&ack.route, Route::Pub(a) if &a[..] == REQUESTER.as_bytes()));
    assert_eq!(
        h.resolve(&[addr("192.0.2.9:8080")]).as_deref(),
        Some("origin.test:8080")
    );
    let (o, a) = h.origin_connect(true);
    assert_eq!(a, addr("192.0.2.9:8080"));
    assert_eq!(
        h.read_text(o),
        "GET /x HTTP/1.1\r\nHost: origin.test:8080\r\n\r\n"
    );
    h.write(o, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let p = h.packets();
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].code, p[0].more), (Some(200), true));
    assert_eq!((p[1].body.as_slice(), p[1].more), (&b"ok"[..], false));
    assert_eq!(p[1].ids, [("r1".to_string(), Some(2))]);
    // A complete HTTP/1.1 response: the connection stays open for the pool.
    assert_eq!(h.ios(o), []);
    // The next request to the same origin takes it: no DNS, no connect.
    h.requester_send(true, first("r2", "http://origin.test:8080/y"));
    assert_eq!(h.packet().kind, "keep-alive");
    assert_eq!(
        h.read_text(o),
        "GET /y HTTP/1.1\r\nHost: origin.test:8080\r\n\r\n"
    );
    assert_eq!(h.connects_pending(), 0);
    h.write(
        o,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    assert_eq!(h.packets().len(), 2);
    // `Connection: close`: not pooled.
    assert_eq!(h.ios(o), [Io::Close]);
    h.drive();
    assert!(h.finished_out());
}

#[test]
fn an_idle_pooled_connection_closes_after_its_idle_time_or_when_the_origin_closes() {
    // Goal: a parked connection is closed by zring after OUT_POOL_IDLE_MS unused; one the
    // origin closes while idle is closed at once and the next request connects afresh.
    let mut h = client_harness();
    for (id, path) in [("r1", "/a"), ("r2", "/b")] {
        h.requester_send(true, first(id, &format!("http://origin.test:8080{path}")));
        h.packet();
        assert_eq!(
            h.resolve(&[addr("192.0.2.9:8080")]).as_deref(),
            Some("origin.test:8080")
        );
        let (o, _) = h.origin_connect(true);
        h.read_text(o);
        h.write(o, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(h.packets().len(), 2);
        assert_eq!(h.ios(o), [], "{path}: parked");
        match id {
            "r1" => {
                h.advance(Duration::from_millis(
                    crate::limits::OUT_POOL_IDLE_MS - 1_000,
                ));
                assert_eq!(h.ios(o), [], "still idle");
                h.advance(Duration::from_millis(2_000));
                assert_eq!(h.ios(o), [Io::Close], "expired");
            }
            _ => {
                h.client_shutdown(o);
                assert_eq!(h.ios(o), [Io::Close], "the origin closed it");
            }
        }
        h.drive();
    }
    assert!(h.finished_out());
}

#[test]
fn refused_connects_try_the_next_address_on_the_same_slot() {
    // Goal: the worker closes the refused socket, then connects the next address once the
    // slot is free; the last refusal is remote-connection-failed and frees the slot.
    let mut h = client_harness();
    h.requester_send(true, first("r1", "http://origin.test/"));
    h.packet();
    h.resolve(&[addr("192.0.2.1:80"), addr("192.0.2.2:80")]);
    let (o1, _) = h.origin_connect(false);
    assert_eq!(h.ios(o1), [Io::Close]);
    let (o2, a2) = h.origin_connect(false);
    assert_eq!(a2, addr("192.0.2.2:80"));
    assert_eq!(h.ios(o2), [Io::Close]);
    let p = h.packet();
    assert_eq!(p.condition.as_deref(), Some("remote-connection-failed"));
    assert_eq!(h.connects_pending(), 0);
    assert!(h.finished_out());
}

#[test]
fn keep_alives_go_batched_then_silent_requesters_expire() {
    // Goal: three sessions of one requester that takes list form get one keep-alive
    // packet with three ids within 45 s; with no requester packet for 60 s each origin
    // connection is closed and nothing more is sent.
    let mut h = client_harness_wide();
    let mut origins = Vec::new();
    for id in ["a", "b", "c"] {
        let p = Reply::default()
            .sent_by(REQUESTER)
            .bytes("method", b"GET")
            .bytes("uri", b"http://192.0.2.5/")
            .int("credits", 10)
            .packet(&[(id, 0)]);
        // ext.multi: the requester takes list-form ids.
        let p = with_multi(p);
        h.requester_send(true, p);
        h.packet();
        origins.push(h.origin_connect(true).0);
    }
    // The sweep visits every slot twice per 45 s; a session zring has been silent to for
    // 22.5 s gets a keep-alive: one list-form packet for the three neighbours each time.
    h.advance(Duration::from_secs(46));
    let ka = h.packets();
    assert!(!ka.is_empty() && ka.len() <= 2, "{ka:?}");
    for (n, k) in ka.iter().enumerate() {
        assert_eq!(k.kind, "keep-alive");
        let mut ids: Vec<(String, Option<u32>)> = k.ids.clone();
        ids.sort();
        let seq = Some(1 + n as u32);
        let want: Vec<(String, Option<u32>)> = ["a", "b", "c"]
            .iter()
            .map(|i| (i.to_string(), seq))
            .collect();
        assert_eq!(ids, want);
    }
    h.advance(Duration::from_secs(15));
    h.packets(); // a keep-alive may fall before the expiry
    h.advance(Duration::from_secs(60));
    h.assert_no_packet();
    for o in origins {
        assert_eq!(h.ios(o), [Io::Close]);
    }
    assert!(h.finished_out());
}

#[test]
fn follow_ups_are_routed_by_from_and_id_and_shutdown_cancels() {
    // Goal: a `credit` from the requester reaches its session (the body held back is
    // sent); a packet with another `from` does not; zring stopping sends `cancel`.
    let mut h = client_harness();
    let p = Reply::default()
        .sent_by(REQUESTER)
        .bytes("method", b"GET")
        .bytes("uri", b"http://192.0.2.5/")
        .packet(&[("r1", 0)]);
    h.requester_send(true, p);
    h.packet();
    let (o, _) = h.origin_connect(true);
    h.write(o, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    let head = h.packet();
    assert_eq!(head.code, Some(200));
    h.assert_no_packet(); // no credits yet
    let wrong = Reply::credit(5)
        .sent_by("someone_else")
        .packet(&[("r1", 1)]);
    h.requester_send(false, wrong);
    h.assert_no_packet();
    h.requester_send(
        false,
        Reply::credit(3).sent_by(REQUESTER).packet(&[("r1", 1)]),
    );
    let p = h.packet();
    assert_eq!((p.body.as_slice(), p.more), (&b"hel"[..], true));
    h.shutdown();
    let p = h.packet();
    assert_eq!(p.kind, "cancel");
    assert_eq!(h.ios(o), [Io::Close]);
}

/// Adds `ext: {multi: true}` to a requester packet (the harness's builder writes flat
/// fields only).
fn with_multi(mut p: Vec<u8>) -> Vec<u8> {
    let at = p.len() - 1; // before the root dict's `}`
    let ext = b"3:ext,15:5:multi,4:true!}";
    p.splice(at..at, ext.iter().copied());
    // Patch the root length: `T<len>:`.
    let colon = p.iter().position(|&b| b == b':').unwrap();
    let len: usize = std::str::from_utf8(&p[1..colon]).unwrap().parse().unwrap();
    let new = format!("{}", len + ext.len());
    p.splice(1..colon, new.bytes());
    p
}
