"""Ingest benchmark: `tailpipe run` against a plain dump, Quix Streams and the bare Kafka read.

    .venv/bin/python bench/ingest.py [--messages 1000000] [--workload eight-scripts|one-script]
        [--script-keys]
        [--replicas 1,2] [--only tailpipe,tailpipe-nodedup,dump,dump-live-trgm,quix,kafka]
        [--settle 5]
        [--only-pipeline] [--profile out.svg] [--keep] [--timeout 1800] [--schema-sql SQL]

One invocation fills one fresh topic of 6 partitions with `--messages` synthetic trace items
(`synth`, seed 7, about 0.8 KB and 3 log lines each), each keyed by its identity as every
producer keys it (`one-script`: every item renamed to one script first; `--script-keys`: keyed
by script name instead, as producers did before, so one busy script sits on one partition).
Then it runs each consumer in turn, each as child processes with its own consumer group
(and, but the bare read, its own fresh schema), each reading the whole topic:

  tailpipe       `tailpipe run`, one replica (`--replicas 1,2`: then two in one group too),
                 until `pipeline_offsets` covers every message;
  tailpipe-nodedup  the same, one replica, with TAILPIPE_DEDUP=off: what deduplication costs;
  dump           `bench/dump.py`: aiokafka getmany + orjson + tailpipe's raw rows built
                 straight from the items, binary COPY, one transaction per fetched batch;
                 the search index, built per ended day, is built and measured after it;
  dump-live-trgm the same, with a trigram index on all of tail_logs.message kept row by row
                 (the schema before 0009), to show what that cost;
  quix           Quix Streams with its PostgreSQL sink, defaults (`bench/quix_app.py`), in
                 its own virtualenv `.local/bench/quix-venv`, until its table holds every message;
  kafka          `bench/kafka_read.py`: the Kafka read alone.

Before each run: sync, CHECKPOINT, `--settle` seconds of pause. For each: events/s from start
until every message is stored; the consumer's CPU (utime + stime from /proc, at that moment)
and PostgreSQL's (every postgres process, before and after) per event; the consumer's peak RSS
(VmHWM). Prints one table and the project's targets (met or not), writes everything as JSON
under `.local/bench/`, and drops the schemas, topic and groups (`--keep` keeps them). A
benchmark, not a test: exit status 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.consumers import NAMES, QUIX_STATE, install_quix, py_spy, runs  # noqa: E402
from bench.prepare import (  # noqa: E402
    PARTITIONS,
    WORKLOADS,
    drop_kafka,
    drop_schemas,
    execute,
    fill,
    migrate,
    partition_counts,
    vacuum,
)
from bench.report import scaling, table, targets  # noqa: E402
from bench.runner import measure  # noqa: E402
from pipeline.settings import Settings, load  # noqa: E402


def kafka_extensions() -> str | None:
    """None when aiokafka's C record classes are in use, else what is wrong."""
    from aiokafka.record.default_records import DefaultRecordBatch

    module = DefaultRecordBatch.__module__
    return None if module.startswith("aiokafka.record._crecords") else module


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _summary(run: dict[str, Any]) -> str:
    if "error" in run:
        return f"  failed: {run['error']}"
    cpu = run["consumer_cpu_us_per_event"]
    return (
        f"  {run['events_per_s']:,.0f} events/s in {run['seconds']:.1f} s, consumer "
        f"{cpu if cpu is None else round(cpu, 1)} us/event, PostgreSQL "
        f"{run['postgres_cpu_us_per_event']:.1f} us/event, peak RSS {run['peak_rss_mib']} MiB, "
        f"stored {run['stored']}"
    )


async def _done_with(base: Settings, schema: str, keep: bool) -> None:
    """After a run, its tables must cost the next run nothing (autovacuum would find them):
    dropped, or with `--keep` vacuumed now."""
    try:
        if not keep:
            await drop_schemas(base, [schema])
        else:
            await vacuum(base, schema)
    except Exception as exc:  # the stack went away: the next run will say so
        say(f"  could not drop or vacuum {schema}: {type(exc).__name__}: {exc}")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    problem = kafka_extensions()
    if problem is not None:
        raise SystemExit(f"aiokafka C extensions not loaded (DefaultRecordBatch from {problem})")
    run_id = uuid.uuid4().hex[:8]
    base = load()
    shared = replace(
        base,
        topic=f"bench_events_{run_id}",
        alerts_topic=f"bench_alerts_{run_id}",
        group=f"bench_{run_id}",
    )
    result: dict[str, Any] = {
        "run_id": run_id,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": args.messages,
        "workload": args.workload,
        "script_keys": args.script_keys,
        "seed": args.seed,
        "partitions": PARTITIONS,
        "settle_s": args.settle,
        "replicas": args.replicas,
        "selected": args.only,
        "topic": shared.topic,
        "runs": {},
        "skipped": {},
    }
    quix: Path | None = None
    if "quix" in args.only:
        say("installing Quix Streams into .local/bench/quix-venv (once)")
        quix, error = await asyncio.to_thread(install_quix)
        if error is not None:
            say(f"  failed: {error}")
            result["skipped"]["quix"] = result["quix_install_error"] = error
    spy = None
    if args.profile is not None:
        spy, error = await asyncio.to_thread(py_spy, args.profile)
        if error is not None:
            say(f"py-spy unavailable, no profile: {error}")
            result["profile_error"] = error
    schema_sql = (args.schema_sql,) if args.schema_sql else ()
    plan = runs(shared, run_id, args.messages, args.only, args.replicas, quix, schema_sql)
    logs = args.out / "logs" / run_id
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for run in plan:
            if run.migrate is not None:
                await asyncio.to_thread(migrate, run.settings)
                for sql in run.migrate:
                    await execute(run.settings, sql)
        say(f"filling {shared.topic} with {args.messages:,} messages ({args.workload})")
        result["fill"] = await fill(
            shared, args.messages, args.seed, args.workload, args.script_keys
        )
        result["fill"]["partition_messages"] = await partition_counts(shared)
        say(f"  {result['fill']['messages_per_s']:,.0f} messages/s")
        for run in plan:
            say(f"{run.name}: {run.label} (settling {args.settle:g} s first)")
            try:
                result["runs"][run.name] = await measure(
                    run,
                    args.messages,
                    settle_s=args.settle,
                    timeout_s=args.timeout,
                    logs=logs,
                    spy=spy if run.name == "tailpipe" else None,
                )
            except Exception as exc:  # one failed run must not cost the others
                error = f"{type(exc).__name__}: {exc}"
                result["runs"][run.name] = {"label": run.label, "error": error}
            say(_summary(result["runs"][run.name]))
            await _done_with(base, run.settings.postgres_schema, args.keep)
    finally:
        shutil.rmtree(QUIX_STATE, ignore_errors=True)
        if not args.keep:
            try:
                await drop_schemas(base, [run.settings.postgres_schema for run in plan])
                groups = [run.settings.group for run in plan]
                await drop_kafka(base, [shared.topic, shared.alerts_topic], groups)
            except Exception as exc:  # the stack went away: say so, keep the results
                result["cleanup_error"] = f"{type(exc).__name__}: {exc}"
                say(f"cleanup failed: {result['cleanup_error']}")
    result["targets"] = targets(result["runs"], args.replicas)
    result["scaling"] = scaling(result["runs"], args.replicas)
    if args.profile is not None and "profile_error" not in result:
        result["profile"] = str(args.profile)
    return result


def _names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(NAMES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(NAMES)}; got {value!r}")
    return list(dict.fromkeys(names))  # in the order given: runs are measured in it


def _counts(value: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in value.split(",")})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1 or counts[0] != 1:
        raise argparse.ArgumentTypeError(f"replica counts starting with 1, e.g. 1,2; got {value!r}")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1_000_000, help="topic size")
    parser.add_argument("--workload", choices=WORKLOADS, default="eight-scripts")
    parser.add_argument(
        "--script-keys",
        action="store_true",
        help="key messages by script name, as producers did before keying by identity",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--settle", type=float, default=5.0, help="pause before each run (s)")
    parser.add_argument("--replicas", type=_counts, default=[1], help="tailpipe runs, e.g. 1,2")
    parser.add_argument("--only", type=_names, default=list(NAMES), help=", ".join(NAMES))
    parser.add_argument("--only-pipeline", action="store_true", help="same as --only tailpipe")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run at most")
    parser.add_argument("--profile", type=Path, help="py-spy `tailpipe run` into this file")
    parser.add_argument("--schema-sql", help="SQL run in the fresh tailpipe schemas (all runs)")
    parser.add_argument("--keep", action="store_true", help="keep schemas, topic and groups")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    args = parser.parse_args(argv)
    if args.only_pipeline:
        args.only = ["tailpipe"]
    return args


if __name__ == "__main__":
    arguments = parse_args()
    outcome = asyncio.run(main(arguments))
    arguments.out.mkdir(parents=True, exist_ok=True)
    path = arguments.out / f"ingest-{outcome['started'].replace(':', '')}-{outcome['run_id']}.json"
    path.write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    print(table(outcome))
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
