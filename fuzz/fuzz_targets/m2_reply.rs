//! Arbitrary handler replies: the parser must never panic, its ids must agree with its
//! count and lie inside the message, and an extended body must parse or be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::proto::m2::{parse_extended, parse_reply};

fuzz_target!(|data: &[u8]| {
    let limit = 1 + usize::from(data.first().copied().unwrap_or(0) % 8);
    let Ok(reply) = parse_reply(data, limit) else {
        return;
    };
    assert!(reply.id_count() >= 1 && reply.id_count() <= limit);
    assert_eq!(reply.ids().count(), reply.id_count());
    assert!(reply.uuid.len() + reply.body.len() < data.len());
    if reply.extended {
        let _ = parse_extended(reply.body);
    }
});
