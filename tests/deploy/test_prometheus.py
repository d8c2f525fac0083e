"""A real Prometheus (Debian's) scrapes a real replica with deploy/'s scrape job and rules: the
exposition parses, the series arrive with the replica's counts, and every rule evaluates. The
same for the API and a collector with their jobs, and the dashboard's panels of them answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
import yaml

from pipeline.api.app import create_app as api_app
from pipeline.collector.app import create_app as collect_app
from pipeline.kafka import clients
from pipeline.settings import Settings
from tests.conftest import ROOT, free_port, tool
from tests.support.faults import wait_for
from tests.support.replica import Replica, produce, wait_stored

PROMETHEUS = ROOT / "deploy" / "prometheus"
TOKEN = "prometheus-test-token-0123456789"


class Prometheus:
    def __init__(self, directory: Path, targets: Mapping[str, int]) -> None:
        """deploy/'s configuration, with each job of `targets` pointed at this test's server
        on that port instead of compose's; the other tailpipe jobs left out."""
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        assert targets.keys() <= jobs.keys()
        config["scrape_configs"] = [
            j for name, j in jobs.items() if name in targets or not name.startswith("tailpipe")
        ]
        for name, port in targets.items():
            # The deploy job as it is, but for where it finds its targets.
            for key in [k for k in jobs[name] if k.endswith("_sd_configs")]:
                del jobs[name][key]
            jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        config["rule_files"] = [str(PROMETHEUS / f) for f in config["rule_files"]]
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = (directory / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                tool("prometheus"), f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log, stderr=self.log,
        )  # fmt: skip

    def api(self, path: str, **query: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, expr: str) -> float | None:
        try:
            result = self.api("query", query=expr)["result"]
        except OSError:  # not listening yet
            return None
        return float(result[0]["value"][1]) if result else None

    def values(self, expr: str) -> list[float]:
        return [float(r["value"][1]) for r in self.api("query", query=expr)["result"]]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


async def test_prometheus_scrapes_a_replica_and_evaluates_every_rule(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica], tmp_path: Path
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 2, settings.alerts_topic: 1})
    produced = await produce(settings, 1000, seed=41)
    replica = Replica(settings)
    replicas.append(replica)
    await wait_stored(db, settings.topic, produced.count, 90)
    prometheus = Prometheus(tmp_path, {"tailpipe": replica.port})
    try:
        await wait_for(lambda: prometheus.value('up{job="tailpipe"}') == 1, 60, "target up")
        await wait_for(
            lambda: prometheus.value("tailpipe_messages_total") == produced.count,
            30, "the replica's count, scraped",
        )  # fmt: skip
        await wait_for(
            lambda: prometheus.value("sum(tailpipe_consumer_lag_messages)") == 0,
            30, "lag scraped",
        )  # fmt: skip

        def evaluated() -> bool:
            groups = prometheus.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return bool(rules) and all(r.get("lastEvaluation", "").startswith("20") for r in rules)

        await wait_for(evaluated, 30, "every rule evaluated once")
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        assert {r["health"] for r in rules} == {"ok"}, [r.get("lastError") for r in rules]
        # A healthy replica: once a scrape is in (NoReplicas may be pending before the first),
        # no alert fires or is pending.
        await wait_for(lambda: prometheus.api("alerts")["alerts"] == [], 30, "no alerts")
    finally:
        prometheus.stop()


async def test_prometheus_scrapes_the_api_and_a_collector_and_their_panels_answer(
    migrated: Settings, tmp_path: Path
) -> None:
    settings = replace(migrated, api_read_tokens=(TOKEN,), collect_tokens=(TOKEN,))
    await clients.ensure_topics(settings, {settings.topic: 1})
    ports = {"tailpipe-api": free_port(), "tailpipe-collect": free_port()}
    apps = {"tailpipe-api": api_app(settings), "tailpipe-collect": collect_app(settings)}
    servers = [
        uvicorn.Server(uvicorn.Config(apps[job], host="127.0.0.1", port=ports[job],
                                      log_level="warning", lifespan="on"))
        for job in ports
    ]  # fmt: skip
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    prometheus = Prometheus(tmp_path, ports)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    event = {"scriptName": "api", "eventTimestamp": 1_764_000_000_000, "outcome": "ok",
             "event": {"request": {"url": "https://x/", "method": "GET"}}, "logs": [],
             "exceptions": []}  # fmt: skip

    async def traffic() -> None:
        api = f"http://127.0.0.1:{ports['tailpipe-api']}"
        collect = f"http://127.0.0.1:{ports['tailpipe-collect']}"
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    await client.get(f"{api}/api/logs/recent", params={"hours": 1}, headers=auth)
                    await client.get(f"{api}/api/logs/errors", headers={"Authorization": "no"})
                    await client.get(f"{api}/nowhere")
                    await client.post(f"{collect}/v1/tail", json=[event], headers=auth)
                    await client.post(f"{collect}/v1/tail", content=b"{", headers=auth)
                await asyncio.sleep(0.05)

    def up(job: str) -> bool:
        return prometheus.value(f'up{{job="{job}"}}') == 1

    sending = asyncio.create_task(traffic())
    try:
        for job in ports:
            await wait_for(partial(up, job), 60, job)
        await wait_for(
            lambda: (prometheus.value(
                'sum(tailpipe_api_requests_total{job="tailpipe-api",'
                'route="/api/logs/recent",status="2xx"})') or 0) > 0
            and (prometheus.value(
                'sum(tailpipe_collect_requests_total{job="tailpipe-collect",'
                'route="/v1/tail",status="2xx"})') or 0) > 0,
            30, "requests by route and status, scraped",
        )  # fmt: skip
        exprs = panel_expressions("tailpipe_api_", "tailpipe_collect_")
        assert len(exprs) >= 8

        def answering(expr: str) -> bool:
            # A route nobody asked for has no latency (NaN, not drawn); those asked for have.
            return any(math.isfinite(v) for v in prometheus.values(expr))

        for expr in exprs:
            await wait_for(partial(answering, expr), 30, f"an answer to {expr}")
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        prometheus.stop()
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)


def panel_expressions(*prefixes: str) -> list[str]:
    """The dashboard's PromQL on series of these prefixes, Grafana's variables filled in."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/tailpipe.json").read_text())
    exprs = [
        t["expr"].replace("$__rate_interval", "1m")
        for panel in dashboard["panels"]
        for t in panel.get("targets", [])
        if any(prefix in t.get("expr", "") for prefix in prefixes)
    ]
    assert all("$" not in e for e in exprs), exprs
    return exprs
