//! Arbitrary config text: loading must never panic; whatever loads must route any path
//! without panicking, and `Dir` resolution must never climb out of its base.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::m2config::{dir, load, route::Router, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(config) = load("fuzz.conf", data) else {
        return;
    };
    for server in &config.servers {
        let router = Router::new(&server.hosts, &server.default_host);
        for path in [&b"/"[..], b"/a/b", b"/static/../x", b"/js", b"/users/42"] {
            let Some(found) = router.resolve(Some(b"host.example"), path) else {
                continue;
            };
            if let Target::Dir(target) = router.target(&server.hosts, &found) {
                let mut out = Vec::new();
                if dir::resolve(target, b"GET", found.prefix, path, &mut out).is_ok() {
                    assert!(!out.starts_with(b"/"));
                    assert!(!out.split(|&b| b == b'/').any(|segment| segment == b".."));
                }
            }
        }
    }
});
