"""The ingest benchmark's targets and its printed table."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from bench.consumers import tailpipe_name

Results = dict[str, dict[str, Any]]
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


def _value(results: Results, name: str, key: str) -> float | None:
    run = results.get(name)
    if run is None or "error" in run or not run.get("stored", {}).get("complete", True):
        return None
    value = run.get(key)
    return float(value) if isinstance(value, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _target(text: str, value: float | None, op: str, threshold: float) -> dict[str, Any]:
    met = None if value is None else _OPS[op](value, threshold)
    return {"target": text, "value": value, "op": op, "threshold": threshold, "met": met}


def _search_share(results: Results) -> float | None:
    """The search index's build, per event, over the plain dump's consumer and PostgreSQL CPU
    per event: what text search adds to ingest, now that it is built once per ended day."""
    build = results.get("dump", {}).get("stored", {}).get("search_index", {})
    consumer = _value(results, "dump", "consumer_cpu_us_per_event")
    postgres = _value(results, "dump", "postgres_cpu_us_per_event")
    if not build or consumer is None or postgres is None:
        return None
    return float(build["postgres_cpu_us_per_event"]) / (consumer + postgres)


def targets(results: Results, replicas: list[int]) -> list[dict[str, Any]]:
    """The project's targets; `met` is None where a run they need was not made (or failed)."""

    def rate(name: str) -> float | None:
        return _value(results, name, "events_per_s")

    tailpipe = rate("tailpipe")
    found = [
        _target("tailpipe >= 2x Quix Streams", _ratio(tailpipe, rate("quix")), ">=", 2.0),
        _target("tailpipe >= 0.9x plain dump", _ratio(tailpipe, rate("dump")), ">=", 0.9),
        _target(
            "search index (built per ended day) <= 30% of the dump's CPU",
            _search_share(results),
            "<=",
            0.3,
        ),
        _target(
            "tailpipe consumer CPU <= 35 us/event",
            _value(results, "tailpipe", "consumer_cpu_us_per_event"),
            "<=",
            35.0,
        ),
        _target(
            "tailpipe peak RSS <= 250 MiB",
            _value(results, "tailpipe", "peak_rss_mib"),
            "<=",
            250.0,
        ),
    ]
    found.append(
        _target(
            "deduplication costs <= 10% (tailpipe / dedup off)",
            _ratio(tailpipe, rate("tailpipe-nodedup")),
            ">=",
            0.9,
        )
    )
    if 2 in replicas:
        two = _ratio(rate(tailpipe_name(2)), tailpipe)
        found.append(_target("tailpipe 2 replicas >= 1.6x one", two, ">=", 1.6))
    return found


def scaling(results: Results, replicas: list[int]) -> dict[str, float | None]:
    """events/s of k replicas over one replica's, for each k > 1 that ran."""
    one = _value(results, "tailpipe", "events_per_s")
    return {
        str(k): _ratio(_value(results, tailpipe_name(k), "events_per_s"), one)
        for k in replicas
        if k > 1
    }


def _num(value: Any, digits: int = 0) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:,.{digits}f}"


def table(result: dict[str, Any]) -> str:
    runs: Results = result["runs"]
    labels = {name: f"{name} ({run.get('label', name)})" for name, run in runs.items()}
    w = max([32, *(len(label) + 2 for label in labels.values())])
    lines = [
        f"tailpipe ingest benchmark: {result['messages']:,} messages ({result['workload']}) on "
        f"{result['partitions']} partitions, settle {result['settle_s']:g} s before each run",
        "",
        f"{'consumer':<{w}}{'events/s':>10}{'consumer CPU':>14}{'PostgreSQL CPU':>16}"
        f"{'peak RSS':>10}",
        f"{'':<{w}}{'':>10}{'us/event':>14}{'us/event':>16}{'MiB':>10}",
    ]
    for name, run in runs.items():
        label = labels[name]
        if "error" in run:
            lines.append(f"{label:<{w}}  failed: {str(run['error']).splitlines()[0][:200]}")
            continue
        incomplete = "" if run.get("stored", {}).get("complete", True) else "  INCOMPLETE"
        lines.append(
            f"{label:<{w}}{_num(run['events_per_s']):>10}"
            f"{_num(run['consumer_cpu_us_per_event'], 1):>14}"
            f"{_num(run['postgres_cpu_us_per_event'], 1):>16}"
            f"{_num(run['peak_rss_mib']):>10}{incomplete}"
        )
    for name, why in result.get("skipped", {}).items():
        lines.append(f"{name:<{w}}  not run: {why.splitlines()[0][:200]}")
    lines.append("")
    for target in result["targets"]:
        value, met = target["value"], target["met"]
        shown = "-" if value is None else f"{value:,.2f}"
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        lines.append(f"{target['target']:<56}{shown:>10}   {verdict}")
    for k, ratio in result.get("scaling", {}).items():
        if k != "2":
            lines.append(f"{'tailpipe ' + k + ' replicas / one':<56}{_num(ratio, 2):>10}")
    build = runs.get("dump", {}).get("stored", {}).get("search_index")
    if build:
        lines.append(
            f"{'dump: search index built after the day, PG us/event':<56}"
            f"{build['postgres_cpu_us_per_event']:>10.1f}   ({build['seconds']:.1f} s)"
        )
    for name, run in runs.items():
        waits = run.get("lock_waits")
        if name.startswith("tailpipe") and waits and waits["active"]:
            share = 100 * waits["share_of_active"]
            lines.append(f"{name + ': lock waits, % of active backend samples':<56}{share:>10.1f}")
    return "\n".join(lines)
