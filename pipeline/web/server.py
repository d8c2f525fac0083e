"""The HTTP servers of `tailpipe api` and `tailpipe collect`: an app on uvicorn until SIGTERM.

Both run as the main process of a container or a systemd unit, where a stop is a SIGTERM and
a clean stop must exit 0 (the unit's `RestartPreventExitStatus`, the orchestrator's view of
a rollout). uvicorn shuts down gracefully on the signal, then raises it again so that the
process ends by the signal's default action: exit status -15. `_Server` keeps the graceful
shutdown and lets `run` return instead.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        wanted = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in wanted}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run(app: ASGIApp, host: str, port: int) -> int:
    """Serve `app` until SIGTERM or SIGINT: 0 after a clean stop, else uvicorn's failure."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,  # one line per request would cost more than the request itself
        server_header=False,
        log_config=None,  # its lines go through pipeline.logconfig, like every other
    )
    server = _Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind or start
        return exc.code if isinstance(exc.code, int) else 1
    return 0 if server.started else 1
