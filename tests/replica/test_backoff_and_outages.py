"""Backoff and outage bookkeeping: pure, no services."""

from __future__ import annotations

import pytest

from pipeline.backoff import Backoff
from pipeline.replica.metrics import Metrics
from pipeline.replica.outages import Outages


def test_full_jitter_is_capped_exponential() -> None:
    backoff = Backoff(base_s=0.5, cap_s=8.0)
    assert backoff.delay(1, draw=0.999999) == pytest.approx(1.0, rel=1e-3)
    assert backoff.delay(3, draw=0.5) == pytest.approx(2.0)
    assert backoff.delay(10, draw=0.999999) == pytest.approx(8.0, rel=1e-3)
    assert backoff.delay(10_000, draw=0.0) == 0.0
    assert all(0 <= backoff.delay(n) <= 8.0 for n in range(1, 200))


def test_backoff_policy_is_validated_on_creation() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base_s=2.0, cap_s=1.0)


def test_outage_counts_retries_and_clears_on_recovery() -> None:
    metrics = Metrics.create()
    outages = Outages(metrics, Backoff(0.1, 1.0))
    outages.failed("postgres", ConnectionRefusedError("refused"))
    outages.failed("postgres", ConnectionRefusedError("refused"))
    state = outages.describe()["postgres"]
    assert state["attempts"] == 2
    assert "ConnectionRefusedError" in state["error"]
    value = metrics.registry.get_sample_value
    assert value("tailpipe_retries_total", {"dependency": "postgres"}) == 2
    assert value("tailpipe_dependency_up", {"dependency": "postgres"}) == 0
    outages.recovered("postgres")
    assert not outages.down("postgres")
    assert value("tailpipe_dependency_up", {"dependency": "postgres"}) == 1
