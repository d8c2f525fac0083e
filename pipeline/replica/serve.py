"""`tailpipe run`: one replica: the consumer, and its status port (metrics, health, readiness).

Binds the status port first (a taken port fails fast), warns when aiokafka runs without its C
extensions, and turns SIGTERM and SIGINT into a clean stop: flush, store offsets, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from collections.abc import Callable

from pipeline import __version__, compiled, logconfig, native
from pipeline.alerts.rules import Rules
from pipeline.errors import DependencyError
from pipeline.replica.consumer import Consumer, Policy
from pipeline.replica.status import StatusServer
from pipeline.settings import Settings
from pipeline.transform.transformer import Transformer

log = logging.getLogger("tailpipe.replica")


def kafka_extensions_loaded() -> bool:
    """Whether aiokafka decodes record batches with its C extensions. Without them (a wheel
    missing for this platform, or AIOKAFKA_NO_EXTENSIONS set) fetching costs several times more
    CPU, and the poll loop becomes the bottleneck."""
    from aiokafka.record.default_records import DefaultRecordBatch

    module: str = DefaultRecordBatch.__module__
    return module.startswith("aiokafka.record._crecords")


def serve(settings: Settings) -> int:
    """Run one replica until SIGTERM or SIGINT; flush, store offsets, exit 0."""
    from pipeline.transform.extract import Extractor

    rules = Rules.load(settings.alert_rules)  # a bad file stops here, exit 2
    listener = _listen(settings.metrics_port)

    async def main() -> None:
        transformer = Transformer(Extractor.from_files(), rules, dedup=settings.dedup)
        consumer = Consumer(settings, transformer, Policy.from_settings(settings), rules)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        status = StatusServer.create(consumer.metrics, consumer.readiness, settings.metrics_port)
        serving = asyncio.create_task(status.serve(sockets=[listener]), name="tailpipe-status")
        try:
            await consumer.run()
        finally:
            status.should_exit = True
            await serving
        t = consumer.totals
        log.info("replica stopped", extra={
            "messages": t.messages, "flushes": t.flushes, "events": t.events,
            "log_rows": t.logs, "dead_letters": t.dead,
        })  # fmt: skip

    logconfig.configure(settings.log_format, settings.log_level)
    log.info("replica starting", extra={
        "version": __version__, "topic": settings.topic, "group": settings.group,
        "status_port": listener.getsockname()[1],
    })  # fmt: skip
    if not kafka_extensions_loaded():
        log.warning(
            "aiokafka C extensions are NOT loaded: Kafka record decoding runs in pure Python "
            "and ingest will be several times slower; reinstall aiokafka from a binary wheel "
            "for this platform (and unset AIOKAFKA_NO_EXTENSIONS)"
        )
    if not compiled():
        log.warning(
            "the hot path runs as plain Python, not compiled: each event costs about a third "
            "more CPU; install tailpipe from its wheel, or run `make` in a checkout"
        )
    if not native.loaded():
        log.warning(
            "the native core (pipeline.native) is not built: decoding, rows, redaction scans "
            "and COPY encoding run their Python versions, half again as much CPU per event; "
            "install tailpipe from its wheel, or run `make` in a checkout"
        )
    collect_less_often()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
    return 0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency, on every platform but Windows),
    else asyncio's. A replica is one thread waking for Kafka fetches, PostgreSQL replies and
    its status port: in `make bench` (300,000 events, alternated three times with the plain
    dump of the same topic) uvloop took it from 0.85 to 0.91 of the dump's rate, and its peak
    RSS from 204 to 177 MiB."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


GC_THRESHOLDS = (100_000, 20, 100)
"""Look for reference cycles after 100,000 new container objects, not CPython's 700. A replica
makes a few dozen per event (decoded JSON, rows), which reference counting frees: the transform
makes no cycles. The count is net of what was freed, and a batch of 20,000 rows in flight holds
about 26,000 (5.2 per message on synth), two batches while one flushes: below the threshold,
the collector never walks the batches at all. Measured with `gc.callbacks` in `make bench`'s
replica (300,000 messages): CPython's 700, 12% of its CPU; 10,000, 126 collections and 6.9%
(2.9 µs per event); 100,000, 2 collections and 0.3 µs per event. What it can cost is cyclic
garbage left for longer: at most 100,000 objects, some 20 MB, before the collector runs. The
cycles that do occur (exception tracebacks, asyncio) are still found, a little later."""


def collect_less_often() -> None:
    """Set `GC_THRESHOLDS`, and move what startup built (modules, rules, compiled regexes) out of
    the collector's sight: it lives as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _listen(port: int) -> socket.socket:
    """Bind the status port before anything else starts, so a taken port fails fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError as exc:
        sock.close()
        problem = f"TAILPIPE_METRICS_PORT {port}: cannot listen: {exc.strerror}"
        raise DependencyError(problem) from None
    sock.listen(64)
    sock.setblocking(False)
    return sock
