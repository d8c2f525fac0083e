//! Trace items from a message's bytes to records, without the dict tree in between.
//!
//! The reference is `pipeline.formats.decode.reference`: `orjson.loads`, then a walk over the
//! dicts that builds the records. Most of what orjson builds is thrown away at once (the log
//! entries, the message arrays, the event and request objects), and freeing it costs about as
//! much as building it. Here the message is read into a borrowed tree (`json.rs`), its items
//! into their fields (`item.rs`), and only the records, their strings and the JSON they keep
//! become Python objects.
//!
//! `decode` gives the `Invocation`s. `rows` gives, per invocation, the rows the transformer
//! would build from it too (`pipeline.transform.transformer`): the JSON columns written
//! straight from the tree, where the transformer builds dicts and orjson serialises them again.
//! Where a text, URL or JSON column holds a trigger of a redaction rule (or a JSON column a
//! `%`, which could hide a secret key's name), redaction may change it: the row is given as
//! read and named `dirty`, and the transformer redacts it as it would have. The invocations
//! given with rows carry no `extra` (it is in the row already). Where the rows cannot be
//! written so (an `extra` that needs redaction, a float in a JSON column), `rows` gives the
//! invocations `decode` would, from the same parse, for the transformer to build the rows.
//!
//! Anything but the common case returns None and the Python reference decodes the message,
//! errors included (see `item.rs` for what is declined). So the answer is the reference's or
//! none, which `tests/formats/test_native_trace_items.py` and
//! `tests/transform/test_native_rows.py` check on fixtures, `synth` and generated items.

use std::sync::{Mutex, PoisonError};

use memchr::memmem;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::columns::{json_columns, Columns};
use crate::extra::Kept;
use crate::item::{read, Found, Item, Level, Limits, Members};
use crate::json::{parse, Json};
use crate::pyjson::{object_to_python, to_python, Keys};
use crate::timestamps::datetime_of;
use crate::triggers::Triggers;

#[pyclass(frozen, module = "pipeline.native._core")]
pub struct TraceItems {
    invocation: Py<PyAny>,
    log_line: Py<PyAny>,
    exception_info: Py<PyAny>,
    limits: Limits,
    triggers: Option<Triggers>,
    keys: Mutex<Keys>,
}

#[pymethods]
impl TraceItems {
    /// `triggers`: the redaction triggers (as `Triggers` takes them), for `rows`.
    #[new]
    #[pyo3(signature = (invocation, log_line, exception_info, min_ms, max_ms, max_duration, short_name, max_depth, triggers=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        invocation: Py<PyAny>,
        log_line: Py<PyAny>,
        exception_info: Py<PyAny>,
        min_ms: i64,
        max_ms: i64,
        max_duration: i64,
        short_name: usize,
        max_depth: usize,
        triggers: Option<Vec<(String, u128)>>,
    ) -> PyResult<Self> {
        let limits = Limits {
            min_ms,
            max_ms,
            max_duration,
            short_name,
            max_depth,
        };
        let triggers = triggers.map(Triggers::new).transpose()?;
        let keys = Mutex::new(Keys::new());
        Ok(Self {
            invocation,
            log_line,
            exception_info,
            limits,
            triggers,
            keys,
        })
    }

    /// The invocations of a message, or None for the reference to decode it.
    fn decode<'py>(&self, py: Python<'py>, value: &[u8]) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(document) = self.document(value) else {
            return Ok(None);
        };
        let Some(items) = self.items(&document) else {
            return Ok(None);
        };
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        self.decoded(py, &items, &mut keys).map(Some)
    }

    /// `(True, rows)`: per invocation of a message `(invocation, event row, log rows, dirty)`.
    /// `dirty` is None, or the indexes of the log rows whose text and data redaction may change
    /// (-1: the event row's URL), for the transformer to redo. `(False, invocations)` where the
    /// rows are the transformer's to build (what `decode` gives), and None where `decode` too
    /// would decline: the message is the reference's, and one parse was spent on it, not two.
    /// `timestamp_ms` is the Kafka timestamp (for an item without one), `origin` the rows'
    /// `(topic, partition, offset)`.
    fn rows<'py>(
        &self,
        py: Python<'py>,
        value: &[u8],
        timestamp_ms: &Bound<'py, PyAny>,
        origin: (Bound<'py, PyString>, i64, i64),
    ) -> PyResult<Option<(bool, Bound<'py, PyList>)>> {
        let Some(triggers) = &self.triggers else {
            return Err(PyValueError::new_err("rows: built without triggers"));
        };
        let Some(document) = self.document(value) else {
            return Ok(None);
        };
        let Some(items) = self.items(&document) else {
            return Ok(None);
        };
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        // Everything checked before a row is built: a declined message costs no more.
        let timestamp_ms = timestamp_ms.extract::<i64>().ok();
        let columns: Found<Vec<Columns>> =
            items.iter().map(|i| json_columns(i, triggers)).collect();
        let (Some(timestamp_ms), Ok(columns)) = (timestamp_ms, columns) else {
            return Ok(Some((false, self.decoded(py, &items, &mut keys)?)));
        };
        let out = PyList::empty(py);
        let none = || py.None().into_bound(py);
        let (topic, partition, offset) = origin;
        // One object each, shared by every row of the message, as the transformer's rows share
        // theirs.
        let (partition, offset) = (partition.into_pyobject(py)?, offset.into_pyobject(py)?);
        for (index, (item, found)) in items.iter().zip(columns).enumerate() {
            let Columns { extra, data, dirty } = found;
            let Some(ts) = datetime_of(py, item.timestamp.unwrap_or(timestamp_ms))? else {
                return Ok(Some((false, self.decoded(py, &items, &mut keys)?)));
            };
            let texts = texts(py, item);
            let invocation = self.invocation(py, item, &texts, PyDict::new(py), &mut keys)?;
            let (text, int) = (|s| opt_text(py, s), |n| opt_int(py, n));
            let tags = if item.tags.is_empty() {
                none()
            } else {
                PyList::new(py, &item.tags)?.into_any()
            };
            let event = PyTuple::new(
                py,
                [
                    ts.clone().into_any(),
                    texts.script.clone().into_any(),
                    texts.kind.clone().into_any(),
                    texts.outcome.clone().into_any(),
                    texts.method.clone(),
                    texts.url.clone(),
                    int(item.status)?,
                    int(item.cpu)?,
                    int(item.wall)?,
                    item.lines.len().into_pyobject(py)?.into_any(),
                    item.exceptions.len().into_pyobject(py)?.into_any(),
                    item.truncated.into_pyobject(py)?.to_owned().into_any(),
                    text(item.version),
                    text(item.entrypoint),
                    text(item.namespace),
                    tags,
                    intern!(py, "trace").clone().into_any(),
                    extra
                        .as_deref()
                        .map_or_else(none, |s| PyString::new(py, s).into_any()),
                    topic.clone().into_any(),
                    partition.clone().into_any(),
                    offset.clone().into_any(),
                    index.into_pyobject(py)?.into_any(),
                    none(),
                    none(),
                ],
            )?;
            let logs = PyList::empty(py);
            for (seq, ((line, line_text), line_data)) in
                item.lines.iter().zip(&texts.lines).zip(data).enumerate()
            {
                let line_ts = match line.timestamp {
                    None => ts.clone(),
                    Some(ms) => match datetime_of(py, ms)? {
                        Some(found) => found,
                        None => return Ok(Some((false, self.decoded(py, &items, &mut keys)?))),
                    },
                };
                logs.append(PyTuple::new(
                    py,
                    [
                        line_ts.into_any(),
                        texts.script.clone().into_any(),
                        texts.kind.clone().into_any(),
                        texts.outcome.clone().into_any(),
                        level_name(py, line.level).clone().into_any(),
                        line_text.clone().into_any(),
                        line_data
                            .as_deref()
                            .map_or_else(none, |s| PyString::new(py, s).into_any()),
                        none(),
                        none(),
                        none(),
                        none(),
                        topic.clone().into_any(),
                        partition.clone().into_any(),
                        offset.clone().into_any(),
                        index.into_pyobject(py)?.into_any(),
                        seq.into_pyobject(py)?.into_any(),
                        none(),
                        none(),
                        ts.clone().into_any(),
                    ],
                )?)?;
            }
            let dirty = if dirty.is_empty() {
                none()
            } else {
                PyTuple::new(py, dirty)?.into_any()
            };
            out.append((invocation, event, logs, dirty))?;
        }
        Ok(Some((true, out)))
    }
}

/// The Python strings an invocation and its rows share.
struct Texts<'py> {
    script: Bound<'py, PyString>,
    kind: Bound<'py, PyString>,
    outcome: Bound<'py, PyString>,
    method: Bound<'py, PyAny>,
    url: Bound<'py, PyAny>,
    lines: Vec<Bound<'py, PyString>>,
}

/// A string or None.
fn opt_text<'py>(py: Python<'py>, s: Option<&str>) -> Bound<'py, PyAny> {
    s.map_or_else(
        || py.None().into_bound(py),
        |s| PyString::new(py, s).into_any(),
    )
}

/// An integer or None.
fn opt_int(py: Python<'_>, n: Option<i64>) -> PyResult<Bound<'_, PyAny>> {
    Ok(match n {
        Some(n) => n.into_pyobject(py)?.into_any(),
        None => py.None().into_bound(py),
    })
}

fn texts<'py>(py: Python<'py>, item: &Item) -> Texts<'py> {
    Texts {
        script: PyString::new(py, item.script),
        kind: PyString::intern(py, item.kind),
        outcome: PyString::new(py, item.outcome),
        method: opt_text(py, item.method),
        url: opt_text(py, item.url),
        lines: item
            .lines
            .iter()
            .map(|line| PyString::new(py, &line.text))
            .collect(),
    }
}

fn level_name(py: Python<'_>, level: Level) -> &Bound<'_, PyString> {
    match level {
        Level::Debug => intern!(py, "debug"),
        Level::Info => intern!(py, "info"),
        Level::Log => intern!(py, "log"),
        Level::Warn => intern!(py, "warn"),
        Level::Error => intern!(py, "error"),
    }
}

impl TraceItems {
    /// The items' invocations, `extra` included.
    fn decoded<'py>(
        &self,
        py: Python<'py>,
        items: &[Item],
        keys: &mut Keys,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for item in items {
            let texts = texts(py, item);
            let extra = PyDict::new(py);
            for (key, value) in &item.extra.0 {
                let converted = match value {
                    Kept::Value(value) => to_python(py, value, keys)?,
                    Kept::ResponseRest(members) => {
                        let rest = members.iter().filter(|(k, _)| k != "status");
                        object_to_python(py, rest.map(|(k, v)| (k.as_ref(), v)), keys)?
                    }
                };
                extra.set_item(keys.get(py, key), converted)?;
            }
            out.append(self.invocation(py, item, &texts, extra, keys)?)?;
        }
        Ok(out)
    }

    fn exceptions<'py>(&self, py: Python<'py>, item: &Item) -> PyResult<Bound<'py, PyTuple>> {
        if item.exceptions.is_empty() {
            return Ok(PyTuple::empty(py));
        }
        let class = self.exception_info.bind(py);
        let mut found = Vec::with_capacity(item.exceptions.len());
        for e in &item.exceptions {
            let (name, message) = (PyString::new(py, e.name), PyString::new(py, e.message));
            let (stack, reported) = (opt_text(py, e.stack), opt_text(py, e.reported_name));
            found.push(class.call1((opt_int(py, e.timestamp)?, name, message, stack, reported))?);
        }
        PyTuple::new(py, found)
    }

    /// The message's tree; None where a NUL needs sanitizing or the JSON is not sure.
    fn document<'a>(&self, value: &'a [u8]) -> Option<Json<'a>> {
        if memmem::find(value, b"\\u0000").is_some() {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        parse(text, self.limits.max_depth).ok()
    }

    /// The message's trace items read; None unless it is one or a non-empty array of them.
    fn items<'t, 'a>(&self, document: &'t Json<'a>) -> Option<Vec<Item<'t, 'a>>> {
        let members: Vec<&Members> = match document {
            Json::Object(item) => vec![item],
            Json::Array(items) if !items.is_empty() => items
                .iter()
                .map(|item| match item {
                    Json::Object(item) => Some(item.as_slice()),
                    _ => None,
                })
                .collect::<Option<_>>()?,
            _ => return None,
        };
        let limits = self.limits;
        members
            .into_iter()
            .map(|item| {
                let trace_item = crate::item::get(item, "envelope").is_none()
                    && crate::item::get(item, "outcome").is_some();
                if trace_item {
                    read(item, limits).ok()
                } else {
                    None
                }
            })
            .collect()
    }

    fn invocation<'py>(
        &self,
        py: Python<'py>,
        item: &Item,
        texts: &Texts<'py>,
        extra: Bound<'py, PyDict>,
        keys: &mut Keys,
    ) -> PyResult<Bound<'py, PyAny>> {
        let none = || py.None().into_bound(py);
        let (text, int) = (|s| opt_text(py, s), |n| opt_int(py, n));
        let log_line = self.log_line.bind(py);
        let mut lines = Vec::with_capacity(item.lines.len());
        for (line, line_text) in item.lines.iter().zip(&texts.lines) {
            let data = match &line.data {
                None => none(),
                Some(members) => {
                    object_to_python(py, members.iter().map(|(k, v)| (k.as_ref(), v)), keys)?
                }
            };
            let args = (
                int(line.timestamp)?,
                level_name(py, line.level),
                line_text,
                data,
                none(),
            );
            lines.push(log_line.call1(args)?);
        }
        let args = PyTuple::new(
            py,
            [
                texts.script.clone().into_any(),
                texts.kind.clone().into_any(),
                int(item.timestamp)?,
                texts.outcome.clone().into_any(),
                texts.method.clone(),
                texts.url.clone(),
                int(item.status)?,
                int(item.cpu)?,
                int(item.wall)?,
                PyTuple::new(py, lines)?.into_any(),
                self.exceptions(py, item)?.into_any(),
                item.truncated.into_pyobject(py)?.to_owned().into_any(),
                text(item.version),
                text(item.entrypoint),
                text(item.namespace),
                PyTuple::new(py, &item.tags)?.into_any(),
                extra.into_any(),
                intern!(py, "trace").clone().into_any(),
                PyTuple::empty(py).into_any(),
                none(),
                none(),
            ],
        )?;
        self.invocation.bind(py).call1(args)
    }
}
