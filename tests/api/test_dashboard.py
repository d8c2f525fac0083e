"""The web dashboard in a real browser: Debian's Chromium, driven by Playwright, against
`tailpipe api` on the real stack, filled by `tailpipe loadgen` through a real replica. Every
number a view shows is checked against what the API returns; each view is saved as a
screenshot under .local/screenshots/ (desktop, and phone in dark mode)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from pipeline.postgres.connect import connect
from pipeline.settings import Settings
from tests.conftest import (
    ROOT,
    drop_schema,
    env_of,
    isolated,
    tailpipe,
    tool,
    unique,
)
from tests.support.api import serving
from tests.support.replica import Replica, wait_stored

# Its module fixtures start services against the local stack.
pytestmark = pytest.mark.stack

READ, WRITE = "dash-read-token-0123456789", "dash-write-token-0123456789"
N = 3000
SPAN_MS = 20 * 3_600_000
SHOTS = ROOT / ".local" / "screenshots"
VIEWS = ("overview", "errors", "logs", "usage", "scans", "alerts")
UNNAMED = 6


@dataclass(frozen=True)
class Dashboard:
    url: str
    settings: Settings

    def api(self, path: str, token: str = READ, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        request = urllib.request.Request(
            f"{self.url}{path}?{query}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to its end from these sync tests. In a thread of its own: Playwright's
    sync API keeps an event loop running in this one, so asyncio.run cannot start here."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def _wait_stored(settings: Settings, n: int, deadline_s: float) -> None:
    async def wait() -> None:
        conn = await connect(settings)
        try:
            await wait_stored(conn, settings.topic, n, deadline_s)
        finally:
            await conn.close()

    run(wait())


def _fill(settings: Settings, count: int, start_ms: int, step_ms: int, seed: int) -> None:
    """`tailpipe loadgen` into the topic (a replica started afterwards stores it)."""
    env = env_of(settings)
    done = tailpipe("loadgen", "--count", str(count), "--seed", str(seed), "--start-ms",
                    str(start_ms), "--step-ms", str(step_ms), env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr


def _fill_unnamed(settings: Settings, count: int) -> None:
    """Invocations whose producer named no script (`scriptName: null`), over the last hours."""
    now = int(time.time() * 1000)
    items = [
        {"scriptName": None, "outcome": "exception" if n % 2 else "ok", "wallTime": 10 + n,
         "eventTimestamp": now - n * 600_000, "event": {"cron": "* * * * *"},
         "logs": [{"level": "error", "message": [f"job {n} failed"], "timestamp": now}],
         "exceptions": [{"name": "Error", "message": f"job {n}", "timestamp": now}]}
        for n in range(count)
    ]  # fmt: skip
    stdin = "\n".join(json.dumps(item) for item in items)
    done = tailpipe("produce", "-", env=env_of(settings), stdin=stdin)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def dashboard(base_settings: Settings) -> Iterator[Dashboard]:
    schema = unique("t")
    settings = isolated(base_settings, schema)
    env = env_of(settings)
    try:
        for argv in (["migrate"], ["topics", "create", "--partitions", "3"]):
            done = tailpipe(*argv, env=env)
            assert done.returncode == 0, done.stderr
        _fill(settings, N, int(time.time() * 1000) - SPAN_MS, SPAN_MS // N, seed=9)
        _fill_unnamed(settings, UNNAMED)
        replica = Replica(settings)
        try:
            _wait_stored(settings, N + UNNAMED, 120)
        finally:
            assert replica.terminate() == 0
        with serving(env, READ, WRITE) as url:
            yield Dashboard(url, settings)
    finally:
        run(drop_schema(base_settings, schema))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = tool("chromium")
    with sync_playwright() as p:
        # --no-sandbox: the tests may run as root, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()


class Console:
    """Every console error and uncaught exception of a page, so a test can say there were none
    (or only the refusals it caused on purpose)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def unexpected(self, *allowed_statuses: int) -> list[str]:
        refused = tuple(f"status of {s} " for s in allowed_statuses)
        return [e for e in self.errors if not (refused and any(r in e for r in refused))]


def open_page(browser: Browser, dashboard: Dashboard, **context: Any) -> tuple[Page, Console]:
    page = browser.new_context(viewport={"width": 1280, "height": 800}, **context).new_page()
    console = Console(page)
    page.goto(dashboard.url + "/")
    return page, console


def sign_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#signin-form button[type=submit]")


def show(page: Page, view: str) -> None:
    page.evaluate("view => { location.hash = view }", view)
    page.wait_for_selector(f"#view[data-view={view}][data-state=ready]")


def figure(page: Page, name: str) -> float:
    value = page.get_attribute(f'[data-stat="{name}"]', "data-value")
    assert value not in (None, ""), name
    return float(value)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# -- the views, signed in with a write token, at 1280x800 -----------------------------------


def test_sign_in_and_the_overview_shows_the_api_numbers(
    browser: Browser, dashboard: Dashboard
) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    page.wait_for_selector("#view[data-view=overview][data-state=ready]")
    assert page.is_hidden("#signin")
    perf = dashboard.api("/api/logs/performance", hours=24)["overall"]
    assert figure(page, "requests") == perf["requests"] > 0
    assert figure(page, "errors") == perf["errors"]
    assert figure(page, "error-rate") == pytest.approx(perf["error_rate"])
    for q in ("p50", "p95", "p99"):
        assert figure(page, q) == pytest.approx(perf["wall_ms"][q])
    top = dashboard.api("/api/logs/scripts", hours=24, limit=10)["scripts"]
    rows = page.locator("[data-table=top-scripts] tbody tr")
    assert rows.count() == len(top)
    assert [rows.nth(i).get_attribute("data-script") for i in range(len(top))] == [
        s["script"] for s in top
    ]
    assert page.locator(".chart svg path.line").count() >= 5
    # The token lives in this tab's session storage only.
    assert page.evaluate("sessionStorage.getItem('tailpipe.token')") == READ
    assert page.evaluate("localStorage.length") == 0
    background, text = colours(page)
    assert _luminance(text) < 0.1 < 0.9 < _luminance(background), "light mode: dark on light"
    shot(page, "overview")
    assert console.unexpected() == []


def test_a_bad_token_is_refused_with_a_message(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, "not-a-token")
    page.wait_for_selector("#signin-error:has-text('That token was refused.')")
    assert page.is_hidden("#app")
    assert page.evaluate("sessionStorage.getItem('tailpipe.token')") is None
    shot(page, "signin-refused")
    assert console.unexpected(401) == []


def test_script_filter_and_range_picker(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    page.wait_for_selector("#view[data-view=overview][data-state=ready]")
    page.select_option("#script", "api-gateway")
    page.wait_for_selector("#view[data-state=ready]")
    mine = dashboard.api("/api/logs/performance", hours=24, script="api-gateway")["overall"]
    # (Playwright's expect polls from outside: the page's CSP forbids evaluating strings.)
    expect(page.locator("[data-stat=requests]")).to_have_attribute(
        "data-value", str(mine["requests"])
    )
    page.select_option("#script", "")
    page.select_option("#range", "1")
    hour = dashboard.api("/api/logs/performance", hours=1)["overall"]
    expect(page.locator("[data-stat=requests]")).to_have_attribute(
        "data-value", str(hour["requests"])
    )
    assert console.unexpected() == []


def test_the_unnamed_script_can_be_picked_in_every_view(
    browser: Browser, dashboard: Dashboard
) -> None:
    """Invocations without a script name are listed as `(unnamed)`, and every view filtered to
    it loads: no request is refused (a 4xx is a console error here)."""
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    page.wait_for_selector("#view[data-view=overview][data-state=ready]")
    assert "(unnamed)" in page.locator("#script option").all_inner_texts()
    page.select_option("#script", "(unnamed)")
    page.wait_for_selector("#view[data-state=ready]")
    mine = dashboard.api("/api/logs/performance", hours=24, script="(unnamed)")["overall"]
    assert mine["requests"] == UNNAMED
    expect(page.locator("[data-stat=requests]")).to_have_attribute("data-value", str(UNNAMED))
    for view in ("errors", "scans", "alerts", "logs"):
        show(page, view)
    rows = page.locator("#view tbody tr")
    assert rows.count() > 0
    assert set(page.locator("#view tbody tr td:nth-child(3)").all_inner_texts()) == {"(unnamed)"}
    assert console.unexpected() == []


def test_errors_view_and_resolving_an_error(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, WRITE)
    show(page, "errors")
    groups = dashboard.api("/api/logs/errors", hours=24, limit=50)["errors"]
    cards = page.locator("article.error-group")
    assert cards.count() == len(groups) > 0
    first, group = cards.first, groups[0]
    assert first.get_attribute("data-fingerprint") == group["fingerprint"]
    assert (
        float(first.locator(".occurrences").get_attribute("data-value") or -1)
        == (group["occurrences"])
    )
    first.locator("summary").click()
    assert group["sample_message"] in first.locator("pre.sample").inner_text()
    shot(page, "errors")

    first.locator("[data-action=resolved]").click()
    first.locator("[data-role=status]:has-text('resolved')").wait_for()
    status = {e["fingerprint"]: e["status"]
              for e in dashboard.api("/api/logs/errors", hours=24, limit=50)["errors"]}  # fmt: skip
    assert status[group["fingerprint"]] == "resolved"
    first.locator("[data-action=open]").click()
    first.locator("[data-role=status]:has-text('open')").wait_for()
    status = {e["fingerprint"]: e["status"]
              for e in dashboard.api("/api/logs/errors", hours=24, limit=50)["errors"]}  # fmt: skip
    assert status[group["fingerprint"]] == "open"
    assert console.unexpected() == []


def test_a_read_token_cannot_change_a_status(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "errors")
    first = page.locator("article.error-group").first
    first.locator("[data-action=ignored]").click()
    first.locator("[role=alert]:has-text('needs a write token')").wait_for()
    assert first.locator("[data-role=status]").inner_text() == "open"
    assert console.unexpected(403) == []


def test_logs_view_filters_pages_and_live_tail(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "logs")
    newest = dashboard.api("/api/logs/recent", hours=24, limit=50)
    rows = page.locator("[data-table=logs] tbody tr")
    assert rows.count() == len(newest["logs"]) == 50
    assert rows.first.get_attribute("data-ts") == newest["logs"][0]["ts"]
    shot(page, "logs")

    page.select_option("select[name=level]", "error")
    page.fill("input[name=q]", "")
    page.click(".filters button[type=submit]")
    errors = dashboard.api("/api/logs/recent", hours=24, limit=50, level="error")
    expect(page.locator("[data-table=logs] tbody tr:not([data-level=error])")).to_have_count(0)
    expect(rows).to_have_count(len(errors["logs"]))
    assert errors["next_cursor"], "enough error lines for a second page"
    page.click("[data-action=older]")
    page.wait_for_selector("[data-role=page]:has-text('page 2')")
    second = dashboard.api("/api/logs/recent", hours=24, limit=50, level="error",
                           cursor=errors["next_cursor"])  # fmt: skip
    assert rows.first.get_attribute("data-ts") == second["logs"][0]["ts"]
    page.click("[data-action=newest]")
    page.wait_for_selector("[data-role=page]:has-text('page 1')")

    # Live: new lines stored while the view is open show up on top by themselves.
    page.select_option("select[name=level]", "")
    page.click(".filters button[type=submit]")
    page.check("input[name=live]")
    start = int(time.time() * 1000)
    _fill(dashboard.settings, 30, start, 10, seed=10)
    replica = Replica(dashboard.settings)
    try:
        _wait_stored(dashboard.settings, N + 30, 60)
    finally:
        assert replica.terminate() == 0
    newest_shown = rows.first
    deadline = time.monotonic() + 20
    while _ms(newest_shown.get_attribute("data-ts")) < start:  # the live tail's next refresh
        assert time.monotonic() < deadline, "the new lines never showed up"
        page.wait_for_timeout(250)
    assert console.unexpected() == []


def test_logs_view_filters_by_release(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "logs")
    newest = dashboard.api("/api/logs/recent", hours=24, limit=50)["logs"]
    release = next(line["release"] for line in newest if line["release"])
    expected = dashboard.api("/api/logs/recent", hours=24, limit=50, release=release)["logs"]
    page.fill("input[name=release]", release)
    page.click(".filters button[type=submit]")
    rows = page.locator("[data-table=logs] tbody tr")
    expect(rows).to_have_count(len(expected))
    expect(
        page.locator(f"[data-table=logs] [data-role=release]:has-text('{release}')")
    ).to_have_count(len(expected))
    page.fill("input[name=release]", "")
    page.click(".filters button[type=submit]")
    expect(rows).to_have_count(len(newest))
    assert console.unexpected() == []


def test_errors_view_filters_by_release(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "errors")
    exceptions = dashboard.api("/api/logs/recent", hours=24, limit=200, level="exception")
    release = next(line["release"] for line in exceptions["logs"] if line["release"])
    groups = dashboard.api("/api/logs/errors", hours=24, limit=50, release=release)["errors"]
    assert groups
    page.fill("input[name=release]", release)
    page.click(".filters button[type=submit]")
    cards = page.locator("article.error-group")
    expect(cards).to_have_count(len(groups))
    for card, group in zip(cards.all(), groups, strict=True):
        assert card.get_attribute("data-fingerprint") == group["fingerprint"]
    assert console.unexpected() == []


def test_usage_scans_and_alerts_views(browser: Browser, dashboard: Dashboard) -> None:
    page, console = open_page(browser, dashboard)
    sign_in(page, READ)
    show(page, "usage")
    usage = dashboard.api("/api/logs/api-usage", hours=24)
    assert figure(page, "calls") == usage["total"]["calls"] > 0
    assert figure(page, "cost") == pytest.approx(usage["total"]["cost_usd"])
    assert page.locator("[data-table=usage] tbody tr").count() == len(usage["by_model"])
    # Rate-limit readings apart from the calls: the newest per provider.
    shown_limits = page.locator("[data-table=rate-limits] tbody tr")
    assert shown_limits.count() == len({r["provider"] for r in usage["rate_limits"]}) > 0
    assert page.is_disabled("#script"), "API usage is not recorded per script"
    shot(page, "usage")

    show(page, "scans")
    scans = dashboard.api("/api/logs/scan-activity", hours=24)["total"]
    assert figure(page, "started") == scans["started"] > 0
    assert figure(page, "completed") == scans["completed"]
    assert figure(page, "failed") == scans["failed"]
    shot(page, "scans")

    show(page, "alerts")
    alerts = dashboard.api("/api/logs/critical-alerts", hours=24, limit=200)["alerts"]
    assert figure(page, "alerts") == len(alerts) > 0
    shown = page.locator("[data-table=alerts] tbody tr")
    assert [shown.nth(i).get_attribute("data-alert") for i in range(shown.count())] == [
        a["id"] for a in alerts
    ]
    shot(page, "alerts")
    assert console.unexpected() == []


# -- a phone in dark mode ------------------------------------------------------------------


def test_every_view_fits_a_phone_in_dark_mode(browser: Browser, dashboard: Dashboard) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True,
        has_touch=True, device_scale_factor=2,
    )  # fmt: skip
    page = context.new_page()
    console = Console(page)
    page.goto(dashboard.url + "/")
    sign_in(page, READ)
    page.wait_for_selector("#view[data-view=overview][data-state=ready]")
    for view in VIEWS:
        show(page, view)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{view} is {overflow}px wider than the phone"
        background, text = colours(page)
        assert _luminance(background) < 0.1 < 0.6 < _luminance(text), (view, background, text)
        shot(page, f"phone-dark-{view}")
    context.close()
    assert console.unexpected() == []


def _ms(iso: str | None) -> int:
    assert iso is not None
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def colours(page: Page) -> tuple[str, str]:
    """The page's background and text colours, as computed."""
    found: list[str] = page.evaluate(
        "[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]"
    )
    return found[0], found[1]


def _luminance(css: str) -> float:
    r, g, b = (int(x) / 255 for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
