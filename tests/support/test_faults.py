"""The failure helpers themselves: `TcpProxy` against real local asyncio servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import free_port
from tests.support.faults import TcpProxy, peak_rss_mib, wait_for

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Target:
    """A real server on a free port: `echo` mode returns every byte; `http` mode answers one
    request line with RESPONSE and closes, as an HTTP/1.0 server does."""

    http: bool = False
    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.http:
                self.received += await reader.readline()
                writer.write(RESPONSE)
            else:
                while data := await reader.read(65536):
                    self.received += data
                    writer.write(data)
                    await writer.drain()
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def started(target: Target) -> AsyncIterator[Target]:
    target.server = await asyncio.start_server(target.serve, "127.0.0.1", 0)
    target.port = target.server.sockets[0].getsockname()[1]
    async with target.server:
        yield target
        target.server.close()


@pytest.fixture
async def echo() -> AsyncIterator[Target]:
    async for target in started(Target()):
        yield target


@pytest.fixture
async def http() -> AsyncIterator[Target]:
    async for target in started(Target(http=True)):
        yield target


@pytest.fixture
async def proxy(echo: Target) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", echo.port) as p:
        yield p


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await connect(port)
    try:
        writer.write(payload)
        async with asyncio.timeout(2):
            return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_bytes_flow_both_ways(proxy: TcpProxy, echo: Target) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: more than one read, so drain's backpressure works
    assert await exchange(proxy.port, b"hello") == b"hello"
    assert await exchange(proxy.port, big) == big
    assert proxy.connections == 2
    assert proxy.bytes_up == proxy.bytes_down == 5 + len(big)
    assert bytes(echo.received) == b"hello" + big


async def test_end_of_stream_goes_through_each_way(proxy: TcpProxy, http: Target) -> None:
    reader, writer = await connect(proxy.port)
    writer.write(b"ping")
    writer.write_eof()  # the echo server stops on it, closes, and the client sees the close
    async with asyncio.timeout(2):
        assert await reader.read() == b"ping"
    writer.close()
    async with TcpProxy("127.0.0.1", http.port) as web:
        reader, writer = await connect(web.port)
        writer.write(b"GET / HTTP/1.0\r\n")
        async with asyncio.timeout(2):
            assert await reader.read() == RESPONSE
        writer.close()
    await wait_for(lambda: proxy.live == 0, 2, "the closed connection to leave the proxy")


async def test_refuse_closes_live_connections_and_refuses_new_ones(proxy: TcpProxy) -> None:
    reader, writer = await connect(proxy.port)
    writer.write(b"a")
    async with asyncio.timeout(2):
        assert await reader.readexactly(1) == b"a"
    port = proxy.port

    await proxy.refuse()
    assert not proxy.listening
    assert proxy.live == 0
    async with asyncio.timeout(2):
        with pytest.raises(ConnectionResetError):
            await reader.read()
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await connect(port)

    await proxy.restore()
    assert proxy.port == port
    assert await exchange(port, b"back") == b"back"


async def test_refuse_without_reset_ends_streams_cleanly(proxy: TcpProxy) -> None:
    reader, writer = await connect(proxy.port)
    await wait_for(lambda: proxy.live == 1, 2, "the proxy to accept")
    await proxy.refuse(reset=False)
    async with asyncio.timeout(2):
        assert await reader.read() == b""
    writer.close()


async def test_hold_keeps_responses_until_release(proxy: TcpProxy, echo: Target) -> None:
    reader, writer = await connect(proxy.port)
    proxy.hold()
    writer.write(b"request")
    # The target got the request and answered; the proxy has the answer and keeps it.
    await wait_for(lambda: proxy.bytes_held == 7, 2, "the echo to reach the proxy")
    assert bytes(echo.received) == b"request"
    assert proxy.bytes_up == 7
    assert proxy.bytes_down == 0

    proxy.release()
    async with asyncio.timeout(2):
        assert await reader.readexactly(7) == b"request"
    assert proxy.bytes_held == 0
    assert await exchange(proxy.port, b"after") == b"after"  # no longer holding
    writer.close()


async def test_hold_keeps_the_end_of_stream_too(http: Target) -> None:
    async with TcpProxy("127.0.0.1", http.port) as proxy:
        proxy.hold()
        reader, writer = await connect(proxy.port)
        writer.write(b"GET / HTTP/1.0\r\n")
        await wait_for(lambda: proxy.bytes_held == len(RESPONSE), 2, "the held response")
        assert not reader.at_eof()
        proxy.release()
        async with asyncio.timeout(2):
            assert await reader.read() == RESPONSE
        writer.close()


async def test_fixed_port_and_target_down() -> None:
    port, nowhere = free_port(), free_port()
    async with TcpProxy("127.0.0.1", nowhere, port=port) as proxy:
        assert proxy.port == port
        reader, writer = await connect(port)
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # accepted, then closed: the target is down
        writer.close()
        assert proxy.connections == 1


async def test_close_with_open_connections_leaves_no_task(echo: Target) -> None:
    proxy = TcpProxy("127.0.0.1", echo.port)
    await proxy.start()
    clients = [await connect(proxy.port) for _ in range(3)]
    proxy.hold()
    for _, writer in clients:
        writer.write(b"x")
    await wait_for(lambda: proxy.bytes_held == 3, 2, "three held echoes")

    await proxy.close()
    await proxy.close()  # twice is fine
    ours = [
        t for t in asyncio.all_tasks() if "TcpProxy" in getattr(t.get_coro(), "__qualname__", "")
    ]
    assert ours == []
    for reader, writer in clients:
        async with asyncio.timeout(2):
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""
        writer.close()


def test_peak_rss_of_this_process() -> None:
    import os

    assert 5 < peak_rss_mib(os.getpid()) < 100_000
