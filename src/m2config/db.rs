//! The config database `m2sh load` writes (Mongrel2's `src/config/config.sql`), read into
//! the same [`Config`] the `.conf` parser ([`super::load`]) produces, so everything after
//! loading is one code path.
//!
//! Rows are read as Mongrel2 reads them (`src/config/module.c`): servers, their hosts, each
//! host's routes with their `handler`/`dir`/`proxy` targets, `setting` and `mimetype`, each
//! in row order (m2sh inserts in its storage order, which decides routing). Handlers with
//! the same `send_spec` and `recv_spec` are one handler, as `Config_push_unique_handler`
//! merges them. The checks are the `.conf` loader's: a NULL where m2sh would have needed a
//! value, a malformed route pattern, a `Dir` base without its `/`, an unknown protocol or a
//! bad integer setting is an error naming the table and row.
//!
//! The database is opened read-only: loading (at start and on SIGHUP) never writes to it.
use std::path::Path;

use rusqlite::{Connection, OpenFlags, Row};

use super::mime::DEFAULT_TYPES;
use super::{pattern, settings, Config, Dir, Handler, Host, Proxy, Route, Server, Target};
use crate::proto::m2::Protocol;

/// A database that cannot be served: the file and what is wrong (table and row included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    /// The database's path, as given.
    pub file: String,
    /// What.
    pub message: String,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for DbError {}

/// Reads the config database at `path` (every server in it, in row order).
pub fn load(path: &Path) -> Result<Config, DbError> {
    let file = path.display().to_string();
    let error = |message: String| DbError {
        file: file.clone(),
        message,
    };
    // Read-only and never created: a mistyped path is an error, not a new empty database.
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| error(e.to_string()))?;
    read(&db).map_err(error)
}

fn read(db: &Connection) -> Result<Config, String> {
    let mut handlers = Vec::new();
    let mut servers = Vec::new();
    for (id, server) in rows(db, "SELECT id, uuid, name, bind_addr, port, use_ssl, default_host, chroot, access_log, error_log, pid_file, control_port FROM server ORDER BY id", [], server_row)? {
        let mut hosts = Vec::new();
        for (host_id, (name, matching)) in rows(
            db,
            "SELECT id, name, matching FROM host WHERE server_id = ?1 ORDER BY id",
            [id],
            |r| Ok((text(r, 1, "host")?, text_or(r, 2, "")?)),
        )? {
            let matching = if matching.is_empty() { name.clone() } else { matching };
            if name.is_empty() {
                return Err(format!("host {host_id}: 'name' must not be empty"));
            }
            let routes = routes(db, host_id, &mut handlers)?;
            hosts.push(Host {
                name,
                matching,
                routes,
            });
        }
        let has_plugins = count(db, "filter", id)? + count(db, "xrequest", id)? > 0;
        servers.push(Server {
            hosts,
            has_plugins,
            ..server
        });
    }
    if servers.is_empty() {
        return Err("no servers: was it written by `m2sh load`?".into());
    }
    let settings = pairs(db, "SELECT key, value FROM setting ORDER BY id")?;
    for (key, value) in &settings {
        settings::check(key, value).map_err(|message| format!("setting '{key}': {message}"))?;
    }
    // m2sh writes Mongrel2's default table into every database; the config's own entries
    // are what differs from it (what `mimetypes` in the `.conf` gives).
    let mimetypes = pairs(db, "SELECT extension, mimetype FROM mimetype ORDER BY id")?
        .into_iter()
        .filter(|(ext, kind)| !DEFAULT_TYPES.iter().any(|(e, k)| e == ext && k == kind))
        .collect::<Vec<_>>();
    for (extension, _) in &mimetypes {
        if !extension.starts_with('.') {
            return Err(format!(
                "mimetype extension '{extension}' must start with '.'"
            ));
        }
    }
    Ok(Config {
        servers,
        handlers,
        settings,
        mimetypes,
    })
}

/// A `server` row; hosts are filled in by the caller.
fn server_row(r: &Row) -> rusqlite::Result<Server> {
    let table = "server";
    Ok(Server {
        uuid: text(r, 1, table)?,
        name: text_or(r, 2, "")?,
        bind_addr: text_or(r, 3, "0.0.0.0")?,
        port: integer(r, 4, table, u64::from(u16::MAX))? as u16,
        use_ssl: integer_or(r, 5, 0)? == 1,
        default_host: text(r, 6, table)?,
        chroot: text_or(r, 7, "")?,
        access_log: text(r, 8, table)?,
        error_log: text(r, 9, table)?,
        pid_file: text(r, 10, table)?,
        control_port: text_or(r, 11, "")?,
        hosts: Vec::new(),
        has_plugins: false,
    })
}

/// A host's routes, in row order, with their targets.
fn routes(
    db: &Connection,
    host_id: i64,
    handlers: &mut Vec<Handler>,
) -> Result<Vec<Route>, String> {
    let mut out = Vec::new();
    let listed = rows(
        db,
        "SELECT id, path, target_id, target_type FROM route WHERE host_id = ?1 ORDER BY id",
        [host_id],
        |r| {
            Ok((
                text(r, 1, "route")?,
                integer(r, 2, "route", i64::MAX as u64)? as i64,
                text(r, 3, "route")?,
            ))
        },
    )?;
    for (route_id, (path, target_id, kind)) in listed {
        let at = |what: String| format!("route {route_id} ('{path}'): {what}");
        if path.is_empty() {
            return Err(at("a route path must not be empty".into()));
        }
        if let Some(paren) = path.find('(') {
            pattern::check(&path.as_bytes()[paren..]).map_err(|e| at(e.to_string()))?;
        }
        let target = match kind.as_str() {
            "handler" => Target::Handler(handler(db, target_id, handlers).map_err(at)?),
            "dir" => Target::Dir(dir(db, target_id).map_err(at)?),
            "proxy" => Target::Proxy(proxy(db, target_id).map_err(at)?),
            other => return Err(at(format!("unknown target_type '{other}'"))),
        };
        out.push(Route { path, target });
    }
    Ok(out)
}

fn handler(db: &Connection, id: i64, handlers: &mut Vec<Handler>) -> Result<usize, String> {
    let sql = "SELECT id, send_spec, send_ident, recv_spec, recv_ident, raw_payload, protocol FROM handler WHERE id = ?1";
    let handler = one(db, sql, id, "handler", |r| {
        let t = "handler";
        Ok((
            Handler {
                send_spec: text(r, 1, t)?,
                send_ident: text(r, 2, t)?,
                recv_spec: text(r, 3, t)?,
                recv_ident: text(r, 4, t)?,
                raw_payload: integer_or(r, 5, 0)? == 1,
                protocol: Protocol::Json,
            },
            text_or(r, 6, "json")?,
        ))
    })?;
    let (mut handler, protocol) = handler;
    handler.protocol = match protocol.as_str() {
        "json" => Protocol::Json,
        "tnetstring" => Protocol::Tnetstring,
        other => {
            return Err(format!(
                "handler {id}: protocol '{other}' is neither 'json' nor 'tnetstring'"
            ))
        }
    };
    // Same send and receive spec: the same handler (src/config/config.c).
    let existing = handlers.iter().position(|other| {
        other.send_spec == handler.send_spec && other.recv_spec == handler.recv_spec
    });
    Ok(existing.unwrap_or_else(|| {
        handlers.push(handler);
        handlers.len() - 1
    }))
}

fn dir(db: &Connection, id: i64) -> Result<Dir, String> {
    let sql = "SELECT id, base, index_file, default_ctype, cache_ttl FROM directory WHERE id = ?1";
    let dir = one(db, sql, id, "directory", |r| {
        let t = "directory";
        Ok(Dir {
            base: text(r, 1, t)?,
            index_file: text(r, 2, t)?,
            default_ctype: text(r, 3, t)?,
            cache_ttl: integer_or(r, 4, 0)?.clamp(0, u32::MAX.into()) as u32,
        })
    })?;
    if !dir.base.ends_with('/') {
        return Err(format!(
            "directory {id}: base '{}' must end with '/'",
            dir.base
        ));
    }
    Ok(dir)
}

fn proxy(db: &Connection, id: i64) -> Result<Proxy, String> {
    let sql = "SELECT id, addr, port FROM proxy WHERE id = ?1";
    one(db, sql, id, "proxy", |r| {
        Ok(Proxy {
            addr: text(r, 1, "proxy")?,
            port: integer(r, 2, "proxy", u64::from(u16::MAX))? as u16,
        })
    })
}

/// Every row of `sql` as (column 0, `map` of the row).
fn rows<T, P: rusqlite::Params>(
    db: &Connection,
    sql: &str,
    params: P,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<(i64, T)>, String> {
    let mut statement = db.prepare(sql).map_err(|e| e.to_string())?;
    let found = statement
        .query_map(params, |r| Ok((r.get::<_, i64>(0)?, map(r)?)))
        .map_err(|e| e.to_string())?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| e.to_string());
    found
}

/// The row `id` of `table`, which a route names.
fn one<T>(
    db: &Connection,
    sql: &str,
    id: i64,
    table: &str,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
) -> Result<T, String> {
    rows(db, sql, [id], map)?
        .into_iter()
        .next()
        .map(|(_, value)| value)
        .ok_or_else(|| format!("no {table} row with id {id}"))
}

/// Key/value rows (`setting`, `mimetype`), values as text (m2sh stores numbers as text).
fn pairs(db: &Connection, sql: &str) -> Result<Vec<(String, String)>, String> {
    let mut statement = db.prepare(sql).map_err(|e| e.to_string())?;
    let found = statement
        .query_map([], |r| Ok((as_text(r, 0)?, as_text(r, 1)?)))
        .map_err(|e| e.to_string())?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| e.to_string());
    found
}

/// Rows of a plugin table (`filter`, `xrequest`) for `server_id`; a database written before
/// the table existed has none.
fn count(db: &Connection, table: &str, server_id: i64) -> Result<i64, String> {
    let sql = format!("SELECT count(*) FROM {table} WHERE server_id = ?1");
    match db.query_row(&sql, [server_id], |r| r.get(0)) {
        Ok(n) => Ok(n),
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

/// A NULL where a value is needed: m2sh stores NULL for a parameter the `.conf` left out.
fn missing(r: &Row, column: usize, table: &str) -> rusqlite::Error {
    let name = r.as_ref().column_name(column).unwrap_or("?").to_owned();
    let id = r.get::<_, i64>(0).unwrap_or(-1);
    bad_value(format!("{table} {id}: '{name}' is missing (NULL)"))
}

/// A value zring cannot use; its message is the whole error text.
fn bad_value(message: String) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(message.into())
}

/// Any value as text (NULL as empty): sqlite's column affinity lets a TEXT column hold an
/// integer and the reverse.
fn as_text(r: &Row, column: usize) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    Ok(match r.get_ref(column)? {
        ValueRef::Null => String::new(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    })
}

fn text(r: &Row, column: usize, table: &str) -> rusqlite::Result<String> {
    match r.get_ref(column)? {
        rusqlite::types::ValueRef::Null => Err(missing(r, column, table)),
        _ => as_text(r, column),
    }
}

fn text_or(r: &Row, column: usize, default: &str) -> rusqlite::Result<String> {
    match r.get_ref(column)? {
        rusqlite::types::ValueRef::Null => Ok(default.to_owned()),
        _ => as_text(r, column),
    }
}

fn integer(r: &Row, column: usize, table: &str, max: u64) -> rusqlite::Result<u64> {
    let value = text(r, column, table)?;
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| {
            let name = r.as_ref().column_name(column).unwrap_or("?").to_owned();
            let id = r.get::<_, i64>(0).unwrap_or(-1);
            bad_value(format!(
                "{table} {id}: '{name}' must be an integer up to {max}, not '{value}'"
            ))
        })
}

fn integer_or(r: &Row, column: usize, default: i64) -> rusqlite::Result<i64> {
    match r.get_ref(column)? {
        rusqlite::types::ValueRef::Null => Ok(default),
        _ => Ok(as_text(r, column)?.trim().parse().unwrap_or(default)),
    }
}
