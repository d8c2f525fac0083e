"""`tailpipe alerts test RULE`, the real command against a real local HTTP receiver: one test
notification per destination of the rule's severity; an unknown rule exits 2 naming the rules
it knows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import tailpipe
from tests.support.workers import http_server

RULES = """
[[condition]]
name = "checkout-errors"
metric = "error_rate"
above = 0.2
scripts = ["checkout"]
severity = "critical"
"""


@pytest.fixture
def received() -> Iterator[tuple[list[dict[str, Any]], str]]:
    got: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                got.append({"path": self.path, "body": orjson.loads(body)})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as url:
        yield got, url


def files(tmp_path: Path, url: str) -> dict[str, str]:
    rules, targets = tmp_path / "rules.toml", tmp_path / "destinations.toml"
    rules.write_text(RULES)
    targets.write_text(
        f"[[destination]]\nname = 'oncall'\nkind = 'webhook'\nurl = '{url}/oncall'\n"
        f"severities = ['critical']\n"
        f"[[destination]]\nname = 'chat'\nkind = 'slack'\nurl = '{url}/chat'\n"
        f"[[destination]]\nname = 'quiet'\nkind = 'webhook'\nurl = '{url}/quiet'\n"
        f"severities = ['warning']\n"
    )
    return {"TAILPIPE_ALERT_RULES": str(rules), "TAILPIPE_ALERT_DESTINATIONS": str(targets)}


def test_a_test_notification_reaches_each_destination_of_the_rule(
    tmp_path: Path, received: tuple[list[dict[str, Any]], str]
) -> None:
    got, url = received
    done = tailpipe("alerts", "test", "checkout-errors", env=files(tmp_path, url))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["oncall: delivered", "chat: delivered"]
    assert sorted(r["path"] for r in got) == ["/chat", "/oncall"]
    hook = next(r["body"] for r in got if r["path"] == "/oncall")
    assert (hook["rule"], hook["severity"], hook["script"]) == (
        "checkout-errors", "critical", "checkout",
    )  # fmt: skip
    assert hook["details"] == {"state": "firing", "test": True}
    # A built-in rule by its name, of its severity (warning): the chat and the quiet one.
    done = tailpipe("alerts", "test", "error_log", env=files(tmp_path, url))
    assert done.stdout.splitlines() == ["chat: delivered", "quiet: delivered"]


def test_an_unknown_rule_exits_2_naming_the_known(
    tmp_path: Path, received: tuple[list[dict[str, Any]], str]
) -> None:
    got, url = received
    done = tailpipe("alerts", "test", "nope", env=files(tmp_path, url))
    assert done.returncode == 2
    assert done.stderr.startswith("tailpipe: alerts test RULE: expected one of ")
    assert "checkout-errors" in done.stderr
    assert done.stderr.count("\n") == 1
    assert got == []
