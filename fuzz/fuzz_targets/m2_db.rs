//! Arbitrary bytes as the config database `m2sh load` writes (an SQLite file): loading must
//! never panic (a corrupt file, a wrong schema, NULLs, bad values are errors), and whatever
//! loads must route any path as a `.conf` config does. Seeds are databases written by the
//! real m2sh (`scripts/m2-db-seeds.sh`); mutations reach the row values through SQLite's
//! record format.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zring::m2config::{db, route::Router};

/// One file per fuzzing process, rewritten for each input (SQLite reads a path).
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        PathBuf::from(format!("{dir}/zring-fuzz-m2db-{}.sqlite", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).expect("write the database");
    let Ok(config) = db::load(p) else {
        return;
    };
    for server in &config.servers {
        let router = Router::new(&server.hosts, &server.default_host);
        for path in [&b"/"[..], b"/a/b", b"/static/../x", b"/users/42"] {
            let _ = router.resolve(Some(b"localhost"), path);
        }
    }
});
