//! Client mode's ZeroMQ sockets (`--zserver-stream`, `--zserver-req`), as pushpin-connmgr
//! opens them: per stream base a PULL (`-in`, first packets), a ROUTER (`-in-stream`,
//! identity = `--id`: follow-ups, and replies when a requester asked for `router-resp`)
//! and a PUB (`-out`, replies as `"<requester> T…"`); per req spec a ROUTER.
//!
//! A requester packet is decoded once here and queued for the worker that owns its
//! session: the worker is a hash of (`from`, `id`), so follow-ups find the session without
//! a table in the bridge. req-mode requests have no follow-ups and go round-robin.
use std::sync::Arc;

use super::{attach, Shared};
use crate::config::Config;
use crate::conn::out::Via;
use crate::limits;
use crate::log;
use crate::proto::zhttp_client;

/// A requester packet for a worker.
pub struct ClientIn {
    pub msg: zmq::Message,
    pub packet: zhttp_client::Request,
    /// Where it came from: PULL or the req ROUTER (a first packet), or the in-stream ROUTER.
    pub via: Via,
    pub first: bool,
}

impl ClientIn {
    /// The payload the packet's spans index into.
    pub fn buf(&self) -> &[u8] {
        &self.msg
    }
}

/// The worker owning session (`from`, `id`): FNV-1a over both, modulo the workers.
pub fn worker_of(from: &[u8], id: &[u8], workers: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in from.iter().chain(&[0xff]).chain(id) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % workers as u64) as usize
}

pub(super) struct ClientSockets {
    pull: Option<zmq::Socket>,
    in_stream: Option<zmq::Socket>,
    out: Option<zmq::Socket>,
    req: Option<zmq::Socket>,
    /// The next worker for a req-mode request.
    next_req: usize,
}

/// The three endpoints of a client-mode stream base: (PULL, ROUTER, PUB).
pub fn stream_endpoints(base: &str) -> Result<(String, String, String), String> {
    if let Some(path) = base.strip_prefix("ipc://") {
        return Ok((
            format!("ipc://{path}-in"),
            format!("ipc://{path}-in-stream"),
            format!("ipc://{path}-out"),
        ));
    }
    // tcp: P, P+1, P+2, as in server mode.
    crate::config::stream_endpoints(base)
}

pub(super) fn open(ctx: &zmq::Context, cfg: &Config, hwm: i32) -> Result<ClientSockets, String> {
    let zerr = |e: zmq::Error| format!("zmq: {e}");
    let mut s = ClientSockets {
        pull: None,
        in_stream: None,
        out: None,
        req: None,
        next_req: 0,
    };
    let connect = cfg.zserver_connect;
    if !cfg.zserver_stream.is_empty() {
        let pull = ctx.socket(zmq::PULL).map_err(zerr)?;
        pull.set_rcvhwm(limits::ZSERVER_PULL_HWM).map_err(zerr)?;
        pull.set_linger(0).map_err(zerr)?;
        let router = ctx.socket(zmq::ROUTER).map_err(zerr)?;
        router.set_identity(cfg.id.as_bytes()).map_err(zerr)?;
        router.set_router_mandatory(true).map_err(zerr)?;
        router.set_sndhwm(hwm).map_err(zerr)?;
        router.set_rcvhwm(hwm).map_err(zerr)?;
        router.set_linger(0).map_err(zerr)?;
        let out = ctx.socket(zmq::PUB).map_err(zerr)?;
        out.set_sndhwm(hwm).map_err(zerr)?;
        out.set_linger(0).map_err(zerr)?;
        let mut names = Vec::new();
        for base in &cfg.zserver_stream {
            let (a, b, c) = stream_endpoints(base)?;
            attach(&pull, &a, connect, cfg)?;
            attach(&router, &b, connect, cfg)?;
            attach(&out, &c, connect, cfg)?;
            names.extend([a, b, c]);
        }
        log!(
            log::INFO,
            "zhttp",
            "zhttp server (client mode) {} {}",
            if connect { "connect" } else { "bind" },
            names.join(",")
        );
        s.pull = Some(pull);
        s.in_stream = Some(router);
        s.out = Some(out);
    }
    if !cfg.zserver_req.is_empty() {
        let router = ctx.socket(zmq::ROUTER).map_err(zerr)?;
        router.set_sndhwm(limits::ZSERVER_PULL_HWM).map_err(zerr)?;
        router.set_rcvhwm(hwm).map_err(zerr)?;
        router.set_linger(0).map_err(zerr)?;
        for spec in &cfg.zserver_req {
            attach(&router, spec, connect, cfg)?;
        }
        log!(
            log::INFO,
            "zhttp",
            "zhttp req server (client mode) {} {}",
            if connect { "connect" } else { "bind" },
            cfg.zserver_req.join(",")
        );
        s.req = Some(router);
    }
    Ok(s)
}

/// Reads one multipart message whole.
fn recv_parts(sock: &zmq::Socket) -> Option<Vec<zmq::Message>> {
    let first = sock.recv_msg(zmq::DONTWAIT).ok()?;
    let mut more = first.get_more();
    let mut parts = vec![first];
    // Bounded by what libzmq delivered at once (a message arrives whole).
    while more && parts.len() < 64 {
        let m = sock.recv_msg(zmq::DONTWAIT).ok()?;
        more = m.get_more();
        parts.push(m);
    }
    Some(parts)
}

impl ClientSockets {
    pub fn poll_items<'a>(&'a self, items: &mut Vec<zmq::PollItem<'a>>, read: zmq::PollEvents) {
        for s in [&self.pull, &self.in_stream, &self.req]
            .into_iter()
            .flatten()
        {
            items.push(s.as_poll_item(read));
        }
    }

    /// Reads requester packets and queues them for their workers. True when an inbox is
    /// full (the bridge stops reading; ZeroMQ's HWM pushes back on requesters).
    pub fn deliver(&mut self, shared: &Shared, wake: &mut [bool]) -> bool {
        let mut full = false;
        for k in 0..3 {
            for _ in 0..limits::BRIDGE_BATCH_PACKETS_MAX {
                if full {
                    return true;
                }
                let sock = match k {
                    0 => self.pull.as_ref(),
                    1 => self.in_stream.as_ref(),
                    _ => self.req.as_ref(),
                };
                let Some(sock) = sock else { break };
                let Some(mut parts) = recv_parts(sock) else {
                    break;
                };
                let Some(msg) = parts.pop() else { continue };
                let via = match k {
                    2 => {
                        // REQ/DEALER envelope: routing frames, then the empty delimiter.
                        if parts.last().is_some_and(|d| d.is_empty()) {
                            parts.pop();
                        }
                        Via::Req(Arc::new(parts.iter().map(|p| p.to_vec()).collect()))
                    }
                    _ => Via::Stream,
                };
                full |= self.route(shared, wake, msg, via, k != 1);
            }
        }
        full
    }

    fn route(
        &mut self,
        shared: &Shared,
        wake: &mut [bool],
        msg: zmq::Message,
        via: Via,
        first: bool,
    ) -> bool {
        let packet = match zhttp_client::decode(&msg) {
            Ok(p) => p,
            Err(e) => {
                shared.metrics.bridge.zhttp_invalid.inc();
                log!(log::WARN, "zhttp", "dropping bad requester packet: {e:?}");
                return false;
            }
        };
        if log::enabled(log::TRACE) {
            log!(
                log::TRACE,
                "zhttp",
                "IN (client) {}",
                String::from_utf8_lossy(&msg[..msg.len().min(1000)])
            );
        }
        let workers = shared.inboxes.len();
        let from = packet.from.map_or(&b""[..], |f| f.get(&msg)).to_vec();
        let mut targets = vec![false; workers];
        match (&packet.ids, &via) {
            (Some(ids), Via::Stream) => {
                for (id, _) in ids.iter() {
                    targets[worker_of(&from, id.get(&msg), workers)] = true;
                }
            }
            _ => {
                targets[self.next_req % workers] = true;
                self.next_req = self.next_req.wrapping_add(1);
            }
        }
        let item = Arc::new(ClientIn {
            msg,
            packet,
            via,
            first,
        });
        let mut full = false;
        for (w, t) in targets.into_iter().enumerate() {
            if t {
                full |= shared.inboxes[w].push_client(item.clone());
                wake[w] = true;
            }
        }
        full
    }

    /// Sends a reply on the socket its route names. `None`: no such socket.
    pub fn send(&self, route: &super::Route, data: &[u8]) -> Option<zmq::Result<()>> {
        use super::Route;
        let flags = zmq::SNDMORE | zmq::DONTWAIT;
        match route {
            Route::Pub(addr) => self.out.as_ref().map(|s| {
                let mut m = Vec::with_capacity(addr.len() + 1 + data.len());
                m.extend_from_slice(addr);
                m.push(b' ');
                m.extend_from_slice(data);
                s.send(m, zmq::DONTWAIT)
            }),
            Route::ClientRouter(addr) => self.in_stream.as_ref().map(|s| {
                s.send(&addr[..], flags)
                    .and_then(|_| s.send(&b""[..], flags))
                    .and_then(|_| s.send(data, zmq::DONTWAIT))
            }),
            Route::ClientReq(envelope) => self.req.as_ref().map(|s| {
                let mut r = Ok(());
                for part in envelope.iter() {
                    r = r.and_then(|_| s.send(&part[..], flags));
                }
                r.and_then(|_| s.send(&b""[..], flags))
                    .and_then(|_| s.send(data, zmq::DONTWAIT))
            }),
            _ => None,
        }
    }
}

/// Client-mode packets queued per worker, at most (as `WORKER_INBOX_PACKETS_MAX`).
pub const CLIENT_INBOX_MAX: usize = limits::WORKER_INBOX_PACKETS_MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_worker_hash() {
        let (a, b, c) = stream_endpoints("ipc:///r/connmgr-client").unwrap();
        assert_eq!(a, "ipc:///r/connmgr-client-in");
        assert_eq!(b, "ipc:///r/connmgr-client-in-stream");
        assert_eq!(c, "ipc:///r/connmgr-client-out");
        let (a, b, c) = stream_endpoints("tcp://127.0.0.1:5000").unwrap();
        assert_eq!(
            (a.as_str(), b.as_str(), c.as_str()),
            (
                "tcp://127.0.0.1:5000",
                "tcp://127.0.0.1:5001",
                "tcp://127.0.0.1:5002"
            )
        );
        assert!(stream_endpoints("tcp://h").is_err());
        let w = worker_of(b"proxy_1", b"abc", 4);
        assert_eq!(w, worker_of(b"proxy_1", b"abc", 4));
        assert!(w < 4);
        let spread: std::collections::HashSet<_> = (0..64)
            .map(|i| worker_of(b"p", format!("id{i}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
