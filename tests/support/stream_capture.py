"""Record what the real Workers runtime sends a streaming Tail Worker, as JSON lines.

    .venv/bin/python -m tests.support.stream_capture OUT.jsonl [/route ...]

Runs the pinned workerd on tests/workerd/stream.capnp (the test producer, tailed by
tests/workerd/stream-capture.js), drives the producer's routes (all of `test_workerd.ROUTES`
by default), and writes every event envelope the capture Worker posted, in the order they
arrived, one per line. The fixtures under tests/fixtures/tail_stream/ were made with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.support.workers import ASSETS, workerd_binary

CONFIG = ASSETS / "stream.capnp"
SETTLE_S = 3.0
"""After the last route: the outcome of an invocation comes after its response, and the
Durable Object's alarm after that."""


def capture(out: Path, routes: list[str]) -> int:
    events: list[Any] = []
    lock = threading.Lock()

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with lock:
                events.extend(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, "CAPTURE_URL": f"http://127.0.0.1:{server.server_port}/"}
    socket = f"producer=127.0.0.1:{port}"
    argv = [str(workerd_binary()), "serve", str(CONFIG), "config", "-s", socket]
    workerd = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        for route in routes:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=10):
                        break
                except urllib.error.HTTPError:
                    break  # an answer: the route fails on purpose (/throw, /not-found)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)  # workerd still starting
        time.sleep(SETTLE_S)
    finally:
        workerd.terminate()
        workerd.wait(30)
        server.shutdown()
    with out.open("w") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")  # a lone surrogate stays an escape
    return len(events)


if __name__ == "__main__":
    from tests.test_workerd import ROUTES

    target = Path(sys.argv[1])
    n = capture(target, sys.argv[2:] or list(ROUTES))
    print(f"{n} events written to {target}")
