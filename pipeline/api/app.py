"""The API as an ASGI app: routes, auth, the error shapes, and the PostgreSQL pool.

Errors are JSON `{"error": "..."}` naming what was wrong: 401 and 403 for tokens, 404, and 422
for a bad or unknown parameter (with `detail`, FastAPI's list of problems). A database that
does not answer is a 503, never a 500.

`/healthz`, `/readyz` and `/metrics` need no token: what they tell is the process's own state,
never data (pipeline/api/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from pipeline import __version__
from pipeline.api import (
    activity,
    alerts,
    auth,
    cursor,
    error_groups,
    invocations,
    logs,
    models,
    performance,
    traces,
)
from pipeline.api.auth import Tokens
from pipeline.api.metrics import Metrics
from pipeline.api.params import known_only
from pipeline.errors import SettingsError
from pipeline.postgres.connect import server_settings
from pipeline.settings import Settings
from pipeline.web import metrics as http_metrics

log = logging.getLogger("tailpipe.api")

STATIC = Path(__file__).parent / "static"
DASHBOARD_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""The dashboard loads nothing from elsewhere and runs no inline script: a log line that
holds markup can never become code."""

_DEPENDENCIES = [Depends(auth.reader), Depends(known_only)]
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid token", "model": models.Problem},
    422: {"description": "a parameter is invalid, unknown or refused"},
    503: {"description": "the database is unavailable", "model": models.Problem},
}


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _problem(status: int, message: str, **extra: Any) -> Response:
    return ORJSONResponse({"error": message, **extra}, status_code=status)


def create_app(settings: Settings) -> FastAPI:
    """Raises SettingsError when no token is configured: an open API is a mistake."""
    tokens = Tokens(settings.api_read_tokens, settings.api_write_tokens)
    if not tokens:
        raise SettingsError("TAILPIPE_API_READ_TOKENS", "at least one token", "")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            settings.postgres_dsn,
            min_size=0,  # start without the database; /readyz says when it is there
            max_size=settings.api_pool_size,
            timeout=settings.connect_timeout,
            command_timeout=30,
            # Filters and windows change the best plan (a rare word wants the trigram index,
            # a common one the time index): plan each query for its values, never generically.
            server_settings={
                **server_settings(settings),
                "plan_cache_mode": "force_custom_plan",
            },
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(
        docs_url=None,  # served below from the vendored Swagger UI, not from a CDN
        redoc_url=None,
        title="tailpipe",
        version=__version__,
        description="Logs, errors, performance, API usage, scans and alerts of Workers-style "
        "tail events. Every `/api` route needs `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.state.tokens = tokens
    app.state.cursor_key = cursor.key_for(settings.api_read_tokens + settings.api_write_tokens)
    for module in (logs, error_groups, performance, activity, invocations, traces, alerts):
        app.include_router(module.router, dependencies=_DEPENDENCIES, responses=_PROBLEMS)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in exc.errors()
        ]
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return _problem(422, "; ".join(problems), detail=detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        response = _problem(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(asyncpg.DataError)
    async def refused(request: Request, exc: Exception) -> Response:
        # A value the database cannot take (what validation let through): the caller's input.
        return _problem(422, f"a parameter holds a value the database refuses: {exc}")

    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)
    @app.exception_handler(asyncio.TimeoutError)
    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable: %s", exc)
        return _problem(503, "the database is unavailable; retry later")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="tailpipe API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        """The web dashboard: static files over this API, signed in with an API token."""
        return FileResponse(
            STATIC / "dashboard" / "index.html",
            headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache"},
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        try:
            async with asyncio.timeout(settings.connect_timeout):
                async with request.app.state.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except Exception as exc:
            return _problem(503, f"database unreachable: {type(exc).__name__}")
        return ORJSONResponse({"ready": True})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_page(request: Request) -> Response:
        """Prometheus, without a token: counts and latencies by route template only."""
        return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # Last, once every route is there: their templates are the `route` label's values. The
    # routers' own routes, since the app's list holds each included router as one entry.
    routers = (
        r
        for module in (logs, error_groups, performance, activity, invocations, traces)
        for r in module.router.routes
    )
    app.state.metrics = Metrics.create(http_metrics.RouteTable([*routers, *app.routes]))
    app.add_middleware(http_metrics.Instrumented, metrics=app.state.metrics)
    return app
