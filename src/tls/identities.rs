//! Condure's TLS identity layout (condure-zhttp.md §2.4): identity `name` is the pair
//! `<dir>/<name>.crt` (certificate chain, PEM) and `<dir>/<name>.key` (private key, PEM:
//! PKCS#8, traditional RSA or SEC1 EC).
//!
//! Lookup for a ClientHello ([`Resolver`]): the SNI host lower-cased exactly, then the
//! one-level wildcard file named with `_` for the first label (`www.example.com` →
//! `_.example.com`), then the listener's `default-cert`. Nothing found: no certificate, and
//! rustls ends the handshake with a fatal alert.
//!
//! Loaded identities are cached with their files' mtimes in [`Identities`], shared by all
//! listeners on one directory. A cached name's mtimes are checked at most once per
//! [`TLS_IDENTITY_RECHECK_MS`]; a change reloads it (certificate rotation without restart). A
//! file that turns unreadable or invalid keeps the last good key and is logged once per
//! change. Names are checked before any path is built ([`valid_name`]): no `/`, NUL, control
//! characters or leading `.`, at most [`TLS_IDENTITY_NAME_BYTES_MAX`] bytes.
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::limits::{
    TLS_IDENTITIES_CACHED_MAX, TLS_IDENTITY_FILE_BYTES_MAX, TLS_IDENTITY_NAME_BYTES_MAX,
    TLS_IDENTITY_RECHECK_MS,
};
use crate::log;

const MODULE: &str = "tls";

/// Whether `name` may name identity files: 1..=253 bytes, no `/`, `\`, NUL or other control
/// character, not starting with `.` (so neither `..` nor a hidden file, nor a path outside
/// the directory, can be reached from a client's SNI).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TLS_IDENTITY_NAME_BYTES_MAX
        && !name.starts_with('.')
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b'\\' || b.is_ascii_control())
}

/// The one-level wildcard identity for `host`: `www.example.com` → `_.example.com`; `None`
/// for a single label.
pub fn wildcard_name(host: &str) -> Option<String> {
    let (_, rest) = host.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    Some(format!("_.{rest}"))
}

/// The identities of one directory, loaded on demand and cached (bounded). Shared by every
/// worker: one lock, held while a due name is `stat`ed or re-read (at most once a second per
/// name, only inside a handshake), so a worker may wait that long behind another.
pub struct Identities {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    /// Invariant: at most `TLS_IDENTITIES_CACHED_MAX` entries, keys pass `valid_name`.
    cache: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    /// The last good key; `None` while the files have never loaded (then `mtimes` holds the
    /// bad files' mtimes, so they are not re-parsed and re-logged until they change).
    key: Option<Arc<CertifiedKey>>,
    /// (`.crt`, `.key`) mtimes of the files `key` (or the last failure) came from.
    mtimes: (SystemTime, SystemTime),
    checked: Instant,
    /// A failure has been logged since the last change of state.
    failure_logged: bool,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Identities {
    pub fn new(dir: impl Into<PathBuf>, provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(Self {
            dir: dir.into(),
            provider,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key for identity `name` (already lower-cased) as of `now`, loading or reloading
    /// it from disk when due. `None`: invalid name, or no loadable files ever.
    pub fn lookup(&self, name: &str, now: Instant) -> Option<Arc<CertifiedKey>> {
        if !valid_name(name) {
            return None;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let recheck = Duration::from_millis(TLS_IDENTITY_RECHECK_MS);
        if let Some(entry) = cache.get(name) {
            if now.saturating_duration_since(entry.checked) < recheck {
                return entry.key.clone();
            }
        }
        let (crt, key) = self.paths(name);
        let mtimes = match (mtime(&crt), mtime(&key)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                let entry = cache.get_mut(name)?;
                entry.checked = now;
                if !entry.failure_logged {
                    entry.failure_logged = true;
                    log!(
                        log::WARN,
                        MODULE,
                        "identity {name:?}: {e}; keeping the last good certificate"
                    );
                }
                return entry.key.clone();
            }
        };
        if let Some(entry) = cache.get_mut(name) {
            entry.checked = now;
            if entry.mtimes != mtimes {
                entry.mtimes = mtimes;
                self.reload(name, entry);
            }
            return entry.key.clone();
        }
        let entry = self.first_load(name, mtimes, now);
        let key = entry.key.clone();
        if cache.len() >= TLS_IDENTITIES_CACHED_MAX {
            evict_oldest(&mut cache);
        }
        cache.insert(name.to_owned(), entry);
        assert!(cache.len() <= TLS_IDENTITIES_CACHED_MAX);
        key
    }

    /// Re-reads every cached identity now, whatever its files' mtimes say (SIGHUP: a
    /// rotation that kept the mtimes, or one that should not wait for the next check). A
    /// failure keeps the last good key. Returns how many loaded and how many failed.
    pub fn reload_all(&self, now: Instant) -> (usize, usize) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (mut loaded, mut failed) = (0, 0);
        for (name, entry) in cache.iter_mut() {
            let (crt, key) = self.paths(name);
            if let (Ok(c), Ok(k)) = (mtime(&crt), mtime(&key)) {
                entry.mtimes = (c, k);
            }
            entry.checked = now;
            match self.load(name) {
                Ok(key) => {
                    entry.key = Some(key);
                    entry.failure_logged = false;
                    loaded += 1;
                }
                Err(e) => {
                    log!(log::WARN, MODULE, "{e}; keeping the last good certificate");
                    entry.failure_logged = true;
                    failed += 1;
                }
            }
        }
        (loaded, failed)
    }

    /// Re-reads a cached identity whose files changed; a failure keeps the last good key.
    fn reload(&self, name: &str, entry: &mut Entry) {
        match self.load(name) {
            Ok(key) => {
                log!(log::INFO, MODULE, "identity {name:?}: reloaded");
                entry.key = Some(key);
                entry.failure_logged = false;
            }
            Err(e) => {
                log!(log::WARN, MODULE, "{e}; keeping the last good certificate");
                entry.failure_logged = true;
            }
        }
    }

    /// The cache entry for a name seen for the first time; a failure is cached (without a
    /// key) so the same bad files are not parsed and logged again until they change.
    fn first_load(&self, name: &str, mtimes: (SystemTime, SystemTime), now: Instant) -> Entry {
        let loaded = self.load(name);
        if let Err(e) = &loaded {
            log!(log::WARN, MODULE, "{e}");
        }
        Entry {
            failure_logged: loaded.is_err(),
            key: loaded.ok(),
            mtimes,
            checked: now,
        }
    }

    /// Entries cached now (for tests and `--sizes`).
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn paths(&self, name: &str) -> (PathBuf, PathBuf) {
        debug_assert!(valid_name(name));
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// Reads and parses identity `name`; the error is one line naming the file.
    pub fn load(&self, name: &str) -> Result<Arc<CertifiedKey>, String> {
        if !valid_name(name) {
            return Err(format!("identity {name:?}: not a valid identity name"));
        }
        let (crt_path, key_path) = self.paths(name);
        let crt = read_limited(&crt_path)?;
        let key = read_limited(&key_path)?;
        let chain = CertificateDer::pem_slice_iter(&crt)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: bad PEM certificate: {e}", crt_path.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate in it", crt_path.display()));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| format!("{}: no usable private key: {e}", key_path.display()))?;
        let signing = self
            .provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| format!("{}: unsupported private key: {e}", key_path.display()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| {
            format!(
                "{}: key does not match {}: {e}",
                key_path.display(),
                crt_path.display()
            )
        })?;
        Ok(Arc::new(certified))
    }
}

fn evict_oldest(cache: &mut HashMap<String, Entry>) {
    let oldest = cache
        .iter()
        .min_by_key(|(_, e)| e.checked)
        .map(|(name, _)| name.clone());
    if let Some(name) = oldest {
        cache.remove(&name);
    }
}

fn mtime(path: &Path) -> Result<SystemTime, String> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(TLS_IDENTITY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > TLS_IDENTITY_FILE_BYTES_MAX {
        return Err(format!(
            "{}: larger than {TLS_IDENTITY_FILE_BYTES_MAX} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Fails with a one-line error naming the file when a `default-cert` identity is missing,
/// unreadable or invalid. Run at startup for every tls listener's default name.
pub fn check_startup<'a>(
    identities: &Identities,
    default_names: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    for name in default_names {
        identities.load(name).map_err(|e| {
            format!(
                "default-cert {name:?} in {}: {e}",
                identities.dir().display()
            )
        })?;
    }
    Ok(())
}

/// One listener's certificate choice: SNI exact, SNI wildcard, then `default-cert`.
#[derive(Debug)]
pub struct Resolver {
    identities: Arc<Identities>,
    default_name: Option<String>,
}

impl Resolver {
    pub fn new(identities: Arc<Identities>, default_name: Option<&str>) -> Self {
        Self {
            identities,
            default_name: default_name.map(str::to_owned),
        }
    }

    /// The identity for a client that asked for `sni` (`None`: no SNI), as of `now`.
    pub fn resolve_name(&self, sni: Option<&str>, now: Instant) -> Option<Arc<CertifiedKey>> {
        if let Some(host) = sni {
            let host = host.to_ascii_lowercase();
            if let Some(key) = self.identities.lookup(&host, now) {
                return Some(key);
            }
            if let Some(key) = wildcard_name(&host).and_then(|w| self.identities.lookup(&w, now)) {
                return Some(key);
            }
        }
        let default_name = self.default_name.as_deref()?;
        self.identities.lookup(default_name, now)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name();
        crate::tls::session::note_sni(sni);
        let key = self.resolve_name(sni, Instant::now());
        if key.is_none() {
            log!(log::DEBUG, MODULE, "no certificate for server name {sni:?}");
        }
        key
    }
}
