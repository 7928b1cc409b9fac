//! ZHTTP client mode's packets: zring is the *responder*. A requester (pushpin-proxy, any
//! app speaking zurl's protocol) sends request packets; zring answers with keep-alives,
//! response heads, bodies, credits, errors and cancels (`docs/protocols.md`, client mode;
//! `../shared/docs/zhttp-client.md` section 2).
//!
//! The format is the one [`super::zhttp`] speaks in server mode, seen from the other end:
//! [`decode`] reads the requester's fields (table 2.1 of the note: `method`, `uri`,
//! `connect-host`, `user-data`, ...), the encoders write the responder's replies. As there,
//! decoding copies nothing: every byte string is a [`Span`] into the decoded buffer.
//!
//! Pure: no sockets, sessions, seq checks or credit accounting here.

use arrayvec::ArrayVec;

use super::tnetstring::{self, List, Value, Writer};
use super::zhttp::{
    bool_of, bytes_of, u32_of, utf8_of, Error, Field, HEADERS_MAX, IDS_MAX, ID_BYTES_MAX,
};
pub use super::zhttp::{Ids, Kind, Span};

/// Longest `from` a requester may give (pushpin-connmgr drops longer ones).
pub const FROM_BYTES_MAX: usize = crate::limits::ADDRESS_BYTES_MAX;

/// A decoded requester packet. Only the fields of its [`Kind`] are read; absent ones keep
/// their empty values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `from`: where replies go (the requester's SUB subscription, or ROUTER identity).
    pub from: Option<Span>,
    /// `id` (with `seq`), either form; `None` in req mode when the requester gave none.
    pub ids: Option<Ids>,
    pub kind: KindOrData,
    /// `ext.multi`: the requester accepts list-form ids.
    pub multi: bool,
    pub method: Option<Span>,
    pub uri: Option<Span>,
    pub headers: ArrayVec<(Span, Span), HEADERS_MAX>,
    pub body: Span,
    pub more: bool,
    /// `stream`: `Some(false)` asks for the whole response in one packet (zurl).
    pub stream: Option<bool>,
    pub credits: Option<u32>,
    /// `router-resp`: replies go out of the in-stream ROUTER instead of PUB.
    pub router_resp: bool,
    /// `max-size`: the most response-body bytes wanted (zurl: `max-size-exceeded`).
    pub max_size: Option<u64>,
    /// `timeout` in ms: the whole request's time (zurl: `session-timeout`).
    pub timeout_ms: Option<u64>,
    pub connect_host: Option<Span>,
    pub connect_port: Option<u16>,
    pub ignore_policies: bool,
    pub trust_connect_host: bool,
    pub ignore_tls_errors: bool,
    pub follow_redirects: bool,
    /// `client-cert` and `client-key`: PEM contents (a chain, its key), as Pushpin sends
    /// them (it reads its routes' files).
    pub client_cert: Option<Span>,
    pub client_key: Option<Span>,
    /// `user-data`: the value as encoded, echoed verbatim in every reply.
    pub user_data: Option<Span>,
    /// `condition` of an `error`.
    pub condition: Option<Span>,
    /// `content-type: binary` on a WebSocket data packet (absent or `text`: text).
    pub binary: bool,
    /// `code` of a WebSocket `close`.
    pub code: Option<u16>,
}

/// [`Kind`] with a default, so [`Request`] can derive one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindOrData(pub Option<Kind>);

impl KindOrData {
    pub fn get(self) -> Kind {
        self.0.unwrap_or(Kind::Data)
    }
}

impl Request {
    /// The one id (and its `seq`) of a single-id packet.
    pub fn single_id(&self) -> Option<(Span, Option<u32>)> {
        match &self.ids {
            Some(Ids::One { id, seq }) => Some((*id, *seq)),
            _ => None,
        }
    }
}

/// Decodes a requester packet; `buf` starts with `T`. Spans index `buf`.
pub fn decode(buf: &[u8]) -> Result<Request, Error> {
    if u32::try_from(buf.len()).is_err() {
        return Err(Error::TooLarge);
    }
    let Some((b'T', rest)) = buf.split_first() else {
        return Err(Error::NotTnetstring);
    };
    let (root, _) = tnetstring::parse(rest)?;
    let root = root.as_dict().ok_or(Error::NotDict)?;
    let d = Spans { buf };
    let mut r = Request::default();
    let mut id = None;
    let mut seq = None;
    for (key, value, raw) in root.iter_raw() {
        match key {
            b"from" => {
                let from = bytes_of(value, Field::From)?;
                if from.len() > FROM_BYTES_MAX {
                    return Err(Error::TooLong(Field::From));
                }
                r.from = Some(d.span(from));
            }
            b"id" => id = Some(value),
            b"seq" => seq = Some(u32_of(value, Field::Seq)?),
            b"type" => {
                let t = utf8_of(value, Field::Type)?;
                r.kind = KindOrData(Some(Kind::parse(t).ok_or(Error::UnknownType)?));
            }
            b"ext" => r.multi = multi(value)?,
            b"method" => r.method = Some(d.span(utf8_of(value, Field::Reason)?)),
            b"uri" => r.uri = Some(d.span(utf8_of(value, Field::Reason)?)),
            b"headers" => r.headers = d.headers(value)?,
            b"body" => r.body = d.span(bytes_of(value, Field::Body)?),
            b"more" => r.more = bool_of(value, Field::More)?,
            b"stream" => r.stream = Some(bool_of(value, Field::More)?),
            b"credits" => r.credits = Some(u32_of(value, Field::Credits)?),
            b"router-resp" => r.router_resp = bool_of(value, Field::More)?,
            b"max-size" => r.max_size = Some(u64_of(value, Field::Code)?),
            b"timeout" => r.timeout_ms = Some(u64_of(value, Field::Code)?),
            b"connect-host" => r.connect_host = Some(d.span(utf8_of(value, Field::Reason)?)),
            b"connect-port" => {
                let port = u32_of(value, Field::Code)?;
                r.connect_port =
                    Some(u16::try_from(port).map_err(|_| Error::OutOfRange(Field::Code))?);
            }
            b"ignore-policies" => r.ignore_policies = bool_of(value, Field::More)?,
            b"trust-connect-host" => r.trust_connect_host = bool_of(value, Field::More)?,
            b"ignore-tls-errors" => r.ignore_tls_errors = bool_of(value, Field::More)?,
            b"follow-redirects" => r.follow_redirects = bool_of(value, Field::More)?,
            b"client-cert" => r.client_cert = Some(d.span(bytes_of(value, Field::Body)?)),
            b"client-key" => r.client_key = Some(d.span(bytes_of(value, Field::Body)?)),
            b"user-data" => r.user_data = Some(d.span(raw)),
            b"condition" => r.condition = Some(d.span(utf8_of(value, Field::Condition)?)),
            b"content-type" => r.binary = bytes_of(value, Field::ContentType)? == b"binary",
            b"code" => {
                let code = u32_of(value, Field::Code)?;
                r.code = Some(u16::try_from(code).map_err(|_| Error::OutOfRange(Field::Code))?);
            }
            _ => {
                std::str::from_utf8(key).map_err(|_| Error::BadKey)?;
            }
        }
    }
    r.ids = match id {
        None => None,
        Some(Value::Bytes(id)) => {
            if id.len() > ID_BYTES_MAX {
                return Err(Error::TooLong(Field::Id));
            }
            Some(Ids::One {
                id: d.span(id),
                seq,
            })
        }
        Some(Value::List(list)) => Some(d.id_list(list)?),
        Some(_) => return Err(Error::WrongType(Field::Id)),
    };
    Ok(r)
}

fn u64_of(v: Value<'_>, f: Field) -> Result<u64, Error> {
    let i = v.as_int().ok_or(Error::WrongType(f))?;
    u64::try_from(i).map_err(|_| Error::OutOfRange(f))
}

fn multi(v: Value<'_>) -> Result<bool, Error> {
    let ext = v.as_dict().ok_or(Error::WrongType(Field::Ext))?;
    Ok(match ext.get(b"multi") {
        Some(m) => bool_of(m, Field::Multi)?,
        None => false,
    })
}

/// Turns borrowed slices of `buf` into spans.
struct Spans<'a> {
    buf: &'a [u8],
}

impl Spans<'_> {
    fn span(&self, part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(self.buf.as_ptr() as usize);
        let end = start + part.len();
        debug_assert!(end <= self.buf.len(), "span of a slice outside the buffer");
        // `decode` bounded the buffer below 4 GiB.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    fn headers(&self, v: Value<'_>) -> Result<ArrayVec<(Span, Span), HEADERS_MAX>, Error> {
        let list = v.as_list().ok_or(Error::WrongType(Field::Headers))?;
        let mut out = ArrayVec::new();
        for item in list {
            let item = item.as_list().ok_or(Error::WrongType(Field::Headers))?;
            let mut it = item.iter();
            let name = utf8_of(it.next().ok_or(Error::BadHeader)?, Field::HeaderName)?;
            let value = bytes_of(it.next().ok_or(Error::BadHeader)?, Field::HeaderValue)?;
            out.try_push((self.span(name), self.span(value)))
                .map_err(|_| Error::TooManyHeaders)?;
        }
        Ok(out)
    }

    fn id_list(&self, list: List<'_>) -> Result<Ids, Error> {
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
            let id = bytes_of(entry.get(b"id").ok_or(Error::MissingId)?, Field::Id)?;
            if id.len() > ID_BYTES_MAX {
                return Err(Error::TooLong(Field::Id));
            }
            let seq = entry
                .get(b"seq")
                .map(|s| u32_of(s, Field::Seq))
                .transpose()?;
            ids.push((self.span(id), seq));
        }
        Ok(Ids::Many(ids))
    }
}

/// What opens every reply: zring's `from` (empty in req mode), the requester's id, zring's
/// `seq` (none in req mode), `ext.multi` (stream mode) and the `user-data` to echo.
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    pub from: &'a [u8],
    pub id: Option<&'a [u8]>,
    pub seq: Option<u32>,
    /// `ext: {multi: true}` (stream mode, as pushpin-connmgr; not in req mode).
    pub ext: bool,
    /// The requester's `user-data`, encoded (zurl echoes it in every reply).
    pub user_data: Option<&'a [u8]>,
}

/// A response head, a body packet (`code` `None`), or both.
#[derive(Clone, Copy, Debug, Default)]
pub struct Response<'a> {
    pub code: Option<u16>,
    pub reason: &'a [u8],
    pub headers: &'a [(&'a [u8], &'a [u8])],
    pub body: &'a [u8],
    pub more: bool,
}

fn begin<'o>(out: &'o mut Vec<u8>, r: &Reply<'_>, size_hint: usize) -> Writer<'o> {
    out.push(b'T');
    let mut w = Writer::new(out);
    w.begin_dict_sized(160 + size_hint);
    if !r.from.is_empty() {
        w.bytes(b"from");
        w.bytes(r.from);
    }
    if let Some(id) = r.id {
        w.bytes(b"id");
        w.bytes(id);
    }
    if let Some(seq) = r.seq {
        w.bytes(b"seq");
        w.int(i64::from(seq));
    }
    if r.ext {
        w.bytes(b"ext");
        w.begin_dict();
        w.bytes(b"multi");
        w.bool(true);
        w.end_dict();
    }
    w
}

fn end(mut w: Writer<'_>, r: &Reply<'_>) {
    if let Some(user_data) = r.user_data {
        w.bytes(b"user-data");
        w.raw(user_data);
    }
    w.end_dict();
    w.finish();
}

/// Appends a packet whose content is its type (`keep-alive`, `cancel`).
pub fn encode_control(out: &mut Vec<u8>, r: &Reply<'_>, kind: Kind) {
    let mut w = begin(out, r, 0);
    w.bytes(b"type");
    w.bytes(kind.as_bytes());
    end(w, r);
}

/// Appends a credit grant for request-body bytes.
pub fn encode_credit(out: &mut Vec<u8>, r: &Reply<'_>, credits: u32) {
    let mut w = begin(out, r, 0);
    w.bytes(b"type");
    w.bytes(Kind::Credit.as_bytes());
    w.bytes(b"credits");
    w.int(i64::from(credits));
    end(w, r);
}

/// Appends `error` with its `condition` (section 4 of the note).
pub fn encode_error(out: &mut Vec<u8>, r: &Reply<'_>, condition: &[u8]) {
    let mut w = begin(out, r, condition.len());
    w.bytes(b"type");
    w.bytes(Kind::Error.as_bytes());
    w.bytes(b"condition");
    w.bytes(condition);
    end(w, r);
}

/// Appends the answer to a WebSocket request that the origin accepted: `code` 101, its
/// `reason` and `headers` (all of them, as pushpin-connmgr), and the `credits` zring grants
/// for messages toward the origin.
pub fn encode_ws_accepted(
    out: &mut Vec<u8>,
    r: &Reply<'_>,
    reason: &[u8],
    headers: &[(&[u8], &[u8])],
    credits: u32,
) {
    let headers_len = headers_size(headers);
    let mut w = begin(out, r, headers_len + reason.len());
    w.bytes(b"code");
    w.int(101);
    w.bytes(b"reason");
    w.bytes(reason);
    write_headers(&mut w, headers, headers_len);
    w.bytes(b"credits");
    w.int(i64::from(credits));
    end(w, r);
}

/// Appends `error` with `condition: rejected` and the origin's non-101 answer: `code`,
/// `reason`, `headers` and `body` (section 2.5 of the note).
pub fn encode_ws_rejected(out: &mut Vec<u8>, r: &Reply<'_>, resp: &Response<'_>) {
    let headers_len = headers_size(resp.headers);
    let mut w = begin(out, r, headers_len + resp.reason.len() + resp.body.len());
    w.bytes(b"type");
    w.bytes(Kind::Error.as_bytes());
    w.bytes(b"condition");
    w.bytes(b"rejected");
    w.bytes(b"code");
    w.int(i64::from(resp.code.unwrap_or(0)));
    w.bytes(b"reason");
    w.bytes(resp.reason);
    write_headers(&mut w, resp.headers, headers_len);
    w.bytes(b"body");
    w.bytes(resp.body);
    end(w, r);
}

/// Appends a WebSocket message piece from the origin: `content-type` (`text`/`binary`, on
/// every packet as pushpin-connmgr), `body`, and `more` while the message continues.
pub fn encode_ws_data(out: &mut Vec<u8>, r: &Reply<'_>, binary: bool, body: &[u8], more: bool) {
    let mut w = begin(out, r, body.len() + 24);
    w.bytes(b"content-type");
    w.bytes(if binary { b"binary" } else { b"text" });
    w.bytes(b"body");
    w.bytes(body);
    if more {
        w.bytes(b"more");
        w.bool(true);
    }
    end(w, r);
}

/// Appends a WebSocket `ping`/`pong` with its payload (forwarded, as pushpin-connmgr).
pub fn encode_ws_control(out: &mut Vec<u8>, r: &Reply<'_>, kind: Kind, body: &[u8]) {
    let mut w = begin(out, r, body.len() + 8);
    w.bytes(b"type");
    w.bytes(kind.as_bytes());
    if !body.is_empty() {
        w.bytes(b"body");
        w.bytes(body);
    }
    end(w, r);
}

/// Appends a WebSocket `close`: the origin's `code` (none when its close frame had no
/// body) and its reason as `body`.
pub fn encode_ws_close(out: &mut Vec<u8>, r: &Reply<'_>, code: Option<u16>, reason: &[u8]) {
    let mut w = begin(out, r, reason.len() + 16);
    w.bytes(b"type");
    w.bytes(Kind::Close.as_bytes());
    if let Some(code) = code {
        w.bytes(b"code");
        w.int(i64::from(code));
    }
    if !reason.is_empty() {
        w.bytes(b"body");
        w.bytes(reason);
    }
    end(w, r);
}

fn headers_size(headers: &[(&[u8], &[u8])]) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len() + 12).sum()
}

fn write_headers(w: &mut Writer<'_>, headers: &[(&[u8], &[u8])], size: usize) {
    w.bytes(b"headers");
    w.begin_list_sized(size);
    for (name, value) in headers {
        w.begin_list();
        w.bytes(name);
        w.bytes(value);
        w.end_list();
    }
    w.end_list();
}

/// Appends a response packet: the head (`code`, `reason`, `headers`) when `code` is set,
/// then `body` and `more`, each left out when empty or false.
pub fn encode_response(out: &mut Vec<u8>, r: &Reply<'_>, resp: &Response<'_>) {
    let headers_len: usize = resp
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 12)
        .sum();
    let mut w = begin(out, r, resp.body.len() + headers_len + resp.reason.len());
    if let Some(code) = resp.code {
        w.bytes(b"code");
        w.int(i64::from(code));
        w.bytes(b"reason");
        w.bytes(resp.reason);
        w.bytes(b"headers");
        w.begin_list_sized(headers_len);
        for (name, value) in resp.headers {
            w.begin_list();
            w.bytes(name);
            w.bytes(value);
            w.end_list();
        }
        w.end_list();
    }
    if !resp.body.is_empty() {
        w.bytes(b"body");
        w.bytes(resp.body);
    }
    if resp.more {
        w.bytes(b"more");
        w.bool(true);
    }
    end(w, r);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(fields: &[(&str, &str)]) -> Vec<u8> {
        // fields given as raw tnetstring values
        let mut payload = String::new();
        for (k, v) in fields {
            payload.push_str(&format!("{}:{},{}", k.len(), k, v));
        }
        format!("T{}:{}}}", payload.len(), payload).into_bytes()
    }

    #[test]
    fn decodes_a_pushpin_first_packet() {
        let buf = packet(&[
            ("from", "7:proxy_1,"),
            ("id", "3:abc,"),
            ("seq", "1:0#"),
            ("ext", "15:5:multi,4:true!}"),
            ("method", "4:POST,"),
            ("uri", "15:http://a.test/x,"),
            ("headers", "12:9:1:A,2:bb,]]"),
            ("body", "2:hi,"),
            ("more", "4:true!"),
            ("stream", "5:false!"),
            ("credits", "6:200000#"),
            ("router-resp", "4:true!"),
            ("connect-host", "9:127.0.0.1,"),
            ("connect-port", "4:8080#"),
            ("ignore-policies", "4:true!"),
            ("follow-redirects", "4:true!"),
            ("max-size", "3:100#"),
            ("timeout", "4:5000#"),
            ("user-data", "8:1:k,1:v,}"),
        ]);
        let r = decode(&buf).unwrap();
        assert_eq!(r.from.unwrap().get(&buf), b"proxy_1");
        let (id, seq) = r.single_id().unwrap();
        assert_eq!(id.get(&buf), b"abc");
        assert_eq!(seq, Some(0));
        assert!(r.multi);
        assert_eq!(r.kind.get(), Kind::Data);
        assert_eq!(r.method.unwrap().get(&buf), b"POST");
        assert_eq!(r.uri.unwrap().get(&buf), b"http://a.test/x");
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.headers[0].1.get(&buf), b"bb");
        assert_eq!(r.body.get(&buf), b"hi");
        assert!(r.more && r.router_resp && r.ignore_policies && r.follow_redirects);
        assert_eq!(r.stream, Some(false));
        assert_eq!(r.credits, Some(200000));
        assert_eq!(r.connect_host.unwrap().get(&buf), b"127.0.0.1");
        assert_eq!(r.connect_port, Some(8080));
        assert_eq!(r.max_size, Some(100));
        assert_eq!(r.timeout_ms, Some(5000));
        assert_eq!(r.user_data.unwrap().get(&buf), b"8:1:k,1:v,}");
    }

    #[test]
    fn list_ids_and_bad_fields() {
        let buf = packet(&[
            ("id", "26:19:2:id,1:a,3:seq,1:4#}0:}]"),
            ("type", "10:keep-alive,"),
        ]);
        let r = decode(&buf);
        // an id entry without `id` is an error
        assert_eq!(r, Err(Error::MissingId));
        let buf = packet(&[
            ("id", "46:19:2:id,1:a,3:seq,1:4#}19:2:id,1:b,3:seq,1:9#}]"),
            ("type", "10:keep-alive,"),
        ]);
        let r = decode(&buf).unwrap();
        let ids: Vec<_> = r
            .ids
            .unwrap()
            .iter()
            .map(|(i, s)| (i.get(&buf).to_vec(), s))
            .collect();
        assert_eq!(
            ids,
            vec![(b"a".to_vec(), Some(4)), (b"b".to_vec(), Some(9))]
        );
        assert_eq!(r.kind.get(), Kind::KeepAlive);
        let bad = packet(&[("connect-port", "5:70000#")]);
        assert_eq!(decode(&bad), Err(Error::OutOfRange(Field::Code)));
        assert_eq!(decode(b"J{}"), Err(Error::NotTnetstring));
    }

    #[test]
    fn replies_round_trip_and_echo_user_data() {
        let ud = b"8:1:k,1:v,}";
        let r = Reply {
            from: b"zring",
            id: Some(b"abc"),
            seq: Some(1),
            ext: true,
            user_data: Some(ud),
        };
        let mut out = Vec::new();
        let headers: &[(&[u8], &[u8])] = &[(b"Content-Type", b"text/plain")];
        encode_response(
            &mut out,
            &r,
            &Response {
                code: Some(200),
                reason: b"OK",
                headers,
                body: b"",
                more: true,
            },
        );
        let p = super::super::zhttp::decode(&out).unwrap();
        assert_eq!(p.code, Some(200));
        assert!(p.more);
        assert_eq!(p.headers.len(), 1);
        let (root, _) = tnetstring::parse(&out[1..]).unwrap();
        let echoed = root.as_dict().unwrap().get(b"user-data").unwrap();
        assert_eq!(
            echoed.as_dict().unwrap().get(b"k").unwrap().as_bytes(),
            Some(&b"v"[..])
        );
        out.clear();
        encode_error(
            &mut out,
            &Reply {
                user_data: None,
                ..r
            },
            b"remote-connection-failed",
        );
        let p = super::super::zhttp::decode(&out).unwrap();
        assert_eq!(p.kind, Kind::Error);
        assert_eq!(p.condition.unwrap().get(&out), b"remote-connection-failed");
        out.clear();
        // req mode: no from, seq or ext
        let req = Reply {
            from: b"",
            id: Some(b"x"),
            seq: None,
            ext: false,
            user_data: None,
        };
        encode_control(&mut out, &req, Kind::Cancel);
        assert_eq!(out, b"T25:2:id,1:x,4:type,6:cancel,}");
    }
}
