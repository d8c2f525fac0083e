"""The dashboard opens a log line's invocation: in Debian's Chromium, driven by Playwright,
against `tailpipe api` over rows a real replica stored (the pattern of test_dashboard.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from playwright.sync_api import Browser

from pipeline.settings import Settings
from tests.api.test_dashboard import (
    Dashboard,
    _wait_stored,
    browser,
    open_page,
    run,
    show,
    sign_in,
)
from tests.conftest import drop_schema, env_of, isolated, tailpipe, unique
from tests.support.api import serving
from tests.support.replica import Replica

pytestmark = pytest.mark.stack
__all__ = ["browser"]  # the module fixture, shared

READ = "inv-read-token-0123456789"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _items(now: int) -> list[dict[str, Any]]:
    envelope = {
        "envelope": "tailpipe/1", "scriptName": "orders", "outcome": "exception",
        "eventTimestamp": now, "wallTime": 12,
        "spanContext": {"traceId": TRACE, "spanId": "00f067aa0ba902b7"},
        "event": {"request": {"url": "https://orders.internal/v1/orders/42", "method": "GET",
                              "headers": {"x-request-id": "req_7Yq2"}},
                  "response": {"status": 500}},
        "logs": [{"timestamp": now + 1, "level": "info", "message": ["order looked up"]},
                 {"timestamp": now + 2, "level": "warn", "message": ["<b>not markup</b>"]}],
        "exceptions": [{"timestamp": now + 3, "name": "KeyError", "message": "'sku'",
                        "stack": '  File "app.py", line 3, in order'}],
    }  # fmt: skip
    cron = {"scriptName": "nightly", "outcome": "ok", "eventTimestamp": now - 60_000,
            "event": {"cron": "0 3 * * *", "scheduledTime": now - 60_000},
            "logs": [{"timestamp": now - 59_000, "level": "log", "message": ["ok"]}]}  # fmt: skip
    return [envelope, cron]


@pytest.fixture(scope="module")
def dashboard(base_settings: Settings) -> Iterator[Dashboard]:
    schema = unique("t")
    settings = isolated(base_settings, schema)
    env = env_of(settings)
    try:
        for argv in (["migrate"], ["topics", "create", "--partitions", "2"]):
            done = tailpipe(*argv, env=env)
            assert done.returncode == 0, done.stderr
        items = _items(int(time.time() * 1000) - 120_000)
        stdin = "\n".join(orjson.dumps(item).decode() for item in items)
        done = tailpipe("produce", "-", env=env, stdin=stdin)
        assert done.returncode == 0, done.stderr
        replica = Replica(settings)
        try:
            _wait_stored(settings, len(items), 90)
        finally:
            assert replica.terminate() == 0
        with serving(env, READ) as url:
            yield Dashboard(url, settings)
    finally:
        run(drop_schema(base_settings, schema))


def test_a_log_line_opens_its_invocation(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "logs")
    lines = dashboard.api("/api/logs/recent", READ, hours=24, limit=50)["logs"]
    rows = page.locator("[data-table=logs] tbody tr")
    assert rows.count() == len(lines) == 4  # 2 lines and an exception, 1 line
    buttons = page.locator("[data-table=logs] [data-action=invocation]")
    labels = buttons.all_inner_texts()
    expected = ["GET /v1/orders/42 500" if line["request"] else line["event_type"]
                for line in lines]  # fmt: skip
    assert labels == expected

    # A line of the request: its invocation, with every line and the exception.
    warn = next(i for i, line in enumerate(lines) if line["level"] == "warn")
    buttons.nth(warn).click()
    panel = page.locator(f"section.invocation[data-invocation='{lines[warn]['invocation']}']")
    panel.wait_for()
    body = dashboard.api(f"/api/invocations/{lines[warn]['invocation']}", READ)
    assert panel.locator("[data-table=invocation] tbody tr").count() == len(body["logs"]) == 2
    assert panel.locator("[data-fact=trace-id] dd").inner_text() == TRACE
    assert panel.locator("[data-fact=request-id] dd").inner_text() == "req_7Yq2"
    assert "<b>not markup</b>" in panel.inner_text(), "log text shown as text"
    assert panel.locator("b").count() == 0
    assert "KeyError: 'sku'" in panel.locator("[data-role=exceptions]").inner_text()

    # Another line replaces it; Close empties the panel.
    cron = next(i for i, line in enumerate(lines) if line["script"] == "nightly")
    buttons.nth(cron).click()
    page.locator(f"section.invocation[data-invocation='{lines[cron]['invocation']}']").wait_for()
    assert page.locator("section.invocation").count() == 1
    page.click("section.invocation [data-action=close]")
    assert page.locator("section.invocation").count() == 0
    assert console.unexpected() == []
