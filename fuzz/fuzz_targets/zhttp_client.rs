//! Client mode's requester packets (`proto::zhttp_client::decode`) and the outbound URI
//! parser and redirect resolution (`conn::out::Target`), on arbitrary bytes:
//! - a decoded packet's spans lie inside the buffer, limits hold, UTF-8 where promised, and
//!   `user-data` is exactly one encoded tnetstring (it is echoed verbatim);
//! - `Target::parse` of any text gives a host within its limit and a path starting with
//!   `/`; resolving any `Location` against a target gives such a target again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::conn::out::Target;
use zring::proto::tnetstring;
use zring::proto::zhttp_client::{decode, Span};

fn span(buf: &[u8], s: Span) -> &[u8] {
    assert!(s.start <= s.end && s.end as usize <= buf.len());
    s.get(buf)
}

fn check_target(t: &Target) {
    assert!(!t.host.is_empty() && t.host.len() <= zring::conn::out::HOST_BYTES_MAX);
    assert!(t.path.starts_with('/'));
    assert!(t.port > 0);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode(data) {
        for s in [p.from, p.method, p.uri, p.connect_host, p.condition].into_iter().flatten() {
            span(data, s);
        }
        if let Some(from) = p.from {
            assert!(from.len() <= zring::proto::zhttp_client::FROM_BYTES_MAX);
        }
        for (n, v) in &p.headers {
            assert!(std::str::from_utf8(span(data, *n)).is_ok());
            span(data, *v);
        }
        if let Some(u) = p.user_data {
            let raw = span(data, u);
            let (_, used) = tnetstring::parse(raw).expect("user-data is one value");
            assert_eq!(used, raw.len());
        }
    }
    let text = String::from_utf8_lossy(data);
    let (uri, location) = text.split_once('\n').unwrap_or((&text, "/"));
    if let Some(t) = Target::parse(uri) {
        check_target(&t);
        let again = t.uri();
        if again.len() <= zring::conn::out::URI_BYTES_MAX {
            assert_eq!(Target::parse(&again).as_ref(), Some(&t), "uri() round-trips");
        }
        if let Some(next) = t.resolve(location) {
            check_target(&next);
        }
    }
});
