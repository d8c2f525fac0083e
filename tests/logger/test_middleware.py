"""The ASGI middleware, driven by hand: a raw ASGI app, a scope dict, receive and send."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from pipeline.logger import Logger, TailpipeMiddleware, tailpipe_logger
from pipeline.logger.middleware import ASGIApp, Receive, Send
from tests.logger.test_envelope import Captured, captured_logger

TOKEN = "ghp_" + "Mw7q" * 9
Message = MutableMapping[str, Any]


def http_scope(
    path: str = "/v1/repos/acme/api/scan",
    query: bytes = b"page=2&token=q-s3cret",
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers
        if headers is not None
        else [
            (b"host", b"repo-api.internal"),
            (b"content-type", b"application/json"),
            (b"Authorization", b"Bearer " + TOKEN.encode()),
            (b"cookie", b"session=abc123"),
            (b"cookie", b"theme=dark"),
            (b"x-request-id", b"req_7Yq2"),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
        ],
        "server": ("10.0.0.5", 8443),
        "client": ("10.0.0.9", 51234),
    }


async def call(app: ASGIApp, scope: dict[str, Any]) -> list[Message]:
    """One request through `app`; returns what the app sent."""
    sent: list[Message] = []
    body = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if body:
            return body.pop()
        await asyncio.sleep(3600)  # a real server would send http.disconnect eventually
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def respond(send: Send, status: int = 202, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


def make_app(log: Logger, behaviour: str) -> ASGIApp:
    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        log.bind(request_id="req_7Yq2").info("handling %s", scope["path"])
        log.api_call("github", "/repos/{owner}/{repo}", status=200, duration_ms=183)
        if behaviour == "raise-before":
            raise ValueError(f"bad input with {TOKEN}")
        await respond(send)
        if behaviour == "raise-after":
            raise RuntimeError("after the response started")
        if behaviour == "log-and-raise":
            try:
                raise KeyError("k")
            except KeyError:
                log.exception("lookup failed")
                raise

    return app


async def test_one_trace_item_per_request() -> None:
    log, captured = captured_logger("repo-api")
    app = TailpipeMiddleware(make_app(log, "ok"), log)
    sent = await call(app, http_scope())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    item = captured.only()
    assert item["scriptName"] == "repo-api"
    assert item["outcome"] == "ok"
    assert item["event"] == {
        "request": {
            "url": "https://repo-api.internal/v1/repos/acme/api/scan?page=2&token=[REDACTED:query]",
            "method": "POST",
            "headers": {
                "host": "repo-api.internal",
                "content-type": "application/json",
                "authorization": "Bearer [REDACTED:github]",  # the rule knows the token
                "cookie": "[REDACTED:header]",
                "x-request-id": "req_7Yq2",
                "accept": "text/html, application/json",
            },
        },
        "response": {"status": 202},
    }
    assert [entry["message"][0] for entry in item["logs"]] == [
        "handling /v1/repos/acme/api/scan",
        "github /repos/{owner}/{repo} 200 in 183ms",
    ]
    assert item["logs"][0]["context"] == {"request_id": "req_7Yq2"}
    assert item["logs"][1]["record"]["type"] == "api_call"
    assert item["exceptions"] == []
    assert TOKEN.encode() not in captured.values[0]
    assert b"q-s3cret" not in captured.values[0]
    assert b"abc123" not in captured.values[0]


async def test_handler_raising_records_the_exception_and_re_raises() -> None:
    log, captured = captured_logger()
    app = TailpipeMiddleware(make_app(log, "raise-before"), log)
    with pytest.raises(ValueError, match="bad input"):
        await call(app, http_scope())
    item = captured.only()
    assert item["outcome"] == "exception"
    assert item["event"]["response"] == {"status": 500}
    (exc,) = item["exceptions"]
    assert exc["name"] == "ValueError"
    assert exc["message"] == "bad input with [REDACTED:github]"
    assert "in app" in exc["stack"]
    # The middleware's own frame is not the application's: collapsed (see logger.stack).
    assert exc["stack"].startswith("  [1 framework frame omitted]\n  File ")
    assert len(item["logs"]) == 2  # what was logged before the error is kept
    assert TOKEN.encode() not in captured.values[0]


async def test_raising_after_the_response_started_keeps_its_status() -> None:
    log, captured = captured_logger()
    app = TailpipeMiddleware(make_app(log, "raise-after"), log)
    with pytest.raises(RuntimeError):
        await call(app, http_scope())
    item = captured.only()
    assert item["outcome"] == "exception"
    assert item["event"]["response"] == {"status": 202}
    assert item["exceptions"][0]["name"] == "RuntimeError"


async def test_an_exception_logged_then_re_raised_is_recorded_once() -> None:
    log, captured = captured_logger()
    app = TailpipeMiddleware(make_app(log, "log-and-raise"), log)
    with pytest.raises(KeyError):
        await call(app, http_scope())
    item = captured.only()
    assert [e["name"] for e in item["exceptions"]] == ["KeyError"]
    assert item["logs"][-1]["level"] == "error"


async def test_concurrent_requests_get_their_own_traces() -> None:
    log, captured = captured_logger()

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        n = int(scope["path"].rsplit("/", 1)[1])
        log.info("start", n=n)
        await asyncio.sleep(0.001 * (10 - n))
        await asyncio.to_thread(log.info, "in a thread", n=n)
        log.info("end", n=n)
        await respond(send, 200 + n)

    wrapped = TailpipeMiddleware(app, log)
    await asyncio.gather(*(call(wrapped, http_scope(path=f"/r/{n}", query=b"")) for n in range(10)))
    items = captured.items
    assert len(items) == 10
    for item in items:
        status = item["event"]["response"]["status"]
        assert {entry["context"]["n"] for entry in item["logs"]} == {status - 200}
        assert len(item["logs"]) == 3
        assert item["event"]["request"]["url"].endswith(f"/r/{status - 200}")


async def test_logs_outside_requests_are_published_alone() -> None:
    log, captured = captured_logger()
    app = TailpipeMiddleware(make_app(log, "ok"), log)
    log.info("before")
    await call(app, http_scope())
    log.info("after")
    events = [next(iter(item["event"])) for item in captured.items]
    assert events == ["log", "request", "log"]


async def test_lifespan_and_websocket_pass_through() -> None:
    log, captured = captured_logger()
    seen: list[str] = []

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        log.info("not in a request")

    wrapped = TailpipeMiddleware(app, log)
    for kind in ("lifespan", "websocket"):
        await wrapped({"type": kind}, _never, _discard)
    assert seen == ["lifespan", "websocket"]
    assert [item["event"] for item in captured.items] == [{"log": {}}, {"log": {}}]


async def test_a_cancelled_request_is_canceled_and_re_raised() -> None:
    log, captured = captured_logger()
    started = asyncio.Event()

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        log.info("waiting")
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(call(TailpipeMiddleware(app, log), http_scope()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    item = captured.only()
    assert item["outcome"] == "canceled"
    assert item["exceptions"] == []
    assert item["logs"][0]["message"] == ["waiting"]


async def test_a_broken_publisher_never_fails_the_request() -> None:
    class Broken:
        def publish(self, value: bytes, key: bytes | None = None) -> None:
            raise ConnectionError("kafka down")

    log = tailpipe_logger("svc", publisher=Broken())
    sent = await call(TailpipeMiddleware(make_app(log, "ok"), log), http_scope())
    assert sent[0]["status"] == 202
    assert log.errors == 1


async def test_url_without_host_header_and_with_root_path() -> None:
    log, captured = captured_logger()

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await respond(send, 204)

    scope = http_scope(path="/a b", query=b"", method="GET", headers=[])
    scope.update(raw_path=None, root_path="/api", scheme="http", server=("127.0.0.1", 80))
    await call(TailpipeMiddleware(app, log), scope)
    request = captured.only()["event"]["request"]
    assert request == {"url": "http://127.0.0.1/api/a%20b", "method": "GET", "headers": {}}


async def test_no_response_and_no_exception_leaves_the_status_out() -> None:
    log, captured = captured_logger()

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        return None

    await call(TailpipeMiddleware(app, log), http_scope())
    assert "response" not in captured.only()["event"]


async def _never() -> Message:
    await asyncio.sleep(3600)
    return {}


async def _discard(message: Message) -> None:
    return None


def test_captured_is_a_publisher() -> None:
    # The test double satisfies the Publisher protocol the middleware's logger needs.
    from pipeline.logger import Publisher

    publisher: Publisher = Captured()
    publisher.publish(b"{}", None)
