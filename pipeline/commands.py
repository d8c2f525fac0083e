"""What each `tailpipe` subcommand does: `cmd_<name>(settings, args) -> exit code`, one per
subcommand, called by `pipeline.cli` once the arguments parsed and the settings loaded.

Each body imports the modules it needs when it runs, so `tailpipe config` starts fast and needs
none of the network clients, and prints its own lines. The bodies live apart from the parser
(`cli`, the arguments and how a failure exits) because they are the one place that reaches into
every wing, and the wings stay free of argparse and of the command's printing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pipeline.settings import Settings, field_for_env, render_toml


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    if args.get:
        print(getattr(settings, field_for_env(args.get)))
    else:
        sys.stdout.write(render_toml(settings, mask=True))
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline import check

    results = asyncio.run(check.run(settings))
    for result in results:
        print(result.line())
    return 0 if all(r.ok for r in results) else 1


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    import datetime
    from pathlib import Path

    from pipeline.postgres import migrate, search_index
    from pipeline.postgres.connect import connect

    directory = Path(args.dir) if args.dir else migrate.default_directory()
    migrations = migrate.discover(directory)

    async def go() -> tuple[list[str], list[str]]:
        conn = await connect(settings)
        try:
            applied = await migrate.apply(conn, settings.postgres_schema, migrations)
            now = datetime.datetime.now(datetime.UTC)
            return applied, await search_index.index_closed_days(conn, now)
        finally:
            await conn.close()

    applied, indexed = asyncio.run(go())
    for name in applied:
        print(f"applied {name}")
    for name in indexed:
        print(f"search index built on {name}")
    schema = settings.postgres_schema
    print(f"schema {schema}: {len(migrations)} migrations, {len(applied)} applied now")
    return 0


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.kafka import clients

    wanted = {settings.topic: args.partitions, settings.alerts_topic: args.alerts_partitions}
    created = asyncio.run(clients.ensure_topics(settings, wanted, args.replication_factor))
    for name, count in wanted.items():
        state = "created" if name in created else "exists"
        print(f"{name}: {state}" + (f" ({count} partitions)" if name in created else ""))
    return 0


def cmd_loadgen(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from pipeline.kafka import loadgen

    if args.poison_ratio + args.reject_ratio > 1.0:  # a message is never both
        print("tailpipe: --poison-ratio and --reject-ratio add up to more than 1", file=sys.stderr)
        return 2
    plan = loadgen.Plan(
        count=args.count,
        duration_s=args.duration,
        rate=args.rate,
        seed=args.seed,
        poison_ratio=args.poison_ratio,
        reject_ratio=args.reject_ratio,
        start_ms=args.start_ms if args.start_ms is not None else int(time.time() * 1000),
        step_ms=args.step_ms,
    )
    report = asyncio.run(loadgen.run(settings, args.topic or settings.topic, plan))
    print(report.line())
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.replica.serve import serve

    return serve(settings)


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.postgres import replay
    from pipeline.transform.extract import Extractor
    from pipeline.transform.inspect import dumps
    from pipeline.transform.transformer import Transformer

    where = replay.Filter(args.since, args.error, args.topic)
    if args.action == "list":
        rows = asyncio.run(_dlq_list(settings, where))
        if args.json:
            for row in rows:
                sys.stdout.buffer.write(dumps(row))
            return 0
        # An object holds the dead letters of one partition from one flush: a count of objects
        # says little, so every line and the total give messages too, the unit of
        # tailpipe_dead_letters_total.
        print(f"{'created':20} {'topic[partition]':24} {'offsets (object covers)':>23} "
              f"{'messages':>8} {'replayed':>8}  errors / object")  # fmt: skip
        for r in rows:
            state = "done" if r["replayed_at"] else str(r["replayed"])
            origin = f"{r['topic']}[{r['kafka_partition']}]"
            offsets = f"{r['first_offset']}-{r['last_offset']}"
            print(
                f"{r['created_at']:%Y-%m-%d %H:%M:%S}  {origin:24} {offsets:>23} "
                f"{r['messages']:>8} {state:>8}  {','.join(r['error_classes'])}  "
                f"{r['object_key']}"
            )
        total = sum(r["messages"] for r in rows)
        done = sum(r["messages"] if r["replayed_at"] else r["replayed"] for r in rows)
        objects = f"{len(rows)} object" + ("" if len(rows) == 1 else "s")
        print(f"{objects} holding {total} dead-lettered messages: {total - done} pending, "
              f"{done} replayed")  # fmt: skip
        return 0
    replayer = replay.Replayer(settings, Transformer(Extractor.from_files(), dedup=settings.dedup))
    summary = asyncio.run(replayer.run(where, args.dry_run, replay.tty_progress))
    print(summary.line(args.dry_run))
    return 1 if summary.failing or summary.unreadable else 0


async def _dlq_list(settings: Settings, where: Any) -> list[dict[str, Any]]:
    from pipeline.postgres import replay
    from pipeline.postgres.connect import connect

    conn = await connect(settings)
    try:
        return await replay.listing(conn, where)
    finally:
        await conn.close()


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.api import serve

    return serve.serve(settings, host=args.host)


def cmd_probe(settings: Settings, args: argparse.Namespace) -> int:
    """For container health checks, where no curl is installed: 0 when the endpoint says 200."""
    import urllib.error
    import urllib.request

    port = args.port if args.port is not None else settings.metrics_port
    url = f"http://127.0.0.1:{port}/{'healthz' if args.what == 'live' else 'readyz'}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            print(f"{url}: {response.status}")
            return 0
    except urllib.error.HTTPError as refused:
        print(f"{url}: {refused.code} {refused.read(500).decode(errors='replace')}")
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: unreachable ({getattr(exc, 'reason', exc)})")
    return 1


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    import signal

    from pipeline import logconfig
    from pipeline.alerts import delivery, destinations, forward
    from pipeline.errors import SettingsError

    if not settings.alert_destinations:
        raise SettingsError("TAILPIPE_ALERT_DESTINATIONS", "a destinations TOML file", "")
    targets = destinations.load(settings.alert_destinations)
    logconfig.configure(settings.log_format, settings.log_level)
    if args.action == "test":
        from pipeline.alerts import trial
        from pipeline.alerts.rules import Rules

        return trial.run(settings, Rules.load(settings.alert_rules), targets, args.rule)

    async def main() -> delivery.Tally:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await forward.run(settings, targets, stop)

    tally = asyncio.run(main())
    print(f"delivered {tally.delivered}, dropped {tally.dropped}, retries {tally.retries}")
    return 0


def cmd_inspect(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from pipeline.transform import inspect
    from pipeline.transform.extract import Extractor
    from pipeline.transform.transformer import Transformer

    transformer = Transformer(Extractor.from_files(), dedup=True)
    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    out = sys.stdout.buffer
    summary: dict[str, Any] = {}
    with source:
        for line in inspect.inspect(transformer, source, int(time.time() * 1000)):
            out.write(inspect.dumps(line))
            summary = line
    out.flush()
    dead, messages = summary.get("dead_letters", 0), summary.get("messages", 0)
    if dead:
        print(
            f"tailpipe inspect: {dead} of {messages} messages would be dead-lettered"
            ' (the lines with "dead_letter" say why)',
            file=sys.stderr,
        )
    return 1 if dead else 0


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    import datetime
    import math

    from pipeline.postgres import dedup, retention, search_index
    from pipeline.postgres.connect import connect

    async def go() -> tuple[list[str], list[str]]:
        conn = await connect(settings)
        try:
            now = datetime.datetime.now(datetime.UTC)
            dropped = await retention.drop_older_than(conn, args.keep_days, now.date())
            # The identities a retry is checked against: the window's days, not the rows'.
            window_days = max(1, math.ceil(settings.dedup_window / 86_400))
            dropped += await retention.drop_older_than(
                conn, window_days, now.date(), tables=(dedup.TABLE,)
            )
            return dropped, await search_index.index_closed_days(conn, now)
        finally:
            await conn.close()

    dropped, indexed = asyncio.run(go())
    for name in dropped:
        print(f"dropped {name}")
    for name in indexed:
        print(f"search index built on {name}")
    print(f"{len(dropped)} partitions dropped (keeping {args.keep_days} days)")
    return 0


def cmd_collect(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.collector.app import serve

    return serve(settings, host=args.host)


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.kafka import produce

    topic = args.topic or settings.topic
    try:
        source = produce.open_source(args.file)
    except OSError as exc:
        print(f"tailpipe: {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    with source:
        outcome = asyncio.run(
            produce.run(
                settings, topic, source, fail_on_invalid=args.fail_on_invalid, errors=sys.stderr
            )
        )
    print(
        f"produced {outcome.sent} messages to {topic}; {len(outcome.invalid)} invalid values "
        + ("(stopped at the first)" if args.fail_on_invalid and outcome.invalid else "skipped")
    )
    return 1 if outcome.invalid and args.fail_on_invalid else 0
