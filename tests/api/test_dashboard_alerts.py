"""The dashboard's alerts view: each condition's state and its changes, acknowledging an alert
and silencing a condition from it; in Debian's Chromium, driven by Playwright, against
`tailpipe api` over what the real evaluator stored in the real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from pipeline.alerts.evaluator import evaluate
from pipeline.postgres.connect import connect
from pipeline.settings import Settings
from tests.alerts.test_evaluator import MINUTE, rollup
from tests.api.test_alerts_api import ERRORS
from tests.api.test_dashboard import Dashboard, browser, open_page, run, show, sign_in
from tests.conftest import drop_schema, env_of, isolated, tailpipe, unique
from tests.support.api import serving

pytestmark = pytest.mark.stack
__all__ = ["browser"]  # the module fixture, shared

READ, WRITE = "alerts-dash-read-0123456789", "alerts-dash-write-0123456789"


async def firing(settings: Settings) -> None:
    """checkout fails at 40%: the condition fires."""
    conn = await connect(settings)
    try:
        now = int(time.time() * 1000) - 5 * MINUTE
        await rollup(conn, now, "checkout", 100, 40)
        await evaluate(conn, (ERRORS,), now)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def dashboard(base_settings: Settings) -> Iterator[Dashboard]:
    schema = unique("t")
    settings = isolated(base_settings, schema)
    env = env_of(settings)
    try:
        done = tailpipe("migrate", env=env)
        assert done.returncode == 0, done.stderr
        run(firing(settings))
        with serving(env, READ, WRITE) as url:
            yield Dashboard(url, settings)
    finally:
        run(drop_schema(base_settings, schema))


def test_the_alerts_view_shows_states_and_changes_and_acts(
    browser: Browser, dashboard: Dashboard
) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "alerts")
    state = page.locator("[data-table=states] tbody tr[data-status=firing]")
    assert state.count() == 1
    assert state.get_attribute("data-state") == "checkout-errors:checkout"
    changes = page.locator("[data-table=changes] tbody tr")
    assert [changes.nth(i).get_attribute("data-after") for i in range(changes.count())] == [
        "firing", "pending",
    ]  # fmt: skip
    # A read token cannot act, and is told so.
    page.locator("[data-table=alerts] [data-action=ack]").first.click()
    note = page.locator("[data-role=alert-action]")
    note.filter(has_text="read-write token").wait_for()

    page, console = open_page(browser, dashboard)
    sign_in(page, WRITE)
    show(page, "alerts")
    page.locator("[data-table=alerts] [data-action=ack]").first.click()
    page.locator("[data-role=alert-action]").filter(has_text="Acknowledged").wait_for()
    page.locator("[data-table=states] [data-action=silence]").first.click()
    page.locator("[data-role=alert-action]").filter(has_text="Silenced").wait_for()
    body = dashboard.api("/api/alerts/states", READ, days=30)
    assert [(s["rule"], s["group_key"]) for s in body["silences"]] == [
        ("checkout-errors", "checkout")
    ]
    show(page, "overview")
    show(page, "alerts")
    assert page.locator("[data-table=silences] tbody tr").count() == 1
    assert console.unexpected() == []
