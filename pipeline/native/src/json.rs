//! A strict JSON reader into a borrowed tree, for the decoders of this crate.
//!
//! serde_json's `Value` hashes every key into an `IndexMap` and copies every string; the
//! decoders look up a handful of keys in objects of a handful of members, so here an object is
//! its members in order, a string borrows the input unless it holds an escape, and nothing is
//! hashed. The grammar is RFC 8259's, which is what orjson accepts. Where orjson would build
//! something this reader cannot promise to build alike, it reports `Unsure` and the caller
//! leaves the message to the Python reference:
//! - an object with a duplicate key (orjson keeps the last value in the first one's place);
//! - an escaped lone surrogate (orjson refuses it; the reference then reads it leniently);
//! - an integer beyond 64 bits (orjson makes it a float) and a float that overflows.

use std::borrow::Cow;
use std::collections::HashSet;

#[derive(Clone, Debug)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// Not read: invalid JSON, or JSON this reader leaves to orjson (see the module).
#[derive(Debug)]
pub struct Unsure;

impl<'a> Json<'a> {
    /// The member `key` of an object; None for an absent key or a value that is no object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The one value `text` holds, with only whitespace around it; Unsure past `max_depth`
/// levels of arrays and objects.
pub fn parse(text: &str, max_depth: usize) -> Result<Json<'_>, Unsure> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
        max_depth,
    };
    let value = reader.value(0)?;
    reader.space();
    if reader.at != reader.bytes.len() {
        return Err(Unsure);
    }
    Ok(value)
}

/// Objects up to this many members are checked for duplicate keys pair by pair.
const PAIRWISE: usize = 32;

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8], value: Json<'a>) -> Result<Json<'a>, Unsure> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(Unsure)
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>, Unsure> {
        self.space();
        match self.bytes.get(self.at) {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Unsure),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json<'a>, Unsure> {
        if depth > self.max_depth {
            return Err(Unsure);
        }
        self.at += 1;
        let mut members: Vec<(Cow<'a, str>, Json<'a>)> = Vec::new();
        let mut seen: Option<HashSet<Cow<'a, str>>> = None;
        self.space();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.space();
            if self.bytes.get(self.at) != Some(&b'"') {
                return Err(Unsure);
            }
            let key = self.string()?;
            self.space();
            if self.bytes.get(self.at) != Some(&b':') {
                return Err(Unsure);
            }
            self.at += 1;
            let value = self.value(depth)?;
            // Pairwise while small (the usual object); past that a set, so that a hostile
            // object of many keys costs linear time, not quadratic.
            let duplicate = match &mut seen {
                Some(seen) => !seen.insert(key.clone()),
                None => members.iter().any(|(k, _)| *k == key),
            };
            if duplicate {
                return Err(Unsure);
            }
            members.push((key, value));
            if seen.is_none() && members.len() == PAIRWISE {
                seen = Some(members.iter().map(|(k, _)| k.clone()).collect());
            }
            self.space();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(Unsure),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json<'a>, Unsure> {
        if depth > self.max_depth {
            return Err(Unsure);
        }
        self.at += 1;
        let mut items = Vec::new();
        self.space();
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.space();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// A string at `"`: borrowed from the input when it holds no escape.
    fn string(&mut self) -> Result<Cow<'a, str>, Unsure> {
        self.at += 1;
        let start = self.at;
        loop {
            match self.bytes.get(self.at) {
                Some(b'"') => {
                    let found = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(Cow::Borrowed(found));
                }
                Some(b'\\') => break,
                Some(&b) if b < 0x20 => return Err(Unsure),
                Some(_) => self.at += 1,
                None => return Err(Unsure),
            }
        }
        let mut owned = String::from(&self.text[start..self.at]);
        loop {
            match self.bytes.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(Cow::Owned(owned));
                }
                Some(b'\\') => {
                    let escaped = *self.bytes.get(self.at + 1).ok_or(Unsure)?;
                    self.at += 2;
                    owned.push(match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(Unsure),
                    });
                }
                Some(&b) if b < 0x20 => return Err(Unsure),
                Some(_) => {
                    // Copy the run up to the next quote or escape in one piece.
                    let run = self.at;
                    while let Some(&b) = self.bytes.get(self.at) {
                        if b == b'"' || b == b'\\' || b < 0x20 {
                            break;
                        }
                        self.at += 1;
                    }
                    owned.push_str(&self.text[run..self.at]);
                }
                None => return Err(Unsure),
            }
        }
    }

    /// The character of `\uXXXX` (just read up to the `u`), with its low half if it is a high
    /// surrogate; a lone surrogate is Unsure.
    fn unicode_escape(&mut self) -> Result<char, Unsure> {
        let high = self.hex4()?;
        if !(0xD800..0xE000).contains(&high) {
            return char::from_u32(high).ok_or(Unsure);
        }
        if high >= 0xDC00 || self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
            return Err(Unsure);
        }
        self.at += 2;
        let low = self.hex4()?;
        if !(0xDC00..0xE000).contains(&low) {
            return Err(Unsure);
        }
        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)).ok_or(Unsure)
    }

    fn hex4(&mut self) -> Result<u32, Unsure> {
        let digits = self.text.get(self.at..self.at + 4).ok_or(Unsure)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Unsure);
        }
        self.at += 4;
        u32::from_str_radix(digits, 16).map_err(|_| Unsure)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Json<'a>, Unsure> {
        let start = self.at;
        if self.bytes[self.at] == b'-' {
            self.at += 1;
        }
        match self.bytes.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Unsure),
        }
        let mut integer = true;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            integer = false;
            if !matches!(self.bytes.get(self.at), Some(b'0'..=b'9')) {
                return Err(Unsure);
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if !matches!(self.bytes.get(self.at), Some(b'0'..=b'9')) {
                return Err(Unsure);
            }
            self.digits();
        }
        let literal = &self.text[start..self.at];
        if integer {
            if let Ok(n) = literal.parse::<i64>() {
                return Ok(Json::Int(n));
            }
            return literal.parse::<u64>().map(Json::UInt).map_err(|_| Unsure);
        }
        match literal.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Json::Float(f)),
            _ => Err(Unsure),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }
}
