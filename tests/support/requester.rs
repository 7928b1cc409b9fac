//! `Requester`: a ZHTTP requester over real ZeroMQ, as pushpin-proxy connects to a
//! client-mode connection manager (PUSH to `-in`, ROUTER to `-in-stream` with its own
//! identity, SUB to `-out` subscribed to `"<from> "`). Written independently of zring
//! (its tnetstring is `tn`'s). Used against zring and, for parity, against zurl.
use std::time::{Duration, Instant};

use super::tn::{self, Value};

pub struct Requester {
    _ctx: zmq::Context,
    push: zmq::Socket,
    router: zmq::Socket,
    sub: zmq::Socket,
    pub from: String,
    /// The responder's `from`, learned from its first reply.
    pub responder: Option<Vec<u8>>,
    next_id: u32,
}

/// The endpoints of a responder: (first packets, follow-ups, replies).
pub struct Endpoints {
    pub in_: String,
    pub in_stream: String,
    pub out: String,
}

impl Endpoints {
    /// pushpin-connmgr's derivation from a base (as zring's `--zserver-stream`).
    pub fn from_base(base: &str) -> Endpoints {
        Endpoints {
            in_: format!("{base}-in"),
            in_stream: format!("{base}-in-stream"),
            out: format!("{base}-out"),
        }
    }
}

/// One exchange's replies, in order.
#[derive(Debug, Default)]
pub struct Replies {
    pub packets: Vec<Value>,
}

impl Replies {
    pub fn kinds(&self) -> Vec<String> {
        self.packets.iter().map(|p| p.kind()).collect()
    }

    /// The response head (the first packet with `code`).
    pub fn head(&self) -> Option<&Value> {
        self.packets.iter().find(|p| p.get("code").is_some())
    }

    pub fn code(&self) -> Option<i64> {
        self.head()?.get("code")?.as_int()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let Some(Value::List(hs)) = self.head()?.get("headers") else {
            return None;
        };
        hs.iter().find_map(|h| match h {
            Value::List(nv) if nv.len() == 2 => {
                let n = String::from_utf8_lossy(nv[0].as_bytes()?).to_string();
                n.eq_ignore_ascii_case(name)
                    .then(|| String::from_utf8_lossy(nv[1].as_bytes().unwrap_or(b"")).to_string())
            }
            _ => None,
        })
    }

    pub fn body(&self) -> Vec<u8> {
        self.packets
            .iter()
            .filter(|p| p.kind() == "data")
            .flat_map(|p| {
                p.get("body")
                    .and_then(|b| b.as_bytes())
                    .unwrap_or(b"")
                    .to_vec()
            })
            .collect()
    }

    pub fn condition(&self) -> Option<String> {
        self.packets.iter().find_map(|p| p.str_of("condition"))
    }

    pub fn last_kind(&self) -> String {
        self.packets.last().map(|p| p.kind()).unwrap_or_default()
    }
}

fn s(v: &str) -> Value {
    Value::Str(v.as_bytes().to_vec())
}

impl Requester {
    pub fn connect(ep: &Endpoints, from: &str) -> Requester {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_linger(0).unwrap();
        push.connect(&ep.in_).unwrap();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.set_identity(from.as_bytes()).unwrap();
        router.set_linger(0).unwrap();
        router.set_router_mandatory(true).unwrap();
        router.connect(&ep.in_stream).unwrap();
        let sub = ctx.socket(zmq::SUB).unwrap();
        sub.set_subscribe(format!("{from} ").as_bytes()).unwrap();
        sub.connect(&ep.out).unwrap();
        // The SUB's subscription and the PUSH's pipe take a moment (a PUB drops what it
        // sends before the subscription arrives).
        std::thread::sleep(Duration::from_millis(300));
        Requester {
            _ctx: ctx,
            push,
            router,
            sub,
            from: from.to_string(),
            responder: None,
            next_id: 0,
        }
    }

    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.from, self.next_id)
    }

    /// Sends a first packet: `from`, `id`, `seq 0`, then `fields`.
    pub fn start(&mut self, id: &str, fields: Vec<(&str, Value)>) {
        let mut kv = vec![
            (b"from".to_vec(), s(&self.from)),
            (b"id".to_vec(), s(id)),
            (b"seq".to_vec(), Value::Int(0)),
        ];
        kv.extend(fields.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)));
        let mut msg = b"T".to_vec();
        msg.extend(tn::encode(&Value::Dict(kv)));
        self.push.send(msg, 0).unwrap();
    }

    /// Sends a follow-up to the responder (its `from` must be known).
    pub fn send(&mut self, id: &str, seq: i64, fields: Vec<(&str, Value)>) {
        let to = self.responder.clone().expect("no reply with from yet");
        let mut kv = vec![
            (b"from".to_vec(), s(&self.from)),
            (b"id".to_vec(), s(id)),
            (b"seq".to_vec(), Value::Int(seq)),
        ];
        kv.extend(fields.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)));
        let mut msg = b"T".to_vec();
        msg.extend(tn::encode(&Value::Dict(kv)));
        self.router.send(&to[..], zmq::SNDMORE).unwrap();
        self.router.send(&b""[..], zmq::SNDMORE).unwrap();
        self.router.send(msg, 0).unwrap();
    }

    /// The next reply for us within `timeout` (SUB, or the ROUTER for `router-resp`).
    pub fn recv(&mut self, timeout: Duration) -> Option<Value> {
        let mut items = [
            self.sub.as_poll_item(zmq::POLLIN),
            self.router.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, timeout.as_millis() as i64).ok()?;
        let (sub_ready, router_ready) = (items[0].is_readable(), items[1].is_readable());
        let payload = if sub_ready {
            let m = self.sub.recv_bytes(0).ok()?;
            let sp = m.iter().position(|&b| b == b' ')?;
            m[sp + 1..].to_vec()
        } else if router_ready {
            let parts = self.router.recv_multipart(0).ok()?;
            parts.last()?.clone()
        } else {
            return None;
        };
        assert_eq!(payload.first(), Some(&b'T'), "not a tnetstring packet");
        let v = tn::decode(&payload[1..]).expect("bad tnetstring from the responder");
        if let Some(f) = v.get("from").and_then(|f| f.as_bytes()) {
            self.responder = Some(f.to_vec());
        }
        Some(v)
    }

    /// Collects one exchange's replies until its last packet (`error`, `cancel`, or a data
    /// packet without `more`), granting `credit_step` more credits whenever a body packet
    /// arrives when `credit_step` > 0. Panics after `timeout`.
    pub fn collect(&mut self, id: &str, credit_step: i64, timeout: Duration) -> Replies {
        let end = Instant::now() + timeout;
        let mut r = Replies::default();
        let mut seq = 1;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no end of the exchange within {timeout:?}: {} packets, the last {} seq {:?}",
                r.packets.len(),
                r.last_kind(),
                r.packets.last().and_then(|p| p.get("seq")?.as_int())
            );
            let Some(p) = self.recv(left) else { continue };
            if p.get("id").and_then(|i| i.as_bytes()) != Some(id.as_bytes()) {
                continue;
            }
            let kind = p.kind();
            let more = p.get("more").and_then(|m| m.as_bool()).unwrap_or(false);
            let body_len = p
                .get("body")
                .and_then(|b| b.as_bytes())
                .map_or(0, |b| b.len());
            r.packets.push(p);
            match kind.as_str() {
                "error" | "cancel" => return r,
                "data" if !more => return r,
                "data" if credit_step > 0 && body_len > 0 => {
                    self.send(
                        id,
                        seq,
                        vec![
                            ("type", s("credit")),
                            ("credits", Value::Int(body_len as i64)),
                        ],
                    );
                    seq += 1;
                }
                _ => {}
            }
        }
    }
}

/// zring in client mode only, on `rt`: `--zserver-stream` on an ipc base in a fresh temp dir
/// (`<tag>-<rt>`), `--id zring-c`, log level 1; `setup` adds the suite's flags and
/// environment (workers, CA store, ...). Returns once zring has bound its sockets, with the
/// requester's endpoints and the dir.
pub fn client_mode_zring(
    tag: &str,
    rt: &str,
    setup: impl FnOnce(&mut std::process::Command),
) -> (super::Proc, Endpoints, std::path::PathBuf) {
    let dir = super::temp_dir(&format!("{tag}-{rt}"));
    let base = format!("ipc://{}/client", dir.display());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zring"));
    cmd.args([
        "--runtime",
        rt,
        "--zserver-stream",
        &base,
        "--id",
        "zring-c",
    ])
    .args(["--log-level", "1"])
    .stdout(std::process::Stdio::null());
    setup(&mut cmd);
    let mut p = super::Proc::start("zring", &mut cmd);
    let ready = dir.join("client-in-stream");
    let end = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(p.exited().is_none(), "zring exited: {}", p.log_tail(20));
        assert!(
            Instant::now() < end,
            "zring did not bind {}",
            ready.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, Endpoints::from_base(&base), dir)
}
