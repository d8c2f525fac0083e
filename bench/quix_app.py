"""Quix Streams with its PostgreSQL sink, as its documentation sets it up: the comparison.

    .local/bench/quix-venv/bin/python bench/quix_app.py --bootstrap HOST:PORT --topic T
        --group G --host H --port P --dbname D --user U --schema S --table T --state-dir DIR

Run by `bench/ingest.py` in its own virtualenv (`pip install 'quixstreams[postgresql]'`), as a
child process (see `bench/child.py`). An Application reading the topic from the beginning (its
default is the end) with JSON values, and a `PostgreSQLSink` with its defaults: one row per
message, one column per top-level key (objects and arrays as JSONB), plus the message's key and
timestamp, a multi-row INSERT per partition and checkpoint (every 5 s). The sink is subclassed
only to report, after each committed write, how many rows it has stored. Stopped by SIGTERM,
which Quix handles.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quixstreams import Application
from quixstreams.sinks import SinkBatch
from quixstreams.sinks.community.postgresql import PostgreSQLSink

from bench.child import progress


class CountingSink(PostgreSQLSink):  # type: ignore[misc]
    """The PostgreSQL sink, reporting the rows it has committed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stored = 0

    def write(self, batch: SinkBatch) -> None:
        super().write(batch)  # one transaction, committed when this returns
        self.stored += batch.size
        progress(self.stored)


def main(args: argparse.Namespace) -> None:
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,  # unused (no stateful step), but created: not in the cwd
    )
    topic = app.topic(args.topic, value_deserializer="json")
    sink = CountingSink(
        host=args.host,
        port=args.port,
        dbname=args.dbname,
        user=args.user,
        password=os.environ.get("PGPASSWORD", ""),
        table_name=args.table,
        schema_name=args.schema,
    )
    app.dataframe(topic).sink(sink)
    app.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    names = (
        "bootstrap",
        "topic",
        "group",
        "host",
        "dbname",
        "user",
        "schema",
        "table",
        "state-dir",
    )
    for name in names:
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--port", type=int, required=True)
    main(parser.parse_args())
