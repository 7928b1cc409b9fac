//! Content types by file extension, as Mongrel2 picks them (src/mime.c): the longest
//! known extension that ends the lowercased path, found with a suffix search over reversed
//! extensions; the `Dir`'s `default_ctype` otherwise.

use super::tst::Tst;

#[path = "mime_table.rs"]
mod table;
pub use table::DEFAULT_TYPES;

/// Longest extension accepted (`limits.mime_ext_len`, src/mime.c).
pub const EXTENSION_BYTES_MAX: usize = 128;

/// A loaded MIME map.
#[derive(Debug, Clone)]
pub struct MimeMap {
    /// Reversed extensions → type.
    tree: Tst<String>,
}

impl MimeMap {
    /// Mongrel2's defaults with the config's `mimetypes` replacing entries of the same
    /// extension (m2sh deletes the default row before inserting the config's).
    pub fn new(overrides: &[(String, String)]) -> Self {
        let mut tree = Tst::new();
        let defaults = DEFAULT_TYPES
            .iter()
            .filter(|(ext, _)| !overrides.iter().any(|(own, _)| own == ext))
            .map(|&(ext, kind)| (ext, kind));
        let own = overrides
            .iter()
            .map(|(ext, kind)| (ext.as_str(), kind.as_str()));
        for (extension, kind) in defaults.chain(own) {
            // MIME_add_type refuses empty, dotless, overlong and duplicate extensions.
            if extension.len() < 2
                || !extension.starts_with('.')
                || extension.len() >= EXTENSION_BYTES_MAX
                || kind.is_empty()
            {
                continue;
            }
            let reversed: Vec<u8> = extension.bytes().rev().collect();
            let _ = tree.insert(&reversed, kind.to_owned());
        }
        Self { tree }
    }

    /// The type for `path`, or `default`.
    pub fn content_type<'a>(&'a self, path: &[u8], default: &'a str) -> &'a str {
        let mut lowered = [0u8; 512];
        let found = if path.len() <= lowered.len() {
            for (slot, byte) in lowered.iter_mut().zip(path) {
                *slot = byte.to_ascii_lowercase();
            }
            self.tree.search_suffix(&lowered[..path.len()])
        } else {
            self.tree.search_suffix(&path.to_ascii_lowercase())
        };
        found.map_or(default, String::as_str)
    }
}
