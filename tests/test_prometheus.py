"""A real Prometheus (Debian's) scrapes a real replica with deploy/'s scrape job and rules: the
exposition parses, the series arrive with the replica's counts, and every rule evaluates."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from pipeline import kafka
from pipeline.settings import Settings
from tests.conftest import ROOT, free_port, tool
from tests.faults import wait_for
from tests.replica import Replica, produce, wait_stored

PROMETHEUS = ROOT / "deploy" / "prometheus"


class Prometheus:
    def __init__(self, directory: Path, replica_port: int) -> None:
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
        [job] = [j for j in config["scrape_configs"] if j["job_name"] == "tailpipe"]
        # The deploy job as it is, pointed at this test's replica instead of compose's.
        job["static_configs"] = [{"targets": [f"127.0.0.1:{replica_port}"]}]
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

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


async def test_prometheus_scrapes_a_replica_and_evaluates_every_rule(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica], tmp_path: Path
) -> None:
    settings = migrated
    await kafka.ensure_topics(settings, {settings.topic: 2, settings.alerts_topic: 1})
    produced = await produce(settings, 1000, seed=41)
    replica = Replica(settings)
    replicas.append(replica)
    await wait_stored(db, settings.topic, produced.count, 90)
    prometheus = Prometheus(tmp_path, replica.port)
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
