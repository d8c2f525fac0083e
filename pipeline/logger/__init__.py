"""tailpipe's structured logger for Python services.

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
    "Timer",
    "Trace",
    "tailpipe_logger",
]
