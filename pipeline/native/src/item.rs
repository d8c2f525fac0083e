//! A trace item read into the fields its records need, borrowed from the message's tree.
//!
//! Pure: no Python here. `read` mirrors `pipeline.formats.trace_items.invocation` for a trace
//! item (not an envelope) whose every field has the type the runtime sends, and declines
//! anything else, for the Python reference to decode: a field of a wrong or
//! convertible type (a string of digits, a fraction), a name too long to skip its byte count,
//! a `spanContext`, a log entry with the structured logger's parts.

use std::borrow::Cow;

use crate::console::render;
use crate::exception::{exception, Exception, LIMIT_EXCEPTION_PREFIX};
use crate::extra::{Extra, Kept};
use crate::json::Json;

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
pub type Members<'a> = [Member<'a>];

/// The bounds of `pipeline.formats.fields`, given by Python so that they have one home.
#[derive(Clone, Copy)]
pub struct Limits {
    pub min_ms: i64,
    pub max_ms: i64,
    pub max_duration: i64,
    pub short_name: usize,
    pub max_depth: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Log,
    Warn,
    Error,
}

pub struct Line<'t> {
    pub timestamp: Option<i64>,
    pub level: Level,
    pub text: Cow<'t, str>,
    pub data: Option<Vec<Member<'t>>>,
}

pub struct Item<'t, 'a> {
    pub script: &'t str,
    pub kind: &'static str,
    pub timestamp: Option<i64>,
    pub outcome: &'t str,
    pub method: Option<&'t str>,
    pub url: Option<&'t str>,
    pub status: Option<i64>,
    pub cpu: Option<i64>,
    pub wall: Option<i64>,
    pub lines: Vec<Line<'t>>,
    pub exceptions: Vec<Exception<'t>>,
    pub truncated: bool,
    pub version: Option<&'t str>,
    pub entrypoint: Option<&'t str>,
    pub namespace: Option<&'t str>,
    pub tags: Vec<&'t str>,
    pub extra: Extra<'t, 'a>,
}

pub fn get<'t, 'a>(members: &'t Members<'a>, key: &str) -> Option<&'t Json<'a>> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The event's type and a fetch's method, URL and status.
struct Event<'t> {
    kind: &'static str,
    method: Option<&'t str>,
    url: Option<&'t str>,
    status: Option<i64>,
}

/// The fields of one trace item (it has an `outcome` and no `envelope`), or Decline.
pub fn read<'t, 'a>(item: &'t Members<'a>, limits: Limits) -> Found<Item<'t, 'a>> {
    let mut extra = Extra(Vec::with_capacity(8));
    for (key, value) in item {
        if !TYPED.contains(&key.as_ref()) {
            extra
                .0
                .push((Cow::Borrowed(key.as_ref()), Kept::Value(value)));
        }
    }
    let event = event(get(item, "event"), &mut extra)?;
    let outcome = short_str(get(item, "outcome"), limits.short_name).ok_or(Decline)?;
    let mut truncated = match get(item, "truncated") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(flag)) => *flag,
        Some(_) => return Err(Decline),
    };
    let (lines, cut) = lines(get(item, "logs"), limits)?;
    let exceptions = match get(item, "exceptions") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(entries)) => entries
            .iter()
            .map(|e| exception(e, limits))
            .collect::<Found<Vec<_>>>()?,
        Some(_) => return Err(Decline),
    };
    if exceptions
        .iter()
        .any(|e| e.message.starts_with(LIMIT_EXCEPTION_PREFIX))
    {
        truncated = true;
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
            _ => return Err(Decline),
        }
    }
    let version = match extra.get("scriptVersion") {
        None | Some(Json::Null) => None,
        Some(Json::Object(version)) => match opt_str(get(version, "id"))? {
            Some(id) => Some(id),
            None => opt_str(get(version, "tag"))?,
        },
        Some(_) => return Err(Decline),
    };
    let tags: Vec<&str> = match get(item, "scriptTags") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(tags)) => tags
            .iter()
            .map(Json::as_str)
            .collect::<Option<Vec<&str>>>()
            .ok_or(Decline)?,
        Some(_) => return Err(Decline),
    };
    if !matches!(get(item, "spanContext"), None | Some(Json::Null)) {
        return Err(Decline);
    }
    Ok(Item {
        script: short_str(get(item, "scriptName"), limits.short_name).ok_or(Decline)?,
        kind: event.kind,
        timestamp: ranged(
            get(item, "eventTimestamp"),
            limits.min_ms,
            limits.max_ms - 1,
        )?,
        outcome,
        method: event.method,
        url: event.url,
        status: event.status,
        cpu: ranged(get(item, "cpuTime"), 0, limits.max_duration)?,
        wall: ranged(get(item, "wallTime"), 0, limits.max_duration)?,
        lines,
        exceptions,
        truncated: truncated || cut,
        version,
        entrypoint: opt_str(get(item, "entrypoint"))?,
        namespace: opt_str(get(item, "dispatchNamespace"))?,
        tags,
        extra,
    })
}

/// `trace_items._logs`: the lines, and whether one is the runtime's size-limit marker.
fn lines<'t>(logs: Option<&'t Json>, limits: Limits) -> Found<(Vec<Line<'t>>, bool)> {
    let entries = match logs {
        None | Some(Json::Null) => return Ok((Vec::new(), false)),
        Some(Json::Array(entries)) => entries,
        Some(_) => return Err(Decline),
    };
    let mut lines = Vec::with_capacity(entries.len());
    let mut cut = false;
    for entry in entries {
        let Json::Object(entry) = entry else {
            return Err(Decline);
        };
        if ["record", "context", "errorInfo"]
            .iter()
            .any(|k| get(entry, k).is_some())
        {
            return Err(Decline);
        }
        let level = match get(entry, "level").and_then(Json::as_str) {
            Some("debug") => Level::Debug,
            Some("info") => Level::Info,
            Some("log") => Level::Log,
            Some("warn" | "warning") => Level::Warn,
            Some("error") => Level::Error,
            _ => return Err(Decline),
        };
        let timestamp = ranged(get(entry, "timestamp"), limits.min_ms, limits.max_ms - 1)?;
        let (text, data) = render(get(entry, "message"), limits.max_depth)?;
        if level == Level::Warn && LIMIT_LOG_PREFIXES.iter().any(|p| text.starts_with(p)) {
            cut = true;
        }
        lines.push(Line {
            timestamp,
            level,
            text,
            data,
        });
    }
    Ok((lines, cut))
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
pub fn opt_str<'t>(value: Option<&'t Json>) -> Found<Option<&'t str>> {
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
pub fn ranged(value: Option<&Json>, low: i64, high: i64) -> Found<Option<i64>> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Int(n)) if low <= *n && *n <= high => Ok(Some(*n)),
        Some(_) => Err(Decline),
    }
}
