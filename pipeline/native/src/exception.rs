//! An exception of a trace item, read as `pipeline.formats.entries` reads it.
//!
//! workerd reports `name: "Error"` for a subclass of Error and keeps the class in the stack's
//! header (`CustomError: message`); `entries.exception` then takes the header's class as the
//! name and keeps the runtime's for grouping, and drops the header from the stack. This does
//! the same, and declines where the reference's Unicode-aware `isspace` and `\w` could answer
//! otherwise than ASCII rules: a stack starting with, or a header's class holding, a
//! non-ASCII character.

use crate::item::{get, opt_str, ranged, Decline, Found, Limits};
use crate::json::Json;

/// `entries.LIMIT_EXCEPTION_PREFIX`: the runtime's synthetic exception past its size limit.
pub const LIMIT_EXCEPTION_PREFIX: &str = "Trace resource limit exceeded";

/// One `exceptions[]` entry, its stack's header read as `entries.exception` reads it.
pub struct Exception<'t> {
    pub timestamp: Option<i64>,
    pub name: &'t str,
    pub message: &'t str,
    pub stack: Option<&'t str>,
    /// The runtime's name, when the stack's header named a more specific class.
    pub reported_name: Option<&'t str>,
}

/// `entries.exception_info` and `entries.exception`. A stack starting with a non-ASCII
/// character, or whose header names a class in non-ASCII letters, declines: the reference's
/// `isspace` and `\w` are Unicode's, which this does not repeat.
pub fn exception<'t>(entry: &'t Json, limits: Limits) -> Found<Exception<'t>> {
    let Json::Object(entry) = entry else {
        return Err(Decline);
    };
    let text = |key| match get(entry, key) {
        None | Some(Json::Null) => Ok(""),
        Some(Json::Str(s)) => Ok(s.as_ref()),
        Some(_) => Err(Decline),
    };
    let timestamp = ranged(get(entry, "timestamp"), limits.min_ms, limits.max_ms - 1)?;
    let (name, message) = (text("name")?, text("message")?);
    let stack = opt_str(get(entry, "stack"))?;
    let plain = Exception {
        timestamp,
        name,
        message,
        stack,
        reported_name: None,
    };
    let Some(stack) = stack else { return Ok(plain) };
    let first = stack.as_bytes()[0];
    if !first.is_ascii() {
        return Err(Decline);
    }
    if matches!(
        first,
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f
    ) {
        return Ok(plain);
    }
    // `_FRAME`: a newline, spaces or tabs, then `at `.
    let frame = stack.match_indices('\n').map(|(at, _)| at).find(|&at| {
        let rest = &stack.as_bytes()[at + 1..];
        let blank = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        blank > 0 && rest[blank..].starts_with(b"at ")
    });
    let (header, frames) = match frame {
        Some(at) => (&stack[..at], Some(&stack[at + 1..])),
        None => (stack, None),
    };
    let (class_name, rest, colon) = match header.split_once(": ") {
        Some((class_name, rest)) => (class_name, rest, true),
        None => (header, "", false),
    };
    if !class_name.is_ascii() {
        return Err(Decline);
    }
    let bytes = class_name.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$';
    let is_class = (1..=100).contains(&bytes.len())
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_' || bytes[0] == b'$')
        && bytes.iter().all(word);
    if !(is_class && rest == message && (colon || message.is_empty())) {
        return Ok(plain);
    }
    if class_name == name {
        return Ok(Exception {
            stack: frames,
            ..plain
        });
    }
    Ok(Exception {
        name: class_name,
        stack: frames,
        reported_name: Some(name),
        ..plain
    })
}
