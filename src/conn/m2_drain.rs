//! How a Mongrel2 connection drains (SIGTERM, or a successor took the listeners over).
//!
//! Mongrel2 never learns where a response ends (`m2.rs`), so closing a kept-alive
//! connection at the drain would cut a client whose next request is already on its way (wrk
//! counts each as an error). During a drain only, zring reads the head of the reply to the
//! connection's last request, adds `Connection: close` to it (so the client opens a new
//! connection, which the successor or nobody accepts, instead of reusing this one) and
//! closes once the body its `Content-Length` announces is written. A reply whose end cannot
//! be told (no length, chunked, a head split over replies) keeps the connection until the
//! handler closes it, the client does, or `--shutdown-timeout` cuts it.

/// Where a Mongrel2 connection is in the drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Drain {
    /// Not draining.
    Off,
    /// Draining with no request at a handler: one that arrives within the grace
    /// (`DRAIN_IDLE_GRACE_MS`) is served, the last one; else the connection closes.
    Grace,
    /// The last request is at its handler; the head of its reply is awaited. No further
    /// request is read.
    Reply,
    /// The reply's head is written; this many body bytes are still to come, then the
    /// connection closes.
    Body(u64),
    /// The reply's end cannot be told: the handler's close, the client's, or the drain's
    /// end closes the connection.
    Unknown,
}

/// The header the drain adds to the last reply's head.
const CONNECTION_CLOSE: &[u8] = b"Connection: close\r\n";

/// Appends `reply` (the first reply to the last request) to `out`, with `Connection:
/// close` added to its head when it begins with a whole HTTP/1 response head; returns what
/// follows.
pub(super) fn write_last_reply(reply: &[u8], out: &mut Vec<u8>) -> Drain {
    let mut headers = [httparse::EMPTY_HEADER; crate::limits::HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(reply) {
        Ok(httparse::Status::Complete(n)) if reply[..n].ends_with(b"\r\n\r\n") => n,
        // Not a response head this can extend (partial, bare LF, not HTTP): as it is.
        _ => {
            out.extend_from_slice(reply);
            return Drain::Unknown;
        }
    };
    let code = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let length: Option<u64> = match (code, header("transfer-encoding"), header("content-length")) {
        // RFC 9112 §6.3: these never have a body; a 1xx is followed by the final head.
        (100..=199, _, _) => None,
        (204 | 304, _, _) => Some(0),
        (_, Some(_), _) => None,
        (_, None, Some(v)) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse().ok()),
        (_, None, None) => None,
    };
    let closes = header("connection").is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    let end = head_len - 2; // before the blank line
    out.reserve(reply.len() + CONNECTION_CLOSE.len());
    out.extend_from_slice(&reply[..end]);
    if !closes {
        out.extend_from_slice(CONNECTION_CLOSE);
    }
    out.extend_from_slice(&reply[end..]);
    let body = (reply.len() - head_len) as u64;
    match length {
        Some(n) => Drain::Body(n.saturating_sub(body)),
        None => Drain::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! case {
        ($reply:expr, $want:expr, $drain:expr) => {{
            let mut out = Vec::new();
            assert_eq!(write_last_reply($reply, &mut out), $drain);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy($want)
            );
        }};
    }

    #[test]
    fn the_last_reply_says_connection_close_and_its_length_is_followed() {
        case!(
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n",
            Drain::Body(0)
        );
        // A body in later replies: counted down by the caller.
        case!(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhell",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhell",
            Drain::Body(6)
        );
        // Already closing: not added twice.
        case!(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
            Drain::Body(0)
        );
        case!(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nConnection: close\r\n\r\n",
            Drain::Body(0)
        );
    }

    #[test]
    fn a_reply_whose_end_cannot_be_told_is_written_and_waited_for() {
        case!(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            Drain::Unknown
        );
        case!(
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
            Drain::Unknown
        );
        // A head split over replies, bare LFs, not HTTP: unchanged.
        case!(
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"HTTP/1.1 200 OK\r\nContent-Le",
            Drain::Unknown
        );
        case!(
            b"HTTP/1.1 200 OK\n\nx",
            b"HTTP/1.1 200 OK\n\nx",
            Drain::Unknown
        );
        case!(b"raw bytes", b"raw bytes", Drain::Unknown);
    }
}
