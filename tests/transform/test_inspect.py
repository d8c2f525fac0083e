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


def test_rows_dead_letters_rollups_and_redactions() -> None:
    text = orjson.dumps(TRACE).decode() + "\n\nnot json\n"
    result = tailpipe("inspect", "-", env={}, timeout=60, stdin=text)
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        'tailpipe inspect: 1 of 2 messages would be dead-lettered (the lines with "dead_letter"'
        " say why)\n"
    )
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
    assert errors == [
        {"line": 3, "dead_letter": True, "error": "DecodeError", "message": errors[0]["message"]}
    ]
    rollups = {x["rollup"]: x for x in lines if "rollup" in x}
    assert rollups["tail_metrics_hourly"]["add"]["requests"] == 1
    assert rollups["tail_metrics_hourly"]["add"]["errors"] == 1
    assert rollups["api_calls_daily"]["key"]["provider"] == "github"
    assert rollups["api_calls_daily"]["key"]["model"] is None  # an endpoint, not a model
    assert rollups["error_summary"]["add"]["occurrences"] == 1
    assert lines[-1] == {
        "messages": 2,
        "dead_letters": 1,
        "duplicates": 0,
        "sanitized": {},
        "redactions": {"bearer": 1, "query": 1},
    }


def test_what_postgresql_would_refuse_is_reported_and_fails_the_command() -> None:
    """A NUL is repaired and counted (exit 0); a script name no index can hold is a dead letter
    with its reason (exit 1). Before, inspect printed rows with the NUL in them and exited 0."""
    nul = {**TRACE, "logs": [{"timestamp": 1764374400001, "level": "log", "message": ["a\x00b"]}]}
    repaired = tailpipe("inspect", "-", env={}, timeout=60, stdin=orjson.dumps(nul).decode())
    assert repaired.returncode == 0, repaired.stderr
    lines = [orjson.loads(line) for line in repaired.stdout.splitlines()]
    [log] = [
        x["row"] for x in lines if x.get("table") == "tail_logs" and x["row"]["level"] == "log"
    ]
    assert log["message"] == "a\ufffdb"
    assert lines[-1]["sanitized"] == {"message": 1}
    assert lines[-1]["dead_letters"] == 0

    long_name = orjson.dumps({**TRACE, "scriptName": "w" * 3000}).decode()
    refused = tailpipe("inspect", "-", env={}, timeout=60, stdin=long_name)
    assert refused.returncode == 1
    out = [orjson.loads(line) for line in refused.stdout.splitlines()]
    [dead] = [x for x in out if x.get("dead_letter")]
    assert dead["error"] == "DecodeError"
    assert dead["message"] == "scriptName: 3000 bytes long; at most 1024 fit an index key"
    assert "1 of 1 messages would be dead-lettered" in refused.stderr
