"""The OpenTelemetry JS SDK from npm, a real client nobody here wrote, with its OTLP/HTTP JSON
exporters, exports a small trace and a few log records to a running collector; a real replica
stores what it published; and PostgreSQL and the API hold each span and each record once, as
the SDK was given them (tests/collector/otel_js_export.mjs says what that was).

The SDK is the pin of deploy/local/otel-js/, installed under .local/otel-js by `stack.py tools`
(which `make test` runs) or `stack.py otel-js`; missing, the test fails saying so.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from pipeline.formats.invocation import SPAN_KINDS, SPAN_STATUSES
from pipeline.settings import Settings
from tests.collector.test_collect import TOKEN, running
from tests.collector.test_otlp_end_to_end import READ, stored_settings
from tests.collector.test_otlp_logs import metric
from tests.conftest import ROOT, tool
from tests.support.api import get, signed_in
from tests.support.replica import Replica, wait_stored

PIN = ROOT / "deploy" / "local" / "otel-js"
INSTALLED = ROOT / ".local" / "otel-js"
SCRIPT = Path(__file__).with_name("otel_js_export.mjs")
SERVICE = "shop-js"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LEVELS = {5: "debug", 9: "info", 13: "warn", 17: "error"}
"""The SDK's severity numbers the script uses, and the level each is stored as."""


def otel_js() -> Path:
    """The install of the pin; a failure, never a skip, when it is missing or another pin's
    (`npm_ci` in stack.py copies the pin's files in and writes its marker once it loads)."""
    how = "`.venv/bin/python deploy/local/stack.py tools` (or `stack.py otel-js`) installs it"
    for name in ("package.json", "package-lock.json"):
        installed = INSTALLED / name
        same = installed.is_file() and installed.read_bytes() == (PIN / name).read_bytes()
        assert same, f"the OpenTelemetry JS SDK of {PIN} is not installed in {INSTALLED}: {how}"
    assert (INSTALLED / ".lock-sha256").is_file(), f"{INSTALLED} is half installed: {how}"
    return INSTALLED


def export_with_js(base_url: str) -> dict[str, Any]:
    """Run the script against the collector at `base_url`; what it gave the SDK."""
    command = [tool("node"), str(SCRIPT), str(otel_js()), base_url, SERVICE]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # SDK defaults
    done = subprocess.run(
        command, env={**env, "TAILPIPE_OTEL_JS_TOKEN": TOKEN},
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{SCRIPT.name} exited {done.returncode}:\n{done.stderr}\n{done.stdout[-2000:]}"
    )
    summary: dict[str, Any] = orjson.loads(done.stdout)
    return summary


def stored_json(text: str | None, empty: Any) -> Any:
    """A JSON column; NULL is how an empty value is stored (`redact_json_text`)."""
    return empty if text is None else orjson.loads(text)


def at_us(ns: str) -> datetime:
    return EPOCH + timedelta(microseconds=int(ns) // 1_000)


def typed(value: Any) -> Any:
    """A JSON value with each scalar's type beside it: `True == 1` and `3 == 3.0` in Python,
    but an int, a double and a bool are three OTLP types that must arrive as they were sent."""
    if isinstance(value, dict):
        return {key: typed(v) for key, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def requests(metrics: str, route: str, outcome: str) -> float:
    series = f'tailpipe_collect_otlp_requests_total{{outcome="{outcome}",route="{route}"}}'
    return metric(metrics, series)


def records(metrics: str, route: str, result: str) -> float:
    series = f'tailpipe_collect_otlp_records_total{{result="{result}",route="{route}"}}'
    return metric(metrics, series)


def as_stored(event: dict[str, Any]) -> dict[str, Any]:
    """A span event the script gave, as `tail_spans.events` holds it (microseconds)."""
    us = int(event["time_ns"]) // 1_000
    return {"name": event["name"], "time_us": us, "attributes": event["attributes"]}


async def test_the_opentelemetry_js_sdk_s_spans_and_records_are_stored_as_given(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = await stored_settings(migrated)
    async with running(settings) as client:
        given = await asyncio.to_thread(export_with_js, str(client.base_url).rstrip("/"))
        metrics = (await client.get("/metrics")).text
    spans: list[dict[str, Any]] = given["spans"]
    logs: list[dict[str, Any]] = given["logs"]
    assert (len(spans), len(logs)) == (4, 4)

    # The collector: one request per signal (the script's batches flush once), every span and
    # record accepted; a message per trace, and per span the records were written in.
    traces = {s["trace_id"] for s in spans}
    groups = {(r["trace_id"], r["span_id"]) for r in logs}
    for route, signal, items, messages in (
        ("/v1/traces", "traces", spans, traces),
        ("/v1/logs", "logs", logs, groups),
    ):
        assert [e["code"] for e in given["exports"][signal]] == [0]
        assert requests(metrics, route, "accepted") == 1
        assert requests(metrics, route, "refused") == requests(metrics, route, "partial") == 0
        assert (records(metrics, route, "accepted"), records(metrics, route, "rejected")) == (
            len(items),
            0,
        )
        series = f'tailpipe_collect_items_total{{route="{route}"}}'
        assert metric(metrics, series) == len(messages)

    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, len(traces) + len(groups), 90)

    # Every span once, as given.
    rows = await db.fetch(
        "SELECT encode(trace_id, 'hex') AS trace, encode(span_id, 'hex') AS span,"
        " encode(parent_span_id, 'hex') AS parent, ts, duration_us, script, name, kind, status,"
        " status_message, attributes::text, resource::text, events::text, links::text"
        " FROM tail_spans"
    )
    stored = {r["span"]: r for r in rows}
    assert len(rows) == len(stored) == len(spans)
    for span in spans:
        row = stored[span["span_id"]]
        assert (row["trace"], row["parent"], row["script"], row["name"]) == (
            span["trace_id"],
            span["parent_span_id"],
            SERVICE,
            span["name"],
        )
        assert SPAN_KINDS[row["kind"]] == span["kind"].lower()
        assert SPAN_STATUSES[row["status"]] == span["status"].lower()
        assert row["status_message"] == span["status_message"]
        assert row["ts"] == at_us(span["start_ns"])
        assert row["duration_us"] == (int(span["end_ns"]) - int(span["start_ns"])) // 1_000 > 0
        assert typed(stored_json(row["attributes"], {})) == typed(span["attributes"])
        stored_events = stored_json(row["events"], [])
        assert typed(stored_events) == typed([as_stored(e) for e in span["events"]])
        assert stored_json(row["links"], []) == span["links"]
        resource = orjson.loads(row["resource"])
        assert resource == {
            "service.name": SERVICE,
            "service.version": given["version"],
            "otel.scope.name": "checkout",
            "otel.scope.version": "0.9.0",
        }
    by_name = {s["name"]: s for s in spans}
    assert by_name["charge card"]["links"][0]["span_id"] == by_name["enqueue order"]["span_id"]
    operations = await db.fetch("SELECT operation, spans, errors FROM span_operations_hourly")
    assert sorted((o["operation"], o["spans"], o["errors"]) for o in operations) == [
        ("GET api.example.com", 1, 0),  # a client span: its name and the host it called
        ("POST /checkout", 1, 0),
        ("charge card", 1, 1),
        ("enqueue order", 1, 0),
    ]

    # The records: one `otel` invocation per group, its lines in order, with the span's ids.
    events = await db.fetch(
        "SELECT script, event_type, outcome, source, script_version,"
        " encode(trace_id, 'hex') AS trace, encode(span_id, 'hex') AS span FROM tail_events"
    )
    assert sorted(((e["trace"] or ""), (e["span"] or "")) for e in events) == sorted(
        (trace or "", span or "") for trace, span in groups
    )
    assert {
        (e["script"], e["event_type"], e["outcome"], e["source"], e["script_version"])
        for e in events
    } == {(SERVICE, "otel", "ok", "otlp", given["version"])}
    lines = await db.fetch(
        "SELECT ts, script, event_type, level, message, data::text,"
        " encode(trace_id, 'hex') AS trace, encode(span_id, 'hex') AS span"
        " FROM tail_logs ORDER BY ts"
    )
    assert len(lines) == len(logs)
    for line, record in zip(lines, logs, strict=True):
        body, attributes = record["body"], record["attributes"]
        if isinstance(body, dict):  # a map: its JSON the message, it and the attributes the data
            message, data = orjson.dumps(body).decode(), {**body, **attributes}
        else:
            message, data = body, attributes
        assert (line["script"], line["event_type"]) == (SERVICE, "otel")
        assert (line["level"], line["message"]) == (LEVELS[record["severity_number"]], message)
        assert typed(orjson.loads(line["data"])) == typed(data)
        assert line["ts"] == EPOCH + timedelta(milliseconds=int(record["time_ns"]) // 1_000_000)
        assert (line["trace"], line["span"]) == (record["trace_id"], record["span_id"])
    inside = [r for r in logs if r["span_id"] is not None]
    assert {r["span_id"] for r in inside} == {by_name["charge card"]["span_id"]}

    # The API draws the checkout's trace as a tree: the server span, its two children by start.
    checkout = by_name["POST /checkout"]["trace_id"]
    with signed_in(settings, READ) as api:
        tree = get(api, f"/api/traces/{checkout}")
        queued = get(api, f"/api/traces/{by_name['enqueue order']['trace_id']}")
    assert tree["span_count"] == 3
    assert [(s["name"], s["depth"], s["kind"], s["error"]) for s in tree["spans"]] == [
        ("POST /checkout", 0, "server", False),
        ("charge card", 1, "internal", True),
        ("GET", 1, "client", False),
    ]
    assert [s["span_id"] for s in tree["spans"]] == [
        by_name[name]["span_id"] for name in ("POST /checkout", "charge card", "GET")
    ]
    assert [(s["name"], s["depth"]) for s in queued["spans"]] == [("enqueue order", 0)]
