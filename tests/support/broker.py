"""A private, single-node Kafka broker that a test may kill and restart.

The shared local broker (deploy/local/stack.py) serves every other test, so a test about Kafka
going away gets a broker of its own: the same jars and logging, its own ports and data
directory under the test's tmp_path. `kill()` is a crash (SIGKILL); `start()` again brings it
back on the same ports with the same data, so clients see the cluster they knew return.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from aiokafka.client import AIOKafkaClient

from tests.conftest import ROOT

START_DEADLINE_S = 90.0


def _stack() -> ModuleType:
    """deploy/local/stack.py, for its `java()` command line (jars, heap, log4j config)."""
    name = "tailpipe_local_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "local" / "stack.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


class Broker:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Both ports stay reserved (bound) until the first launch: two free_port() calls in a
        # row may return the same port, and a released port may be taken meanwhile.
        self._reserved = _reserve_ports(2)
        self.port, self.controller_port = (sock.getsockname()[1] for sock in self._reserved)
        self.log = directory / "kafka.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._stack = _stack()
        self._properties = self._write_properties()
        command = self._stack.java(
            "kafka.tools.StorageTool",
            *("format", "-t", _stack().cluster_id(), "-c", str(self._properties)),
            heap="128m",
        )
        with self.log.open("ab") as out:
            formatted = subprocess.run(command, stdout=out, stderr=out, timeout=120, check=False)
        if formatted.returncode != 0:
            self._release()
            message = f"formatting the test broker failed ({formatted.returncode}): {self._tail()}"
            raise RuntimeError(message)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_properties(self) -> Path:
        properties = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.directory / "data",
            "auto.create.topics.enable": "false",
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # A restarted node must wait for its previous session to expire before it may
            # register again (9 s by default): keep that short, the test waits through it.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 1500,
        }
        path = self.directory / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        return path

    async def start(self) -> None:
        """Launch the broker and return once it serves metadata (or fail with its log)."""
        process = self._launch()
        try:
            async with asyncio.timeout(START_DEADLINE_S):
                while not await self._answers():
                    if process.poll() is not None:
                        raise RuntimeError(f"test broker exited: {self._tail()}")
                    await asyncio.sleep(0.2)
        except TimeoutError:
            self.kill()
            message = f"test broker not ready in {START_DEADLINE_S} s: {self._tail()}"
            raise RuntimeError(message) from None

    def _launch(self) -> subprocess.Popen[bytes]:
        command = self._stack.java("kafka.Kafka", str(self._properties), heap="256m")
        self._release()  # the broker binds them now
        with self.log.open("ab") as out:
            # Its own session, so kill() takes the JVM and anything it spawned.
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        return self._process

    def _release(self) -> None:
        for sock in self._reserved:
            sock.close()
        self._reserved = []

    def kill(self) -> None:
        """Crash the broker (SIGKILL) and wait until it is gone."""
        self._release()
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    async def _answers(self) -> bool:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refusals while it boots
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        try:
            await client.bootstrap()
            return bool(client.cluster.brokers())
        except Exception:
            return False
        finally:
            await client.close()
            logging.getLogger("aiokafka").setLevel(logging.NOTSET)

    def _tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-30:])


def _reserve_ports(count: int) -> list[socket.socket]:
    """`count` distinct loopback ports, each held by a bound (not listening) socket."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
