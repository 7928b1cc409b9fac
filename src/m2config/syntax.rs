//! The syntax `m2sh load` accepts (tools/m2sh/src/lexer.rl, parser.y): a file of
//! `name = expr` assignments, where an expr is a quoted string, a number, a class call
//! `Name(key=expr ...)`, a list `[expr ...]`, a dict `{"key": expr ...}` or a reference to a
//! top-level name. Commas between items are optional, and one may come before the first
//! item but not after the last, as m2sh's grammar has it. `#` starts a comment.
//!
//! Strings are kept as written: m2sh does not process backslash escapes (`'\d'` stays two
//! bytes), it only lets a backslash keep a quote from ending the string. Numbers are
//! decimal digits only. A class name is a capital letter followed by letters; any other
//! word is an identifier.

use super::ConfigError;

/// Deepest nesting of lists, dicts and classes: real configs use 4 (servers → Server →
/// hosts → Host → routes); the bound keeps the recursive parser's stack small on any input.
pub const NESTING_MAX: usize = 32;
/// Largest config file read.
pub const FILE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Where something is in the file: 1-based line and column (in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

/// A value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// Where it starts.
    pub pos: Pos,
    /// What it is.
    pub value: Value,
}

/// A parsed value. Dict and parameter entries keep source order here; [`super`] orders
/// them as m2sh stores them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted string, as written between the quotes.
    Str(String),
    /// Decimal digits, as written.
    Number(String),
    /// `Name(key=expr, ...)`.
    Class {
        /// The class name.
        name: String,
        /// The parameters in source order.
        params: Vec<(String, Pos, Expr)>,
    },
    /// `[expr, ...]`.
    List(Vec<Expr>),
    /// `{"key": expr, ...}`, in source order.
    Dict(Vec<(String, Pos, Expr)>),
    /// A bare identifier: a reference to a top-level assignment.
    Ref(String),
}

impl Value {
    /// A short name for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Number(_) => "number",
            Value::Class { .. } => "class",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Ref(_) => "reference",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Number(String),
    Class(String),
    Ident(String),
    Punct(u8),
    End,
}

fn describe(token: &Token) -> String {
    match token {
        Token::Str(_) => "a string".into(),
        Token::Number(_) => "a number".into(),
        Token::Class(name) => format!("class name '{name}'"),
        Token::Ident(name) => format!("name '{name}'"),
        Token::Punct(byte) => format!("'{}'", *byte as char),
        Token::End => "the end of the file".into(),
    }
}

struct Lexer<'a> {
    file: &'a str,
    text: &'a [u8],
    at: usize,
    line: u32,
    line_start: usize,
}

impl<'a> Lexer<'a> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: (self.at - self.line_start + 1) as u32,
        }
    }

    fn error(&self, pos: Pos, message: String) -> ConfigError {
        ConfigError::new(self.file, pos, message)
    }

    fn newline(&mut self) {
        self.line += 1;
        self.line_start = self.at + 1;
    }

    /// The next token and where it starts.
    fn next(&mut self) -> Result<(Pos, Token), ConfigError> {
        loop {
            let Some(&byte) = self.text.get(self.at) else {
                return Ok((self.pos(), Token::End));
            };
            match byte {
                b'\n' => {
                    self.newline();
                    self.at += 1;
                }
                b' ' | b'\t' | b'\r' | 0x0B | 0x0C => self.at += 1,
                b'#' => {
                    while self.text.get(self.at).is_some_and(|&b| b != b'\n') {
                        self.at += 1;
                    }
                }
                _ => break,
            }
        }
        let pos = self.pos();
        let byte = self.text[self.at];
        let token = match byte {
            b'"' | b'\'' => Token::Str(self.string(byte, pos)?),
            b'=' | b'{' | b'}' | b'[' | b']' | b'(' | b')' | b',' | b':' => {
                self.at += 1;
                Token::Punct(byte)
            }
            b'0'..=b'9' => Token::Number(self.run(|b| b.is_ascii_digit())),
            b'A'..=b'Z' | b'a'..=b'z' | b'_' => self.word(),
            _ => {
                return Err(self.error(pos, format!("invalid character {:?}", byte as char)));
            }
        };
        Ok((pos, token))
    }

    fn run(&mut self, accept: impl Fn(u8) -> bool) -> String {
        let start = self.at;
        while self.text.get(self.at).is_some_and(|&b| accept(b)) {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.text[start..self.at]).into_owned()
    }

    /// Ragel's longest match: `[A-Z] alpha+` is a class unless an identifier continues it
    /// with digits or `_`.
    fn word(&mut self) -> Token {
        let word = self.run(|b| b.is_ascii_alphanumeric() || b == b'_');
        let bytes = word.as_bytes();
        let is_class = bytes.len() >= 2
            && bytes[0].is_ascii_uppercase()
            && bytes.iter().all(u8::is_ascii_alphabetic);
        if is_class {
            Token::Class(word)
        } else {
            Token::Ident(word)
        }
    }

    fn string(&mut self, quote: u8, pos: Pos) -> Result<String, ConfigError> {
        self.at += 1;
        let start = self.at;
        loop {
            let Some(&byte) = self.text.get(self.at) else {
                return Err(self.error(pos, "string is not closed".into()));
            };
            match byte {
                b'\\' => {
                    if self.text.get(self.at + 1) == Some(&b'\n') {
                        self.at += 1;
                        self.newline();
                    }
                    self.at += 2;
                }
                b'\n' => {
                    self.newline();
                    self.at += 1;
                }
                _ if byte == quote => break,
                _ => self.at += 1,
            }
        }
        let end = self.at.min(self.text.len());
        self.at += 1;
        String::from_utf8(self.text[start..end].to_vec())
            .map_err(|_| self.error(pos, "string is not UTF-8".into()))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<(Pos, Token)>,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<&(Pos, Token), ConfigError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn take(&mut self) -> Result<(Pos, Token), ConfigError> {
        self.peek()?;
        Ok(self.peeked.take().expect("just filled"))
    }

    fn unexpected(&self, pos: Pos, token: &Token, wanted: &str) -> ConfigError {
        self.lexer.error(
            pos,
            format!("syntax error: expected {wanted}, found {}", describe(token)),
        )
    }

    fn expect_punct(&mut self, punct: u8) -> Result<(), ConfigError> {
        let (pos, token) = self.take()?;
        if token == Token::Punct(punct) {
            Ok(())
        } else {
            Err(self.unexpected(pos, &token, &format!("'{}'", punct as char)))
        }
    }

    /// `IDENT = expr`.
    fn assignment(&mut self) -> Result<(String, Pos, Expr), ConfigError> {
        let (pos, token) = self.take()?;
        let Token::Ident(name) = token else {
            return Err(self.unexpected(pos, &token, "a name to assign"));
        };
        self.expect_punct(b'=')?;
        Ok((name, pos, self.expr()?))
    }

    fn expr(&mut self) -> Result<Expr, ConfigError> {
        let (pos, token) = self.take()?;
        let value = match token {
            Token::Str(text) => Value::Str(text),
            Token::Number(digits) => Value::Number(digits),
            Token::Ident(name) => Value::Ref(name),
            Token::Class(name) => {
                self.expect_punct(b'(')?;
                let params = self.nested(b')', |parser| parser.assignment())?;
                Value::Class { name, params }
            }
            Token::Punct(b'[') => Value::List(self.nested(b']', |parser| parser.expr())?),
            Token::Punct(b'{') => Value::Dict(self.nested(b'}', |parser| parser.pair())?),
            other => return Err(self.unexpected(pos, &other, "a value")),
        };
        Ok(Expr { pos, value })
    }

    /// `"key": expr`.
    fn pair(&mut self) -> Result<(String, Pos, Expr), ConfigError> {
        let (pos, token) = self.take()?;
        let Token::Str(key) = token else {
            return Err(self.unexpected(pos, &token, "a quoted dict key"));
        };
        self.expect_punct(b':')?;
        Ok((key, pos, self.expr()?))
    }

    /// Items up to `close`, each optionally preceded by one comma (m2sh's grammar:
    /// `items ::= items COMMA item | items item | .`).
    fn nested<T>(
        &mut self,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<T, ConfigError>,
    ) -> Result<Vec<T>, ConfigError> {
        self.depth += 1;
        if self.depth > NESTING_MAX {
            let pos = self.peek()?.0;
            return Err(self.lexer.error(pos, "nested too deeply".into()));
        }
        let mut items = Vec::new();
        loop {
            let (pos, token) = self.peek()?.clone();
            if token == Token::Punct(close) {
                self.take()?;
                break;
            }
            if token == Token::Punct(b',') {
                self.take()?;
                let (next_pos, next) = self.peek()?.clone();
                if next == Token::Punct(close) {
                    return Err(self.unexpected(next_pos, &next, "an item after ','"));
                }
            } else if token == Token::End {
                return Err(self.unexpected(pos, &token, &format!("'{}'", close as char)));
            }
            items.push(item(self)?);
        }
        self.depth -= 1;
        Ok(items)
    }
}

/// Parses a whole file into its top-level assignments, in source order.
pub fn parse(file: &str, text: &[u8]) -> Result<Vec<(String, Pos, Expr)>, ConfigError> {
    let mut parser = Parser {
        lexer: Lexer {
            file,
            text,
            at: 0,
            line: 1,
            line_start: 0,
        },
        peeked: None,
        depth: 0,
    };
    let mut assignments = Vec::new();
    while parser.peek()?.1 != Token::End {
        assignments.push(parser.assignment()?);
    }
    if assignments.is_empty() {
        return Err(ConfigError::new(
            file,
            Pos { line: 1, column: 1 },
            "the file assigns nothing".into(),
        ));
    }
    Ok(assignments)
}
