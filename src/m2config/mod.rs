//! Mongrel2 configs, as `m2sh load` reads them, turned into typed values zring can serve:
//! servers → hosts → routes → targets (`Handler`, `Dir`, `Proxy`), plus the `settings` and
//! `mimetypes` dicts. Also the sans-IO parts of serving them: route matching by Mongrel2's
//! rules ([`route`]), its pattern language ([`pattern`]) and static-file path resolution
//! ([`dir`]).
//!
//! [`load`] reads no files itself: it takes the text and a name for messages. Every error
//! names the file, the line and column, and what is wrong. [`db::load`] reads the sqlite
//! database `m2sh load` writes into the same [`Config`].
//!
//! Validation is stricter than m2sh, which silently ignores unknown parameters and stores
//! NULL for missing ones (Mongrel2 then fails at start): here both are errors.

pub mod db;
pub mod dir;
pub mod mime;
pub mod pattern;
pub mod route;
pub mod settings;
pub mod syntax;
pub mod tst;

use std::collections::HashMap;

use crate::proto::m2::Protocol;
use syntax::{Expr, Pos, Value};
use tst::Tst;

/// A config error: file, position and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name given to [`load`].
    pub file: String,
    /// Where.
    pub line: u32,
    /// Column in bytes, from 1.
    pub column: u32,
    /// What.
    pub message: String,
}

impl ConfigError {
    fn new(file: &str, pos: Pos, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
            message,
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// A whole config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The `servers` list, in order.
    pub servers: Vec<Server>,
    /// Distinct handlers (same `send_spec` and `recv_spec` is the same handler, as Mongrel2
    /// merges them); routes point here by index.
    pub handlers: Vec<Handler>,
    /// The `settings` dict, in the order m2sh stores it, values as text.
    pub settings: Vec<(String, String)>,
    /// The `mimetypes` dict: extension (with its dot) → type; these replace the defaults.
    pub mimetypes: Vec<(String, String)>,
}

/// A `Server`.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// `uuid`: what `m2sh start -uuid` and the control port name it by.
    pub uuid: String,
    /// `name`: what `--m2-server` selects.
    pub name: String,
    /// `bind_addr` (default `0.0.0.0`).
    pub bind_addr: String,
    /// `port`.
    pub port: u16,
    /// `use_ssl`: serve TLS with the certificates in the `certdir` setting.
    pub use_ssl: bool,
    /// `default_host`: the name of the host for requests whose host matches none.
    pub default_host: String,
    /// `chroot`: where the process chroots as root (`m2serve::process`); `Dir` bases,
    /// `pid_file`, `access_log` and `error_log` are relative to it.
    pub chroot: String,
    /// `access_log`.
    pub access_log: String,
    /// `error_log`.
    pub error_log: String,
    /// `pid_file`.
    pub pid_file: String,
    /// `control_port`.
    pub control_port: String,
    /// `hosts`, in order.
    pub hosts: Vec<Host>,
    /// Whether `filters` or `xrequests` were given (zring loads no plugins).
    pub has_plugins: bool,
}

/// A `Host`.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// `name`.
    pub name: String,
    /// `matching` (defaults to `name`): a host-name suffix, or a pattern ending at its last
    /// `)` followed by a literal suffix.
    pub matching: String,
    /// `routes`, in the order m2sh stores them (which decides Mongrel2's route tree).
    pub routes: Vec<Route>,
}

/// One entry of a host's `routes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The key as written: a prefix, optionally followed by a pattern from its first `(`.
    pub path: String,
    /// What it leads to.
    pub target: Target,
}

/// A route's backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Index into [`Config::handlers`].
    Handler(usize),
    /// Static files.
    Dir(Dir),
    /// An HTTP backend.
    Proxy(Proxy),
}

/// A `Handler`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// Where zring binds its PUSH socket.
    pub send_spec: String,
    /// The PUSH socket's identity and the sender in every request.
    pub send_ident: String,
    /// Where zring binds its SUB socket.
    pub recv_spec: String,
    /// The SUB subscription (usually empty).
    pub recv_ident: String,
    /// `raw_payload`: only for JSON/XML socket connections.
    pub raw_payload: bool,
    /// `protocol`.
    pub protocol: Protocol,
}

/// A `Dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    /// `base`, ending in `/`, relative to the chroot.
    pub base: String,
    /// `index_file`.
    pub index_file: String,
    /// `default_ctype`.
    pub default_ctype: String,
    /// `cache_ttl` seconds (0: check the file every time).
    pub cache_ttl: u32,
}

/// A `Proxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `addr`.
    pub addr: String,
    /// `port`.
    pub port: u16,
}

impl Config {
    /// The server `--m2-server NAME` selects (by name, then uuid), or the only one.
    pub fn server(&self, name: Option<&str>) -> Option<&Server> {
        match name {
            Some(name) => self
                .servers
                .iter()
                .find(|server| server.name == name)
                .or_else(|| self.servers.iter().find(|server| server.uuid == name)),
            None if self.servers.len() == 1 => self.servers.first(),
            None => None,
        }
    }

    /// A setting's text.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses and checks a config. `file` names it in errors.
pub fn load(file: &str, text: &[u8]) -> Result<Config, ConfigError> {
    if text.len() > syntax::FILE_BYTES_MAX {
        return Err(ConfigError::new(
            file,
            Pos { line: 1, column: 1 },
            "file too large".into(),
        ));
    }
    let assignments = syntax::parse(file, text)?;
    let mut vars: HashMap<&str, &Expr> = HashMap::new();
    for (name, pos, expr) in &assignments {
        if vars.insert(name, expr).is_some() {
            return Err(ConfigError::new(
                file,
                *pos,
                format!("'{name}' is assigned twice"),
            ));
        }
    }
    let mut loader = Loader {
        file,
        vars,
        handlers: Vec::new(),
    };
    let servers_expr = loader.vars.get("servers").copied().ok_or_else(|| {
        ConfigError::new(
            file,
            Pos { line: 1, column: 1 },
            "no 'servers' list: say which servers to load".into(),
        )
    })?;
    let Value::List(items) = &servers_expr.value else {
        return Err(loader.error(servers_expr.pos, "'servers' must be a list".into()));
    };
    let mut servers = Vec::new();
    for item in items {
        servers.push(loader.server(item)?);
    }
    let settings = loader.text_dict("settings")?;
    for (key, value) in &settings {
        settings::check(key, value).map_err(|message| {
            let pos = loader
                .vars
                .get("settings")
                .map_or(Pos { line: 1, column: 1 }, |e| e.pos);
            loader.error(pos, format!("setting '{key}': {message}"))
        })?;
    }
    let mimetypes = loader.text_dict("mimetypes")?;
    for (extension, _) in &mimetypes {
        if !extension.starts_with('.') {
            let pos = loader.vars["mimetypes"].pos;
            return Err(loader.error(
                pos,
                format!("mimetype extension '{extension}' must start with '.'"),
            ));
        }
    }
    Ok(Config {
        servers,
        handlers: loader.handlers,
        settings,
        mimetypes,
    })
}

struct Loader<'a> {
    file: &'a str,
    vars: HashMap<&'a str, &'a Expr>,
    handlers: Vec<Handler>,
}

/// A class's parameters by name, with the ones not yet read.
struct Params<'a> {
    class: &'a str,
    pos: Pos,
    entries: Vec<(&'a str, Pos, &'a Expr, bool)>,
}

impl<'a> Loader<'a> {
    fn error(&self, pos: Pos, message: String) -> ConfigError {
        ConfigError::new(self.file, pos, message)
    }

    /// Follows one reference, as m2sh's `Value_resolve` does (a reference to a reference
    /// is not followed further).
    fn resolve(&self, expr: &'a Expr) -> Result<&'a Expr, ConfigError> {
        let Value::Ref(name) = &expr.value else {
            return Ok(expr);
        };
        let target = self
            .vars
            .get(name.as_str())
            .copied()
            .ok_or_else(|| self.error(expr.pos, format!("no variable named '{name}'")))?;
        if let Value::Ref(inner) = &target.value {
            return Err(self.error(
                expr.pos,
                format!("'{name}' refers to another reference, '{inner}'"),
            ));
        }
        Ok(target)
    }

    fn class(&self, expr: &'a Expr, want: &str) -> Result<Params<'a>, ConfigError> {
        let expr = self.resolve(expr)?;
        let Value::Class { name, params } = &expr.value else {
            return Err(self.error(
                expr.pos,
                format!("expected a {want}(...), found a {}", expr.value.kind()),
            ));
        };
        if name != want {
            return Err(self.error(
                expr.pos,
                format!("expected a {want}(...), found {name}(...)"),
            ));
        }
        self.params(name, expr.pos, params)
    }

    fn params(
        &self,
        class: &'a str,
        pos: Pos,
        params: &'a [(String, Pos, Expr)],
    ) -> Result<Params<'a>, ConfigError> {
        let mut entries: Vec<(&str, Pos, &Expr, bool)> = Vec::new();
        for (key, key_pos, value) in params {
            if entries.iter().any(|(seen, ..)| seen == key) {
                return Err(self.error(*key_pos, format!("{class}: '{key}' is given twice")));
            }
            entries.push((key, *key_pos, value, false));
        }
        Ok(Params {
            class,
            pos,
            entries,
        })
    }

    fn take(&self, params: &mut Params<'a>, key: &str) -> Result<Option<&'a Expr>, ConfigError> {
        let Some(entry) = params.entries.iter_mut().find(|(name, ..)| *name == key) else {
            return Ok(None);
        };
        entry.3 = true;
        self.resolve(entry.2).map(Some)
    }

    fn string(
        &self,
        params: &mut Params<'a>,
        key: &str,
        default: Option<&str>,
    ) -> Result<String, ConfigError> {
        match self.take(params, key)? {
            Some(Expr {
                value: Value::Str(text),
                ..
            }) => Ok(text.clone()),
            Some(other) => Err(self.error(
                other.pos,
                format!(
                    "{}: '{key}' must be a string, not a {}",
                    params.class,
                    other.value.kind()
                ),
            )),
            None => default.map(str::to_owned).ok_or_else(|| {
                self.error(params.pos, format!("{} is missing '{key}'", params.class))
            }),
        }
    }

    fn number(
        &self,
        params: &mut Params<'a>,
        key: &str,
        default: Option<u64>,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match self.take(params, key)? {
            Some(Expr {
                value: Value::Number(digits),
                pos,
            }) => digits
                .parse::<u64>()
                .ok()
                .filter(|&value| value <= max)
                .ok_or_else(|| {
                    self.error(
                        *pos,
                        format!("{}: '{key}' must be at most {max}", params.class),
                    )
                }),
            Some(other) => Err(self.error(
                other.pos,
                format!(
                    "{}: '{key}' must be a number, not a {}",
                    params.class,
                    other.value.kind()
                ),
            )),
            None => default.ok_or_else(|| {
                self.error(params.pos, format!("{} is missing '{key}'", params.class))
            }),
        }
    }

    fn finish(&self, params: &Params<'a>) -> Result<(), ConfigError> {
        match params.entries.iter().find(|entry| !entry.3) {
            Some((key, pos, ..)) => {
                Err(self.error(*pos, format!("{} has no parameter '{key}'", params.class)))
            }
            None => Ok(()),
        }
    }

    fn server(&mut self, expr: &'a Expr) -> Result<Server, ConfigError> {
        let mut params = self.class(expr, "Server")?;
        let hosts_expr = self.take(&mut params, "hosts")?;
        let mut has_plugins = false;
        for plugin in ["filters", "xrequests"] {
            has_plugins |= self.take(&mut params, plugin)?.is_some();
        }
        let server = Server {
            uuid: self.string(&mut params, "uuid", None)?,
            name: self.string(&mut params, "name", None)?,
            bind_addr: self.string(&mut params, "bind_addr", Some("0.0.0.0"))?,
            port: self.number(&mut params, "port", None, u64::from(u16::MAX))? as u16,
            use_ssl: self.number(&mut params, "use_ssl", Some(0), 1)? == 1,
            default_host: self.string(&mut params, "default_host", None)?,
            chroot: self.string(&mut params, "chroot", Some(""))?,
            access_log: self.string(&mut params, "access_log", None)?,
            error_log: self.string(&mut params, "error_log", None)?,
            pid_file: self.string(&mut params, "pid_file", None)?,
            control_port: self.string(&mut params, "control_port", Some(""))?,
            hosts: Vec::new(),
            has_plugins,
        };
        self.finish(&params)?;
        let hosts_expr =
            hosts_expr.ok_or_else(|| self.error(params.pos, "Server is missing 'hosts'".into()))?;
        let Value::List(items) = &hosts_expr.value else {
            return Err(self.error(hosts_expr.pos, "Server: 'hosts' must be a list".into()));
        };
        let mut hosts = Vec::new();
        for item in items {
            hosts.push(self.host(item)?);
        }
        Ok(Server { hosts, ..server })
    }

    fn host(&mut self, expr: &'a Expr) -> Result<Host, ConfigError> {
        let mut params = self.class(expr, "Host")?;
        let name = self.string(&mut params, "name", None)?;
        let matching = self.string(&mut params, "matching", Some(&name))?;
        let _maintenance = self.number(&mut params, "maintenance", Some(0), 1)?;
        let routes_expr = self.take(&mut params, "routes")?;
        self.finish(&params)?;
        let routes_expr = routes_expr
            .ok_or_else(|| self.error(params.pos, format!("Host '{name}' is missing 'routes'")))?;
        let Value::Dict(entries) = &routes_expr.value else {
            return Err(self.error(routes_expr.pos, "Host: 'routes' must be a dict".into()));
        };
        if name.is_empty() || matching.is_empty() {
            return Err(self.error(
                params.pos,
                "Host: 'name' and 'matching' must not be empty".into(),
            ));
        }
        let mut routes = Vec::new();
        for (path, pos, target) in self.m2sh_order(entries)? {
            routes.push(self.route(path, pos, target)?);
        }
        Ok(Host {
            name,
            matching,
            routes,
        })
    }

    /// Dict entries in the order m2sh walks them (breadth first over its TST), which is
    /// the order Mongrel2 loads them in. Duplicate keys are an error (m2sh asserts).
    fn m2sh_order(
        &self,
        entries: &'a [(String, Pos, Expr)],
    ) -> Result<Vec<(&'a str, Pos, &'a Expr)>, ConfigError> {
        let mut tree = Tst::new();
        for (index, (key, pos, _)) in entries.iter().enumerate() {
            tree.insert(key.as_bytes(), index)
                .map_err(|_| self.error(*pos, format!("'{key}' is given twice in one dict")))?;
        }
        Ok(tree
            .traverse()
            .into_iter()
            .map(|&index| {
                (
                    entries[index].0.as_str(),
                    entries[index].1,
                    &entries[index].2,
                )
            })
            .collect())
    }

    fn route(&mut self, path: &str, pos: Pos, expr: &'a Expr) -> Result<Route, ConfigError> {
        if path.is_empty() {
            return Err(self.error(pos, "a route path must not be empty".into()));
        }
        if let Some(paren) = path.find('(') {
            pattern::check(&path.as_bytes()[paren..])
                .map_err(|error| self.error(pos, format!("route '{path}': {error}")))?;
        }
        let resolved = self.resolve(expr)?;
        let Value::Class { name, params } = &resolved.value else {
            return Err(self.error(
                resolved.pos,
                format!("route '{path}' must lead to a Handler, Dir or Proxy"),
            ));
        };
        let mut params = self.params(name, resolved.pos, params)?;
        let target = match name.as_str() {
            "Handler" => Target::Handler(self.handler(&mut params)?),
            "Dir" => Target::Dir(self.dir(&mut params)?),
            "Proxy" => Target::Proxy(Proxy {
                addr: self.string(&mut params, "addr", None)?,
                port: self.number(&mut params, "port", None, u64::from(u16::MAX))? as u16,
            }),
            other => {
                return Err(self.error(
                    resolved.pos,
                    format!("route '{path}': {other} is not a Handler, Dir or Proxy"),
                ))
            }
        };
        self.finish(&params)?;
        Ok(Route {
            path: path.to_owned(),
            target,
        })
    }

    fn handler(&mut self, params: &mut Params<'a>) -> Result<usize, ConfigError> {
        let protocol = match self.string(params, "protocol", Some("json"))?.as_str() {
            "json" => Protocol::Json,
            "tnetstring" => Protocol::Tnetstring,
            other => {
                return Err(self.error(
                    params.pos,
                    format!("Handler: protocol '{other}' is neither 'json' nor 'tnetstring'"),
                ))
            }
        };
        let handler = Handler {
            send_spec: self.string(params, "send_spec", None)?,
            send_ident: self.string(params, "send_ident", None)?,
            recv_spec: self.string(params, "recv_spec", None)?,
            recv_ident: self.string(params, "recv_ident", None)?,
            raw_payload: self.number(params, "raw_payload", Some(0), 1)? == 1,
            protocol,
        };
        // Same send and receive spec: the same handler (src/config/config.c).
        let existing = self.handlers.iter().position(|other| {
            other.send_spec == handler.send_spec && other.recv_spec == handler.recv_spec
        });
        Ok(existing.unwrap_or_else(|| {
            self.handlers.push(handler);
            self.handlers.len() - 1
        }))
    }

    fn dir(&self, params: &mut Params<'a>) -> Result<Dir, ConfigError> {
        let dir = Dir {
            base: self.string(params, "base", None)?,
            index_file: self.string(params, "index_file", None)?,
            default_ctype: self.string(params, "default_ctype", None)?,
            cache_ttl: self.number(params, "cache_ttl", Some(0), u64::from(u32::MAX))? as u32,
        };
        if !dir.base.ends_with('/') {
            return Err(self.error(
                params.pos,
                format!("Dir: base '{}' must end with '/'", dir.base),
            ));
        }
        Ok(dir)
    }

    /// A top-level dict of strings or numbers (`settings`, `mimetypes`), in m2sh's order.
    fn text_dict(&self, name: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let Some(expr) = self.vars.get(name).copied() else {
            return Ok(Vec::new());
        };
        let expr = self.resolve(expr)?;
        let Value::Dict(entries) = &expr.value else {
            return Err(self.error(expr.pos, format!("'{name}' must be a dict")));
        };
        let mut out = Vec::new();
        for (key, _pos, value) in self.m2sh_order(entries)? {
            let value = self.resolve(value)?;
            match &value.value {
                Value::Str(text) | Value::Number(text) => out.push((key.to_owned(), text.clone())),
                other => {
                    return Err(self.error(
                        value.pos,
                        format!(
                            "{name}: '{key}' must be a string or a number, not a {}",
                            other.kind()
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
