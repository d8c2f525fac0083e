"""W3C trace context: `traceparent` parsed and formatted, continued by the middleware, passed on
by the httpx hook to a second real ASGI app, and carried by every record of the request."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.formats.decode import decode
from pipeline.logger import TailpipeMiddleware
from pipeline.logger.propagation import (
    SpanContext,
    continue_trace,
    current,
    httpx_event_hooks,
    incoming,
    outgoing_headers,
    parse_traceparent,
)
from tests.conftest import ROOT
from tests.logger.test_envelope import Captured, captured_logger

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
HEADER = f"00-{TRACE}-{PARENT}-01"


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper case is not the format
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # the forbidden version
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has nothing after the flags
        f"00-{TRACE}-{PARENT}-0g",
        f"00_{TRACE}-{PARENT}-01",
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"0-{TRACE}-{PARENT}-01",
        f"01-{TRACE}-{PARENT}-01x",  # a later version: what follows must start with "-"
        "",
        "garbage",
    ],
)
def test_a_malformed_traceparent_is_refused(value: str) -> None:
    assert parse_traceparent(value) is None


def test_traceparent_parsed_and_formatted() -> None:
    assert parse_traceparent(HEADER) == SpanContext(TRACE, PARENT, 0x01)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00") == SpanContext(TRACE, PARENT, 0)
    # A later version is read as 00 where it can be (the specification's forward rule).
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-comes-next") == SpanContext(
        TRACE, PARENT, 1
    )
    assert SpanContext(TRACE, PARENT, 0x01).traceparent == HEADER
    with pytest.raises(ValueError, match="not a trace and span id"):
        SpanContext("0" * 32, PARENT)


def test_incoming_continues_a_valid_caller_and_starts_a_trace_otherwise() -> None:
    span = incoming([("traceparent", HEADER), ("tracestate", "congo=t61rcWkgMzE")])
    assert (span.trace_id, span.parent_id, span.flags) == (TRACE, PARENT, 1)
    assert span.span_id not in (PARENT, "0" * 16)
    assert len(span.span_id) == 16
    assert span.tracestate == "congo=t61rcWkgMzE"
    for headers in (
        [("traceparent", "00-bad")],
        [("traceparent", HEADER), ("traceparent", HEADER)],  # two: ambiguous, ignored
        [],
    ):
        fresh = incoming(headers)
        assert fresh.trace_id != TRACE
        assert fresh.parent_id is None
        assert fresh.tracestate is None
    assert incoming([]).trace_id != incoming([]).trace_id, "random ids"


def test_outgoing_headers_follow_the_span_in_progress() -> None:
    assert outgoing_headers() == {}
    assert current() is None
    with continue_trace(HEADER) as span:
        assert current() is span
        assert outgoing_headers() == {"traceparent": f"00-{TRACE}-{span.span_id}-01"}
        with continue_trace() as inner:  # a child of the span in progress
            assert (inner.trace_id, inner.parent_id) == (TRACE, span.span_id)
    assert current() is None


def echo_app() -> tuple[Starlette, Captured, list[str | None]]:
    """The second service: records the traceparent it received; logs one line."""
    log, captured = captured_logger("inventory")
    received: list[str | None] = []

    async def stock(request: Request) -> Response:
        received.append(request.headers.get("traceparent"))
        log.info("stock checked")
        return JSONResponse({"left": 3})

    app = Starlette(routes=[Route("/stock", stock)])
    return TailpipeMiddleware(app, log), captured, received  # type: ignore[return-value]


def front_app(inventory: Starlette) -> tuple[Starlette, Captured, list[asyncio.Task[None]]]:
    """The first service: calls the second with httpx (the propagation hook), logs in the
    request and in a background task that outlives it."""
    log, captured = captured_logger("checkout")
    background: list[asyncio.Task[None]] = []
    release = asyncio.Event()

    async def later() -> None:
        await release.wait()
        log.info("receipt mailed")  # after the request ended: standalone, same span

    async def buy(request: Request) -> Response:
        log.info("buying")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=inventory),
            base_url="http://inventory",
            event_hooks=httpx_event_hooks(),
        ) as client:
            left = (await client.get("/stock")).json()["left"]
        background.append(asyncio.create_task(later()))
        return JSONResponse({"left": left})

    app = Starlette(routes=[Route("/buy", buy, methods=["POST"])])
    front = TailpipeMiddleware(app, log)
    front.release = release  # type: ignore[attr-defined]
    return front, captured, background  # type: ignore[return-value]


async def post(app: Starlette, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://checkout"
    ) as client:
        return await client.post("/buy", headers=headers)


async def test_a_trace_crosses_two_services_and_every_record_carries_it() -> None:
    inventory, inventory_items, received = echo_app()
    front, front_items, background = front_app(inventory)
    response = await post(front, {"traceparent": HEADER, "tracestate": "congo=t61rcWkgMzE"})
    assert response.status_code == 200
    front.release.set()  # type: ignore[attr-defined]
    await asyncio.gather(*background)

    request, mailed = front_items.items
    mine = request["spanContext"]
    assert mine["traceId"] == TRACE
    assert mine["parentSpanId"] == PARENT
    assert mine["spanId"] != PARENT
    # The second service received the same trace, with the first one's span as its parent.
    assert received == [f"00-{TRACE}-{mine['spanId']}-01"]
    [theirs] = inventory_items.items
    assert theirs["spanContext"]["traceId"] == TRACE
    assert theirs["spanContext"]["parentSpanId"] == mine["spanId"]
    assert theirs["logs"][0]["message"] == ["stock checked"]
    # Logged after the request ended, in a task it started: a record of its own, same span.
    assert mailed["event"] == {"log": {}}
    assert mailed["logs"][0]["message"] == ["receipt mailed"]
    assert mailed["spanContext"] == {"traceId": TRACE, "spanId": mine["spanId"],
                                     "parentSpanId": PARENT}  # fmt: skip

    # And the decoder reads the ids from what was published.
    [decoded] = decode(front_items.values[0])
    assert (decoded.trace_id, decoded.span_id) == (TRACE, mine["spanId"])


async def test_a_malformed_traceparent_starts_a_new_trace() -> None:
    inventory, inventory_items, received = echo_app()
    front, front_items, background = front_app(inventory)
    response = await post(front, {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"})
    assert response.status_code == 200
    front.release.set()  # type: ignore[attr-defined]
    await asyncio.gather(*background)
    mine = front_items.items[0]["spanContext"]
    assert mine["traceId"] != TRACE.lower()
    assert "parentSpanId" not in mine
    assert received == [f"00-{mine['traceId']}-{mine['spanId']}-01"]
    assert inventory_items.only()["spanContext"]["traceId"] == mine["traceId"]


async def test_without_a_traceparent_each_request_is_a_new_trace() -> None:
    inventory, _, _ = echo_app()
    traces = set()
    for _ in range(2):
        front, items, background = front_app(inventory)
        assert (await post(front, {})).status_code == 200
        front.release.set()  # type: ignore[attr-defined]
        await asyncio.gather(*background)
        traces.add(items.items[0]["spanContext"]["traceId"])
    assert len(traces) == 2


def test_jobs_are_spans_and_records_outside_any_carry_none() -> None:
    log, captured = captured_logger("worker")
    log.info("outside")
    with continue_trace(HEADER):
        with log.job("nightly"):
            log.info("inside")
        log.info("in the span, outside the job")
    with log.job("alone"):
        pass
    outside, job, standalone, alone = captured.items
    assert "spanContext" not in outside
    assert job["spanContext"]["traceId"] == TRACE
    assert standalone["spanContext"]["traceId"] == TRACE
    assert job["spanContext"]["parentSpanId"] == standalone["spanContext"]["spanId"]
    assert alone["spanContext"]["traceId"] != TRACE
    assert "parentSpanId" not in alone["spanContext"]


def test_a_hook_leaves_a_callers_own_traceparent_and_adds_none_outside_a_span() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tp": request.headers.get("traceparent")})

    with httpx.Client(
        transport=httpx.MockTransport(handler), event_hooks=httpx_event_hooks(sync=True)
    ) as client:
        assert client.get("http://x/").json() == {"tp": None}
        with continue_trace(HEADER) as span:
            assert client.get("http://x/").json() == {"tp": span.traceparent}
            own = client.get("http://x/", headers={"traceparent": HEADER}).json()
            assert own == {"tp": HEADER}


def test_the_logger_does_not_import_httpx() -> None:
    code = (
        "import sys, pipeline.logger, pipeline.logger.propagation;"
        "print(sorted(m for m in ('httpx', 'asyncpg', 'aiobotocore') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)  # fmt: skip
    assert orjson.loads(done.stdout) == []
