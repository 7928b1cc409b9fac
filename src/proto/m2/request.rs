//! Requests from Mongrel2 to a handler: `SENDER SP CONN_ID SP PATH SP HEADERS BODY`, one
//! ZeroMQ frame (src/request.c `Request_to_payload`, `Request_to_tnetstring`).
//!
//! `HEADERS` is a netstring holding a JSON object (`protocol='json'`) or a tnetstring dict
//! (`protocol='tnetstring'`); `BODY` is always a netstring. The header set is Mongrel2's
//! request hash: the client's fields with lowercased names (a repeated name becomes a list
//! of at most [`DUPLICATES_MAX`] values), then the keys Mongrel2 sets itself (`x-forwarded-for`,
//! `FLAGS`, the upload keys …) replacing any client field of the same name, all in the
//! hash's scan order ([`super::hash_order`]). The trusted uppercase keys come after them in
//! JSON and before them in a tnetstring, because Mongrel2 renders tnetstrings backwards.
//!
//! The encoder appends to the caller's `Vec<u8>`; per message it allocates nothing beyond
//! growing that buffer.

use std::io::Write as _;

use super::hash_order::{fnv1a, HeaderTable, ScanOrder, CHAINS_INITIAL, KEYS_MAX};
use crate::proto::tnetstring::Writer;

/// Values kept for one repeated header name (`MAX_DUPE_HEADERS`, src/request.c); later
/// repeats are dropped, as Mongrel2 drops them (with a log line).
pub const DUPLICATES_MAX: usize = 5;
/// Default of Mongrel2's `limits.header_count`: once the hash holds this many names, further
/// client fields are dropped (src/request.c `header_field_cb`).
pub const HEADER_COUNT_DEFAULT: usize = 128 * 10;

/// How a handler wants its headers, the `protocol` of its `Handler` (src/handler.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A JSON object in a netstring: Mongrel2's default.
    Json,
    /// A tnetstring dict.
    Tnetstring,
}

/// The `URL_SCHEME` Mongrel2 reports: `https` on a TLS listener, else `http` (also for
/// WebSocket: Mongrel2 never says `ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP.
    Http,
    /// TLS.
    Https,
}

impl Scheme {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Scheme::Http => b"http",
            Scheme::Https => b"https",
        }
    }
}

/// The request-target as Mongrel2's parser splits it (src/http11/http11_parser.rl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// `PATH`: up to the first `?` or `#`. For an absolute-form target the scheme and its
    /// colon are cut off, so `http://h/x` gives `//h/x`, as Mongrel2 reports it.
    pub path: &'a [u8],
    /// `URI`: path and query, without the fragment (and without the scheme, as `path`).
    pub uri: &'a [u8],
    /// `QUERY`: after the first `?`; present and empty for a bare `?`.
    pub query: Option<&'a [u8]>,
    /// `FRAGMENT`: after the first `#`; present and empty for a bare `#`.
    pub fragment: Option<&'a [u8]>,
}

/// Splits a request-target the way Mongrel2 does. Never fails: Mongrel2's stricter URI
/// grammar is the HTTP layer's business.
pub fn split_target(target: &[u8]) -> Target<'_> {
    let rest = &target[scheme_len(target)..];
    let (uri, fragment) = match rest.iter().position(|&byte| byte == b'#') {
        Some(hash) => (&rest[..hash], Some(&rest[hash + 1..])),
        None => (rest, None),
    };
    let (path, query) = match uri.iter().position(|&byte| byte == b'?') {
        Some(question) => (&uri[..question], Some(&uri[question + 1..])),
        None => (uri, None),
    };
    Target {
        path,
        uri,
        query,
        fragment,
    }
}

/// Length of `scheme ":"` at the start of an absolute-form target (RFC 3986 §3.1), else 0.
fn scheme_len(target: &[u8]) -> usize {
    let Some(first) = target.first() else {
        return 0;
    };
    if !first.is_ascii_alphabetic() {
        return 0;
    }
    for (index, &byte) in target.iter().enumerate().skip(1) {
        match byte {
            b':' => return index + 1,
            b'+' | b'-' | b'.' => {}
            _ if byte.is_ascii_alphanumeric() => {}
            _ => return 0,
        }
    }
    0
}

/// The host name Mongrel2 routes on: the `Host` value up to its first colon, unless that
/// colon is the first byte (src/request.c `header_done_cb`). So `[::1]:80` routes as `[`,
/// exactly as Mongrel2 does.
pub fn host_name(host: &[u8]) -> &[u8] {
    match host.iter().position(|&byte| byte == b':') {
        Some(colon) if colon > 0 => &host[..colon],
        _ => host,
    }
}

/// One HTTP request as Mongrel2 describes it to handlers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `METHOD`: the HTTP verb, or `WEBSOCKET_HANDSHAKE` / `WEBSOCKET` for those messages.
    pub method: &'a [u8],
    /// `VERSION`, e.g. `HTTP/1.1`.
    pub version: &'a [u8],
    /// The split request-target ([`split_target`]).
    pub target: Target<'a>,
    /// The client's header fields in arrival order, names in any case.
    pub headers: &'a [httparse::Header<'a>],
    /// `PATTERN`: the route that matched, as written in the config.
    pub pattern: Option<&'a [u8]>,
    /// `URL_SCHEME`.
    pub scheme: Scheme,
    /// `REMOTE_ADDR`: the peer's address as text (`127.0.0.1`, `::1`).
    pub remote_addr: &'a [u8],
    /// Mongrel2's `limits.header_count` ([`HEADER_COUNT_DEFAULT`]).
    pub header_count_max: usize,
}

/// One message to a handler.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The handler's `send_ident`.
    pub sender: &'a [u8],
    /// The connection id handlers see. Written as Mongrel2's `%d` writes it.
    pub conn_id: u32,
    /// The handler's `protocol`.
    pub protocol: Protocol,
    /// The request.
    pub request: &'a Request<'a>,
    /// Keys Mongrel2 sets itself, in the order it sets them, each replacing a client field of
    /// the same name (`Request_set(…, replace=1)`). In order of setting: `x-forwarded-for`
    /// (unless `no_clobber_xff`), `DOWNLOAD_CREDITS` (with `download.flow_control`),
    /// `PEER_CERT_SHA1` (TLS with a client certificate), then per message
    /// `UPLOAD_STREAM`/`UPLOAD_STREAM_DONE`, `x-mongrel2-upload-start`,
    /// `x-mongrel2-upload-done`, or `FLAGS` (see [`ws_flags`]). Keys are case-sensitive.
    pub extra: &'a [(&'a [u8], &'a [u8])],
    /// The body: the request body, the `Sec-WebSocket-Accept` value for a handshake, or a
    /// frame's unmasked payload.
    pub body: &'a [u8],
}

/// Why a message could not be encoded. Nothing is appended to the buffer in that case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// More distinct header names than [`KEYS_MAX`]: zring's HTTP limits keep requests far
    /// below it, so this is a caller misconfiguration; answer 431.
    TooManyHeaders,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too many distinct header names for a Mongrel2 message")
    }
}

impl std::error::Error for EncodeError {}

/// The `FLAGS` value of a WebSocket message: `0x%X` of the first frame byte with FIN set
/// (src/connection.c `Connection_read_wspacket`). For a reassembled message, pass the first
/// fragment's byte. Returns the bytes and their length.
pub fn ws_flags(first_byte: u8) -> ([u8; 4], usize) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let value = first_byte | 0x80;
    let text = [
        b'0',
        b'x',
        HEX[usize::from(value >> 4)],
        HEX[usize::from(value & 0xF)],
    ];
    (text, 4)
}

/// Where one header key's value comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A client field: index of its first occurrence; values are all accepted fields with
    /// the same name (up to `DUPLICATES_MAX`).
    Client { first: u16, count: u8 },
    /// An extra key (index into `Message::extra`), possibly replacing a client field.
    Extra(u16),
}

/// The distinct header keys of one message, in insertion order.
struct Keys {
    sources: [Source; KEYS_MAX],
    hashes: [u32; KEYS_MAX],
    count: usize,
    /// Client fields at and after this index were dropped because the hash was full.
    accepted_fields: usize,
}

impl Keys {
    /// Replays Mongrel2's `header_field_cb` and `Request_set` calls.
    fn collect(message: &Message<'_>) -> Result<Keys, EncodeError> {
        let request = message.request;
        let mut keys = Keys {
            sources: [Source::Extra(0); KEYS_MAX],
            hashes: [0; KEYS_MAX],
            count: 0,
            accepted_fields: request.headers.len(),
        };
        for (index, field) in request.headers.iter().enumerate() {
            // hash_isfull: every later field is dropped, repeats included.
            if keys.count >= request.header_count_max {
                keys.accepted_fields = index;
                break;
            }
            let name = field.name.as_bytes();
            match keys.find_client(request.headers, name) {
                Some(key) => {
                    if let Source::Client { count, .. } = &mut keys.sources[key] {
                        if usize::from(*count) < DUPLICATES_MAX {
                            *count += 1;
                        }
                    }
                }
                None => keys.push(
                    Source::Client {
                        first: index as u16,
                        count: 1,
                    },
                    fnv1a_lowercase(name),
                )?,
            }
        }
        for (index, (name, _)) in message.extra.iter().enumerate() {
            let source = Source::Extra(index as u16);
            match keys.find_exact(request.headers, message.extra, name) {
                Some(key) => keys.sources[key] = source,
                None => keys.push(source, fnv1a(name))?,
            }
        }
        Ok(keys)
    }

    fn push(&mut self, source: Source, hash: u32) -> Result<(), EncodeError> {
        if self.count == KEYS_MAX {
            return Err(EncodeError::TooManyHeaders);
        }
        self.sources[self.count] = source;
        self.hashes[self.count] = hash;
        self.count += 1;
        Ok(())
    }

    /// The key a client field name lowercases to, while only client keys exist.
    fn find_client(&self, headers: &[httparse::Header<'_>], name: &[u8]) -> Option<usize> {
        (0..self.count).find(|&key| match self.sources[key] {
            Source::Client { first, .. } => headers[usize::from(first)]
                .name
                .as_bytes()
                .eq_ignore_ascii_case(name),
            Source::Extra(_) => false,
        })
    }

    /// The key equal to `name` byte for byte (client keys compared in lowercase).
    fn find_exact(
        &self,
        headers: &[httparse::Header<'_>],
        extra: &[(&[u8], &[u8])],
        name: &[u8],
    ) -> Option<usize> {
        (0..self.count).find(|&key| match self.sources[key] {
            Source::Client { first, .. } => {
                lowercase_equals(headers[usize::from(first)].name.as_bytes(), name)
            }
            Source::Extra(index) => extra[usize::from(index)].0 == name,
        })
    }
}

fn fnv1a_lowercase(name: &[u8]) -> u32 {
    let mut hash: u32 = 2_166_136_261;
    for &byte in name {
        hash ^= u32::from(byte.to_ascii_lowercase());
        hash = hash.wrapping_mul(16_777_619);
    }
    hash
}

/// Whether `name` lowercased equals `key` exactly.
fn lowercase_equals(name: &[u8], key: &[u8]) -> bool {
    name.len() == key.len()
        && name
            .iter()
            .zip(key)
            .all(|(left, right)| left.to_ascii_lowercase() == *right)
}

/// A header key with its values, ready to write.
enum Entry<'m> {
    /// Client values: fields `first..accepted` whose name matches, at most `count`.
    Client {
        name: &'m str,
        first: usize,
        count: usize,
    },
    /// One value set by Mongrel2.
    Extra(&'m [u8], &'m [u8]),
}

/// The keys in scan order, as entries.
struct Entries<'k, 'm> {
    keys: &'k Keys,
    order: &'k [u16],
    message: &'k Message<'m>,
}

impl<'m> Entries<'_, 'm> {
    fn entry(&self, position: usize) -> Entry<'m> {
        let key = usize::from(self.order[position]);
        match self.keys.sources[key] {
            Source::Client { first, count } => Entry::Client {
                name: self.message.request.headers[usize::from(first)].name,
                first: usize::from(first),
                count: usize::from(count),
            },
            Source::Extra(index) => {
                let (name, value) = self.message.extra[usize::from(index)];
                Entry::Extra(name, value)
            }
        }
    }

    /// The values of a client entry, in arrival order.
    fn client_values(
        &self,
        name: &'m str,
        first: usize,
        count: usize,
    ) -> impl Iterator<Item = &'m [u8]> + 'm {
        let headers: &'m [httparse::Header<'m>] = self.message.request.headers;
        headers[first..self.keys.accepted_fields]
            .iter()
            .filter(move |field| field.name.eq_ignore_ascii_case(name))
            .take(count)
            .map(|field| field.value)
    }
}

/// Appends one request message to `out`. `table` is the connection's header table; it
/// grows as Mongrel2's would.
pub fn encode_request(
    message: &Message<'_>,
    table: &mut HeaderTable,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let keys = Keys::collect(message)?;
    let scan = ScanOrder::simulate(&keys.hashes[..keys.count], table.start_chains());
    table.grew_to(scan.chains);
    let entries = Entries {
        keys: &keys,
        order: scan.as_slice(),
        message,
    };
    let start = out.len();
    write_prefix(
        out,
        message.sender,
        message.conn_id,
        message.request.target.path,
    );
    match message.protocol {
        Protocol::Json => netstring(out, |out| write_json(out, &entries, true)),
        Protocol::Tnetstring => write_tnetstring(out, &entries, true),
    }
    write_body(out, message.body);
    debug_assert!(out.len() > start);
    Ok(())
}

/// Appends one `upload.stream` chunk message after the first: only the alternate headers
/// (`UPLOAD_STREAM`, and `UPLOAD_STREAM_DONE` on the last chunk), no `PATH` and no trusted
/// keys (src/upload.c `Upload_stream`, `altheaders`). Those keys live in a fresh table, so
/// no connection state is involved.
pub fn encode_stream_chunk(message: &Message<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let request = Request {
        headers: &[],
        ..*message.request
    };
    let bare = Message {
        request: &request,
        ..*message
    };
    let keys = Keys::collect(&bare)?;
    let scan = ScanOrder::simulate(&keys.hashes[..keys.count], CHAINS_INITIAL);
    let entries = Entries {
        keys: &keys,
        order: scan.as_slice(),
        message: &bare,
    };
    write_prefix(out, message.sender, message.conn_id, request.target.path);
    match message.protocol {
        Protocol::Json => netstring(out, |out| write_json(out, &entries, false)),
        Protocol::Tnetstring => write_tnetstring(out, &entries, false),
    }
    write_body(out, message.body);
    Ok(())
}

/// `SENDER SP CONN_ID SP PATH SP`. The id goes through C's `%d`, so ids past `i32::MAX`
/// print negative, as Mongrel2 prints them.
pub(crate) fn write_prefix(out: &mut Vec<u8>, sender: &[u8], conn_id: u32, path: &[u8]) {
    out.extend_from_slice(sender);
    out.push(b' ');
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}", conn_id as i32);
    out.push(b' ');
    out.extend_from_slice(path);
    out.push(b' ');
}

/// `LEN:body,`.
pub(crate) fn write_body(out: &mut Vec<u8>, body: &[u8]) {
    let _ = write!(out, "{}:", body.len());
    out.extend_from_slice(body);
    out.push(b',');
}

/// Appends `LEN:` + what `fill` writes + `,`. Room for three length digits is reserved
/// first; only a payload of another size moves, once.
pub(crate) fn netstring(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    const GUESS_DIGITS: usize = 3;
    let prefix_at = out.len();
    out.extend_from_slice(&[b'0'; GUESS_DIGITS]);
    out.push(b':');
    let payload_at = out.len();
    fill(out);
    let payload_len = out.len() - payload_at;
    let mut digits = [0u8; 20];
    let mut cursor = std::io::Cursor::new(&mut digits[..]);
    let _ = write!(cursor, "{payload_len}");
    let digit_count = cursor.position() as usize;
    out.splice(
        prefix_at..prefix_at + GUESS_DIGITS,
        digits[..digit_count].iter().copied(),
    );
    out.push(b',');
}

/// JSON string content with Mongrel2's escaping: only `\` and `"` get a backslash; control
/// bytes and non-UTF-8 pass through raw (src/request.c `json_escape`).
fn json_escaped(out: &mut Vec<u8>, value: &[u8]) {
    for &byte in value {
        if byte == b'\\' || byte == b'"' {
            out.push(b'\\');
        }
        out.push(byte);
    }
}

/// `,"key":"value"` (without the comma for the first pair).
fn json_pair(out: &mut Vec<u8>, first: &mut bool, key: &[u8], value: &[u8]) {
    json_key(out, first, key);
    out.push(b'"');
    json_escaped(out, value);
    out.push(b'"');
}

/// `,"key":` — keys are written unescaped, as Mongrel2 writes them (header names are tokens).
fn json_key(out: &mut Vec<u8>, first: &mut bool, key: &[u8]) {
    json_open_key(out, first);
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
}

/// `,"` before a key.
fn json_open_key(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
}

fn write_json(out: &mut Vec<u8>, entries: &Entries<'_, '_>, trusted: bool) {
    let request = entries.message.request;
    let mut first = true;
    out.push(b'{');
    if trusted {
        // Mongrel2 writes PATH unescaped; its URI grammar cannot hold `"` or `\`, httparse's
        // can, so zring escapes (identical for every request Mongrel2 accepts).
        json_pair(out, &mut first, b"PATH", request.target.path);
    }
    for position in 0..entries.order.len() {
        match entries.entry(position) {
            Entry::Extra(name, value) => json_pair(out, &mut first, name, value),
            Entry::Client {
                name,
                first: at,
                count,
            } => {
                json_open_key(out, &mut first);
                LowerName(name).write(out);
                if count == 1 {
                    out.extend_from_slice(b"\":\"");
                    if let Some(value) = entries.client_values(name, at, 1).next() {
                        json_escaped(out, value);
                    }
                    out.push(b'"');
                } else {
                    // bjoin with `","` between the escaped values (src/request.c).
                    out.extend_from_slice(b"\":[");
                    for (index, value) in entries.client_values(name, at, count).enumerate() {
                        if index > 0 {
                            out.push(b',');
                        }
                        out.push(b'"');
                        json_escaped(out, value);
                        out.push(b'"');
                    }
                    out.push(b']');
                }
            }
        }
    }
    if trusted {
        write_json_trusted(out, request, &mut first);
    }
    out.push(b'}');
}

/// The uppercase keys after the client's, so a JSON parser that keeps the last duplicate
/// keeps Mongrel2's (src/request.c).
fn write_json_trusted(out: &mut Vec<u8>, request: &Request<'_>, first: &mut bool) {
    json_pair(out, first, b"METHOD", request.method);
    json_pair(out, first, b"VERSION", request.version);
    json_pair(out, first, b"URI", request.target.uri);
    if let Some(query) = request.target.query {
        json_pair(out, first, b"QUERY", query);
    }
    if let Some(fragment) = request.target.fragment {
        json_pair(out, first, b"FRAGMENT", fragment);
    }
    if let Some(pattern) = request.pattern {
        json_pair(out, first, b"PATTERN", pattern);
    }
    json_pair(out, first, b"URL_SCHEME", request.scheme.as_bytes());
    json_pair(out, first, b"REMOTE_ADDR", request.remote_addr);
}

/// A header name written in lowercase without a copy.
struct LowerName<'a>(&'a str);

impl LowerName<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend(self.0.bytes().map(|byte| byte.to_ascii_lowercase()));
    }
}

/// The tnetstring dict, in the order Mongrel2's backwards renderer leaves it: the trusted
/// keys from last set to first, then the headers in reverse scan order.
fn write_tnetstring(out: &mut Vec<u8>, entries: &Entries<'_, '_>, trusted: bool) {
    let request = entries.message.request;
    let mut writer = Writer::new(out);
    writer.begin_dict_sized(512);
    if trusted {
        let pairs: [(&[u8], Option<&[u8]>); 9] = [
            (b"REMOTE_ADDR", Some(request.remote_addr)),
            (b"METHOD", Some(request.method)),
            (b"URL_SCHEME", Some(request.scheme.as_bytes())),
            (b"PATTERN", request.pattern),
            (b"FRAGMENT", request.target.fragment),
            (b"QUERY", request.target.query),
            (b"URI", Some(request.target.uri)),
            (b"VERSION", Some(request.version)),
            (b"PATH", Some(request.target.path)),
        ];
        for (key, value) in pairs {
            if let Some(value) = value {
                writer.bytes(key);
                writer.bytes(value);
            }
        }
    }
    let mut lowered = [0u8; 256];
    for position in (0..entries.order.len()).rev() {
        match entries.entry(position) {
            Entry::Extra(name, value) => {
                writer.bytes(name);
                writer.bytes(value);
            }
            Entry::Client { name, first, count } => {
                write_lowered_key(&mut writer, name, &mut lowered);
                if count == 1 {
                    let value = entries.client_values(name, first, 1).next().unwrap_or(b"");
                    writer.bytes(value);
                } else {
                    writer.begin_list();
                    for value in entries.client_values(name, first, count) {
                        writer.bytes(value);
                    }
                    writer.end_list();
                }
            }
        }
    }
    writer.end_dict();
    writer.finish();
}

/// Writes a lowercased name as a tnetstring byte string, through a stack buffer when it
/// fits (every real header name does).
fn write_lowered_key(writer: &mut Writer<'_>, name: &str, buffer: &mut [u8; 256]) {
    if name.len() <= buffer.len() {
        for (slot, byte) in buffer.iter_mut().zip(name.bytes()) {
            *slot = byte.to_ascii_lowercase();
        }
        writer.bytes(&buffer[..name.len()]);
    } else {
        writer.bytes(name.to_ascii_lowercase().as_bytes());
    }
}
