"""PagerDuty, Opsgenie and Standard Webhooks: each against a local HTTP server that checks the
documented payload shape, firing then resolved under one key; Slack's and Discord's text says
which. The receiver and forwarder are test_forward's (a real HTTP/1.1 server, real httpx)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from pipeline.alerts.destinations import Destination, load, text
from pipeline.errors import SettingsError
from tests.alerts.test_forward import ALERT, Receiver, _forwarder, receiver

__all__ = ["receiver"]  # the fixture, shared

FIRING = {**ALERT, "rule": "checkout-errors", "dedup_key": "checkout-errors:checkout",
          "script": "checkout", "occurrences": 1,
          "summary": "checkout: checkout-errors firing: error_rate 0.3 (above 0.2)",
          "details": {"state": "firing", "value": 0.3,
                      "query": "/api/logs/recent?script=checkout"}}  # fmt: skip
RESOLVED = {**FIRING, "id": "5f0c7d0e-0000-5000-8000-000000000002",
            "summary": "checkout: checkout-errors resolved after 0:13:00: error_rate 0.05",
            "details": {**FIRING["details"], "state": "resolved"}}  # fmt: skip
PD_SEVERITIES = {"critical", "error", "warning", "info"}


def check_pagerduty(event: dict[str, Any]) -> None:
    """The Events API v2 shape (developer.pagerduty.com, 'Send an Alert Event')."""
    assert event["routing_key"] == "R0UT1NGKEY0000000000000000000000"
    assert event["event_action"] in ("trigger", "resolve")
    assert 0 < len(event["dedup_key"]) <= 255
    if event["event_action"] == "trigger":
        payload = event["payload"]
        assert 0 < len(payload["summary"]) <= 1024
        assert isinstance(payload["source"], str)
        assert payload["source"]
        assert payload["severity"] in PD_SEVERITIES
        assert isinstance(payload.get("custom_details", {}), dict)


async def test_pagerduty_triggers_then_resolves_under_one_dedup_key(receiver: Receiver) -> None:
    pd = Destination("pd", "pagerduty", receiver.url("/v2/enqueue"),
                     routing_key="R0UT1NGKEY0000000000000000000000")  # fmt: skip
    forwarder, client = await _forwarder([pd])
    async with client:
        await forwarder.forward(FIRING)
        await forwarder.forward(RESOLVED)
    events = [orjson.loads(r.body) for r in receiver.received]
    for event in events:
        check_pagerduty(event)
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [
        ("trigger", "checkout-errors:checkout"), ("resolve", "checkout-errors:checkout"),
    ]  # fmt: skip
    assert events[0]["payload"]["severity"] == "critical"
    assert {r.path for r in receiver.received} == {"/v2/enqueue"}


async def test_opsgenie_creates_then_closes_the_alias(receiver: Receiver) -> None:
    genie = Destination("og", "opsgenie", receiver.url("/v2/alerts"), api_key="k-123")
    forwarder, client = await _forwarder([genie])
    async with client:
        await forwarder.forward(FIRING)
        await forwarder.forward(RESOLVED)
    create, close = receiver.received
    assert create.path == "/v2/alerts"
    assert close.path == "/v2/alerts/checkout-errors%3Acheckout/close?identifierType=alias"
    for request in (create, close):
        assert request.headers["authorization"] == "GenieKey k-123"
    body = orjson.loads(create.body)
    # docs.opsgenie.com, Alert API, 'Create Alert': message <= 130, alias <= 512, P1..P5.
    assert 0 < len(body["message"]) <= 130
    assert body["alias"] == "checkout-errors:checkout"
    assert body["priority"] in {"P1", "P2", "P3", "P4", "P5"}
    assert all(isinstance(v, str) for v in body["details"].values())
    assert set(orjson.loads(close.body)) == {"source", "note"}


async def test_a_standard_webhook_verifies_with_the_stock_library(receiver: Receiver) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    hook = Destination("w", "webhook", receiver.url(), secret=secret, signing="standard")
    forwarder, client = await _forwarder([hook])
    async with client:
        await forwarder.forward(FIRING)
    (request,) = receiver.received
    assert request.headers["webhook-id"] == FIRING["id"]
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    verified = Webhook(secret).verify(request.body, request.headers)
    assert verified["details"]["state"] == "firing"
    with pytest.raises(Exception):  # noqa: B017, PT011 - the library's own verification error
        Webhook("whsec_" + base64.b64encode(b"x" * 24).decode()).verify(
            request.body, request.headers
        )


def test_chat_text_says_firing_or_resolved() -> None:
    assert text(FIRING).startswith(":rotating_light: CRITICAL checkout-errors [checkout]")
    assert text(RESOLVED).startswith(":white_check_mark: RESOLVED checkout-errors [checkout]")
    assert text(ALERT).startswith(":rotating_light: CRITICAL")  # a one-shot alert fires


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("kind = 'pagerduty'", "routing_key"),
        ("kind = 'opsgenie'", "api_key"),
        ("kind = 'webhook'\nurl = 'http://x.test'\nsecret = 's'\nsigning = 'standard'", "secret"),
        ("kind = 'webhook'\nurl = 'http://x.test'\nsigning = 'fancy'", "signing"),
    ],
)
def test_a_bad_incident_destination_names_its_key(tmp_path: Path, table: str, named: str) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text(f"[[destination]]\nname = 'd'\n{table}\n")
    with pytest.raises(SettingsError) as caught:
        load(str(path))
    assert f"destination d: {named}" in str(caught.value)


def test_incident_tools_default_to_their_apis(tmp_path: Path) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text("[[destination]]\nname = 'pd'\nkind = 'pagerduty'\nrouting_key = 'r'\n"
                    "[[destination]]\nname = 'og'\nkind = 'opsgenie'\napi_key = 'k'\n")  # fmt: skip
    pd, og = load(str(path))
    assert pd.url == "https://events.pagerduty.com/v2/enqueue"
    assert og.url == "https://api.opsgenie.com/v2/alerts"
