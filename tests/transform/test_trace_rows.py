"""The trace context and the invocation link on the rows: `trace_id`/`span_id` as bytes on the
invocation and on each of its lines, each line's `invocation_ts` its invocation's `ts`."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import EVENT_COLUMNS, LOG_COLUMNS, Transformer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
KAFKA_MS = 1767225000000


def rows(item: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    batch = Batch()
    Transformer(Extractor.from_files()).add(batch, "t", 2, 7, KAFKA_MS, None, orjson.dumps(item))
    [part] = batch.parts.values()
    [event] = part.events
    return (
        dict(zip(EVENT_COLUMNS, event, strict=True)),
        [dict(zip(LOG_COLUMNS, row, strict=True)) for row in part.logs],
    )


ITEM: dict[str, Any] = {
    "envelope": "tailpipe/1", "scriptName": "billing", "outcome": "exception",
    "eventTimestamp": 1767225600123, "wallTime": 40,
    "event": {"request": {"url": "https://b/x", "method": "POST", "headers": {}},
              "response": {"status": 500}},
    "logs": [{"timestamp": 1767225600130, "level": "info", "message": ["one"]},
             {"level": "warn", "message": ["no time of its own"]}],
    "exceptions": [{"timestamp": 1767225600160, "name": "Error", "message": "boom"}],
}  # fmt: skip


def test_ids_are_stored_as_bytes_on_the_invocation_and_each_line() -> None:
    event, lines = rows({**ITEM, "spanContext": {"traceId": TRACE, "spanId": SPAN}})
    assert event["trace_id"] == bytes.fromhex(TRACE)
    assert len(event["trace_id"]) == 16
    assert event["span_id"] == bytes.fromhex(SPAN)
    assert len(event["span_id"]) == 8
    assert len(lines) == 3
    for line in lines:
        assert (line["trace_id"], line["span_id"]) == (event["trace_id"], event["span_id"])
        assert line["invocation_ts"] == event["ts"]
        assert (line["topic"], line["kafka_partition"], line["kafka_offset"], line["item"]) == (
            "t",
            2,
            7,
            0,
        )
    # Each line keeps its own time; the link is the invocation's.
    assert [line["ts"] != event["ts"] for line in lines] == [True, False, True]


def test_an_item_without_ids_stores_null() -> None:
    event, lines = rows(ITEM)
    assert (event["trace_id"], event["span_id"]) == (None, None)
    assert all((line["trace_id"], line["span_id"]) == (None, None) for line in lines)
    assert all(line["invocation_ts"] == event["ts"] for line in lines)


def test_an_invocation_without_a_time_links_lines_to_the_kafka_time() -> None:
    item = {k: v for k, v in ITEM.items() if k != "eventTimestamp"}
    event, lines = rows(item)
    assert event["ts"].timestamp() * 1000 == KAFKA_MS
    assert all(line["invocation_ts"] == event["ts"] for line in lines)
