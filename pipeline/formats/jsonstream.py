"""Split a stream of concatenated JSON values into one chunk per value.

`wrangler tail --format json` prints trace items pretty-printed, one after another; NDJSON has
one value per line; both may be mixed with any whitespace between values. `Splitter` finds where
each value ends without parsing it: it tracks only bracket depth and whether it is inside a
string, jumping between the bytes that matter with compiled regexes, and resumes where it
stopped when more data arrives, so every byte is scanned once (no quadratic rescans however
the input is cut into pieces). Values are not validated: `parse` does that, naming the line a
bad value starts on.

Recovery from broken input: a raw newline ends a string (JSON strings cannot contain one), so
one missing quote spoils one line rather than the rest of the stream; a stray `}` or `]`, or
anything else that cannot start a value, becomes a chunk of its own (which `parse` rejects).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

from pipeline.errors import DecodeError
from pipeline.formats.invocation import JSON
from pipeline.formats.sanitize import loads

_VALUE_START = re.compile(rb"[^ \t\r\n]")
# Inside a container: a whole string in one match, else a bracket, else a lone quote (a string
# that is not complete in the buffer yet, or is broken).
_CONTAINER_TOKEN = re.compile(rb'"(?:[^"\\\n]++|\\[^\n])*+"|[{}\[\]"]')
# Inside a string: its end (quote, or newline for a broken one), or an escape to skip.
_STRING_STOP = re.compile(rb'["\\\n]')
# A bare scalar (number, true, false, null, or junk) ends at whitespace or structure.
_SCALAR_END = re.compile(rb'[ \t\r\n{}\[\]"]')

_BETWEEN, _CONTAINER, _STRING, _SCALAR = range(4)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One value's bytes, and the 1-based line of the stream its first byte is on."""

    line: int
    data: bytes


class Splitter:
    """Incremental: `feed` pieces as they arrive, then `close` for a value left at the end."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # next byte to scan
        self._start = -1  # where the current value starts; -1 between values
        self._state = _BETWEEN
        self._depth = 0
        self._line = 1  # line number of buffer offset self._counted
        self._counted = 0
        self._at_beginning = True

    def feed(self, data: bytes | str) -> list[Chunk]:
        if isinstance(data, str):
            data = _encode(data)
        if self._at_beginning and data:
            self._at_beginning = False
            if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not a value
                data = data[3:]
        self._buf += data
        return self._scan()

    def close(self) -> list[Chunk]:
        """The values still buffered: a trailing scalar, or an incomplete (invalid) value."""
        out = self._scan()
        if self._start >= 0:
            out.append(self._chunk(self._start, len(self._buf)))
        self._reset()  # ready for a new stream
        return out

    def _chunk(self, start: int, end: int) -> Chunk:
        self._line += self._buf.count(b"\n", self._counted, start)
        self._counted = start
        return Chunk(self._line, bytes(self._buf[start:end]))

    def _scan(self) -> list[Chunk]:
        buf, pos, state, depth, start = self._buf, self._pos, self._state, self._depth, self._start
        end = len(buf)
        out: list[Chunk] = []
        while pos < end:
            if state == _BETWEEN:
                match = _VALUE_START.search(buf, pos)
                if match is None:
                    pos = end
                    break
                start = pos = match.start()
                first = buf[pos]
                if first == 0x7B or first == 0x5B:  # { [
                    state, depth, pos = _CONTAINER, 1, pos + 1
                elif first == 0x22:  # "
                    state, depth, pos = _STRING, 0, pos + 1
                elif first == 0x7D or first == 0x5D:  # a stray } or ]
                    out.append(self._chunk(start, pos + 1))
                    start, pos = -1, pos + 1
                else:
                    state, pos = _SCALAR, pos + 1
            elif state == _CONTAINER:
                match = _CONTAINER_TOKEN.search(buf, pos)
                if match is None:
                    pos = end
                    break
                first = buf[match.start()]
                pos = match.end()
                if first == 0x22:
                    if pos - match.start() == 1:
                        state = _STRING  # an incomplete or broken string: slow path
                elif first == 0x7B or first == 0x5B:
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        out.append(self._chunk(start, pos))
                        state, start = _BETWEEN, -1
            elif state == _STRING:
                match = _STRING_STOP.search(buf, pos)
                if match is None:
                    pos = end
                    break
                pos = match.end()
                if buf[match.start()] == 0x5C:  # backslash: skip the escaped byte
                    if pos == end:
                        pos -= 1  # the escaped byte has not arrived: rescan the backslash
                        break
                    pos += 1
                    continue
                if depth:
                    state = _CONTAINER
                else:
                    out.append(self._chunk(start, pos))
                    state, start = _BETWEEN, -1
            else:
                match = _SCALAR_END.search(buf, pos)
                if match is None:
                    pos = end
                    break
                pos = match.start()
                out.append(self._chunk(start, pos))
                state, start = _BETWEEN, -1
        self._state, self._depth = state, depth
        # Drop what is done with, counting its lines first; a value in progress stays.
        keep = start if start >= 0 else pos
        if keep:
            self._line += buf.count(b"\n", self._counted, keep)
            del buf[:keep]
            self._counted = 0
            pos -= keep
            start = start - keep if start >= 0 else -1
        self._pos, self._start = pos, start
        return out


def _encode(text: str) -> bytes:
    """Text back to the bytes it came from: `surrogateescape` restores undecodable bytes that
    `sys.stdin` smuggled through; other lone surrogates become bytes `parse` will reject."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def split(data: bytes | str) -> list[Chunk]:
    """Every value in a complete buffer."""
    splitter = Splitter()
    return splitter.feed(data) + splitter.close()


def split_stream(pieces: Iterable[bytes | str]) -> Iterator[Chunk]:
    """Every value of a stream read in pieces of any size, e.g.
    `split_stream(iter(lambda: sys.stdin.buffer.read1(65536), b""))`."""
    splitter = Splitter()
    for piece in pieces:
        yield from splitter.feed(piece)
    yield from splitter.close()


def parse(chunk: Chunk) -> tuple[JSON, bool]:
    """The chunk's value and whether it needed the lenient parse (`sanitize.loads`), or
    `DecodeError("line N", "invalid JSON: ...")`."""
    try:
        return loads(chunk.data)
    except orjson.JSONDecodeError as error:
        raise DecodeError(f"line {chunk.line}", f"invalid JSON: {error}") from None
