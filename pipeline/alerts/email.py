"""Alerts by email over SMTP: STARTTLS (or TLS from the start), authentication, and threads.

A destination of kind `email`::

    [[destination]]
    name = "oncall-mail"
    kind = "email"
    url = "smtp://smtp.example.com:587"   # smtp:// takes STARTTLS; smtps:// is TLS at once (465)
    from = "tailpipe@example.com"
    to = ["oncall@example.com"]
    username = "tailpipe"                 # optional: AUTH after TLS, never in the clear
    password = "..."
    ca_file = "/etc/ssl/internal-ca.pem"  # optional: a private relay's CA

`smtp://` refuses a server that does not offer STARTTLS, unless `starttls = false` (a relay on
localhost). The message says firing or resolved in its subject, and a resolved one is a reply
to its firing (`In-Reply-To` the firing's `Message-ID`, which both derive from the alert's key
and the time it fired), so a mail client shows one thread per episode.

Sending uses the standard library's `smtplib` in a thread: one short conversation per alert.
`send` raises `Refused` for what retrying cannot fix (a 5xx answer, a failed login) and lets
anything else (a timeout, a 4xx, a dropped connection) through, to be retried.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

from pipeline.alerts.destinations import Destination, state, text
from pipeline.errors import TailpipeError


class Refused(TailpipeError):
    """The server refused the message, the sender, every recipient or the login: permanent."""


def message(destination: Destination, alert: dict[str, Any]) -> EmailMessage:
    """The email of `alert`."""
    resolved = state(alert) == "resolved"
    where = f" [{alert['script']}]" if alert.get("script") else ""
    level = "RESOLVED" if resolved else str(alert.get("severity", "?")).upper()
    mail = EmailMessage()
    mail["Subject"] = f"[tailpipe] {level} {alert.get('rule')}{where}"[:200]
    mail["From"] = destination.sender
    mail["To"] = ", ".join(destination.recipients)
    mail["Date"] = formatdate(usegmt=True)
    firing_id = _thread_id(alert)
    if resolved:
        mail["Message-ID"] = f"<resolved.{alert.get('id', '')}@tailpipe>"
        mail["In-Reply-To"] = mail["References"] = firing_id
    else:
        mail["Message-ID"] = firing_id
    details = alert.get("details")
    query = details.get("query") if isinstance(details, dict) else None
    body = [text(alert), "", f"first at {alert.get('first_at')}, last at {alert.get('last_at')}"]
    if query:
        body.append(f"lines: {query}")
    mail.set_content("\n".join(body) + "\n")
    return mail


def _thread_id(alert: dict[str, Any]) -> str:
    """The firing's Message-ID: its key and the time it fired, which its resolved one knows."""
    details = alert.get("details")
    fired = details.get("fired_at") if isinstance(details, dict) else None
    seed = f"{alert.get('dedup_key')}|{fired or alert.get('first_at')}"
    return f"<{hashlib.sha256(seed.encode()).hexdigest()[:32]}@tailpipe>"


def send(destination: Destination, alert: dict[str, Any], timeout_s: float) -> None:
    """One SMTP conversation that delivers `alert` (blocking: run it in a thread)."""
    url = urlsplit(destination.url)
    host = url.hostname or "localhost"
    context = ssl.create_default_context(cafile=destination.ca_file or None)
    mail = message(destination, alert)
    try:
        if url.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                host, url.port or 465, timeout=timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(host, url.port or 587, timeout=timeout_s)
        with client:
            client.ehlo()
            if url.scheme == "smtp" and destination.starttls:
                if not client.has_extn("starttls"):
                    raise Refused(f"{host} offers no STARTTLS (set starttls = false to send plain)")
                client.starttls(context=context)
                client.ehlo()
            if destination.username:
                client.login(destination.username, destination.password)
            client.send_message(mail)
    except smtplib.SMTPAuthenticationError as exc:
        raise Refused(f"login refused: {exc.smtp_code}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise Refused(f"every recipient refused: {sorted(exc.recipients)}") from exc
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        if exc.smtp_code >= 500:
            raise Refused(f"refused: {exc.smtp_code}") from exc
        raise
