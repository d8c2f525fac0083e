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

The payloads and the signature are pure functions; `forward.py` does the sending.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.errors import SettingsError
from pipeline.extract import datafile

KINDS = ("slack", "discord", "webhook")
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
        if not self.url.startswith(("https://", "http://")):
            raise SettingsError(f"{where}: url", "an http(s) URL", self.url)
        if not self.severities <= {"critical", "warning"}:
            raise SettingsError(f"{where}: severities", "critical and/or warning", self.severities)
        if self.per_minute < 1:
            raise SettingsError(f"{where}: per_minute", "a positive number", self.per_minute)

    def wants(self, alert: dict[str, Any]) -> bool:
        """Routing: this destination takes alerts of its severities and scripts."""
        if alert.get("severity") not in self.severities:
            return False
        if not self.scripts:
            return True
        script = alert.get("script") or ""
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
    times = f" (x{count})" if count and count > 1 else ""
    query = alert.get("details", {}).get("query", "")
    return (
        f"{icon} {alert.get('severity', '?').upper()} {alert.get('rule')}{where}: "
        f"{alert.get('summary', '')}{times}" + (f"\n{query}" if query else "")
    )


def load(path: str) -> tuple[Destination, ...]:
    label, doc = datafile.user(path)
    datafile.check_keys(label, doc, ("destination",))
    out = []
    for n, table in enumerate(doc.get("destination", []), 1):
        if not isinstance(table, dict):
            raise SettingsError(f"{label}: destination {n}", "a table", table)
        where = f"{label}: destination {table.get('name', n)}"
        datafile.check_keys(where, table, ("name", "kind", "url", "severities", "scripts",
                                           "per_minute", "secret"))  # fmt: skip
        try:
            out.append(
                Destination(
                    name=str(table.get("name", f"destination-{n}")),
                    kind=str(table.get("kind", "")),
                    url=str(table.get("url", "")),
                    severities=frozenset(table.get("severities", ("critical", "warning"))),
                    scripts=tuple(table.get("scripts", ())),
                    per_minute=int(table.get("per_minute", 60)),
                    secret=str(table.get("secret", "")),
                )
            )
        except (TypeError, ValueError) as exc:
            raise SettingsError(where, "valid values", str(exc)) from None
    if not out:
        raise SettingsError(label, "at least one [[destination]]", "none")
    return tuple(out)
