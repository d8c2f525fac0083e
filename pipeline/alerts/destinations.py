"""Where alerts are forwarded: Slack and Discord incoming webhooks, generic HTTPS webhooks,
PagerDuty (Events API v2), Opsgenie and email (SMTP, `email.py`).

Destinations come from a TOML file (`TAILPIPE_ALERT_DESTINATIONS`)::

    [[destination]]
    name = "ops"                 # for logs and metrics
    kind = "slack"               # slack | discord | webhook | pagerduty | opsgenie
    url = "https://hooks.slack.com/services/..."   # pagerduty, opsgenie: their API by default
    severities = ["critical"]    # default: both
    scripts = ["api-*"]          # shell patterns; default: every script (and none)
    per_minute = 30              # rate limit; default 60
    secret = "..."               # webhook only: signs the body (HMAC-SHA256)
    signing = "standard"         # webhook only: "tailpipe" (default) or Standard Webhooks,
                                 # whose secret is "whsec_<base64>"
    routing_key = "..."          # pagerduty: the integration's routing key
    api_key = "..."              # opsgenie: the API integration's key
    # email: url = "smtp://host:587", from, to, username, password, ca_file (`alerts/email.py`)

An alert with a state (`details.state`, from a condition: `alerts/evaluator.py`) is "firing" or
"resolved"; one without is firing. Every destination says which: Slack and Discord in the text,
webhooks in the body; PagerDuty triggers and resolves under the alert's `dedup_key`, Opsgenie
creates an alert aliased by it and closes that alias.

Every value is checked for its type and range when the file is read: whatever the file holds,
it is a list of valid destinations or a `SettingsError` naming the file, the destination and
the key (exit code 2). The payloads and the signature are pure functions; `forward.py` does the
sending.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from pipeline import datafile, parse
from pipeline.errors import SettingsError

KINDS = ("slack", "discord", "webhook", "pagerduty", "opsgenie", "email")
SEVERITIES = ("critical", "warning")
KEYS = ("name", "kind", "url", "severities", "scripts", "per_minute", "secret", "signing",
        "routing_key", "api_key", "from", "to", "username", "password", "ca_file",
        "starttls")  # fmt: skip
SIGNINGS = ("tailpipe", "standard")
DEFAULT_URLS = {
    "pagerduty": "https://events.pagerduty.com/v2/enqueue",
    "opsgenie": "https://api.opsgenie.com/v2/alerts",
}
"""The incident tools' APIs (Opsgenie's EU one is https://api.eu.opsgenie.com/v2/alerts)."""
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
    signing: str = "tailpipe"
    routing_key: str = ""
    api_key: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = ()
    username: str = ""
    password: str = ""
    ca_file: str = ""
    starttls: bool = True

    def __post_init__(self) -> None:
        where = f"alert destination {self.name}"
        if self.kind not in KINDS:
            raise SettingsError(f"{where}: kind", " or ".join(KINDS), self.kind)
        if self.kind == "email":
            _check_email(where, self)
        elif not self.url or parse.http_url(f"{where}: url", self.url) != self.url:
            raise SettingsError(f"{where}: url", "an http:// or https:// URL", self.url)
        if not self.severities <= {"critical", "warning"}:
            raise SettingsError(f"{where}: severities", "critical and/or warning", self.severities)
        if not 1 <= self.per_minute <= MAX_PER_MINUTE:
            raise SettingsError(
                f"{where}: per_minute", f"an integer from 1 to {MAX_PER_MINUTE}", self.per_minute
            )
        if self.signing not in SIGNINGS:
            raise SettingsError(f"{where}: signing", " or ".join(SIGNINGS), self.signing)
        if self.signing == "standard" and _standard_key(self.secret) is None:
            raise SettingsError(f"{where}: secret", "whsec_ and a base64 key", "(hidden)")
        if self.kind == "pagerduty" and not self.routing_key:
            raise SettingsError(f"{where}: routing_key", "the integration's routing key", "")
        if self.kind == "opsgenie" and not self.api_key:
            raise SettingsError(f"{where}: api_key", "the integration's API key", "")

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

    def target(self, alert: dict[str, Any]) -> str:
        """Where to POST `alert`: the destination's URL, or Opsgenie's close of its alias."""
        if self.kind == "opsgenie" and state(alert) == "resolved":
            alias = quote(_alias(alert), safe="")
            return f"{self.url}/{alias}/close?identifierType=alias"
        return self.url

    def request(self, alert: dict[str, Any], now_s: int) -> tuple[bytes, dict[str, str]]:
        """The body and headers to POST for `alert`."""
        headers = {"Content-Type": "application/json"}
        if self.kind == "slack":
            return orjson.dumps({"text": text(alert)}), headers
        if self.kind == "discord":
            return orjson.dumps({"content": text(alert)[:2000]}), headers
        if self.kind == "pagerduty":
            return orjson.dumps(pagerduty(alert, self.routing_key)), headers
        if self.kind == "opsgenie":
            headers["Authorization"] = f"GenieKey {self.api_key}"
            return orjson.dumps(opsgenie(alert)), headers
        body = orjson.dumps(alert)
        if self.secret and self.signing == "standard":
            headers.update(standard_webhook(self.secret, str(alert.get("id", "")), now_s, body))
        elif self.secret:
            headers[TIMESTAMP_HEADER] = str(now_s)
            headers[SIGNATURE_HEADER] = "sha256=" + signature(self.secret, now_s, body)
        return body, headers


def state(alert: dict[str, Any]) -> str:
    """ "firing" or "resolved": an alert without a state (a one-shot rule's) is firing."""
    details = alert.get("details")
    found = details.get("state") if isinstance(details, dict) else None
    return "resolved" if found == "resolved" else "firing"


def pagerduty(alert: dict[str, Any], routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: trigger, or resolve under the same `dedup_key`."""
    key = _alias(alert)
    if state(alert) == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    details = alert.get("details") if isinstance(alert.get("details"), dict) else {}
    return {
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": key,
        "payload": {
            "summary": str(alert.get("summary") or alert.get("rule") or "tailpipe alert")[:1024],
            "source": str(alert.get("script") or "tailpipe"),
            "severity": "critical" if alert.get("severity") == "critical" else "warning",
            "timestamp": alert.get("last_at"), "component": alert.get("script"),
            "group": alert.get("rule"), "class": alert.get("rule"),
            "custom_details": {**(details or {}), "occurrences": alert.get("occurrences", 1)},
        },
    }  # fmt: skip


def opsgenie(alert: dict[str, Any]) -> dict[str, Any]:
    """The body of Opsgenie's create alert (firing), or of its close by alias (resolved)."""
    if state(alert) == "resolved":
        return {"source": "tailpipe", "note": str(alert.get("summary", ""))[:25000]}
    details = alert.get("details") if isinstance(alert.get("details"), dict) else {}
    where = f" [{alert['script']}]" if alert.get("script") else ""
    return {
        "message": f"{alert.get('rule')}{where}: {alert.get('summary', '')}"[:130],
        "alias": _alias(alert), "description": text(alert)[:15000],
        "priority": "P1" if alert.get("severity") == "critical" else "P3",
        "source": "tailpipe", "entity": str(alert.get("script") or "")[:512],
        "tags": [str(alert.get("rule")), str(alert.get("severity"))],
        "details": {k: str(v)[:8000] for k, v in (details or {}).items()},
    }  # fmt: skip


def _check_email(where: str, d: Destination) -> None:
    parts = urlsplit(d.url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise SettingsError(f"{where}: url", "smtp://host[:port] or smtps://host[:port]", d.url)
    if "@" not in d.sender:
        raise SettingsError(f"{where}: from", "an email address", d.sender)
    if not d.recipients or not all("@" in r for r in d.recipients):
        raise SettingsError(f"{where}: to", "a list of email addresses", list(d.recipients))
    if bool(d.username) != bool(d.password):
        raise SettingsError(f"{where}: password", "both username and password, or neither", "")


def _alias(alert: dict[str, Any]) -> str:
    """What PagerDuty and Opsgenie know the alert by: its dedup key (its id without one)."""
    return str(alert.get("dedup_key") or alert.get("id") or "tailpipe")[:255]


def standard_webhook(secret: str, message_id: str, now_s: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: `webhook-signature` is `v1,` and the base64 HMAC-SHA256
    of `<id>.<timestamp>.<body>` under the secret's key, so receivers verify it with the stock
    libraries (standardwebhooks, svix)."""
    key = _standard_key(secret)
    assert key is not None  # checked on creation
    signed = f"{message_id}.{now_s}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": message_id, "webhook-timestamp": str(now_s),
            "webhook-signature": f"v1,{digest}"}  # fmt: skip


def _standard_key(secret: str) -> bytes | None:
    if not secret.startswith("whsec_"):
        return None
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>`: a receiver recomputes it with the shared secret
    and refuses old timestamps, so a captured request cannot be replayed later."""
    message = str(timestamp_s).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def text(alert: dict[str, Any]) -> str:
    resolved = state(alert) == "resolved"
    icon = ":rotating_light:" if alert.get("severity") == "critical" else ":warning:"
    if resolved:
        icon = ":white_check_mark:"
    level = "RESOLVED" if resolved else str(alert.get("severity", "?")).upper()
    where = f" [{alert['script']}]" if alert.get("script") else ""
    count = alert.get("occurrences", 1)
    times = f" (x{count})" if isinstance(count, int) and count > 1 else ""
    details = alert.get("details")
    query = details.get("query", "") if isinstance(details, dict) else ""
    return f"{icon} {level} {alert.get('rule')}{where}: {alert.get('summary', '')}{times}" + (
        f"\n{query}" if query else ""
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
    if kind == "email":
        url = parse.text(f"{where}: url", table.get("url", ""))
    else:
        url = parse.http_url(f"{where}: url", table.get("url", DEFAULT_URLS.get(kind, "")))
    if not url:
        raise SettingsError(f"{where}: url", "an http:// or https:// URL", url)
    starttls = table.get("starttls", True)
    if not isinstance(starttls, bool):
        raise SettingsError(f"{where}: starttls", "true or false", starttls)
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
        signing=parse.text(f"{where}: signing", table.get("signing", "tailpipe")),
        routing_key=parse.text(f"{where}: routing_key", table.get("routing_key", "")),
        api_key=parse.text(f"{where}: api_key", table.get("api_key", "")),
        sender=parse.text(f"{where}: from", table.get("from", "")),
        recipients=_strings(f"{where}: to", table.get("to", [])),
        username=parse.text(f"{where}: username", table.get("username", "")),
        password=parse.text(f"{where}: password", table.get("password", "")),
        ca_file=parse.text(f"{where}: ca_file", table.get("ca_file", "")),
        starttls=starttls,
    )


def _strings(where: str, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise SettingsError(where, "a list of strings", raw)
    return tuple(parse.text(where, item) for item in raw)
