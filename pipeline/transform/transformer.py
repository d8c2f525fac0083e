"""From a Kafka message to rows: decode, redact, extract, aggregate. Pure and synchronous.

`Transformer.add` is the whole hot path of a consumer and of `tailpipe inspect`, so both print
and store exactly the same thing. It allocates one tuple per row and updates the batch's
rollups in place (how an invocation counts in them is `rollup`'s); nothing here reads a clock or
does I/O (the Kafka timestamp is given).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from pipeline.alerts.detect import note
from pipeline.alerts.rules import Rule, Rules
from pipeline.errors import DecodeError
from pipeline.formats.decode import NATIVE_LIMITS, NATIVE_RECORDS, decoded
from pipeline.formats.invocation import UNNAMED, Invocation, LogLine
from pipeline.formats.tail_stream import StreamEvent
from pipeline.native import NativeRows, load_trace_rows, load_utc_datetime
from pipeline.transform.batch import (
    Batch,
    DeadLetter,
    Headers,
    Identity,
    Part,
    Raw,
    TopicPartition,
)
from pipeline.transform.completion import awaits_root_span
from pipeline.transform.dedup import (
    EVENT,
    INVOCATION,
    MessageDigest,
    keyed,
    of_invocation,
    of_stream_event,
)
from pipeline.transform.extract import Extractor
from pipeline.transform.fingerprint import fingerprint, template
from pipeline.transform.pending import Pending
from pipeline.transform.redact.engine import redact_json_text, redact_text
from pipeline.transform.redact.triggers import TRIGGER_MASKS
from pipeline.transform.rollup import HOUR_MS, ErrorGroup, count_extracted, count_invocation
from pipeline.transform.spans import add_spans

EVENT_COLUMNS = (
    "ts", "script", "event_type", "outcome", "method", "url", "status", "cpu_ms", "wall_ms",
    "log_count", "exception_count", "truncated", "script_version", "entrypoint",
    "dispatch_namespace", "script_tags", "source", "extra", "topic", "kafka_partition",
    "kafka_offset", "item", "trace_id", "span_id",
)  # fmt: skip
LOG_COLUMNS = (
    "ts", "script", "event_type", "outcome", "level", "message", "data", "kind",
    "exception_name", "stack", "fingerprint", "topic", "kafka_partition", "kafka_offset",
    "item", "seq", "trace_id", "span_id", "invocation_ts",
)  # fmt: skip
"""`invocation_ts` is its invocation's `ts`: with the origin, the `tail_events` row's primary key,
so a line finds its request with one index probe in one day partition (`api/invocations.py`)."""
_NO_HEADERS: Headers = ()


_UTC_DATETIME = load_utc_datetime()
_NATIVE_ROWS = load_trace_rows(NATIVE_RECORDS, NATIVE_LIMITS, TRIGGER_MASKS)


def _ts(ms: int) -> datetime:
    """`datetime.fromtimestamp(ms / 1000, UTC)`, built by the native core where it is
    installed (a quarter of the cost: one per row); the same object either way."""
    if _UTC_DATETIME is not None:
        found = _UTC_DATETIME(ms)
        if found is not None:
            return found
    return datetime.fromtimestamp(ms / 1000, UTC)


class Transformer:
    def __init__(
        self, extractor: Extractor, rules: Rules | None = None, dedup: bool = False
    ) -> None:
        self._extract = extractor.extract
        self.dedup = dedup
        """Record each invocation's and span's identity for the flush (`transform.dedup`)."""
        self._rules = rules
        self._error_rule = rules.error_log if rules is not None else Rule("error_log", False)
        # None when the error-line rule is off: the log loop then skips it at no cost.
        self._error_search = (
            rules.error_pattern.search if rules is not None and rules.error_log.enabled else None
        )

    def add(
        self,
        batch: Batch,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes,
        headers: Headers = _NO_HEADERS,
        rejected: tuple[str, str] | None = None,
    ) -> None:
        """Add one message to the batch: its invocations' rows, or a dead letter. `rejected`
        (error class, message) makes it a dead letter whatever it holds: PostgreSQL refused
        its rows."""
        part = batch.part(topic, partition, offset)
        part.next_offset = offset + 1
        part.messages += 1
        part.bytes += len(value)
        part.raw.append(Raw(offset, timestamp_ms, key, value, headers))
        batch.messages += 1
        batch.bytes += len(value)
        if rejected is not None:
            part.dead.append(DeadLetter(offset, timestamp_ms, key, value, headers, *rejected))
            batch.rows += 1
            return
        counts = part.redactions
        built = None
        spans = None
        stream = None
        try:
            found = (
                None
                if _NATIVE_ROWS is None
                else _NATIVE_ROWS(value, timestamp_ms, (topic, partition, offset))
            )
            if found is None:
                # The native core's rows, else its invocations; None where its decoder declines
                # (or is missing), so the reference decodes without a second native parse.
                whole = decoded(value)
                invocations, spans, stream = whole.invocations, whole.spans, whole.stream
                if whole.sanitized:
                    part.sanitized.update(whole.sanitized)
            elif found[0]:
                built = found[1]
            else:
                invocations = found[1]
        except DecodeError as exc:
            error = ("DecodeError", str(exc))
            part.dead.append(DeadLetter(offset, timestamp_ms, key, value, headers, *error))
            part.decode_failures[exc.reason] += 1
            batch.rows += 1
            return
        dedup = self.dedup
        skip = part.duplicates
        if built is not None:
            message = None if not dedup or keyed(key, len(built)) else MessageDigest(value)
            for item, native in enumerate(built):
                if skip and (offset, INVOCATION, item) in skip:
                    continue
                inv = native[0]
                ts_ms = inv.timestamp_ms or timestamp_ms
                origin = (topic, partition, offset, item)
                batch.rows += self._native_rows(part, native, ts_ms, origin, counts)
                _seen(batch, ts_ms)
                if dedup:
                    _identify(part, inv, key, message, offset, item)
            return
        if stream:
            batch.rows += self._stream(part, stream, (topic, partition, offset), counts)
            _seen(batch, min(ev.timestamp_ms for ev in stream))
        if spans:
            batch.rows += add_spans(part, spans, (topic, partition, offset), counts, dedup)
            _seen(batch, min(span.start_us for span in spans) // 1000)
        message = None if not dedup or keyed(key, len(invocations)) else MessageDigest(value)
        for item, invocation in enumerate(invocations):
            if skip and (offset, INVOCATION, item) in skip:
                continue
            if invocation.sanitized:
                part.sanitized.update(invocation.sanitized)
            ts_ms = invocation.timestamp_ms or timestamp_ms
            batch.rows += self._rows(
                part, invocation, ts_ms, (topic, partition, offset, item), counts
            )
            _seen(batch, ts_ms)
            if dedup:
                _identify(part, invocation, key, message, offset, item)

    def rebuild(
        self,
        batch: Batch,
        rejected: dict[tuple[str, int, int], tuple[str, str]],
        duplicates: dict[TopicPartition, set[tuple[int, int, int]]] | None = None,
    ) -> None:
        """Build the batch again, in place, with the `rejected` messages (topic, partition,
        offset) turned into dead letters, and without the `duplicates` (per partition: offset,
        kind, item; added to the part's own): parts touched by neither are kept as they are,
        the others are built again from their messages, so their rows and rollups no longer
        count what was taken out."""
        duplicates = duplicates or {}
        touched: set[TopicPartition] = {(t, p) for t, p, _ in rejected} | duplicates.keys()
        out = Batch(created=batch.created, oldest_event_ms=batch.oldest_event_ms)
        for key, part in batch.parts.items():
            if key not in touched:
                out.parts[key] = part
                out.messages += part.messages
                out.bytes += part.bytes
                out.rows += part.rows()
                continue
            topic, partition = key
            known = part.duplicates | duplicates.get(key, set())
            if known:
                out.part(topic, partition, part.first_offset).duplicates = known
            for m in part.raw:
                why = rejected.get((topic, partition, m.offset))
                self.add(out, topic, partition, m.offset, m.timestamp_ms, m.key, m.value,
                         m.headers, why)  # fmt: skip
        batch.parts, batch.rows, batch.bytes = out.parts, out.rows, out.bytes
        batch.messages, batch.oldest_event_ms = out.messages, out.oldest_event_ms

    def _stream(
        self,
        part: Part,
        events: list[StreamEvent],
        origin: tuple[str, int, int],
        counts: Counter[str],
    ) -> int:
        """The streamed events of one message into their invocations' `Pending`s: lines and
        exceptions redacted, checked and counted as they arrive (`transform.stream`). The
        number of events taken."""
        topic, partition, offset = origin
        skip = part.duplicates
        added = 0
        said: dict[str, list[LogLine]] = {}
        for item, ev in enumerate(events):
            if skip and (offset, EVENT, item) in skip:
                continue
            added += 1
            if self.dedup:
                ident = of_stream_event(ev.invocation_id, ev.sequence)
                part.identities.append(Identity(_ts(ev.timestamp_ms), ident, offset, EVENT, item))
            if ev.sanitized:
                part.sanitized.update(ev.sanitized)
            pend = part.stream.get(ev.invocation_id)
            if pend is None:
                pend = part.stream[ev.invocation_id] = Pending(
                    ev.invocation_id, ev.script or UNNAMED, (offset, item, ev.timestamp_ms)
                )
            elif ev.script and pend.script == UNNAMED:
                pend.script = ev.script
            pend.seen += 1
            pend.last = (offset, item)
            script = pend.script
            ids = (
                bytes.fromhex(ev.trace_id) if ev.trace_id else None,
                bytes.fromhex(ev.span_id) if ev.span_id and ev.trace_id else None,
            )
            line, exc = ev.line, ev.error
            if line is not None:
                text = redact_text(line.text, counts)
                pend.lines.append(
                    (_ts(ev.timestamp_ms), line.level, text,
                     redact_json_text(line.data, counts), line.kind, None, None, None,
                     topic, partition, offset, item, ev.sequence, *ids)
                )  # fmt: skip
                pend.levels[line.level] += 1
                pend.logs += 1
                pend.truncated = pend.truncated or ev.truncated
                said.setdefault(ev.invocation_id, []).append(line)
                search = self._error_search
                if search is not None and line.level == "error" and search(text):
                    self._error_line(part, script, ev.timestamp_ms, text)
            elif exc is not None:
                message = redact_text(exc.message, counts)
                stack = redact_text(exc.stack, counts) if exc.stack else None
                fp = fingerprint(exc.group_name, message)
                pend.lines.append(
                    (_ts(ev.timestamp_ms), "exception", f"{exc.name}: {message}", None, None,
                     exc.name, stack, fp, topic, partition, offset, item, ev.sequence, *ids)
                )  # fmt: skip
                pend.levels["exception"] += 1
                pend.exceptions += 1
                _count_error(part, exc.name, message, stack, fp, ev.timestamp_ms, script)
            else:
                pend.add(ev, offset, item, counts)
        for invocation_id, lines in said.items():
            pend = part.stream[invocation_id]
            ts_ms = lines[0].timestamp_ms or 0
            told = Invocation(pend.script, "unknown", ts_ms, "unreported", logs=tuple(lines))
            count_extracted(part.rollups, self._extract(told), ts_ms, pend.script)
        return added

    def _native_rows(
        self,
        part: Part,
        native: NativeRows,
        ts_ms: int,
        origin: tuple[str, int, int, int],
        counts: Counter[str],
    ) -> int:
        """`_rows` for an invocation whose rows the native core built (`native`: the
        invocation, its event row, log rows and dirty marks): what redaction may change redone,
        the exceptions' rows added, all counted. The number of rows."""
        inv, event_row, log_rows, dirty = native
        texts = None
        if dirty is not None:
            event_row, texts = _redo(inv, event_row, log_rows, dirty, counts)
        part.events.append(event_row)
        part.logs += log_rows
        script = inv.script or UNNAMED
        if inv.exceptions:
            context = (event_row[0], script, inv.event_type, inv.outcome)
            _exception_rows(part, inv, context, ts_ms, origin, (None, None), len(log_rows), counts)
        self._counted(part, inv, ts_ms, script, texts)
        return 1 + len(log_rows) + len(inv.exceptions)

    def _rows(
        self,
        part: Part,
        inv: Invocation,
        ts_ms: int,
        origin: tuple[str, int, int, int],
        counts: Counter[str],
    ) -> int:
        ts = _ts(ts_ms)
        script = inv.script or UNNAMED
        # Bytes, once per invocation: the columns are bytea (schema/0012), and each row shares
        # the same objects.
        trace_id = bytes.fromhex(inv.trace_id) if inv.trace_id is not None else None
        span_id = bytes.fromhex(inv.span_id) if inv.span_id is not None else None
        context = (ts, script, inv.event_type, inv.outcome)
        part.events.append(
            (
                *context,
                inv.method,
                redact_text(inv.url, counts) if inv.url else None,
                inv.status,
                inv.cpu_ms,
                inv.wall_ms,
                len(inv.logs),
                len(inv.exceptions),
                inv.truncated,
                inv.script_version,
                inv.entrypoint,
                inv.dispatch_namespace,
                list(inv.script_tags) if inv.script_tags else None,
                inv.source,
                redact_json_text(inv.extra, counts),
                *origin,
                trace_id,
                span_id,
            )
        )
        if awaits_root_span(inv) and trace_id is not None:
            part.completing.append((trace_id, ts))
        seq = 0
        texts = []
        for line in inv.logs:
            text = redact_text(line.text, counts)
            texts.append(text)
            part.logs.append(
                (
                    _ts(line.timestamp_ms) if line.timestamp_ms else ts,
                    *context[1:],
                    line.level,
                    text,
                    redact_json_text(line.data, counts),
                    line.kind,
                    None,
                    None,
                    None,
                    *origin,
                    seq,
                    trace_id,
                    span_id,
                    ts,
                )
            )
            seq += 1
        if inv.exceptions:
            _exception_rows(part, inv, context, ts_ms, origin, (trace_id, span_id), seq, counts)
        self._counted(part, inv, ts_ms, script, texts)
        return 1 + seq + len(inv.exceptions)

    def _counted(
        self, part: Part, inv: Invocation, ts_ms: int, script: str, texts: list[str] | None = None
    ) -> None:
        """The invocation counted in the rollups and checked by the alert rules; `texts` are
        its lines' texts as stored (redacted), None where redaction changed none of them."""
        levels = count_invocation(part.rollups, inv, ts_ms, script).levels
        error_search = self._error_search
        for i, line in enumerate(inv.logs):
            levels[line.level] += 1
            if error_search is not None and line.level == "error":
                # The rule reads what is stored: the text after redaction.
                text = line.text if texts is None else texts[i]
                if error_search(text):
                    self._error_line(part, script, ts_ms, text)
        if inv.exceptions:
            levels["exception"] += len(inv.exceptions)
        count_extracted(part.rollups, self._extract(inv), ts_ms, script)
        if self._rules is not None:
            _outcome_alert(part, self._rules, inv, ts_ms, script)

    def _error_line(self, part: Part, script: str, ts_ms: int, text: str) -> None:
        """An error line the error-line rule matched (its text as stored: redacted)."""
        note(part.rollups.alerts, self._error_rule, f"error_log:{script}", script, ts_ms,
             f"{script}: {text}", {"script": script, "level": "error"})  # fmt: skip


def _identify(
    part: Part,
    inv: Invocation,
    key: bytes | None,
    message: MessageDigest | None,
    offset: int,
    item: int,
) -> None:
    """The identity of the invocation whose row was just added (`transform.dedup`)."""
    ident = of_invocation(inv, key, message, item)
    part.identities.append(Identity(part.events[-1][0], ident, offset, INVOCATION, item))


def _seen(batch: Batch, ts_ms: int) -> None:
    """An invocation of event time `ts_ms` is in the batch: keep its oldest."""
    if batch.oldest_event_ms is None or ts_ms < batch.oldest_event_ms:
        batch.oldest_event_ms = ts_ms


def _exception_rows(
    part: Part,
    inv: Invocation,
    context: tuple[object, str, str, str],
    ts_ms: int,
    origin: tuple[str, int, int, int],
    ids: tuple[bytes | None, bytes | None],
    seq: int,
    counts: Counter[str],
) -> None:
    """The invocation's exceptions as log rows after its `seq` lines, counted in the error
    groups and their hours. `context`: the invocation's (ts, script, event type, outcome)."""
    ts, script = context[0], context[1]
    for exc in inv.exceptions:
        message = redact_text(exc.message, counts)
        stack = redact_text(exc.stack, counts) if exc.stack else None
        fp = fingerprint(exc.group_name, message)
        exc_ms = exc.timestamp_ms or ts_ms
        part.logs.append(
            (
                _ts(exc_ms),
                *context[1:],
                "exception",
                f"{exc.name}: {message}",
                None,
                None,
                exc.name,
                stack,
                fp,
                *origin,
                seq,
                *ids,
                ts,
            )
        )
        seq += 1
        _count_error(part, exc.name, message, stack, fp, exc_ms, script)


def _count_error(
    part: Part,
    name: str,
    message: str,
    stack: str | None,
    fp: str,
    exc_ms: int,
    script: str,
) -> None:
    """One exception counted in its error group and the group's hour."""
    errors = part.rollups.errors
    group = errors.get(fp)
    if group is None:
        group = errors[fp] = ErrorGroup(name, template(message), exc_ms, exc_ms, message, stack)
    group.add_occurrence(exc_ms, script, message, stack)
    part.rollups.error_hours[(exc_ms - exc_ms % HOUR_MS, fp)] += 1


def _redo(
    inv: Invocation,
    event_row: tuple[object, ...],
    log_rows: list[tuple[object, ...]],
    dirty: tuple[int, ...],
    counts: Counter[str],
) -> tuple[tuple[object, ...], list[str]]:
    """The native rows with what redaction may change redone as `_rows` does it: the `dirty`
    log rows' text and data (by index; their cells at 5 and 6), and with -1 the event row's URL
    (at 5). Also the lines' texts as stored, for the alert rules."""
    texts = [line.text for line in inv.logs]
    for i in dirty:
        if i < 0:
            url = redact_text(inv.url, counts) if inv.url else None
            event_row = (*event_row[:5], url, *event_row[6:])
            continue
        line = inv.logs[i]
        texts[i] = text = redact_text(line.text, counts)
        row = log_rows[i]
        log_rows[i] = (*row[:5], text, redact_json_text(line.data, counts), *row[7:])
    return event_row, texts


def _outcome_alert(part: Part, rules: Rules, inv: Invocation, ts_ms: int, script: str) -> None:
    """The outcome rule (error lines are noted as their rows are built, in `_rows`)."""
    found = part.rollups.alerts
    if rules.outcome.enabled and inv.outcome in rules.outcomes:
        note(found, rules.outcome, f"outcome:{script}:{inv.outcome}", script, ts_ms,
             f"{script}: an invocation ended with {inv.outcome}",
             {"script": script, "outcome": inv.outcome})  # fmt: skip
