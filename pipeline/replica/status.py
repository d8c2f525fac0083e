"""A replica's own HTTP port (`TAILPIPE_METRICS_PORT`): `/metrics`, `/healthz`, `/readyz`.

Served by uvicorn on the consumer's event loop, so `/healthz` answering also says the loop is
not stuck. `/readyz` asks the replica (a callable, so this module knows nothing of consumers)
and answers 503 with the reasons when it is not ready.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.replica.metrics import Metrics

log = logging.getLogger("tailpipe.status")

Readiness = Callable[[], dict[str, Any]]
"""Returns {"ready": bool, ...details}; the details are shown as they are."""


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")


def create_app(metrics: Metrics, readiness: Readiness) -> Starlette:
    async def metrics_page(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        state = readiness()
        return _json(state, 200 if state.get("ready") else 503)

    return Starlette(
        routes=[
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


class StatusServer(uvicorn.Server):
    """uvicorn without its signal handling: the replica owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @classmethod
    def create(
        cls, metrics: Metrics, readiness: Readiness, port: int, host: str = "0.0.0.0"
    ) -> StatusServer:
        config = uvicorn.Config(
            create_app(metrics, readiness),
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            server_header=False,
            log_config=None,
            log_level="warning",
        )
        return cls(config)
