"""Helpers for failure scenarios against the real services: no mocks, real sockets and servers.

- `TcpProxy` sits between the product and Kafka, PostgreSQL or S3 and can stop that endpoint
  (`refuse`, `restore`) or swallow its responses while requests still arrive (`hold`,
  `release`).
- `postgres_down` / `postgres_up` stop and start the local PostgreSQL itself (`pg_ctl stop -m
  fast` through `deploy/local/stack.py`): an outage of the real server, not of a socket.
- `wait_for` waits on a condition with a deadline; `peak_rss_mib` reads a process's peak memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.kafka import clients
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.py"
_CHUNK = 64 * 1024


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    deadline_s: float,
    what: str,
    *,
    interval_s: float = 0.05,
) -> None:
    """Poll `predicate` (plain or async) until it is true; fail naming `what` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {deadline_s} s")
        await asyncio.sleep(interval_s)


class _Link:
    """One client connection and its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.target: asyncio.StreamWriter | None = None
        self.held: list[bytes] = []
        self.eof_held = False  # the target finished while holding: tell the client on release

    def abort(self, *, reset: bool) -> None:
        if reset:
            # Linger 0: close with a RST, so the client sees its connection reset at once rather
            # than an orderly end of stream that it might take for a finished response.
            sock = self.client.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.transport.abort()
        if self.target is not None:
            self.target.transport.abort()

    def close(self) -> None:
        """End both connections once what is already written has gone out."""
        self.client.close()
        if self.target is not None:
            self.target.close()


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of (host, port), running in the current event loop.

    A client that connects while the target is down is accepted and then closed (a real proxy
    does the same); `refuse()` is the way to make connections fail to open.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._port = port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancelled: set[asyncio.Task[Any]] = set()
        self._holding = False
        self._hold_at: int | None = None
        self.connections = 0
        """Client connections accepted so far."""
        self.bytes_up = 0
        """Bytes forwarded from clients to the target."""
        self.bytes_down = 0
        """Bytes delivered from the target to clients (held bytes count once released)."""

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("TcpProxy.port before start()")
        return self._port

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def live(self) -> int:
        """Client connections open right now."""
        return len(self._links)

    @property
    def bytes_held(self) -> int:
        """Bytes from the target received but not delivered, because of `hold()`."""
        return sum(len(chunk) for link in self._links for chunk in link.held)

    async def start(self) -> None:
        """Listen: on the port given to the constructor, or on a free one (see `port`)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def refuse(self, *, reset: bool = True) -> None:
        """Stop listening and drop every live connection (with a RST unless `reset=False`):
        new connections are refused and open ones fail, as when the server stops."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.abort(reset=reset)
        await self._finish_tasks()
        if server is not None:
            # After the connections are gone: from Python 3.12 on this waits for them.
            await server.wait_closed()

    async def restore(self) -> None:
        """Listen again, on the same port."""
        await self.start()

    def hold(self) -> None:
        """From now on keep the target's bytes from the clients; requests still go through."""
        self._holding = True

    def hold_after(self, upstream_bytes: int) -> None:
        """Start holding once this many more bytes went from clients to the target: in the
        middle of a large request, so it arrives whole but its answer never does."""
        self._hold_at = self.bytes_up + upstream_bytes

    def release(self) -> None:
        """Deliver the held bytes (and a held end of stream), and stop holding."""
        self._holding = False
        self._hold_at = None
        for link in self._links:
            if link.held:
                data = b"".join(link.held)
                link.held.clear()
                self.bytes_down += len(data)
                link.client.write(data)
            if link.eof_held:
                link.eof_held = False
                self._write_eof(link.client)

    async def close(self) -> None:
        await self.refuse(reset=False)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _finish_tasks(self) -> None:
        """Cancel the connection tasks and wait for them, so none outlives the proxy."""
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        self._cancelled.update(tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._cancelled.difference_update(tasks)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._server is None:  # accepted just before refuse(): it must not get through
            writer.transport.abort()
            return
        self.connections += 1
        link = _Link(writer)
        self._tasks.add(task)
        self._links.add(link)
        try:
            try:
                target_reader, link.target = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return
            await asyncio.gather(self._pump_up(reader, link), self._pump_down(target_reader, link))
        except asyncio.CancelledError:
            if task not in self._cancelled:
                raise
            # Cancelled by refuse() or close(), which wait for it: end normally, since Python
            # 3.11's start_server logs a cancelled connection task as an unhandled error.
            task.uncancel()
        finally:
            self._links.discard(link)
            self._tasks.discard(task)
            link.close()

    async def _pump_up(self, reader: asyncio.StreamReader, link: _Link) -> None:
        target = link.target
        assert target is not None
        try:
            while data := await reader.read(_CHUNK):
                self.bytes_up += len(data)
                if self._hold_at is not None and self.bytes_up >= self._hold_at:
                    self._holding = True
                target.write(data)
                await target.drain()
            self._write_eof(target)
        except OSError:  # either side reset: end both, as the kernel would for a direct link
            link.abort(reset=True)

    async def _pump_down(self, reader: asyncio.StreamReader, link: _Link) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if self._holding:
                    link.held.append(data)
                    continue
                self.bytes_down += len(data)
                link.client.write(data)
                await link.client.drain()
            if self._holding:
                link.eof_held = True
            else:
                self._write_eof(link.client)
        except OSError:
            link.abort(reset=True)

    @staticmethod
    def _write_eof(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()


# ---------------------------------------------------------------- the real PostgreSQL


def _stack(*args: str) -> subprocess.CompletedProcess[str]:
    # The current environment: TAILPIPE_LOCAL_*_PORT move the servers, and stack.py reads them.
    return subprocess.run(
        [sys.executable, str(STACK), *args],
        env=dict(os.environ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def postgres_down() -> None:
    """Stop the local PostgreSQL (`pg_ctl stop -m fast`); returns once it is stopped."""
    done = _stack("down", "postgres")
    assert done.returncode == 0, f"stack.py down postgres: {done.stdout}{done.stderr}"
    state = _stack("status", "postgres")
    # 3 is "not running"; 0 would be a server stack.py does not own (TAILPIPE_POSTGRES_DSN).
    assert state.returncode == 3, f"PostgreSQL still up: {state.stdout}{state.stderr}"


def postgres_up() -> None:
    """Start the local PostgreSQL; returns once it accepts connections (stack.py waits for
    pg_isready and then queries it)."""
    done = _stack("up", "postgres")
    assert done.returncode == 0, f"stack.py up postgres: {done.stdout}{done.stderr}"


def kafka_down() -> None:
    """Stop the local Kafka broker (SIGTERM, a controlled shutdown); returns once stopped."""
    done = _stack("down", "kafka")
    assert done.returncode == 0, f"stack.py down kafka: {done.stdout}{done.stderr}"


def kafka_up() -> None:
    """Start the local Kafka broker; returns once it answers metadata requests."""
    done = _stack("up", "kafka")
    assert done.returncode == 0, f"stack.py up kafka: {done.stdout}{done.stderr}"


async def leaders_elected(
    settings: Settings, topic: str, partitions: int, deadline_s: float = 120
) -> None:
    """Wait until the leader of each of the `partitions` of `topic` serves it again. A
    restarted broker answers metadata, and names itself leader, before it has loaded its
    partitions (the more it holds, the longer that takes), and a producer's sends in that gap
    time out. Asking each leader for its end offsets is answered once the partition is served."""
    consumer = AIOKafkaConsumer(**clients.client_options(settings), group_id=None)
    await consumer.start()
    wanted = [TopicPartition(topic, n) for n in range(partitions)]
    try:

        async def served() -> bool:
            try:
                await asyncio.wait_for(consumer.end_offsets(wanted), 5)
            except (KafkaError, TimeoutError):
                return False
            return True

        await wait_for(served, deadline_s, f"the leaders of {topic} serving it", interval_s=0.5)
    finally:
        await consumer.stop()


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    raise LookupError(f"no VmHWM in /proc/{pid}/status")
