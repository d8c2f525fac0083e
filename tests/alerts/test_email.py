"""Alerts by email against a real SMTP server (aiosmtpd, in this process) that requires
STARTTLS and then a login: firing and resolved as one thread; a refused login is dropped at
once; a server without STARTTLS is refused rather than sent to in the clear."""

from __future__ import annotations

import email
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from pipeline.alerts.delivery import Forwarder
from pipeline.alerts.destinations import Destination, load
from pipeline.backoff import Backoff
from pipeline.errors import SettingsError
from tests.alerts.test_incident_tools import FIRING, RESOLVED
from tests.conftest import free_port


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        self.times.append(time.time())
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append(data.login.decode())
            if (data.login, data.password) == (b"tailpipe", b"s3cret"):
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@dataclass
class Server:
    inbox: Inbox
    port: int
    ca_file: str


def serve(inbox: Inbox, tmp_path: Path, tls: bool) -> Iterator[Server]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=tls,
        authenticator=inbox.authenticate, auth_require_tls=tls, auth_exclude_mechanism=["CRAM-MD5"],
    )  # fmt: skip
    controller.start()
    try:
        yield Server(inbox, port, str(ca_file))
    finally:
        controller.stop()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Server]:
    yield from serve(Inbox(), tmp_path, tls=True)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Server]:
    yield from serve(Inbox(), tmp_path, tls=False)


def mailbox(server: Server, password: str = "s3cret") -> Destination:
    return Destination(
        "mail", "email", f"smtp://127.0.0.1:{server.port}", sender="tailpipe@example.com",
        recipients=("oncall@example.com",), username="tailpipe", password=password,
        ca_file=server.ca_file,
    )  # fmt: skip


async def deliver(destination: Destination, *alerts: dict[str, Any]) -> Forwarder:
    async with httpx.AsyncClient() as client:
        forwarder = Forwarder([destination], client, max_attempts=2, backoff=Backoff(0.01, 0.02))
        for alert in alerts:
            await forwarder.deliver(destination, alert)
    return forwarder


async def test_firing_then_resolved_over_starttls_as_one_thread(smtp: Server) -> None:
    forwarder = await deliver(mailbox(smtp), FIRING, RESOLVED)
    assert forwarder.tally.delivered == 2
    fired, resolved = smtp.inbox.messages
    assert smtp.inbox.logins == ["tailpipe", "tailpipe"]
    assert fired["Subject"] == "[tailpipe] CRITICAL checkout-errors [checkout]"
    assert resolved["Subject"] == "[tailpipe] RESOLVED checkout-errors [checkout]"
    assert (fired["From"], fired["To"]) == ("tailpipe@example.com", "oncall@example.com")
    assert resolved["In-Reply-To"] == resolved["References"] == fired["Message-ID"]
    body = fired.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert b"error_rate 0.3" in body


async def test_a_refused_login_is_dropped_at_once(smtp: Server) -> None:
    forwarder = await deliver(mailbox(smtp, password="wrong"), FIRING)
    assert (forwarder.tally.delivered, forwarder.tally.dropped, forwarder.tally.retries) == (
        0, 1, 0,
    )  # fmt: skip
    assert smtp.inbox.messages == []


async def test_a_server_without_starttls_is_not_sent_to_in_the_clear(plain: Server) -> None:
    forwarder = await deliver(mailbox(plain), FIRING)
    assert (forwarder.tally.delivered, forwarder.tally.dropped) == (0, 1)
    assert plain.inbox.messages == []


async def test_a_server_down_is_retried_then_given_up(tmp_path: Path) -> None:
    down = Destination("mail", "email", f"smtp://127.0.0.1:{free_port()}",
                       sender="a@example.com", recipients=("b@example.com",))  # fmt: skip
    forwarder = await deliver(down, FIRING)
    assert (forwarder.tally.retries, forwarder.tally.dropped) == (1, 1)


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("url = 'https://x.test'\nfrom = 'a@x.test'\nto = ['b@x.test']", "url"),
        ("url = 'smtp://x.test'\nto = ['b@x.test']", "from"),
        ("url = 'smtp://x.test'\nfrom = 'a@x.test'\nto = []", "to"),
        ("url = 'smtp://x.test'\nfrom = 'a@x.test'\nto = ['b@x.test']\nusername = 'u'", "password"),
        (
            "url = 'smtp://x.test'\nfrom = 'a@x.test'\nto = ['b@x.test']\nstarttls = 'no'",
            "starttls",
        ),
    ],
)
def test_a_bad_email_destination_names_its_key(tmp_path: Path, table: str, named: str) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text(f"[[destination]]\nname = 'm'\nkind = 'email'\n{table}\n")
    with pytest.raises(SettingsError) as caught:
        load(str(path))
    assert f"destination m: {named}" in str(caught.value)
