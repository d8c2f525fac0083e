"""`tailpipe alerts test RULE`: a test notification to every destination of a rule.

A rule (or a `[[condition]]`) reaches the destinations that take its severity; this sends each
of them one alert marked as a test (`details.test`), firing, through the forwarder's own
delivery (rate limit, retries), so what an on-call engineer sees is what a real alert looks
like. It prints one line per destination and exits 0 when every one took it, 1 otherwise; an
unknown rule is a setting error (exit 2) naming the rules it knows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from pipeline.alerts.delivery import Forwarder
from pipeline.alerts.destinations import Destination
from pipeline.alerts.rules import Rule, Rules
from pipeline.errors import SettingsError
from pipeline.settings import Settings


def alert(rule: str, severity: str, script: str | None, now: datetime) -> dict[str, Any]:
    """A test alert of `rule`, shaped as the outbox publishes one."""
    at = now.isoformat()
    return {
        "id": str(uuid.uuid4()), "rule": rule, "severity": severity, "script": script,
        "dedup_key": f"{rule}:test", "first_at": at, "last_at": at, "occurrences": 1,
        "summary": f"test notification for {rule}: nothing is wrong",
        "details": {"state": "firing", "test": True},
    }  # fmt: skip


def severity_of(rules: Rules, name: str | None) -> tuple[str, str | None]:
    """The rule's severity and, for a condition of given scripts, its first script."""
    for condition in rules.conditions:
        if condition.name == name:
            return condition.severity, min(condition.scripts, default=None)
    found = getattr(rules, name, None) if name and not name.startswith("_") else None
    if isinstance(found, Rule):
        return found.severity, None
    known = sorted([*rules.enabled(), *(c.name for c in rules.conditions)])
    raise SettingsError("alerts test RULE", f"one of {', '.join(known)}", name or "")


def run(settings: Settings, rules: Rules, targets: Sequence[Destination], name: str | None) -> int:
    severity, script = severity_of(rules, name)
    assert name is not None
    wanted = [d for d in targets if severity in d.severities]
    if not wanted:
        print(f"no destination takes {severity} alerts")
        return 1
    test = alert(name, severity, script, datetime.now(UTC))

    async def send() -> list[tuple[str, bool]]:
        async with httpx.AsyncClient(timeout=settings.connect_timeout * 2) as client:
            forwarder = Forwarder(wanted, client, settings.alert_forward_attempts)
            results = []
            for destination in wanted:
                before = forwarder.tally.delivered
                await forwarder.deliver(destination, test)
                results.append((destination.name, forwarder.tally.delivered > before))
            return results

    results = asyncio.run(send())
    for destination, delivered in results:
        print(f"{destination}: {'delivered' if delivered else 'not delivered (see the log)'}")
    return 0 if all(ok for _, ok in results) else 1
