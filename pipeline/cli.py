"""The `tailpipe` command: one subcommand per job, all sharing the settings loader.

A deliberate failure (`TailpipeError`) prints one line and exits with its code; a bad setting
exits 2. Commands import their modules lazily so `tailpipe config` starts fast and needs none
of the network clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline import __version__, parse
from pipeline.errors import SettingsError, TailpipeError
from pipeline.settings import Settings, field_for_env, load, render_toml


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
    from pathlib import Path

    from pipeline.postgres import migrate
    from pipeline.postgres.connect import connect

    directory = Path(args.dir) if args.dir else migrate.default_directory()
    migrations = migrate.discover(directory)

    async def go() -> list[str]:
        conn = await connect(settings)
        try:
            return await migrate.apply(conn, settings.postgres_schema, migrations)
        finally:
            await conn.close()

    applied = asyncio.run(go())
    for name in applied:
        print(f"applied {name}")
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
    replayer = replay.Replayer(settings, Transformer(Extractor.from_files()))
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
    from pipeline.alerts import destinations, forward
    from pipeline.errors import SettingsError

    if not settings.alert_destinations:
        raise SettingsError("TAILPIPE_ALERT_DESTINATIONS", "a destinations TOML file", "")
    targets = destinations.load(settings.alert_destinations)
    logconfig.configure(settings.log_format, settings.log_level)

    async def main() -> forward.Tally:
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

    transformer = Transformer(Extractor.from_files())
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

    from pipeline.postgres import day_partitions
    from pipeline.postgres.connect import connect

    async def go() -> list[str]:
        conn = await connect(settings)
        try:
            today = datetime.datetime.now(datetime.UTC).date()
            return await day_partitions.drop_older_than(conn, args.keep_days, today)
        finally:
            await conn.close()

    dropped = asyncio.run(go())
    for name in dropped:
        print(f"dropped {name}")
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


def _argument(parser: Callable[[str, object], Any]) -> Callable[[str], Any]:
    """An argparse `type` from a `pipeline.parse` parser: the same grammar as the settings,
    and a bad value is argparse's one error line naming the argument (exit code 2)."""

    def convert(raw: str) -> Any:
        try:
            return parser("", raw)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(f"expected {exc.expected}, got {raw!r}") from None

    return convert


def _bounded(low: int, high: int, expected: str) -> Callable[[str, object], int]:
    return lambda name, raw: parse.integer(name, raw, low, high, expected)


def _unit_share(name: str, raw: object) -> float:
    value = parse.number(name, raw, "a number from 0 to 1")
    if not 0.0 <= value <= 1.0:
        raise SettingsError(name, "a number from 0 to 1", raw)
    return value


_duration = _argument(parse.duration)
"""`90`, `90s`, `500ms`, `5m`, `1h`, `7d` -> seconds (`pipeline.parse.duration`)."""
_ratio = _argument(_unit_share)
_positive = _argument(_bounded(1, 2**31 - 1, "a positive integer"))
_days = _argument(_bounded(1, 36500, "a number of days from 1 to 36500"))
_rate = _argument(parse.positive_float)
_integer = _argument(_bounded(-(2**63), 2**63 - 1, "an integer"))
_epoch_ms = _argument(_bounded(0, 253_402_300_799_999, "milliseconds since 1970 (to 9999)"))
_tcp_port = _argument(parse.port)


Command = Callable[[Settings, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML settings file"
    )
    parser = argparse.ArgumentParser(
        prog="tailpipe", description="Tail events from Kafka into PostgreSQL.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"tailpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("config", cmd_config, "print the effective settings as TOML (secrets masked)")
    p.add_argument("--get", metavar="TAILPIPE_NAME", help="print one setting, unmasked")
    add("check", cmd_check, "reach Kafka, PostgreSQL and S3; one line each")
    p = add("migrate", cmd_migrate, "apply the SQL migrations in schema/ that are missing")
    p.add_argument("--dir", help="directory of NNNN_name.sql files (default: the shipped ones)")
    p = add("topics", cmd_topics, "create the events and alerts topics if they are missing")
    p.add_argument("action", choices=["create"])
    p.add_argument("--partitions", type=_positive, default=6, help="partitions of the events topic")
    p.add_argument("--alerts-partitions", type=_positive, default=1)
    p.add_argument("--replication-factor", type=_positive, default=1)
    add("run", cmd_run, "run one consumer replica (Kafka -> PostgreSQL) until SIGTERM")
    p = add("api", cmd_api, "serve the query API (and the dashboard) on TAILPIPE_API_PORT")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p = add("probe", cmd_probe, "exit 0 if this host's replica (or API) is live or ready")
    p.add_argument("what", choices=["live", "ready"], help="/healthz or /readyz")
    p.add_argument(
        "--port", type=_tcp_port, help="default: TAILPIPE_METRICS_PORT (the API: its port)"
    )
    p.add_argument("--timeout", type=_duration, default=3.0, help="seconds (or 500ms, ...)")
    p = add("alerts", cmd_alerts, "forward the alerts topic to Slack, Discord and webhooks")
    p.add_argument("action", choices=["forward"])
    p = add("dlq", cmd_dlq, "list or replay dead letters (after a fix or a migration)")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--since", type=_duration, help="created in the last 24h, 7d, ...")
    p.add_argument("--error", metavar="CLASS", help="only objects with this error class")
    p.add_argument("--topic", help="only dead letters from this topic")
    p.add_argument("--json", action="store_true", help="list: JSON lines")
    p.add_argument("--dry-run", action="store_true", help="replay: try, report, store nothing")
    p = add("inspect", cmd_inspect, "print the rows the pipeline would store (no services)")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="one message per line")
    p = add("retention", cmd_retention, "drop whole day partitions older than N days")
    p.add_argument("--keep-days", type=_days, required=True, help="days to keep (>= 1)")
    p = add("collect", cmd_collect, "HTTP collector: Tail Workers and Logpush into Kafka")
    p.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (port: TAILPIPE_COLLECT_PORT)"
    )
    p = add("produce", cmd_produce, "publish JSON values (one per line or concatenated)")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="default: stdin")
    p.add_argument("--topic", help="default: TAILPIPE_TOPIC")
    p.add_argument(
        "--fail-on-invalid",
        action="store_true",
        help="stop at the first invalid value (exit 1) instead of skipping it",
    )
    p = add("loadgen", cmd_loadgen, "publish realistic synthetic tail events")
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument("--count", type=_positive, help="publish this many messages")
    amount.add_argument("--duration", type=_duration, help="publish for this long (30s, 5m)")
    p.add_argument("--rate", type=_rate, help="messages per second (default: as fast as possible)")
    p.add_argument("--seed", type=_integer, default=1, help="same seed and start: same messages")
    p.add_argument("--poison-ratio", type=_ratio, default=0.0, help="share of malformed messages")
    p.add_argument(
        "--reject-ratio",
        type=_ratio,
        default=0.0,
        help="share of well-formed messages that cannot be stored (a script name too long)",
    )
    p.add_argument(
        "--start-ms", type=_epoch_ms, help="event time of the first message (default: now)"
    )
    p.add_argument(
        "--step-ms", type=_positive, default=7, help="event time between messages (default: 7)"
    )
    p.add_argument("--topic", help="default: TAILPIPE_TOPIC")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load(getattr(args, "config", None))
        code: int = args.func(settings, args)
    except TailpipeError as exc:
        print(f"tailpipe: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tailpipe inspect ... | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # stop the exit-time flush failing
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
