"""The files under deploy/ cannot drift from the code: every one parses, and every setting,
command, port and metric name it mentions exists. The real checkers have the last word:
promtool and docker-compose (installed by `stack.py tools`, which `make test` runs) and
systemd-analyze. Kubernetes and Grafana have their own files: test_k8s, test_grafana.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import asyncpg
import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.kafka import synth
from pipeline.settings import Settings, env_name, load
from tests.conftest import ROOT, env_of, tool
from tests.support.promql import exported, exported_by_job, promql_problems
from tests.support.replica import START

DEPLOY = ROOT / "deploy"
RUNBOOK = ROOT / "docs" / "operations.md"
# Not ours to check: the local test stack (its own TAILPIPE_LOCAL_* ports) and the Cloudflare
# worker, a producer with its own bindings.
ELSEWHERE = ("local", "cloudflare")
NOT_METRICS = {"tailpipe_reader"}  # the read-only PostgreSQL role of Grafana's panels

SETTINGS = {env_name(f.name) for f in dataclasses.fields(Settings)} | {"TAILPIPE_CONFIG"}
DEFAULTS = Settings()


def deploy_files(*, everything: bool = False) -> list[Path]:
    """The files that deploy tailpipe (or, with `everything`, every file under deploy/)."""
    return sorted(
        p for p in DEPLOY.rglob("*")
        if p.is_file() and (everything or p.relative_to(DEPLOY).parts[0] not in ELSEWHERE)
    )  # fmt: skip


def parse_command(argv: list[str]) -> None:
    """A `tailpipe ...` command line as the CLI would take it; argparse exits on a bad one."""
    assert argv[0] == "tailpipe", argv
    build_parser().parse_args(argv[1:])


# -- every file parses; names are real -----------------------------------------------------


@pytest.mark.parametrize(
    "path", deploy_files(everything=True), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_every_deploy_file_parses(path: Path) -> None:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        assert list(yaml.safe_load_all(text))
    elif path.suffix == ".json":
        json.loads(text)
    elif path.suffix == ".toml":
        tomllib.loads(text)
    elif path.name == "Dockerfile":
        assert dockerfile(path)
    elif path.suffix == ".service":
        assert unit(path)["Service"]["ExecStart"]
    elif path.name.endswith(".env.example"):
        assert env_file(path)
    elif path.suffix == ".xml":
        ElementTree.fromstring(text)
    elif path.suffix == ".py":
        compile(text, str(path), "exec")
    elif path.suffix == ".js":
        node = tool("node")
        done = subprocess.run([node, "--check", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    else:
        # A kind of file nobody checks would be a file that can silently break.
        assert path.suffix in (".md", ".properties", ".sql"), f"no check for {path.name}"


def test_every_setting_named_in_deploy_exists() -> None:
    for path in deploy_files():
        for name in set(re.findall(r"\bTAILPIPE_[A-Z0-9_]+\b", path.read_text())):
            assert name in SETTINGS, f"{path.relative_to(ROOT)} names {name}: no such setting"


def test_every_metric_named_in_deploy_is_exported() -> None:
    known = exported()
    seen = set()
    for path in deploy_files():
        for name in set(re.findall(r"\btailpipe_[a-z0-9_]+\b", path.read_text())) - NOT_METRICS:
            assert name in known, f"{path.relative_to(ROOT)}: {name} is not exported"
            seen.add(name)
    # The rules and the dashboard between them watch the signals the runbook is about.
    assert {
        "tailpipe_consumer_lag_messages", "tailpipe_last_flush_timestamp_seconds",
        "tailpipe_dead_letters_total", "tailpipe_guard_rail_tripped",
        "tailpipe_flush_failures_total", "tailpipe_flush_duration_seconds_bucket",
        # and the HTTP processes' requests and latencies
        "tailpipe_api_requests_total", "tailpipe_api_request_duration_seconds_bucket",
        "tailpipe_collect_requests_total", "tailpipe_collect_request_duration_seconds_bucket",
    } <= seen  # fmt: skip


# -- Prometheus --------------------------------------------------------------------------------

RULES = DEPLOY / "prometheus" / "rules" / "tailpipe.rules.yml"


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_use_real_series_and_labels_and_have_a_runbook_entry() -> None:
    known = exported()
    runbook = RUNBOOK.read_text()
    names = [rule["alert"] for rule in alert_rules()]
    wanted = {
        "TailpipeLagGrowing", "TailpipeNoProgress", "TailpipeDeadLetterRate",
        "TailpipeGuardRailTripped", "TailpipeFlushFailures", "TailpipeReplicaDown",
    }  # fmt: skip
    assert wanted <= set(names)
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert promql_problems(rule["expr"], "", known) == [], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        anchor = rule["annotations"]["runbook"].partition("#")[2]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in runbook, f"no runbook entry for {rule['alert']}"


def test_scrape_targets_use_the_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "tailpipe"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    compose = compose_file()["services"]
    replicas = [n for n, s in compose.items() if s.get("command") == ["run"]]
    port = compose["consumer-1"]["environment"]["TAILPIPE_METRICS_PORT"]
    assert sorted(targets) == sorted(f"{name}:{port}" for name in replicas)
    for path in (RULES, DEPLOY / "prometheus" / "prometheus-kubernetes.yml"):
        assert 'job="tailpipe"' in RULES.read_text()
        assert path.exists()


def test_the_api_and_the_collectors_are_scraped_on_their_own_ports() -> None:
    """One job per process kind, named as the rules and the dashboard name them, in both
    configurations: the compose stack's API at its port, the collectors at theirs."""
    prom = DEPLOY / "prometheus"
    jobs = set(exported_by_job())
    compose = compose_file()["services"]
    for path in (prom / "prometheus.yml", prom / "prometheus-kubernetes.yml"):
        config = yaml.safe_load(path.read_text())
        named = {j["job_name"] for j in config["scrape_configs"]}
        assert jobs <= named, path.name
        assert all(
            j.get("metrics_path", "/metrics") == "/metrics" for j in config["scrape_configs"]
        )
    config = yaml.safe_load((prom / "prometheus.yml").read_text())
    by_name = {j["job_name"]: j for j in config["scrape_configs"]}
    api_port = compose["api"]["environment"]["TAILPIPE_API_PORT"]
    [group] = by_name["tailpipe-api"]["static_configs"]
    assert group["targets"] == [f"api:{api_port}"]
    [sd] = by_name["tailpipe-collect"]["dns_sd_configs"]
    assert sd["port"] == DEFAULTS.collect_port
    # Every job a rule or a panel selects is one of them.
    dashboard = (DEPLOY / "grafana" / "dashboards" / "tailpipe.json").read_text()
    for text in (RULES.read_text(), dashboard):
        used = set(re.findall(r'\bjob\s*=\s*\\?"([\w-]+)', text))  # JSON escapes its quotes
        assert used, "a job is selected somewhere"
        assert used <= jobs, used - jobs


def test_promtool_checks_config_and_rules_and_runs_the_rule_tests() -> None:
    prom = DEPLOY / "prometheus"
    for argv in (
        ["check", "config", str(prom / "prometheus.yml")],
        ["check", "rules", str(RULES)],
        ["test", "rules", str(prom / "rules" / "tailpipe.test.yml")],
    ):
        done = subprocess.run(
            [tool("promtool"), *argv], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


# -- Docker --------------------------------------------------------------------------------------


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines)
        if word and not word.startswith("#")
    ]


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"not exec form: {args}"
    return [str(x) for x in parsed]


def test_dockerfile_multi_stage_non_root_with_a_healthcheck() -> None:
    steps = dockerfile(DEPLOY / "Dockerfile")
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) >= 2, "multi-stage: build tools stay out of the image"
    final = steps[stages[-1] :]
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage sets a user"
    assert users[-1] not in ("root", "0")
    env = dict(
        (k, v) for word, args in final if word == "ENV"
        for k, v in re.findall(r"(\w+)=(\S+)", args)
    )  # fmt: skip
    exposed = {int(p) for word, args in final if word == "EXPOSE" for p in args.split()}
    assert int(env["TAILPIPE_METRICS_PORT"]) in exposed
    assert int(env["TAILPIPE_API_PORT"]) in exposed
    [health] = [args for word, args in final if word == "HEALTHCHECK"]
    entry = exec_form(next(args for word, args in final if word == "ENTRYPOINT"))
    assert entry == ["tailpipe"]
    parse_command(exec_form(health.partition("CMD")[2].strip()))
    parse_command(entry + exec_form(next(args for word, args in final if word == "CMD")))
    load(environ={k: v for k, v in env.items() if k.startswith("TAILPIPE_")})
    # Every COPY from the build context names something the context (.dockerignore) lets in.
    admitted = docker_context()
    for word, args in steps:
        if word == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert any(p == source or p.startswith(source + "/") for p in admitted), source


def docker_context() -> set[str]:
    """The files `docker build` sends, by .dockerignore (which admits by name: `*` then `!x`)."""
    rules = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert rules[0] == "*", "the context starts empty and admits by name"
    admitted = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {f for f in tracked if any(f == a or f.startswith(a + "/") for a in admitted)}


# -- Compose -----------------------------------------------------------------------------------


def compose_file() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


def _interpolate(value: str) -> str:
    """Compose's `${NAME:-default}`, as run with nothing set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_wires_every_service_with_real_settings_and_commands() -> None:
    services = compose_file()["services"]
    wanted = {"kafka", "postgres", "s3", "api", "prometheus", "grafana"}
    assert wanted <= services.keys()
    replicas = [s for s in services.values() if s.get("command") == ["run"]]
    assert len(replicas) == 2
    for name, service in services.items():
        if service.get("image", "").startswith("tailpipe:"):
            parse_command(["tailpipe", *service["command"]])
            env = {k: _interpolate(str(v)) for k, v in service["environment"].items()}
            load(environ=env)  # raises on a value the settings refuse
            if "healthcheck" in service and not service["healthcheck"].get("disable"):
                test = service["healthcheck"]["test"]
                assert test[0] == "CMD"
                parse_command(test[1:])
                if test[1:3] == ["tailpipe", "probe"] and "--port" in test:
                    assert test[test.index("--port") + 1] == env["TAILPIPE_API_PORT"], name
    for replica in replicas:
        grace = float(replica["environment"]["TAILPIPE_SHUTDOWN_GRACE"])
        assert _seconds(replica["stop_grace_period"]) > grace
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"], "KRaft, no ZooKeeper"


def _seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(s|m)", duration).groups()  # type: ignore[union-attr]
    return float(value) * (60 if unit == "m" else 1)


def test_docker_compose_accepts_the_file() -> None:
    done = subprocess.run(
        [tool("docker-compose"), "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# -- systemd -----------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current[key] = value
    return sections


def env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.partition("=") for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )  # fmt: skip
    return {key: value for key, _, value in pairs}


def test_systemd_units_run_real_commands_and_outlast_the_shutdown_grace() -> None:
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert units
    env = env_file(DEPLOY / "systemd" / "tailpipe.env.example")
    settings = load(environ=env)
    for path in units:
        service = unit(path)["Service"]
        argv = shlex.split(service["ExecStart"])
        parse_command(["tailpipe", *argv[1:]])
        assert service["User"] != "root"
        assert service["KillSignal"] == "SIGTERM"
        assert service["RestartPreventExitStatus"] == "2", "a bad setting is not retried"
        if argv[1] == "run":
            assert float(service["TimeoutStopSec"]) > settings.shutdown_grace


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # It checks the binary exists: point ExecStart at this checkout's, nothing else changes.
    here = shutil.which("tailpipe") or str(ROOT / ".venv" / "bin" / "tailpipe")
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace("/opt/tailpipe/bin/tailpipe", here))
        done = subprocess.run(
            [tool("systemd-analyze"), "verify", str(copy)],
            capture_output=True,
            text=True,
            check=False,
        )
        # It only warns about a value it cannot parse: any output at all is a failure.
        assert done.returncode == 0, done.stderr
        assert not done.stderr.strip(), done.stderr


def test_the_image_install_carries_migrations_data_and_static_files(
    settings: Settings, tmp_path: Path
) -> None:
    """What the Dockerfile does, minus Docker: a wheel built from exactly the files the build
    context admits, installed apart from this checkout, migrates a database and decodes."""
    context = tmp_path / "context"
    for name in docker_context():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
    python = str(ROOT / ".venv" / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(context)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("tailpipe-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    installed = site / "pipeline"
    assert sorted(p.name for p in (installed / "_schema").glob("*.sql")) == sorted(
        p.name for p in (ROOT / "schema").glob("*.sql")
    )
    assert (installed / "api" / "static" / "swagger-ui" / "swagger-ui-bundle.js").is_file()
    assert (installed / "api" / "static" / "dashboard" / "index.html").is_file()
    assert (installed / "alerts" / "rules.toml").is_file()

    # Run from elsewhere, so nothing of this checkout can be imported by accident.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), **env_of(settings)}

    def tailpipe(*argv: str, stdin: str = "") -> str:
        done = subprocess.run([python, "-m", "pipeline", *argv], cwd=tmp_path, env=env,
                              input=stdin, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = tailpipe_from(python, env, tmp_path)
    assert where.startswith(str(site)), where
    assert "0006_" in tailpipe("migrate")
    message = next(synth.messages(5, START)).value.decode()
    assert '"tail_events"' in tailpipe("inspect", "-", stdin=message + "\n")


def tailpipe_from(python: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [python, "-c", "import pipeline; print(pipeline.__file__)"],
        cwd=cwd, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


async def test_grafana_reader_role_reads_what_tailpipe_creates_and_writes_nothing(
    db: asyncpg.Connection,
) -> None:
    """The compose init script, run for real inside a transaction that is rolled back."""
    script = (DEPLOY / "postgres" / "init" / "10-grafana-reader.sql").read_text()
    tx = db.transaction()
    await tx.start()
    try:
        await db.execute(script)
        await db.execute("CREATE TABLE public.reader_probe (n int)")  # as tailpipe, afterwards
        await db.execute("INSERT INTO public.reader_probe VALUES (1)")
        await db.execute("SET LOCAL ROLE tailpipe_reader")
        assert await db.fetchval("SELECT n FROM public.reader_probe") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute("INSERT INTO public.reader_probe VALUES (2)")
    finally:
        await tx.rollback()
