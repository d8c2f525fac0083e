"""The Kafka read alone: a bare aiokafka consumer that reads the whole topic and does nothing.

    .venv/bin/python bench/kafka_read.py --messages N

Run by `bench/ingest.py` as a child process (see `bench/child.py`), configured like `tailpipe
run` by the TAILPIPE_* variables (topic, group, Kafka). It joins its own consumer group with
the consumer options of `tailpipe run`, reads from the beginning, reports its count after each
fetch, and waits for SIGTERM once it has read N messages.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from bench.child import progress, stop_event  # noqa: E402
from pipeline.kafka import clients  # noqa: E402
from pipeline.settings import Settings, load  # noqa: E402


def consumer(settings: Settings) -> AIOKafkaConsumer:
    """A consumer of the settings' topic in the settings' group, from the beginning, with the
    fetch sizes of `tailpipe run`'s consumer and no offset commits."""
    kafka = AIOKafkaConsumer(
        **clients.client_options(settings),
        group_id=settings.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=32 << 20,
    )
    kafka.subscribe([settings.topic])
    return kafka


async def main(messages: int) -> None:
    stop = stop_event()
    kafka = consumer(load())
    await kafka.start()
    try:
        seen = 0
        while seen < messages and not stop.is_set():
            fetched = await kafka.getmany(timeout_ms=1000, max_records=100_000)
            if fetched:
                seen += sum(len(records) for records in fetched.values())
                progress(seen)
        await stop.wait()
    finally:
        await kafka.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, required=True, help="stop reading after these")
    asyncio.run(main(parser.parse_args().messages))
