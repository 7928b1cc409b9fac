//! Where an outbound request goes: its absolute URI taken apart (scheme, host, port, the
//! request target), a redirect's `Location` resolved against it, and the address policy
//! (`--deny-out-internal`). Pure functions: no DNS, no sockets.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest host name resolved (connmgr refuses longer names: `InvalidInput`).
pub const HOST_BYTES_MAX: usize = 255;
/// Longest URI accepted (a request target must fit a head).
pub const URI_BYTES_MAX: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Ws,
    Wss,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http | Scheme::Ws => 80,
            Scheme::Https | Scheme::Wss => 443,
        }
    }
}

/// An absolute `http(s)`/`ws(s)` URI, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower-cased; an IPv6 literal without its brackets.
    pub host: String,
    pub port: u16,
    /// Path and query (`/` when the URI had no path); never the fragment.
    pub path: String,
}

impl Target {
    /// Parses an absolute URI. `None`: not one zring can request (bad or unsupported
    /// scheme, no host, a bad port, user info, control bytes).
    pub fn parse(uri: &str) -> Option<Target> {
        if uri.len() > URI_BYTES_MAX || uri.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return None;
        }
        let (scheme, rest) = uri.split_once("://")?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return None,
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return None;
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            Some(p) => p,
            None => scheme.default_port(),
        };
        if host.is_empty() || host.len() > HOST_BYTES_MAX {
            return None;
        }
        let tail = tail.split('#').next().unwrap_or("");
        let path = match tail.starts_with('/') {
            true => tail.to_string(),
            false => format!("/{tail}"),
        };
        Some(Target {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    /// The `Host` header: the host, bracketed if IPv6, and the port unless the default.
    pub fn host_header(&self) -> String {
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match self.port == self.scheme.default_port() {
            true => host,
            false => format!("{host}:{}", self.port),
        }
    }

    /// The URI again (for resolving a relative redirect, and in logs).
    pub fn uri(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        };
        format!("{scheme}://{}{}", self.host_header(), self.path)
    }

    /// A redirect's `Location` resolved against this target (RFC 3986 5.2, the cases
    /// servers send: absolute, scheme-relative, absolute path, relative path).
    pub fn resolve(&self, location: &str) -> Option<Target> {
        let location = location.trim();
        if location.contains("://") {
            return Target::parse(location);
        }
        let base = self.uri();
        let (scheme, _) = base.split_once("://")?;
        if let Some(rest) = location.strip_prefix("//") {
            return Target::parse(&format!("{scheme}://{rest}"));
        }
        let origin = format!("{scheme}://{}", self.host_header());
        if location.starts_with('/') {
            return Target::parse(&format!("{origin}{location}"));
        }
        let path = self.path.split('?').next().unwrap_or("/");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let joined = match location.starts_with('?') {
            true => format!("{path}{location}"),
            false => format!("{dir}{location}"),
        };
        Target::parse(&format!("{origin}{}", remove_dot_segments(&joined)))
    }
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p > 0)?),
    };
    if host.contains(':') && !authority.starts_with('[') {
        return None;
    }
    Some((host, port))
}

fn remove_dot_segments(path: &str) -> String {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut p = out.join("/");
    if !p.starts_with('/') {
        p.insert(0, '/');
    }
    match query {
        Some(q) => format!("{p}?{q}"),
        None => p,
    }
}

/// True when `--deny-out-internal` refuses the address: pushpin-connmgr's list (127/8,
/// 10/8, 172.16/12, 192.168/16, 169.254/16, ::1, fc00::/7, fe80::/10) plus 0/8 ("this
/// network": Linux connects 0.0.0.0 to the local host), 100.64/10 (carrier-grade NAT), the
/// unspecified `::`, and IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible IPv6 addresses
/// judged by the IPv4 address they carry (`::ffff:10.0.0.1` reaches 10.0.0.1).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let s = v6.segments();
            // IPv4-compatible `::a.b.c.d` (deprecated, still routed to the v4 address by some
            // stacks); `::` and `::1` fall in here too.
            if s[..6] == [0; 6] {
                return v6.is_loopback()
                    || v6.is_unspecified()
                    || is_internal_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
            }
            (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0
        || a == 127
        || a == 10
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 169 && b == 254)
        || (a == 100 && (64..128).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(s: &str) -> bool {
        is_internal(s.parse().unwrap())
    }

    #[test]
    fn classifier_covers_connmgr_list_and_more() {
        for s in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
        ] {
            assert!(internal(s), "{s} should be internal");
        }
        for s in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "1.1.1.1",
            "2001:db8::1",
            "fec0::1",
            "::ffff:8.8.8.8",
            "2606:4700::1111",
        ] {
            assert!(!internal(s), "{s} should be allowed");
        }
    }

    #[test]
    fn parses_targets() {
        let t = Target::parse("http://Example.COM:8080/a/b?x=1#frag").unwrap();
        assert_eq!(t.scheme, Scheme::Http);
        assert_eq!(t.host, "example.com");
        assert_eq!(t.port, 8080);
        assert_eq!(t.path, "/a/b?x=1");
        assert_eq!(t.host_header(), "example.com:8080");
        let t = Target::parse("https://[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 443));
        assert_eq!(t.host_header(), "[::1]");
        let t = Target::parse("http://h?q").unwrap();
        assert_eq!(t.path, "/?q");
        for bad in [
            "ftp://h/",
            "http:///x",
            "http://u@h/",
            "http://h:0/",
            "http://h:99999/",
            "http://h /",
            "/relative",
            "http://::1/",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn resolves_redirects() {
        let base = Target::parse("http://a.test:81/x/y/z?q=1").unwrap();
        let r = |l: &str| base.resolve(l).map(|t| t.uri());
        assert_eq!(r("http://b.test/p").as_deref(), Some("http://b.test/p"));
        assert_eq!(r("//c.test/p").as_deref(), Some("http://c.test/p"));
        assert_eq!(r("/abs?k").as_deref(), Some("http://a.test:81/abs?k"));
        assert_eq!(r("rel").as_deref(), Some("http://a.test:81/x/y/rel"));
        assert_eq!(r("../up").as_deref(), Some("http://a.test:81/x/up"));
        assert_eq!(r("?n=2").as_deref(), Some("http://a.test:81/x/y/z?n=2"));
        assert_eq!(r("ftp://x/"), None);
    }
}
