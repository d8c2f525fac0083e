"""OTLP logs (an OTLP/JSON `ExportLogsServiceRequest`) -> one `Invocation`.

The collector publishes one message per invocation group: exactly one `resourceLogs` entry
whose records belong together (grouped by `faas.invocation_id`, else by trace and span id, else
one group per resource). Two kinds of producer send them:

- **Cloudflare Workers Observability** (a resource with `cloudflare.script_name`, or
  `telemetry.sdk.name` `workers-observability`/`cloudflare`, or `cloud.provider` `cloudflare`,
  or the scope `workers-observability`). Its per-invocation record (the one with
  `cloudflare.handler_type` or `faas.trigger`) gives the invocation: script, event type,
  method, URL, status, version, time. Every other record is a console call: a log line, whose
  body gets the trace items' console rendering (`console.render`: a logged JSON object arrives
  as a JSON string and becomes `data`). Cloudflare's logs carry no outcome (it is a span
  attribute): `unknown` unless `cloudflare.outcome` is given.
- **Any OpenTelemetry SDK**: every record is a log line, its attributes its `data`; the script
  is `service.name`, the time the earliest record's, and the event type `otel` (the records say
  nothing of what triggered them); `service.version` and `deployment.environment.name` are its
  release and environment, stored as the logger stores its own. A group of log records ends
  in no outcome: `ok`, as for the logger's standalone records; its errors are its error lines
  and exceptions.

Every attribute that fills no column is kept in `extra` under its own name (the names may
change during Cloudflare's beta), and a line's record attributes in its `data` (after the
body's own, so an attribute wins on a repeated key), but for the ones a Cloudflare console
record repeats of its invocation. A record with OTel's `exception.type`/`exception.message`
attributes is also an exception (`exception.stacktrace` its stack), as the logger's
`exception()` gives an error line and an exception. Cloudflare's preflight (`service.name`
`cloudflare-workers-observability`, body `Hello from Cloudflare ...`), which the collector
drops, is no invocation here either: None. docs/events.md, "OTLP logs", has the whole
mapping; the facts are in /work/shared/docs/cloudflare-otlp-and-streaming-tail.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import DecodeError
from pipeline.formats.console import render
from pipeline.formats.entries import exception, is_limit_marker
from pipeline.formats.fields import (
    at,
    duration_ms,
    expected,
    key_name,
    opt_str,
    status,
    str_list,
    text,
)
from pipeline.formats.invocation import JSON, ExceptionInfo, Invocation, LogLine
from pipeline.formats.otlp_values import any_value, attributes, epoch_ns_as_ms, int64
from pipeline.formats.trace_context import span_ids

KEY = "resourceLogs"
"""The top-level key that marks a message as OTLP logs."""
SOURCE = "otlp"
UNREPORTED = "unreported"
"""The outcome of a Cloudflare invocation whose logs export says none (the outcome is on the
root span of the traces export): not an error in the error rate, which counts known failures
(`transform.rollup.count_invocation`). An invocation whose records hold an exception is
`exception`."""
EXCEPTION = "exception"
EVENT_TYPE = "otel"
"""The event type of non-Cloudflare OTel data (see `pipeline.formats.invocation.EVENT_TYPES`)."""
ENVIRONMENT_TAG = "environment:"
"""How the logger stores a service's environment (a script tag), which the API filters on."""
PREFLIGHT_SERVICE = "cloudflare-workers-observability"
PREFLIGHT_BODY = "Hello from Cloudflare"

HANDLER_TYPES = {
    "fetch": "fetch",
    "scheduled": "scheduled",
    "cron": "scheduled",
    "alarm": "alarm",
    "queue": "queue",
    "email": "email",
    "rpc": "rpc",
    "jsrpc": "rpc",
    "worker_rpc": "rpc",
    "tail": "tail",
    "trace": "tail",
    "websocket": "websocket",
    "hibernatablewebsocket": "websocket",
    "hibernatable_web_socket": "websocket",
    "connect": "connect",
}
"""`cloudflare.handler_type` (any case) -> event type. Others: `unknown`, the value kept."""
TRIGGERS = {"http": "fetch", "timer": "scheduled", "pubsub": "queue"}
"""OTel's `faas.trigger` -> event type, when there is no `cloudflare.handler_type`."""

_CLOUDFLARE_SDKS = frozenset(("workers-observability", "cloudflare"))
CPU_KEYS = ("cloudflare.cpu_time_ms", "cloudflare.cpu_time", "cpu_time_ms")
WALL_KEYS = ("cloudflare.wall_time_ms", "cloudflare.wall_time", "wall_time_ms")
_EXCEPTION_KEYS = ("exception.type", "exception.message", "exception.stacktrace")
_SEQUENCE = "cloudflare.invocation.sequence.number"
_SEVERITY_NAMES = {
    f"SEVERITY_NUMBER_{name}{'' if step == 1 else step}": 4 * band + step
    for band, name in enumerate(("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"))
    for step in range(1, 5)
} | {"SEVERITY_NUMBER_UNSPECIFIED": 0}
"""proto3's JSON also writes an enum by name; OTLP/JSON says by number. Both are read."""
_INVOCATION_ID = "faas.invocation_id"


@dataclass(slots=True)
class _Record:
    path: str
    """`resourceLogs[0].scopeLogs[1].logRecords[2].`: where errors point."""
    time_ms: int | None
    level: str
    body: JSON
    attrs: dict[str, JSON]
    trace_id: JSON
    span_id: JSON
    event_name: str | None


def invocation(document: dict[str, JSON], prefix: str) -> Invocation | None:
    """The invocation an OTLP logs document at `prefix` describes; None for a preflight."""
    entries = document[KEY]
    if type(entries) is not list:
        expected(prefix, KEY, "an array", entries)
    if len(entries) != 1:
        raise DecodeError(
            at(prefix, KEY), f"holds {len(entries)} entries; a message holds exactly one"
        )
    where = f"{prefix}{KEY}[0]."
    entry = entries[0]
    if type(entry) is not dict:
        expected(where, "", "an object", entry)
    resource = entry.get("resource")
    if resource is not None and type(resource) is not dict:
        expected(where, "resource", "an object", resource)
    found = attributes(
        None if resource is None else resource.get("attributes"), where + "resource.", "attributes"
    )
    scopes, records = _scopes(entry.get("scopeLogs"), where)
    if not records:
        raise DecodeError(at(where, "scopeLogs"), "missing: no log record in any scopeLogs")
    if _is_preflight(found, records):
        return None
    resource_attrs = _Attributes(found, where + "resource.attributes")
    if _is_cloudflare(found, scopes):
        inv = _cloudflare(resource_attrs, records)
    else:
        inv = _sdk(resource_attrs, records)
    _scope_extra(scopes, inv.extra)
    return inv


class _Attributes:
    """Attributes with the ones read into columns taken out, and where they came from."""

    def __init__(self, values: dict[str, JSON], path: str) -> None:
        self.values = values
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}[{key}]"


def _scopes(value: JSON, where: str) -> tuple[list[dict[str, JSON]], list[_Record]]:
    """Every scope (as `{name?, version?, attributes?}`) and every record, in order."""
    if type(value) is not list:
        if value is None:
            return [], []
        expected(where, "scopeLogs", "an array", value)
    scopes: list[dict[str, JSON]] = []
    records: list[_Record] = []
    for s, scope_logs in enumerate(value):
        path = f"{where}scopeLogs[{s}]."
        if type(scope_logs) is not dict:
            expected(path, "", "an object", scope_logs)
        scope = scope_logs.get("scope")
        if scope is not None:
            if type(scope) is not dict:
                expected(path, "scope", "an object", scope)
            scopes.append(_scope(scope, path + "scope."))
        log_records = scope_logs.get("logRecords")
        if log_records is None:
            continue
        if type(log_records) is not list:
            expected(path, "logRecords", "an array", log_records)
        for r, record in enumerate(log_records):
            records.append(_record(record, f"{path}logRecords[{r}]."))
    return scopes, records


def _scope(scope: dict[str, JSON], path: str) -> dict[str, JSON]:
    found: dict[str, JSON] = {}
    name = opt_str(scope.get("name"), path, "name")
    version = opt_str(scope.get("version"), path, "version")
    attrs = attributes(scope.get("attributes"), path, "attributes")
    if name is not None:
        found["name"] = name
    if version is not None:
        found["version"] = version
    if attrs:
        found["attributes"] = attrs
    return found


def _record(record: JSON, path: str) -> _Record:
    if type(record) is not dict:
        expected(path, "", "an object", record)
    get = record.get
    time_ms = epoch_ns_as_ms(get("timeUnixNano"), path, "timeUnixNano")
    if time_ms is None:
        time_ms = epoch_ns_as_ms(get("observedTimeUnixNano"), path, "observedTimeUnixNano")
    return _Record(
        path,
        time_ms,
        _level(get("severityNumber"), get("severityText"), path),
        any_value(get("body"), path, "body"),
        attributes(get("attributes"), path, "attributes"),
        get("traceId"),
        get("spanId"),
        opt_str(get("eventName"), path, "eventName"),
    )


def _level(number: JSON, severity_text: JSON, path: str) -> str:
    """OTel's severity ranges: 1-8 trace and debug -> debug, 9-12 info, 13-16 warn, 17-24
    error and fatal -> error. Without a number (0 is "unspecified"), the text's first word
    decides; without either, `log`, the plain console level."""
    if number is not None and number != 0:
        named = _SEVERITY_NAMES.get(number) if type(number) is str else None
        severity = named if named is not None else int64(number, path, "severityNumber")
        if not 0 <= severity <= 24:
            raise DecodeError(at(path, "severityNumber"), f"{severity} is not a severity (0..24)")
        if severity == 0:
            pass
        elif severity <= 8:
            return "debug"
        elif severity <= 12:
            return "info"
        elif severity <= 16:
            return "warn"
        else:
            return "error"
    name = opt_str(severity_text, path, "severityText")
    if name is None:
        return "log"
    lowered = name.lower()
    if lowered.startswith(("trace", "debug")):
        return "debug"
    if lowered.startswith(("info", "notice")):
        return "info"
    if lowered.startswith("warn"):
        return "warn"
    if lowered.startswith(("err", "fatal", "crit", "alert", "emerg", "severe")):
        return "error"
    return "log"


def _is_preflight(resource: dict[str, JSON], records: list[_Record]) -> bool:
    return resource.get("service.name") == PREFLIGHT_SERVICE and all(
        type(r.body) is str and r.body.startswith(PREFLIGHT_BODY) for r in records
    )


def _is_cloudflare(resource: dict[str, JSON], scopes: list[dict[str, JSON]]) -> bool:
    return (
        "cloudflare.script_name" in resource
        or resource.get("telemetry.sdk.name") in _CLOUDFLARE_SDKS
        or resource.get("cloud.provider") == "cloudflare"
        or any(s.get("name") == "workers-observability" for s in scopes)
    )


def _cloudflare(resource: _Attributes, records: list[_Record]) -> Invocation:
    main = None
    for record in records:
        if "cloudflare.handler_type" in record.attrs or "faas.trigger" in record.attrs:
            main = record
            break
    # What a console record may repeat of its invocation, and need not store again.
    context = dict(resource.values)
    own = _Attributes({} if main is None else dict(main.attrs), "")
    if main is not None:
        own.path = main.path + "attributes"
        context.update(main.attrs)
    else:
        for record in records:
            if _INVOCATION_ID in record.attrs:  # console records alone: keep what joins them
                own.values[_INVOCATION_ID] = context[_INVOCATION_ID] = record.attrs[_INVOCATION_ID]
                break

    script = _script(resource, own, ("cloudflare.script_name", "service.name", "faas.name"))
    version = _take_str(resource, own, "cloudflare.script_version.id")
    if version is None:
        version = _take_str(resource, own, "faas.version")
    event_type = "unknown"
    method = url = None
    code = cpu = wall = None
    if main is not None:
        event_type = _event_type(own)
        method = _take_str(resource, own, "http.request.method")
        url = _take_str(resource, own, "url.full")
        code = _take_status(resource, own)
        cpu = _take_duration(resource, own, CPU_KEYS)
        wall = _take_duration(resource, own, WALL_KEYS)
    reported = _take_key(resource, own, "cloudflare.outcome")
    entrypoint = _take_str(resource, own, "cloudflare.entrypoint")
    tags = _take_tags(resource, own)

    extra = _merged(resource.values, own.values)
    if main is not None:
        body = main.body
        if body is not None and body != "" and body != f"{method} {url}":
            extra["body" if "body" not in extra else "otel.body"] = body
        if main.event_name is not None:
            extra["otel.event_name"] = main.event_name
    logs: list[LogLine] = []
    exceptions: list[ExceptionInfo] = []
    for record in _in_sequence([r for r in records if r is not main]):
        _add_line(record, logs, exceptions, context)
    first = main if main is not None else _first_with_ids(records)
    trace_id, span_id, dropped = _ids(first)
    outcome = reported or (EXCEPTION if exceptions else UNREPORTED)
    return Invocation(
        script=script,
        event_type=event_type,
        timestamp_ms=main.time_ms if main is not None and main.time_ms else _earliest(records),
        outcome=outcome,
        method=method,
        url=url,
        status=code,
        cpu_ms=cpu,
        wall_ms=wall,
        logs=tuple(logs),
        exceptions=tuple(exceptions),
        truncated=any(is_limit_marker(line) for line in logs),
        script_version=version,
        entrypoint=entrypoint,
        script_tags=tags,
        extra=extra,
        source=SOURCE,
        sanitized=dropped,
        trace_id=trace_id,
        span_id=span_id,
        fragment=main is None and _INVOCATION_ID in context,
    )


def _in_sequence(records: list[_Record]) -> list[_Record]:
    """Console records in the order the Worker emitted them. Cloudflare numbers each record of
    an invocation (`cloudflare.invocation.sequence.number`, A6), and an export need not list
    them in that order (its records of one invocation may come in several batches). Sorted by
    it when every record has one, else left as listed: a partial order says nothing of the
    records without a number."""
    numbers: list[int] = []
    for record in records:
        number = record.attrs.get(_SEQUENCE)
        if type(number) is not int:
            return records
        numbers.append(number)
    if numbers == sorted(numbers):
        return records
    # Stable: records of one number keep the order they came in.
    return [records[i] for i in sorted(range(len(records)), key=numbers.__getitem__)]


def _sdk(resource: _Attributes, records: list[_Record]) -> Invocation:
    """A service's release and environment are stored as the logger stores its own:
    `service.version` as the script version, `deployment.environment.name` (or the older
    `deployment.environment`) as the script tag `environment:<name>`."""
    none = _Attributes({}, "")
    script = _script(resource, none, ("service.name",))
    version = _take_str(resource, none, "service.version")
    environment = _take_str(resource, none, "deployment.environment.name")
    if environment is None:
        environment = _take_str(resource, none, "deployment.environment")
    logs: list[LogLine] = []
    exceptions: list[ExceptionInfo] = []
    for record in records:
        _add_line(record, logs, exceptions, None)
    trace_id, span_id, dropped = _ids(_first_with_ids(records))
    return Invocation(
        script=script,
        event_type=EVENT_TYPE,
        timestamp_ms=_earliest(records),
        outcome="ok",
        logs=tuple(logs),
        exceptions=tuple(exceptions),
        truncated=any(is_limit_marker(line) for line in logs),
        script_version=version,
        script_tags=() if environment is None else (ENVIRONMENT_TAG + environment,),
        extra=dict(resource.values),
        source=SOURCE,
        sanitized=dropped,
        trace_id=trace_id,
        span_id=span_id,
    )


def _add_line(
    record: _Record,
    logs: list[LogLine],
    exceptions: list[ExceptionInfo],
    context: dict[str, JSON] | None,
) -> None:
    """The record as a log line (and an exception, if it describes one). With a Cloudflare
    `context`, the attributes a console record repeats of its invocation are left out of its
    data: `name = "log"`, the sequence number, and any equal to the invocation's own."""
    attrs = record.attrs
    if "exception.type" in attrs or "exception.message" in attrs:
        attrs = dict(attrs)
        name = text(attrs.pop("exception.type", None), record.path, "attributes[exception.type]")
        message = text(
            attrs.pop("exception.message", None), record.path, "attributes[exception.message]"
        )
        stack = opt_str(
            attrs.pop("exception.stacktrace", None), record.path, "attributes[exception.stacktrace]"
        )
        exceptions.append(exception(record.time_ms, name, message, stack))
    if context is not None and attrs:
        attrs = {
            key: value
            for key, value in attrs.items()
            if not (
                (key == "name" and value == "log")
                or key == _SEQUENCE
                or (key in context and context[key] == value)
            )
        }
    line_text, data = render(record.body)
    if attrs:
        data = {**data, **attrs} if data else dict(attrs)
    if record.event_name is not None:
        # An OTel event (`eventName`, the newer SDKs' field for what `event.name` said): kept
        # beside the line's data, and its text when it has no body.
        data = (
            {**data, "otel.event_name": record.event_name}
            if data
            else {"otel.event_name": record.event_name}
        )
        line_text = line_text or record.event_name
    logs.append(LogLine(record.time_ms, record.level, line_text, data))


def _script(resource: _Attributes, own: _Attributes, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` given (in the record, else the resource); the one used leaves
    `extra`, the others stay."""
    for key in keys:
        if key in own.values or key in resource.values:
            found = _take(resource, own, key)
            if found is not None and found[0] is not None and found[0] != "":
                return key_name(found[0], "", found[1])
    return None


def _take(resource: _Attributes, own: _Attributes, key: str) -> tuple[JSON, str] | None:
    """`(value, path)` of an attribute read into a column: the record's, else the resource's.
    Taken out of both when they agree; a resource value that differs stays in `extra`."""
    if key in own.values:
        value = own.values.pop(key)
        if key in resource.values and resource.values[key] == value:
            del resource.values[key]
        return value, own.where(key)
    if key in resource.values:
        return resource.values.pop(key), resource.where(key)
    return None


def _take_str(resource: _Attributes, own: _Attributes, key: str) -> str | None:
    found = _take(resource, own, key)
    return None if found is None else opt_str(found[0], "", found[1])


def _take_key(resource: _Attributes, own: _Attributes, key: str) -> str | None:
    found = _take(resource, own, key)
    return None if found is None else key_name(found[0], "", found[1])


def _take_status(resource: _Attributes, own: _Attributes) -> int | None:
    found = _take(resource, own, "http.response.status_code")
    return None if found is None else status(found[0], "", found[1])


def _take_duration(resource: _Attributes, own: _Attributes, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        found = _take(resource, own, key)
        if found is not None and found[0] is not None:
            return duration_ms(found[0], "", found[1])
    return None


def _take_tags(resource: _Attributes, own: _Attributes) -> tuple[str, ...]:
    found = _take(resource, own, "cloudflare.script_tags")
    return () if found is None else str_list(found[0], "", found[1])


def _event_type(own: _Attributes) -> str:
    """From `cloudflare.handler_type` (taken out of `extra` when known), else `faas.trigger`
    (kept: its value is not the event type's)."""
    handler = own.values.get("cloudflare.handler_type")
    if type(handler) is str:
        found = HANDLER_TYPES.get(handler.lower())
        if found is not None:
            del own.values["cloudflare.handler_type"]
            return found
        return "unknown"
    trigger = own.values.get("faas.trigger")
    if handler is None and type(trigger) is str:
        return TRIGGERS.get(trigger.lower(), "unknown")
    return "unknown"


def _merged(resource: dict[str, JSON], own: dict[str, JSON]) -> dict[str, JSON]:
    """Resource and record attributes in one flat `extra`: a resource attribute the record
    repeats with another value is kept as `resource.<key>` (as trace items keep an event key
    that a top-level key already took as `event.<key>`)."""
    extra = dict(own)
    for key, value in resource.items():
        if key not in extra:
            extra[key] = value
        elif extra[key] != value:
            extra[f"resource.{key}"] = value
    return extra


def _scope_extra(scopes: list[dict[str, JSON]], extra: dict[str, JSON]) -> None:
    """One scope as `otel.scope.name`/`.version`/`.attributes` (the names OTel gives them
    outside OTLP); several distinct ones as the list `otel.scopes`."""
    distinct: list[dict[str, JSON]] = []
    for scope in scopes:
        if scope and scope not in distinct:
            distinct.append(scope)
    if len(distinct) == 1:
        for key, value in distinct[0].items():
            extra[f"otel.scope.{key}"] = value
    elif distinct:
        extra["otel.scopes"] = distinct


def _first_with_ids(records: list[_Record]) -> _Record | None:
    for record in records:
        if record.trace_id is not None and record.trace_id != "":
            return record
    return None


def _ids(record: _Record | None) -> tuple[str | None, str | None, tuple[str, ...]]:
    """The record's trace and span ids, checked as every `spanContext` is; OTLP writes an
    absent id as `""`."""
    if record is None:
        return None, None, ()
    context: dict[str, JSON] = {"traceId": record.trace_id}
    if record.span_id is not None and record.span_id != "":
        context["spanId"] = record.span_id
    trace_id, span_id, _, dropped = span_ids(context)
    return trace_id, span_id, dropped


def _earliest(records: list[_Record]) -> int | None:
    times = [r.time_ms for r in records if r.time_ms is not None]
    return min(times) if times else None
