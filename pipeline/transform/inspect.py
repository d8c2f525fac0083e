"""`tailpipe inspect`: what the pipeline would store for some messages, without any service.

Reads messages one per line and runs them through the consumer's own `Transformer` (the same
decode, repair, redaction and extraction), then prints as JSON lines: every row with the line it
came from, every message that would be dead-lettered and why, the rollup rows the flush would
merge, and a summary (messages, dead letters, values repaired, redactions). Each invocation's
and span's identity is shown (`transform.dedup`); a line repeating one of an earlier line is
shown as the duplicate it is, and its rows are left out, as the flush would. Because it is the
same code path, what it prints is what would be stored; the command exits 1 when any message
would be a dead letter, so a script can gate on it.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from pipeline.formats.identity import document_key
from pipeline.transform.batch import Batch
from pipeline.transform.dedup import KINDS
from pipeline.transform.rollup import Rollups
from pipeline.transform.spans import SPAN_COLUMNS
from pipeline.transform.transformer import EVENT_COLUMNS, LOG_COLUMNS, Transformer

_JSON_COLUMNS = {"extra", "data"}
_ID_COLUMNS = {"trace_id", "span_id"}
"""bytea, shown as the hex digits they were sent as."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError


def _row(columns: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(columns, row, strict=True))
    for name in _JSON_COLUMNS & out.keys():
        if isinstance(out[name], str):
            out[name] = orjson.loads(out[name])
    for name in _ID_COLUMNS & out.keys():
        if isinstance(out[name], bytes):
            out[name] = out[name].hex()
    return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _key(value: bytes) -> bytes | None:
    try:
        return document_key(orjson.loads(value))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


def rollup_lines(rollups: Rollups) -> Iterator[dict[str, Any]]:
    for (hour, script, event_type), h in sorted(rollups.with_totals().items()):
        yield {
            "rollup": "tail_metrics_hourly",
            "key": {"hour": _iso(hour), "script": script, "event_type": event_type},
            "add": {
                "requests": h.requests, "errors": h.errors, "outcomes": dict(h.outcomes),
                "levels": dict(h.levels), "wall_ms_sum": h.wall_sum, "wall_ms_max": h.wall_max,
                "cpu_ms_sum": h.cpu_sum, "cpu_ms_max": h.cpu_max,
                "wall_sketch": h.wall.to_json(), "cpu_sketch": h.cpu.to_json(),
            },
        }  # fmt: skip
    for (day, provider, model, endpoint), a in sorted(rollups.api.items()):
        yield {
            "rollup": "api_calls_daily",
            "key": {"day": _iso(day)[:10], "provider": provider, "model": model or None,
                    "endpoint": endpoint or None},
            "add": {
                "calls": a.calls, "failures": a.failures, "rate_limited": a.rate_limited,
                "tokens_in": a.tokens_in, "tokens_out": a.tokens_out, "cost_usd": a.cost,
                "unpriced_calls": a.unpriced, "cache_read_tokens": a.cache_read,
                "cache_write_tokens": a.cache_write,
            },
        }  # fmt: skip
    for (day, provider), r in sorted(rollups.rate_limits.items()):
        yield {
            "rollup": "rate_limit_readings_daily",
            "key": {"day": _iso(day)[:10], "provider": provider},
            "add": {
                "limited": r.limited, "remaining": r.remaining,
                "remaining_at": _iso(r.remaining_at_ms) if r.remaining is not None else None,
                "largest_limit": r.limit,
                "latest_reset": _iso(r.reset_ms) if r.reset_ms is not None else None,
            },
        }  # fmt: skip
    for fp, e in sorted(rollups.errors.items()):
        yield {
            "rollup": "error_summary",
            "key": {"fingerprint": fp},
            "add": {
                "name": e.name, "template": e.template, "occurrences": e.occurrences,
                "first_seen": _iso(e.first_ms), "last_seen": _iso(e.last_ms), "scripts": e.scripts,
                "sample_message": e.sample_message, "sample_stack": e.sample_stack,
            },
        }  # fmt: skip
    for (hour, fp), n in sorted(rollups.error_hours.items()):
        yield {
            "rollup": "error_hourly",
            "key": {"hour": _iso(hour), "fingerprint": fp},
            "add": {"occurrences": n},
        }
    for (hour, script), s in sorted(rollups.scans.items()):
        yield {
            "rollup": "scan_activity_hourly",
            "key": {"hour": _iso(hour), "script": script},
            "add": {
                "started": s.started, "completed": s.completed, "failed": s.failed,
                "repositories": s.repositories, "files": s.files,
                "duration_ms_sum": s.duration_sum, "duration_ms_max": s.duration_max,
            },
        }  # fmt: skip
    for (hour, script, name), o in sorted(rollups.operations.items()):
        yield {
            "rollup": "span_operations_hourly",
            "key": {"hour": _iso(hour), "script": script, "operation": name},
            "add": {
                "spans": o.spans, "errors": o.errors, "duration_us_sum": o.duration_us_sum,
                "duration_us_max": o.duration_us_max, "duration_sketch": o.duration.to_json(),
            },
        }  # fmt: skip


def inspect(
    transformer: Transformer, lines: Iterable[bytes], timestamp_ms: int
) -> Iterator[dict[str, Any]]:
    """Rows and dead letters per input line, then the rollups, then one summary line: how many
    messages, how many would be dead letters, values repaired (by column) and redactions (by
    rule). A dead letter's line says why: its error class and message, as the index would."""
    parts: list[Rollups] = []
    redactions: Counter[str] = Counter()
    sanitized: Counter[str] = Counter()
    messages = dead_letters = duplicates = 0
    seen: dict[tuple[datetime, int], int] = {}
    """Each identity, and the line of its first copy."""
    for number, raw in enumerate(lines, start=1):
        value = raw.rstrip(b"\r\n")
        if not value.strip():
            continue
        messages += 1
        batch = Batch()
        # Keyed as a producer keys it (`formats.identity`), which the identity builds on.
        transformer.add(batch, "inspect", 0, number - 1, timestamp_ms, _key(value), value)
        again: dict[tuple[int, int, int], int] = {}  # (offset, kind, item) -> first copy's line
        for part in batch.parts.values():
            for i in part.identities:
                first = seen.get((i.ts, i.digest))
                if first is None:
                    seen[i.ts, i.digest] = number
                else:
                    again[i.offset, i.kind, i.item] = first
        if again:  # left out, as the flush would (`pipeline.postgres.dedup`)
            transformer.rebuild(batch, {}, {("inspect", 0): set(again)})
        for (_, kind, item), first in sorted(again.items()):
            duplicates += 1
            yield {"line": number, "duplicate": KINDS[kind], "item": item, "of_line": first}
        for part in batch.parts.values():
            for i in part.identities:
                yield {"line": number, "identity": {
                    "kind": KINDS[i.kind], "item": i.item, "ts": i.ts.isoformat(),
                    "digest": f"{i.digest & (2**64 - 1):016x}"}}  # fmt: skip
            for dead in part.dead:
                dead_letters += 1
                yield {"line": number, "dead_letter": True, "error": dead.error_class,
                       "message": dead.error}  # fmt: skip
            for row in part.events:
                yield {"line": number, "table": "tail_events", "row": _row(EVENT_COLUMNS, row)}
            for row in part.logs:
                yield {"line": number, "table": "tail_logs", "row": _row(LOG_COLUMNS, row)}
            for row in part.spans:
                yield {"line": number, "table": "tail_spans", "row": _row(SPAN_COLUMNS, row)}
            parts.append(part.rollups)
        redactions.update(batch.redactions)
        sanitized.update(batch.sanitized)
    yield from rollup_lines(Rollups.combine(parts))
    yield {
        "messages": messages,
        "dead_letters": dead_letters,
        "duplicates": duplicates,
        "sanitized": dict(sorted(sanitized.items())),
        "redactions": dict(sorted(redactions.items())),
    }


def dumps(line: dict[str, Any]) -> bytes:
    return orjson.dumps(line, default=_plain, option=orjson.OPT_NON_STR_KEYS) + b"\n"
