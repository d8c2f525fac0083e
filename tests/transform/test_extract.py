"""The Extractor: typed logger records, llm_usage JSON, free text, costs, and the composition,
end to end on decoded messages; and its speed on synthetic load."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline.formats.decode import decode
from pipeline.formats.invocation import Invocation, LogLine
from pipeline.kafka import synth
from pipeline.transform.extract import (
    STRUCTURED_RULES,
    ApiCall,
    Extracted,
    Extractor,
    Scan,
    load_prices,
    provider_for_model,
)
from pipeline.transform.extract.api_calls import api_call_record
from pipeline.transform.extract.llm import llm_usage_data
from pipeline.transform.extract.scans import scan_record

TS = 1_700_000_000_000
EXTRACTOR = Extractor.from_files()


def invocation(*lines: LogLine, ts: int | None = TS) -> Invocation:
    return Invocation("worker", "fetch", ts, "ok", logs=lines)


def record(kind: str, level: str = "info", **fields: Any) -> LogLine:
    return LogLine(TS + 5, level, "rendered text", fields, kind)


# --- the structured logger's typed records ------------------------------------------------------


def test_api_call_record_reads_every_field() -> None:
    line = record(
        "api_call",
        provider="anthropic",
        endpoint="POST /v1/messages",
        model="claude-sonnet-4-5-20250929",
        status=200,
        duration_ms=812.5,
        tokens_in=1000,
        tokens_out=200,
        rate_limit_remaining=49,
    )
    [found] = EXTRACTOR.extract(invocation(line)).api_calls
    assert found == ApiCall(
        "anthropic",
        "POST /v1/messages",
        "claude-sonnet-4-5-20250929",
        200,
        812.5,
        1000,
        200,
        49,
        ok=True,
        rate_limited=False,
        ts_ms=TS + 5,
        cost_usd=Decimal("0.006"),  # 1000 * 3 / 1e6 + 200 * 15 / 1e6
    )


@pytest.mark.parametrize(
    ("fields", "level", "ok", "rate_limited"),
    [
        ({"status": 200}, "info", True, False),
        ({"status": 399, "error": "odd"}, "info", True, False),  # a status says it answered
        ({"status": 400}, "info", False, False),
        ({"status": 503}, "info", False, False),
        ({"status": 429}, "warn", False, True),
        ({"status": 200, "rate_limit_remaining": 0}, "info", True, True),
        ({"status": 0}, "info", True, False),
        ({"status": 0, "error": "ECONNRESET"}, "info", False, False),
        ({"status": None, "error": "timeout"}, "info", False, False),
        ({}, "error", False, False),
        ({"error": ""}, "info", True, False),
    ],
)
def test_ok_and_rate_limited(
    fields: dict[str, Any], level: str, ok: bool, rate_limited: bool
) -> None:
    found = api_call_record(record("api_call", level, provider="github", **fields), TS)
    assert found is not None
    assert (found.ok, found.rate_limited) == (ok, rate_limited)


def test_api_call_record_infers_the_provider_and_drops_ill_typed_fields() -> None:
    line = record(
        "api_call",
        model="gpt-4o",
        status="teapot",
        tokens_in=-5,
        tokens_out=True,
        duration_ms=float("nan"),
        rate_limit_remaining=2**70,
        endpoint=["x"],
    )
    found = api_call_record(line, TS)
    assert found is not None
    assert found.provider == "openai"
    assert (found.status, found.tokens_in, found.tokens_out, found.duration_ms) == (
        None,
        None,
        None,
        None,
    )
    assert (found.rate_limit_remaining, found.endpoint) == (None, None)
    nameless = api_call_record(record("api_call", status=200), TS)
    assert nameless is not None
    assert nameless.provider == "unknown"


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("claude-sonnet-4-5", "anthropic"),
        ("Claude-3-Opus", "anthropic"),
        ("gpt-4o-mini", "openai"),
        ("o1", "openai"),
        ("o3-mini", "openai"),
        ("o4-mini", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("mystery-model-x", "llm"),
        ("claude", "llm"),
        ("gemini-2.5-pro", "google"),
        ("Gemini-2.0-Flash", "google"),
        ("gemini", "llm"),
        ("@cf/meta/llama-3.1-8b-instruct", "workers-ai"),
        ("@hf/thebloke/zephyr-7b-beta-awq", "workers-ai"),
        ("@cf/openai/gpt-oss-120b", "workers-ai"),
    ],
)
def test_provider_for_model(model: str, provider: str) -> None:
    assert provider_for_model(model) == provider


def test_scan_record() -> None:
    line = record("scan", repo="acme/api", status="Completed", files=12, duration_ms=3400)
    assert scan_record(line, TS) == Scan("acme/api", "completed", 12, 3400, TS)
    assert scan_record(record("scan", repo="acme/api", status="queued"), TS) is None
    assert scan_record(record("scan", repo="acme/api"), TS) is None
    assert scan_record(record("timer", status="completed"), TS) is None


def test_llm_usage_json_in_data() -> None:
    anthropic = {"input_tokens": 1234, "output_tokens": 56}
    openai = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    text = orjson.dumps({"event": "llm_usage", "model": "claude-haiku-4-5", "usage": anthropic})
    line = LogLine(None, "log", text.decode(), orjson.loads(text))
    found = llm_usage_data(line, TS)
    assert found is not None
    assert (found.provider, found.model, found.tokens_in, found.tokens_out) == (
        "anthropic",
        "claude-haiku-4-5",
        1234,
        56,
    )
    data = {"event": "llm_usage", "model": "gpt-4o", "usage": openai, "provider": "azure"}
    found = llm_usage_data(LogLine(None, "log", "", data), TS)
    assert found is not None
    assert (found.provider, found.tokens_in, found.tokens_out) == ("azure", 10, 5)
    assert llm_usage_data(LogLine(None, "log", "", {"event": "llm_usage"}), TS) is None
    assert llm_usage_data(LogLine(None, "log", "", {"event": "other", "model": "x"}), TS) is None


# --- the composition -----------------------------------------------------------------------------


def test_extract_end_to_end_from_a_trace_item() -> None:
    usage = {
        "event": "llm_usage",
        "model": "gpt-4o",
        "usage": {"input_tokens": 1234, "output_tokens": 56},
    }
    logs = [
        ("info", ["GET /repos/acme/api 200 in 123ms"]),
        ("log", ["github ratelimit remaining=0 limit=5000"]),
        ("log", [orjson.dumps(usage).decode()]),
        ("log", ["llm usage model=mystery-model-x input_tokens=10 output_tokens=5"]),
        ("log", ["scan failed repo=octo/cli files=9 duration_ms=50"]),
        ("log", ["handled request", {"ms": 12}]),
        ("error", ["upstream failed", {"status": 502, "attempt": 1}]),
    ]
    item = {
        "scriptName": "repo-scanner",
        "outcome": "ok",
        "eventTimestamp": TS,
        "event": None,
        "logs": [
            {"timestamp": TS + i, "level": level, "message": message}
            for i, (level, message) in enumerate(logs)
        ],
        "exceptions": [],
    }
    [inv] = decode(orjson.dumps(item))
    extracted = EXTRACTOR.extract(inv)
    github, reading, priced, unpriced = extracted.api_calls
    assert github == ApiCall(
        "github", "GET /repos/{owner}/{repo}", None, 200, 123, None, None, None, True, False, TS
    )
    assert (reading.rate_limit_remaining, reading.rate_limited, reading.ts_ms) == (0, True, TS + 1)
    assert (priced.model, priced.cost_usd) == ("gpt-4o", Decimal("0.003645"))
    assert (unpriced.provider, unpriced.tokens_in, unpriced.cost_usd) == ("llm", 10, None)
    assert extracted.scans == [Scan("octo/cli", "failed", 9, 50, TS + 4)]


def test_line_without_timestamp_takes_the_invocations() -> None:
    line = LogLine(None, "log", "scan started repo=acme/api")
    assert EXTRACTOR.extract(invocation(line)).scans[0].ts_ms == TS
    assert EXTRACTOR.extract(invocation(line, ts=None)).scans[0].ts_ms is None


def test_a_typed_record_is_not_parsed_again_as_text() -> None:
    # Its rendered text matches a text rule too; the first record found ends the line.
    line = LogLine(TS, "info", "GET /repos/acme/api 200 in 5ms", {"provider": "github"}, "api_call")
    assert len(EXTRACTOR.extract(invocation(line)).api_calls) == 1


def test_rules_compose_as_plain_callables() -> None:
    def timers(line: LogLine, ts_ms: int | None) -> Scan | None:
        if line.kind == "timer":
            return Scan(None, "completed", None, (line.data or {}).get("duration_ms"), ts_ms)
        return None

    custom = Extractor.compose([timers], load_prices())
    assert custom.rules[: len(STRUCTURED_RULES)] == STRUCTURED_RULES
    line = LogLine(TS, "log", "t", {"name": "db", "duration_ms": 3}, "timer")
    assert custom.extract(invocation(line)) == Extracted([], [Scan(None, "completed", None, 3, TS)])
    assert Extractor((), load_prices()).extract(invocation(line)) == Extracted([], [])


def synthetic(count: int) -> list[Invocation]:
    messages = synth.messages(7, TS)
    return [inv for _ in range(count) for inv in decode(next(messages).value)]


def test_synthetic_load_yields_every_kind_of_record() -> None:
    invocations = synthetic(2000)
    calls = [c for inv in invocations for c in EXTRACTOR.extract(inv).api_calls]
    scans = [s for inv in invocations for s in EXTRACTOR.extract(inv).scans]
    providers = {c.provider for c in calls}
    assert providers == {"github", "anthropic", "openai", "llm"}
    assert any(c.rate_limited and c.status == 429 for c in calls)
    assert any(not c.ok for c in calls)
    assert all(c.cost_usd is None for c in calls if c.model == "mystery-model-x")
    assert all(c.cost_usd is not None for c in calls if c.provider in ("anthropic", "openai"))
    assert {s.status for s in scans} == {"started", "completed", "failed"}
    # Every synth line of the matching shapes gives a record: 52% of lines (synth's rolls).
    lines = sum(len(inv.logs) for inv in invocations)
    assert 0.45 < (len(calls) + len(scans)) / lines < 0.59


if __name__ == "__main__":  # python -m tests.test_extract: measure
    invocations = synthetic(30_000)
    lines = sum(len(inv.logs) for inv in invocations)
    for _ in range(5):
        started = time.perf_counter()
        for inv in invocations:
            EXTRACTOR.extract(inv)
        elapsed = time.perf_counter() - started
        print(f"{lines / elapsed:,.0f} lines/s, {len(invocations) / elapsed:,.0f} invocations/s")
