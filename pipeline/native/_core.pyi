from collections.abc import Iterable
from datetime import datetime
from typing import Any

class Triggers:
    def __init__(self, triggers: list[tuple[str, int]]) -> None: ...
    def mask(self, text: str) -> int: ...
    def mask_bytes(self, data: bytes) -> int: ...

def utc_datetime(ms: int) -> datetime | None: ...

class CopyEncoder:
    def __init__(self, types: list[str]) -> None: ...
    def encode(self, rows: Iterable[tuple[object, ...]], first: bool, last: bool) -> bytes: ...

class TraceItems:
    def __init__(
        self,
        invocation: type,
        log_line: type,
        exception_info: type,
        min_ms: int,
        max_ms: int,
        max_duration: int,
        short_name: int,
        max_depth: int,
        triggers: list[tuple[str, int]] | None = None,
    ) -> None: ...
    def decode(self, value: bytes) -> list[Any] | None: ...
    def rows(
        self, value: bytes, timestamp_ms: int, origin: tuple[str, int, int]
    ) -> tuple[bool, list[Any]] | None: ...
