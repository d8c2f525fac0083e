//! Trace items from a message's bytes to `Invocation`s, without the dict tree in between.
//!
//! The reference is `pipeline.formats.decode.reference`: `orjson.loads`, then a walk over the
//! dicts that builds the records. Most of what orjson builds is thrown away at once (the log
//! entries, the message arrays, the event and request objects), and freeing it costs about as
//! much as building it. Here the message is read into a borrowed tree (`json.rs`), and only the
//! records, their strings and the JSON they keep (`extra`, a line's `data`) become Python
//! objects.
//!
//! Only the common case is decoded: one trace item or an array of them, every field of the
//! type the runtime sends. Anything else returns None and the reference decodes the message,
//! errors included: an envelope, Logpush, OTLP, exceptions, a field of a wrong or convertible
//! type, text that needs sanitizing, a float the text of a line would print, JSON the reader
//! is unsure of. So the answer is the reference's or none, which
//! `tests/formats/test_native_trace_items.py` checks on fixtures, `synth` and generated items.

use std::borrow::Cow;
use std::sync::{Mutex, PoisonError};

use memchr::memmem;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::console::render;
use crate::json::{parse, Json};
use crate::pyjson::{to_python, Keys};

/// The trace item keys that fill typed columns (`trace_items._TYPED`); the rest go to `extra`.
#[rustfmt::skip]
const TYPED: [&str; 14] = [
    "scriptName", "event", "eventTimestamp", "logs", "exceptions", "outcome", "truncated",
    "cpuTime", "wallTime", "entrypoint", "dispatchNamespace", "scriptTags", "envelope",
    "spanContext",
];
/// `trace_items.EVENT_VARIANTS`: the first key found names the event type.
#[rustfmt::skip]
const VARIANTS: [(&str, &str); 10] = [
    ("request", "fetch"), ("cron", "scheduled"), ("scheduledTime", "alarm"), ("queue", "queue"),
    ("batchSize", "queue"), ("mailFrom", "email"), ("rcptTo", "email"), ("rpcMethod", "rpc"),
    ("consumedEvents", "tail"), ("getWebSocketEvent", "websocket"),
];
/// `entries.LIMIT_LOG_PREFIXES`.
const LIMIT_LOG_PREFIXES: [&str; 2] = ["Log size limit exceeded", "Trace resource limit exceeded"];

/// Declined: the reference decides.
pub struct Decline;
pub type Found<T> = Result<T, Decline>;
pub type Member<'a> = (Cow<'a, str>, Json<'a>);
type Members<'a> = [Member<'a>];

/// The bounds of `pipeline.formats.fields`, given by Python so that they have one home.
#[derive(Clone, Copy)]
struct Limits {
    min_ms: i64,
    max_ms: i64,
    max_duration: i64,
    short_name: usize,
    max_depth: usize,
}

#[pyclass(frozen, module = "pipeline.native._core")]
pub struct TraceItems {
    invocation: Py<PyAny>,
    log_line: Py<PyAny>,
    limits: Limits,
    keys: Mutex<Keys>,
}

#[pymethods]
impl TraceItems {
    #[new]
    fn new(
        invocation: Py<PyAny>,
        log_line: Py<PyAny>,
        min_ms: i64,
        max_ms: i64,
        max_duration: i64,
        short_name: usize,
        max_depth: usize,
    ) -> Self {
        let limits = Limits {
            min_ms,
            max_ms,
            max_duration,
            short_name,
            max_depth,
        };
        Self {
            invocation,
            log_line,
            limits,
            keys: Mutex::new(Keys::new()),
        }
    }

    /// The invocations of a message, or None for the reference to decode it.
    fn decode<'py>(&self, py: Python<'py>, value: &[u8]) -> PyResult<Option<Bound<'py, PyList>>> {
        // A NUL needs sanitizing, and a message nested deeper than the limit is refused: both
        // are the reference's to handle.
        if memmem::find(value, b"\\u0000").is_some() {
            return Ok(None);
        }
        let Ok(text) = std::str::from_utf8(value) else {
            return Ok(None);
        };
        let Ok(document) = parse(text, self.limits.max_depth) else {
            return Ok(None);
        };
        let items: Vec<&Members> = match &document {
            Json::Object(item) => vec![item],
            Json::Array(items) if !items.is_empty() => {
                let mut found = Vec::with_capacity(items.len());
                for item in items {
                    let Json::Object(item) = item else {
                        return Ok(None);
                    };
                    found.push(item.as_slice());
                }
                found
            }
            _ => return Ok(None),
        };
        let out = PyList::empty(py);
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        for item in items {
            if get(item, "envelope").is_some() || get(item, "outcome").is_none() {
                return Ok(None);
            }
            match self.invocation(py, item, &mut keys)? {
                Ok(invocation) => out.append(invocation)?,
                Err(Decline) => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

fn get<'t, 'a>(members: &'t Members<'a>, key: &str) -> Option<&'t Json<'a>> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// `extra` while it is built: keys in insertion order, as the reference's dict keeps them.
struct Extra<'t, 'a>(Vec<(Cow<'t, str>, Kept<'t, 'a>)>);

/// A value of `extra`: a value of the message, or a fetch's response without its status.
enum Kept<'t, 'a> {
    Value(&'t Json<'a>),
    ResponseRest(&'t Members<'a>),
}

impl<'t, 'a> Extra<'t, 'a> {
    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
    fn get(&self, key: &str) -> Option<&'t Json<'a>> {
        match self.0.iter().find(|(k, _)| k == key) {
            Some((_, Kept::Value(value))) => Some(value),
            _ => None,
        }
    }
    /// `trace_items._copy`: a name a top-level key already took gets `event.` in front.
    fn copy(&mut self, details: &'t Members<'a>, skip: &[&str]) {
        for (key, value) in details {
            if !skip.contains(&key.as_ref()) {
                self.put(key, Kept::Value(value));
            }
        }
    }
    fn put(&mut self, key: &'t str, value: Kept<'t, 'a>) {
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

/// The event's type and a fetch's method, URL and status.
struct Event<'t> {
    kind: &'static str,
    method: Option<&'t str>,
    url: Option<&'t str>,
    status: Option<i64>,
}

impl TraceItems {
    fn invocation<'py>(
        &self,
        py: Python<'py>,
        item: &Members,
        keys: &mut Keys,
    ) -> PyResult<Found<Bound<'py, PyAny>>> {
        let limits = self.limits;
        let mut extra = Extra(Vec::with_capacity(8));
        for (key, value) in item {
            if !TYPED.contains(&key.as_ref()) {
                extra
                    .0
                    .push((Cow::Borrowed(key.as_ref()), Kept::Value(value)));
            }
        }
        let Ok(event) = event(get(item, "event"), &mut extra) else {
            return Ok(Err(Decline));
        };
        let Some(outcome) = short_str(get(item, "outcome"), limits.short_name) else {
            return Ok(Err(Decline));
        };
        let mut truncated = match get(item, "truncated") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(flag)) => *flag,
            Some(_) => return Ok(Err(Decline)),
        };
        let (logs, cut) = match self.logs(py, get(item, "logs"), keys)? {
            Ok(found) => found,
            Err(Decline) => return Ok(Err(Decline)),
        };
        match get(item, "exceptions") {
            None | Some(Json::Null) => {}
            Some(Json::Array(entries)) if entries.is_empty() => {}
            Some(_) => return Ok(Err(Decline)),
        }
        if let Some(at) = extra
            .0
            .iter()
            .position(|(k, _)| k == "diagnosticsChannelEvents")
        {
            match extra.0[at].1 {
                Kept::Value(Json::Array(events)) if events.is_empty() => {
                    extra.0.remove(at);
                }
                Kept::Value(Json::Array(events)) => {
                    let limit = |e: &Json| {
                        e.get("channel").and_then(Json::as_str) == Some("workerd.LimitExceeded")
                    };
                    truncated |= events.iter().any(limit);
                }
                _ => return Ok(Err(Decline)),
            }
        }
        let version = match extra.get("scriptVersion") {
            None | Some(Json::Null) => None,
            Some(Json::Object(version)) => match opt_str(get(version, "id")) {
                Ok(Some(id)) => Some(id),
                Ok(None) => match opt_str(get(version, "tag")) {
                    Ok(tag) => tag,
                    Err(Decline) => return Ok(Err(Decline)),
                },
                Err(Decline) => return Ok(Err(Decline)),
            },
            Some(_) => return Ok(Err(Decline)),
        };
        let (Ok(timestamp), Ok(cpu), Ok(wall)) = (
            ranged(
                get(item, "eventTimestamp"),
                limits.min_ms,
                limits.max_ms - 1,
            ),
            ranged(get(item, "cpuTime"), 0, limits.max_duration),
            ranged(get(item, "wallTime"), 0, limits.max_duration),
        ) else {
            return Ok(Err(Decline));
        };
        let Some(script) = short_str(get(item, "scriptName"), limits.short_name) else {
            return Ok(Err(Decline));
        };
        let (Ok(entrypoint), Ok(namespace)) = (
            opt_str(get(item, "entrypoint")),
            opt_str(get(item, "dispatchNamespace")),
        ) else {
            return Ok(Err(Decline));
        };
        let tags: Vec<&str> = match get(item, "scriptTags") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(tags)) => {
                let found: Option<Vec<&str>> = tags.iter().map(Json::as_str).collect();
                let Some(found) = found else {
                    return Ok(Err(Decline));
                };
                found
            }
            Some(_) => return Ok(Err(Decline)),
        };
        if !matches!(get(item, "spanContext"), None | Some(Json::Null)) {
            return Ok(Err(Decline));
        }

        let extra_dict = PyDict::new(py);
        for (key, value) in &extra.0 {
            let converted = match value {
                Kept::Value(value) => to_python(py, value, keys)?,
                Kept::ResponseRest(members) => {
                    let rest = PyDict::new(py);
                    for (k, v) in members.iter().filter(|(k, _)| k != "status") {
                        rest.set_item(keys.get(py, k), to_python(py, v, keys)?)?;
                    }
                    rest.into_any()
                }
            };
            extra_dict.set_item(keys.get(py, key), converted)?;
        }
        let none = py.None().into_bound(py);
        let text =
            |s: Option<&str>| s.map_or_else(|| none.clone(), |s| PyString::new(py, s).into_any());
        let int = |n: Option<i64>| -> PyResult<Bound<'py, PyAny>> {
            Ok(match n {
                Some(n) => n.into_pyobject(py)?.into_any(),
                None => none.clone(),
            })
        };
        let args = PyTuple::new(
            py,
            [
                PyString::new(py, script).into_any(),
                PyString::intern(py, event.kind).into_any(),
                int(timestamp)?,
                PyString::new(py, outcome).into_any(),
                text(event.method),
                text(event.url),
                int(event.status)?,
                int(cpu)?,
                int(wall)?,
                logs.into_any(),
                PyTuple::empty(py).into_any(),
                (truncated || cut).into_pyobject(py)?.to_owned().into_any(),
                text(version),
                text(entrypoint),
                text(namespace),
                PyTuple::new(py, tags)?.into_any(),
                extra_dict.into_any(),
                intern!(py, "trace").clone().into_any(),
                PyTuple::empty(py).into_any(),
                none.clone(),
                none.clone(),
            ],
        )?;
        Ok(Ok(self.invocation.bind(py).call1(args)?))
    }

    /// `trace_items._logs`: the lines, and whether one is the runtime's size-limit marker.
    fn logs<'py>(
        &self,
        py: Python<'py>,
        logs: Option<&Json>,
        keys: &mut Keys,
    ) -> PyResult<Found<(Bound<'py, PyTuple>, bool)>> {
        let entries = match logs {
            None | Some(Json::Null) => return Ok(Ok((PyTuple::empty(py), false))),
            Some(Json::Array(entries)) => entries,
            Some(_) => return Ok(Err(Decline)),
        };
        let limits = self.limits;
        let mut lines = Vec::with_capacity(entries.len());
        let mut cut = false;
        for entry in entries {
            let Json::Object(entry) = entry else {
                return Ok(Err(Decline));
            };
            if ["record", "context", "errorInfo"]
                .iter()
                .any(|k| get(entry, k).is_some())
            {
                return Ok(Err(Decline));
            }
            let (level, warn) = match get(entry, "level").and_then(Json::as_str) {
                Some("debug") => (intern!(py, "debug"), false),
                Some("info") => (intern!(py, "info"), false),
                Some("log") => (intern!(py, "log"), false),
                Some("warn" | "warning") => (intern!(py, "warn"), true),
                Some("error") => (intern!(py, "error"), false),
                _ => return Ok(Err(Decline)),
            };
            let Ok(timestamp) = ranged(get(entry, "timestamp"), limits.min_ms, limits.max_ms - 1)
            else {
                return Ok(Err(Decline));
            };
            let Ok((text, data)) = render(py, get(entry, "message"), limits.max_depth, keys)?
            else {
                return Ok(Err(Decline));
            };
            if warn && LIMIT_LOG_PREFIXES.iter().any(|p| text.starts_with(p)) {
                cut = true;
            }
            let timestamp = match timestamp {
                Some(ms) => ms.into_pyobject(py)?.into_any(),
                None => py.None().into_bound(py),
            };
            let args = (timestamp, level, PyString::new(py, &text), data, py.None());
            lines.push(self.log_line.bind(py).call1(args)?);
        }
        Ok(Ok((PyTuple::new(py, lines)?, cut)))
    }
}

/// `trace_items._event` for the variants of a trace item (not an envelope's).
fn event<'t, 'a>(event: Option<&'t Json<'a>>, extra: &mut Extra<'t, 'a>) -> Found<Event<'t>> {
    let plain = |kind| Event {
        kind,
        method: None,
        url: None,
        status: None,
    };
    let details = match event {
        None | Some(Json::Null) => return Ok(plain("unknown")),
        Some(Json::Object(details)) => details,
        Some(_) => return Err(Decline),
    };
    if details.is_empty() {
        return Ok(plain("connect"));
    }
    let variant = VARIANTS.iter().find(|(key, _)| get(details, key).is_some());
    let kind = match variant {
        Some((_, kind)) => *kind,
        None => match get(details, "type").and_then(Json::as_str) {
            Some("overload" | "overload-stop") => "overload",
            _ => "unknown",
        },
    };
    if kind != "fetch" {
        extra.copy(details, &[]);
        return Ok(plain(kind));
    }
    let Some(Json::Object(request)) = get(details, "request") else {
        return Err(Decline);
    };
    for name in ["headers", "cf"] {
        if !matches!(
            get(request, name),
            None | Some(Json::Null | Json::Object(_))
        ) {
            return Err(Decline);
        }
    }
    let method = opt_str(get(request, "method"))?;
    let url = opt_str(get(request, "url"))?;
    extra.copy(request, &["url", "method"]);
    let mut found = Event {
        kind,
        method,
        url,
        status: None,
    };
    let response = get(details, "response");
    match response {
        None | Some(Json::Null) => {}
        Some(Json::Object(response)) => {
            found.status = ranged(get(response, "status"), 0, 999)?;
            if response.len() > usize::from(get(response, "status").is_some()) {
                extra.put("response", Kept::ResponseRest(response));
            }
        }
        Some(_) => return Err(Decline),
    }
    if details.len() > 1 + usize::from(response.is_some()) {
        extra.copy(details, &["request", "response"]);
    }
    Ok(found)
}

/// A string, None for null, absent or `""` (`fields.opt_str`); anything else declines.
fn opt_str<'t>(value: Option<&'t Json>) -> Found<Option<&'t str>> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Str(s)) => Ok((!s.is_empty()).then_some(s.as_ref())),
        Some(_) => Err(Decline),
    }
}

/// A non-empty string short enough to need no byte count (`trace_items._SHORT`).
fn short_str<'t>(value: Option<&'t Json>, short: usize) -> Option<&'t str> {
    match value {
        Some(Json::Str(s)) if !s.is_empty() && s.chars().count() <= short => Some(s),
        _ => None,
    }
}

/// An integer in `low..=high`, None for null or absent. Anything else declines: the reference
/// converts strings of digits and fractions, and reports the rest.
fn ranged(value: Option<&Json>, low: i64, high: i64) -> Found<Option<i64>> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Int(n)) if low <= *n && *n <= high => Ok(Some(*n)),
        Some(_) => Err(Decline),
    }
}
