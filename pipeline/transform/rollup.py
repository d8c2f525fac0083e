"""Per-batch rollups: aggregated in memory while a batch fills, merged into PostgreSQL at flush.

Each rollup table gets at most a few rows per batch (one per hour x script x event type, per
day x provider x model or endpoint, per day x provider for rate-limit readings, per fingerprint,
per hour x script), so a flush merges thousands of
events with one `INSERT ... ON CONFLICT DO UPDATE` per table instead of a write per event.
Plain data, which the sink turns into arrays for `unnest`, and how one invocation counts in
it (`count_invocation`, `count_extracted`, called by the transformer as it builds the rows): what
a field means and the code that fills it are read together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from pipeline.alerts.detect import Candidates, merge
from pipeline.transform.sketch import LatencySketch

if TYPE_CHECKING:  # annotations only: whoever reads TOTAL need not load the extractors
    from pipeline.formats.invocation import Invocation
    from pipeline.transform.extract import Extracted

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_SCRIPTS_PER_ERROR = 50
TOTAL = "*"
"""The script and event type of the total rows of `tail_metrics_hourly`."""
NO_NAME = ""
"""The model of a call that is not an LLM call, and the endpoint of one that is (or of a call
that names neither): stored as NULL in `api_calls_daily`."""


@dataclass(slots=True)
class HourlyMetrics:
    requests: int = 0
    errors: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    levels: Counter[str] = field(default_factory=Counter)
    wall_sum: int = 0
    wall_max: int = 0
    cpu_sum: int = 0
    cpu_max: int = 0
    wall: LatencySketch = field(default_factory=LatencySketch)
    cpu: LatencySketch = field(default_factory=LatencySketch)

    def add(self, other: HourlyMetrics) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.outcomes.update(other.outcomes)
        self.levels.update(other.levels)
        self.wall_sum += other.wall_sum
        self.wall_max = max(self.wall_max, other.wall_max)
        self.cpu_sum += other.cpu_sum
        self.cpu_max = max(self.cpu_max, other.cpu_max)
        self.wall.merge(other.wall)
        self.cpu.merge(other.cpu)


@dataclass(slots=True)
class ApiUsage:
    """The calls of one day x provider x (model or endpoint): `api_calls_daily`."""

    calls: int = 0
    failures: int = 0
    rate_limited: int = 0
    """Calls that were rate-limited: status 429, or a reading on the call of 0 remaining."""
    tokens_in: int = 0
    """Input tokens not read from or written to a prompt cache."""
    tokens_out: int = 0
    cost: Decimal | None = None
    unpriced: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def add(self, other: ApiUsage) -> None:
        self.calls += other.calls
        self.failures += other.failures
        self.rate_limited += other.rate_limited
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        if other.cost is not None:
            self.cost = (self.cost or Decimal(0)) + other.cost
        self.unpriced += other.unpriced
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write


@dataclass(slots=True)
class RateLimits:
    """What the rate-limit readings of one day x provider said: `rate_limit_readings_daily`.
    A reading is a line that only reports a limit (`github ratelimit remaining=4981`), or the
    rate-limit fields of a call; either way it is not a call, and is never counted as one."""

    limited: int = 0
    """Readings that said the limit was reached (0 remaining, a Retry-After, a limit at 0)."""
    remaining: int | None = None
    """The newest reading's remaining count (by event time), with its time below."""
    remaining_at_ms: int = -1
    limit: int | None = None
    """The largest rate limit a reading reported."""
    reset_ms: int | None = None
    """The latest reset (or retry-after) moment a reading reported, epoch ms."""

    def note(
        self, remaining: int | None, limit: int | None, reset_ms: int | None, at_ms: int
    ) -> None:
        if remaining is not None and at_ms >= self.remaining_at_ms:
            self.remaining, self.remaining_at_ms = remaining, at_ms
        if limit is not None and (self.limit is None or limit > self.limit):
            self.limit = limit
        if reset_ms is not None and (self.reset_ms is None or reset_ms > self.reset_ms):
            self.reset_ms = reset_ms

    def add(self, other: RateLimits) -> None:
        self.limited += other.limited
        if other.remaining is not None and other.remaining_at_ms >= self.remaining_at_ms:
            self.remaining, self.remaining_at_ms = other.remaining, other.remaining_at_ms
        if other.limit is not None and (self.limit is None or other.limit > self.limit):
            self.limit = other.limit
        if other.reset_ms is not None and (self.reset_ms is None or other.reset_ms > self.reset_ms):
            self.reset_ms = other.reset_ms


@dataclass(slots=True)
class ErrorGroup:
    name: str
    template: str
    first_ms: int
    last_ms: int
    sample_message: str
    sample_stack: str | None
    occurrences: int = 0
    scripts: set[str] = field(default_factory=set)

    def add_occurrence(self, ms: int, script: str, message: str, stack: str | None) -> None:
        self.occurrences += 1
        self.first_ms = min(self.first_ms, ms)
        if ms >= self.last_ms:
            self.last_ms, self.sample_message, self.sample_stack = ms, message, stack
        if len(self.scripts) < MAX_SCRIPTS_PER_ERROR:
            self.scripts.add(script)

    def add(self, other: ErrorGroup) -> None:
        self.occurrences += other.occurrences
        self.first_ms = min(self.first_ms, other.first_ms)
        if other.last_ms >= self.last_ms:
            self.last_ms = other.last_ms
            self.sample_message, self.sample_stack = other.sample_message, other.sample_stack
        self.scripts |= other.scripts


@dataclass(slots=True)
class ScanActivity:
    started: int = 0
    completed: int = 0
    failed: int = 0
    repositories: set[str] = field(default_factory=set)
    files: int = 0
    duration_sum: int = 0
    duration_max: int = 0

    def add(self, other: ScanActivity) -> None:
        self.started += other.started
        self.completed += other.completed
        self.failed += other.failed
        self.repositories |= other.repositories
        self.files += other.files
        self.duration_sum += other.duration_sum
        self.duration_max = max(self.duration_max, other.duration_max)


@dataclass(slots=True)
class Operation:
    """The spans of one hour x script x operation: `span_operations_hourly`."""

    spans: int = 0
    errors: int = 0
    duration_us_sum: int = 0
    duration_us_max: int = 0
    duration: LatencySketch = field(default_factory=LatencySketch)
    """Over milliseconds, like the invocations' wall-time sketch."""

    def add(self, other: Operation) -> None:
        self.spans += other.spans
        self.errors += other.errors
        self.duration_us_sum += other.duration_us_sum
        self.duration_us_max = max(self.duration_us_max, other.duration_us_max)
        self.duration.merge(other.duration)

    def count(self, duration_us: int, error: bool) -> None:
        self.spans += 1
        self.errors += error
        self.duration_us_sum += duration_us
        self.duration_us_max = max(self.duration_us_max, duration_us)
        self.duration.add(duration_us / 1000)


@dataclass(slots=True)
class Rollups:
    hourly: dict[tuple[int, str, str], HourlyMetrics] = field(default_factory=dict)
    api: dict[tuple[int, str, str, str], ApiUsage] = field(default_factory=dict)
    """Calls per (day, provider, model, endpoint); one of model and endpoint is `NO_NAME`."""
    rate_limits: dict[tuple[int, str], RateLimits] = field(default_factory=dict)
    """Rate-limit readings per (day, provider)."""
    errors: dict[str, ErrorGroup] = field(default_factory=dict)
    error_hours: Counter[tuple[int, str]] = field(default_factory=Counter)
    """Occurrences per (hour, fingerprint)."""
    scans: dict[tuple[int, str], ScanActivity] = field(default_factory=dict)
    operations: dict[tuple[int, str, str], Operation] = field(default_factory=dict)
    """Spans per (hour, script, operation)."""
    alerts: Candidates = field(default_factory=dict)
    """Alert conditions seen in the events, by (dedup key, cooldown window)."""
    costs: dict[tuple[int, str], Decimal] = field(default_factory=dict)
    """What priced calls cost, per (hour, script): `cost_hourly`, read by the cost condition."""

    def __bool__(self) -> bool:
        return bool(
            self.hourly
            or self.costs
            or self.api
            or self.rate_limits
            or self.errors
            or self.scans
            or self.operations
            or self.alerts
        )

    def with_totals(self) -> dict[tuple[int, str, str], HourlyMetrics]:
        """The hourly rows, plus per hour the totals of each script (event type `*`) and of
        every script (`*`, `*`): what the API reads for a span of hours."""
        out = dict(self.hourly)
        for (hour, script, _), h in self.hourly.items():
            for key in ((hour, script, TOTAL), (hour, TOTAL, TOTAL)):
                total = out.get(key)
                if total is None:
                    total = out[key] = HourlyMetrics()
                total.add(h)
        return out

    @classmethod
    def combine(cls, parts: Iterable[Rollups]) -> Rollups:
        """One upsert row per key across partitions. Builds new objects, leaving `parts` as
        they were, so a flush that fails can be retried from the same parts."""
        out = cls()
        for part in parts:
            for key, h in part.hourly.items():
                out.hourly.setdefault(key, HourlyMetrics()).add(h)
            for api_key, a in part.api.items():
                out.api.setdefault(api_key, ApiUsage()).add(a)
            for limits_key, limits in part.rate_limits.items():
                out.rate_limits.setdefault(limits_key, RateLimits()).add(limits)
            for fp, e in part.errors.items():
                mine = out.errors.get(fp)
                if mine is None:
                    out.errors[fp] = replace(e, scripts=set(e.scripts))
                else:
                    mine.add(e)
            out.error_hours.update(part.error_hours)
            merge(out.alerts, part.alerts)
            for scan_key, s in part.scans.items():
                out.scans.setdefault(scan_key, ScanActivity()).add(s)
            for op_key, o in part.operations.items():
                out.operations.setdefault(op_key, Operation()).add(o)
            for cost_key, cost in part.costs.items():
                out.costs[cost_key] = out.costs.get(cost_key, Decimal(0)) + cost
        return out


def count_invocation(rollups: Rollups, inv: Invocation, ts_ms: int, script: str) -> HourlyMetrics:
    """The invocation counted in its hour's metrics (log levels are counted by the caller,
    straight into the returned `levels`). A fragment of one (`Invocation.fragment`) is not a
    request: only its lines count, under its hour."""
    key = (ts_ms - ts_ms % HOUR_MS, script, inv.event_type)
    hour = rollups.hourly.get(key)
    if hour is None:
        hour = rollups.hourly[key] = HourlyMetrics()
    if inv.fragment:
        return hour
    hour.requests += 1
    hour.outcomes[inv.outcome] += 1
    hour.errors += _is_error(inv.outcome)
    if inv.wall_ms is not None:
        hour.wall_sum += inv.wall_ms
        hour.wall_max = max(hour.wall_max, inv.wall_ms)
        hour.wall.add(inv.wall_ms)
    if inv.cpu_ms is not None:
        hour.cpu_sum += inv.cpu_ms
        hour.cpu_max = max(hour.cpu_max, inv.cpu_ms)
        hour.cpu.add(inv.cpu_ms)
    return hour


def count_completion(
    rollups: Rollups,
    ts_ms: int,
    script: str,
    event_type: str,
    before: tuple[str | None, int | None, int | None],
    after: tuple[str | None, int | None, int | None],
) -> None:
    """An invocation counted already (by an earlier flush, or earlier in this batch), now
    completed by its trace's root span (`transform.completion`): the difference, added to its
    hour. Its outcome moves from one count to the other (the old count may go to 0, never below:
    it was counted there), and the times it lacked are added. `before` and `after` are
    (outcome, cpu_ms, wall_ms)."""
    key = (ts_ms - ts_ms % HOUR_MS, script, event_type)
    hour = rollups.hourly.get(key)
    if hour is None:
        hour = rollups.hourly[key] = HourlyMetrics()
    (old, old_cpu, old_wall), (new, cpu, wall) = before, after
    if new != old and old is not None and new is not None:
        hour.outcomes[old] -= 1
        hour.outcomes[new] += 1
        hour.errors += _is_error(new) - _is_error(old)
    if old_wall is None and wall is not None:
        hour.wall_sum += wall
        hour.wall_max = max(hour.wall_max, wall)
        hour.wall.add(wall)
    if old_cpu is None and cpu is not None:
        hour.cpu_sum += cpu
        hour.cpu_max = max(hour.cpu_max, cpu)
        hour.cpu.add(cpu)


def _is_error(outcome: str) -> bool:
    return outcome != "ok" and outcome != "unreported"  # unreported: not known to have failed


def count_extracted(rollups: Rollups, found: Extracted, ts_ms: int, script: str) -> None:
    """The API calls, rate-limit readings and scans extracted from the invocation, counted in
    their day's API calls and rate limits and their hour's scan activity.

    An LLM call is counted under its model (whatever endpoint it went to: the model is what is
    priced), any other call under its endpoint. A line with nothing but rate-limit fields is a
    reading, not a call; the rate-limit fields of a call are a reading too, of its provider."""
    for call in found.api_calls:
        at = call.ts_ms or ts_ms
        day = at - at % DAY_MS
        reading = call.endpoint is None and call.status is None and call.model is None
        remaining = call.rate_limit_remaining
        limit = call.rate_limit_limit
        reset_ms = call.rate_limit_reset_ms
        if reading or remaining is not None or limit is not None or reset_ms is not None:
            limits_key = (day, call.provider)
            limits = rollups.rate_limits.get(limits_key)
            if limits is None:
                limits = rollups.rate_limits[limits_key] = RateLimits()
            # A reading alone is rate-limited when it says to wait; a call's only by its count.
            limits.limited += call.rate_limited if reading else remaining == 0
            limits.note(remaining, limit, reset_ms, at)
        if reading:
            continue
        if call.model:
            key = (day, call.provider, call.model, NO_NAME)
        else:
            key = (day, call.provider, NO_NAME, call.endpoint or NO_NAME)
        usage = rollups.api.get(key)
        if usage is None:
            usage = rollups.api[key] = ApiUsage()
        usage.calls += 1
        usage.failures += not call.ok
        usage.rate_limited += call.rate_limited
        usage.tokens_in += call.tokens_in or 0
        usage.tokens_out += call.tokens_out or 0
        usage.cache_read += call.cache_read_tokens or 0
        usage.cache_write += call.cache_write_tokens or 0
        if call.cost_usd is not None:
            usage.cost = (usage.cost or 0) + call.cost_usd
            cost_key = (at - at % HOUR_MS, script)
            rollups.costs[cost_key] = rollups.costs.get(cost_key, Decimal(0)) + call.cost_usd
        elif call.model is not None:
            usage.unpriced += 1
    for scan in found.scans:
        at = scan.ts_ms or ts_ms
        scan_key = (at - at % HOUR_MS, script)
        activity = rollups.scans.get(scan_key)
        if activity is None:
            activity = rollups.scans[scan_key] = ScanActivity()
        if scan.repo:
            activity.repositories.add(scan.repo)
        if scan.status == "started":
            activity.started += 1
            continue  # files and duration are known when a scan ends
        if scan.status == "completed":
            activity.completed += 1
        else:
            activity.failed += 1
        activity.files += scan.files or 0
        if scan.duration_ms is not None:
            activity.duration_sum += int(scan.duration_ms)
            activity.duration_max = max(activity.duration_max, int(scan.duration_ms))
