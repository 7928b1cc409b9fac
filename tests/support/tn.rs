//! A tiny tnetstring codec for the test harness, written independently of zring's own codec on
//! purpose: the harness must not trust the code under test. Dicts keep their key order, so the
//! comparison can check it.
use std::fmt;

/// A decoded tnetstring.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Vec<u8>),
    Int(i64),
    /// Kept as its text so that re-encoding is exact.
    Float(String),
    Bool(bool),
    Null,
    List(Vec<Value>),
    /// Key order as on the wire.
    Dict(Vec<(Vec<u8>, Value)>),
}

impl Value {
    /// The value under `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(kv) => kv.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// `get(key)` as a string, lossy.
    pub fn str_of(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(Value::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The packet `type`, `data` when absent.
    pub fn kind(&self) -> String {
        self.str_of("type").unwrap_or_else(|| "data".into())
    }

    pub fn keys(&self) -> Vec<String> {
        match self {
            Value::Dict(kv) => kv
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Null => "null",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.as_bytes().to_vec())
    }
}
impl From<&[u8]> for Value {
    fn from(s: &[u8]) -> Self {
        Value::Str(s.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(s: Vec<u8>) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

/// Encodes `v` as a tnetstring.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(v, &mut out);
    out
}

fn encode_into(v: &Value, out: &mut Vec<u8>) {
    let (payload, tag): (Vec<u8>, u8) = match v {
        Value::Str(s) => (s.clone(), b','),
        Value::Int(i) => (i.to_string().into_bytes(), b'#'),
        Value::Float(f) => (f.clone().into_bytes(), b'^'),
        Value::Bool(b) => (if *b { "true" } else { "false" }.into(), b'!'),
        Value::Null => (Vec::new(), b'~'),
        Value::List(l) => {
            let mut p = Vec::new();
            for x in l {
                encode_into(x, &mut p);
            }
            (p, b']')
        }
        Value::Dict(kv) => {
            let mut p = Vec::new();
            for (k, x) in kv {
                encode_into(&Value::Str(k.clone()), &mut p);
                encode_into(x, &mut p);
            }
            (p, b'}')
        }
    };
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(&payload);
    out.push(tag);
}

/// Decodes exactly one tnetstring filling all of `b`.
pub fn decode(b: &[u8]) -> Result<Value, String> {
    let (v, rest) = decode_one(b)?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after the value", rest.len()));
    }
    Ok(v)
}

fn decode_one(b: &[u8]) -> Result<(Value, &[u8]), String> {
    let colon = b
        .iter()
        .position(|&c| c == b':')
        .ok_or("no ':' after the length")?;
    let len_txt = std::str::from_utf8(&b[..colon]).map_err(|_| "length is not ascii")?;
    if len_txt.is_empty() || len_txt.len() > 9 || !len_txt.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("bad length {len_txt:?}"));
    }
    let n: usize = len_txt.parse().map_err(|_| "bad length")?;
    let start = colon + 1;
    if b.len() < start + n + 1 {
        return Err(format!("value of {n} bytes is truncated"));
    }
    let payload = &b[start..start + n];
    let tag = b[start + n];
    let rest = &b[start + n + 1..];
    let text = || std::str::from_utf8(payload).map_err(|_| "non-utf8 scalar".to_string());
    let v = match tag {
        b',' => Value::Str(payload.to_vec()),
        b'#' => Value::Int(text()?.parse().map_err(|_| "bad integer")?),
        b'^' => {
            let t = text()?;
            t.parse::<f64>().map_err(|_| "bad float")?;
            Value::Float(t.to_string())
        }
        b'!' => match payload {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return Err("bad boolean".into()),
        },
        b'~' if payload.is_empty() => Value::Null,
        b']' => {
            let mut l = Vec::new();
            let mut p = payload;
            while !p.is_empty() {
                let (x, r) = decode_one(p)?;
                l.push(x);
                p = r;
            }
            Value::List(l)
        }
        b'}' => {
            let mut kv = Vec::new();
            let mut p = payload;
            while !p.is_empty() {
                let (k, r) = decode_one(p)?;
                let Value::Str(k) = k else {
                    return Err("dict key is not a string".into());
                };
                if r.is_empty() {
                    return Err("dict key without a value".into());
                }
                let (x, r) = decode_one(r)?;
                kv.push((k, x));
                p = r;
            }
            Value::Dict(kv)
        }
        t => return Err(format!("unknown type tag {:?}", t as char)),
    };
    Ok((v, rest))
}

/// Bytes as a Rust-like string literal body: printable ASCII as is, the rest escaped.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// One-line rendering in which every type is distinguishable: `"str"`, `5`, `5.0^`, `true`,
/// `null`, `[a, b]`, `{key: value}`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "\"{}\"", escape(s)),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}^"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Null => write!(f, "null"),
            Value::List(l) => {
                write!(f, "[")?;
                for (i, x) in l.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{x}")?;
                }
                write!(f, "]")
            }
            Value::Dict(kv) => {
                write!(f, "{{")?;
                for (i, (k, x)) in kv.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}: {x}", escape(k))?;
                }
                write!(f, "}}")
            }
        }
    }
}

/// Field-by-field differences between `a` (the reference) and `b`, one line each, paths like
/// `headers[2][1]`.
pub fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Dict(x), Value::Dict(y)) => {
            let kx: Vec<&[u8]> = x.iter().map(|(k, _)| k.as_slice()).collect();
            let ky: Vec<&[u8]> = y.iter().map(|(k, _)| k.as_slice()).collect();
            if kx != ky {
                let show =
                    |ks: &[&[u8]]| ks.iter().map(|k| escape(k)).collect::<Vec<_>>().join(", ");
                out.push(format!(
                    "{}keys differ:\n      want [{}]\n      got  [{}]",
                    at(path),
                    show(&kx),
                    show(&ky)
                ));
            }
            for (k, va) in x {
                if let Some((_, vb)) = y.iter().find(|(kk, _)| kk == k) {
                    let p = if path.is_empty() {
                        escape(k)
                    } else {
                        format!("{path}.{}", escape(k))
                    };
                    diff(&p, va, vb, out);
                }
            }
        }
        (Value::List(x), Value::List(y)) => {
            if x.len() != y.len() {
                out.push(format!(
                    "{}list length {} vs {}: want {a} got {b}",
                    at(path),
                    x.len(),
                    y.len()
                ));
                return;
            }
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => {
            if a.type_name() != b.type_name() {
                out.push(format!(
                    "{}type {} vs {}: want {a} got {b}",
                    at(path),
                    a.type_name(),
                    b.type_name()
                ));
            } else {
                out.push(format!("{}want {a} got {b}", at(path)));
            }
        }
        _ => {}
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let raw: &[u8] = b"126:4:from,7:condure,2:id,54:23:2:id,5:0-0-6,3:seq,1:3#}23:2:id,5:0-1-7,3:seq,1:3#}]3:ext,15:5:multi,4:true!}4:type,10:keep-alive,}";
        let v = decode(raw).unwrap();
        assert_eq!(encode(&v), raw);
        assert_eq!(v.kind(), "keep-alive");
        assert!(matches!(v.get("id"), Some(Value::List(l)) if l.len() == 2));
    }
}
