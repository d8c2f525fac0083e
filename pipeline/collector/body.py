"""A request body read under a size cap, before and after gzip.

Senders decide how much they post, so nothing here holds more than the cap: the raw body is
read in chunks and abandoned at the cap (uvicorn discards the rest it receives), and gzip is
inflated with a bounded output size, so a few kilobytes of gzip bomb cost no more memory than
an honest body. A body is gzip when `Content-Encoding` says so or when it starts with the gzip
magic bytes (Logpush uploads `.gz` files, and not every proxy keeps the header).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Mapping

from pipeline.collector.rejection import Rejection

GZIP_MAGIC = b"\x1f\x8b"
INLINE_BYTES = 64 * 1024
"""Bodies up to this size are inflated and parsed on the event loop; larger ones in a thread,
so one big batch does not stall every other request for tens of milliseconds."""


def too_large(what: str, limit: int) -> Rejection:
    return Rejection(
        413,
        "too_large",
        f"body: {what} exceeds {limit} bytes (TAILPIPE_COLLECT_MAX_BODY_BYTES); "
        "send smaller batches",
        limit=limit,
    )


async def read(headers: Mapping[str, str], chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The raw body, or a 413 as soon as it is known to exceed `limit` bytes."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Rejection(400, "malformed", f"Content-Length: not a number: {declared!r}")
        if int(declared) > limit:
            raise too_large("Content-Length", limit)
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise too_large("the request body", limit)
    return bytes(received)


def inline(size: int, gzip: bool) -> bool:
    """Whether a body of `size` bytes is cheap enough to inflate and parse on the event loop.
    gzip'd JSON inflates about tenfold, so it leaves the loop at a smaller size."""
    return size <= (INLINE_BYTES // 16 if gzip else INLINE_BYTES)


def is_gzip(headers: Mapping[str, str], raw: bytes) -> bool:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return True
    if encoding not in ("", "identity"):
        raise Rejection(
            415, "malformed", f"Content-Encoding: {encoding!r} is not supported; use gzip"
        )
    return raw.startswith(GZIP_MAGIC)


def gunzip(raw: bytes, limit: int) -> bytes:
    """Inflate every gzip member of `raw`; 413 past `limit` bytes, 400 for broken gzip."""
    out = bytearray()
    data = raw
    while data:
        remaining = limit - len(out)
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            # One byte past the cap is enough to know the body is too large.
            out += inflater.decompress(data, remaining + 1)
        except zlib.error as exc:
            raise Rejection(400, "malformed", f"body: not valid gzip ({exc})") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise too_large("the decompressed body", limit)
        if not inflater.eof:
            raise Rejection(400, "malformed", "body: the gzip stream is truncated")
        data = inflater.unused_data  # gzip allows members back to back; Logpush may join files
    return bytes(out)
