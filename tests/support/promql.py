"""PromQL against what tailpipe's processes export: every series name, label and scrape job an
expression uses, for the Grafana dashboard (test_grafana) and the Prometheus alert rules
(test_deploy). The consumer replicas are scraped as job `tailpipe`, the API as `tailpipe-api`,
the collectors as `tailpipe-collect` (deploy/prometheus)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from pipeline.api.metrics import Metrics as ApiMetrics
from pipeline.collector.metrics import Metrics as CollectorMetrics
from pipeline.replica.metrics import Metrics
from pipeline.web.metrics import RouteTable

TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""
OTHER_METRICS = {"up": TARGET_LABELS}


def series_of(metrics: Any) -> dict[str, frozenset[str]]:
    """Every series name one Metrics object's registry exports, with the label names it can
    have; every metric of the registry must be a field of the object."""
    families = {f.name: f.type for f in metrics.registry.collect()}
    labels = {
        c._name: frozenset(c._labelnames)
        for c in (getattr(metrics, f.name) for f in dataclasses.fields(metrics))
        if isinstance(c, MetricWrapperBase)
    }
    assert labels.keys() == families.keys(), "a metric of the registry is not a Metrics field"
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family + suffix: labels[family] | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
        for family, kind in families.items()
        for suffix in suffixes[kind]
    }


def exported_by_job() -> dict[str, dict[str, frozenset[str]]]:
    """The series of each scrape job: what its process exports."""
    return {
        "tailpipe": series_of(Metrics.create()),
        "tailpipe-api": series_of(ApiMetrics.create(RouteTable(()))),
        "tailpipe-collect": series_of(CollectorMetrics.create()),
    }


def exported() -> dict[str, frozenset[str]]:
    """Every series name a tailpipe process exports, with the label names it can have."""
    names: dict[str, frozenset[str]] = {}
    for series in exported_by_job().values():
        for name, labels in series.items():
            assert names.get(name, labels) == labels, f"{name}: two sets of labels"
            names[name] = labels
    return {**names, **OTHER_METRICS}


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_VECTOR_MATCHING = re.compile(r"\b(?:on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_JOB = re.compile(r'\bjob\s*=\s*"([^"]*)"')
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless"}  # fmt: skip


def _blank(text: str, pattern: re.Pattern[str], keep_ends: bool = False) -> str:
    """Spaces over every match, so that positions in the text stay where they were."""

    def spaces(m: re.Match[str]) -> str:
        inner = " " * (len(m[0]) - 2)
        return m[0][0] + inner + m[0][-1] if keep_ends else " " * len(m[0])

    return pattern.sub(spaces, text)


def _matching(text: str, at: int, step: int) -> int:
    """The index of the parenthesis matching the one at `at` (step 1: forward, -1: back)."""
    depth = 0
    for i in range(at, len(text) if step > 0 else -1, step):
        depth += {"(": step, ")": -step}.get(text[i], 0)
        if depth == 0:
            return i
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def _argument(text: str, clause: re.Match[str]) -> tuple[int, int]:
    """The span of the expression a `by (...)` clause groups: `sum by (l) (x)` or
    `sum (x) by (l)`."""
    rest = text[clause.end() :]
    after = clause.end() + len(rest) - len(rest.lstrip())
    if after < len(text) and text[after] == "(":
        return after, _matching(text, after, 1)
    before = len(text[: clause.start()].rstrip()) - 1
    assert text[before] == ")", f"cannot tell what {clause[0]!r} groups in {text!r}"
    return _matching(text, before, -1), before


def promql_problems(
    expr: str,
    legend: str,
    known: dict[str, frozenset[str]],
    jobs: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
) -> list[str]:
    """What in one expression names a series or a label that no process exports, or a series
    under a scrape job (`job="..."`) whose process does not export it."""
    jobs = exported_by_job() if jobs is None else jobs
    text = _blank(_blank(expr, _STRING, keep_ends=True), _RANGE)
    groupings = [(set(m[1].replace(",", " ").split()), _argument(text, m))
                 for m in _GROUPING.finditer(text)]  # fmt: skip
    matching = {
        label for m in _VECTOR_MATCHING.finditer(text) for label in m[1].replace(",", " ").split()
    }
    bare = _blank(_blank(text, _GROUPING), _VECTOR_MATCHING)
    selectors: list[tuple[str, int, set[str]]] = []
    problems = []
    for m in _SELECTOR.finditer(bare):
        name, braces = m[1], m[2]
        is_call = not braces and bare[m.end() :].lstrip().startswith("(")
        if not is_call and name not in _KEYWORDS:
            selectors.append((name, m.start(), set(_MATCHER.findall(braces or ""))))
            # Positions are kept by the blanking: the matchers' values are in `expr` there.
            for job in _JOB.findall(expr[m.start(2) : m.end(2)] if braces else ""):
                if job not in jobs:
                    problems.append(f"{name}: no scrape job {job!r}")
                elif name not in jobs[job] and name not in OTHER_METRICS:
                    problems.append(f"{name} is not exported by job {job!r}")
    for name, _, matched in selectors:
        if name not in known:
            problems.append(f"{name} is not exported")
        elif not matched <= known[name]:
            problems.append(f"{name} has no label {sorted(matched - known[name])}")
    for labels, (start, end) in groupings:
        for name, at, _ in selectors:
            if start <= at <= end and name in known and not labels <= known[name]:
                problems.append(f"{name} has no label {sorted(labels - known[name])}")
    for label in sorted(matching):
        if not any(label in known.get(name, ()) for name, _, _ in selectors):
            problems.append(f"vector matching on {label}, which no selected series has")
    legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    grouped = set().union(*(labels for labels, _ in groupings)) if groupings else None
    if grouped is not None and not legend_labels <= grouped:
        problems.append(f"legend {legend!r} names labels the aggregation drops")
    if not selectors:
        problems.append("no series selected")
    return problems
