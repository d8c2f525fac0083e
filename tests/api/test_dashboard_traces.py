"""The dashboard draws a trace as a waterfall from a log line's invocation, and lists the
operations its spans measured: in Debian's Chromium, driven by Playwright, against `tailpipe
api` over a Workers Observability logs export and the two traces exports of the same
invocation, stored by a real replica (the pattern of test_dashboard.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
from playwright.sync_api import Browser

from pipeline.kafka.publisher import BulkPublisher
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
from tests.api.test_traces import FIXTURE, TRACE, logs_of_the_same_invocation, moved
from tests.conftest import drop_schema, env_of, isolated, tailpipe, unique
from tests.support.api import serving
from tests.support.replica import Replica

pytestmark = pytest.mark.stack
__all__ = ["browser"]  # the module fixture, shared

READ = "trace-read-token-0123456789"


async def publish(settings: Settings, start_ns: int) -> None:
    whole = moved(orjson.loads(FIXTURE.read_bytes()), start_ns)
    spans = whole["resourceSpans"][0]["scopeSpans"][0]["spans"]
    async with BulkPublisher(settings, settings.topic) as publisher:
        for part in (spans[:2], spans[2:]):
            whole["resourceSpans"][0]["scopeSpans"][0]["spans"] = part
            await publisher.add(TRACE.encode(), orjson.dumps(whole))
        logs = logs_of_the_same_invocation(start_ns)
        # The invocation also threw: an error group whose latest occurrence is it.
        records = logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        thrown = {**records[-1], "attributes": [
            {"key": "exception.type", "value": {"stringValue": "D1_ERROR"}},
            {"key": "exception.message", "value": {"stringValue": "no such column: owner"}},
        ]}  # fmt: skip
        records.append(thrown)
        await publisher.add(TRACE.encode(), orjson.dumps(logs))


@pytest.fixture(scope="module")
def dashboard(base_settings: Settings) -> Iterator[Dashboard]:
    schema = unique("t")
    settings = isolated(base_settings, schema)
    env = env_of(settings)
    try:
        for argv in (["migrate"], ["topics", "create", "--partitions", "2"]):
            done = tailpipe(*argv, env=env)
            assert done.returncode == 0, done.stderr
        run(publish(settings, (int(time.time()) - 600) * 1_000_000_000))
        replica = Replica(settings)
        try:
            _wait_stored(settings, 3, 90)
        finally:
            assert replica.terminate() == 0
        with serving(env, READ) as url:
            yield Dashboard(url, settings)
    finally:
        run(drop_schema(base_settings, schema))


def test_a_log_line_opens_its_trace_as_a_waterfall(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "logs")
    page.locator("[data-table=logs] [data-action=invocation]").first.click()
    trace = page.locator(f"section.invocation [data-role=trace][data-trace='{TRACE}']")
    trace.wait_for()
    rows = trace.locator("[data-table=waterfall] tbody tr")
    body = dashboard.api(f"/api/traces/{TRACE}", READ)
    assert rows.count() == body["span_count"] == 4
    assert [rows.nth(i).get_attribute("data-depth") for i in range(4)] == ["0", "1", "1", "1"]
    assert rows.nth(0).locator("td").first.inner_text().startswith("fetch")
    assert rows.nth(3).get_attribute("data-error") == ""  # d1_all failed
    assert rows.nth(3).locator(".bar.failed").count() == 1
    # Bars sit where the spans ran: the root spans the whole line, the GitHub call starts
    # after the kv_get and ends before d1_all begins.
    track = rows.nth(0).locator(".track").bounding_box()
    boxes = [rows.nth(i).locator(".bar").bounding_box() for i in range(4)]
    assert track is not None
    assert all(b is not None for b in boxes)
    root, kv, github, d1 = (b for b in boxes if b is not None)
    assert root["width"] == pytest.approx(track["width"], rel=0.02)
    assert kv["x"] < github["x"] < github["x"] + github["width"] <= d1["x"] + 1
    cpu = page.locator("section.invocation [data-fact=cpu] dd").inner_text()
    assert cpu == "7 ms", "the CPU time the logs lacked, from the root span"
    assert console.unexpected() == []


def test_the_overview_lists_the_operations(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "overview")
    rows = page.locator("[data-table=operations] tbody tr")
    names = {rows.nth(i).get_attribute("data-operation") for i in range(rows.count())}
    assert names == {"fetch", "kv_get", "fetch api.github.com", "d1_all"}
    kv = page.locator("[data-table=operations] tr[data-operation=kv_get] td").nth(4)
    assert kv.inner_text() == "0.45 ms"
    assert console.unexpected() == []


def test_an_error_opens_its_latest_occurrence_with_its_trace(
    browser: Browser, dashboard: Dashboard
) -> None:
    [group] = dashboard.api("/api/logs/errors", READ, hours=24)["errors"]
    assert group["name"] == "D1_ERROR"
    latest = group["latest_invocation"]
    invocation = dashboard.api(f"/api/invocations/{latest}", READ)
    assert [e["message"] for e in invocation["exceptions"]] == ["D1_ERROR: no such column: owner"]
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "errors")
    page.click(f"[data-fingerprint='{group['fingerprint']}'] [data-action=latest]")
    panel = page.locator(f"[data-fingerprint='{group['fingerprint']}'] section.invocation")
    panel.wait_for()
    assert panel.get_attribute("data-invocation") == latest
    waterfall = panel.locator(f"[data-role=trace][data-trace='{TRACE}'] [data-table=waterfall]")
    assert waterfall.locator("tbody tr").count() == 4
    assert console.unexpected() == []
