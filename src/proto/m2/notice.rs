//! Messages Mongrel2 sends a handler on its own, with fixed headers
//! (src/handler.c `Handler_notify_leave`, `Handler_notify_credits`).

use std::io::Write as _;

use super::request::{netstring, write_body, write_prefix};
use super::Protocol;

/// The path of every notice.
pub const NOTICE_PATH: &[u8] = b"@*";
/// Body of a disconnect notice.
pub const DISCONNECT_BODY: &[u8] = b"{\"type\":\"disconnect\"}";
/// Body of a download-credits notice.
pub const CREDITS_BODY: &[u8] = b"{\"type\":\"credits\"}";

/// Appends a disconnect notice: sent when a client goes away, and for every id in a reply
/// that names no open connection. `id` is written with C's `%d`: for a reply's unknown id
/// pass [`super::reply::mongrel2_int_id`] of what the handler sent, so the handler gets back
/// the number Mongrel2 would have printed.
pub fn encode_disconnect(out: &mut Vec<u8>, sender: &[u8], id: i32, protocol: Protocol) {
    prefix(out, sender, id);
    match protocol {
        Protocol::Json => out.extend_from_slice(b"17:{\"METHOD\":\"JSON\"},"),
        Protocol::Tnetstring => out.extend_from_slice(b"16:6:METHOD,4:JSON,}"),
    }
    write_body(out, DISCONNECT_BODY);
}

/// Appends a download-credits notice (`download.flow_control=1`): the connection drained
/// `credits` bytes of output.
pub fn encode_credits(out: &mut Vec<u8>, sender: &[u8], id: u32, credits: u32, protocol: Protocol) {
    // Mongrel2 prints both with %d.
    let credits = credits as i32;
    write_prefix(out, sender, id, NOTICE_PATH);
    match protocol {
        Protocol::Json => netstring(out, |out| {
            out.extend_from_slice(b"{\"METHOD\":\"JSON\",\"DOWNLOAD_CREDITS\":\"");
            let _ = write!(out, "{credits}");
            out.extend_from_slice(b"\"}");
        }),
        Protocol::Tnetstring => {
            // Rendered backwards: METHOD set first, so it comes last.
            let mut digits = [0u8; 12];
            let mut cursor = std::io::Cursor::new(&mut digits[..]);
            let _ = write!(cursor, "{credits}");
            let length = cursor.position() as usize;
            let mut writer = crate::proto::tnetstring::Writer::new(out);
            writer.begin_dict();
            writer.bytes(b"DOWNLOAD_CREDITS");
            writer.bytes(&digits[..length]);
            writer.bytes(b"METHOD");
            writer.bytes(b"JSON");
            writer.end_dict();
            writer.finish();
        }
    }
    write_body(out, CREDITS_BODY);
}

fn prefix(out: &mut Vec<u8>, sender: &[u8], id: i32) {
    out.extend_from_slice(sender);
    out.push(b' ');
    let _ = write!(out, "{id}");
    out.push(b' ');
    out.extend_from_slice(NOTICE_PATH);
    out.push(b' ');
}
