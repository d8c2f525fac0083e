"""Configure once (`init`, `get_logger`, `shutdown`), the default level, release and
environment on every item, and LLM usage (`llm_usage`, OpenTelemetry's GenAI names)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import pipeline.logger as tailpipe
from pipeline.errors import SettingsError
from pipeline.formats.decode import decode
from pipeline.logger import tailpipe_logger
from pipeline.transform.extract import Extractor
from pipeline.transform.extract.api_calls import ApiCall
from tests.logger.test_envelope import Captured


@pytest.fixture(autouse=True)
def no_logger_left() -> Iterator[None]:
    yield
    tailpipe.shutdown()


def calls(captured: Captured) -> list[ApiCall]:
    """What the pipeline's extractor finds in what the logger published."""
    extractor = Extractor.from_files()
    found: list[ApiCall] = []
    for value in captured.values:
        for invocation in decode(value):
            found.extend(extractor.extract(invocation).api_calls)
    return found


# --- the default level --------------------------------------------------------------------


def test_the_default_level_is_info_so_debug_lines_and_timers_stay_home() -> None:
    captured = Captured()
    log = tailpipe_logger("svc", publisher=captured)
    log.debug("noise")
    with log.timer("clone"):
        pass
    log.info("kept")
    assert [item["logs"][0]["message"] for item in captured.items] == [["kept"]]


@pytest.mark.parametrize(
    ("alias", "level"), [("warning", "warn"), ("WARNING", "warn"), ("critical", "error")]
)
def test_level_aliases_are_accepted(alias: str, level: str) -> None:
    captured = Captured()
    log = tailpipe.init(service="svc", level=alias, publisher=captured)
    log.info("dropped")
    log.emit(level, "kept")
    assert len(captured.items) == 1


# --- init ----------------------------------------------------------------------------------


def test_init_reads_the_environment_and_every_item_carries_release_and_environment() -> None:
    captured = Captured()
    environ = {
        "TAILPIPE_SERVICE": "billing",
        "TAILPIPE_RELEASE": "2026.12.1+3f9c2ab",
        "TAILPIPE_ENVIRONMENT": "production",
        "TAILPIPE_LOG_LEVEL": "warning",
    }
    log = tailpipe.init(publisher=captured, environ=environ)
    assert tailpipe.get_logger() is log
    log.info("below the level")
    log.warn("kept", order=7)
    with log.job("nightly"):
        log.error("in a job")
    first, job = captured.items
    for item in (first, job):
        assert item["scriptName"] == "billing"
        assert item["scriptVersion"] == {"tag": "2026.12.1+3f9c2ab"}
        assert item["scriptTags"] == ["environment:production"]
    (invocation,) = decode(captured.values[0])
    assert invocation.script == "billing"
    assert invocation.script_version == "2026.12.1+3f9c2ab"
    assert invocation.script_tags == ("environment:production",)


def test_in_app_packages_come_from_the_environment_too() -> None:
    log = tailpipe.init(
        publisher=Captured(),
        environ={"TAILPIPE_SERVICE": "s", "TAILPIPE_IN_APP": "billing, orders"},
    )
    assert log.core.in_app.packages == frozenset({"billing", "orders"})


def test_arguments_win_over_the_environment() -> None:
    captured = Captured()
    environ = {"TAILPIPE_SERVICE": "from-env", "TAILPIPE_ENVIRONMENT": "staging"}
    log = tailpipe.init("from-arg", environment="dev", publisher=captured, environ=environ)
    log.info("x")
    (item,) = captured.items
    assert item["scriptName"] == "from-arg"
    assert item["scriptTags"] == ["environment:dev"]
    assert "scriptVersion" not in item


@pytest.mark.parametrize(
    ("kwargs", "environ", "named"),
    [
        ({}, {}, "service (or TAILPIPE_SERVICE)"),
        ({}, {"TAILPIPE_SERVICE": "s", "TAILPIPE_LOG_LEVEL": "verbose"}, "TAILPIPE_LOG_LEVEL"),
        ({"service": "s", "level": "loud"}, {}, "level"),
        ({"service": "s"}, {"TAILPIPE_RELEASE": "a\nb"}, "TAILPIPE_RELEASE"),
        ({"service": "s", "environment": "x" * 201}, {}, "environment"),
        ({"service": "s"}, {"TAILPIPE_IN_APP": "billing, a.b"}, "TAILPIPE_IN_APP"),
        ({"service": "s", "in_app": ["-x"]}, {}, "in_app"),
    ],
)
def test_a_bad_setting_names_itself(
    kwargs: dict[str, Any], environ: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        tailpipe.init(publisher=Captured(), environ=environ, **kwargs)
    assert str(raised.value).startswith(f"{named}: expected ")
    assert raised.value.exit_code == 2


def test_without_kafka_settings_init_writes_json_lines_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = tailpipe.init(environ={"TAILPIPE_SERVICE": "cli"})
    log.info("hello")
    tailpipe.shutdown()
    out = capsys.readouterr().out
    assert '"scriptName":"cli"' in out
    assert '"hello"' in out


def test_get_logger_binds_context_and_works_before_init(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAILPIPE_SERVICE", "lazy")
    monkeypatch.delenv("TAILPIPE_KAFKA_BOOTSTRAP", raising=False)
    tailpipe.get_logger(job="j1").info("first")
    assert '"scriptName":"lazy"' in capsys.readouterr().out


def test_a_logger_obtained_before_init_follows_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAILPIPE_SERVICE", "early")
    monkeypatch.delenv("TAILPIPE_KAFKA_BOOTSTRAP", raising=False)
    early = tailpipe.get_logger(component="db")  # a module-level logger, imported first
    captured = Captured()
    later = tailpipe.init(service="billing", level="warning", publisher=captured)
    early.info("below the new level")
    early.warn("follows init")
    assert tailpipe.get_logger() is later
    (item,) = captured.items
    assert item["scriptName"] == "billing"
    assert item["logs"][0]["context"] == {"component": "db"}
    assert capsys.readouterr().out == ""


async def test_the_middleware_uses_the_logger_init_made_after_it_was_built() -> None:
    async def hello(request: Request) -> PlainTextResponse:
        tailpipe.get_logger().info("handled")
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello", hello)])
    app.add_middleware(tailpipe.TailpipeMiddleware)
    captured = Captured()
    tailpipe.init(service="web", release="r1", publisher=captured)  # as a lifespan would
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        assert (await client.get("/hello")).text == "hi"
    (item,) = captured.items
    assert item["event"]["request"]["method"] == "GET"
    assert item["scriptVersion"] == {"tag": "r1"}
    assert item["logs"][0]["message"] == ["handled"]


# --- LLM usage -----------------------------------------------------------------------------


def test_llm_usage_counts_and_prices_every_kind_of_token() -> None:
    log, captured = tailpipe_logger("ai", publisher=(c := Captured())), c
    log.llm_usage("claude-haiku-4-5", 10_000, 500, cache_read=2_000, cache_write=1_000)
    (call,) = calls(captured)
    assert call.model == "claude-haiku-4-5"
    assert call.provider == "anthropic"
    assert (call.tokens_in, call.tokens_out) == (7_000, 500)
    assert (call.cache_read_tokens, call.cache_write_tokens) == (2_000, 1_000)
    # $1 input, $0.10 cache read, $1.25 cache write, $5 output per million (prices.toml)
    assert call.cost_usd == Decimal("0.007") + Decimal("0.0002") + Decimal("0.00125") + Decimal(
        "0.0025"
    )
    (entry,) = captured.items[0]["logs"]
    assert entry["message"] == ["llm claude-haiku-4-5: 10000 in, 500 out"]


def test_llm_usage_takes_an_sdk_usage_object_as_it_is() -> None:
    class Usage:  # the shape of anthropic.types.Usage: input without the cache tokens
        def model_dump(self) -> dict[str, int]:
            return {
                "input_tokens": 7_000,
                "output_tokens": 500,
                "cache_read_input_tokens": 2_000,
                "cache_creation_input_tokens": 1_000,
            }

    captured = Captured()
    tailpipe_logger("ai", publisher=captured).llm_usage("claude-haiku-4-5", usage=Usage())
    (call,) = calls(captured)
    assert (call.tokens_in, call.cache_read_tokens, call.cache_write_tokens) == (
        7_000,
        2_000,
        1_000,
    )
    assert call.cost_usd == Decimal("0.01095")


def test_an_unpriced_model_stays_unpriced_and_a_call_without_counts_is_still_counted() -> None:
    captured = Captured()
    log = tailpipe_logger("ai", publisher=captured)
    log.llm_usage("in-house-model-7", 100, 20)
    log.llm_usage("claude-haiku-4-5", error=True, duration_ms=30_000.0)
    unpriced, failed = calls(captured)
    assert unpriced.cost_usd is None
    assert unpriced.tokens_in == 100
    assert failed.tokens_in is None
    assert failed.cost_usd is None
    assert not failed.ok
    assert captured.items[1]["logs"][0]["level"] == "error"


def test_opentelemetry_genai_attributes_in_plain_fields_are_a_call() -> None:
    captured = Captured()
    fields: dict[str, Any] = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1_200,
        "gen_ai.usage.output_tokens": 80,
        "gen_ai.usage.cache_read.input_tokens": 1_000,
    }
    tailpipe_logger("ai", publisher=captured).info("chat", **fields)
    (call,) = calls(captured)
    assert call.provider == "openai"
    assert call.model == "gpt-4o-2024-08-06"  # the model that answered
    assert (call.tokens_in, call.cache_read_tokens, call.tokens_out) == (200, 1_000, 80)


def test_genai_counts_that_contradict_each_other_are_counted_unpriced() -> None:
    captured = Captured()
    tailpipe_logger("ai", publisher=captured).llm_usage("claude-haiku-4-5", 100, 10, cache_read=500)
    (call,) = calls(captured)
    assert (call.tokens_in, call.cache_read_tokens, call.cost_usd) == (None, None, None)


async def test_the_middleware_delivers_what_is_buffered_when_the_app_shuts_down() -> None:
    """uvicorn ends the process by re-raising SIGTERM, so `atexit` would not run: the
    middleware shuts the logger down at the end of the ASGI lifespan instead."""

    class Flushed(Captured):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    publisher = Flushed()
    tailpipe.init(service="web", publisher=publisher)
    app = Starlette(routes=[])
    app.add_middleware(tailpipe.TailpipeMiddleware)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.shutdown.complete":
            assert publisher.flushes == 1, "delivered before the server hears of the end"

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert publisher.flushes == 1
