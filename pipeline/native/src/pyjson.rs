//! Decoded JSON to Python objects, as orjson builds them, with its key cache.
//!
//! The same few dozen names (`headers`, `cf`, `user-agent`, `scriptVersion`, ...) are the keys
//! of every message's objects. orjson keeps a cache of their Python strings for this reason,
//! and so does this: a string from the cache needs no UTF-8 decoding, and it carries its hash,
//! so the dict it goes into does not hash it again. The cache is direct-mapped (a slot per
//! hash, a newcomer replaces the slot's key), so its size is fixed whatever the input.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyString};

use crate::json::Json;

const SLOTS: usize = 1024;
/// Longer keys are rare and would make the cache hold large strings: made anew each time.
const MAX_KEY_BYTES: usize = 64;

pub struct Keys {
    slots: Vec<Option<(Box<str>, Py<PyString>)>>,
}

impl Keys {
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }

    pub fn get<'py>(&mut self, py: Python<'py>, key: &str) -> Bound<'py, PyString> {
        if key.len() > MAX_KEY_BYTES {
            return PyString::new(py, key);
        }
        let slot = &mut self.slots[fnv1a(key.as_bytes()) % SLOTS];
        if let Some((cached, string)) = slot {
            if **cached == *key {
                return string.bind(py).clone();
            }
        }
        let string = PyString::intern(py, key);
        *slot = Some((key.into(), string.clone().unbind()));
        string
    }
}

/// FNV-1a: short keys, no hostile-input concern (a collision only costs a miss).
fn fnv1a(bytes: &[u8]) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash as usize
}

pub fn object_to_python<'py, 'v, 'a: 'v>(
    py: Python<'py>,
    members: impl Iterator<Item = (&'v str, &'v Json<'a>)>,
    keys: &mut Keys,
) -> PyResult<Bound<'py, PyAny>> {
    let dict = PyDict::new(py);
    for (key, value) in members {
        dict.set_item(keys.get(py, key), to_python(py, value, keys)?)?;
    }
    Ok(dict.into_any())
}

/// A value as orjson builds it: dict, list, str, int, float, bool or None.
pub fn to_python<'py>(
    py: Python<'py>,
    value: &Json,
    keys: &mut Keys,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Json::Null => py.None().into_bound(py),
        Json::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Json::Int(n) => n.into_pyobject(py)?.into_any(),
        Json::UInt(n) => n.into_pyobject(py)?.into_any(),
        Json::Float(f) => PyFloat::new(py, *f).into_any(),
        Json::Str(s) => PyString::new(py, s).into_any(),
        Json::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item, keys)?)?;
            }
            list.into_any()
        }
        Json::Object(members) => {
            object_to_python(py, members.iter().map(|(k, v)| (k.as_ref(), v)), keys)?
        }
    })
}
