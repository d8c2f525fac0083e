"""An OTLP traces export cut into Kafka messages, one trace's spans of one resource per message.

Each message is an OTLP/JSON `ExportTraceServiceRequest` holding one `resourceSpans` entry
(its `resource`, its `schemaUrl`, and the `scopeSpans` with their `scope`) and only the spans
of one trace id. Its key is that trace id (32 lowercase hex digits), so every span of a trace
lands on one partition whichever request, resource or sender brought it, a sender's retry
lands where its first copy did, and a consumer can put a trace back together from one
partition. A trace's spans in one entry that exceed a Kafka message are split into several
messages with the same key, as the logs' groups are (otlp_export.py).

Rejected spans (counted in the answer's `partialSuccess.rejectedSpans`, the others are
published):

- a span that is not a JSON object;
- a `traceId` or `spanId` that is absent, empty or all zeros: OTLP requires both, and W3C
  calls the all-zero id invalid, so such a span belongs to no trace and has no identity;
- a `traceId`, `spanId` or non-empty `parentSpanId` that is not 16, 8 or 8 bytes in hex of
  either case (OTLP/JSON's form) or in base64 (protobuf's generic JSON mapping); both are
  published as lowercase hex. An all-zero `parentSpanId` is kept: W3C reads it as no parent;
- a `links` that is not an array of objects, or a link whose `traceId` or `spanId` is not such
  an id; a link's empty or all-zero ids are kept, since OTel records a link to an invalid
  context when it carries attributes;
- a span that alone is larger than a Kafka message;
- a span the consumer's decoder would refuse (`pipeline.formats.otlp_traces.refusal`: no
  start time, a value of the wrong type, an attribute of its resource or scope that is not
  an OTLP attribute): published, it would be dead-lettered with every other span of its
  message, so it is rejected here, alone, with the decoder's own words.

A body whose structure is not an export (`resourceSpans`, `scopeSpans` or `spans` not an
array, or an entry of the first two not an object) is refused whole with 400.

Cloudflare checks a destination with a logs preflight only, but a `resourceSpans` entry of
`service.name = cloudflare-workers-observability` with no spans is counted as one should it
ever send a traces preflight: answered 200, nothing published.
"""

from __future__ import annotations

from typing import Any

from pipeline.collector.otlp_export import (
    PREFLIGHT_SERVICE,
    TRACES,
    ByScope,
    Export,
    Tally,
    canonical_ids,
    kind,
)
from pipeline.formats import otlp_traces as decoder

_REQUIRED = (("traceId", 16), ("spanId", 8))
_SPAN_IDS = (*_REQUIRED, ("parentSpanId", 8))


def split(document: dict[str, Any], lenient: bool = False) -> Export:
    """The messages of a parsed export (`lenient`: it may hold lone surrogates)."""
    tally = Tally(TRACES, lenient)
    for entry in tally.entries(document):
        if not entry.items and entry.resource_attribute("service.name") == PREFLIGHT_SERVICE:
            tally.preflight += 1
            continue
        traces: dict[str, ByScope] = {}
        resource = entry.value.get("resource")
        contexts: dict[int, dict[str, Any] | str] = {}
        for j, where, span in entry.items:
            span, problem = _canonical(span)
            if not problem:
                within = contexts.get(j)
                if within is None:
                    within = contexts[j] = decoder.span_context(
                        resource, entry.scopes[j].get("scope")
                    )
                found = within if isinstance(within, str) else decoder.refusal(span, within)
                problem = found or ""
            if problem:
                tally.reject(where, problem)
                continue
            traces.setdefault(span["traceId"], {}).setdefault(j, []).append(span)
        for trace, by_scope in traces.items():
            tally.publish(entry, by_scope, trace.encode())
    return tally.export()


def _canonical(span: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The span with every id as lowercase hex, or the problem that rejects it."""
    for name, _ in _REQUIRED:
        if span.get(name) is None or span.get(name) == "":
            return span, f"{name}: missing; OTLP requires one on every span"
    span, problem = canonical_ids(span, _SPAN_IDS)
    if problem:
        return span, problem
    for name, size in _REQUIRED:
        if span[name] == "0" * (2 * size):
            return span, f"{name}: all zeros, which W3C calls an invalid id"
    links = span.get("links")
    if links is None:
        return span, ""
    if not isinstance(links, list):
        return span, f"links: expected an array, got {kind(links)}"
    canonical: list[Any] = []
    for n, link in enumerate(links):
        if not isinstance(link, dict):
            return span, f"links[{n}]: not an object"
        link, problem = canonical_ids(link, _REQUIRED)
        if problem:
            return span, f"links[{n}].{problem}"
        canonical.append(link)
    if any(new is not old for new, old in zip(canonical, links, strict=True)):
        span = {**span, "links": canonical}
    return span, ""
