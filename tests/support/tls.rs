//! Test PKI for the TLS tests: a CA and leaf identities in Condure's layout
//! (`<dir>/<name>.crt`, `<dir>/<name>.key`), generated at test time. Nothing here protects
//! anything; the keys live in a temp dir that is removed with it.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use super::proc::guard;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

pub struct Pki {
    pub dir: PathBuf,
    /// The CA's certificate (PEM), what clients trust.
    pub ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = super::net::temp_dir(&format!("pki-{tag}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "zring test CA");
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        let ids = dir.join("ids");
        std::fs::create_dir_all(&ids).unwrap();
        Pki {
            dir,
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// The identities directory (`--tls-identities-dir`).
    pub fn ids(&self) -> PathBuf {
        self.dir.join("ids")
    }

    /// Writes identity `name` (common name `cn`, SANs `hosts`) with a P-256 key, or an RSA
    /// key from `openssl genpkey` when `rsa`. Returns the certificate's SHA-256 (hex).
    pub fn identity(&self, name: &str, cn: &str, hosts: &[&str], rsa: bool) -> String {
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let (pair, key_pem) = if rsa {
            let pem = openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ]);
            let pair = KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
            (pair, pem)
        } else {
            let pair = KeyPair::generate().unwrap();
            let pem = pair.serialize_pem();
            (pair, pem)
        };
        let cert = params.signed_by(&pair, &self.issuer).unwrap();
        let ids = self.ids();
        // Key first, then the certificate, each written whole to a temp name and renamed, as
        // a rotation tool does: zring never sees a half-written file.
        write_atomic(&ids.join(format!("{name}.key")), key_pem.as_bytes());
        write_atomic(&ids.join(format!("{name}.crt")), cert.pem().as_bytes());
        fingerprint(&cert.pem())
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    // A fresh mtime even within the file system's timestamp granularity of the last write.
    let f = std::fs::File::options().write(true).open(&tmp).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(1))
        .unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
}

fn openssl(args: &[&str]) -> String {
    let out = guard(Command::new("openssl").args(args).stderr(Stdio::null()))
        .output()
        .expect("openssl must be installed");
    assert!(out.status.success(), "openssl {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The SHA-256 fingerprint of a PEM certificate (lower-case hex, from `openssl x509`).
pub fn fingerprint(pem: &str) -> String {
    use std::io::Write;
    let mut child = guard(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .spawn()
    .expect("openssl must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let hex = line
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .replace(':', "");
    assert_eq!(hex.len(), 64, "no fingerprint in {line:?}");
    hex.to_ascii_lowercase()
}

/// `openssl s_client` against 127.0.0.1:`port`, stdin closed after `input` (after `wait`).
/// Returns stdout and stderr together.
pub fn s_client(port: u16, args: &[&str], input: &str, wait: Duration) -> String {
    use std::io::Write;
    // Waited for on this thread (bounded), so `guard` suffices: no `Proc` needed.
    let mut child = guard(
        Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .spawn()
    .expect("openssl must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes());
    std::thread::sleep(wait);
    drop(stdin);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The fingerprint of the (first) certificate in `s_client` output.
pub fn served_fingerprint(s_client_output: &str) -> Option<String> {
    let start = s_client_output.find("-----BEGIN CERTIFICATE-----")?;
    let end = s_client_output[start..].find("-----END CERTIFICATE-----")? + start + 25;
    Some(fingerprint(&s_client_output[start..end]))
}
