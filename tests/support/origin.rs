//! `Origin`: a small real HTTP/1.1 server on loopback for client-mode tests (a thread per
//! connection, std sockets; written independently of zring). It records every request it
//! got (method, target, headers, body as received after de-chunking) and answers by path:
//!
//! | path | answer |
//! |---|---|
//! | `/get` | 200, `Content-Length`, body `hello` |
//! | `/chunked` | 200 chunked, `abc` + `defg` |
//! | `/eof` | 200 with neither length nor chunking: body `until close`, then close |
//! | `/head` | 200, `Content-Length: 10`, body only for non-HEAD |
//! | `/204`, `/304` | that status, no body (304 says `Content-Length: 5`) |
//! | `/continue` | `100 Continue`, then 200 `ok` |
//! | `/echo` | 200, the request body back, `X-Method`, `X-Framing` (`length N` / `chunked` / `none`) |
//! | `/big/N` | 200, N bytes (`Content-Length`), written in 64 KiB pieces |
//! | `/redirect/N` | 302 to `/redirect/N-1`; `/redirect/0` is 200 `landed` |
//! | `/see-other` | 303 to `/echo` |
//! | `/to/URL` | 302 to the URL after `/to/` |
//! | `/flaky` | keep-alive origins: 200 `fresh` as a connection's first request; a later one on
//! |  | the same connection is not answered: the connection closes (a stale pooled one) |
//! | `/truncated` | 200 read-to-EOF body `cut`, then the TCP close without TLS `close_notify` |
//!
//! [`Origin::start_with`] adds TLS (a rustls server, the real protocol) and keep-alive
//! (responses without `Connection: close`, several requests per connection), and counts
//! the connections it accepted.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Origin {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted so far.
    pub accepts: Arc<AtomicUsize>,
    tls: bool,
}

/// How an origin serves.
#[derive(Clone, Default)]
pub struct Opts {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub keep_alive: bool,
}

/// A plain or TLS connection, as the origin reads and writes it.
trait Link: Read + Write + Send {
    /// The response is over and the origin closes: TLS sends `close_notify` unless `cut`.
    fn finish(&mut self, cut: bool);
}

impl Link for TcpStream {
    fn finish(&mut self, _cut: bool) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Link for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn finish(&mut self, cut: bool) {
        if !cut {
            self.conn.send_close_notify();
            let _ = self.flush();
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }
}

impl Origin {
    pub fn start() -> Origin {
        Origin::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepts = Arc::new(AtomicUsize::new(0));
        let (s, n, o) = (seen.clone(), accepts.clone(), opts.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                let o = o.clone();
                std::thread::spawn(move || {
                    let link: Box<dyn Link> = match &o.tls {
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                                return;
                            };
                            Box::new(rustls::StreamOwned::new(conn, stream))
                        }
                        None => Box::new(stream),
                    };
                    let _ = serve(link, &s, o.keep_alive);
                });
            }
        });
        Origin {
            port,
            seen,
            accepts,
            tls: opts.tls.is_some(),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("origin saw no request")
    }
}

fn serve(link: Box<dyn Link>, seen: &Mutex<Vec<Seen>>, keep_alive: bool) -> std::io::Result<()> {
    let mut r = BufReader::new(link);
    let mut served = 0;
    // Bounded by the client: each round reads one request or ends.
    loop {
        let Some((_path, cut, close)) = answer(&mut r, seen, keep_alive, served)? else {
            // The client closed, or a stale request: close without an answer.
            r.get_mut().finish(true);
            break;
        };
        served += 1;
        if close || !keep_alive {
            let w = r.get_mut();
            w.flush()?;
            w.finish(cut);
            break;
        }
    }
    // Drain until the peer closes (so our close is not a reset).
    let mut sink = [0u8; 1024];
    while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}

/// Reads one request and answers it. `None`: the client closed, or a stale request was
/// dropped. Else (path, close without close_notify, the connection ends).
fn answer(
    r: &mut BufReader<Box<dyn Link>>,
    seen: &Mutex<Vec<Seen>>,
    keep_alive: bool,
    served: usize,
) -> std::io::Result<Option<(String, bool, bool)>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let framing = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
        "chunked".to_string()
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
        format!("length {n}")
    } else {
        "none".to_string()
    };
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        headers,
        body: body.clone(),
    });
    let path = target.as_str();
    let w = r.get_mut();
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let simple = |w: &mut Box<dyn Link>, status: &str, extra: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}{connection}\r\n",
            body.len()
        );
        w.write_all(head.as_bytes())?;
        w.write_all(body)
    };
    let mut close = false;
    let mut cut = false;
    match path {
        "/get" => simple(w, "200 OK", "X-Origin: yes\r\n", b"hello")?,
        "/chunked" => w.write_all(
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{connection}\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n").as_bytes(),
        )?,
        "/eof" | "/truncated" => {
            let body = if path == "/eof" { "until close" } else { "cut" };
            w.write_all(format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}").as_bytes())?;
            close = true;
            cut = path == "/truncated";
        }
        "/flaky" if served > 0 => return Ok(None),
        "/flaky" => simple(w, "200 OK", "", b"fresh")?,
        "/head" => {
            w.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n{connection}\r\n").as_bytes())?;
            if method != "HEAD" {
                w.write_all(b"0123456789")?;
            }
        }
        "/204" => w.write_all(format!("HTTP/1.1 204 No Content\r\n{connection}\r\n").as_bytes())?,
        "/304" => w.write_all(format!("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n{connection}\r\n").as_bytes())?,
        "/continue" => {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            simple(w, "200 OK", "", b"ok")?
        }
        "/echo" => simple(
            w,
            "200 OK",
            &format!("X-Method: {method}\r\nX-Framing: {framing}\r\n"),
            &body,
        )?,
        "/see-other" => simple(w, "303 See Other", "Location: /echo\r\n", b"")?,
        p if p.starts_with("/big/") => {
            let n: usize = p[5..].parse().unwrap_or(0);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n{connection}\r\n");
            w.write_all(head.as_bytes())?;
            let piece: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
            let mut left = n;
            while left > 0 {
                let k = left.min(piece.len());
                w.write_all(&piece[..k])?;
                left -= k;
            }
        }
        p if p.starts_with("/redirect/") => {
            let n: u32 = p[10..].parse().unwrap_or(0);
            match n {
                0 => simple(w, "200 OK", "", b"landed")?,
                n => simple(
                    w,
                    "302 Found",
                    &format!("Location: /redirect/{}\r\n", n - 1),
                    b"",
                )?,
            }
        }
        p if p.starts_with("/to/") => {
            simple(w, "302 Found", &format!("Location: {}\r\n", &p[4..]), b"")?
        }
        _ => simple(w, "404 Not Found", "", b"no")?,
    }
    w.flush()?;
    Ok(Some((target, cut, close)))
}
