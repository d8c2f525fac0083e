"""Configure once: `init()` builds the process's logger from arguments or `TAILPIPE_*`
variables, starts its publisher, and makes it the one `get_logger()` returns.

    import pipeline.logger as tailpipe

    log = tailpipe.init(service="billing")        # or TAILPIPE_SERVICE=billing
    log.info("started", port=8000)

| argument      | variable               | default                                        |
|---------------|------------------------|------------------------------------------------|
| `service`     | `TAILPIPE_SERVICE`     | required: the rows' `script`                   |
| `release`     | `TAILPIPE_RELEASE`     | none; stored as the script version             |
| `environment` | `TAILPIPE_ENVIRONMENT` | none; stored as the script tag `environment:X` |
| `level`       | `TAILPIPE_LOG_LEVEL`   | `info`: debug lines and timers stay home       |
| `in_app`      | `TAILPIPE_IN_APP`      | none; installed packages whose frames are yours |

The publisher, unless one is given: Kafka when `TAILPIPE_KAFKA_BOOTSTRAP` is set (with the
other `TAILPIPE_KAFKA_*` settings and `TAILPIPE_TOPIC`, as the server reads them), else JSON
lines on stdout.

Arguments win over variables. A value that cannot be used raises `SettingsError`, whose one
line names the argument or variable: a misconfigured logger should fail where it is
configured, at boot, not lose records quietly later.

The Kafka publisher runs on an event loop of its own, in a daemon thread started here. `publish`
is thread-safe and never waits, so the application's threads and loop never wait on Kafka, and
`init` works the same at import time, in a lifespan, in a script and in a worker: no loop needs
to be running. While Kafka is unreachable the publisher connects in the background and buffers
(see `publish.KafkaPublisher`): `init` never fails because Kafka is down. `shutdown()` (also
registered with `atexit`) delivers what is buffered, for at most `grace` seconds.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pipeline.errors import SettingsError
from pipeline.logger.bound import Logger, tailpipe_logger
from pipeline.logger.core import Processor
from pipeline.logger.entry import LEVEL_ALIASES, LEVELS
from pipeline.logger.publish import KafkaPublisher, Publisher, StreamPublisher

SERVICE = "TAILPIPE_SERVICE"
RELEASE = "TAILPIPE_RELEASE"
ENVIRONMENT = "TAILPIPE_ENVIRONMENT"
LEVEL = "TAILPIPE_LOG_LEVEL"
BOOTSTRAP = "TAILPIPE_KAFKA_BOOTSTRAP"
IN_APP = "TAILPIPE_IN_APP"


_log = logging.getLogger("tailpipe.logger")
_lock = threading.Lock()
_current: _Running | None = None


def init(
    service: str | None = None,
    *,
    release: str | None = None,
    environment: str | None = None,
    level: str | None = None,
    publisher: Publisher | None = None,
    processors: Iterable[Processor] = (),
    in_app: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Logger:
    """The process's logger, configured from the arguments, then `TAILPIPE_*` variables (see
    the module). Calling it again reconfigures the same logger: loggers obtained before (a
    module-level `get_logger()` that ran ahead of a lifespan's `init`) follow the new settings,
    and the previous publisher is shut down."""
    env = os.environ if environ is None else environ
    name = _text(service, env, SERVICE, required=True)
    assert name is not None
    chosen = _level(level, env)
    runner: _Thread | None = None
    if publisher is None:
        if env.get(BOOTSTRAP):
            from pipeline.settings import load

            settings = load(environ=env)
            kafka = KafkaPublisher(settings)
            runner = _Thread(kafka)
            publisher = kafka
            where = f"Kafka at {settings.kafka_bootstrap}, topic {settings.topic}"
        else:
            publisher = StreamPublisher()
            where = f"stdout ({BOOTSTRAP} is not set)"
    else:
        where = type(publisher).__name__
    in_app_name = "in_app"
    if in_app is None:
        in_app_name = IN_APP
        in_app = [p.strip() for p in env.get(IN_APP, "").split(",") if p.strip()]
    try:
        logger = tailpipe_logger(
            name,
            publisher=publisher,
            level=chosen,
            processors=processors,
            release=_text(release, env, RELEASE),
            environment=_text(environment, env, ENVIRONMENT),
            in_app=in_app,
        )
    except ValueError as exc:  # a package name that is not one (`stack.InApp`)
        given = in_app if isinstance(in_app, str) else ",".join(map(str, in_app))
        raise SettingsError(in_app_name, "top-level package names such as billing", given) from exc
    global _current
    old_runner: _Thread | None = None
    with _lock:
        previous = _current
        if previous is not None:
            old_runner = previous.runner
            previous.logger.core.adopt(logger.core)
            logger, previous.runner = previous.logger, runner
        else:
            _current = _Running(logger, runner)
    if previous is not None and old_runner is not None:
        old_runner.stop(grace=5.0)
    if runner is not None:
        runner.start()
    _log.info("tailpipe logger for %s publishing to %s, level %s", name, where, chosen)
    return logger


def get_logger(**context: Any) -> Logger:
    """The logger `init` made, bound to `context`. Before `init`: one configured from the
    variables alone (stdout unless `TAILPIPE_KAFKA_BOOTSTRAP` is set), made on first use."""
    running = _current
    if running is None:
        with _lock:
            running = _current
        if running is None:
            init(service=os.environ.get(SERVICE) or Path(sys.argv[0]).stem or "python")
            running = _current
            assert running is not None
    return running.logger.bind(**context) if context else running.logger


def shutdown(grace: float = 10.0) -> None:
    """Deliver what is buffered (for at most `grace` seconds), then stop the publisher `init`
    started. Safe to call twice, and from any thread; called at exit. From async code:
    `await asyncio.to_thread(shutdown)`."""
    global _current
    with _lock:
        running, _current = _current, None
    if running is not None:
        running.stop(grace)


class _Running:
    def __init__(self, logger: Logger, runner: _Thread | None) -> None:
        self.logger = logger
        self.runner = runner

    def stop(self, grace: float) -> None:
        if self.runner is not None:
            self.runner.stop(grace)
        else:
            flush = getattr(self.logger.publisher, "flush", None)
            if callable(flush) and not asyncio.iscoroutinefunction(flush):
                flush()


class _Thread:
    """A `KafkaPublisher` on an event loop of its own, in a daemon thread."""

    def __init__(self, publisher: KafkaPublisher) -> None:
        self.publisher = publisher
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tailpipe-logger", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.publisher.start(), self._loop)

    def stop(self, grace: float) -> None:
        if not self._thread.is_alive():
            return
        done: Future[None] = asyncio.run_coroutine_threadsafe(
            self.publisher.close(grace), self._loop
        )
        try:
            done.result(timeout=grace + 5.0)
        except Exception as exc:  # a shutdown must finish, whatever the publisher did
            _log.warning("tailpipe logger: closing the publisher failed: %r", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)


def _text(
    given: str | None, env: Mapping[str, str], variable: str, *, required: bool = False
) -> str | None:
    """An argument, else its variable; named in the error as the user gave it."""
    value = given if given is not None else env.get(variable)
    argument = variable.removeprefix("TAILPIPE_").lower()
    name = variable if given is None else argument
    if value is None or value == "":
        if required:
            raise SettingsError(f"{argument} (or {variable})", "a name", value)
        return None
    if not value.isprintable() or len(value) > _MAX_NAME:
        raise SettingsError(name, f"printable text of at most {_MAX_NAME} characters", value)
    return value


_MAX_NAME = 200


def _level(given: str | None, env: Mapping[str, str]) -> str:
    raw = given if given is not None else env.get(LEVEL, "info")
    level = raw.strip().lower()
    level = LEVEL_ALIASES.get(level, level)
    if level not in LEVELS:
        name = "level" if given is not None else LEVEL
        raise SettingsError(name, f"one of {', '.join(LEVELS)} or warning", raw)
    return level


atexit.register(shutdown)
