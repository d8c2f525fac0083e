"""The native core: the parts of the hot path written in Rust (`src/`, built by the wheel's
build hook, `deploy/packaging/native_hook.py`, into `_core`).

Each part has a Python twin that stays the reference and gives the same answers; the native
one is only faster. The core is optional at import: the light logger distribution and a plain
checkout never installed run the Python twins. `loaded()` tells which runs; a full install
always builds the core, and its build fails without a Rust toolchain rather than ship it slow.

The loaders return plain callables (bound methods of the Rust types), so the compiled callers
pay one C call each and never see a Rust type in their annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.util import find_spec
from typing import Any

TriggerScan = tuple[Callable[[str], int], Callable[[bytes], int]]
"""`(mask(text), mask_bytes(utf8))`: the rules a text needs, or -1 for the reference to decide."""


def loaded() -> bool:
    """Whether the native core is built and importable here."""
    return find_spec("pipeline.native._core") is not None


def load_triggers(triggers: Sequence[tuple[str, int]]) -> TriggerScan | None:
    """The redaction trigger scan over `(trigger, rules mask)` pairs, or None without the core
    (or with more rules than its 127-bit masks hold)."""
    if not loaded() or any(mask >> 127 for _, mask in triggers):
        return None
    from pipeline.native._core import Triggers

    scan = Triggers(list(triggers))
    return scan.mask, scan.mask_bytes


def load_utc_datetime() -> Callable[[int], datetime | None] | None:
    """`utc_datetime(ms)`: `datetime.fromtimestamp(ms / 1000, UTC)` built from integers, or
    None where only the reference is exact (beyond 2**32 s); None without the core."""
    if not loaded():
        return None
    from pipeline.native._core import utc_datetime

    return utc_datetime


Records = tuple[type, type, type]
"""The classes of the decoded records: `(Invocation, LogLine, ExceptionInfo)`."""


def load_trace_items(
    records: Records, limits: tuple[int, int, int, int, int]
) -> Callable[[bytes], list[Any] | None] | None:
    """`decode(value)`: a message's trace items as `records`, or None where the reference
    decodes it (see `src/trace_items.rs`); None without the core. `limits`:
    `(min_ms, max_ms, max_duration_ms, short_name, max_depth)` of `pipeline.formats.fields`."""
    if not loaded():
        return None
    from pipeline.native._core import TraceItems

    return TraceItems(*records, *limits).decode


NativeRows = tuple[Any, tuple[object, ...], list[tuple[object, ...]], tuple[int, ...] | None]
"""An invocation (without `extra`), its event row, its log rows and the rows redaction may
change (log row indexes, -1 for the event row's URL)."""
TraceRows = Callable[[bytes, int, tuple[str, int, int]], tuple[bool, list[Any]] | None]
"""`rows(value, timestamp_ms, (topic, partition, offset))`: `(True, [NativeRows, ...])`,
`(False, invocations)` where the transformer builds the rows, or None where the reference
decodes the message (the native decoder would decline it too)."""


def load_trace_rows(
    records: Records, limits: tuple[int, int, int, int, int], triggers: Sequence[tuple[str, int]]
) -> TraceRows | None:
    """`rows` (see `src/trace_items.rs`) over the redaction `triggers` (as `load_triggers`
    takes them); None without the core or with more rules than its masks hold."""
    if not loaded() or any(mask >> 127 for _, mask in triggers):
        return None
    from pipeline.native._core import TraceItems

    return TraceItems(*records, *limits, list(triggers)).rows


CopyEncode = Callable[[Sequence[tuple[object, ...]], bool, bool], bytes]
"""`encode(rows, first, last)`: a piece of a binary COPY stream (the header with `first`, the
trailer with `last`), or ValueError for a value it leaves to asyncpg."""


def load_copy_encoder(types: Sequence[str]) -> CopyEncode | None:
    """The binary COPY encoder for columns of `types`; None without the core."""
    if not loaded():
        return None
    from pipeline.native._core import CopyEncoder

    return CopyEncoder(list(types)).encode
