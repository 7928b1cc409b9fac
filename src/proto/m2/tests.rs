//! Golden bytes: the messages captured from Mongrel2 1.12.2 in `../shared/docs/mongrel2.md`
//! (and by `tests/m2_capture`), rebuilt by the encoder from the same request.

use super::hash_order::{fnv1a, HeaderTable, ScanOrder};
use super::notice::{encode_credits, encode_disconnect};
use super::reply::{conn_id, mongrel2_int_id};
use super::request::{ws_flags, HEADER_COUNT_DEFAULT};
use super::*;

const JSON_SENDER: &[u8] = b"11111111-2222-3333-4444-555555555555";
const TNET_SENDER: &[u8] = b"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn header<'a>(name: &'a str, value: &'a [u8]) -> httparse::Header<'a> {
    httparse::Header { name, value }
}

fn request<'a>(
    method: &'a [u8],
    target: &'a [u8],
    headers: &'a [httparse::Header<'a>],
    pattern: &'a [u8],
) -> Request<'a> {
    Request {
        method,
        version: b"HTTP/1.1",
        target: split_target(target),
        headers,
        pattern: Some(pattern),
        scheme: Scheme::Http,
        remote_addr: b"127.0.0.1",
        header_count_max: HEADER_COUNT_DEFAULT,
    }
}

const XFF: &[(&[u8], &[u8])] = &[(b"x-forwarded-for", b"127.0.0.1")];

fn encode(
    sender: &[u8],
    id: u32,
    protocol: Protocol,
    req: &Request<'_>,
    extra: &[(&[u8], &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut table = HeaderTable::new();
    let message = Message {
        sender,
        conn_id: id,
        protocol,
        request: req,
        extra,
        body,
    };
    encode_request(&message, &mut table, &mut out).unwrap();
    out
}

#[test]
fn golden_json_get() {
    let headers = [
        header("Host", b"127.0.0.1:6767"),
        header("User-Agent", b"curl/7.88.1"),
        header("Accept", b"*/*"),
        header("X-Custom", b"a\"b"),
    ];
    let req = request(b"GET", b"/json/hello?x=1&y=2", &headers, b"/json");
    let got = encode(JSON_SENDER, 4, Protocol::Json, &req, XFF, b"");
    let want: &[u8] = br#"11111111-2222-3333-4444-555555555555 4 /json/hello 282:{"PATH":"/json/hello","x-forwarded-for":"127.0.0.1","accept":"*/*","user-agent":"curl/7.88.1","host":"127.0.0.1:6767","x-custom":"a\"b","METHOD":"GET","VERSION":"HTTP/1.1","URI":"/json/hello?x=1&y=2","QUERY":"x=1&y=2","PATTERN":"/json","URL_SCHEME":"http","REMOTE_ADDR":"127.0.0.1"},0:,"#;
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

#[test]
fn golden_tnetstring_post() {
    let headers = [
        header("Host", b"127.0.0.1:6767"),
        header("User-Agent", b"curl/7.88.1"),
        header("Accept", b"*/*"),
        header("Content-Length", b"10"),
        header("Content-Type", b"application/x-www-form-urlencoded"),
    ];
    let req = request(b"POST", b"/tnet/form", &headers, b"/tnet");
    let got = encode(
        TNET_SENDER,
        5,
        Protocol::Tnetstring,
        &req,
        XFF,
        b"name=zring",
    );
    let want: &[u8] = b"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee 5 /tnet/form 320:11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,4:POST,10:URL_SCHEME,4:http,7:PATTERN,5:/tnet,3:URI,10:/tnet/form,7:VERSION,8:HTTP/1.1,4:PATH,10:/tnet/form,4:host,14:127.0.0.1:6767,10:user-agent,11:curl/7.88.1,6:accept,3:*/*,14:content-length,2:10,12:content-type,33:application/x-www-form-urlencoded,15:x-forwarded-for,9:127.0.0.1,}10:name=zring,";
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

#[test]
fn golden_disconnect() {
    let mut out = Vec::new();
    encode_disconnect(&mut out, JSON_SENDER, 4, Protocol::Json);
    assert_eq!(out, b"11111111-2222-3333-4444-555555555555 4 @* 17:{\"METHOD\":\"JSON\"},21:{\"type\":\"disconnect\"},");
    out.clear();
    encode_disconnect(&mut out, TNET_SENDER, 5, Protocol::Tnetstring);
    assert_eq!(out, b"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee 5 @* 16:6:METHOD,4:JSON,}21:{\"type\":\"disconnect\"},");
}

#[test]
fn credits_notice() {
    let mut out = Vec::new();
    encode_credits(&mut out, b"u", 3, 1024, Protocol::Json);
    assert_eq!(
        out,
        b"u 3 @* 43:{\"METHOD\":\"JSON\",\"DOWNLOAD_CREDITS\":\"1024\"},18:{\"type\":\"credits\"},"
    );
    out.clear();
    encode_credits(&mut out, b"u", 3, 1024, Protocol::Tnetstring);
    assert_eq!(
        out,
        b"u 3 @* 43:16:DOWNLOAD_CREDITS,4:1024,6:METHOD,4:JSON,}18:{\"type\":\"credits\"},"
    );
}

#[test]
fn duplicates_become_lists_of_at_most_five() {
    let headers = [
        header("X-A", b"1"),
        header("x-a", b"2\\"),
        header("X-a", b"3"),
        header("x-A", b"4"),
        header("X-A", b"5"),
        header("X-A", b"6"),
    ];
    let req = request(b"GET", b"/", &headers, b"/");
    let got = encode(b"s", 1, Protocol::Json, &req, &[], b"");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(r#""x-a":["1","2\\","3","4","5"]"#), "{text}");
    let got = encode(b"s", 1, Protocol::Tnetstring, &req, &[], b"");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("3:x-a,21:1:1,2:2\\,1:3,1:4,1:5,]"), "{text}");
}

#[test]
fn extra_replaces_client_value_in_place() {
    let headers = [header("X-Forwarded-For", b"6.6.6.6"), header("Host", b"h")];
    let req = request(b"GET", b"/", &headers, b"/");
    let got = encode(b"s", 1, Protocol::Json, &req, XFF, b"");
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("6.6.6.6"));
    assert_eq!(text.matches("x-forwarded-for").count(), 1);
}

#[test]
fn header_count_limit_drops_later_fields() {
    let headers = [header("A", b"1"), header("B", b"2"), header("A", b"3")];
    let mut req = request(b"GET", b"/", &headers, b"/");
    req.header_count_max = 1;
    let got = encode(b"s", 1, Protocol::Json, &req, XFF, b"");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(r#""a":"1""#), "{text}");
    assert!(!text.contains(r#""b""#), "{text}");
}

#[test]
fn target_split() {
    let target = split_target(b"/a/b?x=1?y#frag?/");
    assert_eq!(target.path, b"/a/b");
    assert_eq!(target.uri, b"/a/b?x=1?y");
    assert_eq!(target.query, Some(&b"x=1?y"[..]));
    assert_eq!(target.fragment, Some(&b"frag?/"[..]));
    let bare = split_target(b"/x?#");
    assert_eq!(
        (bare.query, bare.fragment),
        (Some(&b""[..]), Some(&b""[..]))
    );
    let absolute = split_target(b"http://h:80/p?q");
    assert_eq!(
        (absolute.path, absolute.uri),
        (&b"//h:80/p"[..], &b"//h:80/p?q"[..])
    );
    assert_eq!(split_target(b"*").path, b"*");
    assert_eq!(host_name(b"example.com:80"), b"example.com");
    assert_eq!(host_name(b":80"), b":80");
    assert_eq!(host_name(b"[::1]:80"), b"[");
}

#[test]
fn flags_text() {
    assert_eq!(ws_flags(0x01).0, *b"0x81");
    assert_eq!(ws_flags(0x8A).0, *b"0x8A");
    assert_eq!(ws_flags(0x09).0, *b"0x89");
}

#[test]
fn fnv_matches_reference() {
    // FNV-1a test vectors.
    assert_eq!(fnv1a(b""), 0x811c9dc5);
    assert_eq!(fnv1a(b"a"), 0xe40c292c);
    assert_eq!(fnv1a(b"foobar"), 0xbf9cf968);
}

#[test]
fn table_grows_and_persists() {
    // 129 keys grow a fresh table to 128 chains; the next request starts from there.
    let hashes: Vec<u32> = (0..129u32).map(|key| fnv1a(&key.to_le_bytes())).collect();
    let scan = ScanOrder::simulate(&hashes, 64);
    assert_eq!(scan.chains, 128);
    let mut sorted = scan.as_slice().to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..129u16).collect::<Vec<_>>());
    let mut table = HeaderTable::new();
    table.grew_to(scan.chains);
    table.begin_request();
    assert_eq!(table.chains(), 128);
}

#[test]
fn reply_grammar() {
    let reply = parse_reply(b"UUID-1 5:6 7 8, HTTP/1.1 200 OK", 128).unwrap();
    assert_eq!(reply.uuid, b"UUID-1");
    assert_eq!(reply.ids().collect::<Vec<_>>(), [6, 7, 8]);
    assert_eq!(reply.body, b"HTTP/1.1 200 OK");
    assert!(!reply.extended && !reply.is_close());
    let close = parse_reply(b"u 2:12, ", 128).unwrap();
    assert!(close.is_close());
    assert_eq!(close.ids().collect::<Vec<_>>(), [12]);
    let trailing = parse_reply(b"u 4:1 2 , x", 128).unwrap();
    assert_eq!(trailing.ids().collect::<Vec<_>>(), [1, 2]);
    let x = parse_reply(b"u 5:X 1 2, 1:a,]", 128).unwrap();
    assert!(x.extended);
    assert_eq!(x.ids().collect::<Vec<_>>(), [1, 2]);
    let big = parse_reply(b"u 20:99999999999999999999, b", 128).unwrap();
    assert_eq!(big.ids().next(), Some(u64::MAX));
    assert_eq!(mongrel2_int_id(u64::MAX), -1);
    assert_eq!(conn_id(u64::MAX), None);
    assert_eq!(mongrel2_int_id(4_294_967_297), 1);
}

#[test]
fn reply_errors() {
    use ReplyError::*;
    let cases: &[(&[u8], ReplyError)] = &[
        (b"", Empty),
        (b" 1:1, x", BadUuid),
        (b"u_u 1:1, x", BadUuid),
        (b"u", BadUuid),
        (b"u :1, x", BadLength),
        (b"u 1;1, x", BadLength),
        (b"u x:1, x", BadLength),
        (b"u 2:1, x", LengthMismatch),
        (b"u 3:1, x", LengthMismatch),
        (b"u 0:1, x", LengthMismatch),
        (b"u 9:1, x", LengthMismatch),
        (b"u 99999999999:1, x", LengthMismatch),
        (b"u 1:a, x", BadId),
        (b"u 4:1  2, x", BadId),
        (b"u 2: 1, x", BadId),
        (b"u 1:X, x", BadId),
        (b"u 4:X  1, x", BadId),
        (b"u 0:, x", NoIds),
        (b"u 2:X , x", NoIds),
        (b"u 1:1,x", MissingSpace),
        (b"u 1:1,", MissingSpace),
        (b"u 3:1 2", LengthMismatch),
    ];
    for (input, error) in cases {
        assert_eq!(
            parse_reply(input, 128),
            Err(*error),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(parse_reply(b"u 5:1 2 3, x", 2), Err(TooManyIds));
    assert!(parse_reply(b"u 5:1 2 3, x", 3).is_ok());
}

#[test]
fn reply_every_prefix_is_refused_or_shorter() {
    let full: &[u8] = b"UUID 5:6 7 8, body";
    for end in 0..full.len() {
        let prefix = &full[..end];
        match parse_reply(prefix, 128) {
            Ok(reply) => assert!(end >= 14 && reply.body.len() == end - 14),
            Err(_) => assert!(end < 14),
        }
    }
}

#[test]
fn extended_bodies() {
    let control = parse_extended(b"31:3:ctl,21:10:keep-alive,4:true!}]").unwrap();
    let Extended::Control(control) = control else {
        panic!()
    };
    assert!(control.keep_alive && !control.cancel && control.credits.is_none());
    let credits = parse_extended(b"27:3:ctl,17:7:credits,4:1024#}]").unwrap();
    assert!(matches!(
        credits,
        Extended::Control(Control {
            credits: Some(1024),
            ..
        })
    ));
    let bad_credits = parse_extended(b"27:3:ctl,17:7:credits,4:1024,}]").unwrap();
    assert!(matches!(
        bad_credits,
        Extended::Control(Control {
            bad_credits: true,
            ..
        })
    ));
    let cancel = parse_extended(b"22:3:ctl,12:6:cancel,0:~}]").unwrap();
    assert!(cancel.is_cancel());
    assert!(matches!(
        parse_extended(b"9:3:ctl,0:~]"),
        Ok(Extended::BadControl)
    ));
    assert!(matches!(
        parse_extended(b"15:8:sendfile,1:x,]"),
        Ok(Extended::Other {
            key: b"sendfile",
            ..
        })
    ));
    assert_eq!(
        parse_extended(b"6:3:ctl,]").unwrap_err(),
        ExtendedError::NotPair
    );
    assert_eq!(
        parse_extended(b"8:1:1#1:x,]").unwrap_err(),
        ExtendedError::KeyNotString
    );
    assert_eq!(
        parse_extended(b"3:ctl,").unwrap_err(),
        ExtendedError::NotPair
    );
    assert_eq!(
        parse_extended(b"9:3:ctl,0:~]x").unwrap_err(),
        ExtendedError::NotTnetstring
    );
    assert_eq!(
        parse_extended(b"").unwrap_err(),
        ExtendedError::NotTnetstring
    );
}

#[test]
fn stream_chunk_has_only_alternate_headers() {
    let req = request(b"POST", b"/up", &[], b"/up");
    let mut out = Vec::new();
    let extra: &[(&[u8], &[u8])] = &[(b"UPLOAD_STREAM", b"1024"), (b"UPLOAD_STREAM_DONE", b"1")];
    let message = Message {
        sender: b"s",
        conn_id: 9,
        protocol: Protocol::Json,
        request: &req,
        extra,
        body: b"abc",
    };
    encode_stream_chunk(&message, &mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("s 9 /up "), "{text}");
    assert!(text.ends_with("3:abc,"), "{text}");
    assert!(!text.contains("PATH") && !text.contains("METHOD"), "{text}");
}
