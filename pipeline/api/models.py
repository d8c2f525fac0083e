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
        description="rate-limited calls, and readings that said a limit was reached"
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


class UsageDay(Usage):
    day: date
    provider: str
    model: str = Field(description="model or endpoint; '*' for provider-wide readings")
    rate_limit_remaining: int | None = Field(description="the day's newest reading")
    rate_limit_limit: int | None = Field(description="the largest limit a reading reported")
    rate_limit_reset: datetime | None = Field(
        description="the latest reset or retry-after moment a reading reported"
    )


class UsageTotal(Usage):
    provider: str
    model: str


class ApiUsageReport(BaseModel):
    window: Window
    days: list[UsageDay]
    by_model: list[UsageTotal]
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


class Problem(BaseModel):
    error: str
