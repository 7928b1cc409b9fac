//! Mongrel2's control port protocol (src/control.c, tag `v1.12.2`): a request is one
//! tnetstring list `[command, {args}]` on a ZeroMQ REP socket, the reply one tnetstring.
//! Replies are tables (`{"headers": [...], "rows": [[...], ...]}`, `tns_standard_table`) or
//! Mongrel2's canned error dicts, byte for byte as Mongrel2 1.12.2 renders them (checked
//! against the binary, `tests/m2_control.rs`).
//!
//! Sans-IO: [`parse_request`] says what a request asks; the `encode_*` functions append a
//! reply. What a command does (signals, connection tables) is the caller's.

use super::super::tnetstring::{self, Value, Writer};

/// `INVALID_FORMAT_ERR`: the request is a tnetstring but not a list.
pub const INVALID_REQUEST: &[u8] = b"101:4:code,15:INVALID_REQUEST,5:error,63:Invalid request format, must be a list with two elements in it.,}";
/// `INVALID_DATA_ERR`: not a tnetstring, or not `[string, dict, ...]`.
pub const INVALID_DATA: &[u8] = b"97:4:code,12:INVALID_DATA,5:error,62:Invalid data, expecting a list with a string and a hash in it.,}";
/// `CALLBACK_NOT_FOUND_ERR`: no such command.
pub const CALLBACK_NOT_FOUND: &[u8] =
    b"74:4:code,18:CALLBACK_NOT_FOUND,5:error,33:Callback requested was not found.,}";
/// `INVALID_ARGUMENT_ERR`: a missing or mistyped argument, or `kill` of an id no
/// connection has.
pub const INVALID_ARGUMENT: &[u8] =
    b"61:4:code,16:INVALID_ARGUMENT,5:error,22:Invalid argument type.,}";
/// `SIGNAL_FAILED_ERR`: `stop`, `reload` or `terminate` could not signal the process.
pub const SIGNAL_FAILED: &[u8] =
    b"75:4:code,13:SIGNAL_FAILED,5:error,39:raise call failed, can't signal process,}";
/// `status` with a `what` other than `net` or `tasks` (`status_cb`: no `code`).
pub const STATUS_WHAT: &[u8] = b"51:5:error,39:Expected argument what=['net'|'tasks'].,}";

/// `help`'s reply: the `CALLBACKS` table, in Mongrel2's order.
pub const HELP: &[u8] = b"416:7:headers,14:4:name,4:help,]4:rows,376:35:4:stop,24:stop the server (SIGINT),]30:6:reload,17:reload the server,]23:4:help,12:this command,]37:12:control_stop,17:stop control port,]28:4:kill,17:kill a connection,]41:6:status,28:status, what=['net'|'tasks'],]46:9:terminate,30:terminate the server (SIGTERM),]28:4:time,17:the server's time,]28:4:uuid,17:the server's uuid,]40:4:info,29:information about this server,]]}";

/// `status what=net`'s columns (`REGISTER_HEADERS`, src/register.c).
pub const NET_HEADERS: &[&str] = &[
    "id",
    "fd",
    "type",
    "last_ping",
    "last_read",
    "last_write",
    "bytes_read",
    "bytes_written",
];
/// `status what=tasks`'s columns (`TASKINFO_HEADERS`, src/task/task.c).
pub const TASK_HEADERS: &[&str] = &["id", "system", "name", "state", "status"];
/// `info`'s columns (`INFO_HEADERS`, src/control.c).
pub const INFO_HEADERS: &[&str] = &[
    "port",
    "bind_addr",
    "uuid",
    "chroot",
    "access_log",
    "error_log",
    "pid_file",
    "default_hostname",
];

/// Largest id `kill` accepts. Mongrel2 refuses ids from `MAX_REGISTERED_FDS` (65,536) up,
/// though its ids grow past that on a long-running server; zring's go to `i32::MAX`.
pub const KILL_ID_MAX: i64 = i32::MAX as i64;

/// The signal `stop`, `reload` and `terminate` send to the process (`signal_server_cb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `stop`: SIGINT.
    Stop,
    /// `reload`: SIGHUP.
    Reload,
    /// `terminate`: SIGTERM.
    Terminate,
}

/// What a well-formed request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `status what=net`: the connection table.
    StatusNet,
    /// `status what=tasks`: the task table.
    StatusTasks,
    /// `time`, `uuid`, `info`: facts about the server.
    Time,
    Uuid,
    Info,
    /// `kill id=N`: close connection N (`INVALID_ARGUMENT` when none has that id).
    Kill(u32),
    /// `stop`, `reload`, `terminate`.
    Signal(Signal),
    /// `control_stop`: answer, then close the control port.
    ControlStop,
    /// `help`: [`HELP`].
    Help,
}

/// Reads a request as `Control_task` and `Control_execute` do: `Ok(command)`, or `Err(the
/// canned reply)`. A message that is no tnetstring is Mongrel2's null (`INVALID_DATA`);
/// bytes after the value are ignored; list elements after the second are ignored.
pub fn parse_request(msg: &[u8]) -> Result<Command, &'static [u8]> {
    let Ok((value, _)) = tnetstring::parse(msg) else {
        return Err(INVALID_DATA);
    };
    let list = match value {
        Value::List(list) => list,
        Value::Null => return Err(INVALID_DATA),
        _ => return Err(INVALID_REQUEST),
    };
    let mut items = list.iter();
    let name = match items.next() {
        Some(Value::Bytes(name)) => name,
        _ => return Err(INVALID_DATA),
    };
    let args = match items.next() {
        Some(Value::Dict(args)) => args,
        _ => return Err(INVALID_DATA),
    };
    let command = match name {
        b"stop" => Command::Signal(Signal::Stop),
        b"reload" => Command::Signal(Signal::Reload),
        b"terminate" => Command::Signal(Signal::Terminate),
        b"help" => Command::Help,
        b"control_stop" => Command::ControlStop,
        b"time" => Command::Time,
        b"uuid" => Command::Uuid,
        b"info" => Command::Info,
        b"status" => match args.get(b"what") {
            Some(Value::Bytes(b"net")) => Command::StatusNet,
            Some(Value::Bytes(b"tasks")) => Command::StatusTasks,
            Some(Value::Bytes(_)) => return Err(STATUS_WHAT),
            _ => return Err(INVALID_ARGUMENT),
        },
        b"kill" => match args.get(b"id") {
            Some(Value::Int(id)) if (0..=KILL_ID_MAX).contains(&id) => Command::Kill(id as u32),
            _ => return Err(INVALID_ARGUMENT),
        },
        _ => return Err(CALLBACK_NOT_FOUND),
    };
    Ok(command)
}

/// One `status what=net` row (`Register_info`). Times are seconds since the event, 0 for
/// one that never happened (`ZERO_OR_DELTA`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRow {
    /// The connection id, -1 until the connection has talked to a handler (Mongrel2
    /// assigns ids lazily).
    pub id: i64,
    /// Mongrel2's fd; zring's connection slot (see docs/mongrel2.md).
    pub fd: i64,
    /// `CONN_TYPE_*`: 0 before the first request, 1 HTTP, 2 JSON/XML socket, 3 WebSocket.
    pub kind: u8,
    pub last_ping_s: i64,
    pub last_read_s: i64,
    pub last_write_s: i64,
    pub bytes_read: i64,
    pub bytes_written: i64,
}

/// One `status what=tasks` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRow<'a> {
    pub id: i64,
    pub system: bool,
    pub name: &'a str,
    pub state: &'a str,
    pub status: &'a str,
}

/// The fields of `info` (`info_cb`), as the config holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info<'a> {
    pub port: i64,
    pub bind_addr: &'a str,
    pub uuid: &'a str,
    /// `""` when the server has none.
    pub chroot: &'a str,
    pub access_log: &'a str,
    pub error_log: &'a str,
    pub pid_file: &'a str,
    pub default_hostname: &'a str,
}

/// Appends one rendered `status what=net` row (rows are gathered from the workers, then
/// wrapped by [`encode_table`]).
pub fn encode_net_row(out: &mut Vec<u8>, row: &NetRow) {
    let mut w = Writer::new(out);
    w.begin_list();
    for value in [
        row.id,
        row.fd,
        i64::from(row.kind),
        row.last_ping_s,
        row.last_read_s,
        row.last_write_s,
        row.bytes_read,
        row.bytes_written,
    ] {
        w.int(value);
    }
    w.end_list();
    w.finish();
}

/// Appends one rendered `status what=tasks` row.
pub fn encode_task_row(out: &mut Vec<u8>, row: &TaskRow<'_>) {
    let mut w = Writer::new(out);
    w.begin_list();
    w.int(row.id);
    w.bool(row.system);
    w.bytes(row.name.as_bytes());
    w.bytes(row.state.as_bytes());
    w.bytes(row.status.as_bytes());
    w.end_list();
    w.finish();
}

/// `basic_response`: `{"headers": [key], "rows": [[value]]}`.
pub fn encode_basic(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let mut row = Vec::with_capacity(value.len() + 8);
    {
        let mut w = Writer::new(&mut row);
        w.begin_list();
        w.bytes(value);
        w.end_list();
        w.finish();
    }
    encode_table(out, &[key], &row);
}

/// `time`: the server's clock, `%d` of `time(NULL)`, as a string.
pub fn encode_time(out: &mut Vec<u8>, unix_s: i64) {
    encode_basic(out, "time", (unix_s as i32).to_string().as_bytes());
}

/// `info`: one row with the server's fields.
pub fn encode_info(out: &mut Vec<u8>, info: &Info<'_>) {
    let mut row = Vec::with_capacity(256);
    {
        let mut w = Writer::new(&mut row);
        w.begin_list_sized(200);
        w.int(info.port);
        for s in [
            info.bind_addr,
            info.uuid,
            info.chroot,
            info.access_log,
            info.error_log,
            info.pid_file,
            info.default_hostname,
        ] {
            w.bytes(s.as_bytes());
        }
        w.end_list();
        w.finish();
    }
    encode_table(out, INFO_HEADERS, &row);
}

/// `{"headers": headers, "rows": [rows]}` with `rows` the concatenation of rendered rows.
pub fn encode_table(out: &mut Vec<u8>, headers: &[&str], rows: &[u8]) {
    let mut head = Vec::with_capacity(128);
    {
        let mut w = Writer::new(&mut head);
        w.bytes(b"headers");
        w.begin_list();
        for h in headers {
            w.bytes(h.as_bytes());
        }
        w.end_list();
        w.bytes(b"rows");
        w.finish();
    }
    let rows_len = rows.len().to_string();
    let payload = head.len() + rows_len.len() + 1 + rows.len() + 1;
    out.reserve(payload + 12);
    out.extend_from_slice(payload.to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(&head);
    out.extend_from_slice(rows_len.as_bytes());
    out.push(b':');
    out.extend_from_slice(rows);
    out.push(b']');
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tn(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn requests_parse_as_mongrel2_reads_them() {
        // Goal: every verdict Mongrel2 1.12.2 gave for these bytes (captured from the
        // binary on this machine).
        let cases: &[(&str, Result<Command, &[u8]>)] = &[
            ("26:6:status,13:4:what,3:net,}]", Ok(Command::StatusNet)),
            ("28:6:status,15:4:what,5:tasks,}]", Ok(Command::StatusTasks)),
            ("28:6:status,15:4:what,5:bogus,}]", Err(STATUS_WHAT)),
            ("24:6:status,11:4:what,1:5#}]", Err(INVALID_ARGUMENT)),
            ("12:6:status,0:}]", Err(INVALID_ARGUMENT)),
            ("19:4:kill,9:2:id,1:5#}]", Ok(Command::Kill(5))),
            ("21:4:kill,10:2:id,2:-1#}]", Err(INVALID_ARGUMENT)),
            ("19:4:kill,9:2:id,1:5,}]", Err(INVALID_ARGUMENT)),
            ("10:4:kill,0:}]", Err(INVALID_ARGUMENT)),
            ("13:7:version,0:}]", Err(CALLBACK_NOT_FOUND)),
            ("11:4:stop,1:5#]", Err(INVALID_DATA)),
            ("7:4:stop,]", Err(INVALID_DATA)),
            ("7:1:5#0:}]", Err(INVALID_DATA)),
            ("0:]", Err(INVALID_DATA)),
            ("18:4:uuid,0:}5:extra,]", Ok(Command::Uuid)),
            ("18:4:uuid,8:1:x,1:1#}]", Ok(Command::Uuid)),
            ("10:1:a,0:}0:}]", Err(CALLBACK_NOT_FOUND)),
            ("8:1:a,1:1#}", Err(INVALID_REQUEST)),
            ("", Err(INVALID_DATA)),
            ("9:abc", Err(INVALID_DATA)),
            ("garbage", Err(INVALID_DATA)),
            ("0:~", Err(INVALID_DATA)),
            ("10:4:uuid,0:}]trailing", Ok(Command::Uuid)),
            ("10:4:time,0:}]", Ok(Command::Time)),
            ("10:4:info,0:}]", Ok(Command::Info)),
            ("10:4:help,0:}]", Ok(Command::Help)),
            ("10:4:stop,0:}]", Ok(Command::Signal(Signal::Stop))),
            ("12:6:reload,0:}]", Ok(Command::Signal(Signal::Reload))),
            (
                "15:9:terminate,0:}]",
                Ok(Command::Signal(Signal::Terminate)),
            ),
            ("19:12:control_stop,0:}]", Ok(Command::ControlStop)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_request(&tn(input)), *want, "{input}");
        }
    }

    #[test]
    fn replies_render_as_mongrel2_renders_them() {
        // Goal: the reply bytes Mongrel2 1.12.2 sent for the same facts.
        let mut out = Vec::new();
        encode_time(&mut out, 1_796_645_058);
        assert_eq!(
            out,
            b"49:7:headers,7:4:time,]4:rows,18:14:10:1796645058,]]}"
        );
        out.clear();
        encode_basic(&mut out, "uuid", b"f400bf85-4538-4f7a-8908-67e313d515c2");
        assert_eq!(
            out,
            &b"75:7:headers,7:4:uuid,]4:rows,44:40:36:f400bf85-4538-4f7a-8908-67e313d515c2,]]}"[..]
        );
        out.clear();
        encode_basic(&mut out, "status", b"OK");
        assert_eq!(out, b"40:7:headers,9:6:status,]4:rows,8:5:2:OK,]]}");
        out.clear();
        encode_basic(&mut out, "msg", b"signal sent to server");
        assert_eq!(
            out,
            &b"59:7:headers,6:3:msg,]4:rows,29:25:21:signal sent to server,]]}"[..]
        );
        out.clear();
        encode_info(
            &mut out,
            &Info {
                port: 16767,
                bind_addr: "127.0.0.1",
                uuid: "f400bf85-4538-4f7a-8908-67e313d515c2",
                chroot: "./",
                access_log: "/logs/access.log",
                error_log: "/logs/error.log",
                pid_file: "/run/mongrel2.pid",
                default_hostname: "localhost",
            },
        );
        assert_eq!(out, &b"260:7:headers,92:4:port,9:bind_addr,4:uuid,6:chroot,10:access_log,9:error_log,8:pid_file,16:default_hostname,]4:rows,142:137:5:16767#9:127.0.0.1,36:f400bf85-4538-4f7a-8908-67e313d515c2,2:./,16:/logs/access.log,15:/logs/error.log,17:/run/mongrel2.pid,9:localhost,]]}"[..]);
        out.clear();
        let mut rows = Vec::new();
        for row in [
            NetRow {
                id: -1,
                fd: 21,
                ..Default::default()
            },
            NetRow {
                id: 1,
                fd: 22,
                kind: 1,
                bytes_read: 41,
                ..Default::default()
            },
            NetRow {
                id: -1,
                fd: 23,
                kind: 1,
                bytes_read: 42,
                bytes_written: 192,
                ..Default::default()
            },
        ] {
            encode_net_row(&mut rows, &row);
        }
        encode_table(&mut out, NET_HEADERS, &rows);
        assert_eq!(out, &b"229:7:headers,86:2:id,2:fd,4:type,9:last_ping,9:last_read,10:last_write,10:bytes_read,13:bytes_written,]4:rows,117:34:2:-1#2:21#1:0#1:0#1:0#1:0#1:0#1:0#]34:1:1#2:22#1:1#1:0#1:0#1:0#2:41#1:0#]37:2:-1#2:23#1:1#1:0#1:0#1:0#2:42#3:192#]]}"[..]);
        out.clear();
        encode_table(&mut out, NET_HEADERS, &[]);
        assert_eq!(out, &b"110:7:headers,86:2:id,2:fd,4:type,9:last_ping,9:last_read,10:last_write,10:bytes_read,13:bytes_written,]4:rows,0:]}"[..]);
        out.clear();
        let mut rows = Vec::new();
        encode_task_row(
            &mut rows,
            &TaskRow {
                id: 1,
                system: false,
                name: "SERVER",
                state: "read fd",
                status: "idle",
            },
        );
        encode_task_row(
            &mut rows,
            &TaskRow {
                id: 4,
                system: true,
                name: "fdtask",
                state: "yield",
                status: "ready",
            },
        );
        encode_table(&mut out, TASK_HEADERS, &rows);
        assert_eq!(out, &b"145:7:headers,38:2:id,6:system,4:name,5:state,6:status,]4:rows,82:38:1:1#5:false!6:SERVER,7:read fd,4:idle,]36:1:4#4:true!6:fdtask,5:yield,5:ready,]]}"[..]);
        // The help table as a table of its rows.
        let (value, _) = tnetstring::parse(HELP).unwrap();
        assert_eq!(
            value
                .as_dict()
                .unwrap()
                .get(b"rows")
                .unwrap()
                .as_list()
                .unwrap()
                .iter()
                .count(),
            10
        );
    }
}
