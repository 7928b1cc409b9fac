//! Mongrel2's access log line (src/log.c `make_log_message`): one tnetstring list and a
//! newline per logged request,
//! `[host, remote_addr, remote_port, time, method, path, version, status, size]`, where
//! `host` is the matched `Host`'s name, `time` Unix seconds, `version` the request's
//! (empty for JSON socket messages) and `size` the body size Mongrel2 counts (the request
//! body for handler requests, the file for `Dir`, the response's `Content-Length` for
//! `Proxy`; -1 when unknown).
use std::io::Write as _;

/// One access log entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub host: &'a [u8],
    pub remote_addr: &'a [u8],
    pub remote_port: u16,
    pub time_s: u64,
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub version: &'a [u8],
    pub status: u16,
    pub size: i64,
}

/// Appends `entry`'s line (newline included) to `out`.
pub fn encode(out: &mut Vec<u8>, entry: &Entry) {
    let mut items = Vec::with_capacity(96 + entry.path.len());
    string(&mut items, entry.host);
    string(&mut items, entry.remote_addr);
    number(&mut items, i64::from(entry.remote_port));
    number(&mut items, entry.time_s.min(i64::MAX as u64) as i64);
    string(&mut items, entry.method);
    string(&mut items, entry.path);
    string(&mut items, entry.version);
    number(&mut items, i64::from(entry.status));
    number(&mut items, entry.size);
    let _ = write!(out, "{}:", items.len());
    out.extend_from_slice(&items);
    out.extend_from_slice(b"]\n");
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    let _ = write!(out, "{}:", s.len());
    out.extend_from_slice(s);
    out.push(b',');
}

fn number(out: &mut Vec<u8>, n: i64) {
    let digits = n.to_string();
    let _ = write!(out, "{}:{digits}#", digits.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_as_mongrel2_writes_it() {
        let mut out = Vec::new();
        encode(
            &mut out,
            &Entry {
                host: b"localhost",
                remote_addr: b"127.0.0.1",
                remote_port: 40000,
                time_s: 1_700_000_000,
                method: b"GET",
                path: b"/json/x",
                version: b"HTTP/1.1",
                status: 200,
                size: 0,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "83:9:localhost,9:127.0.0.1,5:40000#10:1700000000#3:GET,7:/json/x,8:HTTP/1.1,3:200#1:0#]\n"
        );
    }
}
