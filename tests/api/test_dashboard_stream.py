"""The dashboard shows a streamed invocation whole, and says how many of its events the
runtime dropped: in Debian's Chromium, driven by Playwright, against `tailpipe api` over rows a
real replica stored from streaming tail events (the pattern of test_dashboard_invocation.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

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
from tests.replica.test_stream import long_invocation
from tests.support.api import serving
from tests.support.replica import Replica

pytestmark = pytest.mark.stack
__all__ = ["browser"]  # the module fixture, shared

READ = "stream-read-token-0123456789"


@pytest.fixture(scope="module")
def dashboard(base_settings: Settings) -> Iterator[Dashboard]:
    schema = unique("t")
    settings = isolated(base_settings, schema)
    env = env_of(settings)
    try:
        for argv in (["migrate"], ["topics", "create", "--partitions", "2"]):
            done = tailpipe(*argv, env=env)
            assert done.returncode == 0, done.stderr
        posts = long_invocation(int(time.time() * 1000) - 120_000)
        stdin = "\n".join(orjson.dumps({"tailStream": events}).decode() for events in posts)
        done = tailpipe("produce", "-", env=env, stdin=stdin)
        assert done.returncode == 0, done.stderr
        replica = Replica(settings)
        try:
            _wait_stored(settings, len(posts), 90)
        finally:
            code = replica.terminate()
            assert code == 0, replica.tail()
        with serving(env, READ) as url:
            yield Dashboard(url, settings)
    finally:
        run(drop_schema(base_settings, schema))


def test_a_streamed_line_opens_its_invocation_and_its_dropped_events(
    browser: Browser, dashboard: Dashboard
) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "logs")
    lines = dashboard.api("/api/logs/recent", READ, hours=24, limit=50)["logs"]
    assert len(lines) == 3
    assert len({line["invocation"] for line in lines}) == 1
    page.locator("[data-table=logs] [data-action=invocation]").first.click()
    panel = page.locator(f"section.invocation[data-invocation='{lines[0]['invocation']}']")
    panel.wait_for()
    assert panel.locator("[data-table=invocation] tbody tr").count() == 3
    assert panel.locator("[data-fact=source] dd").inner_text() == "stream"
    dropped = panel.locator("[data-role=dropped]").inner_text()
    assert "dropped 7 events" in dropped
    assert console.unexpected() == []
