//! Fan-out: one list-form packet for several WebSocket sessions, its shared frame, and the
//! credits it earns (held back, returned later: docs/protocols.md).
use std::time::Duration;

use super::harness::*;
use super::ws::open;

/// Credit packets among `packets`, as (id, credits); keep-alives are ignored.
fn credits(packets: Vec<ToHandler>) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for p in packets {
        match p.kind.as_str() {
            "keep-alive" => {}
            "credit" => out.push((p.id().to_owned(), p.credits.unwrap())),
            other => panic!("unexpected {other:?} packet"),
        }
    }
    out
}

#[test]
fn one_shared_frame_and_credits_held_back() {
    // Goal: both targets get the frame from one shared buffer; the credits it earns are
    // held back (not one packet per target per frame) until 10 s have passed.
    let mut h = Harness::new();
    let (c1, mut s1) = open(&mut h, 1000);
    let (c2, mut s2) = open(&mut h, 1000);
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(b"all"));
    for c in [c1, c2] {
        assert_eq!(h.read(c), b"\x81\x03all");
        assert_eq!(h.sends(c), (2, 1), "the 101, then the shared frame");
    }
    h.assert_no_packet();
    h.advance(Duration::from_millis(9_990));
    assert_eq!(credits(h.packets()), []);
    h.advance(Duration::from_millis(30));
    let mut got = credits(h.packets());
    got.sort(); // both fall due in one wheel bucket, in no set order
    assert_eq!(got, [(s1.id.clone(), 3), (s2.id.clone(), 3)]);
}

#[test]
fn credits_come_back_at_once_when_the_budget_runs_low() {
    // Goal: a broadcast that leaves a target's budget below half of `--buffer-size` gets
    // its credits back at once.
    let mut h = Harness::new();
    let (c1, mut s1) = open(&mut h, 1000);
    let (c2, mut s2) = open(&mut h, 1000);
    let body = vec![b'b'; 5000];
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(&body));
    for c in [c1, c2] {
        let got = h.read(c);
        assert_eq!(got[..4], *b"\x81\x7e\x13\x88");
        assert_eq!(got.len(), 4 + 5000);
    }
    let got = credits(h.packets());
    assert_eq!(got, [(s1.id.clone(), 5000), (s2.id.clone(), 5000)]);
}

#[test]
fn a_target_with_a_send_in_flight_gets_a_copy_in_order() {
    // Goal: a slow target keeps order: its second frame is copied behind the first, while
    // the other target takes both frames shared.
    let mut h = Harness::new();
    let (c1, mut s1) = open(&mut h, 1000);
    let (c2, mut s2) = open(&mut h, 1000);
    h.stall(c1, true);
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(b"a"));
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(b"b"));
    assert_eq!(h.read(c2), b"\x81\x01a\x81\x01b");
    assert_eq!(h.read(c1), b"");
    h.stall(c1, false);
    assert_eq!(h.read(c1), b"\x81\x01a\x81\x01b");
    assert_eq!(h.sends(c1), (3, 1));
    assert_eq!(h.sends(c2), (3, 2));
}

#[test]
fn a_list_packet_with_a_wrong_seq_fails_that_session_only() {
    // Goal: the shared path checks seq as the ordinary one does: the target whose seq is
    // wrong gets no frame and its connection ends (shut down: no 502 after a 101); the
    // other target gets the frame.
    let mut h = Harness::new();
    let (c1, mut s1) = open(&mut h, 1000);
    let (c2, mut s2) = open(&mut h, 1000);
    s1.seq += 5;
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(b"x"));
    assert_eq!(h.read(c2), b"\x81\x01x");
    assert_eq!(h.read(c1), b"");
    assert!(h.is_shut_down(c1), "the session with the wrong seq ends");
    assert_eq!(h.sends(c1), (1, 0), "only the 101 went out");
}

#[test]
fn a_list_packet_over_the_budget_closes_with_1011() {
    // Goal: a fan-out frame larger than the handler's budget for a target (our initial
    // credits, --buffer-size) is not sent; that target is failed with 1011 as Condure does.
    let mut h = Harness::new();
    let (c1, mut s1) = open(&mut h, 1000);
    let (c2, mut s2) = open(&mut h, 1000);
    let big = vec![b'a'; 8193];
    h.reply_many(&mut [&mut s1, &mut s2], Reply::data(&big));
    for c in [c1, c2] {
        assert_eq!(h.read(c), b"\x88\x02\x03\xf3", "close 1011");
    }
}
