//! Arbitrary route patterns and paths: checking and matching never panic, matching stays
//! within the step budget, and a match never claims more bytes than the path has.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::m2config::pattern::{check, match_prefix};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (pattern, path) = rest.split_at(usize::from(first).min(rest.len()));
    if check(pattern).is_err() {
        return;
    }
    if let Some(end) = match_prefix(path, pattern) {
        assert!(end <= path.len());
    }
});
