"""The `tailpipe` command line: its subcommands and their arguments, the settings loader they
all share, and how a failure exits.

A deliberate failure (`TailpipeError`) prints one line and exits with its code; a bad setting
or argument exits 2. What each subcommand does is in `pipeline.commands`, which imports the
modules a command needs only when it runs, so `tailpipe config` starts fast and needs none of
the network clients.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline import __version__, parse
from pipeline.commands import (
    cmd_alerts,
    cmd_api,
    cmd_check,
    cmd_collect,
    cmd_config,
    cmd_dlq,
    cmd_inspect,
    cmd_loadgen,
    cmd_migrate,
    cmd_probe,
    cmd_produce,
    cmd_retention,
    cmd_run,
    cmd_topics,
)
from pipeline.errors import SettingsError, TailpipeError
from pipeline.settings import Settings, load


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
    p = add(
        "alerts", cmd_alerts,
        "forward the alerts topic to chat, webhooks, PagerDuty and Opsgenie; or test a rule's",
    )  # fmt: skip
    p.add_argument("action", choices=["forward", "test"])
    p.add_argument("rule", nargs="?", help="test: the rule or condition whose destinations")
    p = add("dlq", cmd_dlq, "list or replay dead letters (after a fix or a migration)")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--since", type=_duration, help="created in the last 24h, 7d, ...")
    p.add_argument("--error", metavar="CLASS", help="only objects with this error class")
    p.add_argument("--topic", help="only dead letters from this topic")
    p.add_argument("--json", action="store_true", help="list: JSON lines")
    p.add_argument("--dry-run", action="store_true", help="replay: try, report, store nothing")
    p = add("inspect", cmd_inspect, "print the rows the pipeline would store (no services)")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="one message per line")
    p = add(
        "retention",
        cmd_retention,
        "daily: index the days that ended for search, drop day partitions older than N days",
    )
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
