//! The JSON columns of a trace item's rows, and what redaction may change in them.
//!
//! The transformer stores `extra` and each line's `data` as `orjson.dumps` of the decoded dict,
//! after redaction. Written here from the tree (same key order, same escaping; a float
//! declines, its shortest form being orjson's), they are the same text. Redaction changes a
//! text only where one of its rules' triggers occurs (`triggers.rs`), and a JSON text also
//! where a `%` could spell a secret key's name: such a line (or URL) is marked for the
//! transformer to redact with the rules.

use crate::console::{write_json, write_str};
use crate::extra::Kept;
use crate::item::{Decline, Found, Item};
use crate::json::Json;
use crate::triggers::Triggers;

/// The JSON columns of an item as the transformer would store them when redaction changes
/// nothing: `extra`, and per line its `data`.
pub struct Columns {
    pub extra: Option<String>,
    pub data: Vec<Option<String>>,
    /// What redaction may change, for the transformer to redo: the lines by index, and -1 for
    /// the URL. Rare: a trigger word in a line (`input_tokens`), a secret.
    pub dirty: Vec<i64>,
}

/// The JSON columns of `item`; Decline where its `extra` needs redaction (the invocation given
/// with the rows has no `extra` to redact).
pub fn json_columns(item: &Item, triggers: &Triggers) -> Found<Columns> {
    let clean = |text: &str| triggers.scan(text.as_bytes()) == 0;
    // A JSON text is clean without a trigger and without a `%` (a percent-encoded key name).
    let clean_json = |text: &str| !text.contains('%') && clean(text);
    let mut dirty = Vec::new();
    if !item.url.is_none_or(clean) {
        dirty.push(-1);
    }
    let extra = if item.extra.0.is_empty() {
        None
    } else {
        let mut out = String::with_capacity(256);
        out.push('{');
        for (i, (key, value)) in item.extra.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(&mut out, key);
            out.push(':');
            match value {
                Kept::Value(value) => write_json(&mut out, value)?,
                Kept::ResponseRest(members) => {
                    let rest = members
                        .iter()
                        .filter(|(k, _)| k != "status")
                        .cloned()
                        .collect();
                    write_json(&mut out, &Json::Object(rest))?;
                }
            }
        }
        out.push('}');
        if !clean_json(&out) {
            return Err(Decline);
        }
        Some(out)
    };
    let mut data = Vec::with_capacity(item.lines.len());
    for (index, line) in item.lines.iter().enumerate() {
        let mut line_clean = clean(&line.text);
        data.push(match &line.data {
            None => None,
            Some(members) => {
                let mut out = String::new();
                write_json(&mut out, &Json::Object(members.clone()))?;
                line_clean &= clean_json(&out);
                Some(out)
            }
        });
        if !line_clean {
            dirty.push(index as i64);
        }
    }
    Ok(Columns { extra, data, dirty })
}
