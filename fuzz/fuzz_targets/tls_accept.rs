//! Fuzz the TLS server session: arbitrary bytes as the client's stream into `Session::feed`,
//! cut into seed-sized chunks with the unconsumed tail kept and passed again (the contract of
//! the unbuffered API). Must never panic; `consumed` never exceeds the input; errors are
//! sticky and come with nothing but records in `out`; no plaintext before a handshake.
//!
//! The certificate and key below are a throwaway self-signed P-256 pair made for this
//! target only (`openssl req -x509 -newkey ec ... -subj /CN=fuzz.test`). They protect
//! nothing and are embedded so the target needs no setup.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rustls::ServerConfig;
use zring::tls::{config, Identities, Session};

const CERT_PEM: &str = "
-----BEGIN CERTIFICATE-----
MIIBkTCCATigAwIBAgIUY/LYBhaTVTbkrapVKA/a/dwkbKYwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJZnV6ei50ZXN0MCAXDTI2MTEyMzE5MzMzMVoYDzIxMjYxMDMw
MTkzMzMxWjAUMRIwEAYDVQQDDAlmdXp6LnRlc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARU6aoMZwZARqxqIvocrr45WvJsNO7tqGpUjBslqdpGNm17HveQvv7b
l43DAm41DEnjWKpTmyfpEhmScV2dFoNWo2YwZDAdBgNVHQ4EFgQUab/Ga+VmcBrY
HMKkbEwCYC02NyowHwYDVR0jBBgwFoAUab/Ga+VmcBrYHMKkbEwCYC02NyowFAYD
VR0RBA0wC4IJZnV6ei50ZXN0MAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0EAwIDRwAw
RAIfBgSTk9vFnMEUFB1mPkVk9kBAF76s7BGm/EJKeHdycAIhAJUzXanYbL/u+5pt
4eCvDO2vbJOY23vAliA/24qMWxka
-----END CERTIFICATE-----
";

const KEY_PEM: &str = "
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQWRAietO/P40j/w4
tTun6P4mz+tuNFf+QmGE4vKS3F2hRANCAARU6aoMZwZARqxqIvocrr45WvJsNO7t
qGpUjBslqdpGNm17HveQvv7bl43DAm41DEnjWKpTmyfpEhmScV2dFoNW
-----END PRIVATE KEY-----
";

fn server_config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("zring-fuzz-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("fuzz.test.crt"), CERT_PEM).unwrap();
            std::fs::write(dir.join("fuzz.test.key"), KEY_PEM).unwrap();
            let provider = config::provider();
            let identities = Identities::new(&dir, provider.clone());
            config::server_config(provider, identities, Some("fuzz.test")).unwrap()
        })
        .clone()
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let chunk = match seed % 4 {
        0 => stream.len().max(1),
        1 => 1,
        _ => usize::from(seed) + 1,
    };
    let mut session = Session::new(server_config());
    let (mut pending, mut plaintext, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed = false;
    for piece in stream.chunks(chunk) {
        pending.extend_from_slice(piece);
        match session.feed(&mut pending, &mut plaintext, &mut out) {
            Ok(fed) => {
                assert!(fed.consumed <= pending.len());
                pending.drain(..fed.consumed);
            }
            Err(e) => {
                assert_eq!(session.feed(&mut [], &mut plaintext, &mut out), Err(e));
                failed = true;
                break;
            }
        }
        // Without the client's keys no application data can be authentic.
        assert!(plaintext.is_empty());
        assert!(session.is_handshaking());
    }
    // Still handshaking (or failed): writing is refused, and looking at the kept tail (which
    // rustls may point into) must not panic.
    if !failed {
        assert!(session.encrypt(&mut pending, b"data", &mut out).is_err());
        assert!(session.close_notify(&mut pending, &mut out).is_err());
    }
});
