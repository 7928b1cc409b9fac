//! ZHTTP packets: `T` followed by a tnetstring dict, as Condure 1.9.1 speaks them in server
//! mode (zring is the initiator; handlers are responders).
//!
//! This layer owns the packet format only: which keys, in which order, with which value
//! types. It knows nothing of sockets, sessions, seq checking or credits accounting.
//!
//! Encoders append one packet to a caller-owned `Vec<u8>` and allocate nothing else. Their
//! output is byte-identical to Condure's: same keys, same key order, same omissions (an empty
//! body, zero credits, a false `more` or `stream` are left out), `ext.multi` on every packet.
//! The unit tests hold packets captured from Condure 1.9.1 as the reference.
//!
//! [`decode`] reads a handler's packet without copying: every byte string in the result is a
//! [`Span`] into the decoded buffer, so a [`Packet`] can be kept next to the buffer it came
//! from and shared by every connection it targets. It validates what Condure validates
//! (`zhttppacket.rs` in fanout/condure 1.9.1), field by field and only for the fields the
//! packet's `type` uses; unknown keys are ignored.

use core::fmt;

use arrayvec::ArrayVec;

use super::tnetstring::{self, Dict, List, Value, Writer};

/// Most ids in one list-form packet, in either direction (Condure's `IDS_MAX`). Incoming
/// packets with more are rejected; [`encode_multi`] writes at most this many.
pub const IDS_MAX: usize = crate::limits::PACKET_IDS_MAX;

/// Most headers in one packet (Condure's `HEADERS_MAX`), defined once in `limits`.
pub use crate::limits::HEADERS_MAX;

/// Longest session id accepted from a handler. Condure keeps handler addresses in 64 bytes
/// and its own ids are far shorter, so a longer id can match no session.
pub const ID_BYTES_MAX: usize = crate::limits::ADDRESS_BYTES_MAX;

/// Longest `from` accepted from a handler: Condure keeps the reply address in 64 bytes and
/// drops the session on a longer one.
pub const FROM_BYTES_MAX: usize = crate::limits::ADDRESS_BYTES_MAX;

/// Longest receiver address before the space in a SUB message (`"<address> T..."`). The
/// address is zring's own instance id, so it is bounded like `from`.
pub const ADDRESS_BYTES_MAX: usize = FROM_BYTES_MAX;

/// Payload size guessed for fixed keys and framing when sizing a root dict: enough that the
/// length prefix of a typical packet needs no second pass (see [`Writer`]).
const ROOT_OVERHEAD_BYTES: usize = 160;

/// A packet's `type`. [`Kind::Data`] is the absence of `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// No `type`: request or response head, body, or WebSocket message.
    Data,
    /// `error`: the sender aborts the session (`condition` says why).
    Error,
    /// `credit`: the sender grants `credits` bytes.
    Credit,
    /// `keep-alive`: the session is still wanted.
    KeepAlive,
    /// `cancel`: the sender abandons the session.
    Cancel,
    /// `handoff-start`: the responder wants to pass the session to another process.
    HandoffStart,
    /// `handoff-proceed`: the initiator's answer to `handoff-start`.
    HandoffProceed,
    /// `close`: WebSocket close frame (`code`, reason in `body`).
    Close,
    /// `ping`: WebSocket ping frame (payload in `body`).
    Ping,
    /// `pong`: WebSocket pong frame (payload in `body`).
    Pong,
}

impl Kind {
    /// Every kind, for tables and tests.
    pub const ALL: [Kind; 10] = [
        Kind::Data,
        Kind::Error,
        Kind::Credit,
        Kind::KeepAlive,
        Kind::Cancel,
        Kind::HandoffStart,
        Kind::HandoffProceed,
        Kind::Close,
        Kind::Ping,
        Kind::Pong,
    ];

    /// The `type` value on the wire. [`Kind::Data`] gives `data`, which is only a name for
    /// logs: data packets carry no `type`.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Kind::Data => b"data",
            Kind::Error => b"error",
            Kind::Credit => b"credit",
            Kind::KeepAlive => b"keep-alive",
            Kind::Cancel => b"cancel",
            Kind::HandoffStart => b"handoff-start",
            Kind::HandoffProceed => b"handoff-proceed",
            Kind::Close => b"close",
            Kind::Ping => b"ping",
            Kind::Pong => b"pong",
        }
    }

    /// Parses a wire `type` value. `data` is not one: Condure rejects `type: data` as an
    /// unknown type, and so does zring.
    pub fn parse(value: &[u8]) -> Option<Kind> {
        match value {
            b"data" => None,
            _ => Kind::ALL.into_iter().find(|kind| kind.as_bytes() == value),
        }
    }
}

/// WebSocket message type of a data packet (`content-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `text`; also what any value other than `binary` means.
    Text,
    /// `binary`.
    Binary,
}

impl ContentType {
    /// The wire value.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            ContentType::Text => b"text",
            ContentType::Binary => b"binary",
        }
    }
}

/// A byte range in the buffer a packet was decoded from. Offsets are `u32`: decoding refuses
/// buffers of 4 GiB or more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// The empty span, standing for an absent byte string.
    pub const EMPTY: Span = Span { start: 0, end: 0 };

    /// The bytes in `buf`, which must be the buffer the span came from. A span that does not
    /// fit `buf` (a different buffer) gives the empty slice rather than a panic.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// True if the span covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id(s) a packet is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ids {
    /// `id` is a string; `seq` is the top-level `seq`, if any.
    One {
        /// The session id.
        id: Span,
        /// The packet's sequence number in that session.
        seq: Option<u32>,
    },
    /// `id` is a list of `{id, seq}` dicts (1 to [`IDS_MAX`] of them). A top-level `seq`
    /// is ignored here.
    Many(Vec<(Span, Option<u32>)>),
}

impl Ids {
    /// The `(id, seq)` pairs in wire order.
    pub fn iter(&self) -> IdsIter<'_> {
        IdsIter {
            ids: self,
            index: 0,
        }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        match self {
            Ids::One { .. } => 1,
            Ids::Many(ids) => ids.len(),
        }
    }

    /// True if there are no ids. Decoded packets always have at least one.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Iterator over `(id, seq)` pairs of an [`Ids`].
#[derive(Clone, Debug)]
pub struct IdsIter<'a> {
    ids: &'a Ids,
    index: usize,
}

impl Iterator for IdsIter<'_> {
    type Item = (Span, Option<u32>);

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.ids {
            Ids::One { id, seq } if self.index == 0 => Some((*id, *seq)),
            Ids::One { .. } => None,
            Ids::Many(ids) => ids.get(self.index).copied(),
        };
        self.index += 1;
        item
    }
}

/// A decoded handler packet. Byte strings are [`Span`]s into the decoded buffer.
///
/// Only the fields Condure reads for the packet's [`Kind`] are filled in; the rest keep
/// their empty values even if the packet had them:
///
/// | kind | fields |
/// |---|---|
/// | `Data` | `code`, `reason`, `headers`, `body`, `more`, `credits`, `content_type` |
/// | `Error` | `condition`, `code`, `reason`, `headers`, `body` (a WebSocket rejection) |
/// | `Credit` | `credits` |
/// | `Close` | `code` (≤ 65535), `body` (the reason, UTF-8) |
/// | `Ping`, `Pong` | `credits`, `body` |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// `from`: the handler's address for later packets. Absent in req mode.
    pub from: Option<Span>,
    /// `id` (and `seq`).
    pub ids: Ids,
    /// `type`.
    pub kind: Kind,
    /// `ext.multi`: the handler accepts list-form ids.
    pub multi: bool,
    /// `code`: HTTP status, or WebSocket close code.
    pub code: Option<u32>,
    /// `reason`: HTTP reason phrase (UTF-8).
    pub reason: Option<Span>,
    /// `headers` as `(name, value)`; names are UTF-8.
    pub headers: ArrayVec<(Span, Span), HEADERS_MAX>,
    /// `body`; [`Span::EMPTY`] if absent.
    pub body: Span,
    /// `more`: more body (or more of this WebSocket message) follows.
    pub more: bool,
    /// `credits` granted to zring.
    pub credits: Option<u32>,
    /// `content-type` of a WebSocket message.
    pub content_type: Option<ContentType>,
    /// `condition` of an error (UTF-8).
    pub condition: Option<Span>,
}

/// A packet field, named in decode errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `from`.
    From,
    /// `id` (either form).
    Id,
    /// `seq`.
    Seq,
    /// `type`.
    Type,
    /// `ext`.
    Ext,
    /// `ext.multi`.
    Multi,
    /// `code`.
    Code,
    /// `reason`.
    Reason,
    /// `headers` or one of its items.
    Headers,
    /// A header name.
    HeaderName,
    /// A header value.
    HeaderValue,
    /// `body`.
    Body,
    /// `more`.
    More,
    /// `credits`.
    Credits,
    /// `content-type`.
    ContentType,
    /// `condition`.
    Condition,
}

/// Why a handler packet was rejected. Condure drops such a packet (or, once it reached a
/// session, the session); the caller decides which, and may count the cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer does not start with `T` (the only format Condure accepts).
    NotTnetstring,
    /// The tnetstring is malformed.
    Tnetstring(tnetstring::Error),
    /// The buffer is 4 GiB or larger, beyond what a [`Span`] can address.
    TooLarge,
    /// The top-level value is not a dict.
    NotDict,
    /// A dict key is not UTF-8.
    BadKey,
    /// A field has the wrong tnetstring type.
    WrongType(Field),
    /// A field that must be UTF-8 is not.
    NotUtf8(Field),
    /// An integer field is negative or too large for its use.
    OutOfRange(Field),
    /// `from` or an id is longer than [`FROM_BYTES_MAX`] / [`ID_BYTES_MAX`].
    TooLong(Field),
    /// There is no `id`, the id list is empty, or one of its entries has no `id`.
    MissingId,
    /// The id list has more than [`IDS_MAX`] entries.
    TooManyIds,
    /// There are more than [`HEADERS_MAX`] headers.
    TooManyHeaders,
    /// A header item has fewer than two elements.
    BadHeader,
    /// `type` is not one Condure knows.
    UnknownType,
    /// A SUB message has no space-terminated address of at most [`ADDRESS_BYTES_MAX`] bytes.
    NoAddress,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotTnetstring => f.write_str("not a tnetstring packet"),
            Error::Tnetstring(error) => write!(f, "tnetstring: {error}"),
            Error::TooLarge => f.write_str("packet too large"),
            Error::NotDict => f.write_str("packet is not a dict"),
            Error::BadKey => f.write_str("dict key is not utf-8"),
            Error::WrongType(field) => write!(f, "{field:?} has the wrong type"),
            Error::NotUtf8(field) => write!(f, "{field:?} is not utf-8"),
            Error::OutOfRange(field) => write!(f, "{field:?} is out of range"),
            Error::TooLong(field) => write!(f, "{field:?} is too long"),
            Error::MissingId => f.write_str("no id"),
            Error::TooManyIds => f.write_str("too many ids"),
            Error::TooManyHeaders => f.write_str("too many headers"),
            Error::BadHeader => f.write_str("header item must have a name and a value"),
            Error::UnknownType => f.write_str("unknown type"),
            Error::NoAddress => f.write_str("no address"),
        }
    }
}

impl std::error::Error for Error {}

impl From<tnetstring::Error> for Error {
    fn from(error: tnetstring::Error) -> Self {
        Error::Tnetstring(error)
    }
}

// ---------------------------------------------------------------------------------------
// Encoding (zring → handler)

/// The first packet of a stream-mode session (HTTP request head or WebSocket handshake),
/// sent on the PUSH socket.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// zring's instance id.
    pub from: &'a [u8],
    /// The session id.
    pub id: &'a [u8],
    /// zring's seq for this session; 0 for a first packet.
    pub seq: u32,
    /// Request method.
    pub method: &'a [u8],
    /// Absolute URI (`http://host/path`, `ws://…`).
    pub uri: &'a [u8],
    /// Request headers in arrival order.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// Bytes the handler may send back (Condure: its buffer size). Omitted when 0.
    pub credits: u32,
    /// HTTP in stream mode: the handler may answer in several packets. Omitted when false
    /// (WebSocket).
    pub stream: bool,
    /// A request body follows in later packets. Omitted when false.
    pub more: bool,
    /// Body bytes carried in this packet; Condure sends none here. Omitted when empty.
    pub body: &'a [u8],
    /// Client IP address (text) and port; `None` for unix-socket clients.
    pub peer: Option<(&'a [u8], u16)>,
}

/// Starts a packet: `T`, then the root dict with room for `size_hint` payload bytes.
fn begin_packet(out: &mut Vec<u8>, size_hint: usize) -> Writer<'_> {
    out.push(b'T');
    let mut writer = Writer::new(out);
    writer.begin_dict_sized(ROOT_OVERHEAD_BYTES + size_hint);
    writer
}

fn end_packet(mut writer: Writer<'_>) {
    writer.end_dict();
    writer.finish();
}

/// `from`, `id`, `seq` and `ext`, which open every packet in this order. Condure leaves out
/// an empty `from` and a missing `seq` (req mode).
fn write_common(writer: &mut Writer<'_>, from: &[u8], id: &[u8], seq: Option<u32>) {
    if !from.is_empty() {
        writer.bytes(b"from");
        writer.bytes(from);
    }
    writer.bytes(b"id");
    writer.bytes(id);
    if let Some(seq) = seq {
        writer.bytes(b"seq");
        writer.int(i64::from(seq));
    }
    write_ext(writer);
}

fn write_ext(writer: &mut Writer<'_>) {
    writer.bytes(b"ext");
    writer.begin_dict();
    writer.bytes(b"multi");
    writer.bool(true);
    writer.end_dict();
}

fn write_type(writer: &mut Writer<'_>, kind: Kind) {
    if kind != Kind::Data {
        writer.bytes(b"type");
        writer.bytes(kind.as_bytes());
    }
}

/// The data fields from `method` on, in Condure's order, each left out when empty.
struct DataFields<'a> {
    method: &'a [u8],
    uri: &'a [u8],
    headers: &'a [(&'a [u8], &'a [u8])],
    content_type: Option<ContentType>,
    body: &'a [u8],
    credits: u32,
    more: bool,
    stream: bool,
    peer: Option<(&'a [u8], u16)>,
}

impl<'a> DataFields<'a> {
    const EMPTY: DataFields<'static> = DataFields {
        method: b"",
        uri: b"",
        headers: &[],
        content_type: None,
        body: b"",
        credits: 0,
        more: false,
        stream: false,
        peer: None,
    };

    fn size_hint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 12)
            .sum();
        let peer = self.peer.map_or(0, |(address, _)| address.len());
        self.method.len() + self.uri.len() + headers + self.body.len() + peer
    }

    fn write(&self, writer: &mut Writer<'_>) {
        if !self.method.is_empty() {
            writer.bytes(b"method");
            writer.bytes(self.method);
        }
        if !self.uri.is_empty() {
            writer.bytes(b"uri");
            writer.bytes(self.uri);
        }
        if !self.headers.is_empty() {
            writer.bytes(b"headers");
            writer.begin_list_sized(self.headers.len() * 40);
            for (name, value) in self.headers {
                writer.begin_list();
                writer.bytes(name);
                writer.bytes(value);
                writer.end_list();
            }
            writer.end_list();
        }
        if let Some(content_type) = self.content_type {
            writer.bytes(b"content-type");
            writer.bytes(content_type.as_bytes());
        }
        if !self.body.is_empty() {
            writer.bytes(b"body");
            writer.bytes(self.body);
        }
        if self.credits > 0 {
            writer.bytes(b"credits");
            writer.int(i64::from(self.credits));
        }
        if self.more {
            writer.bytes(b"more");
            writer.bool(true);
        }
        if self.stream {
            writer.bytes(b"stream");
            writer.bool(true);
        }
        // Condure sends neither half of the peer when the address is empty.
        if let Some((address, port)) = self.peer.filter(|(address, _)| !address.is_empty()) {
            writer.bytes(b"peer-address");
            writer.bytes(address);
            writer.bytes(b"peer-port");
            writer.int(i64::from(port));
        }
    }
}

/// Appends the first packet of a stream-mode session (PUSH socket):
/// `from, id, seq, ext, method, uri, headers, body, credits, more, stream, peer-address,
/// peer-port`, leaving out empty ones as Condure does.
pub fn encode_request_head(out: &mut Vec<u8>, head: &RequestHead<'_>) {
    let fields = DataFields {
        method: head.method,
        uri: head.uri,
        headers: head.headers,
        body: head.body,
        credits: head.credits,
        more: head.more,
        stream: head.stream,
        peer: head.peer,
        ..DataFields::EMPTY
    };
    let mut writer = begin_packet(out, head.from.len() + head.id.len() + fields.size_hint());
    write_common(&mut writer, head.from, head.id, Some(head.seq));
    fields.write(&mut writer);
    end_packet(writer);
}

/// Appends a req-mode request (DEALER socket): `id, ext, method, uri, headers, body,
/// peer-address, peer-port`. Req mode has no `from`, `seq`, `credits`, `more` or `stream`.
pub fn encode_req_request(
    out: &mut Vec<u8>,
    id: &[u8],
    method: &[u8],
    uri: &[u8],
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    peer: Option<(&[u8], u16)>,
) {
    let fields = DataFields {
        method,
        uri,
        headers,
        body,
        peer,
        ..DataFields::EMPTY
    };
    let mut writer = begin_packet(out, id.len() + fields.size_hint());
    write_common(&mut writer, b"", id, None);
    fields.write(&mut writer);
    end_packet(writer);
}

/// Appends a request-body packet (ROUTER socket): `from, id, seq, ext, body, more`. The
/// last one has `more` false, and may have an empty body.
pub fn encode_body(out: &mut Vec<u8>, from: &[u8], id: &[u8], seq: u32, body: &[u8], more: bool) {
    let fields = DataFields {
        body,
        more,
        ..DataFields::EMPTY
    };
    let mut writer = begin_packet(out, from.len() + id.len() + body.len());
    write_common(&mut writer, from, id, Some(seq));
    fields.write(&mut writer);
    end_packet(writer);
}

/// Appends a WebSocket message (or a fragment of one, `more` true on all but the last):
/// `from, id, seq, ext, content-type, body, more`.
pub fn encode_ws_message(
    out: &mut Vec<u8>,
    from: &[u8],
    id: &[u8],
    seq: u32,
    content_type: ContentType,
    body: &[u8],
    more: bool,
) {
    let fields = DataFields {
        content_type: Some(content_type),
        body,
        more,
        ..DataFields::EMPTY
    };
    let mut writer = begin_packet(out, from.len() + id.len() + body.len());
    write_common(&mut writer, from, id, Some(seq));
    fields.write(&mut writer);
    end_packet(writer);
}

/// Appends a credit grant: `from, id, seq, ext, type: credit, credits`.
pub fn encode_credit(out: &mut Vec<u8>, from: &[u8], id: &[u8], seq: u32, credits: u32) {
    let mut writer = begin_packet(out, from.len() + id.len());
    write_common(&mut writer, from, id, Some(seq));
    write_type(&mut writer, Kind::Credit);
    writer.bytes(b"credits");
    writer.int(i64::from(credits));
    end_packet(writer);
}

/// Appends a packet whose only content is its type: `from, id, seq, ext, type`. Meant for
/// `keep-alive`, `cancel`, `handoff-start` and `handoff-proceed`; also gives an empty data
/// packet, a close without code and a ping or pong without payload. For a credit or an
/// error, use [`encode_credit`] or [`encode_error`]: here they would carry no value.
pub fn encode_control(out: &mut Vec<u8>, from: &[u8], id: &[u8], seq: u32, kind: Kind) {
    let mut writer = begin_packet(out, from.len() + id.len());
    write_common(&mut writer, from, id, Some(seq));
    write_type(&mut writer, kind);
    end_packet(writer);
}

/// Appends an error: `from, id, seq, ext, type: error, condition`.
pub fn encode_error(out: &mut Vec<u8>, from: &[u8], id: &[u8], seq: u32, condition: &[u8]) {
    let mut writer = begin_packet(out, from.len() + id.len() + condition.len());
    write_common(&mut writer, from, id, Some(seq));
    write_type(&mut writer, Kind::Error);
    writer.bytes(b"condition");
    writer.bytes(condition);
    end_packet(writer);
}

/// Appends a WebSocket close: `from, id, seq, ext, type: close, code, body`. `status` is
/// the close code and reason; without it (a close frame with no payload) neither is sent,
/// and an empty reason is left out.
pub fn encode_close(
    out: &mut Vec<u8>,
    from: &[u8],
    id: &[u8],
    seq: u32,
    status: Option<(u16, &[u8])>,
) {
    let reason = status.map_or(&[][..], |(_, reason)| reason);
    let mut writer = begin_packet(out, from.len() + id.len() + reason.len());
    write_common(&mut writer, from, id, Some(seq));
    write_type(&mut writer, Kind::Close);
    if let Some((code, reason)) = status {
        writer.bytes(b"code");
        writer.int(i64::from(code));
        if !reason.is_empty() {
            writer.bytes(b"body");
            writer.bytes(reason);
        }
    }
    end_packet(writer);
}

/// Appends a WebSocket ping (`kind` [`Kind::Ping`]) or pong ([`Kind::Pong`]):
/// `from, id, seq, ext, type, body`, the body left out when empty. Condure sends no credits
/// with these.
pub fn encode_ping_pong(
    out: &mut Vec<u8>,
    from: &[u8],
    id: &[u8],
    seq: u32,
    kind: Kind,
    body: &[u8],
) {
    debug_assert!(
        matches!(kind, Kind::Ping | Kind::Pong),
        "not a ping or pong"
    );
    let mut writer = begin_packet(out, from.len() + id.len() + body.len());
    write_common(&mut writer, from, id, Some(seq));
    write_type(&mut writer, kind);
    if !body.is_empty() {
        writer.bytes(b"body");
        writer.bytes(body);
    }
    end_packet(writer);
}

/// Appends one packet of `kind` for several sessions of one handler, as Condure batches its
/// keep-alives and shutdown cancels: `from, id: [{id, seq}, …], ext, type`. Writes the first
/// [`IDS_MAX`] of `ids` and returns how many it wrote; call again with the rest. With one id
/// the packet takes the plain form (`id`, `seq`), as Condure's does; with none, nothing is
/// written.
pub fn encode_multi(out: &mut Vec<u8>, from: &[u8], ids: &[(&[u8], u32)], kind: Kind) -> usize {
    let ids = &ids[..ids.len().min(IDS_MAX)];
    match ids {
        [] => {}
        [(id, seq)] => encode_control(out, from, id, *seq, kind),
        _ => {
            let ids_bytes: usize = ids.iter().map(|(id, _)| id.len() + 24).sum();
            let mut writer = begin_packet(out, from.len() + ids_bytes);
            writer.bytes(b"from");
            writer.bytes(from);
            writer.bytes(b"id");
            writer.begin_list_sized(ids_bytes);
            for (id, seq) in ids {
                writer.begin_dict();
                writer.bytes(b"id");
                writer.bytes(id);
                writer.bytes(b"seq");
                writer.int(i64::from(*seq));
                writer.end_dict();
            }
            writer.end_list();
            write_ext(&mut writer);
            write_type(&mut writer, kind);
            end_packet(writer);
        }
    }
    ids.len()
}

// ---------------------------------------------------------------------------------------
// Decoding (handler → zring)

/// Splits a SUB message `"<address> T..."` into the address and the packet. `None` if there
/// is no space within the first [`ADDRESS_BYTES_MAX`] + 1 bytes.
pub fn split_address(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let window = &msg[..msg.len().min(ADDRESS_BYTES_MAX + 1)];
    let space = window.iter().position(|&byte| byte == b' ')?;
    Some((&msg[..space], &msg[space + 1..]))
}

/// Decodes a handler packet; `buf` starts with `T`. Spans are offsets into `buf`. Bytes after
/// the tnetstring are ignored, as Condure does.
pub fn decode(buf: &[u8]) -> Result<Packet, Error> {
    Decoder::new(buf)?.packet(1)
}

/// Decodes a SUB message `"<address> T..."`. Returns the address and the packet, with spans
/// that are offsets into all of `msg`, so the packet can be kept next to the message.
pub fn decode_addressed(msg: &[u8]) -> Result<(Span, Packet), Error> {
    let (address, _) = split_address(msg).ok_or(Error::NoAddress)?;
    let decoder = Decoder::new(msg)?;
    let packet = decoder.packet(address.len() + 2)?;
    Ok((decoder.span(address), packet))
}

/// The raw values of the keys Condure reads, last occurrence winning as in Condure.
#[derive(Default)]
struct RawFields<'a> {
    from: Option<Value<'a>>,
    id: Option<Value<'a>>,
    seq: Option<Value<'a>>,
    kind: Option<Value<'a>>,
    ext: Option<Value<'a>>,
    code: Option<Value<'a>>,
    reason: Option<Value<'a>>,
    headers: Option<Value<'a>>,
    body: Option<Value<'a>>,
    more: Option<Value<'a>>,
    credits: Option<Value<'a>>,
    content_type: Option<Value<'a>>,
    condition: Option<Value<'a>>,
}

impl<'a> RawFields<'a> {
    fn collect(root: Dict<'a>) -> Result<Self, Error> {
        let mut raw = RawFields::default();
        for (key, value) in root {
            let slot = match key {
                b"from" => &mut raw.from,
                b"id" => &mut raw.id,
                b"seq" => &mut raw.seq,
                b"type" => &mut raw.kind,
                b"ext" => &mut raw.ext,
                b"code" => &mut raw.code,
                b"reason" => &mut raw.reason,
                b"headers" => &mut raw.headers,
                b"body" => &mut raw.body,
                b"more" => &mut raw.more,
                b"credits" => &mut raw.credits,
                b"content-type" => &mut raw.content_type,
                b"condition" => &mut raw.condition,
                _ => {
                    check_key(key)?;
                    continue;
                }
            };
            *slot = Some(value);
        }
        Ok(raw)
    }
}

/// Condure requires dict keys to be UTF-8 strings. Only unknown keys need the check: the
/// known ones are ASCII.
fn check_key(key: &[u8]) -> Result<(), Error> {
    core::str::from_utf8(key)
        .map(|_| ())
        .map_err(|_| Error::BadKey)
}

pub(super) fn bytes_of<'a>(value: Value<'a>, field: Field) -> Result<&'a [u8], Error> {
    value.as_bytes().ok_or(Error::WrongType(field))
}

pub(super) fn utf8_of<'a>(value: Value<'a>, field: Field) -> Result<&'a [u8], Error> {
    let bytes = bytes_of(value, field)?;
    core::str::from_utf8(bytes).map_err(|_| Error::NotUtf8(field))?;
    Ok(bytes)
}

pub(super) fn u32_of(value: Value<'_>, field: Field) -> Result<u32, Error> {
    let int = value.as_int().ok_or(Error::WrongType(field))?;
    u32::try_from(int).map_err(|_| Error::OutOfRange(field))
}

pub(super) fn bool_of(value: Value<'_>, field: Field) -> Result<bool, Error> {
    value.as_bool().ok_or(Error::WrongType(field))
}

/// Decodes one buffer; turns borrowed byte strings into spans of it.
struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn new(buf: &'a [u8]) -> Result<Self, Error> {
        if u32::try_from(buf.len()).is_err() {
            return Err(Error::TooLarge);
        }
        Ok(Decoder { buf })
    }

    /// The span of `part`, which must be a slice of `self.buf`.
    fn span(&self, part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(self.buf.as_ptr() as usize);
        let end = start.wrapping_add(part.len());
        // Offsets fit u32 because `new` bounded the buffer.
        match (u32::try_from(start), u32::try_from(end)) {
            (Ok(start), Ok(end)) if end as usize <= self.buf.len() && start <= end => {
                Span { start, end }
            }
            _ => {
                debug_assert!(false, "span of a slice outside the buffer");
                Span::EMPTY
            }
        }
    }

    fn optional_span(
        &self,
        value: Option<Value<'a>>,
        field: Field,
        utf8: bool,
    ) -> Result<Option<Span>, Error> {
        let Some(value) = value else {
            return Ok(None);
        };
        let bytes = if utf8 {
            utf8_of(value, field)?
        } else {
            bytes_of(value, field)?
        };
        Ok(Some(self.span(bytes)))
    }

    /// Decodes the packet whose `T` is at `offset - 1`.
    fn packet(&self, offset: usize) -> Result<Packet, Error> {
        match self.buf.get(offset.wrapping_sub(1)) {
            Some(b'T') => {}
            _ => return Err(Error::NotTnetstring),
        }
        let body = self.buf.get(offset..).unwrap_or(&[]);
        let (root, _) = tnetstring::parse(body)?;
        let root = root.as_dict().ok_or(Error::NotDict)?;
        let raw = RawFields::collect(root)?;

        let from = self.optional_span(raw.from, Field::From, false)?;
        if from.is_some_and(|from| from.len() > FROM_BYTES_MAX) {
            return Err(Error::TooLong(Field::From));
        }
        let seq = raw.seq.map(|seq| u32_of(seq, Field::Seq)).transpose()?;
        let kind = match raw.kind {
            None => Kind::Data,
            Some(value) => Kind::parse(utf8_of(value, Field::Type)?).ok_or(Error::UnknownType)?,
        };
        let multi = match raw.ext {
            None => false,
            Some(ext) => self.multi(ext)?,
        };
        let ids = self.ids(raw.id, seq)?;
        let mut packet = Packet {
            from,
            ids,
            kind,
            multi,
            code: None,
            reason: None,
            headers: ArrayVec::new(),
            body: Span::EMPTY,
            more: false,
            credits: None,
            content_type: None,
            condition: None,
        };
        self.kind_fields(&raw, &mut packet)?;
        Ok(packet)
    }

    fn multi(&self, ext: Value<'a>) -> Result<bool, Error> {
        let ext = ext.as_dict().ok_or(Error::WrongType(Field::Ext))?;
        let mut multi = false;
        for (key, value) in ext {
            match key {
                b"multi" => multi = bool_of(value, Field::Multi)?,
                _ => check_key(key)?,
            }
        }
        Ok(multi)
    }

    fn ids(&self, id: Option<Value<'a>>, seq: Option<u32>) -> Result<Ids, Error> {
        match id {
            None => Err(Error::MissingId),
            Some(Value::Bytes(id)) => Ok(Ids::One {
                id: self.id_span(id)?,
                seq,
            }),
            Some(Value::List(list)) => self.id_list(list),
            Some(_) => Err(Error::WrongType(Field::Id)),
        }
    }

    fn id_span(&self, id: &[u8]) -> Result<Span, Error> {
        if id.len() > ID_BYTES_MAX {
            return Err(Error::TooLong(Field::Id));
        }
        Ok(self.span(id))
    }

    fn id_list(&self, list: List<'a>) -> Result<Ids, Error> {
        // Count first so the allocation is exact and bounded by IDS_MAX.
        let count = list.iter().take(IDS_MAX + 1).count();
        if count > IDS_MAX {
            return Err(Error::TooManyIds);
        }
        if count == 0 {
            return Err(Error::MissingId);
        }
        let mut ids = Vec::with_capacity(count);
        for entry in list {
            let entry = entry.as_dict().ok_or(Error::WrongType(Field::Id))?;
            let mut id = None;
            let mut seq = None;
            for (key, value) in entry {
                match key {
                    b"id" => id = Some(bytes_of(value, Field::Id)?),
                    b"seq" => seq = Some(u32_of(value, Field::Seq)?),
                    _ => check_key(key)?,
                }
            }
            let id = id.ok_or(Error::MissingId)?;
            ids.push((self.id_span(id)?, seq));
        }
        Ok(Ids::Many(ids))
    }

    /// Reads the fields `packet.kind` uses, as listed on [`Packet`].
    fn kind_fields(&self, raw: &RawFields<'a>, packet: &mut Packet) -> Result<(), Error> {
        let credits = |packet: &mut Packet| -> Result<(), Error> {
            packet.credits = raw
                .credits
                .map(|value| u32_of(value, Field::Credits))
                .transpose()?;
            Ok(())
        };
        match packet.kind {
            Kind::Data | Kind::Error => {
                packet.code = raw
                    .code
                    .map(|value| u32_of(value, Field::Code))
                    .transpose()?;
                packet.reason = self.optional_span(raw.reason, Field::Reason, true)?;
                if let Some(headers) = raw.headers {
                    packet.headers = self.headers(headers)?;
                }
                packet.body = self
                    .optional_span(raw.body, Field::Body, false)?
                    .unwrap_or_default();
                if packet.kind == Kind::Error {
                    packet.condition = self.optional_span(raw.condition, Field::Condition, true)?;
                    return Ok(());
                }
                credits(packet)?;
                packet.more = raw
                    .more
                    .map(|value| bool_of(value, Field::More))
                    .transpose()?
                    .unwrap_or(false);
                if let Some(value) = raw.content_type {
                    packet.content_type = Some(match bytes_of(value, Field::ContentType)? {
                        b"binary" => ContentType::Binary,
                        _ => ContentType::Text,
                    });
                }
            }
            Kind::Credit => credits(packet)?,
            Kind::Close => {
                let code = raw
                    .code
                    .map(|value| u32_of(value, Field::Code))
                    .transpose()?;
                if code.is_some_and(|code| code > u32::from(u16::MAX)) {
                    return Err(Error::OutOfRange(Field::Code));
                }
                packet.code = code;
                packet.body = self
                    .optional_span(raw.body, Field::Body, true)?
                    .unwrap_or_default();
            }
            Kind::Ping | Kind::Pong => {
                credits(packet)?;
                packet.body = self
                    .optional_span(raw.body, Field::Body, false)?
                    .unwrap_or_default();
            }
            Kind::KeepAlive | Kind::Cancel | Kind::HandoffStart | Kind::HandoffProceed => {}
        }
        Ok(())
    }

    fn headers(&self, headers: Value<'a>) -> Result<ArrayVec<(Span, Span), HEADERS_MAX>, Error> {
        let headers = headers.as_list().ok_or(Error::WrongType(Field::Headers))?;
        let mut out = ArrayVec::new();
        for item in headers {
            if out.is_full() {
                return Err(Error::TooManyHeaders);
            }
            let item = item.as_list().ok_or(Error::WrongType(Field::Headers))?;
            // Condure reads the first two elements and ignores any more.
            let mut elements = item.iter();
            let name = elements.next().ok_or(Error::BadHeader)?;
            let value = elements.next().ok_or(Error::BadHeader)?;
            let name = utf8_of(name, Field::HeaderName)?;
            let value = bytes_of(value, Field::HeaderValue)?;
            out.push((self.span(name), self.span(value)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Packets captured from Condure 1.9.1 (`condure --workers 1 --id condure`, stream port
    // 28700, req port 28701) and from the Python handler (`from` = cap-handler) talking to
    // it: curl GET/POST, a 10 kB POST under 4000-byte credits, a streamed response, a client
    // disconnect, a handoff, req mode, a WebSocket echo session, keep-alives after 45 s.
    const HEAD_GET: &str = concat!(
        "T297:4:from,7:condure,2:id,5:0-0-0,3:seq,1:0#3:ext,15:5:multi,4:true!}6:meth",
        "od,3:GET,3:uri,30:http://127.0.0.1:28700/get?x=1,7:headers,82:26:4:Host,15:1",
        "27.0.0.1:28700,]29:10:User-Agent,11:curl/7.88.1,]15:6:Accept,3:*/*,]]7:credi",
        "ts,4:8192#6:stream,4:true!12:peer-address,9:127.0.0.1,9:peer-port,5:37610#}",
    );
    const HEAD_POST: &str = concat!(
        "T393:4:from,7:condure,2:id,5:0-0-2,3:seq,1:0#3:ext,15:5:multi,4:true!}6:meth",
        "od,4:POST,3:uri,27:http://127.0.0.1:28700/post,7:headers,165:26:4:Host,15:12",
        "7.0.0.1:28700,]29:10:User-Agent,11:curl/7.88.1,]15:6:Accept,3:*/*,]22:14:Con",
        "tent-Length,1:7,]53:12:Content-Type,33:application/x-www-form-urlencoded,]]7",
        ":credits,4:8192#4:more,4:true!6:stream,4:true!12:peer-address,9:127.0.0.1,9:",
        "peer-port,5:37612#}",
    );
    const HEAD_WS: &str = concat!(
        "T412:4:from,7:condure,2:id,5:0-0-f,3:seq,1:0#3:ext,15:5:multi,4:true!}6:meth",
        "od,3:GET,3:uri,32:ws://127.0.0.1:28700/ws/echo?x=1,7:headers,210:22:7:Upgrad",
        "e,9:websocket,]26:4:Host,15:127.0.0.1:28700,]35:6:Origin,22:http://127.0.0.1",
        ":28700,]49:17:Sec-WebSocket-Key,24:/C8Reo/ibLbJB/zz/9GYDw==,]30:21:Sec-WebSo",
        "cket-Version,2:13,]24:10:Connection,7:Upgrade,]]7:credits,4:8192#12:peer-add",
        "ress,9:127.0.0.1,9:peer-port,5:37650#}",
    );
    const BODY_LAST: &str = concat!(
        "T82:4:from,7:condure,2:id,5:0-0-2,3:seq,1:1#3:ext,15:5:multi,4:true!}4:body,",
        "7:abc=123,}",
    );
    const BODY_MORE: &str = concat!(
        "T121:4:from,7:condure,2:id,5:0-0-4,3:seq,1:3#3:ext,15:5:multi,4:true!}4:body",
        ",31:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,4:more,4:true!}",
    );
    const CREDIT: &str = concat!(
        "T95:4:from,7:condure,2:id,5:0-0-6,3:seq,1:1#3:ext,15:5:multi,4:true!}4:type,",
        "6:credit,7:credits,1:6#}",
    );
    const CANCEL: &str = concat!(
        "T81:4:from,7:condure,2:id,5:0-0-8,3:seq,1:1#3:ext,15:5:multi,4:true!}4:type,",
        "6:cancel,}",
    );
    const HANDOFF_PROCEED: &str = concat!(
        "T91:4:from,7:condure,2:id,5:0-0-9,3:seq,1:1#3:ext,15:5:multi,4:true!}4:type,",
        "15:handoff-proceed,}",
    );
    const KEEP_ALIVE: &str = concat!(
        "T87:4:from,7:condure,2:id,6:0-0-10,3:seq,1:1#3:ext,15:5:multi,4:true!}4:type",
        ",10:keep-alive,}",
    );
    const KEEP_ALIVE_LIST: &str = concat!(
        "T128:4:from,7:condure,2:id,56:24:2:id,6:0-0-11,3:seq,1:1#}24:2:id,6:0-1-12,3",
        ":seq,1:1#}]3:ext,15:5:multi,4:true!}4:type,10:keep-alive,}",
    );
    const REQ_GET: &str = concat!(
        "T237:2:id,5:0-0-b,3:ext,15:5:multi,4:true!}6:method,3:GET,3:uri,30:http://12",
        "7.0.0.1:28701/reqmode,7:headers,82:26:4:Host,15:127.0.0.1:28701,]29:10:User-",
        "Agent,11:curl/7.88.1,]15:6:Accept,3:*/*,]]12:peer-address,9:127.0.0.1,9:peer",
        "-port,5:43320#}",
    );
    const REQ_POST: &str = concat!(
        "T341:2:id,5:0-0-d,3:ext,15:5:multi,4:true!}6:method,4:POST,3:uri,30:http://1",
        "27.0.0.1:28701/reqpost,7:headers,165:26:4:Host,15:127.0.0.1:28701,]29:10:Use",
        "r-Agent,11:curl/7.88.1,]15:6:Accept,3:*/*,]22:14:Content-Length,1:9,]53:12:C",
        "ontent-Type,33:application/x-www-form-urlencoded,]]4:body,9:hello=req,12:pee",
        "r-address,9:127.0.0.1,9:peer-port,5:43326#}",
    );
    const WS_TEXT: &str = concat!(
        "T106:4:from,7:condure,2:id,5:0-0-f,3:seq,1:1#3:ext,15:5:multi,4:true!}12:con",
        "tent-type,4:text,4:body,8:hello ws,}",
    );
    const WS_BINARY: &str = concat!(
        "T106:4:from,7:condure,2:id,5:0-0-f,3:seq,1:3#3:ext,15:5:multi,4:true!}12:con",
        "tent-type,6:binary,4:body,6:\x00\x01\x02bin,}",
    );
    const WS_PING: &str = concat!(
        "T97:4:from,7:condure,2:id,5:0-0-f,3:seq,1:5#3:ext,15:5:multi,4:true!}4:type,",
        "4:ping,4:body,8:pingdata,}",
    );
    const WS_CLOSE: &str = concat!(
        "T116:4:from,7:condure,2:id,5:0-0-f,3:seq,1:7#3:ext,15:5:multi,4:true!}4:type",
        ",5:close,4:code,4:1000#4:body,11:client done,}",
    );
    const REPLY_OK: &str = concat!(
        "condure T136:4:from,11:cap-handler,2:id,5:0-0-0,3:seq,1:0#4:code,3:200#6:rea",
        "son,2:OK,7:headers,34:30:12:Content-Type,10:text/plain,]]4:body,6:hello\n,}",
    );
    const REPLY_CREDIT: &str = concat!(
        "condure T79:4:from,11:cap-handler,2:id,5:0-0-2,3:seq,1:0#4:type,6:credit,7:c",
        "redits,5:65536#}",
    );
    const REPLY_STREAM_HEAD: &str = concat!(
        "condure T150:4:from,11:cap-handler,2:id,5:0-0-6,3:seq,1:0#4:code,3:200#6:rea",
        "son,2:OK,7:headers,34:30:12:Content-Type,10:text/plain,]]4:body,6:part1\n,4:",
        "more,4:true!}",
    );
    const REPLY_STREAM_MORE: &str = concat!(
        "condure T75:4:from,11:cap-handler,2:id,5:0-0-6,3:seq,1:1#4:body,6:part2\n,4:",
        "more,4:true!}",
    );
    const REPLY_STREAM_LAST: &str =
        "condure T61:4:from,11:cap-handler,2:id,5:0-0-6,3:seq,1:2#4:body,6:part3\n,}";
    const REPLY_KEEP_ALIVE: &str = concat!(
        "condure T66:4:from,11:cap-handler,2:id,5:0-0-8,3:seq,1:0#4:type,10:keep-aliv",
        "e,}",
    );
    const REPLY_HANDOFF_START: &str = concat!(
        "condure T69:4:from,11:cap-handler,2:id,5:0-0-9,3:seq,1:0#4:type,13:handoff-s",
        "tart,}",
    );
    const REPLY_WS_ACCEPT: &str = concat!(
        "condure T121:4:from,11:cap-handler,2:id,5:0-0-f,3:seq,1:0#4:code,3:101#6:rea",
        "son,19:Switching Protocols,7:headers,0:]7:credits,5:16384#}",
    );
    const REPLY_WS_BINARY: &str = concat!(
        "condure T86:4:from,11:cap-handler,2:id,5:0-0-f,3:seq,1:3#12:content-type,6:b",
        "inary,4:body,6:\x00\x01\x02bin,}",
    );
    const REPLY_PONG: &str = concat!(
        "condure T77:4:from,11:cap-handler,2:id,5:0-0-f,3:seq,1:5#4:type,4:pong,4:bod",
        "y,8:pingdata,}",
    );
    const REPLY_CLOSE: &str = concat!(
        "condure T74:4:from,11:cap-handler,2:id,5:0-0-f,3:seq,1:6#4:type,5:close,4:co",
        "de,4:1000#}",
    );
    const REQ_REPLY: &str = concat!(
        "T115:2:id,5:0-0-b,4:code,3:200#6:reason,2:OK,7:headers,34:30:12:Content-Type",
        ",10:text/plain,]]4:body,16:req got 0 bytes\n,}",
    );

    /// Condure's batched keep-alive from `docs/condure-zhttp.md` §5.4, another capture.
    const KEEP_ALIVE_LIST_DOC: &str = concat!(
        "T126:4:from,7:condure,2:id,54:23:2:id,5:0-0-6,3:seq,1:3#}23:2:id,5:0-1-7,3:seq,1:3#}",
        "]3:ext,15:5:multi,4:true!}4:type,10:keep-alive,}",
    );

    const FROM: &[u8] = b"condure";
    const PEER: Option<(&[u8], u16)> = Some((b"127.0.0.1", 37610));

    fn curl_headers(port: &'static [u8]) -> [(&'static [u8], &'static [u8]); 3] {
        [
            (b"Host", port),
            (b"User-Agent", b"curl/7.88.1"),
            (b"Accept", b"*/*"),
        ]
    }

    fn encoded(encode: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        encode(&mut out);
        String::from_utf8(out).expect("test vectors are ASCII")
    }

    fn get_head<'a>(headers: &'a [(&'a [u8], &'a [u8])]) -> RequestHead<'a> {
        RequestHead {
            from: FROM,
            id: b"0-0-0",
            seq: 0,
            method: b"GET",
            uri: b"http://127.0.0.1:28700/get?x=1",
            headers,
            credits: 8192,
            stream: true,
            more: false,
            body: b"",
            peer: PEER,
        }
    }

    #[test]
    fn request_heads_match_condure() {
        let curl = curl_headers(b"127.0.0.1:28700");
        let post_headers: [(&[u8], &[u8]); 5] = [
            curl[0],
            curl[1],
            curl[2],
            (b"Content-Length", b"7"),
            (b"Content-Type", b"application/x-www-form-urlencoded"),
        ];
        let ws_headers: [(&[u8], &[u8]); 6] = [
            (b"Upgrade", b"websocket"),
            (b"Host", b"127.0.0.1:28700"),
            (b"Origin", b"http://127.0.0.1:28700"),
            (b"Sec-WebSocket-Key", b"/C8Reo/ibLbJB/zz/9GYDw=="),
            (b"Sec-WebSocket-Version", b"13"),
            (b"Connection", b"Upgrade"),
        ];
        let cases: [(&str, RequestHead<'_>, &str); 3] = [
            ("get", get_head(&curl), HEAD_GET),
            (
                "post",
                RequestHead {
                    id: b"0-0-2",
                    method: b"POST",
                    uri: b"http://127.0.0.1:28700/post",
                    headers: &post_headers,
                    more: true,
                    peer: Some((b"127.0.0.1", 37612)),
                    ..get_head(&curl)
                },
                HEAD_POST,
            ),
            (
                "websocket",
                RequestHead {
                    id: b"0-0-f",
                    uri: b"ws://127.0.0.1:28700/ws/echo?x=1",
                    headers: &ws_headers,
                    stream: false,
                    peer: Some((b"127.0.0.1", 37650)),
                    ..get_head(&curl)
                },
                HEAD_WS,
            ),
        ];
        for (name, head, expected) in cases {
            assert_eq!(
                encoded(|out| encode_request_head(out, &head)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn request_head_omits_what_condure_omits() {
        // Goal: empty method/uri/headers/body, zero credits and an empty peer address are
        // left out, and a non-empty body is written before credits.
        let head = RequestHead {
            from: FROM,
            id: b"1",
            seq: 0,
            method: b"",
            uri: b"",
            headers: &[],
            credits: 0,
            stream: false,
            more: false,
            body: b"early",
            peer: Some((b"", 80)),
        };
        assert_eq!(
            encoded(|out| encode_request_head(out, &head)),
            "T76:4:from,7:condure,2:id,1:1,3:seq,1:0#3:ext,15:5:multi,4:true!}4:body,5:early,}"
        );
    }

    #[test]
    fn req_mode_requests_match_condure() {
        let curl = curl_headers(b"127.0.0.1:28701");
        let post_headers: [(&[u8], &[u8]); 5] = [
            curl[0],
            curl[1],
            curl[2],
            (b"Content-Length", b"9"),
            (b"Content-Type", b"application/x-www-form-urlencoded"),
        ];
        let get = encoded(|out| {
            let uri = b"http://127.0.0.1:28701/reqmode";
            let peer = Some((&b"127.0.0.1"[..], 43320));
            encode_req_request(out, b"0-0-b", b"GET", uri, &curl, b"", peer)
        });
        assert_eq!(get, REQ_GET);
        let post = encoded(|out| {
            let uri = b"http://127.0.0.1:28701/reqpost";
            let peer = Some((&b"127.0.0.1"[..], 43326));
            encode_req_request(
                out,
                b"0-0-d",
                b"POST",
                uri,
                &post_headers,
                b"hello=req",
                peer,
            )
        });
        assert_eq!(post, REQ_POST);
    }

    #[test]
    fn later_packets_match_condure() {
        type Encode = fn(&mut Vec<u8>);
        let cases: [(&str, Encode, &str); 12] = [
            (
                "body last",
                |out| encode_body(out, FROM, b"0-0-2", 1, b"abc=123", false),
                BODY_LAST,
            ),
            (
                "body more",
                |out| encode_body(out, FROM, b"0-0-4", 3, &[b'a'; 31], true),
                BODY_MORE,
            ),
            (
                "credit",
                |out| encode_credit(out, FROM, b"0-0-6", 1, 6),
                CREDIT,
            ),
            (
                "cancel",
                |out| encode_control(out, FROM, b"0-0-8", 1, Kind::Cancel),
                CANCEL,
            ),
            (
                "handoff-proceed",
                |out| encode_control(out, FROM, b"0-0-9", 1, Kind::HandoffProceed),
                HANDOFF_PROCEED,
            ),
            (
                "keep-alive",
                |out| encode_control(out, FROM, b"0-0-10", 1, Kind::KeepAlive),
                KEEP_ALIVE,
            ),
            (
                "keep-alive batch of one",
                |out| {
                    assert_eq!(
                        encode_multi(out, FROM, &[(b"0-0-10", 1)], Kind::KeepAlive),
                        1
                    )
                },
                KEEP_ALIVE,
            ),
            (
                "ws text",
                |out| {
                    encode_ws_message(
                        out,
                        FROM,
                        b"0-0-f",
                        1,
                        ContentType::Text,
                        b"hello ws",
                        false,
                    )
                },
                WS_TEXT,
            ),
            (
                "ws binary",
                |out| {
                    let body = b"\x00\x01\x02bin";
                    encode_ws_message(out, FROM, b"0-0-f", 3, ContentType::Binary, body, false)
                },
                WS_BINARY,
            ),
            (
                "ws ping",
                |out| encode_ping_pong(out, FROM, b"0-0-f", 5, Kind::Ping, b"pingdata"),
                WS_PING,
            ),
            (
                "ws close",
                |out| encode_close(out, FROM, b"0-0-f", 7, Some((1000, b"client done"))),
                WS_CLOSE,
            ),
            (
                "keep-alive batch",
                |out| {
                    let ids: [(&[u8], u32); 2] = [(b"0-0-11", 1), (b"0-1-12", 1)];
                    assert_eq!(encode_multi(out, FROM, &ids, Kind::KeepAlive), 2);
                },
                KEEP_ALIVE_LIST,
            ),
        ];
        for (name, encode, expected) in cases {
            assert_eq!(encoded(encode), expected, "{name}");
        }
        let ids: [(&[u8], u32); 2] = [(b"0-0-6", 3), (b"0-1-7", 3)];
        let batch = encoded(|out| {
            encode_multi(out, FROM, &ids, Kind::KeepAlive);
        });
        assert_eq!(batch, KEEP_ALIVE_LIST_DOC);
    }

    #[test]
    fn other_encoders_follow_condure_order() {
        // Not captured (Condure sends them in client mode or only on rare paths); the
        // expected bytes follow Condure's serializer order.
        type Encode = fn(&mut Vec<u8>);
        let cases: [(&str, Encode, &str); 6] = [
            (
                "error",
                |out| encode_error(out, b"c", b"1", 0, b"bad-request"),
                "T97:4:from,1:c,2:id,1:1,3:seq,1:0#3:ext,15:5:multi,4:true!}4:type,5:error,\
                 9:condition,11:bad-request,}",
            ),
            (
                "close without status",
                |out| encode_close(out, b"c", b"1", 2, None),
                "T70:4:from,1:c,2:id,1:1,3:seq,1:2#3:ext,15:5:multi,4:true!}4:type,5:close,}",
            ),
            (
                "close with empty reason",
                |out| encode_close(out, b"c", b"1", 2, Some((4001, b""))),
                "T84:4:from,1:c,2:id,1:1,3:seq,1:2#3:ext,15:5:multi,4:true!}4:type,5:close,\
                 4:code,4:4001#}",
            ),
            (
                "empty pong",
                |out| encode_ping_pong(out, b"c", b"1", 3, Kind::Pong, b""),
                "T69:4:from,1:c,2:id,1:1,3:seq,1:3#3:ext,15:5:multi,4:true!}4:type,4:pong,}",
            ),
            (
                "empty final body",
                |out| encode_body(out, b"c", b"1", 4, b"", false),
                "T55:4:from,1:c,2:id,1:1,3:seq,1:4#3:ext,15:5:multi,4:true!}}",
            ),
            (
                "ws fragment",
                |out| encode_ws_message(out, b"c", b"1", 5, ContentType::Text, b"par", true),
                "T105:4:from,1:c,2:id,1:1,3:seq,1:5#3:ext,15:5:multi,4:true!}12:content-type,\
                 4:text,4:body,3:par,4:more,4:true!}",
            ),
        ];
        for (name, encode, expected) in cases {
            assert_eq!(encoded(encode), expected, "{name}");
        }
    }

    #[test]
    fn encode_multi_caps_at_ids_max() {
        let names: Vec<String> = (0..IDS_MAX + 5)
            .map(|index| format!("0-{index}-0"))
            .collect();
        let ids: Vec<(&[u8], u32)> = names.iter().map(|name| (name.as_bytes(), 7)).collect();
        let mut out = Vec::new();
        assert_eq!(encode_multi(&mut out, FROM, &ids, Kind::Cancel), IDS_MAX);
        let packet = decode(&out).unwrap();
        assert_eq!(packet.kind, Kind::Cancel);
        assert_eq!(packet.ids.len(), IDS_MAX);
        let last = packet.ids.iter().last().unwrap();
        assert_eq!(last.0.get(&out), names[IDS_MAX - 1].as_bytes());
        assert_eq!(last.1, Some(7));

        let mut rest = Vec::new();
        assert_eq!(
            encode_multi(&mut rest, FROM, &ids[IDS_MAX..], Kind::Cancel),
            5
        );
        assert_eq!(encode_multi(&mut rest, FROM, &[], Kind::Cancel), 0);
        assert_eq!(decode(&rest).unwrap().ids.len(), 5);
    }

    #[test]
    fn encoders_append() {
        let mut out = b"condure-router-frame".to_vec();
        encode_credit(&mut out, FROM, b"0-0-6", 1, 6);
        assert_eq!(&out[..20], b"condure-router-frame");
        assert_eq!(&out[20..], CREDIT.as_bytes());
    }

    #[test]
    fn encoded_packets_decode_back() {
        // Goal: the decoder reads zring's own packets too (it ignores request-only keys), so
        // encode → decode is a round trip for the shared fields.
        let curl = curl_headers(b"127.0.0.1:28700");
        let mut out = Vec::new();
        encode_request_head(
            &mut out,
            &RequestHead {
                more: true,
                body: b"xy",
                ..get_head(&curl)
            },
        );
        let packet = decode(&out).unwrap();
        assert_eq!(packet.from.unwrap().get(&out), FROM);
        assert_eq!(
            packet.ids,
            Ids::One {
                id: span_of(&out, b"0-0-0"),
                seq: Some(0)
            }
        );
        assert_eq!(packet.kind, Kind::Data);
        assert!(packet.multi);
        assert!(packet.more);
        assert_eq!(packet.credits, Some(8192));
        assert_eq!(packet.body.get(&out), b"xy");
        let headers: Vec<(&[u8], &[u8])> = packet
            .headers
            .iter()
            .map(|(name, value)| (name.get(&out), value.get(&out)))
            .collect();
        assert_eq!(headers, curl);

        for (vector, kind) in [
            (CREDIT, Kind::Credit),
            (CANCEL, Kind::Cancel),
            (HANDOFF_PROCEED, Kind::HandoffProceed),
            (KEEP_ALIVE, Kind::KeepAlive),
            (KEEP_ALIVE_LIST, Kind::KeepAlive),
            (WS_TEXT, Kind::Data),
            (WS_BINARY, Kind::Data),
            (WS_PING, Kind::Ping),
            (WS_CLOSE, Kind::Close),
            (BODY_LAST, Kind::Data),
            (BODY_MORE, Kind::Data),
            (HEAD_GET, Kind::Data),
            (HEAD_POST, Kind::Data),
            (HEAD_WS, Kind::Data),
            (REQ_GET, Kind::Data),
            (REQ_POST, Kind::Data),
        ] {
            let packet =
                decode(vector.as_bytes()).unwrap_or_else(|error| panic!("{vector}: {error}"));
            assert_eq!(packet.kind, kind, "{vector}");
            assert!(packet.multi);
        }
    }

    /// The span of the first occurrence of `needle` in `buf`.
    fn span_of(buf: &[u8], needle: &[u8]) -> Span {
        let start = buf
            .windows(needle.len())
            .position(|window| window == needle)
            .unwrap();
        Span {
            start: start as u32,
            end: (start + needle.len()) as u32,
        }
    }

    /// What a decoded packet says, with spans resolved, for table comparisons.
    #[derive(Debug, Default, PartialEq)]
    struct Seen<'a> {
        from: Option<&'a [u8]>,
        ids: Vec<(&'a [u8], Option<u32>)>,
        kind: Option<Kind>,
        multi: bool,
        code: Option<u32>,
        reason: Option<&'a [u8]>,
        headers: Vec<(&'a [u8], &'a [u8])>,
        body: &'a [u8],
        more: bool,
        credits: Option<u32>,
        content_type: Option<ContentType>,
        condition: Option<&'a [u8]>,
    }

    fn seen<'a>(buf: &'a [u8], packet: &Packet) -> Seen<'a> {
        Seen {
            from: packet.from.map(|span| span.get(buf)),
            ids: packet
                .ids
                .iter()
                .map(|(id, seq)| (id.get(buf), seq))
                .collect(),
            kind: Some(packet.kind),
            multi: packet.multi,
            code: packet.code,
            reason: packet.reason.map(|span| span.get(buf)),
            headers: packet
                .headers
                .iter()
                .map(|(name, value)| (name.get(buf), value.get(buf)))
                .collect(),
            body: packet.body.get(buf),
            more: packet.more,
            credits: packet.credits,
            content_type: packet.content_type,
            condition: packet.condition.map(|span| span.get(buf)),
        }
    }

    const HANDLER: Option<&[u8]> = Some(b"cap-handler");
    const PLAIN: [(&[u8], &[u8]); 1] = [(b"Content-Type", b"text/plain")];

    #[test]
    fn handler_packets_decode() {
        let cases: Vec<(&str, Seen<'_>)> = vec![
            (
                REPLY_OK,
                Seen {
                    ids: vec![(b"0-0-0", Some(0))],
                    code: Some(200),
                    reason: Some(b"OK"),
                    headers: PLAIN.to_vec(),
                    body: b"hello\n",
                    ..Seen::default()
                },
            ),
            (
                REPLY_CREDIT,
                Seen {
                    ids: vec![(b"0-0-2", Some(0))],
                    kind: Some(Kind::Credit),
                    credits: Some(65536),
                    ..Seen::default()
                },
            ),
            (
                REPLY_STREAM_HEAD,
                Seen {
                    ids: vec![(b"0-0-6", Some(0))],
                    code: Some(200),
                    reason: Some(b"OK"),
                    headers: PLAIN.to_vec(),
                    body: b"part1\n",
                    more: true,
                    ..Seen::default()
                },
            ),
            (
                REPLY_STREAM_MORE,
                Seen {
                    ids: vec![(b"0-0-6", Some(1))],
                    body: b"part2\n",
                    more: true,
                    ..Seen::default()
                },
            ),
            (
                REPLY_STREAM_LAST,
                Seen {
                    ids: vec![(b"0-0-6", Some(2))],
                    body: b"part3\n",
                    ..Seen::default()
                },
            ),
            (
                REPLY_KEEP_ALIVE,
                Seen {
                    ids: vec![(b"0-0-8", Some(0))],
                    kind: Some(Kind::KeepAlive),
                    ..Seen::default()
                },
            ),
            (
                REPLY_HANDOFF_START,
                Seen {
                    ids: vec![(b"0-0-9", Some(0))],
                    kind: Some(Kind::HandoffStart),
                    ..Seen::default()
                },
            ),
            (
                REPLY_WS_ACCEPT,
                Seen {
                    ids: vec![(b"0-0-f", Some(0))],
                    code: Some(101),
                    reason: Some(b"Switching Protocols"),
                    credits: Some(16384),
                    ..Seen::default()
                },
            ),
            (
                REPLY_WS_BINARY,
                Seen {
                    ids: vec![(b"0-0-f", Some(3))],
                    body: b"\x00\x01\x02bin",
                    content_type: Some(ContentType::Binary),
                    ..Seen::default()
                },
            ),
            (
                REPLY_PONG,
                Seen {
                    ids: vec![(b"0-0-f", Some(5))],
                    kind: Some(Kind::Pong),
                    body: b"pingdata",
                    ..Seen::default()
                },
            ),
            (
                REPLY_CLOSE,
                Seen {
                    ids: vec![(b"0-0-f", Some(6))],
                    kind: Some(Kind::Close),
                    code: Some(1000),
                    ..Seen::default()
                },
            ),
        ];
        for (message, mut expected) in cases {
            let message = message.as_bytes();
            let (address, packet) = decode_addressed(message)
                .unwrap_or_else(|error| panic!("{}: {error}", message.escape_ascii()));
            assert_eq!(address.get(message), b"condure");
            expected.from = HANDLER;
            expected.kind = expected.kind.or(Some(Kind::Data));
            assert_eq!(
                seen(message, &packet),
                expected,
                "{}",
                message.escape_ascii()
            );

            // The same packet decoded on its own has spans relative to the packet.
            let (_, alone) = split_address(message).unwrap();
            assert_eq!(seen(alone, &decode(alone).unwrap()), expected);
        }

        // A req-mode reply has neither from nor seq.
        let reply = REQ_REPLY.as_bytes();
        let expected = Seen {
            ids: vec![(b"0-0-b", None)],
            kind: Some(Kind::Data),
            code: Some(200),
            reason: Some(b"OK"),
            headers: PLAIN.to_vec(),
            body: b"req got 0 bytes\n",
            ..Seen::default()
        };
        assert_eq!(seen(reply, &decode(reply).unwrap()), expected);
    }

    /// A test value for building packets.
    enum V<'a> {
        B(&'a [u8]),
        I(i64),
        F(bool),
        Null,
        L(Vec<V<'a>>),
        D(Vec<(&'a [u8], V<'a>)>),
    }

    fn write_value(writer: &mut Writer<'_>, value: &V<'_>) {
        match value {
            V::B(bytes) => writer.bytes(bytes),
            V::I(int) => writer.int(*int),
            V::F(flag) => writer.bool(*flag),
            V::Null => writer.null(),
            V::L(items) => {
                writer.begin_list();
                items.iter().for_each(|item| write_value(writer, item));
                writer.end_list();
            }
            V::D(entries) => {
                writer.begin_dict();
                for (key, item) in entries {
                    writer.bytes(key);
                    write_value(writer, item);
                }
                writer.end_dict();
            }
        }
    }

    /// `T` + a dict of `entries`.
    fn packet(entries: Vec<(&[u8], V<'_>)>) -> Vec<u8> {
        let mut out = b"T".to_vec();
        let mut writer = Writer::new(&mut out);
        write_value(&mut writer, &V::D(entries));
        writer.finish();
        out
    }

    /// A handler packet with `from`, `id` and `seq`, plus `extra`.
    fn handler_packet(extra: Vec<(&[u8], V<'_>)>) -> Vec<u8> {
        let mut entries = vec![
            (&b"from"[..], V::B(b"handler")),
            (b"id", V::B(b"1")),
            (b"seq", V::I(4)),
        ];
        entries.extend(extra);
        packet(entries)
    }

    fn header(name: &'static [u8], value: &'static [u8]) -> V<'static> {
        V::L(vec![V::B(name), V::B(value)])
    }

    #[test]
    fn every_kind_decodes() {
        for kind in Kind::ALL {
            let mut extra = vec![];
            if kind != Kind::Data {
                extra.push((&b"type"[..], V::B(kind.as_bytes())));
            }
            let buf = handler_packet(extra);
            let packet = decode(&buf).unwrap();
            assert_eq!(packet.kind, kind);
            let ids: Vec<(&[u8], Option<u32>)> = packet
                .ids
                .iter()
                .map(|(id, seq)| (id.get(&buf), seq))
                .collect();
            assert_eq!(ids, [(&b"1"[..], Some(4))]);
            assert_eq!(
                Kind::parse(kind.as_bytes()),
                (kind != Kind::Data).then_some(kind)
            );
        }
    }

    #[test]
    fn error_rejected_carries_a_response() {
        let buf = handler_packet(vec![
            (b"type", V::B(b"error")),
            (b"condition", V::B(b"rejected")),
            (b"code", V::I(403)),
            (b"reason", V::B(b"Forbidden")),
            (
                b"headers",
                V::L(vec![header(b"Content-Type", b"text/plain")]),
            ),
            (b"body", V::B(b"go away\n")),
            (b"credits", V::I(5)),
            (b"more", V::F(true)),
        ]);
        let expected = Seen {
            from: Some(b"handler"),
            ids: vec![(b"1", Some(4))],
            kind: Some(Kind::Error),
            code: Some(403),
            reason: Some(b"Forbidden"),
            headers: PLAIN.to_vec(),
            body: b"go away\n",
            condition: Some(b"rejected"),
            // credits and more are not read for errors
            ..Seen::default()
        };
        assert_eq!(seen(&buf, &decode(&buf).unwrap()), expected);
    }

    #[test]
    fn key_order_unknown_keys_and_duplicates() {
        // Goal: order does not matter, unknown keys (of any type) are skipped, the last
        // duplicate wins, and extra header elements are ignored, all as in Condure.
        let buf = packet(vec![
            (b"more", V::F(true)),
            (
                b"user-data",
                V::D(vec![(b"foo", V::L(vec![V::Null, V::I(-1)]))]),
            ),
            (
                b"headers",
                V::L(vec![V::L(vec![V::B(b"X-A"), V::B(b"1"), V::I(9)])]),
            ),
            (b"content-type", V::B(b"something")),
            (b"body", V::B(b"first")),
            (b"seq", V::I(2)),
            (b"id", V::B(b"abc")),
            (b"code", V::I(200)),
            (b"body", V::B(b"second")),
            (
                b"ext",
                V::D(vec![(b"multi", V::F(true)), (b"quiet", V::F(true))]),
            ),
            (b"from", V::B(b"h")),
        ]);
        let expected = Seen {
            from: Some(b"h"),
            ids: vec![(b"abc", Some(2))],
            kind: Some(Kind::Data),
            multi: true,
            code: Some(200),
            headers: vec![(b"X-A", b"1")],
            body: b"second",
            more: true,
            content_type: Some(ContentType::Text),
            ..Seen::default()
        };
        assert_eq!(seen(&buf, &decode(&buf).unwrap()), expected);
    }

    #[test]
    fn fields_outside_the_kind_are_not_checked() {
        // Condure reads only the fields a type uses, so a keep-alive with a malformed `code`
        // or `headers` is still a keep-alive.
        let buf = handler_packet(vec![
            (b"type", V::B(b"keep-alive")),
            (b"code", V::B(b"not a number")),
            (b"headers", V::I(1)),
        ]);
        assert_eq!(decode(&buf).unwrap().kind, Kind::KeepAlive);
    }

    #[test]
    fn list_form_ids_decode() {
        let buf = packet(vec![
            (b"from", V::B(b"pushpin-handler_1")),
            (
                b"id",
                V::L(vec![
                    V::D(vec![(b"id", V::B(b"0-0-1")), (b"seq", V::I(5))]),
                    V::D(vec![
                        (b"seq", V::I(0)),
                        (b"x", V::Null),
                        (b"id", V::B(b"1-2-3")),
                    ]),
                    V::D(vec![(b"id", V::B(b"0-9-a"))]),
                ]),
            ),
            (b"seq", V::I(99)),
            (b"ext", V::D(vec![(b"multi", V::F(true))])),
            (b"type", V::B(b"keep-alive")),
        ]);
        let decoded = decode(&buf).unwrap();
        assert!(matches!(decoded.ids, Ids::Many(_)));
        let ids: Vec<(&[u8], Option<u32>)> = decoded
            .ids
            .iter()
            .map(|(id, seq)| (id.get(&buf), seq))
            .collect();
        assert_eq!(
            ids,
            [
                (&b"0-0-1"[..], Some(5)),
                (b"1-2-3", Some(0)),
                (b"0-9-a", None)
            ]
        );
        assert_eq!(decoded.kind, Kind::KeepAlive);
        assert!(decoded.multi);

        let most: Vec<V<'_>> = (0..IDS_MAX)
            .map(|_| V::D(vec![(b"id", V::B(b"x"))]))
            .collect();
        let buf = packet(vec![(b"id", V::L(most))]);
        assert_eq!(decode(&buf).unwrap().ids.len(), IDS_MAX);
    }

    #[test]
    fn malformed_packets_are_rejected() {
        let long = [b'x'; 65];
        let too_many_ids: Vec<V<'_>> = (0..=IDS_MAX)
            .map(|_| V::D(vec![(b"id", V::B(b"x"))]))
            .collect();
        let too_many_headers: Vec<V<'_>> = (0..=HEADERS_MAX).map(|_| header(b"a", b"b")).collect();
        let most_headers: Vec<V<'_>> = (0..HEADERS_MAX).map(|_| header(b"a", b"b")).collect();
        assert!(decode(&handler_packet(vec![(b"headers", V::L(most_headers))])).is_ok());

        let type_is = |kind: &'static [u8]| (&b"type"[..], V::B(kind));
        let cases: Vec<(&str, Vec<u8>, Error)> = vec![
            ("empty", vec![], Error::NotTnetstring),
            ("json", b"J{}".to_vec(), Error::NotTnetstring),
            (
                "truncated",
                b"T10:2:id,".to_vec(),
                Error::Tnetstring(tnetstring::Error::Truncated),
            ),
            ("list root", b"T3:0:~]".to_vec(), Error::NotDict),
            (
                "non-utf8 key",
                packet(vec![(b"\xff", V::Null), (b"id", V::B(b"1"))]),
                Error::BadKey,
            ),
            (
                "no id",
                packet(vec![(b"from", V::B(b"h"))]),
                Error::MissingId,
            ),
            (
                "int id",
                packet(vec![(b"id", V::I(1))]),
                Error::WrongType(Field::Id),
            ),
            (
                "long id",
                packet(vec![(b"id", V::B(&long))]),
                Error::TooLong(Field::Id),
            ),
            (
                "empty id list",
                packet(vec![(b"id", V::L(vec![]))]),
                Error::MissingId,
            ),
            (
                "id entry not dict",
                packet(vec![(b"id", V::L(vec![V::B(b"1")]))]),
                Error::WrongType(Field::Id),
            ),
            (
                "id entry without id",
                packet(vec![(b"id", V::L(vec![V::D(vec![(b"seq", V::I(1))])]))]),
                Error::MissingId,
            ),
            (
                "id entry long id",
                packet(vec![(b"id", V::L(vec![V::D(vec![(b"id", V::B(&long))])]))]),
                Error::TooLong(Field::Id),
            ),
            (
                "id entry negative seq",
                packet(vec![(
                    b"id",
                    V::L(vec![V::D(vec![(b"id", V::B(b"1")), (b"seq", V::I(-1))])]),
                )]),
                Error::OutOfRange(Field::Seq),
            ),
            (
                "too many ids",
                packet(vec![(b"id", V::L(too_many_ids))]),
                Error::TooManyIds,
            ),
            (
                "long from",
                packet(vec![(b"from", V::B(&long)), (b"id", V::B(b"1"))]),
                Error::TooLong(Field::From),
            ),
            (
                "int from",
                packet(vec![(b"from", V::I(1)), (b"id", V::B(b"1"))]),
                Error::WrongType(Field::From),
            ),
            (
                "negative seq",
                handler_packet(vec![(b"seq", V::I(-1))]),
                Error::OutOfRange(Field::Seq),
            ),
            (
                "huge seq",
                handler_packet(vec![(b"seq", V::I(1 << 32))]),
                Error::OutOfRange(Field::Seq),
            ),
            (
                "string seq",
                handler_packet(vec![(b"seq", V::B(b"1"))]),
                Error::WrongType(Field::Seq),
            ),
            (
                "unknown type",
                handler_packet(vec![type_is(b"foo")]),
                Error::UnknownType,
            ),
            (
                "type data",
                handler_packet(vec![type_is(b"data")]),
                Error::UnknownType,
            ),
            (
                "non-utf8 type",
                handler_packet(vec![type_is(b"\xff")]),
                Error::NotUtf8(Field::Type),
            ),
            (
                "ext not dict",
                handler_packet(vec![(b"ext", V::L(vec![]))]),
                Error::WrongType(Field::Ext),
            ),
            (
                "multi not bool",
                handler_packet(vec![(b"ext", V::D(vec![(b"multi", V::I(1))]))]),
                Error::WrongType(Field::Multi),
            ),
            (
                "negative credits",
                handler_packet(vec![(b"credits", V::I(-5))]),
                Error::OutOfRange(Field::Credits),
            ),
            (
                "credit without int",
                handler_packet(vec![type_is(b"credit"), (b"credits", V::B(b"5"))]),
                Error::WrongType(Field::Credits),
            ),
            (
                "negative code",
                handler_packet(vec![(b"code", V::I(-200))]),
                Error::OutOfRange(Field::Code),
            ),
            (
                "more not bool",
                handler_packet(vec![(b"more", V::B(b"true"))]),
                Error::WrongType(Field::More),
            ),
            (
                "body not bytes",
                handler_packet(vec![(b"body", V::L(vec![]))]),
                Error::WrongType(Field::Body),
            ),
            (
                "non-utf8 reason",
                handler_packet(vec![(b"reason", V::B(b"\xc3("))]),
                Error::NotUtf8(Field::Reason),
            ),
            (
                "content-type int",
                handler_packet(vec![(b"content-type", V::I(1))]),
                Error::WrongType(Field::ContentType),
            ),
            (
                "headers not list",
                handler_packet(vec![(b"headers", V::B(b"x"))]),
                Error::WrongType(Field::Headers),
            ),
            (
                "header not list",
                handler_packet(vec![(b"headers", V::L(vec![V::B(b"x")]))]),
                Error::WrongType(Field::Headers),
            ),
            (
                "header without value",
                handler_packet(vec![(b"headers", V::L(vec![V::L(vec![V::B(b"x")])]))]),
                Error::BadHeader,
            ),
            (
                "non-utf8 header name",
                handler_packet(vec![(b"headers", V::L(vec![header(b"\xff", b"v")]))]),
                Error::NotUtf8(Field::HeaderName),
            ),
            (
                "header value int",
                handler_packet(vec![(
                    b"headers",
                    V::L(vec![V::L(vec![V::B(b"n"), V::I(1)])]),
                )]),
                Error::WrongType(Field::HeaderValue),
            ),
            (
                "too many headers",
                handler_packet(vec![(b"headers", V::L(too_many_headers))]),
                Error::TooManyHeaders,
            ),
            (
                "close code too big",
                handler_packet(vec![type_is(b"close"), (b"code", V::I(65536))]),
                Error::OutOfRange(Field::Code),
            ),
            (
                "non-utf8 close reason",
                handler_packet(vec![type_is(b"close"), (b"body", V::B(b"\xff"))]),
                Error::NotUtf8(Field::Body),
            ),
            (
                "non-utf8 condition",
                handler_packet(vec![type_is(b"error"), (b"condition", V::B(b"\xff"))]),
                Error::NotUtf8(Field::Condition),
            ),
            (
                "ping credits negative",
                handler_packet(vec![type_is(b"ping"), (b"credits", V::I(-1))]),
                Error::OutOfRange(Field::Credits),
            ),
        ];
        for (name, buf, expected) in cases {
            assert_eq!(
                decode(&buf),
                Err(expected),
                "{name}: {}",
                buf.escape_ascii()
            );
        }
    }

    #[test]
    fn every_proper_prefix_is_rejected() {
        for message in [REPLY_OK, REPLY_WS_ACCEPT, REPLY_PONG] {
            let (_, packet) = split_address(message.as_bytes()).unwrap();
            assert!(decode(packet).is_ok());
            for split in 0..packet.len() {
                assert!(
                    decode(&packet[..split]).is_err(),
                    "{message} cut at {split}"
                );
            }
        }
    }

    #[test]
    fn addresses_split_at_the_first_space() {
        let max = format!("{} T", "a".repeat(ADDRESS_BYTES_MAX));
        let over = format!("{} T", "a".repeat(ADDRESS_BYTES_MAX + 1));
        type Split<'a> = Option<(&'a [u8], &'a [u8])>;
        let cases: [(&[u8], Split<'_>); 6] = [
            (b"condure T3:0:~}", Some((b"condure", b"T3:0:~}"))),
            (b"a b c", Some((b"a", b"b c"))),
            (b" T", Some((b"", b"T"))),
            (b"condure", None),
            (
                max.as_bytes(),
                Some((&max.as_bytes()[..ADDRESS_BYTES_MAX], b"T")),
            ),
            (over.as_bytes(), None),
        ];
        for (message, expected) in cases {
            assert_eq!(
                split_address(message),
                expected,
                "{}",
                message.escape_ascii()
            );
        }
        assert_eq!(decode_addressed(b"condure"), Err(Error::NoAddress));
        assert_eq!(decode_addressed(b"condure J{}"), Err(Error::NotTnetstring));
    }

    #[test]
    fn packet_stays_small() {
        // A decoded packet is kept beside its message for as long as any target connection
        // still needs it; the header array dominates its size (64 × 16 bytes).
        assert!(
            core::mem::size_of::<Packet>() <= 1200,
            "{}",
            core::mem::size_of::<Packet>()
        );
        assert!(core::mem::size_of::<Error>() <= 2);
    }

    #[test]
    fn spans_never_panic_on_foreign_buffers() {
        let span = Span { start: 10, end: 20 };
        assert_eq!(span.get(b"short"), b"");
        assert_eq!(Span { start: 3, end: 1 }.get(b"abcdef"), b"");
        assert_eq!(Span { start: 3, end: 1 }.len(), 0);
        assert!(Span::EMPTY.is_empty());
    }
}
