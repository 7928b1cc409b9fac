//! The fuzz targets' TLS identity: a throwaway self-signed P-256 pair made for fuzzing only
//! (`openssl req -x509 -newkey ec ... -subj /CN=fuzz.test`). It protects nothing and is
//! embedded so the targets need no setup.
use std::sync::{Arc, OnceLock};

use rustls::ServerConfig;
use zring::tls::{config, Identities};

pub const CERT_PEM: &str = "
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

pub fn server_config() -> Arc<ServerConfig> {
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

