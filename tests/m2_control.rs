//! Mongrel2's control port: the SAME config (loaded by `m2sh`) served by a real
//! `mongrel2-core` 1.12.2 and by zring started as `mongrel2 config.sqlite UUID` through a
//! symlink (both runtimes); the same control requests go to both (a ZeroMQ REQ socket as
//! `m2sh control` and m2adapter use), and the replies must be the same bytes where they are
//! deterministic (help, uuid, info, every error reply, kill) and the same structure where
//! they are not (time, status what=tasks, status what=net's times and fds). `m2sh control`
//! and `m2sh running` themselves run against both and must print the same.
#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::peers::require_bin;
use support::tn::{self, Value};
use support::{free_ports, wait_port, Proc, TempDir};

const IDENT: &str = "11111111-2222-3333-4444-555555555555";
const UUID: &str = "f400bf85-4538-4f7a-8908-67e313d515c2";
const QUIET: Duration = Duration::from_millis(400);

fn config(ports: &[u16]) -> String {
    format!(
        "h = Handler(send_spec='tcp://127.0.0.1:{}', send_ident='{IDENT}',\n\
         \x20   recv_spec='tcp://127.0.0.1:{}', recv_ident='', protocol='json')\n\
         main = Server(uuid='{UUID}', access_log='/logs/access.log',\n\
         \x20   error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',\n\
         \x20   pid_file='/run/mongrel2.pid', bind_addr='127.0.0.1', port={},\n\
         \x20   hosts=[Host(name='localhost', routes={{'/json': h,\n\
         \x20      '/static/': Dir(base='static/', index_file='index.html', default_ctype='text/plain')}})])\n\
         settings = {{'server.daemonize': 0}}\n\
         servers = [main]\n",
        ports[0], ports[1], ports[2]
    )
}

/// A server under test with its handler and a control client.
struct Peer {
    dir: TempDir,
    /// The handler's send and recv ports (the config's).
    handler_ports: [u16; 2],
    port: u16,
    proc: Proc,
    _context: zmq::Context,
    pull: zmq::Socket,
    publ: zmq::Socket,
    ctl: zmq::Socket,
}

fn m2sh(dir: &TempDir, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(require_bin("m2sh"))
        .args(args)
        .current_dir(&dir.path)
        .env("LOGNAME", "zring")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running m2sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "m2sh {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Peer {
    /// `kind`: `mongrel2`, or a zring runtime started through a `mongrel2` symlink.
    fn start(kind: &str) -> Peer {
        Self::start_with(kind, true)
    }

    /// `handler: false`: the test's handler sockets connect nowhere (another handler, such
    /// as m2adapter, takes the requests).
    fn start_with(kind: &str, handler: bool) -> Peer {
        let dir = TempDir::new(&format!("m2ctl-{kind}"));
        for sub in ["logs", "run", "tmp", "static"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("static/index.html"), "index\n").unwrap();
        let ports = free_ports(3);
        std::fs::write(dir.join("m2.conf"), config(&ports)).unwrap();
        m2sh(
            &dir,
            &["load", "-config", "m2.conf", "-db", "config.sqlite"],
            "",
        );
        let mut command = if kind == "mongrel2" {
            Command::new(require_bin("mongrel2"))
        } else {
            let bin = dir.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let link = bin.join("mongrel2");
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_zring"), &link).unwrap();
            Command::new(link)
        };
        command.args(["config.sqlite", UUID]).current_dir(&dir.path);
        if kind != "mongrel2" {
            command.args(["--runtime", kind, "--workers", "2"]);
        }
        let mut proc = Proc::spawn(kind, &mut command, &dir.path);
        wait_port(ports[2], &mut proc, Duration::from_secs(10));
        let context = zmq::Context::new();
        let hp = if handler {
            ports.clone()
        } else {
            free_ports(2)
        };
        let pull = context.socket(zmq::PULL).unwrap();
        pull.connect(&format!("tcp://127.0.0.1:{}", hp[0])).unwrap();
        let publ = context.socket(zmq::PUB).unwrap();
        publ.connect(&format!("tcp://127.0.0.1:{}", hp[1])).unwrap();
        let ctl = context.socket(zmq::REQ).unwrap();
        ctl.set_linger(0).unwrap();
        ctl.connect(&format!("ipc://{}/run/control", dir.path.display()))
            .unwrap();
        std::thread::sleep(QUIET); // PUB/SUB slow joiner
        Peer {
            dir,
            handler_ports: [ports[0], ports[1]],
            port: ports[2],
            proc,
            _context: context,
            pull,
            publ,
            ctl,
        }
    }

    fn ask_bytes(&self, request: &[u8]) -> Vec<u8> {
        self.ctl.send(request, 0).unwrap();
        assert!(
            self.ctl.poll(zmq::POLLIN, 5000).unwrap() > 0,
            "no control reply to {:?}\n{}",
            String::from_utf8_lossy(request),
            self.proc.log_tail(20)
        );
        self.ctl.recv_bytes(0).unwrap()
    }

    fn ask(&self, command: &str, args: Vec<(&str, Value)>) -> Vec<u8> {
        let args = args
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect();
        self.ask_bytes(&tn::encode(&Value::List(vec![
            command.into(),
            Value::Dict(args),
        ])))
    }

    fn client(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn frame(&self) -> Option<Vec<u8>> {
        (self.pull.poll(zmq::POLLIN, 5000).unwrap() > 0).then(|| self.pull.recv_bytes(0).unwrap())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.proc.stop();
    }
}

/// Requests whose replies are the same bytes from any Mongrel2 1.12.2.
fn fixed_requests() -> Vec<Vec<u8>> {
    let list = |items: Vec<Value>| tn::encode(&Value::List(items));
    let dict = |kv: Vec<(&str, Value)>| {
        Value::Dict(
            kv.into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    };
    let mut with_nul = list(vec!["uuid".into(), dict(vec![])]);
    with_nul.push(0); // as m2sh sends it (`blength + 1`)
    vec![
        list(vec!["help".into(), dict(vec![])]),
        list(vec!["uuid".into(), dict(vec![])]),
        with_nul,
        list(vec!["info".into(), dict(vec![])]),
        list(vec!["version".into(), dict(vec![])]),
        list(vec!["nosuch".into(), dict(vec![])]),
        list(vec!["status".into(), dict(vec![("what", "bogus".into())])]),
        list(vec!["status".into(), dict(vec![("what", 5i64.into())])]),
        list(vec!["status".into(), dict(vec![])]),
        list(vec!["kill".into(), dict(vec![("id", 12345i64.into())])]),
        list(vec!["kill".into(), dict(vec![("id", (-1i64).into())])]),
        list(vec!["kill".into(), dict(vec![("id", "1".into())])]),
        list(vec!["kill".into(), dict(vec![])]),
        list(vec!["stop".into()]),
        list(vec!["stop".into(), 5i64.into()]),
        list(vec![5i64.into(), dict(vec![])]),
        list(vec![]),
        tn::encode(&dict(vec![("a", 1i64.into())])),
        b"not a tnetstring".to_vec(),
        Vec::new(),
    ]
}

/// A `status what=net` row with what may differ between servers left out: the times, the
/// fd, and bytes written for connections without an id (a `Dir` response's headers differ).
fn net_rows(reply: &[u8]) -> Vec<String> {
    let table = tn::decode(reply).expect("status what=net is a tnetstring");
    let headers = table.get("headers").expect("headers");
    assert_eq!(
        tn::encode(headers),
        b"86:2:id,2:fd,4:type,9:last_ping,9:last_read,10:last_write,10:bytes_read,13:bytes_written,]"
    );
    let Some(Value::List(rows)) = table.get("rows") else {
        panic!("no rows in {reply:?}");
    };
    let mut out: Vec<String> = rows
        .iter()
        .map(|row| {
            let Value::List(cols) = row else {
                panic!("row {row:?}")
            };
            assert_eq!(cols.len(), 8, "{row:?}");
            let int = |i: usize| cols[i].as_int().expect("integer column");
            for i in 1..8 {
                assert!(int(i) >= 0, "{row:?}");
            }
            let id = int(0);
            let written = if id >= 0 {
                int(7).to_string()
            } else {
                "-".into()
            };
            let id = if id >= 0 { "ID" } else { "-1" };
            format!("id={id} type={} read={} written={written}", int(2), int(6))
        })
        .collect();
    out.sort();
    out
}

/// The id column of the row whose id is `id`.
fn has_id(reply: &[u8], id: i64) -> bool {
    let table = tn::decode(reply).unwrap();
    let Some(Value::List(rows)) = table.get("rows") else {
        return false;
    };
    rows.iter()
        .any(|r| matches!(r, Value::List(c) if c[0].as_int() == Some(id)))
}

/// Everything one server answered, for comparison.
#[derive(Debug, Default)]
struct Transcript {
    fixed: Vec<String>,
    net: Vec<Vec<String>>,
    kill: Vec<String>,
    m2sh_control: String,
    m2sh_running: String,
    after: Vec<String>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn script(p: &Peer) -> Transcript {
    let mut t = Transcript::default();
    let port = p.port.to_string(); // `info` names it: each server has its own
    for request in fixed_requests() {
        t.fixed
            .push(text(&p.ask_bytes(&request)).replace(&port, "PORT"));
    }
    // time: `%d` of the server's clock.
    let reply = p.ask("time", vec![]);
    let table = tn::decode(&reply).unwrap();
    assert_eq!(tn::encode(table.get("headers").unwrap()), b"7:4:time,]");
    let Some(Value::List(rows)) = table.get("rows") else {
        panic!("{reply:?}")
    };
    let Value::List(cols) = &rows[0] else {
        panic!("{reply:?}")
    };
    let server_s: i64 = text(cols[0].as_bytes().unwrap()).parse().unwrap();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((server_s - now_s).abs() <= 5, "time {server_s} vs {now_s}");
    // status what=tasks: the same table shape (the tasks are each server's own).
    let reply = p.ask("status", vec![("what", "tasks".into())]);
    let table = tn::decode(&reply).unwrap();
    assert_eq!(
        tn::encode(table.get("headers").unwrap()),
        b"38:2:id,6:system,4:name,5:state,6:status,]"
    );
    let Some(Value::List(rows)) = table.get("rows") else {
        panic!("{reply:?}")
    };
    assert!(!rows.is_empty());
    for row in rows {
        let Value::List(c) = row else { panic!() };
        let types: Vec<_> = c.iter().map(Value::type_name).collect();
        assert_eq!(types, ["int", "bool", "string", "string", "string"]);
    }
    // status what=net: nobody, then an idle client, a served keep-alive request and a
    // served `Dir` request.
    t.net
        .push(net_rows(&p.ask("status", vec![("what", "net".into())])));
    let _idle = p.client();
    let mut served = p.client();
    served
        .write_all(b"GET /json/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let frame = p.frame().expect("the request reached the handler");
    let id: i64 = text(&frame).split(' ').nth(1).unwrap().parse().unwrap();
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    let mut reply = format!("{IDENT} {}:{id}, ", id.to_string().len()).into_bytes();
    reply.extend_from_slice(response);
    p.publ.send(reply, 0).unwrap();
    let mut got = vec![0u8; response.len()];
    served.read_exact(&mut got).unwrap();
    assert_eq!(got, response);
    let mut dir = p.client();
    dir.write_all(b"GET /static/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 64];
    assert!(dir.read(&mut head).unwrap() > 0);
    std::thread::sleep(Duration::from_millis(300));
    let reply = p.ask("status", vec![("what", "net".into())]);
    assert!(has_id(&reply, id), "id {id} not listed: {}", text(&reply));
    t.net.push(net_rows(&reply));
    // kill: the connection closes with nothing written and no notice to the handler.
    t.kill.push(text(&p.ask("kill", vec![("id", id.into())])));
    let mut rest = Vec::new();
    served.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "killed connection got {rest:?}");
    assert!(
        p.pull.poll(zmq::POLLIN, QUIET.as_millis() as i64).unwrap() == 0,
        "a kill sent the handler something"
    );
    t.kill.push(text(&p.ask("kill", vec![("id", id.into())])));
    let reply = p.ask("status", vec![("what", "net".into())]);
    assert!(!has_id(&reply, id));
    t.net.push(net_rows(&reply));
    // m2sh's own commands against the server.
    t.m2sh_control = m2sh(
        &p.dir,
        &["control", "-db", "config.sqlite", "-name", "main"],
        "uuid\ninfo\nhelp\nstatus what=bogus\nkill id=4242\nnosuch\n",
    )
    .replace(&port, "PORT");
    t.m2sh_running = m2sh(
        &p.dir,
        &["running", "-db", "config.sqlite", "-name", "main"],
        "",
    )
    .replace(&p.proc.pid().to_string(), "PID");
    // reload answers and leaves the server serving; control_stop answers and closes the
    // port.
    t.after.push(text(&p.ask("reload", vec![])));
    std::thread::sleep(Duration::from_millis(500));
    let mut c = p.client();
    c.write_all(b"GET /static/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 15];
    c.read_exact(&mut head).unwrap();
    t.after.push(text(&head));
    t.after.push(text(&p.ask("control_stop", vec![])));
    std::thread::sleep(Duration::from_millis(300));
    p.ctl
        .send(
            tn::encode(&Value::List(vec!["uuid".into(), Value::Dict(vec![])])),
            0,
        )
        .unwrap();
    t.after.push(format!(
        "answered after control_stop: {}",
        p.ctl.poll(zmq::POLLIN, 1000).unwrap() > 0
    ));
    t
}

both_runtimes! {
    control_port_answers_as_mongrel2_does(rt) {
        let m2 = Peer::start("mongrel2");
        let want = script(&m2);
        drop(m2);
        let z = Peer::start(rt);
        let got = script(&z);
        for (i, (w, g)) in want.fixed.iter().zip(&got.fixed).enumerate() {
            assert_eq!(w, g, "fixed request {i}");
        }
        assert_eq!(want.fixed.len(), got.fixed.len());
        assert_eq!(want.net, got.net, "status what=net");
        assert_eq!(
            want.net[1].len(), 3,
            "idle, served and Dir connections: {:?}", want.net[1]
        );
        assert_eq!(want.kill, got.kill);
        assert_eq!(want.m2sh_control, got.m2sh_control);
        assert!(want.m2sh_control.contains("uuid:  f400bf85"), "{}", want.m2sh_control);
        assert_eq!(want.m2sh_running, got.m2sh_running);
        assert_eq!(want.m2sh_running.trim(), "mongrel2 at PID PID running.");
        assert_eq!(want.after, got.after);
        assert_eq!(got.after[3], "answered after control_stop: false");
    }
}

/// `stop` and `terminate` signal the process as Mongrel2's `signal_server_cb` does: both
/// servers answer the same and exit, removing their pid files.
#[test]
fn stop_and_terminate_through_the_control_port() {
    for command in ["stop", "terminate"] {
        let mut replies = Vec::new();
        for kind in ["mongrel2", "uring"] {
            let mut p = Peer::start(kind);
            replies.push(text(&p.ask(command, vec![])));
            let status = p.proc.wait_exit(Duration::from_secs(10));
            assert!(status.is_some(), "{kind} did not exit after {command}");
            assert!(
                !p.dir.join("run/mongrel2.pid").exists(),
                "{kind} left its pid file after {command}"
            );
        }
        assert_eq!(replies[0], replies[1], "{command}");
        assert!(
            replies[0].contains("signal sent to server"),
            "{}",
            replies[0]
        );
    }
}

/// m2adapter (Pushpin's Mongrel2 handler) polls the control port with `status what=net`
/// when requests come without `DOWNLOAD_CREDITS` (no `download.flow_control`, as here): it
/// must find the port working and see a client's departure from it, against both servers.
#[test]
fn m2adapter_polls_the_control_port() {
    for kind in ["mongrel2", "uring"] {
        let p = Peer::start_with(kind, false);
        let conf = p.dir.join("m2adapter.conf");
        let run = p.dir.join("run");
        let [send, recv] = p.handler_ports;
        std::fs::write(
            &conf,
            format!(
                "[General]\nm2_in_specs=tcp://127.0.0.1:{send}\nm2_out_specs=tcp://127.0.0.1:{recv}\n\
                 m2_send_idents={IDENT}\nm2_control_specs=ipc://{run}/control\n\
                 zhttp_in_specs=ipc://{run}/zhttp-in\nzhttp_out_specs=ipc://{run}/zhttp-out\n\
                 zhttp_out_stream_specs=ipc://{run}/zhttp-out-stream\nzws_in_specs=ipc://{run}/zws-in\n\
                 zws_out_specs=ipc://{run}/zws-out\nzws_out_stream_specs=ipc://{run}/zws-out-stream\n\
                 m2_client_buffer=200000\nmax_open_requests=100\n",
                run = run.display()
            ),
        )
        .unwrap();
        let log = p.dir.join("m2adapter.log");
        let mut adapter = Proc::spawn(
            "m2adapter",
            Command::new(require_bin("m2adapter"))
                .arg(format!("--config={}", conf.display()))
                .arg(format!("--logfile={}", log.display()))
                .arg("--loglevel=3"),
            &p.dir.path,
        );
        std::thread::sleep(Duration::from_millis(800));
        let mut c = p.client();
        c.write_all(b"GET /json/poll HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let read = |want: &str| {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(want) || std::time::Instant::now() > end {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let text = read("control port index=0 works");
        assert!(
            text.contains("control port index=0 works"),
            "{kind}: m2adapter's log:\n{text}"
        );
        drop(c);
        let text = read("disconnected");
        assert!(
            text.contains("disconnected"),
            "{kind}: m2adapter's log:\n{text}"
        );
        adapter.stop();
    }
}
