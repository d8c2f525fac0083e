"""`tailpipe inspect` prints what the pipeline would store, with no service running."""

from __future__ import annotations

import orjson

from tests.conftest import tailpipe

TRACE = {
    "scriptName": "api",
    "outcome": "exception",
    "eventTimestamp": 1764374400000,
    "event": {
        "request": {"url": "https://x.test/a?token=s3cr3tvalue&page=2", "method": "GET"},
        "response": {"status": 500},
    },
    "logs": [
        {"timestamp": 1764374400001, "level": "info", "message": ["GET /repos/o/r 200 in 12ms"]},
        {"timestamp": 1764374400002, "level": "log", "message": ["auth Bearer abcdef123456789"]},
    ],
    "exceptions": [
        {"timestamp": 1764374400003, "name": "TypeError", "message": "x is undefined (id 42)"}
    ],
    "wallTime": 30,
    "cpuTime": 2,
}


def test_rows_errors_rollups_and_redactions() -> None:
    text = orjson.dumps(TRACE).decode() + "\n\nnot json\n"
    result = tailpipe("inspect", "-", env={}, timeout=60, stdin=text)
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    events = [x for x in lines if x.get("table") == "tail_events"]
    logs = [x for x in lines if x.get("table") == "tail_logs"]
    errors = [x for x in lines if "error" in x]
    assert len(events) == 1
    assert events[0]["line"] == 1
    assert events[0]["row"]["url"] == "https://x.test/a?token=[REDACTED:query]&page=2"
    assert events[0]["row"]["status"] == 500
    assert [log["row"]["level"] for log in logs] == ["info", "log", "exception"]
    assert "abcdef123456789" not in result.stdout
    assert "s3cr3tvalue" not in result.stdout
    assert logs[2]["row"]["fingerprint"]
    assert errors == [{"line": 3, "error": "DecodeError", "message": errors[0]["message"]}]
    rollups = {x["rollup"]: x for x in lines if "rollup" in x}
    assert rollups["tail_metrics_hourly"]["add"]["requests"] == 1
    assert rollups["tail_metrics_hourly"]["add"]["errors"] == 1
    assert rollups["api_usage_daily"]["key"]["provider"] == "github"
    assert rollups["error_summary"]["add"]["occurrences"] == 1
    assert lines[-1]["redactions"] == {"bearer": 1, "query": 1}
