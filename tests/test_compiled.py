"""The compiled hot path is the source's: built, current, and storing exactly the same rows.

mypyc compiles the modules that pyproject.toml's hook lists from their typed source (see
docs/design.md, "Compiled"). What could go wrong is a build that is missing or stale, and a
construct the compiler treats differently from the interpreter (its checks of annotations at
run time, above all). The whole suite runs on the compiled build; here the build itself is
checked, and one corpus is transformed twice, compiled and as plain source, to the same bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pipeline
from tests.conftest import ROOT, stale_builds

_HASH_ROWS = """
import hashlib, itertools, pathlib, sys
from pipeline.kafka import synth
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import Transformer
from pipeline.alerts.rules import Rules
import pipeline
values = [m.value for m in itertools.islice(synth.messages(7, 1_764_374_400_000), 3000)]
values += [p.read_bytes() for p in sorted(pathlib.Path(sys.argv[1]).rglob("*"))
           if p.is_file() and p.suffix != ".md"]
batch = Batch(created=0.0)
transformer = Transformer(Extractor.from_files(), Rules.load(None))
for offset, value in enumerate(values):
    transformer.add(batch, "t", offset % 6, offset, 1_764_374_400_000, None, value)
digest = hashlib.sha256()
for key, part in sorted(batch.parts.items()):
    for rows in (part.events, part.logs, part.dead):
        digest.update(repr(rows).encode())
    digest.update(repr(sorted(part.redactions.items())).encode())
    digest.update(repr(part.rollups).encode())
    if len(sys.argv) > 2:
        for rows in (part.events, part.logs, part.dead):
            print(repr(rows))
        print(repr(sorted(part.redactions.items())))
        print(repr(part.rollups))
import pipeline.native
build = f"{pipeline.compiled()}/{pipeline.native.loaded()}"
print(build, len(values), batch.rows, digest.hexdigest())
"""


def _hook() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        hook: dict[str, list[str]] = tomllib.load(f)["tool"]["hatch"]["build"]["targets"]["wheel"][
            "hooks"
        ]["mypyc"]
    return hook


def _compiled_sources() -> list[Path]:
    hook = _hook()
    excluded = {p for pattern in hook["exclude"] for p in ROOT.glob(pattern)}
    return sorted({p for pattern in hook["include"] for p in ROOT.glob(pattern)} - excluded)


def test_every_module_the_hook_lists_runs_compiled() -> None:
    assert pipeline.compiled(), "the hot path runs as plain source: run `make venv`"
    sources = _compiled_sources()
    assert len(sources) > 20
    for source in sources:
        name = ".".join(source.relative_to(ROOT).with_suffix("").parts)
        module = __import__(name, fromlist=["_"])
        assert str(module.__file__).endswith(".so"), name
    assert not stale_builds()


@pytest.mark.parametrize(
    ("source", "built"),
    [
        ("pipeline/formats/decode.py", "pipeline/formats/decode.cpython-311-x86_64-linux-gnu.so"),
        # The native core, built by cargo from its crate.
        ("pipeline/native/src/lib.rs", "pipeline/native/_core.cpython-311-x86_64-linux-gnu.so"),
    ],
)
def test_a_source_newer_than_its_build_is_stale(tmp_path: Path, source: str, built: str) -> None:
    for path in (tmp_path / source, tmp_path / built):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    os.utime(tmp_path / source, (1_000, 1_000))
    os.utime(tmp_path / built, (2_000, 2_000))
    assert stale_builds(tmp_path) == []
    os.utime(tmp_path / source, (3_000, 3_000))
    assert stale_builds(tmp_path) == [source]


@pytest.fixture(scope="module")
def plain_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's `pipeline` without its compiled modules: what a plain checkout runs."""
    root = tmp_path_factory.mktemp("plain")
    shutil.copytree(
        ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    return root


def _rows_digest(path: Path) -> str:
    # One hash seed for both: the rollups hold sets, whose repr follows string hashes.
    env = {**os.environ, "PYTHONPATH": f"{path}:{ROOT}", "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _HASH_ROWS, str(ROOT / "tests" / "fixtures")],
        env=env, cwd=path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_compiled_and_plain_source_store_the_same_rows(plain_source: Path) -> None:
    """Every synthetic message of one stream and every captured fixture (trace items, wrangler
    tail, Logpush, envelopes, OTLP logs, broken ones that become dead letters): the same rows,
    dead letters, redaction counts and rollups, compiled with the native core or neither."""
    compiled = _rows_digest(ROOT).split()
    plain = _rows_digest(plain_source).split()
    # compiled/native: the build with mypyc's modules and the native core, and without either.
    assert (compiled[0], plain[0]) == ("True/True", "False/False")
    assert min(int(compiled[1]), int(compiled[2])) > 3000
    assert compiled[1:] == plain[1:]
