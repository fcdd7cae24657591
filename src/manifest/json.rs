//! A small JSON parser that remembers where every value and key starts.
//!
//! serde_json stops at the first error and forgets positions once a value is parsed; the
//! manifest validator needs both every error and the line and column of each. This parser
//! accepts exactly RFC 8259 JSON (no comments, no trailing commas) and rejects duplicate keys.

use std::fmt;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number as written; it is valid JSON number syntax.
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<Member>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl Value {
    /// The JSON type name used in messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

impl Node {
    /// The plain serde_json value, for deserializing into typed structs.
    pub fn to_serde(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(text) => text
                .parse::<serde_json::Number>()
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => items.iter().map(Node::to_serde).collect(),
            Value::Object(members) => serde_json::Value::Object(
                members
                    .iter()
                    .map(|m| (m.key.clone(), m.value.to_serde()))
                    .collect(),
            ),
        }
    }

    /// The member `key` of an object node.
    pub fn get(&self, key: &str) -> Option<&Member> {
        match &self.value {
            Value::Object(members) => members.iter().find(|m| m.key == key),
            _ => None,
        }
    }
}

/// Parses a whole document: one value, surrounded only by white space.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
        col: 1,
    };
    parser.skip_ws();
    let node = parser.value(0)?;
    parser.skip_ws();
    if parser.peek().is_some() {
        return Err(parser.error("unexpected characters after the JSON value"));
    }
    Ok(node)
}

/// Deeper nesting than any manifest needs; keeps a hostile file from overflowing the stack.
const MAX_DEPTH: usize = 128;

struct Parser {
    chars: Vec<char>,
    at: usize,
    line: u32,
    col: u32,
}

impl Parser {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos: self.pos(),
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, want: char, what: &str) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(c) if c == want => {
                self.bump();
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected {what}, found {}", describe(c)))),
            None => Err(self.error(format!("expected {what}, found the end of the file"))),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let pos = self.pos();
        let value = match self.peek() {
            Some('{') => self.object(depth)?,
            Some('[') => self.array(depth)?,
            Some('"') => Value::String(self.string()?),
            Some('-' | '0'..='9') => Value::Number(self.number()?),
            Some('t') => self.literal("true", Value::Bool(true))?,
            Some('f') => self.literal("false", Value::Bool(false))?,
            Some('n') => self.literal("null", Value::Null)?,
            Some(c) => return Err(self.error(format!("expected a value, found {}", describe(c)))),
            None => return Err(self.error("expected a value, found the end of the file")),
        };
        Ok(Node { pos, value })
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, SyntaxError> {
        let start = self.pos();
        for want in word.chars() {
            if self.peek() != Some(want) {
                return Err(SyntaxError {
                    pos: start,
                    message: format!("expected a value (did you mean `{word}`?)"),
                });
            }
            self.bump();
        }
        Ok(value)
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.bump(); // '{'
        let mut members: Vec<Member> = Vec::new();
        self.skip_ws();
        if self.peek() == Some('}') {
            self.bump();
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            let key_pos = self.pos();
            if self.peek() != Some('"') {
                return Err(match self.peek() {
                    Some('}') => self.error("trailing comma before `}`"),
                    Some(c) => self.error(format!(
                        "expected a quoted field name, found {}",
                        describe(c)
                    )),
                    None => self.error("expected a quoted field name, found the end of the file"),
                });
            }
            let key = self.string()?;
            if members.iter().any(|m| m.key == key) {
                return Err(SyntaxError {
                    pos: key_pos,
                    message: format!("duplicate field \"{key}\""),
                });
            }
            self.skip_ws();
            self.expect(':', "`:` after the field name")?;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            members.push(Member {
                key,
                key_pos,
                value,
            });
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    return Ok(Value::Object(members));
                }
                Some(c) => {
                    return Err(self.error(format!("expected `,` or `}}`, found {}", describe(c))));
                }
                None => {
                    return Err(
                        self.error("unclosed object: expected `}`, found the end of the file")
                    );
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.bump(); // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(']') {
            self.bump();
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            if self.peek() == Some(']') {
                return Err(self.error("trailing comma before `]`"));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                Some(c) => {
                    return Err(self.error(format!("expected `,` or `]`, found {}", describe(c))));
                }
                None => {
                    return Err(
                        self.error("unclosed array: expected `]`, found the end of the file")
                    );
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.bump(); // '"'
        let mut out = String::new();
        loop {
            let pos = self.pos();
            match self.bump() {
                None => return Err(self.error("unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('u') => out.push(self.unicode_escape(pos)?),
                    _ => {
                        return Err(SyntaxError {
                            pos,
                            message: "invalid escape in string".into(),
                        });
                    }
                },
                Some(c) if (c as u32) < 0x20 => {
                    return Err(SyntaxError {
                        pos,
                        message: "control character in string (write it as an escape)".into(),
                    });
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self, pos: Pos) -> Result<u32, SyntaxError> {
        let mut v = 0;
        for _ in 0..4 {
            let digit = self
                .bump()
                .and_then(|c| c.to_digit(16))
                .ok_or(SyntaxError {
                    pos,
                    message: "invalid \\u escape in string".into(),
                })?;
            v = v * 16 + digit;
        }
        Ok(v)
    }

    fn unicode_escape(&mut self, pos: Pos) -> Result<char, SyntaxError> {
        let invalid = || SyntaxError {
            pos,
            message: "invalid \\u escape in string (unpaired surrogate)".into(),
        };
        let first = self.hex4(pos)?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if self.bump() != Some('\\') || self.bump() != Some('u') {
                return Err(invalid());
            }
            let second = self.hex4(pos)?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(invalid());
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(invalid)
    }

    fn number(&mut self) -> Result<String, SyntaxError> {
        let start = self.at;
        let bad = |p: &Parser| p.error("invalid number");
        if self.peek() == Some('-') {
            self.bump();
        }
        match self.peek() {
            Some('0') => {
                self.bump();
            }
            Some('1'..='9') => self.digits(),
            _ => return Err(bad(self)),
        }
        if self.peek() == Some('.') {
            self.bump();
            if !matches!(self.peek(), Some('0'..='9')) {
                return Err(bad(self));
            }
            self.digits();
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if !matches!(self.peek(), Some('0'..='9')) {
                return Err(bad(self));
            }
            self.digits();
        }
        if matches!(self.peek(), Some('0'..='9')) {
            return Err(self.error("invalid number (leading zero)"));
        }
        Ok(self.chars[start..self.at].iter().collect())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some('0'..='9')) {
            self.bump();
        }
    }
}

fn describe(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("{:?}", c)
    } else {
        format!("`{c}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (u32, u32, String) {
        let e = parse(text).unwrap_err();
        (e.pos.line, e.pos.col, e.message)
    }

    #[test]
    fn positions_of_values_and_keys() {
        let doc = parse("{\n  \"a\": [1, true],\n  \"bé\": \"x\"\n}").unwrap();
        let a = doc.get("a").unwrap();
        assert_eq!(a.key_pos, Pos { line: 2, col: 3 });
        assert_eq!(a.value.pos, Pos { line: 2, col: 8 });
        let Value::Array(items) = &a.value.value else {
            panic!()
        };
        assert_eq!(items[1].pos, Pos { line: 2, col: 12 });
        let b = doc.get("bé").unwrap();
        assert_eq!(b.value.pos, Pos { line: 3, col: 9 });
    }

    #[test]
    fn agrees_with_serde_json_on_values() {
        let text = r#"{"s": "a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "n": [0, -1, 2.5e-3, 1E+2], "z": null, "t": false}"#;
        let ours = parse(text).unwrap().to_serde();
        let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn syntax_errors_name_the_place() {
        assert_eq!(err("{\"a\": 1,}").0, 1);
        assert_eq!(err("{\"a\": 1,}").2, "trailing comma before `}`");
        assert_eq!(
            err("{\n  \"a\": 01\n}"),
            (2, 9, "invalid number (leading zero)".into())
        );
        assert_eq!(
            err("{\"a\": 1, \"a\": 2}"),
            (1, 10, "duplicate field \"a\"".into())
        );
        assert_eq!(
            err("[1 2]"),
            (1, 4, "expected `,` or `]`, found `2`".into())
        );
        assert_eq!(
            err("{\"a\": tru}").2,
            "expected a value (did you mean `true`?)"
        );
        assert_eq!(err("// comment\n{}").2, "expected a value, found `/`");
        assert_eq!(err("{} x").2, "unexpected characters after the JSON value");
        assert_eq!(err("").2, "expected a value, found the end of the file");
        assert_eq!(
            err("\"\\ud800\"").2,
            "invalid \\u escape in string (unpaired surrogate)"
        );
        assert_eq!(
            err("\"a\nb\"").2,
            "control character in string (write it as an escape)"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(10_000);
        assert_eq!(parse(&text).unwrap_err().message, "nested too deeply");
    }
}
