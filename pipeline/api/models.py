"""The API's response bodies: stable, documented field names. Times are RFC 3339 in UTC;
durations are milliseconds; money is US dollars as a number (null when a model has no price)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Window(BaseModel):
    since: datetime = Field(description="start of the window (inclusive)")
    until: datetime = Field(description="end of the window: when the first page was asked")


class Origin(BaseModel):
    topic: str
    partition: int
    offset: int
    item: int = Field(description="invocation within the Kafka message")
    seq: int = Field(description="line within the invocation")


class RequestSummary(BaseModel):
    method: str | None
    path: str | None = Field(description="the URL's path (the query is in the invocation's url)")
    status: int | None
    request_id: str | None = Field(
        description="its `x-request-id` header (the logger), `cf-ray` (Workers) or RayID (Logpush)"
    )


class LogLine(BaseModel):
    ts: datetime
    script: str
    event_type: str
    outcome: str
    level: str = Field(description="debug, info, log, warn, error, or exception")
    message: str
    data: Any = Field(None, description="the structured part of the line, if any")
    exception_name: str | None = None
    stack: str | None = None
    fingerprint: str | None = None
    origin: Origin
    invocation: str | None = Field(
        None,
        description="the id of its invocation, for `/api/invocations/{id}`; null for lines stored"
        " before tailpipe recorded it",
    )
    trace_id: str | None = Field(None, description="W3C trace id (32 hex digits), if it had one")
    span_id: str | None = Field(None, description="its invocation's span id (16 hex digits)")
    request: RequestSummary | None = Field(
        None, description="the HTTP request it was logged in; null for other invocations"
    )
    release: str | None = Field(
        None,
        description="its invocation's release (the logger's `release`, a Worker's script version)",
    )
    environment: str | None = Field(
        None, description="its invocation's environment (the script tag `environment:<name>`)"
    )


class RecentLogs(BaseModel):
    window: Window
    logs: list[LogLine]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class HourCount(BaseModel):
    hour: datetime
    occurrences: int


class ErrorGroup(BaseModel):
    fingerprint: str
    name: str
    template: str = Field(description="the message with numbers, ids, hex and URLs normalised")
    occurrences: int = Field(description="in the window (whole hours)")
    occurrences_total: int = Field(description="since first seen")
    first_seen: datetime
    last_seen: datetime
    scripts: list[str]
    status: Literal["open", "resolved", "ignored"]
    resolved_at: datetime | None
    regressions: int
    last_regression: datetime | None
    sample_message: str
    sample_stack: str | None
    trend: list[HourCount] = Field(description="occurrences per hour with any (sparse)")
    latest_invocation: str | None = Field(
        None,
        description="the invocation of its latest occurrence (/api/invocations/{id}); null"
        " when its row was dropped by retention",
    )


class Errors(BaseModel):
    window: Window
    errors: list[ErrorGroup]


class StatusChange(BaseModel):
    status: Literal["open", "resolved", "ignored"]


class Latency(BaseModel):
    """Over the invocations that measured it: a source that does not (a Python service's CPU
    time) is left out, so a script that never measures it has nulls here, not zeros."""

    measured: int = Field(description="invocations that reported this time")
    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: int | None


class Performance(BaseModel):
    requests: int
    errors: int
    error_rate: float | None = Field(description="errors / requests; null without requests")
    wall_ms: Latency
    cpu_ms: Latency


class PerformanceHour(Performance):
    hour: datetime


class ScriptSummary(BaseModel):
    script: str
    requests: int
    errors: int
    error_rate: float | None
    wall_ms: Latency


class Scripts(BaseModel):
    window: Window
    scripts: list[ScriptSummary] = Field(description="busiest first")


class PerformanceReport(BaseModel):
    window: Window
    script: str | None
    overall: Performance
    hours: list[PerformanceHour] = Field(description="hours with requests, oldest first")


class Usage(BaseModel):
    calls: int
    failures: int
    rate_limited: int = Field(
        description="rate-limited calls: status 429, or a reading on the call of 0 remaining"
    )
    tokens_in: int = Field(description="input tokens not read from or written to a prompt cache")
    tokens_out: int
    cache_read_tokens: int = Field(description="input tokens read from a prompt cache")
    cache_write_tokens: int = Field(description="input tokens written to a prompt cache")
    cost_usd: float | None = Field(description="estimated; null when no call had a price")
    unpriced_calls: int = Field(
        description="calls to models without a price, or with cache tokens the price table has"
        " no price for"
    )


class UsageTotal(Usage):
    provider: str
    model: str | None = Field(description="an LLM call's model; null for every other call")
    endpoint: str | None = Field(
        description="the endpoint of a call that is not an LLM call (e.g. `GET /repos/{owner}"
        "/{repo}`); null for LLM calls, and for calls that named none"
    )


class UsageDay(UsageTotal):
    day: date


class RateLimitReading(BaseModel):
    """What a provider's rate-limit readings said in a day: lines that only report a limit
    (`github ratelimit remaining=4981`) and the rate-limit fields of calls. Not calls."""

    day: date
    provider: str
    remaining: int | None = Field(description="the newest reading's remaining count")
    remaining_at: datetime | None = Field(description="when that reading was made")
    limit: int | None = Field(description="the largest limit a reading reported")
    reset: datetime | None = Field(
        description="the latest reset or retry-after moment a reading reported"
    )
    limited: int = Field(description="readings that said the limit was reached")


class ApiUsageReport(BaseModel):
    window: Window
    days: list[UsageDay] = Field(description="calls per day, provider and model or endpoint")
    by_model: list[UsageTotal] = Field(description="calls per provider and model or endpoint")
    rate_limits: list[RateLimitReading] = Field(description="per day and provider")
    total: Usage


class Scans(BaseModel):
    started: int
    completed: int
    failed: int
    repositories: list[str]
    files: int
    duration_ms_avg: float | None
    duration_ms_max: int | None


class ScanHour(Scans):
    hour: datetime
    script: str


class ScanReport(BaseModel):
    window: Window
    hours: list[ScanHour]
    total: Scans


class Alert(BaseModel):
    id: str
    rule: str
    severity: Literal["critical", "warning"]
    script: str | None
    dedup_key: str
    first_at: datetime
    last_at: datetime
    occurrences: int
    summary: str
    details: dict[str, Any]


class Alerts(BaseModel):
    window: Window
    alerts: list[Alert]


class AlertStateRow(BaseModel):
    rule: str
    group_key: str = Field(description="the script (or provider) the alert is about")
    status: Literal["normal", "pending", "firing", "resolving"]
    since: datetime
    fired_at: datetime | None
    value: float | None


class AlertChange(BaseModel):
    rule: str
    group_key: str
    before: str
    after: str
    at: datetime
    notify: Literal["firing", "resolved"] | None
    value: float | None
    silenced: bool


class Silence(BaseModel):
    id: int
    rule: str
    group_key: str | None = Field(description="null: every group of the rule")
    until: datetime
    comment: str
    created_at: datetime


class SilenceRequest(BaseModel):
    rule: str = Field(min_length=1, max_length=64)
    group: str | None = Field(None, max_length=255, description="null: every group")
    until: datetime
    comment: str = Field("", max_length=1000)


class AlertStates(BaseModel):
    since: datetime
    states: list[AlertStateRow]
    changes: list[AlertChange] = Field(description="newest first, at most 5,000")
    silences: list[Silence] = Field(description="in force")


class AckRequest(BaseModel):
    by: str = Field("", max_length=100, description="who takes it")


class Ack(BaseModel):
    id: str
    acked_at: datetime
    acked_by: str | None


class InvocationOrigin(BaseModel):
    topic: str
    partition: int
    offset: int
    item: int = Field(description="invocation within the Kafka message")


class InvocationLine(BaseModel):
    ts: datetime
    seq: int = Field(description="order within the invocation: log lines, then exceptions")
    level: str = Field(description="debug, info, log, warn, error, or exception")
    message: str
    data: Any = Field(None, description="the structured part of the line, if any")
    kind: str | None = Field(None, description="a typed record's type: api_call, scan, timer")
    exception_name: str | None = None
    stack: str | None = None
    fingerprint: str | None = None


class InvocationDetail(BaseModel):
    id: str
    ts: datetime
    script: str
    event_type: str
    outcome: str
    method: str | None
    url: str | None = Field(description="redacted")
    path: str | None
    status: int | None
    request_id: str | None
    cpu_ms: int | None
    wall_ms: int | None
    from_root_span: list[str] = Field(
        description="outcome, cpu_ms, wall_ms: what the logs lacked and the root span of its"
        " trace (an OTLP traces export) filled in"
    )
    truncated: bool
    dropped_events: int = Field(
        0,
        description="events of it the runtime dropped before they reached tailpipe (a streaming"
        " tail's `streamDiagnostic`: its queue overflowed); its lines and spans are short",
    )
    source: str = Field(description="trace, logpush, envelope, otlp or stream")
    script_version: str | None
    entrypoint: str | None
    dispatch_namespace: str | None
    script_tags: list[str]
    trace_id: str | None = Field(description="W3C trace id (32 hex digits), if it had one")
    span_id: str | None = Field(description="its own span id (16 hex digits), if it had one")
    trace_spans: int = Field(
        description="spans stored for its trace within a day of it: /api/traces/{trace_id}"
    )
    extra: Any = Field(description="every other field of the invocation (headers redacted)")
    origin: InvocationOrigin
    log_count: int
    exception_count: int
    logs: list[InvocationLine] = Field(description="console lines, in the order emitted")
    exceptions: list[InvocationLine]
    complete: bool = Field(
        description="every line and exception the invocation stored was found (false when a"
        " line's time is more than a day off its invocation's)"
    )
    parts: list[str] = Field(
        description="the ids of the rows it was stored as, oldest first: one, or several for an"
        " OTLP invocation whose records came in several messages (joined by faas.invocation_id)"
    )


class Problem(BaseModel):
    error: str


class SpanItem(BaseModel):
    span_id: str = Field(description="16 hex digits")
    parent_span_id: str | None = Field(description="null for a root span")
    depth: int = Field(description="0 for a root; a span whose parent is missing is a root")
    name: str
    kind: Literal["unspecified", "internal", "server", "client", "producer", "consumer"]
    script: str
    start: datetime
    offset_ms: float = Field(description="its start, from the trace's first span's start")
    duration_ms: float
    status: Literal["unset", "ok", "error"]
    status_message: str | None
    error: bool = Field(description="status error, or an `error.type` attribute")
    invocation_id: str | None = Field(description="`faas.invocation_id`")
    attributes: Any = Field(description="the span's attributes (redacted)")
    resource: Any = Field(description="its resource's attributes, and otel.scope.name/version")
    events: Any = Field(description="[{name, time_us, attributes}]")
    links: Any = Field(description="[{trace_id, span_id, attributes}]")


class TraceRoot(BaseModel):
    script: str
    name: str
    outcome: str | None = Field(description="`cloudflare.outcome` of a Worker's root span")
    cpu_ms: float | None = Field(description="`cloudflare.cpu_time_ms` or its other names")
    wall_ms: float | None = Field(description="`cloudflare.wall_time_ms`, else its duration")


class Trace(BaseModel):
    trace_id: str
    start: datetime
    duration_ms: float = Field(description="from the first span's start to the last one's end")
    root: TraceRoot | None = Field(description="its first root span; null if it has none")
    span_count: int
    truncated: bool = Field(description="more spans than `spans` holds (it holds the earliest)")
    spans: list[SpanItem] = Field(description="depth first, siblings by start: a waterfall")


class Durations(BaseModel):
    """Of the operation's spans, in milliseconds; percentiles within 1%."""

    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


class OperationSummary(BaseModel):
    script: str
    operation: str = Field(description="the span's name, and the host of a call out")
    spans: int
    errors: int
    error_rate: float | None = Field(description="errors / spans")
    duration_ms: Durations


class Operations(BaseModel):
    window: Window
    script: str | None
    operations: list[OperationSummary] = Field(description="busiest first")
