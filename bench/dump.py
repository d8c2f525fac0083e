"""A plain dump of trace items into tailpipe's raw tables: the least a consumer must do.

    .venv/bin/python bench/dump.py --messages N [--max-records 5000]

Run by `bench/ingest.py` as a child process (see `bench/child.py`), configured like `tailpipe
run` by the TAILPIPE_* variables (topic, group, Kafka, PostgreSQL and a freshly migrated
schema). aiokafka `getmany`, orjson, and rows of `tail_events` and `tail_logs` built straight
from the trace item's fields: no validation, redaction, extraction, rollups or offsets. Each
fetched batch is one transaction of two binary COPYs (`copy_records_to_table`); the day
partitions a batch needs are created before it, as tailpipe does. Reports its count after each
commit and waits for SIGTERM once N messages are stored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.child import progress, stop_event  # noqa: E402
from bench.kafka_read import consumer  # noqa: E402
from pipeline.formats.trace_items import EVENT_VARIANTS  # noqa: E402
from pipeline.postgres.connect import connect  # noqa: E402
from pipeline.postgres.day_partitions import PartitionManager  # noqa: E402
from pipeline.settings import load  # noqa: E402

EVENT_COLUMNS = (
    "ts", "script", "event_type", "outcome", "method", "url", "status", "cpu_ms", "wall_ms",
    "log_count", "exception_count", "truncated", "script_version", "source", "extra", "topic",
    "kafka_partition", "kafka_offset", "item",
)  # fmt: skip
LOG_COLUMNS = (
    "ts", "script", "event_type", "outcome", "level", "message", "data", "exception_name",
    "stack", "topic", "kafka_partition", "kafka_offset", "item", "seq",
)  # fmt: skip
_COLUMNS = frozenset(
    ("scriptName", "event", "eventTimestamp", "logs", "exceptions", "outcome", "truncated",
     "cpuTime", "wallTime")
)  # fmt: skip
_DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
Row = tuple[Any, ...]


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _text(part: Any) -> str:
    return part if isinstance(part, str) else orjson.dumps(part).decode()


def rows(
    value: bytes, origin: tuple[str, int, int], events: list[Row], logs: list[Row], days: set[int]
) -> None:
    """The rows of one message (one trace item), appended to `events` and `logs`; the UTC days
    (epoch days) they fall on added to `days`."""
    item = orjson.loads(value)
    ms = item["eventTimestamp"]
    days.add(ms // _DAY_MS)
    event = item.get("event")
    extra = {k: v for k, v in item.items() if k not in _COLUMNS}
    kind, method, url, status = "unknown", None, None, None
    if event:
        kind = next((name for key, name in EVENT_VARIANTS if key in event), "unknown")
        request = event.get("request")
        if request is not None:
            method, url = request.get("method"), request.get("url")
            status = (event.get("response") or {}).get("status")
            extra.update((k, v) for k, v in request.items() if k not in ("method", "url"))
        else:
            extra.update(event)
    ts = _ts(ms)
    context = (ts, item["scriptName"], kind, item["outcome"])
    lines, exceptions = item["logs"], item["exceptions"]
    version = item.get("scriptVersion")
    events.append(
        (*context, method, url, status, item.get("cpuTime"), item.get("wallTime"), len(lines),
         len(exceptions), item.get("truncated", False), version and version.get("id"), "trace",
         orjson.dumps(extra).decode(), *origin, 0)
    )  # fmt: skip
    seq = 0
    for line in lines:
        parts = line["message"]
        data = next((p for p in parts if isinstance(p, dict)), None)
        line_ms = line["timestamp"]
        days.add(line_ms // _DAY_MS)
        logs.append(
            (_ts(line_ms), *context[1:], line["level"], " ".join(map(_text, parts)),
             None if data is None else orjson.dumps(data).decode(), None, None, *origin, 0, seq)
        )  # fmt: skip
        seq += 1
    for exc in exceptions:
        exc_ms = exc.get("timestamp") or ms
        days.add(exc_ms // _DAY_MS)
        logs.append(
            (_ts(exc_ms), *context[1:], "exception", f"{exc['name']}: {exc['message']}", None,
             exc["name"], exc.get("stack"), *origin, 0, seq)
        )  # fmt: skip
        seq += 1


async def main(messages: int, max_records: int) -> None:
    stop = stop_event()
    settings = load()
    kafka = consumer(settings)
    conn = await connect(settings)
    partitions = PartitionManager()
    await kafka.start()
    try:
        stored = 0
        while stored < messages and not stop.is_set():
            fetched = await kafka.getmany(timeout_ms=1000, max_records=max_records)
            events: list[Row] = []
            logs: list[Row] = []
            days: set[int] = set()
            count = 0
            for tp, records in fetched.items():
                for record in records:
                    rows(record.value, (tp.topic, tp.partition, record.offset), events, logs, days)
                count += len(records)
            if not count:
                continue
            await partitions.ensure(conn, [_EPOCH + timedelta(days=d) for d in days])
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "tail_events", records=events, columns=EVENT_COLUMNS
                )
                if logs:
                    await conn.copy_records_to_table("tail_logs", records=logs, columns=LOG_COLUMNS)
            stored += count
            progress(stored)
        await stop.wait()
    finally:
        await kafka.stop()
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, required=True, help="stop after storing these")
    parser.add_argument(
        "--max-records", type=int, default=5_000, help="messages per fetch, so per transaction"
    )
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.max_records))
