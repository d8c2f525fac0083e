//! A trace item's `extra` while it is read: the keys without a column, in the reference's order.
//!
//! `trace_items.invocation` builds `extra` as a dict: the item's own keys first, then the
//! event's details copied in (`_copy`), a name already taken getting `event.` in front. A dict
//! keeps a key's first place when its value is replaced; so does this.

use std::borrow::Cow;

use crate::item::Members;
use crate::json::Json;

/// `extra` while it is built: keys in insertion order, as the reference's dict keeps them.
pub struct Extra<'t, 'a>(pub Vec<(Cow<'t, str>, Kept<'t, 'a>)>);

/// A value of `extra`: a value of the message, or a fetch's response without its status.
pub enum Kept<'t, 'a> {
    Value(&'t Json<'a>),
    ResponseRest(&'t Members<'a>),
}

impl<'t, 'a> Extra<'t, 'a> {
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
    pub fn get(&self, key: &str) -> Option<&'t Json<'a>> {
        match self.0.iter().find(|(k, _)| k == key) {
            Some((_, Kept::Value(value))) => Some(value),
            _ => None,
        }
    }
    /// `trace_items._copy`: a name a top-level key already took gets `event.` in front.
    pub fn copy(&mut self, details: &'t Members<'a>, skip: &[&str]) {
        for (key, value) in details {
            if !skip.contains(&key.as_ref()) {
                self.put(key, Kept::Value(value));
            }
        }
    }
    pub fn put(&mut self, key: &'t str, value: Kept<'t, 'a>) {
        let name = if self.has(key) {
            Cow::Owned(format!("event.{key}"))
        } else {
            Cow::Borrowed(key)
        };
        // `event.x` may itself be taken by a top-level key: the reference's dict then
        // replaces its value in place.
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}
