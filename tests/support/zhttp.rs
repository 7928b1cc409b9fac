//! A recording ZHTTP handler over ZeroMQ (PULL/PUB/ROUTER on a connection manager's stream
//! endpoints, ROUTER on its req endpoint), with packets decoded by the harness's own
//! tnetstring codec (`tn`), not zring's.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::http::WAIT;
use super::peers::{CmProc, CM_ID, H1};
use super::tn::{self, Value};

/// One packet the handler received.
#[derive(Clone, Debug)]
pub struct Rec {
    /// `pull`, `router:<identity>` or `req`.
    pub via: String,
    /// The frame layout, e.g. `[peer, "", T]`.
    pub env: String,
    /// The ROUTER peer identity (the CM's), for replies in req mode.
    pub peer: Vec<u8>,
    /// The decoded packet (a dict), or a string describing why it did not decode.
    pub v: Value,
    pub raw: Vec<u8>,
}

impl Rec {
    pub fn kind(&self) -> String {
        self.v.kind()
    }
    pub fn id(&self) -> Vec<u8> {
        self.v
            .get("id")
            .and_then(Value::as_bytes)
            .unwrap_or_default()
            .to_vec()
    }
}

/// A ZHTTP handler that records everything it receives and sends what a script tells it.
pub struct Handler {
    ctx: zmq::Context,
    pull: zmq::Socket,
    publ: zmq::Socket,
    routers: Vec<(String, zmq::Socket)>,
    req: zmq::Socket,
    seqs: HashMap<Vec<u8>, i64>,
    /// Every packet received, in arrival order.
    pub log: Vec<Rec>,
    /// Everything sent, for failure messages.
    pub sent: Vec<String>,
}

impl Handler {
    /// Connects PULL/PUB and one ROUTER per identity to the stream endpoints of `cm`, and a
    /// ROUTER to its req endpoint; then lets the connections settle.
    pub fn connect(cm: &CmProc, identities: &[&str]) -> Handler {
        Self::connect_to(&cm.stream_base, Some(&cm.req_spec), identities, true)
    }

    /// Like `connect` on explicit endpoints; `pull` = whether to take first packets.
    pub fn connect_to(
        stream_base: &str,
        req_spec: Option<&str>,
        identities: &[&str],
        pull: bool,
    ) -> Handler {
        let ctx = zmq::Context::new();
        let sock = |t| {
            let s = ctx.socket(t).unwrap();
            s.set_linger(0).unwrap();
            s
        };
        let pull_s = sock(zmq::PULL);
        if pull {
            pull_s.connect(&format!("{stream_base}-out")).unwrap();
        }
        let publ = sock(zmq::PUB);
        publ.connect(&format!("{stream_base}-in")).unwrap();
        let mut routers = Vec::new();
        for id in identities {
            let r = sock(zmq::ROUTER);
            r.set_identity(id.as_bytes()).unwrap();
            r.connect(&format!("{stream_base}-out-stream")).unwrap();
            routers.push((id.to_string(), r));
        }
        let req = sock(zmq::ROUTER);
        if let Some(spec) = req_spec {
            req.connect(spec).unwrap();
        }
        // PUB/SUB subscriptions and ROUTER identities propagate asynchronously.
        std::thread::sleep(Duration::from_millis(300));
        Handler {
            ctx,
            pull: pull_s,
            publ,
            routers,
            req,
            seqs: HashMap::new(),
            log: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// The next packet from any socket within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Rec> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let mut items = Vec::new();
            items.push(self.pull.as_poll_item(zmq::POLLIN));
            items.push(self.req.as_poll_item(zmq::POLLIN));
            for (_, r) in &self.routers {
                items.push(r.as_poll_item(zmq::POLLIN));
            }
            let n = zmq::poll(&mut items, left.as_millis().max(1) as i64).unwrap();
            if n == 0 {
                if Instant::now() >= end {
                    return None;
                }
                continue;
            }
            let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
            drop(items);
            let (via, frames) = if ready[0] {
                ("pull".to_string(), self.pull.recv_multipart(0).unwrap())
            } else if ready[1] {
                ("req".to_string(), self.req.recv_multipart(0).unwrap())
            } else {
                let i = ready[2..].iter().position(|r| *r).unwrap();
                let (name, s) = &self.routers[i];
                (format!("router:{name}"), s.recv_multipart(0).unwrap())
            };
            let rec = make_rec(via, frames);
            self.log.push(rec.clone());
            return Some(rec);
        }
    }

    /// Receives until a packet satisfies `pred` (every packet is recorded either way).
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Rec) -> bool,
    ) -> Result<Rec, String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(r) if pred(&r) => return Ok(r),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "timed out after {timeout:?} waiting for {what}; received so far:\n{}",
                        self.log_summary()
                    ))
                }
            }
        }
    }

    /// Waits for a packet of `kind` (`data`, `credit`, ...) on `via` (prefix match).
    pub fn expect(&mut self, via: &str, kind: &str) -> Result<Rec, String> {
        self.wait_for(&format!("a {kind} packet via {via}"), WAIT, |r| {
            r.via.starts_with(via) && r.kind() == kind
        })
    }

    /// Records whatever arrives until nothing has come for `quiet`.
    pub fn drain(&mut self, quiet: Duration) {
        while self.recv(quiet).is_some() {}
    }

    pub fn log_summary(&self) -> String {
        let mut s = String::new();
        for r in &self.log {
            let _ = writeln!(s, "  {} {} {}", r.via, r.env, r.v);
        }
        if s.is_empty() {
            s.push_str("  (nothing)\n");
        }
        s
    }

    /// Sends a packet for session `id` to the CM over PUB, as `from` = `from`, with the next
    /// seq of that session (seqs belong to the session, so they continue across handoff).
    pub fn send(&mut self, from: &str, id: &[u8], fields: Vec<(&str, Value)>) {
        let seq = self.seqs.entry(id.to_vec()).or_insert(0);
        let mut kv: Vec<(Vec<u8>, Value)> = vec![
            (b"from".to_vec(), from.into()),
            (b"id".to_vec(), id.into()),
            (b"seq".to_vec(), Value::Int(*seq)),
        ];
        *seq += 1;
        kv.extend(fields.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)));
        self.send_value(&Value::Dict(kv));
    }

    /// Sends any dict to the CM over PUB, address-prefixed.
    pub fn send_value(&mut self, v: &Value) {
        let mut msg = format!("{CM_ID} T").into_bytes();
        msg.extend(tn::encode(v));
        self.sent.push(v.to_string());
        self.publ.send(msg, 0).unwrap();
    }

    /// Answers the session of `r` as H1.
    pub fn reply(&mut self, r: &Rec, fields: Vec<(&str, Value)>) {
        let id = r.id();
        self.send(H1, &id, fields);
    }

    /// Answers a req-mode request on the same ROUTER envelope.
    pub fn reply_req(&mut self, r: &Rec, fields: Vec<(&str, Value)>) {
        let mut kv: Vec<(Vec<u8>, Value)> = vec![(b"id".to_vec(), r.id().into())];
        kv.extend(fields.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)));
        let v = Value::Dict(kv);
        let mut payload = b"T".to_vec();
        payload.extend(tn::encode(&v));
        self.sent.push(v.to_string());
        self.req
            .send_multipart([r.peer.clone(), Vec::new(), payload], 0)
            .unwrap();
    }
}

fn make_rec(via: String, frames: Vec<Vec<u8>>) -> Rec {
    let (env, peer, payload) = if via == "pull" {
        let env = if frames.len() == 1 {
            "[T]".to_string()
        } else {
            format!("{} frames", frames.len())
        };
        (env, Vec::new(), frames.last().cloned().unwrap_or_default())
    } else if frames.len() == 3 && frames[1].is_empty() {
        (
            "[peer, \"\", T]".to_string(),
            frames[0].clone(),
            frames[2].clone(),
        )
    } else {
        (
            format!("{} frames", frames.len()),
            frames.first().cloned().unwrap_or_default(),
            frames.last().cloned().unwrap_or_default(),
        )
    };
    let v = match payload.split_first() {
        Some((b'T', rest)) => match tn::decode(rest) {
            Ok(v @ Value::Dict(_)) => v,
            Ok(v) => Value::Str(format!("<not a dict: {v}>").into_bytes()),
            Err(e) => Value::Str(format!("<bad tnetstring: {e}>").into_bytes()),
        },
        _ => Value::Str(format!("<no T prefix: {}>", tn::escape(&payload)).into_bytes()),
    };
    Rec {
        via,
        env,
        peer,
        v,
        raw: payload,
    }
}

/// A header list value: `[[name, value], ...]`.
pub fn hdrs(h: &[(&str, &str)]) -> Value {
    Value::List(
        h.iter()
            .map(|(n, v)| Value::List(vec![(*n).into(), (*v).into()]))
            .collect(),
    )
}

/// `Value::Int`.
pub fn int(i: i64) -> Value {
    Value::Int(i)
}
