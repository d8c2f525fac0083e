"""tailpipe's structured logger for Python services (the guide: docs/logger.md).

    import pipeline.logger as tailpipe

    log = tailpipe.init(service="billing")        # or TAILPIPE_SERVICE, TAILPIPE_KAFKA_BOOTSTRAP...
    app.add_middleware(tailpipe.TailpipeMiddleware)

Or wired by hand:

    from pipeline.logger import KafkaPublisher, TailpipeHandler, TailpipeMiddleware, tailpipe_logger

    publisher = KafkaPublisher(settings)          # or StreamPublisher() (stdout), the default
    await publisher.start()
    log = tailpipe_logger(service="billing", publisher=publisher)
    logging.getLogger().addHandler(TailpipeHandler(log))
    app = TailpipeMiddleware(app, log)            # one trace item per request

    log.bind(repo="acme/api").info("scan queued", files=12)
    with log.timer("clone"): ...
    async with log.job("nightly-scan", schedule="0 3 * * *"): ...

Records are tailpipe envelopes (`"envelope": "tailpipe/1"` on a Workers trace item), redacted by
`pipeline.transform.redact` before they leave the process. This package imports neither asyncpg nor
aiobotocore, and aiokafka only when a `KafkaPublisher` starts.
"""

from pipeline.logger.bound import Logger, tailpipe_logger
from pipeline.logger.core import Core, Processor
from pipeline.logger.handler import TailpipeHandler
from pipeline.logger.job import Job
from pipeline.logger.middleware import TailpipeMiddleware
from pipeline.logger.publish import KafkaPublisher, Publisher, StreamPublisher
from pipeline.logger.setup import get_logger, init, shutdown
from pipeline.logger.structlog_processor import TailpipeProcessor
from pipeline.logger.timer import Timer
from pipeline.logger.trace import ENVELOPE_VERSION, MAX_BYTES, MAX_LINES, Trace

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_BYTES",
    "MAX_LINES",
    "Core",
    "Job",
    "KafkaPublisher",
    "Logger",
    "Processor",
    "Publisher",
    "StreamPublisher",
    "TailpipeHandler",
    "TailpipeMiddleware",
    "TailpipeProcessor",
    "Timer",
    "Trace",
    "get_logger",
    "init",
    "shutdown",
    "tailpipe_logger",
]
