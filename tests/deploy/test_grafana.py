"""The Grafana dashboard (deploy/grafana): its layout, every PromQL name, label and job against
what the replicas, the API and the collector export (and the syntax through promtool), and
every SQL query run, Grafana's macros substituted as Grafana does, against data the real
pipeline stored."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import yaml

from pipeline.kafka import clients
from pipeline.settings import Settings
from pipeline.transform.rollup import TOTAL
from pipeline.transform.sketch import LatencySketch
from tests.conftest import ROOT, tool
from tests.support.promql import exported, promql_problems
from tests.support.replica import Replica, produce, wait_stored

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tailpipe.json"
PROMETHEUS, POSTGRES = "${datasource}", "${pg}"
N = 2000
SPAN = timedelta(hours=2)
NUMERIC = {"int2", "int4", "int8", "float4", "float8", "numeric"}


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any], uid: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query on the datasource variable `uid`."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("datasource", panel.get("datasource"))["uid"] == uid:
                yield panel["title"], target


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"one variable {name}"
    return found[0]


def test_layout() -> None:
    dashboard = load()
    assert (dashboard["uid"], dashboard["title"], dashboard["schemaVersion"]) == (
        "tailpipe", "tailpipe", 39,
    )  # fmt: skip
    assert variable(dashboard, "datasource")["type"] == "datasource"
    assert variable(dashboard, "datasource")["query"] == "prometheus"
    assert variable(dashboard, "pg")["type"] == "datasource"
    assert variable(dashboard, "pg")["query"] == "grafana-postgresql-datasource"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [p["title"] for p in panels(dashboard) if p["type"] == "row"]
    assert rows == ["Pipeline", "API and collector", "Business"]
    for panel in panels(dashboard):
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in (PROMETHEUS, POSTGRES), panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_provisioning() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/tailpipe.yaml").read_text())
    by_type = {d["type"]: d for d in datasources["datasources"]}
    assert by_type["prometheus"]["uid"] == "prometheus"
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    pg = by_type["grafana-postgresql-datasource"]
    assert (pg["uid"], pg["url"], pg["user"]) == ("postgres", "postgres:5432", "tailpipe_reader")
    assert pg["jsonData"]["database"] == "tailpipe"
    assert pg["secureJsonData"]["password"] == "${GRAFANA_PG_PASSWORD}"
    # TAILPIPE_* names are reserved for tailpipe's own settings.
    text = (GRAFANA / "provisioning/datasources/tailpipe.yaml").read_text()
    assert not re.search(r"\$(__env)?\{TAILPIPE_", text)
    dashboards = yaml.safe_load((GRAFANA / "provisioning/dashboards/tailpipe.yaml").read_text())
    [provider] = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --- Prometheus -----------------------------------------------------------------------------


def test_promql_problems_are_found() -> None:
    """The checker itself, on expressions that must fail and ones that must pass."""
    known = exported()
    assert (
        promql_problems("sum by (table) (rate(tailpipe_rows_written_total[5m]))", "", known) == []
    )
    assert promql_problems('sum(up{job="tailpipe"})', "", known) == []
    assert promql_problems("rate(tailpipe_rows_written[5m])", "", known) == [
        "tailpipe_rows_written is not exported"
    ]
    assert promql_problems("tailpipe_flush_duration_seconds", "", known) == [
        "tailpipe_flush_duration_seconds is not exported"
    ]
    assert promql_problems('tailpipe_dependency_up{kind="s3"}', "", known) == [
        "tailpipe_dependency_up has no label ['kind']"
    ]
    assert promql_problems("sum(rate(tailpipe_retries_total[1m])) by (reason)", "", known) == [
        "tailpipe_retries_total has no label ['reason']"
    ]
    assert promql_problems("sum by (rule) (tailpipe_alerts_total)", "{{kind}}", known) == [
        "legend '{{kind}}' names labels the aggregation drops"
    ]
    # Each series under the job of the process that exports it.
    assert (
        promql_problems('rate(tailpipe_api_requests_total{job="tailpipe-api"}[5m])', "", known)
        == []
    )
    assert promql_problems('tailpipe_api_requests_total{job="tailpipe"}', "", known) == [
        "tailpipe_api_requests_total is not exported by job 'tailpipe'"
    ]
    assert promql_problems('up{job="tailpipe-apis"}', "", known) == [
        "up: no scrape job 'tailpipe-apis'"
    ]
    assert promql_problems('tailpipe_collect_requests_total{path="/v1/tail"}', "", known) == [
        "tailpipe_collect_requests_total has no label ['path']"
    ]


def prometheus_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, expression, legend) of every PromQL in the dashboard, variables included."""
    found = [(f"{title}/{t['refId']}", t["expr"], t.get("legendFormat", ""))
             for title, t in queries(dashboard, PROMETHEUS)]  # fmt: skip
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query" and var["datasource"]["uid"] == PROMETHEUS:
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            call = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert call, f"${var['name']}: {query}"
            # Checked as the same name and label in an expression.
            found.append((f"${var['name']}", f"sum by ({call[2]}) ({call[1]})", ""))
    return found


def test_prometheus_queries_name_exported_series_and_labels() -> None:
    known = exported()
    problems = {
        where: found
        for where, expr, legend in prometheus_expressions(load())
        if (found := promql_problems(expr, legend, known))
    }
    assert problems == {}


def test_api_and_collector_panels_watch_requests_latency_and_errors() -> None:
    """The HTTP processes have their row: requests and latency by route of each, from their
    own metrics."""
    dashboard = load()
    row = [p for p in dashboard["panels"] if p["type"] == "row"]
    start = next(p["gridPos"]["y"] for p in row if p["title"] == "API and collector")
    end = next(p["gridPos"]["y"] for p in row if p["title"] == "Business")
    exprs = " ".join(
        t["expr"]
        for p in panels(dashboard)
        if p["type"] != "row" and start < p["gridPos"]["y"] < end
        for t in p["targets"]
    )
    for name in (
        "tailpipe_api_requests_total", "tailpipe_api_request_duration_seconds_bucket",
        "tailpipe_collect_requests_total", "tailpipe_collect_request_duration_seconds_bucket",
        "tailpipe_collect_rejects_total",
    ):  # fmt: skip
        assert name in exprs, name
    assert 'status="5xx"' in exprs
    assert "by (le, route)" in exprs


def test_prometheus_queries_parse(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule, Grafana's variables filled in."""
    promtool = tool("promtool")
    values = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "topic": ".*"}
    rules = []
    for number, (where, expr, _) in enumerate(prometheus_expressions(load())):
        filled = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m[1], m[0]), expr)
        assert "$" not in filled, f"{where}: unknown variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{number}", "expr": filled})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- PostgreSQL -----------------------------------------------------------------------------

_MACRO = re.compile(r"\$__(\w+)\(([^)]*)\)")  # as Grafana's: no parentheses inside the macro
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _literal(at: datetime) -> str:
    return "'" + at.astimezone(UTC).isoformat().replace("+00:00", "Z") + "'"


def quote(value: str) -> str:
    """A script name as Grafana puts a value of a variable with an All option into SQL."""
    return "'" + value.replace("'", "''") + "'"


def render(sql: str, start: datetime, end: datetime, script: str) -> str:
    """The SQL Grafana's PostgreSQL datasource runs. `$__timeGroup` gives epoch seconds there,
    which Grafana turns into times; here to_timestamp() does, so the column's type is checked."""

    def macro(m: re.Match[str]) -> str:
        name, args = m[1], [a.strip() for a in m[2].split(",")]
        if name == "timeFilter":
            return f"{args[0]} BETWEEN {_literal(start)} AND {_literal(end)}"
        if name in ("timeFrom", "timeTo"):
            return _literal(start if name == "timeFrom" else end)
        if name in ("timeGroup", "timeGroupAlias"):
            size = re.fullmatch(r"'?(\d+)([smhdw])'?", args[1])
            assert size, f"interval {args[1]} of {m[0]}"
            seconds = int(size[1]) * _UNIT_SECONDS[size[2]]
            group = f"to_timestamp(floor(extract(epoch FROM {args[0]}) / {seconds}) * {seconds})"
            return f'{group} AS "time"' if name == "timeGroupAlias" else group
        return m[0]  # unknown: left in place, so the check below names it

    out = _MACRO.sub(macro, sql)
    out = re.sub(r"\$\{script\}|\$script\b", lambda _: script, out)
    left = re.findall(r"\$\{?[A-Za-z_]\w*", out)
    assert not left, f"not substituted: {left} in {sql}"
    return out


def test_render_substitutes_every_macro_or_fails() -> None:
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    sql = render(
        "SELECT $__timeGroupAlias(t, '1h'), $__timeGroup(d, '1d', 0) FROM x"
        " WHERE $__timeFilter(t) AND a = ${script} AND b = $script AND c > $__timeFrom()",
        start, end, "'*'",
    )  # fmt: skip
    assert sql == (
        'SELECT to_timestamp(floor(extract(epoch FROM t) / 3600) * 3600) AS "time",'
        " to_timestamp(floor(extract(epoch FROM d) / 86400) * 86400) FROM x"
        " WHERE t BETWEEN '2025-01-01T00:00:00Z' AND '2025-01-02T00:00:00Z'"
        " AND a = '*' AND b = '*' AND c > '2025-01-01T00:00:00Z'"
    )
    for unknown in ("$__unixEpochFilter(t)", "$__interval", "$topic", "${other}"):
        with pytest.raises(AssertionError, match="not substituted"):
            render(f"SELECT 1 WHERE {unknown}", start, end, "'*'")


@pytest.fixture
async def stored(migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]) -> Settings:
    """N synthetic messages over the last two hours, stored by a real replica."""
    await clients.ensure_topics(migrated, {migrated.topic: 1, migrated.alerts_topic: 1})
    span_ms = int(SPAN.total_seconds() * 1000)
    now_ms = int(time.time() * 1000)
    produced = await produce(migrated, N, seed=23, start_ms=now_ms - span_ms, step_ms=span_ms // N)
    replicas.append(Replica(migrated))
    await wait_stored(db, migrated.topic, produced.count, 60)
    assert replicas[0].terminate() == 0
    return migrated


async def run_panels(
    db: asyncpg.Connection, start: datetime, end: datetime, script: str
) -> dict[str, list[asyncpg.Record]]:
    """Every PostgreSQL panel query, its result's columns checked for the panel's format."""
    results = {}
    for title, target in queries(load(), POSTGRES):
        sql = render(target["rawSql"], start, end, script)
        try:
            statement = await db.prepare(sql)
        except asyncpg.PostgresError as error:
            raise AssertionError(f"{title}: {error}\n{sql}") from error
        columns = {a.name: a.type.name for a in statement.get_attributes()}
        assert len(columns) == len(statement.get_attributes()), f"{title}: duplicate columns"
        rows = await statement.fetch()
        if target["format"] == "time_series":
            assert columns.pop("time", None) == "timestamptz", f"{title}: no time column"
            assert columns.pop("metric", "text") == "text", title
            assert columns, f"{title}: no values"
            assert set(columns.values()) <= NUMERIC, f"{title}: {columns}"
            times = [r["time"] for r in rows]
            assert times == sorted(times), f"{title}: Grafana needs rows in time order"
        else:
            assert target["format"] == "table", title
        results[title] = rows
    return results


async def test_sql_queries_run_on_stored_data(stored: Settings, db: asyncpg.Connection) -> None:
    end = datetime.now(UTC)
    start = end - SPAN * 3
    dashboard = load()
    script_variable = variable(dashboard, "script")
    # A custom All value goes into the SQL as is, so it carries its own quotes.
    all_scripts = script_variable["allValue"]
    assert all_scripts == quote(TOTAL)
    scripts = [r[0] for r in await db.fetch(render(script_variable["query"], start, end, ""))]
    assert "api-gateway" in scripts
    assert TOTAL not in scripts

    results = await run_panels(db, start, end, all_scripts)
    empty = sorted(title for title, rows in results.items() if not rows)
    assert empty == [], "no rows for the seeded data"
    await check_numbers(db, results, start, end, TOTAL)

    one = await run_panels(db, start, end, quote("api-gateway"))
    assert one["Requests per hour"]
    await check_numbers(db, one, start, end, "api-gateway")
    # The script's own totals rows, not every script's: the filter reaches the SQL.
    assert sum(r["requests"] for r in one["Requests per hour"]) < sum(
        r["requests"] for r in results["Requests per hour"]
    )


async def check_numbers(
    db: asyncpg.Connection,
    results: dict[str, list[asyncpg.Record]],
    start: datetime,
    end: datetime,
    script: str,
) -> None:
    """Panels against an independent computation over the raw rows."""
    raw = await db.fetch(
        "SELECT date_trunc('hour', ts) AS time, count(*) AS requests,"
        " count(*) FILTER (WHERE outcome <> 'ok') AS errors FROM tail_events"
        " WHERE date_trunc('hour', ts) BETWEEN $1 AND $2 AND ($3 = '*' OR script = $3)"
        " GROUP BY 1 ORDER BY 1",
        start, end, script,
    )  # fmt: skip
    assert [tuple(r) for r in results["Requests per hour"]] == [tuple(r) for r in raw]
    assert sum(r["requests"] for r in raw) == await db.fetchval(
        "SELECT count(*) FROM tail_events WHERE ($1 = '*' OR script = $1)", script
    )
    rates = {r["time"]: r["error_rate"] for r in results["Error rate per hour"]}
    assert rates == pytest.approx({r["time"]: r["errors"] / r["requests"] for r in raw})

    # The percentiles are the API's: its sketch merging, in SQL.
    sketches = await db.fetch(
        "SELECT hour, wall_sketch::text FROM tail_metrics_hourly WHERE script = $1"
        " AND event_type = '*' AND hour BETWEEN $2 AND $3 ORDER BY hour",
        script, start, end,
    )  # fmt: skip
    expected = []
    for hour, text in sketches:
        sketch = LatencySketch.from_json(orjson.loads(text))
        if sketch.count:
            expected.append((hour, *(sketch.quantile(q) for q in (0.5, 0.95, 0.99))))
    got = [tuple(r) for r in results["Wall time per hour"]]
    assert len(got) == len(expected) > 0
    for row, want in zip(got, expected, strict=True):
        assert row[0] == want[0]
        assert row[1:] == pytest.approx(want[1:], rel=1e-9)

    if script == TOTAL:
        cost = await db.fetchval(
            "SELECT sum(cost_usd)::float8 FROM api_calls_daily WHERE day BETWEEN $1 AND $2",
            start.date(), end.date(),
        )  # fmt: skip
        panel = [r["cost_usd"] for r in results["API cost per provider/model per day"]]
        assert cost > 0
        assert math.fsum(c for c in panel if c is not None) == pytest.approx(cost)
        since = start.replace(minute=0, second=0, microsecond=0)
        for error in results["Top error fingerprints"]:
            assert error["occurrences"] == await db.fetchval(
                "SELECT count(*) FROM tail_logs WHERE level = 'exception' AND fingerprint = $1"
                " AND ts >= $2",
                error["fingerprint"], since,
            )  # fmt: skip
