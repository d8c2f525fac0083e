"""A FastAPI handler's exception as tailpipe stores it: a real FastAPI app served through its
ASGI interface (httpx's ASGITransport) behind `TailpipeMiddleware`, the published trace item
read back by the pipeline's own transform (`inspect`: the rows it would write).

The stack must start in the application (Starlette's and FastAPI's frames collapsed into one
line), keep the chained cause, and the same bug must keep its fingerprint however many
framework layers it was raised through (a different FastAPI/Starlette version, one more
middleware)."""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount

from pipeline.logger import TailpipeMiddleware
from pipeline.logger.stack import CAUSE
from pipeline.transform.extract import Extractor
from pipeline.transform.fingerprint import fingerprint
from pipeline.transform.inspect import inspect
from pipeline.transform.transformer import Transformer
from tests.logger.test_envelope import Captured, captured_logger

HERE = os.path.abspath(__file__)
TS = 1_764_374_400_000
USERS = {"u_1": "Ada"}
_OMITTED = re.compile(r"^  \[(\d+) framework frames omitted\]$", re.M)


class UserNotFound(Exception):
    pass


def find_user(uid: str) -> str:
    try:
        return USERS[uid]
    except KeyError as error:
        raise UserNotFound(f"no user {uid}") from error


def api() -> FastAPI:
    app = FastAPI()

    @app.get("/users/{uid}")
    async def get_user(uid: str) -> dict[str, Any]:
        return {"name": find_user(uid)}

    return app


async def request(app: Any, path: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """One GET through the middleware: the status, the published item, the stored rows."""
    log, captured = captured_logger("users-api")
    transport = httpx.ASGITransport(app=TailpipeMiddleware(app, log), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://users.test") as client:
        response = await client.get(path)
    item = captured.only()
    rows = stored(captured)
    assert log.errors == 0
    return response.status_code, item, rows


def stored(captured: Captured) -> list[dict[str, Any]]:
    """The tail_logs rows the pipeline would write for what was published."""
    transformer = Transformer(Extractor.from_files())
    lines = inspect(transformer, [orjson.dumps(orjson.loads(v)) for v in captured.values], TS)
    return [x["row"] for x in lines if x.get("table") == "tail_logs"]


async def test_a_handlers_chained_exception_is_stored_from_the_handler() -> None:
    status, item, rows = await request(api(), "/users/u_42")
    assert status == 500
    assert item["outcome"] == "exception"
    (exc,) = item["exceptions"]
    assert exc["name"] == "UserNotFound"
    assert exc["message"] == "no user u_42"
    stack = exc["stack"]
    cause, raised = stack.split(f"\n\n{CAUSE}\n\n")

    # The cause, KeyError, with its frames: raised in find_user, caught there.
    assert cause.splitlines()[0].startswith(f'  File "{HERE}", line ')
    assert cause.splitlines()[0].endswith(", in find_user")
    assert "return USERS[uid]" in cause
    assert re.search(r"\nKeyError: '.*'$", cause)

    # The exception itself: the framework's frames collapsed, then the handler's.
    lines = raised.splitlines()
    omitted = _OMITTED.match(lines[0])
    assert omitted, lines[0]
    assert int(omitted[1]) >= 10  # Starlette's middleware stack and FastAPI's routing
    assert lines[1].startswith(f'  File "{HERE}", line ')
    assert lines[1].endswith("in get_user")
    assert 'return {"name": find_user(uid)}' in raised
    assert lines[-1].strip() == 'raise UserNotFound(f"no user {uid}") from error'
    assert "site-packages" not in stack
    assert "pipeline/logger" not in stack  # the middleware's own frame is not the app's
    assert len(stack.splitlines()) <= 16

    # Stored as published, under the fingerprint of its name and message.
    (row,) = [r for r in rows if r["level"] == "exception"]
    assert row["stack"] == stack
    assert row["exception_name"] == "UserNotFound"
    assert row["fingerprint"] == fingerprint("UserNotFound", "no user u_42")


async def test_more_framework_layers_change_neither_the_stack_nor_the_fingerprint() -> None:
    plain = api()
    layered = api()
    layered.add_middleware(GZipMiddleware)
    layered.add_middleware(TrustedHostMiddleware, allowed_hosts=["users.test"])
    mounted = Starlette(routes=[Mount("/v2", app=layered)])

    results = [await request(plain, "/users/u_42"), await request(mounted, "/v2/users/u_42")]
    stacks = [item["exceptions"][0]["stack"] for _, item, _ in results]
    counts = [int(m[1]) for m in (_OMITTED.search(s) for s in stacks) if m]
    assert len(counts) == 2
    assert counts[1] > counts[0]  # more frames omitted, that is all
    assert _OMITTED.sub("", stacks[0]) == _OMITTED.sub("", stacks[1])
    fingerprints = {r["fingerprint"] for _, _, rows in results for r in rows if r["fingerprint"]}
    assert len(fingerprints) == 1
