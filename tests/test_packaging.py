"""A normal install runs every command: what `pipeline` imports, the package declares.

Two checks, the cheap one first:

- Statically: every third-party module imported anywhere under pipeline/ (at the top of a
  module or lazily inside a function; not under `if TYPE_CHECKING:`, which never runs) belongs
  to a distribution named in `[project] dependencies`. The next undeclared import fails here
  in a second, without building anything.
- For real: the wheel built from exactly the files the Docker build context admits is
  installed the way deploy/Dockerfile installs it (its own `pip install` line, so with every
  dependency, into a fresh virtualenv with no dev extras; unlike the image, pip's cache stays
  on). In that virtualenv every module of the installed `pipeline` imports,
  `pip check` passes, and every subcommand runs far enough to load its settings and to import
  what it imports lazily: the services it needs are a closed port, so most stop on their
  DependencyError (exit 1, one line), the servers are started and stopped with SIGTERM.

tests/deploy/test_deploy.py's image test installs the same wheel with `--no-deps` into the dev
environment, which has every dev tool: it cannot see a missing dependency. This one can.

The commands run in the fresh virtualenv (`P` is a closed port; `commands()` and `SERVERS`
below are the source of truth, and the test checks that they cover every subcommand and
action the installed `tailpipe --help` lists; all but the first four run at once):

    python -m venv V; V/bin/pip install --only-binary=... tailpipe-*.whl   (the Dockerfile's)
    V/bin/python -c "...kafka_extensions_loaded..."                         (the Dockerfile's)
    V/bin/python -m pip check
    V/bin/python -c <import every module of the installed pipeline>
    tailpipe --help; tailpipe --version; python -m pipeline --version
    tailpipe <command> --help                                   for each of the 14 commands
    tailpipe config                                             -> 0, the settings
    TAILPIPE_BATCH_MAX_ROWS=abc tailpipe config                 -> 2, one line naming it
    tailpipe check                                              -> 1, FAILED lines
    tailpipe migrate | run | retention --keep-days 7
             | dlq list | dlq replay --dry-run                  -> 1, PostgreSQL unreachable
    tailpipe topics create | produce FILE | loadgen --count 1   -> 1, Kafka did not answer
    tailpipe alerts forward                                     -> 2, no destinations file
    TAILPIPE_ALERT_DESTINATIONS=F tailpipe alerts forward       -> 1, Kafka unreachable
    TAILPIPE_ALERT_DESTINATIONS=F tailpipe alerts test outcome  -> 1, not delivered
    tailpipe inspect FILE                                       -> 0, the rows of a message
    tailpipe probe ready --port P                               -> 1, unreachable
    tailpipe api --host 127.0.0.1         (serving: /healthz 200) then SIGTERM -> clean exit
    tailpipe collect --host 127.0.0.1     (serving: /healthz 200) then SIGTERM -> clean exit
    tailpipe probe live --port <api's port>, while it serves    -> 0
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.kafka import synth
from tests.conftest import ROOT, free_port
from tests.support.replica import START

PYPROJECT = ROOT / "pyproject.toml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


# -- statically: every import is declared -------------------------------------------------------


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies() -> set[str]:
    """The canonical distribution names of `[project] dependencies`."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    names = set()
    for requirement in project["dependencies"]:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, f"cannot read the name of {requirement!r}"
        names.add(_canonical(match.group(1)))
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in `source` that can run: module level and
    lazy ones in functions alike, but not those under `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def third_party_imports() -> dict[str, set[str]]:
    """Third-party top-level module -> the files under pipeline/ that import it."""
    where: dict[str, set[str]] = {}
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for module in imported_modules(path.read_text()):
            if module in sys.stdlib_module_names or module in ("__future__", "pipeline"):
                continue
            where.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return where


def test_the_import_scan_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    source = (
        "import os, alpha.beta\n"
        "from gamma.delta import x\n"
        "from . import sibling\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import stubs_only\n"
        "else:\n"
        "    import runtime_branch\n"
        "def later():\n"
        "    import lazy_one\n"
        "    class K:\n"
        "        def m(self):\n"
        "            from lazy_two.sub import y\n"
    )
    assert imported_modules(source) == {
        "os", "alpha", "gamma", "typing", "runtime_branch", "lazy_one", "lazy_two"
    }  # fmt: skip


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """`pip install tailpipe` must install everything `pipeline` imports. A module counts as
    declared when a distribution that provides it (per this environment's installed
    metadata) is in `[project] dependencies`; a dev extra does not count."""
    providers = importlib.metadata.packages_distributions()
    declared = declared_dependencies()
    imports = third_party_imports()
    assert {"aiokafka", "asyncpg", "orjson"} <= imports.keys()  # the scan found something
    problems = []
    for module, files in sorted(imports.items()):
        distributions = providers.get(module)
        if not distributions:
            problems.append(f"{module} (imported by {', '.join(sorted(files))}) is not installed")
        elif not declared & {_canonical(d) for d in distributions}:
            problems.append(
                f"{module} (imported by {', '.join(sorted(files))}) comes from "
                f"{' or '.join(sorted(distributions))}, not in [project] dependencies"
            )
    assert not problems, "\n".join(problems)


# -- for real: the wheel, installed as the image installs it ------------------------------------


def context_files() -> list[str]:
    """The files `docker build` sends, read from the working tree by .dockerignore: `*`, then
    `!path` admits, other patterns exclude; the last rule that matches a path or one of its
    parent directories wins. (From the tree, not from git: a new module is in the image at
    once, committed or not.)"""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the context starts empty and admits by name"

    def admitted(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for rule in rules:
            pattern = rule.removeprefix("!").rstrip("/")
            if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
                verdict = rule.startswith("!")
        return verdict

    tops = sorted({rule[1:].split("/")[0] for rule in rules if rule.startswith("!")})
    candidates = [
        path
        for top in map(ROOT.joinpath, tops)
        for path in ([top] if top.is_file() else sorted(top.rglob("*")))
        if path.is_file()
    ]
    return [name for p in candidates if admitted(name := str(p.relative_to(ROOT)))]


def test_the_context_is_what_the_image_copies() -> None:
    files = context_files()
    wanted = {"pyproject.toml", "README.md", "pipeline/cli.py", "pipeline/alerts/rules.toml"}
    assert wanted <= set(files)
    assert any(f.startswith("schema/") and f.endswith(".sql") for f in files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert "deploy/packaging/native_hook.py" in files  # builds pipeline/native
    assert not [f for f in files if f.startswith(("tests/", ".venv/", ".local/"))]
    assert [f for f in files if f.startswith("deploy/")] == ["deploy/packaging/native_hook.py"]


@dataclass(frozen=True)
class ImageInstall:
    """How deploy/Dockerfile's build stage makes its virtualenv, read from the file."""

    venv: str  # /opt/tailpipe
    install: list[str]  # pip install ... .
    then: list[list[str]]  # the commands after `&&`: the image's own checks

    @classmethod
    def read(cls) -> ImageInstall:
        from tests.deploy.test_deploy import dockerfile

        runs = [args for word, args in dockerfile(DOCKERFILE) if word == "RUN"]
        [create] = [shlex.split(r) for r in runs if "-m venv" in r]
        assert create[:3] == ["python", "-m", "venv"], create
        [install] = [r for r in runs if "pip install" in r]
        first, *then = (shlex.split(part) for part in install.split("&&"))
        assert first[:2] == [f"{create[3]}/bin/pip", "install"], first
        assert first[-1] == ".", "the image installs its build context (WORKDIR /src)"
        return cls(create[3], first, then)

    def commands(self, venv: Path, wheel: Path) -> list[list[str]]:
        """The same commands for a virtualenv at `venv`, installing `wheel` instead of `.`."""

        def moved(argv: list[str]) -> list[str]:
            return [a.replace(self.venv + "/", f"{venv}/", 1) for a in argv]

        return [moved([*self.install[:-1], str(wheel)]), *map(moved, self.then)]


@dataclass
class Install:
    venv: Path
    work: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def tailpipe(self) -> str:
        return str(self.venv / "bin" / "tailpipe")

    def env(self, **settings: str) -> dict[str, str]:
        """A clean environment: this virtualenv's bin first, no PYTHONPATH, no user site, no
        TAILPIPE_* from the caller, HOME a scratch directory."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.work),
            "LANG": "C.UTF-8",
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **settings,
        }


def _timed(
    timings: dict[str, float], what: str, argv: list[str], env: dict[str, str], cwd: Path
) -> str:
    started = time.monotonic()
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    timings[what] = round(time.monotonic() - started, 1)
    command = shlex.join(argv)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    """The wheel of the Docker build context, installed with its dependencies into a fresh
    virtualenv by deploy/Dockerfile's own pip command; then the image's own checks."""
    base = tmp_path_factory.mktemp("packaging")
    context = base / "context"
    for name in context_files():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
    timings: dict[str, float] = {}
    # pip's own environment, minus anything that would leak this checkout or the dev venv.
    # Its cache stays on (the image turns it off; a test should not download twice).
    pip_env = {
        k: v for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_NO_CACHE_DIR")
    }  # fmt: skip
    pip_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # The native core's dependencies compiled once, by `make`: only the crate is built again.
    pip_env["CARGO_TARGET_DIR"] = str(ROOT / ".local" / "cargo-target")
    dev_pip = [sys.executable, "-m", "pip", "-q"]
    dist = base / "dist"
    build = [*dev_pip, "wheel", "--no-deps", "-w", str(dist), str(context)]
    _timed(timings, "build the wheel", build, pip_env, base)
    [wheel] = dist.glob("tailpipe-*.whl")
    venv = base / "venv"
    _timed(timings, "python -m venv", [sys.executable, "-m", "venv", str(venv)], pip_env, base)
    image = ImageInstall.read()
    for n, argv in enumerate(image.commands(venv, wheel)):
        what = "pip install (the Dockerfile's)" if n == 0 else f"the Dockerfile's check {n}"
        _timed(timings, what, argv, pip_env, base)
    install = Install(venv, base, timings)
    yield install
    print(f"\nwheel install timings (s): {timings}")


def test_the_installed_dependencies_are_consistent(installed: Install) -> None:
    pip = [installed.python, "-m", "pip"]
    env, work = installed.env(), installed.work
    assert "No broken requirements" in _timed(
        installed.timings, "pip check", [*pip, "check"], env, work
    )
    listing = _timed(installed.timings, "pip list", [*pip, "list"], env, work)
    # No dev extra came along: the test tools are not in the image.
    names = {_canonical(line.split()[0]) for line in listing.splitlines()[2:] if line.strip()}
    assert not names & {"pytest", "hypothesis", "moto", "mypy", "ruff", "schemathesis"}


IMPORT_ALL = """
import importlib, pkgutil, sys, traceback
import pipeline
failed = {}
def onerror(name):
    failed[name] = traceback.format_exc(limit=1)
names = [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.", onerror=onerror)]
for name in names:
    if name == "pipeline.__main__":  # runs the command; `python -m pipeline` is run instead
        continue
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc()
print(pipeline.__file__)
print(len(names))
for name, error in failed.items():
    print(f"FAILED {name}: {error}", file=sys.stderr)
sys.exit(1 if failed else 0)
"""


def test_every_module_of_the_installed_pipeline_imports(installed: Install) -> None:
    done = subprocess.run(
        [installed.python, "-c", IMPORT_ALL],
        env=installed.env(),
        cwd=installed.work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    where, count = done.stdout.split()
    assert where.startswith(str(installed.venv)), f"imported {where}, not the installed package"
    shipped = list((ROOT / "pipeline").rglob("*.py"))
    # Every module (pipeline/__init__ is the package), and the native core's extension.
    assert int(count) == len(shipped) - 1 + 1


@dataclass(frozen=True)
class Command:
    """One `tailpipe` run in the virtualenv and what it must end with."""

    argv: tuple[str, ...]
    code: int
    says: str  # in stdout + stderr
    env: tuple[tuple[str, str], ...] = ()


def commands(closed: int, work: Path) -> list[Command]:
    """Every subcommand, each stopped right after it loaded its settings and imported what it
    needs: its services are the closed port `closed`."""
    kafka = f"Kafka at 127.0.0.1:{closed} did not answer"
    postgres = f"PostgreSQL at 127.0.0.1:{closed} is unreachable"
    message = work / "message.jsonl"
    destinations = work / "destinations.toml"
    return [
        Command(("--version",), 0, "tailpipe "),
        Command(("config",), 0, f'kafka_bootstrap = "127.0.0.1:{closed}"'),
        Command(
            ("config",),
            2,
            "tailpipe: TAILPIPE_BATCH_MAX_ROWS: expected a positive integer",
            (("TAILPIPE_BATCH_MAX_ROWS", "abc"),),
        ),
        Command(("check",), 1, "FAILED"),
        Command(("migrate",), 1, postgres),
        Command(("topics", "create"), 1, kafka),
        Command(("run",), 1, postgres),
        Command(("dlq", "list"), 1, postgres),
        Command(("dlq", "replay", "--dry-run"), 1, postgres),
        Command(("retention", "--keep-days", "7"), 1, postgres),
        Command(("inspect", str(message)), 0, '"tail_events"'),
        Command(("produce", str(message)), 1, "Kafka: cannot publish"),
        Command(("loadgen", "--count", "1"), 1, "Kafka: cannot publish"),
        Command(("probe", "ready", "--port", str(closed)), 1, "unreachable"),
        Command(("alerts", "forward"), 2, "tailpipe: TAILPIPE_ALERT_DESTINATIONS"),
        # Past the destinations file, to Kafka: forward.py and httpx imported by then. (It
        # ends in an uncaught KafkaConnectionError today, not a one-line DependencyError: the
        # forwarder's business, not this test's.)
        Command(
            ("alerts", "forward"),
            1,
            f"127.0.0.1:{closed}",
            (("TAILPIPE_ALERT_DESTINATIONS", str(destinations)),),
        ),
        # A test notification to a destination nobody listens at: tried once, not delivered.
        Command(
            ("alerts", "test", "outcome"),
            1,
            "ops: not delivered",
            (
                ("TAILPIPE_ALERT_DESTINATIONS", str(destinations)),
                ("TAILPIPE_ALERT_FORWARD_ATTEMPTS", "1"),
            ),
        ),
    ]


SERVERS = {
    "api": ("TAILPIPE_API_PORT", {"TAILPIPE_API_READ_TOKENS": "read-token"}),
    "collect": ("TAILPIPE_COLLECT_PORT", {"TAILPIPE_COLLECT_TOKENS": "collect-token"}),
}


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return -9, f"timed out after {timeout} s\n{out}{err}"
    return process.returncode, out + err


def test_every_subcommand_loads_its_settings_and_imports_in_the_clean_install(
    installed: Install,
) -> None:
    work = installed.work
    closed = free_port()
    (work / "message.jsonl").write_bytes(next(synth.messages(5, START)).value + b"\n")
    (work / "destinations.toml").write_text(
        f'[[destination]]\nname = "ops"\nkind = "webhook"\nurl = "http://127.0.0.1:{closed}/"\n'
    )
    settings = {
        "TAILPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed}",
        "TAILPIPE_POSTGRES_DSN": f"postgresql://tailpipe@127.0.0.1:{closed}/tailpipe",
        "TAILPIPE_S3_ENDPOINT": f"http://127.0.0.1:{closed}",
        "TAILPIPE_CONNECT_TIMEOUT": "2",
        "TAILPIPE_METRICS_PORT": "0",
        "TAILPIPE_LOG_FORMAT": "text",
    }
    started = time.monotonic()
    launched: list[subprocess.Popen[str]] = []

    def launch(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            argv, env=installed.env(**settings, **(env or {})), cwd=work, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        launched.append(process)
        return process

    try:
        problems, ran, listed = run_everything(launch, installed, closed, work)
    finally:
        for process in launched:
            process.kill()  # a no-op for those that exited
            process.communicate()
    installed.timings["the commands"] = round(time.monotonic() - started, 1)
    assert not problems, "\n\n".join(problems)
    # Every subcommand and action the installed help lists was run.
    ran_as = {argv[:2] for argv in ran} | {argv[:1] for argv in ran}
    assert listed <= ran_as, f"never run here: {sorted(listed - ran_as)}"


Launch = Callable[..., "subprocess.Popen[str]"]


def _listed_commands(launch: Launch, tailpipe: str) -> set[tuple[str, ...]]:
    """(command,) or (command, action) for each one `tailpipe --help` lists."""
    code, top = _finish(launch([tailpipe, "--help"]))
    assert code == 0, top
    names = re.findall(r"^    (\w+)  ", top, re.MULTILINE)
    assert "config" in names, top
    assert "collect" in names, top
    helps = {name: launch([tailpipe, name, "--help"]) for name in names}
    listed: set[tuple[str, ...]] = set()
    for name, process in helps.items():
        code, text = _finish(process)
        assert code == 0, f"tailpipe {name} --help: {text}"
        usage = " ".join(text.split("\n\n")[0].split())
        actions = re.search(r"\{([\w,]+)\}", usage)
        listed |= {(name, a) for a in actions.group(1).split(",")} if actions else {(name,)}
    return listed


def run_everything(
    launch: Launch, installed: Install, closed: int, work: Path
) -> tuple[list[str], list[tuple[str, ...]], set[tuple[str, ...]]]:
    """Run the servers and COMMANDS all at once (and the help, meanwhile): the problems, what
    ran, and what the help lists."""
    tailpipe = installed.tailpipe
    problems: list[str] = []
    # The servers: serving (so uvicorn's lazily imported loop and protocol are there), probed
    # by the installed `tailpipe probe` as the image's health check does, then SIGTERM.
    ports = {name: free_port() for name in SERVERS}
    servers = {}
    for name, (port_var, extra) in SERVERS.items():
        argv = [tailpipe, name, "--host", "127.0.0.1"]
        servers[name] = launch(argv, {port_var: str(ports[name]), **extra})
    table = commands(closed, work)
    running = [(c, launch([tailpipe, *c.argv], dict(c.env))) for c in table]
    as_module = launch([installed.python, "-m", "pipeline", "--version"])
    listed = _listed_commands(launch, tailpipe)
    deadline = time.monotonic() + 60
    for name, process in servers.items():
        while not _healthy(ports[name]) and process.poll() is None:
            assert time.monotonic() < deadline, f"tailpipe {name}: no /healthz 200 within 60 s"
            time.sleep(0.1)
    code, text = _finish(launch([tailpipe, "probe", "live", "--port", str(ports["api"])]))
    if code != 0 or "/healthz: 200" not in text:
        problems.append(f"tailpipe probe live --port <the api's>: exit {code}\n{text}")
    for process in servers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for name, process in servers.items():
        code, text = _finish(process)
        # Exit 0, as a unit's RestartPreventExitStatus and a rollout expect (`pipeline.web.server`:
        # uvicorn would end the process by the signal it caught, exit -15).
        clean = code == 0 and "Application shutdown complete" in text
        if not clean or "Traceback" in text:
            problems.append(f"tailpipe {name}, stopped by SIGTERM: exit {code}\n{text}")

    code, text = _finish(as_module)
    if code != 0 or not text.startswith("tailpipe "):
        problems.append(f"python -m pipeline --version: exit {code}\n{text}")
    for command, process in running:
        code, text = _finish(process)
        line = shlex.join(["tailpipe", *command.argv])
        if code != command.code or command.says not in text:
            wanted = f"wanted {command.code} and {command.says!r}"
            problems.append(f"{line}: exit {code}, {wanted}\n{text}")
        elif "No module named" in text or "ImportError" in text:
            problems.append(f"{line}: an import failed\n{text}")
    ran = [c.argv for c in table] + [(name,) for name in SERVERS] + [("probe", "live")]
    return problems, ran, listed
