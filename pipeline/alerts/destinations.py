"""Where alerts are forwarded: Slack and Discord incoming webhooks, and generic HTTPS webhooks.

Destinations come from a TOML file (`TAILPIPE_ALERT_DESTINATIONS`)::

    [[destination]]
    name = "ops"                 # for logs and metrics
    kind = "slack"               # slack | discord | webhook
    url = "https://hooks.slack.com/services/..."
    severities = ["critical"]    # default: both
    scripts = ["api-*"]          # shell patterns; default: every script (and none)
    per_minute = 30              # rate limit; default 60
    secret = "..."               # webhook only: signs the body (HMAC-SHA256)

Every value is checked for its type and range when the file is read: whatever the file holds,
it is a list of valid destinations or a `SettingsError` naming the file, the destination and
the key (exit code 2). The payloads and the signature are pure functions; `forward.py` does the
sending.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline import datafile, parse
from pipeline.errors import SettingsError

KINDS = ("slack", "discord", "webhook")
SEVERITIES = ("critical", "warning")
KEYS = ("name", "kind", "url", "severities", "scripts", "per_minute", "secret")
MAX_PER_MINUTE = 60_000
SIGNATURE_HEADER = "X-Tailpipe-Signature"
TIMESTAMP_HEADER = "X-Tailpipe-Timestamp"


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    kind: str
    url: str
    severities: frozenset[str] = frozenset(("critical", "warning"))
    scripts: tuple[str, ...] = ()
    per_minute: int = 60
    secret: str = ""

    def __post_init__(self) -> None:
        where = f"alert destination {self.name}"
        if self.kind not in KINDS:
            raise SettingsError(f"{where}: kind", " or ".join(KINDS), self.kind)
        if not self.url or parse.http_url(f"{where}: url", self.url) != self.url:
            raise SettingsError(f"{where}: url", "an http:// or https:// URL", self.url)
        if not self.severities <= {"critical", "warning"}:
            raise SettingsError(f"{where}: severities", "critical and/or warning", self.severities)
        if not 1 <= self.per_minute <= MAX_PER_MINUTE:
            raise SettingsError(
                f"{where}: per_minute", f"an integer from 1 to {MAX_PER_MINUTE}", self.per_minute
            )

    def wants(self, alert: dict[str, Any]) -> bool:
        """Routing: this destination takes alerts of its severities and scripts."""
        severity = alert.get("severity")
        if not isinstance(severity, str) or severity not in self.severities:
            return False
        if not self.scripts:
            return True
        script = alert.get("script")
        script = script if isinstance(script, str) else ""
        return any(fnmatch.fnmatchcase(script, pattern) for pattern in self.scripts)

    def request(self, alert: dict[str, Any], now_s: int) -> tuple[bytes, dict[str, str]]:
        """The body and headers to POST for `alert`."""
        headers = {"Content-Type": "application/json"}
        if self.kind == "slack":
            return orjson.dumps({"text": text(alert)}), headers
        if self.kind == "discord":
            return orjson.dumps({"content": text(alert)[:2000]}), headers
        body = orjson.dumps(alert)
        if self.secret:
            headers[TIMESTAMP_HEADER] = str(now_s)
            headers[SIGNATURE_HEADER] = "sha256=" + signature(self.secret, now_s, body)
        return body, headers


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>`: a receiver recomputes it with the shared secret
    and refuses old timestamps, so a captured request cannot be replayed later."""
    message = str(timestamp_s).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def text(alert: dict[str, Any]) -> str:
    icon = ":rotating_light:" if alert.get("severity") == "critical" else ":warning:"
    where = f" [{alert['script']}]" if alert.get("script") else ""
    count = alert.get("occurrences", 1)
    times = f" (x{count})" if isinstance(count, int) and count > 1 else ""
    details = alert.get("details")
    query = details.get("query", "") if isinstance(details, dict) else ""
    return (
        f"{icon} {str(alert.get('severity', '?')).upper()} {alert.get('rule')}{where}: "
        f"{alert.get('summary', '')}{times}" + (f"\n{query}" if query else "")
    )


def load(path: str) -> tuple[Destination, ...]:
    label, doc = datafile.user(path)
    label = parse.shown(label)
    parse.check_keys(label, doc, ("destination",))
    tables = doc.get("destination", [])
    if not isinstance(tables, list):
        raise SettingsError(f"{label}: destination", "an array of [[destination]] tables", tables)
    out = [_destination(label, n, table) for n, table in enumerate(tables, 1)]
    if not out:
        raise SettingsError(label, "at least one [[destination]]", "none")
    names = [d.name for d in out]
    for name in names:
        if names.count(name) > 1:  # rate limits and logs are per name
            raise SettingsError(f"{label}: destination {parse.shown(name)}", "a unique name", name)
    return tuple(out)


def _destination(label: str, n: int, table: object) -> Destination:
    if not isinstance(table, dict):
        raise SettingsError(f"{label}: destination {n}", "a table", table)
    raw_name = table.get("name", f"destination-{n}")
    shown = raw_name if isinstance(raw_name, str) and raw_name.isprintable() else str(n)
    where = f"{label}: destination {shown[:100]}"
    parse.check_keys(where, table, KEYS)
    name = parse.nonempty(f"{where}: name", raw_name)
    kind = table.get("kind", "")
    if kind not in KINDS:
        raise SettingsError(f"{where}: kind", " or ".join(KINDS), kind)
    url = parse.http_url(f"{where}: url", table.get("url", ""))
    if not url:
        raise SettingsError(f"{where}: url", "an http:// or https:// URL", url)
    severities = _strings(f"{where}: severities", table.get("severities", list(SEVERITIES)))
    if not set(severities) <= set(SEVERITIES):
        raise SettingsError(f"{where}: severities", "critical and/or warning", severities)
    per_minute = parse.integer(
        f"{where}: per_minute",
        table.get("per_minute", 60),
        1,
        MAX_PER_MINUTE,
        f"an integer from 1 to {MAX_PER_MINUTE}",
    )
    return Destination(
        name=name,
        kind=kind,
        url=url,
        severities=frozenset(severities),
        scripts=_strings(f"{where}: scripts", table.get("scripts", [])),
        per_minute=per_minute,
        secret=parse.text(f"{where}: secret", table.get("secret", "")),
    )


def _strings(where: str, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise SettingsError(where, "a list of strings", raw)
    return tuple(parse.text(where, item) for item in raw)
