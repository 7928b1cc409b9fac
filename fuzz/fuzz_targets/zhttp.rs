//! Two halves on every input:
//! - decode it as a handler packet (plain and address-prefixed) and check the result's
//!   invariants: spans inside the buffer, limits held, UTF-8 where promised;
//! - cut it into fields at 0xff bytes, encode zring → handler packets from them, and check
//!   that they decode back to the same fields whenever the fields are within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::proto::zhttp::{self, Kind, Packet, RequestHead, Span};

fn check_span(buf: &[u8], span: Span) -> &[u8] {
    assert!(span.start <= span.end && span.end as usize <= buf.len());
    span.get(buf)
}

fn check_packet(buf: &[u8], packet: &Packet) {
    if let Some(from) = packet.from {
        assert!(check_span(buf, from).len() <= zhttp::FROM_BYTES_MAX);
    }
    assert!(!packet.ids.is_empty() && packet.ids.len() <= zhttp::IDS_MAX);
    for (id, _) in packet.ids.iter() {
        assert!(check_span(buf, id).len() <= zhttp::ID_BYTES_MAX);
    }
    for (name, value) in &packet.headers {
        assert!(std::str::from_utf8(check_span(buf, *name)).is_ok());
        check_span(buf, *value);
    }
    for utf8 in [packet.reason, packet.condition].into_iter().flatten() {
        assert!(std::str::from_utf8(check_span(buf, utf8)).is_ok());
    }
    let body = check_span(buf, packet.body);
    if packet.kind == Kind::Close {
        assert!(std::str::from_utf8(body).is_ok());
        assert!(packet.code.is_none_or(|code| code <= u32::from(u16::MAX)));
    }
}

fn ids_of<'a>(buf: &'a [u8], packet: &Packet) -> Vec<(&'a [u8], Option<u32>)> {
    packet
        .ids
        .iter()
        .map(|(id, seq)| (id.get(buf), seq))
        .collect()
}

fn round_trips(data: &[u8]) {
    let mut parts = data.split(|&byte| byte == 0xff);
    let mut next = || parts.next().unwrap_or(b"");
    let (from, id, method, uri, body) = (next(), next(), next(), next(), next());
    let numbers = next();
    let number = |index: usize| numbers.get(index).copied().unwrap_or(0);
    let seq = u32::from(number(0)) * 1000 + u32::from(number(1));
    let credits = u32::from(number(2)) << 8;
    let flags = number(3);
    let rest: Vec<&[u8]> = parts.collect();
    let headers: Vec<(&[u8], &[u8])> = rest
        .chunks_exact(2)
        .map(|pair| (pair[0], pair[1]))
        .collect();

    // Fields the decoder refuses or drops: then only decoding must not panic.
    let ids_ok = id.len() <= zhttp::ID_BYTES_MAX;
    let from_ok = from.len() <= zhttp::FROM_BYTES_MAX;
    let headers_ok = headers.len() <= zhttp::HEADERS_MAX
        && headers
            .iter()
            .all(|(name, _)| std::str::from_utf8(name).is_ok());

    let head = RequestHead {
        from,
        id,
        seq,
        method,
        uri,
        headers: &headers,
        credits,
        stream: flags & 1 != 0,
        more: flags & 2 != 0,
        body,
        peer: (flags & 4 != 0).then_some((uri, seq as u16)),
    };
    let mut out = Vec::new();
    zhttp::encode_request_head(&mut out, &head);
    let decoded = zhttp::decode(&out);
    if ids_ok && from_ok && headers_ok {
        let packet = decoded.expect("request head decodes");
        check_packet(&out, &packet);
        assert_eq!(packet.kind, Kind::Data);
        assert_eq!(
            packet.from.map(|span| span.get(&out)),
            (!from.is_empty()).then_some(from)
        );
        assert_eq!(ids_of(&out, &packet), [(id, Some(seq))]);
        assert_eq!(packet.body.get(&out), body);
        assert_eq!(packet.more, head.more);
        assert_eq!(packet.credits, (credits > 0).then_some(credits));
        let decoded_headers: Vec<(&[u8], &[u8])> = packet
            .headers
            .iter()
            .map(|(name, value)| (name.get(&out), value.get(&out)))
            .collect();
        assert_eq!(decoded_headers, headers);
    } else if let Ok(packet) = decoded {
        check_packet(&out, &packet);
    }

    if !(ids_ok && from_ok) {
        return;
    }
    let kind = zhttp::Kind::ALL[usize::from(flags >> 4) % zhttp::Kind::ALL.len()];
    let mut out = Vec::new();
    zhttp::encode_body(&mut out, from, id, seq, body, flags & 2 != 0);
    let packet = zhttp::decode(&out).expect("body decodes");
    assert_eq!(packet.body.get(&out), body);
    assert_eq!(ids_of(&out, &packet), [(id, Some(seq))]);

    out.clear();
    zhttp::encode_credit(&mut out, from, id, seq, credits);
    let packet = zhttp::decode(&out).expect("credit decodes");
    assert_eq!((packet.kind, packet.credits), (Kind::Credit, Some(credits)));

    out.clear();
    zhttp::encode_control(&mut out, from, id, seq, kind);
    assert_eq!(zhttp::decode(&out).expect("control decodes").kind, kind);

    // A batch of ids cut from the headers' bytes.
    let ids: Vec<(&[u8], u32)> = rest
        .iter()
        .filter(|id| id.len() <= zhttp::ID_BYTES_MAX)
        .enumerate()
        .map(|(index, id)| (*id, index as u32))
        .collect();
    out.clear();
    let written = zhttp::encode_multi(&mut out, from, &ids, kind);
    assert_eq!(written, ids.len().min(zhttp::IDS_MAX));
    if written > 0 {
        let packet = zhttp::decode(&out).expect("batch decodes");
        let expected: Vec<(&[u8], Option<u32>)> = ids[..written]
            .iter()
            .map(|(id, seq)| (*id, Some(*seq)))
            .collect();
        assert_eq!(ids_of(&out, &packet), expected);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = zhttp::decode(data) {
        check_packet(data, &packet);
    }
    if let Ok((address, packet)) = zhttp::decode_addressed(data) {
        assert!(check_span(data, address).len() <= zhttp::ADDRESS_BYTES_MAX);
        check_packet(data, &packet);
    }
    round_trips(data);
});
