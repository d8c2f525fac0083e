"""How the logger shows an exception's stack: chained causes and contexts as Python's traceback
shows them, exception groups, and the framework frames before the application's code
collapsed (in-app frames, as Sentry marks them)."""

from __future__ import annotations

import json
import os
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from pipeline.formats.decode import decode
from pipeline.logger import tailpipe_logger
from pipeline.logger.stack import CAUSE, CONTEXT, MAX_CHAIN, InApp, format_stack
from tests.logger.test_envelope import Captured, captured_logger

HERE = os.path.abspath(__file__)


def caught(run: Any) -> BaseException:
    try:
        run()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def lookup(key: str) -> str:
    return {"a": "1"}[key]


def wrapped_cause() -> None:
    try:
        lookup("missing_user")
    except KeyError as error:
        raise RuntimeError("user lookup failed") from error


def test_a_cause_is_shown_before_the_exception_as_python_shows_it() -> None:
    log, captured = captured_logger()
    try:
        wrapped_cause()
    except RuntimeError:
        log.exception("failed")
    (exc,) = captured.only()["exceptions"]
    assert exc["name"] == "RuntimeError"
    assert exc["message"] == "user lookup failed"
    stack = exc["stack"]
    first, second = stack.split(f"\n\n{CAUSE}\n\n")
    assert first.startswith(f'  File "{HERE}", line ')
    assert "in lookup" in first
    assert 'return {"a": "1"}[key]' in first
    assert first.endswith("KeyError: 'missing_user'")  # the missing key, not a secret
    assert "in wrapped_cause" in second
    assert 'raise RuntimeError("user lookup failed") from error' in second
    # The exception's own line is the entry's name and message, not repeated in the stack.
    assert "RuntimeError: user lookup failed" not in stack
    (invocation,) = decode(captured.values[0])
    assert invocation.exceptions[0].stack == stack  # stored as sent


def test_an_exception_raised_while_handling_another_shows_its_context() -> None:
    def handle() -> None:
        try:
            int("x")
        except ValueError:
            json.loads("{")  # a bug in the handler

    stack = format_stack(caught(handle))
    earlier, later = stack.split(f"\n\n{CONTEXT}\n\n")
    assert earlier.endswith("ValueError: invalid literal for int() with base 10: 'x'")
    assert "json.loads" in later
    assert os.path.join("json", "decoder.py") in later


def test_from_none_suppresses_the_context() -> None:
    def handle() -> None:
        try:
            int("x")
        except ValueError:
            raise LookupError("clean") from None

    stack = format_stack(caught(handle))
    assert CONTEXT not in stack
    assert "ValueError" not in stack
    assert stack.startswith(f'  File "{HERE}"')


def test_a_cause_that_was_never_raised_is_its_line_alone() -> None:
    def fail() -> None:
        raise RuntimeError("outer") from OSError(5, "Input/output error")

    stack = format_stack(caught(fail))
    assert stack.startswith(f"OSError: [Errno 5] Input/output error\n\n{CAUSE}\n\n  File ")


def test_cycles_and_long_chains_are_bounded() -> None:
    a, b = ValueError("a"), KeyError("b")
    a.__context__, b.__context__ = b, a
    stack = format_stack(a)  # no frames: the two lines, the cycle closed once
    assert stack == f"KeyError: 'b'\n\n{CONTEXT}\n\n"[:-2].rstrip()

    def chain(depth: int) -> None:
        try:
            if depth:
                chain(depth - 1)
            else:
                raise ValueError("bottom")
        except Exception as error:
            raise RuntimeError(f"level {depth}") from error

    stack = format_stack(caught(lambda: chain(40)))
    assert stack.startswith("  [earlier exceptions of this chain omitted]\n")
    assert stack.count(CAUSE) == MAX_CHAIN - 1
    assert "ValueError: bottom" not in stack
    # The newest are kept: level 40 is the exception itself, 31 the oldest shown.
    assert "RuntimeError: level 31\n" in stack
    assert "RuntimeError: level 30\n" not in stack


def test_an_exception_group_keeps_its_sub_exceptions() -> None:
    def fail() -> None:
        errors: list[Exception] = [caught(lambda: lookup("k")), OSError("disk")]  # type: ignore[list-item]
        raise ExceptionGroup("two failed", [*errors, ExceptionGroup("inner", [ValueError("v")])])

    log, captured = captured_logger()
    try:
        fail()
    except ExceptionGroup:
        log.exception("batch failed")
    (exc,) = captured.only()["exceptions"]
    assert exc["name"] == "ExceptionGroup"
    assert exc["message"] == "two failed (3 sub-exceptions)"
    stack = exc["stack"]
    assert "in fail" in stack
    assert "  [sub-exception 1 of 3]\n" in stack
    assert "in lookup" in stack
    assert "  [sub-exception 2 of 3]\nOSError: disk" in stack
    assert "  [sub-exception 3 of 3]\nExceptionGroup: inner (1 sub-exception)" in stack
    assert "  [sub-exception 1 of 1]\nValueError: v" in stack

    wide = ExceptionGroup("many", [ValueError(str(i)) for i in range(40)])
    stack = format_stack(wide)
    assert stack.count("[sub-exception ") == 10
    assert stack.endswith("  [30 more sub-exceptions omitted]")

    deep: Exception = ValueError("leaf")
    for level in range(8):
        deep = ExceptionGroup(f"level {level}", [deep])
    assert "nested too deep, omitted" in format_stack(deep)


# --- in-app frames -----------------------------------------------------------------------------


@pytest.fixture
def framework(tmp_path: Path) -> Iterator[ModuleType]:
    """A little framework installed in a site-packages directory: it calls the application's
    handler through a few layers and catches what it raises, as a server does."""
    package = tmp_path / "site-packages" / "fakefw"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            def serve(handler):
                try:
                    return route(handler)
                except Exception as exc:
                    return exc

            def route(handler):
                return middleware(handler)

            def middleware(handler):
                return handler()
            """
        )
    )
    sys.path.insert(0, str(package.parent))
    try:
        import fakefw  # type: ignore[import-not-found]

        yield fakefw
    finally:
        sys.path.remove(str(package.parent))
        sys.modules.pop("fakefw", None)


def handler() -> None:
    lookup("nobody")


def test_framework_frames_before_the_application_are_collapsed(framework: ModuleType) -> None:
    exc = framework.serve(handler)
    assert isinstance(exc, KeyError)
    stack = format_stack(exc)
    lines = stack.splitlines()
    assert lines[0] == "  [3 framework frames omitted]"
    assert lines[1] == f'  File "{HERE}", line {handler.__code__.co_firstlineno + 1}, in handler'
    assert "fakefw" not in stack
    # A package named as the application's keeps its frames, installed or not.
    mine = format_stack(exc, InApp(frozenset({"fakefw"})))
    assert mine.startswith('  File "')
    assert "fakefw" in mine.splitlines()[0]
    assert "omitted" not in mine


def test_frames_after_the_first_in_app_frame_are_all_kept(framework: ModuleType) -> None:
    def handler_into_the_stdlib() -> None:
        json.loads("{")

    stack = format_stack(framework.serve(handler_into_the_stdlib))
    lines = stack.splitlines()
    assert lines[0] == "  [3 framework frames omitted]"
    assert "in handler_into_the_stdlib" in lines[1]
    assert os.path.join("json", "decoder.py") in stack  # where it failed, library or not


def test_an_exception_with_no_in_app_frame_keeps_them_all() -> None:
    exc = caught(lambda: json.loads("{"))
    frames = exc.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename == HERE:
        frames = frames.tb_next  # drop this file's frames: only the stdlib's are left
    stack = format_stack(exc.with_traceback(frames))
    assert "omitted" not in stack
    assert stack.startswith('  File "')
    assert "json" in stack.splitlines()[0]


def test_the_job_decorator_frame_is_not_the_application() -> None:
    log, captured = captured_logger()

    @log.job("nightly")
    def nightly() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        nightly()
    stack = captured.only()["exceptions"][0]["stack"]
    assert stack.splitlines()[0] == "  [1 framework frame omitted]"
    assert "in nightly" in stack.splitlines()[1]


def test_what_counts_as_in_app() -> None:
    in_app = InApp()
    stdlib = sysconfig.get_path("stdlib")
    assert in_app(HERE)
    assert in_app("/srv/app/billing/api.py")
    assert in_app("<string>")  # python -c, exec'd code
    assert not in_app("<frozen importlib._bootstrap>")
    assert not in_app(os.path.join(stdlib, "asyncio", "events.py"))
    assert not in_app(json.__file__)
    assert not in_app("/usr/lib/python3/dist-packages/requests/api.py")
    assert not in_app("/app/.venv/lib/python3.11/site-packages/starlette/routing.py")
    assert not in_app(sys.modules["pipeline.logger.middleware"].__file__ or "")
    billing = InApp(frozenset({"billing", "single"}))
    assert billing("/app/.venv/lib/python3.11/site-packages/billing/api.py")
    assert billing("/app/.venv/lib/python3.11/site-packages/single.py")
    assert not billing("/app/.venv/lib/python3.11/site-packages/billing_extras/api.py")
    for bad in ("billing.api", "", "a-b", 3):
        with pytest.raises(ValueError, match="in_app"):
            InApp(frozenset({bad}))  # type: ignore[arg-type]


def test_the_stack_of_a_published_item_is_what_the_decoder_stores() -> None:
    captured = Captured()
    log = tailpipe_logger("svc", publisher=captured)
    try:
        wrapped_cause()
    except RuntimeError:
        log.exception("failed")
    item = orjson.loads(captured.values[0])
    (invocation,) = decode(captured.values[0])
    assert invocation.exceptions[0].stack == item["exceptions"][0]["stack"]
    assert invocation.exceptions[0].name == "RuntimeError"


def test_a_logger_told_its_packages_keeps_their_frames(framework: ModuleType) -> None:
    captured = Captured()
    log = tailpipe_logger("svc", publisher=captured, in_app=["fakefw"])
    log.error("failed", exc_info=framework.serve(handler))
    stack = captured.only()["exceptions"][0]["stack"]
    assert "omitted" not in stack
    assert "fakefw" in stack.splitlines()[0]
    default, captured_default = captured_logger()
    default.error("failed", exc_info=framework.serve(handler))
    stack = captured_default.only()["exceptions"][0]["stack"]
    assert stack.startswith("  [3 framework frames omitted]\n")
    with pytest.raises(ValueError, match="in_app"):
        tailpipe_logger("svc", in_app=["billing.api"])
