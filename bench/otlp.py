"""OTLP receiver benchmark: `tailpipe collect`'s POST /v1/logs and /v1/traces, acknowledged.

    .venv/bin/python bench/otlp.py [--requests 300] [--warmup 20] [--batch 50] [--console 4]
        [--spans 4] [--concurrency 8,32] [--only logs,traces] [--encodings json,gzip,protobuf]
        [--profile DIR] [--keep]

One real `tailpipe collect` (its own process, on a free loopback port, a token in
TAILPIPE_COLLECT_TOKENS) publishes to a fresh 6-partition topic of the running stack's Kafka.
It answers a request only once Kafka acknowledged every message of it, so a request's latency
includes the publish, and requests/s is of acknowledged data.

Bodies are Cloudflare-shaped, built from the real-shaped fixtures before each case is timed:

  logs    `--batch` `resourceLogs` entries per request, each one invocation as Workers
          Observability exports it (tests/fixtures/otlp/cloudflare_fetch.json): the invocation
          record and `--console` console records, with their own invocation, ray, trace and
          span ids and times (so `--batch` messages per request, of 1 + `--console` records);
  traces  `--batch` `resourceSpans` entries, each one trace (cloudflare_trace.json): the root
          span and `--spans` - 1 child spans, with their own trace, span and invocation ids.

Each in three encodings: `json` (OTLP/JSON, what Cloudflare sends), `gzip` (the same, gzip'd,
with `Content-Encoding: gzip`, as Cloudflare sends it) and `protobuf` (the same content built
with the opentelemetry-proto classes, what OTel SDKs send by default).

Each case (signal x encoding x concurrency) sends `--warmup` untimed requests, then
`--requests` timed ones, from one httpx.AsyncClient keeping `--concurrency` requests in flight
on as many keep-alive connections. Per case: requests/s and records/s (log records or spans),
p50/p95/p99 request latency, the collector's CPU (utime + stime of /proc/<pid>/stat, all its
threads) per 1,000 records, the cores used meanwhile by the collector, this client, the Kafka
broker (when it runs on this host) and everything else (the host's busy time in /proc/stat less
those: another process that competes for the cores shows here, and the case's numbers are then
lower than the collector can do), the collector's peak RSS so far (VmHWM), answers that were
not 2xx, and the messages the topic gained (its end offsets, read with aiokafka) against the
messages the 2xx answers promised (`acked`: `--batch` per request, warm-up included).

`--profile DIR`: py-spy records the collector during each timed run (raw stacks, 200 Hz, only
the thread holding the GIL: the collector's CPU is Python's, so that is where it goes); the
functions with the largest shares of the samples, on the stack (inclusive) and at its top
(self: a compiled or C function counts in the Python frame that called it), are printed and
kept in the JSON. py-spy stops the process for each sample, so a profiled run's numbers are
lower than an unprofiled one's.

Prints one table; writes `otlp-<time>.json` under `.local/bench/` (the collector's output in
`otlp-collect-<time>.log`); deletes the topic unless `--keep`. A benchmark, not a test: exit
status 0 whatever the numbers (a case that failed says so in the table and the JSON).

This module drives the requests, measures each case and reports; the rest is in
`bench/otlp_bodies.py` (the request bodies, in each encoding), `bench/otlp_collector.py` (the
collector's process, and the host's and Kafka's CPU) and `bench/otlp_profile.py` (py-spy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.measure import cpu_seconds, rss_peak_mib  # noqa: E402
from bench.otlp_bodies import Shape, logs_shape, traces_shape  # noqa: E402
from bench.otlp_collector import (  # noqa: E402
    TOKEN,
    collector,
    host_busy_seconds,
    kafka_pid,
    runs_compiled,
    say,
    shown,
)
from bench.otlp_profile import (  # noqa: E402
    profile_lines,
    profile_summary,
    py_spy_binary,
    start_profile,
    stop_profile,
)
from bench.prepare import drop_kafka  # noqa: E402
from pipeline.kafka import clients  # noqa: E402
from pipeline.settings import Settings, load  # noqa: E402

PARTITIONS = 6
ROUTES = {"logs": "/v1/logs", "traces": "/v1/traces"}
ENCODINGS = ("json", "gzip", "protobuf")
CONTENT_TYPES = {"json": "application/json", "gzip": "application/json"}
PROTOBUF = "application/x-protobuf"
OTHER_CORES_WARN = 0.25
"""Cores used by processes other than the collector, this client and Kafka above which the
report says the run was disturbed."""


# -- measuring -------------------------------------------------------------------------------
def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def nearest_rank(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


@dataclass(slots=True)
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    partial: int = 0
    """200 answers that carried a partialSuccess (rejected records)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Requests that got no answer, by exception."""
    first_failure: str = ""

    @property
    def accepted(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


async def drive(
    client: httpx.AsyncClient,
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    concurrency: int,
) -> Outcome:
    """Send every body, `concurrency` requests in flight at any moment."""
    outcome = Outcome()
    pending = iter(bodies)

    async def worker() -> None:
        for content in pending:  # shared: each body is taken by one worker
            started = time.perf_counter()
            try:
                response = await client.post(url, content=content, headers=headers)
            except httpx.HTTPError as exc:
                outcome.errors[type(exc).__name__] += 1
                outcome.first_failure = outcome.first_failure or repr(exc)
                continue
            outcome.latencies_ms.append((time.perf_counter() - started) * 1000)
            outcome.statuses[response.status_code] += 1
            if response.status_code == 200 and response.content not in (b"", b"{}"):
                outcome.partial += 1  # an empty answer is a full success
            if not 200 <= response.status_code < 300 and not outcome.first_failure:
                outcome.first_failure = f"{response.status_code} {response.text[:300]}"

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcome


async def topic_messages(settings: Settings) -> int | None:
    """Messages on the topic (the sum of its end offsets; it starts empty), None if unread."""
    try:
        return sum((await clients.end_offsets(settings, settings.topic)).values())
    except Exception as exc:  # a benchmark reports what it could not read and goes on
        say(f"  could not read the topic's end offsets: {exc!r}")
        return None


@dataclass(frozen=True, slots=True)
class Case:
    signal: str
    encoding: str
    concurrency: int

    @property
    def name(self) -> str:
        return f"{self.signal}-{self.encoding}-c{self.concurrency}"


async def run_case(
    case: Case,
    shape: Shape,
    args: argparse.Namespace,
    base: str,
    pid: int,
    settings: Settings,
    rng: random.Random,
    stamp: str,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "case": case.name,
        "signal": case.signal,
        "encoding": case.encoding,
        "concurrency": case.concurrency,
    }
    started = time.perf_counter()
    bodies, size = shape.bodies(args.warmup + args.requests, args.batch, case.encoding, rng)
    result["build_s"] = round(time.perf_counter() - started, 2)
    result["mean_body_bytes"] = round(size / len(bodies))
    headers = {
        "content-type": PROTOBUF if case.encoding == "protobuf" else CONTENT_TYPES[case.encoding],
        settings.collect_secret_header: TOKEN,  # as a Cloudflare destination sends it
    }
    if case.encoding == "gzip":
        headers["content-encoding"] = "gzip"
    url = base + ROUTES[case.signal]
    before_messages = await topic_messages(settings)
    limits = httpx.Limits(
        max_connections=case.concurrency, max_keepalive_connections=case.concurrency
    )
    profile: asyncio.subprocess.Process | None = None
    profile_path = args.profile / f"otlp-{stamp}-{case.name}.txt" if args.profile else None
    async with httpx.AsyncClient(limits=limits, timeout=args.timeout) as client:
        warm = await drive(client, url, bodies[: args.warmup], headers, case.concurrency)
        if args.spy and profile_path is not None:
            profile = await start_profile(args.spy, pid, profile_path)
            await asyncio.sleep(0.5)  # attached before the timed requests
        broker = kafka_pid()
        kafka0 = cpu_seconds(broker) if broker else None
        cpu0, host0, client0 = cpu_seconds(pid), host_busy_seconds(), time.process_time()
        t0 = time.perf_counter()
        timed = await drive(client, url, bodies[args.warmup :], headers, case.concurrency)
        elapsed = time.perf_counter() - t0
        cpu1, host1, client1 = cpu_seconds(pid), host_busy_seconds(), time.process_time()
        kafka1 = cpu_seconds(broker) if broker else None
        if profile is not None:
            await stop_profile(profile)
    after_messages = await topic_messages(settings)

    records = timed.accepted * args.batch * shape.records_per_unit
    lat = sorted(timed.latencies_ms)
    collector_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    kafka_cpu = None if kafka0 is None or kafka1 is None else kafka1 - kafka0
    client_cpu = client1 - client0
    other = (host1 - host0) - (collector_cpu or 0) - client_cpu - (kafka_cpu or 0)
    expected = (warm.accepted + timed.accepted) * args.batch
    gained = (
        None
        if before_messages is None or after_messages is None
        else after_messages - before_messages
    )
    result.update(
        {
            "requests": args.requests,
            "warmup": args.warmup,
            "batch": args.batch,
            "records_per_request": args.batch * shape.records_per_unit,
            "seconds": round(elapsed, 3),
            "requests_per_s": round(timed.accepted / elapsed, 1),
            "records_per_s": round(records / elapsed),
            "p50_ms": round(nearest_rank(lat, 0.50), 1) if lat else None,
            "p95_ms": round(nearest_rank(lat, 0.95), 1) if lat else None,
            "p99_ms": round(nearest_rank(lat, 0.99), 1) if lat else None,
            "max_ms": round(lat[-1], 1) if lat else None,
            "collector_cpu_s": None if collector_cpu is None else round(collector_cpu, 3),
            "collector_cpu_s_per_1000_records": (
                round(collector_cpu / records * 1000, 4) if collector_cpu and records else None
            ),
            "collector_cores": None if collector_cpu is None else round(collector_cpu / elapsed, 2),
            "host_busy_cores": round((host1 - host0) / elapsed, 2),
            "client_cores": round(client_cpu / elapsed, 2),
            "kafka_cores": None if kafka_cpu is None else round(kafka_cpu / elapsed, 2),
            "other_cores": round(other / elapsed, 2),
            "collector_peak_rss_mib": _rounded(rss_peak_mib(pid), 1),
            "statuses": {str(k): v for k, v in sorted((warm.statuses + timed.statuses).items())},
            "non_2xx": warm.non_2xx + timed.non_2xx,
            "no_answer": dict(warm.errors + timed.errors),
            "partial_success": warm.partial + timed.partial,
            "first_failure": warm.first_failure or timed.first_failure or None,
            "kafka_messages_expected": expected,
            "kafka_messages_gained": gained,
            "kafka_ok": gained == expected if gained is not None else None,
        }
    )
    if profile_path is not None:
        result["profile"] = {"file": shown(profile_path), **profile_summary(profile_path)}
    return result


# -- report ----------------------------------------------------------------------------------
COLUMNS = (  # title, width, format, key
    ("case", 22, "", "case"),
    ("req/s", 7, ",.1f", "requests_per_s"),
    ("records/s", 10, ",", "records_per_s"),
    ("p50 ms", 7, ".1f", "p50_ms"),
    ("p95 ms", 7, ".1f", "p95_ms"),
    ("p99 ms", 7, ".1f", "p99_ms"),
    ("CPU s/1k rec", 12, ".4f", "collector_cpu_s_per_1000_records"),
    ("cores: coll", 11, ".2f", "collector_cores"),
    ("client", 6, ".2f", "client_cores"),
    ("kafka", 5, ".2f", "kafka_cores"),
    ("other", 5, ".2f", "other_cores"),
    ("RSS MiB", 7, ".0f", "collector_peak_rss_mib"),
    ("non-2xx", 7, "", "non_2xx"),
    ("acked", 5, "", "kafka_ok"),
)


def _cell(value: Any, width: int, spec: str) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "ok" if value else "MISS"
    else:
        text = format(value, spec)
    return text.ljust(width) if spec == "" and isinstance(value, str) else text.rjust(width)


def table(results: list[dict[str, Any]]) -> str:
    lines = [" ".join(t.ljust(w) if i == 0 else t.rjust(w) for i, (t, w, _, _) in
                      enumerate(COLUMNS))]  # fmt: skip
    for r in results:
        if "error" in r:
            lines.append(f"{r['case']:<22} FAILED: {r['error']}")
            continue
        lines.append(" ".join(_cell(r.get(key), w, spec) for _, w, spec, key in COLUMNS))
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------
async def measure_all(
    args: argparse.Namespace, settings: Settings, base: str, pid: int, stamp: str
) -> list[dict[str, Any]]:
    shapes = {"logs": logs_shape(args.console), "traces": traces_shape(args.spans)}
    rng = random.Random(args.seed)
    results = []
    cases = [Case(s, e, c) for s in args.only for e in args.encodings for c in args.concurrency]
    for n, case in enumerate(cases, 1):
        say(f"[{n}/{len(cases)}] {case.name}: {args.warmup} warm-up + {args.requests} requests")
        try:
            result = await run_case(
                case, shapes[case.signal], args, base, pid, settings, rng, stamp
            )
        except Exception as exc:  # one failed case must not lose the others
            result = {"case": case.name, "error": repr(exc)}
        if "error" not in result:
            say(
                f"  {result['requests_per_s']:,.1f} req/s  {result['records_per_s']:,} records/s"
                f"  p95 {result['p95_ms']} ms  non-2xx {result['non_2xx']}"
                f"  kafka +{result['kafka_messages_gained']} of {result['kafka_messages_expected']}"
            )
            if result["first_failure"]:
                say(f"  first failure: {result['first_failure']}")
        results.append(result)
    return results


def main(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    stamp = started.strftime("%Y-%m-%dT%H%M%S")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.spy = py_spy_binary(args.py_spy)
        if args.spy is None:
            say("py-spy not found (--py-spy PATH, or `pip install py-spy`): not profiling")
    base_settings = load()
    name = f"bench_otlp_{int(time.time())}"
    settings = replace(base_settings, topic=name, group=name)
    asyncio.run(clients.ensure_topics(settings, {settings.topic: PARTITIONS}))
    say(f"topic {settings.topic} ({PARTITIONS} partitions) on {settings.kafka_bootstrap}")
    log_path = out / f"otlp-collect-{stamp}.log"
    results: list[dict[str, Any]] = []
    total: int | None = None
    compiled: bool | None = None
    try:
        with collector(settings, log_path) as (base, pid):
            compiled = runs_compiled(pid)
            results = asyncio.run(measure_all(args, settings, base, pid, stamp))
        total = asyncio.run(topic_messages(settings))
    finally:
        if not args.keep:
            asyncio.run(drop_kafka(settings, [settings.topic], []))
    expected_total = sum(r.get("kafka_messages_expected", 0) for r in results)
    outcome = {
        "started": started.isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "collector_compiled": compiled,
            "shared_with": "Kafka, PostgreSQL and S3 of the local stack",
        },
        "topic": settings.topic,
        "partitions": PARTITIONS,
        "arguments": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("spy",)
        },
        "results": results,
        "kafka_messages_total": total,
        "kafka_messages_expected_total": expected_total,
        "kafka_ok": total == expected_total if total is not None else None,
        "collector_log": shown(log_path),
    }
    path = out / f"otlp-{stamp}.json"
    path.write_text(json.dumps(outcome, indent=2, default=str) + "\n")

    units = ", ".join(
        f"{s}: {args.batch} x {1 + args.console if s == 'logs' else args.spans} "
        f"{'records' if s == 'logs' else 'spans'}"
        for s in args.only
    )
    print(
        f"tailpipe collect OTLP benchmark: {args.requests} timed requests per case after "
        f"{args.warmup} warm-up; per request {units}"
    )
    print(
        f"host: {os.cpu_count()} CPUs shared with the stack's Kafka, PostgreSQL and S3; "
        f"collector compiled (mypyc): {compiled}"
    )
    print()
    print(table(results))
    print(
        "CPU s/1k rec: the collector's CPU seconds per 1,000 records; cores: CPU seconds per "
        "second of the timed run, by process; RSS: the collector's peak so far"
    )
    busy = [r["other_cores"] for r in results if r.get("other_cores") is not None]
    if busy and max(busy) > OTHER_CORES_WARN:
        print(
            f"note: other processes used up to {max(busy):.2f} cores during the timed runs; "
            "where they did, the collector had less CPU than this host can give it"
        )
    profiles = profile_lines(results)
    if profiles:
        print()
        print(profiles)
    print()
    if total is None:
        print("kafka: the topic's end offsets could not be read")
    else:
        verdict = "as acknowledged" if total == expected_total else "MISMATCH"
        print(f"kafka: {total:,} messages on the topic, {expected_total:,} acknowledged: {verdict}")
    print(f"JSON: {shown(path)}")
    return 0


def _csv(kind: type, allowed: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        if allowed is not None and (bad := [v for v in values if v not in allowed]):
            raise argparse.ArgumentTypeError(f"{bad} not in {', '.join(allowed)}")
        if kind is int and min(values) < 1:
            raise argparse.ArgumentTypeError("must be positive")
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per case")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per case")
    parser.add_argument(
        "--batch", type=int, default=50, help="invocations (logs) or traces per request"
    )
    parser.add_argument("--console", type=int, default=4, help="console records per invocation")
    parser.add_argument("--spans", type=int, default=4, help="spans per trace (root included)")
    parser.add_argument(
        "--concurrency", type=_csv(int), default=[8, 32], help="requests in flight, e.g. 8,32"
    )
    parser.add_argument(
        "--only", type=_csv(str, tuple(ROUTES)), default=list(ROUTES), help="logs,traces"
    )
    parser.add_argument(
        "--encodings", type=_csv(str, ENCODINGS), default=list(ENCODINGS),
        help="json,gzip,protobuf",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60, help="seconds per request")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", type=Path, help="py-spy each timed run into this directory")
    parser.add_argument("--py-spy", help="the py-spy binary (default: on PATH or in .venv)")
    parser.add_argument("--keep", action="store_true", help="keep the topic")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.batch < 1 or args.spans < 1:
        parser.error("--requests, --batch and --spans must be positive, --warmup not negative")
    if args.console < 0:
        parser.error("--console must not be negative")
    args.spy = None
    return args


if __name__ == "__main__":
    sys.exit(main(parse_args()))
