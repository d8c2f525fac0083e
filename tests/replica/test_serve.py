"""`tailpipe run`'s process settings that no integration test sees directly."""

from __future__ import annotations

import gc
import itertools
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pipeline.kafka import synth
from pipeline.replica.serve import GC_THRESHOLDS, collect_less_often, loop_factory
from pipeline.settings import Settings
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import Transformer

START_MS = 1_764_374_400_000


@pytest.fixture
def gc_state() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.enable()


@pytest.mark.usefixtures("gc_state")
def test_collect_less_often_sets_the_thresholds_and_freezes_startup() -> None:
    collect_less_often()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("gc_state")
def test_the_transform_makes_no_reference_cycles() -> None:
    """What GC_THRESHOLDS relies on: every object a batch holds is freed by reference counting
    when the batch goes, so looking for cycles less often keeps no more memory."""
    values = [m.value for m in itertools.islice(synth.messages(7, START_MS), 3000)]
    transformer = Transformer(Extractor.from_files())
    gc.collect()
    gc.disable()
    batch = Batch(created=0.0)
    for offset, value in enumerate(values):
        transformer.add(batch, "t", offset % 6, offset, START_MS, None, value)
    assert batch.rows > 3000
    del batch
    assert gc.collect() == 0


@pytest.mark.usefixtures("gc_state")
def test_two_full_batches_stay_below_the_collection_threshold() -> None:
    """What the threshold is sized by: the containers a batch of the default `batch_max_rows`
    holds, net of what was freed, fit twice below it (a batch filling while one flushes), so the
    collector never walks the batches in flight."""
    limit = Settings().batch_max_rows
    values = synth.messages(7, START_MS)
    transformer = Transformer(Extractor.from_files())
    gc.collect()
    gc.disable()
    before = gc.get_count()[0]
    batch = Batch(created=0.0)
    for offset, message in enumerate(values):
        transformer.add(batch, "t", offset % 6, offset, START_MS, None, message.value)
        if batch.rows >= limit:
            break
    assert 2 * (gc.get_count()[0] - before) < GC_THRESHOLDS[0]


def test_a_replica_starts_without_aiobotocore() -> None:
    """The S3 client is made at the first dead letter: importing aiobotocore is over half of a
    replica's start-up CPU, and most replicas never dead-letter."""
    code = "import sys, pipeline.replica.serve; print('aiobotocore' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_replica_runs_on_uvloop() -> None:
    import uvloop

    assert loop_factory() is uvloop.new_event_loop
