"""Windowed rules: a script's error rate and p95 wall time over its last hours, read from the
rollups (`tail_metrics_hourly`, the per-script total rows) inside the flush that changed them,
so the events of the batch count. `decide` is pure; `evaluate` reads the rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import orjson

from pipeline.alerts.detect import Candidates, note
from pipeline.alerts.rules import Rules
from pipeline.rollup import HOUR_MS, TOTAL
from pipeline.sketch import LatencySketch

_WINDOW = """
SELECT script, sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,
       array_agg(wall_sketch::text) AS sketches
FROM tail_metrics_hourly
WHERE event_type = '*' AND script = ANY($1::text[]) AND hour > $2 AND hour <= $3
GROUP BY script
"""


def decide(
    rules: Rules, requests: int, errors: int, p95_ms: float | None, *, rate: bool, slow: bool
) -> list[tuple[str, str]]:
    """(rule name, summary) for each windowed rule the numbers break. Strictly above the
    threshold, and only with at least the minimum number of requests."""
    out = []
    if rate and rules.error_rate.enabled and requests >= rules.error_rate_min_requests:
        share = errors / requests
        if share > rules.error_rate_above:
            span = f"{rules.error_rate_window_h}h"
            summary = f"error rate {share:.1%} over the last {span} ({errors} of {requests})"
            out.append(("error_rate", summary))
    enough = requests >= rules.slow_min_requests
    if slow and rules.slow.enabled and enough and (p95_ms or 0) > rules.slow_p95_above_ms:
        span = f"{rules.slow_window_h}h"
        summary = f"p95 wall time {p95_ms:.0f} ms over the last {span} ({requests} requests)"
        out.append(("slow", summary))
    return out


async def evaluate(
    conn: asyncpg.Connection, found: Candidates, rules: Rules, scripts: set[str], newest_ms: int
) -> None:
    """Note windowed alerts for the scripts a batch touched, as of its newest event."""
    scripts.discard(TOTAL)
    if not scripts:
        return
    hour = newest_ms - newest_ms % HOUR_MS
    for rule_name, hours in (("error_rate", rules.error_rate_window_h),
                             ("slow", rules.slow_window_h)):  # fmt: skip
        rule = getattr(rules, rule_name)
        if not rule.enabled:
            continue
        rows = await conn.fetch(_WINDOW, sorted(scripts), _at(hour - hours * HOUR_MS), _at(hour))
        for r in rows:
            p95 = None
            if rule_name == "slow":
                sketch = LatencySketch()
                for text in r["sketches"]:
                    sketch.merge(LatencySketch.from_json(orjson.loads(text)))
                p95 = sketch.quantile(0.95)
            broken = decide(
                rules, r["requests"], r["errors"], p95,
                rate=rule_name == "error_rate", slow=rule_name == "slow",
            )  # fmt: skip
            for name, summary in broken:
                script = r["script"]
                note(found, rule, f"{name}:{script}", script, newest_ms, f"{script}: {summary}",
                     {"script": script})  # fmt: skip


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
