#!/usr/bin/env python3
"""Run the local Kafka + PostgreSQL + S3 (moto) stack that tailpipe's tests talk to.

    .venv/bin/python deploy/local/stack.py up|down|status [kafka|postgres|s3 ...]
    .venv/bin/python deploy/local/stack.py tools
    .venv/bin/python deploy/local/stack.py workerd
    .venv/bin/python deploy/local/stack.py wrangler
    .venv/bin/python deploy/local/stack.py otel-js

With no server names the command applies to all three. Tests stop and start one server
(`down postgres`, then `up postgres`) to make a real outage. `tools` installs, from Debian's
packages when they are missing, what tests use besides the stack: Prometheus and promtool,
docker-compose and systemd-analyze (the deploy checks), and Chromium (the dashboard tests);
and the pinned Workers runtime, wrangler and OpenTelemetry JS SDK. `workerd` installs only that
runtime, from npm into .local/workerd (once per lock file), and prints the path of its binary;
`wrangler` likewise installs the pinned wrangler into .local/wrangler and prints the path of its
entry script (run it with `node`); `otel-js` installs the pinned OpenTelemetry JS SDK and its
OTLP/HTTP exporters into .local/otel-js and prints that directory (a script imports them from
it).

All state lives under <repo>/.local/ (logs/<name>.log, run/<name>.pid, kafka/, postgres/).
Only the standard library is imported at module level; aiokafka and botocore are imported by
the readiness probes, so run it with the project's virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
LOCAL = HERE.parents[1] / ".local"
LOGS, RUN, KAFKA, PG = LOCAL / "logs", LOCAL / "run", LOCAL / "kafka", LOCAL / "postgres"
LIBS, PG_DATA, PG_RUN = KAFKA / "libs", PG / "data", PG / "run"
WORKERD_PIN, WORKERD = HERE / "workerd", LOCAL / "workerd"  # package.json + lock; the install
WRANGLER_PIN, WRANGLER = HERE / "wrangler", LOCAL / "wrangler"  # the same for wrangler
OTEL_JS_PIN, OTEL_JS = HERE / "otel-js", LOCAL / "otel-js"  # and for the OpenTelemetry JS SDK
IS_ROOT = os.geteuid() == 0
PG_USER = "postgres"  # PostgreSQL refuses to run as root, so root runs it as this user
KAFKA_PORT = int(os.environ.get("TAILPIPE_LOCAL_KAFKA_PORT", "19092"))
CONTROLLER_PORT = int(os.environ.get("TAILPIPE_LOCAL_KAFKA_CONTROLLER_PORT", "19093"))
PG_PORT = int(os.environ.get("TAILPIPE_LOCAL_POSTGRES_PORT", "15432"))
S3_PORT = int(os.environ.get("TAILPIPE_LOCAL_S3_PORT", "19000"))
PG_DSN = os.environ.get("TAILPIPE_POSTGRES_DSN", "")
PG_CONN = ["-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "tailpipe", "-d", "postgres"]
S3_URL = f"http://127.0.0.1:{S3_PORT}"
_apt_lock = threading.Lock()  # servers are prepared in parallel, but dpkg runs one at a time


class StackError(Exception):
    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    deadline_s: float
    marker: str  # must be in /proc/<pid>/cmdline, so a recycled pid is never taken for ours
    launch: Callable[[], None]  # prepare and start; returns once the process exists
    probe: Callable[[], bool]  # one quick readiness check; never raises
    stop: Callable[[int | None], None]
    after_ready: Callable[[], None] = lambda: None
    pid_file: Path | None = None  # default .local/run/<name>.pid
    external: bool = False  # run by someone else: only probed

    def pid(self) -> int | None:
        if self.external:
            return None
        try:
            pid = int((self.pid_file or RUN / f"{self.name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if self.marker.encode() in cmdline(pid) else None


# ---------------------------------------------------------------- processes and tools
def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()  # empty for a zombie
    except OSError:
        return b""


def run_logged(log: Path, cmd: list[str], env: dict[str, str] | None = None) -> None:
    with log.open("ab") as out:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                              cwd=LOCAL, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise StackError(f"`{shlex.join(cmd)}` exited {proc.returncode}", log)


def spawn(name: str, cmd: list[str]) -> None:
    # Own session, so `down` can kill the whole group; stdio never inherited, since CI waits
    # for its stdout to close and a server holding it open would hang the job.
    with (LOGS / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                cwd=LOCAL, start_new_session=True)  # fmt: skip
    (RUN / f"{name}.pid").write_text(f"{proc.pid}\n")


def terminate(pid: int, marker: str, grace_s: float) -> None:
    """SIGTERM the process group, SIGKILL it after grace_s; wait until the leader is gone."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:  # not a group leader after all: signal the pid alone
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if wait_until(lambda: marker.encode() not in cmdline(pid), wait_s) is None:
            break
    with contextlib.suppress(ProcessLookupError):  # children that outlived their leader
        os.killpg(pid, signal.SIGKILL)


def wait_until(
    check: Callable[[], bool], deadline_s: float, alive: Callable[[], bool] = lambda: True
) -> str | None:
    """Poll check until it passes (None), or say why not: the process died or time ran out."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return None
        if not alive():
            return "exited"
        time.sleep(0.25)
    return f"not ready after {deadline_s:.0f} s"


def apt_install(*packages: str) -> None:
    if not IS_ROOT:
        raise StackError(f"{' '.join(packages)} missing, and only root may apt-get install it")
    with _apt_lock:
        print(f"installing {' '.join(packages)} with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run_logged(LOGS / "apt.log", ["apt-get", "update"], env)
        run_logged(LOGS / "apt.log", ["apt-get", "install", "-y", *packages], env)


def tool(cmd: str, package: str) -> str:
    if shutil.which(cmd) is None:
        apt_install(package)
    if (path := shutil.which(cmd)) is None:
        raise StackError(f"{cmd} still missing after installing {package}")
    return path


# ---------------------------------------------------------------- kafka
def resolve_kafka_jars(log: Path) -> None:
    pom = HERE / "pom.xml"
    marker = LIBS / ".pom-sha256"  # keyed by the pom, so editing it re-resolves
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if marker.is_file() and marker.read_text().strip() == digest and any(LIBS.glob("*.jar")):
        return
    shutil.rmtree(LIBS, ignore_errors=True)  # jars of an older pom must leave the classpath
    goal = ["dependency:copy-dependencies", f"-DoutputDirectory={LIBS}", "-DincludeScope=runtime"]
    mvn = [tool("mvn", "maven"), "-q", "-B", "-Dstyle.color=never", "-f", str(pom)]
    run_logged(log, [*mvn, *goal])
    marker.write_text(digest + "\n")


def java(main: str, *args: str, heap: str) -> list[str]:
    flags = [f"-Xms{heap}", f"-Xmx{heap}", "-Djava.awt.headless=true"]
    log4j = f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}"
    classpath = str(LIBS / "*")  # java expands the `*` itself: no shell involved
    return [tool("java", "default-jre-headless"), *flags, log4j, "-cp", classpath, main, *args]


def write_kafka_properties() -> Path:
    props = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{CONTROLLER_PORT}",
        "listeners": f"PLAINTEXT://127.0.0.1:{KAFKA_PORT},CONTROLLER://127.0.0.1:{CONTROLLER_PORT}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{KAFKA_PORT}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": KAFKA / "data",
        "auto.create.topics.enable": "false",  # tests and the pipeline create topics explicitly
        # A single broker: every internal topic must be satisfied by one replica.
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 10,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,  # no 3 s pause before a group's first join
    }
    path = KAFKA / "server.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
    return path


def cluster_id() -> str:
    """A random KRaft cluster id, as Kafka's `Uuid.randomUuid()` makes them: URL-safe base64
    of 16 bytes, never starting with "-", which the storage tool would take for an option."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def kafka_launch() -> None:
    log = LOGS / "kafka.log"
    log.write_text("")  # a fresh log per launch: a failure tail must show this attempt
    resolve_kafka_jars(log)
    props = str(write_kafka_properties())
    if not (KAFKA / "data" / "meta.properties").exists():  # format once, never over data
        fmt = ["format", "-t", cluster_id(), "-c", props]
        run_logged(log, java("kafka.tools.StorageTool", *fmt, heap="256m"))
    spawn("kafka", java("kafka.Kafka", props, heap="512m"))


def kafka_probe() -> bool:
    import logging

    from aiokafka.client import AIOKafkaClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refusals are expected at boot

    async def probe() -> bool:
        client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}")
        try:
            await client.bootstrap()  # connects and fetches the cluster metadata
            return bool(client.cluster.brokers())
        finally:
            await client.close()

    try:
        return asyncio.run(asyncio.wait_for(probe(), 5))
    except Exception:
        return False


# ---------------------------------------------------------------- postgres
def pg_bin(name: str, install: bool = False) -> str:
    """name from the newest /usr/lib/postgresql/<version>/bin that has it."""

    def newest() -> Path | None:
        found = [d / name for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / name).exists()]
        version = lambda p: [int(x) for x in p.parts[-3].split(".") if x.isdigit()]  # noqa: E731
        return max(found, key=version, default=None)

    if newest() is None and install:
        apt_install("postgresql", "postgresql-contrib")
    if (path := newest()) is None:
        raise StackError(f"no {name} in /usr/lib/postgresql/*/bin")
    return str(path)


def as_pg(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if IS_ROOT else cmd


def give_to_postgres_user(log: Path) -> None:
    # The postgres user must reach .local/postgres and write .local/logs; CI clones into a
    # `mktemp -d` directory (mode 700), so add o+x to each ancestor that lacks it.
    for d in [LOGS, *LOGS.parents]:
        if not (mode := d.stat().st_mode) & stat.S_IXOTH:
            d.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            print(f"postgres: added o+x to {d} so the {PG_USER} user can reach .local")
    for path in (PG, PG_DATA, PG_RUN, log):
        shutil.chown(path, PG_USER, PG_USER)


def pg_launch() -> None:
    if PG_DSN:  # someone else's server: we only need pg_isready to probe it
        pg_bin("pg_isready", install=True)
        return
    pg_ctl, log = pg_bin("pg_ctl", install=True), LOGS / "postgres.log"
    for d in (PG_DATA, PG_RUN):
        d.mkdir(parents=True, exist_ok=True)
    log.write_text("")  # a fresh log per launch: a failure tail must show this attempt
    if IS_ROOT:
        give_to_postgres_user(log)
    PG_DATA.chmod(0o700)  # postgres refuses a data directory that others can read
    if not (PG_DATA / "PG_VERSION").exists():
        initdb = [pg_bin("initdb"), "-D", str(PG_DATA), "-U", "tailpipe", "-A", "trust"]
        run_logged(log, as_pg([*initdb, "-E", "UTF8", "--no-locale"]))
    opts = f"-c listen_addresses=127.0.0.1 -p {PG_PORT} -k {shlex.quote(str(PG_RUN))}"
    # -w returns once the server accepts connections (we run in our own thread, beside the
    # other servers); postgres detaches itself into its own session and appends to the log.
    start = ["start", "-w", "-t", "30", "-D", str(PG_DATA), "-l", str(log), "-o", opts]
    run_logged(log, as_pg([pg_ctl, *start]))


def pg_probe() -> bool:
    try:
        cmd = [pg_bin("pg_isready"), "-q", "-t", "2", *(["-d", PG_DSN] if PG_DSN else PG_CONN)]
    except StackError:
        return False
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False).returncode == 0


def pg_after_ready() -> None:
    if PG_DSN:
        return
    pid = (PG_DATA / "postmaster.pid").read_text().split()[0]
    (RUN / "postgres.pid").write_text(f"{pid}\n")  # a copy beside the other servers' pids
    psql = [pg_bin("psql"), "-X", *PG_CONN, "-tAc"]
    query = "SELECT 1 FROM pg_database WHERE datname = 'tailpipe'"
    found = subprocess.run([*psql, query], capture_output=True, text=True, check=False)
    if found.stdout.strip() != "1":
        run_logged(LOGS / "postgres.log", [*psql, "CREATE DATABASE tailpipe"])


def pg_stop(pid: int | None) -> None:
    if not PG_DSN and (PG_DATA / "postmaster.pid").exists():
        stop = [pg_bin("pg_ctl"), "stop", "-m", "fast", "-t", "30", "-D", str(PG_DATA)]
        subprocess.run(as_pg(stop), capture_output=True, cwd=LOCAL, check=False)
    if pid is not None:  # in case pg_ctl could not stop it; also sweeps the process group
        terminate(pid, "postgres", 10.0)


# ---------------------------------------------------------------- s3 (moto)
def dlq_bucket() -> str:
    url = urlparse(os.environ.get("TAILPIPE_DLQ_URL", ""))
    return url.netloc if url.scheme == "s3" and url.netloc else "tailpipe-dlq"


def s3_client() -> Any:
    import botocore.session
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
    return botocore.session.get_session().create_client(
        "s3", "us-east-1", endpoint_url=S3_URL, config=config,
        aws_access_key_id="tailpipe", aws_secret_access_key="tailpipe",  # moto takes any
    )  # fmt: skip


def s3_launch() -> None:
    moto = Path(sys.executable).parent / "moto_server"  # from the project's dev extras
    if not moto.exists():
        raise StackError(f"{moto} missing: run `pip install -e '.[dev]'` in the virtualenv")
    (LOGS / "s3.log").write_text("")
    spawn("s3", [str(moto), "-H", "127.0.0.1", "-p", str(S3_PORT)])


def s3_probe() -> bool:
    try:
        s3_client().list_buckets()
        return True
    except Exception:
        return False


def s3_create_bucket() -> None:
    from botocore.exceptions import ClientError

    try:
        s3_client().create_bucket(Bucket=dlq_bucket())
    except ClientError as e:  # an existing bucket is just what we want
        if e.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise


def by_signal(marker: str, grace_s: float) -> Callable[[int | None], None]:
    def stop(pid: int | None) -> None:
        if pid is not None:
            terminate(pid, marker, grace_s)

    return stop


def redact(dsn: str) -> str:
    """The DSN without its password, fit to print."""
    dsn = re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)


PG_ADDRESS = f"postgresql://tailpipe@127.0.0.1:{PG_PORT}/tailpipe"
PG_ADDRESS = f"{redact(PG_DSN)} (TAILPIPE_POSTGRES_DSN)" if PG_DSN else PG_ADDRESS
SERVERS = [
    Server("kafka", f"127.0.0.1:{KAFKA_PORT}", 90, "kafka.Kafka", kafka_launch, kafka_probe,
           by_signal("kafka.Kafka", 20)),
    Server("postgres", PG_ADDRESS, 30, "postgres", pg_launch, pg_probe, pg_stop, pg_after_ready,
           pid_file=PG_DATA / "postmaster.pid", external=bool(PG_DSN)),
    Server("s3", f"{S3_URL} (bucket {dlq_bucket()})", 30, "moto_server", s3_launch, s3_probe,
           by_signal("moto_server", 10), s3_create_bucket),
]  # fmt: skip


# ---------------------------------------------------------------- commands
def up(s: Server) -> tuple[bool, str]:
    pid = s.pid()
    if pid is not None and s.probe():
        s.after_ready()
        return True, f"{s.name}: already running (pid {pid}) at {s.address}"
    try:
        if pid is None:  # else it is still starting: only wait for it
            (RUN / f"{s.name}.pid").unlink(missing_ok=True)  # stale
            s.launch()
        if failure := wait_until(s.probe, s.deadline_s, lambda: s.external or bool(s.pid())):
            log = None if s.external else LOGS / f"{s.name}.log"
            raise StackError(f"{failure} ({s.address})", log)
        s.after_ready()
    except StackError as e:
        s.stop(s.pid())  # leave no half-started server behind
        raise StackError(f"{s.name}: {e}", e.log) from e
    return True, f"{s.name}: ready at {s.address}" + ("" if s.external else f" (pid {s.pid()})")


def down(s: Server) -> tuple[bool, str]:
    if s.external:
        return True, f"{s.name}: external ({s.address}), not ours to stop"
    pid = s.pid()
    s.stop(pid)
    (RUN / f"{s.name}.pid").unlink(missing_ok=True)
    return True, f"{s.name}: stopped (pid {pid})" if pid else f"{s.name}: not running"


def status(s: Server) -> tuple[bool, str]:
    pid = s.pid()
    if pid is None and not s.external:
        return False, f"{s.name}: stopped"
    ready = s.probe()
    where = "external" if s.external else f"running (pid {pid})"
    return ready, f"{s.name}: {where}, {'ready' if ready else 'NOT ready'} at {s.address}"


def run_all(action: Callable[[Server], tuple[bool, str]], servers: list[Server]) -> bool:
    """Run action on every server at once: start-up and shutdown are mostly waiting."""
    all_ok = True
    with ThreadPoolExecutor(len(servers)) as pool:
        for future in as_completed([pool.submit(action, s) for s in servers]):
            try:
                ok, line = future.result()
                print(line, flush=True)
            except StackError as e:
                ok = False
                report(e)
            all_ok = all_ok and ok
    return all_ok


def report(e: StackError) -> None:
    print(e, file=sys.stderr, flush=True)
    if e.log is None or not e.log.exists():
        return
    lines = e.log.read_text(errors="replace").splitlines()
    # The cause is often far above the tail (Kafka logs its whole shutdown after a fatal error).
    errors = [line for line in lines[:-40] if "ERROR" in line or "FATAL" in line][:5]
    if errors:
        print(f"--- first errors in {e.log}:", *errors, sep="\n", file=sys.stderr)
    tail = lines[-40:]
    print(f"--- last {len(tail)} lines of {e.log}:", *tail, "---", sep="\n", file=sys.stderr)


TOOLS = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "docker-compose": "docker-compose",
    "systemd-analyze": "systemd",
    "chromium": "chromium",
}
"""Commands the tests run besides the stack, and the Debian package of each."""


def tools() -> int:
    """The Debian tools of TOOLS, then the pinned workerd, wrangler and OpenTelemetry JS SDK; 1
    if any could not be had."""
    status = 0
    if missing := sorted({package for cmd, package in TOOLS.items() if shutil.which(cmd) is None}):
        LOGS.mkdir(parents=True, exist_ok=True)
        try:
            apt_install("--no-install-recommends", *missing)
        except StackError as exc:
            print(f"test tools not installed: {exc}; see {LOGS / 'apt.log'}", file=sys.stderr)
            status = 1
    for name, install in (("workerd", workerd), ("wrangler", wrangler), ("otel-js", otel_js)):
        try:
            install()
        except StackError as exc:
            print(f"{name} not installed: {exc}", file=sys.stderr)
            status = 1
    return status


# ---------------------------------------------------------------- workerd (npm)
_NPM_PLATFORMS = {
    ("linux", "x86_64"): "linux-64",
    ("linux", "amd64"): "linux-64",
    ("linux", "aarch64"): "linux-arm64",
    ("linux", "arm64"): "linux-arm64",
    ("darwin", "x86_64"): "darwin-64",
    ("darwin", "arm64"): "darwin-arm64",
}
"""(system, machine) -> the suffix of the npm package `@cloudflare/workerd-<suffix>`."""


def workerd_binary() -> Path:
    """Where the installed runtime's binary is: the platform package's own executable.

    Not `node_modules/.bin/workerd`: without the `workerd` package's postinstall script that
    is a Node.js shim which starts this same binary as a child, one process more to signal."""
    key = (os.uname().sysname.lower(), os.uname().machine.lower())
    if key not in _NPM_PLATFORMS:
        raise StackError(f"no workerd package for {key[0]} on {key[1]}")
    package = WORKERD / "node_modules" / "@cloudflare" / f"workerd-{_NPM_PLATFORMS[key]}"
    return package / "bin" / "workerd"


def workerd() -> Path:
    """Install the workerd pinned in deploy/local/workerd/ into .local/workerd, unless that
    lock file is installed already, and return the binary (the real-runtime tests run it).

    `npm ci` installs exactly what the lock file names, from the npm registry (or npm's cache).
    `--ignore-scripts`: the `workerd` package's only script (postinstall) swaps its Node.js
    shim for a hard link to the platform binary, which workerd_binary() runs directly anyway;
    so nothing runs at install time, and npm's `allowScripts` policy changes nothing."""
    return npm_ci(WORKERD_PIN, WORKERD, workerd_binary(), lambda b: [str(b), "--version"])


# ---------------------------------------------------------------- wrangler (npm)
def wrangler() -> Path:
    """Install the wrangler pinned in deploy/local/wrangler/ into .local/wrangler, unless that
    lock file is installed already, and return its entry script, `bin/wrangler.js`: what
    `npx wrangler` runs, with `node` (tests/test_wrangler.py runs `wrangler dev`).

    The pin is the last wrangler whose `engines` accept Node.js 20 (later ones need 22); it
    brings its own workerd. `--ignore-scripts` skips three postinstall scripts, none needed:
    workerd's and esbuild's only swap their Node.js shim for the platform binary (both find
    that binary without it), and sharp's (image resizing for Images bindings) builds nothing
    when its prebuilt platform package is installed."""
    entry = WRANGLER / "node_modules" / "wrangler" / "bin" / "wrangler.js"
    node = tool("node", "nodejs")
    return npm_ci(WRANGLER_PIN, WRANGLER, entry, lambda e: [node, str(e), "--version"])


# ---------------------------------------------------------------- OpenTelemetry JS (npm)
_OTEL_JS_CHECK = """
const fs = require("fs"), path = require("path"), dir = process.argv[1];
const json = (...parts) => JSON.parse(fs.readFileSync(path.join(dir, ...parts)));
const load = require("module").createRequire(path.join(dir, "package.json"));
const names = Object.keys(json("package.json").dependencies);
const loaded = (n) => (load(n), `${n} ${json("node_modules", n, "package.json").version}`);
console.log(names.map(loaded).join(", "));
"""
"""Loads every package the pin names, as the test's script will, and prints their versions."""


def otel_js() -> Path:
    """Install the OpenTelemetry JS SDK pinned in deploy/local/otel-js/ into .local/otel-js,
    unless that lock file is installed already, and return that directory: a script imports
    the packages from it (tests/collector/otel_js_export.mjs, which
    tests/collector/test_otel_js.py runs with `node` against `tailpipe collect`).

    The pin is the last release line whose `engines` accept Node.js 20 (0.223.x of the
    experimental packages, 2.12.x of the stable ones; later ones need 22.15), with the newest
    @opentelemetry/api that line's SDK accepts (below 1.10). None of its packages has an
    install script; `--ignore-scripts` keeps it so."""
    node = tool("node", "nodejs")
    entry = OTEL_JS / "node_modules" / "@opentelemetry" / "sdk-trace-base" / "package.json"
    npm_ci(OTEL_JS_PIN, OTEL_JS, entry, lambda _: [node, "-e", _OTEL_JS_CHECK, str(OTEL_JS)])
    return OTEL_JS


def npm_ci(pin: Path, dest: Path, entry: Path, version: Callable[[Path], list[str]]) -> Path:
    """Install the package.json + package-lock.json of `pin` into `dest` with `npm ci`, unless
    that lock file is installed there already; return `entry`, once the `version` command run on
    it has succeeded (a marker holding the lock's hash records that; no network then).

    `npm ci` installs exactly what the lock file names, from the npm registry (or npm's cache).
    `--ignore-scripts`: nothing runs at install time, so npm's `allowScripts` policy changes
    nothing (each caller says why its packages need no script). npm's output goes to
    .local/logs/<dest>-install.log."""
    files = [pin / "package.json", pin / "package-lock.json"]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    marker = dest / ".lock-sha256"
    if marker.is_file() and marker.read_text().strip() == digest and entry.is_file():
        return entry
    shutil.rmtree(dest, ignore_errors=True)  # an older pin's packages must not linger
    dest.mkdir(parents=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f.name)
    log = LOGS / f"{dest.name}-install.log"
    log.write_text("")
    npm = [tool("npm", "npm"), "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
    with log.open("ab") as out:
        done = subprocess.run(npm, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              cwd=dest, check=False)  # fmt: skip
    if done.returncode != 0:
        raise StackError(f"`{shlex.join(npm)}` exited {done.returncode}", log)
    argv = version(entry)
    # No telemetry, and wrangler's user config (metrics consent, logs) kept inside `dest`.
    env = {**os.environ, "WRANGLER_SEND_METRICS": "false", "XDG_CONFIG_HOME": str(dest / "config")}
    checked = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if checked.returncode != 0:
        raise StackError(f"`{shlex.join(argv)}` exited {checked.returncode}: {checked.stderr}")
    marker.write_text(digest + "\n")
    print(f"installed {checked.stdout.strip()} at {entry}", file=sys.stderr, flush=True)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = ["up", "down", "status", "tools", "workerd", "wrangler", "otel-js"]
    parser.add_argument("command", choices=commands)
    names = [s.name for s in SERVERS]
    # Not `choices=`: Python 3.11's argparse checks an empty `nargs="*"` list against them too.
    parser.add_argument("servers", nargs="*", metavar="server",
                        help=f"any of {', '.join(names)} (default: all)")  # fmt: skip
    args = parser.parse_args()
    if unknown := [n for n in args.servers if n not in names]:
        choices = ", ".join(map(repr, names))
        parser.error(f"argument server: invalid choice: {unknown[0]!r} (choose from {choices})")
    command = args.command
    if command == "tools":
        return tools()
    installers = {"workerd": workerd, "wrangler": wrangler, "otel-js": otel_js}
    if command in installers:
        try:
            print(installers[command]())
        except StackError as exc:
            report(exc)
            return 1
        return 0
    servers = [s for s in SERVERS if not args.servers or s.name in args.servers]
    for d in (LOGS, RUN):
        d.mkdir(parents=True, exist_ok=True)
    action = {"up": up, "down": down, "status": status}[command]
    if run_all(action, servers):
        return 0
    return 3 if command == "status" else 1


if __name__ == "__main__":
    sys.exit(main())
