"""The native core's `utc_datetime` against `datetime.fromtimestamp(ms / 1000, UTC)`, the
reference every row's timestamp used to be built with (`transformer._ts`)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.native import load_utc_datetime
from pipeline.transform.transformer import _ts

utc_datetime = load_utc_datetime()
EXACT = 2**32 * 1000


def _reference(ms: int) -> datetime | str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError) as error:
        return type(error).__name__


def _ours(ms: int) -> datetime | str:
    try:
        return _ts(ms)
    except (OverflowError, OSError, ValueError) as error:
        return type(error).__name__


def test_a_full_install_builds_timestamps_natively() -> None:
    assert utc_datetime is not None


@settings(max_examples=3000, deadline=None)
@given(st.integers(-EXACT + 1, EXACT - 1) | st.integers(1_600_000_000_000, 1_900_000_000_000))
@example(0)
@example(-1)
@example(951_782_400_000)  # 2000-02-29
@example(4_107_542_399_999)  # 2100-02-28 23:59:59.999
@example(-62_135_596_800_000 // 1000)  # negative, far from the bound
def test_the_native_datetime_is_the_reference(ms: int) -> None:
    assert utc_datetime is not None
    native = utc_datetime(ms)
    reference = datetime.fromtimestamp(ms / 1000, UTC)
    assert native == reference
    assert native is not None
    assert native.tzinfo is UTC
    assert repr(native) == repr(reference)


@settings(max_examples=500, deadline=None)
@given(st.integers() | st.integers(EXACT - 5, EXACT + 5) | st.integers(-EXACT - 5, -EXACT + 5))
@example(2**63)
@example(253_402_300_800_000)  # year 10000: the reference refuses it
def test_beyond_the_exact_range_the_reference_decides(ms: int) -> None:
    assert utc_datetime is not None
    if not -EXACT < ms < EXACT:
        assert utc_datetime(ms) is None
    assert _ours(ms) == _reference(ms)
