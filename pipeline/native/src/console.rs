//! A console call's arguments as one line of text and its data (`pipeline.formats.console`).
//!
//! The reference renders with orjson: strings as they are, other values as compact JSON,
//! joined by a space; the data is the object arguments and the JSON objects string arguments
//! hold, merged left to right. Where this could differ from orjson's output (a float, whose
//! shortest form is orjson's to choose; padded JSON; text shaped like an object that does not
//! read as one) the line is declined, and with it the message.

use std::borrow::Cow;

use crate::item::{Decline, Found, Member};
use crate::json::{parse, Json};

/// `console.render`: a line's text and data (the merged members of its objects). Err declines.
pub fn render<'t>(
    message: Option<&'t Json>,
    max_depth: usize,
) -> Found<(Cow<'t, str>, Option<Vec<Member<'t>>>)> {
    let args: &[Json] = match message {
        None | Some(Json::Null) => return Ok((Cow::Borrowed(""), None)),
        Some(Json::Array(args)) => args,
        Some(_) => return Err(Decline),
    };
    if let [Json::Str(only)] = args {
        // The common case, one string: no joining, and data only for embedded JSON.
        return Ok((Cow::Borrowed(only.as_ref()), embedded(only, max_depth)?));
    }
    let mut text = String::new();
    let mut data: Option<Vec<Member<'t>>> = None;
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        let found = match arg {
            Json::Str(s) => {
                text.push_str(s);
                embedded(s, max_depth)?
            }
            Json::Object(object) => {
                write_json(&mut text, arg)?;
                (!object.is_empty()).then(|| object.clone())
            }
            other => {
                write_json(&mut text, other)?;
                None
            }
        };
        match (&mut data, found) {
            (_, None) => {}
            (None, found) => data = found,
            // `{**data, **found}`: a later argument's value, in the first one's place.
            (Some(merged), Some(found)) => {
                for (key, value) in found {
                    match merged.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => merged.push((key, value)),
                    }
                }
            }
        }
    }
    Ok((Cow::Owned(text), data))
}

/// `console._embedded`: the non-empty object a string argument encodes. Padded JSON and text
/// that looks like an object but does not read as one are left to the reference.
fn embedded(arg: &str, max_depth: usize) -> Found<Option<Vec<Member<'_>>>> {
    let (Some(first), Some(last)) = (arg.chars().next(), arg.chars().next_back()) else {
        return Ok(None);
    };
    if first != '{' || last != '}' {
        if is_space(first) || is_space(last) {
            return Err(Decline);
        }
        return Ok(None);
    }
    match parse(arg, max_depth) {
        Ok(Json::Object(object)) => Ok((!object.is_empty()).then_some(object)),
        _ => Err(Decline),
    }
}

/// Python's `str.isspace`, or more: Rust's whitespace and the separators `\x1c`..`\x1f`.
fn is_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// A value as `orjson.dumps` writes it. A float declines: its shortest form is orjson's.
pub fn write_json(out: &mut String, value: &Json) -> Found<()> {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Int(n) => out.push_str(&n.to_string()),
        Json::UInt(n) => out.push_str(&n.to_string()),
        Json::Float(_) => return Err(Decline),
        Json::Str(s) => write_str(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item)?;
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_json(out, item)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// orjson's string escaping: `"`, `\` and the C0 controls, nothing else.
pub fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let b = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 15]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
