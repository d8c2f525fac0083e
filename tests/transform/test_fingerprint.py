"""Error fingerprints group occurrences that differ only in ids, numbers and URLs."""

from __future__ import annotations

import pytest

from pipeline.transform.fingerprint import fingerprint, template


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "Cannot read properties of undefined (reading 'id3')",
            "Cannot read properties of undefined (reading 'id7')",
        ),
        ("timeout after 3000ms on attempt 2", "timeout after 15000ms on attempt 5"),
        ("fetch https://api.example.com/v1/x?id=1 failed", "fetch https://h.test/y failed"),
        ("no user 0b5e1f3a9c2d4e7f", "no user 9f8e7d6c5b4a3f2e1d"),
        (
            "job 123e4567-e89b-12d3-a456-426614174000 lost",
            "job 00000000-0000-0000-0000-00000000000a lost",
        ),
        ("mail to a.b@example.com bounced", "mail to x@y.org bounced"),
        ("  spaced   out ", "spaced out"),
    ],
)
def test_same_error_same_fingerprint(a: str, b: str) -> None:
    assert fingerprint("TypeError", a) == fingerprint("TypeError", b)


def test_different_errors_differ() -> None:
    assert fingerprint("TypeError", "x is not a function") != fingerprint(
        "RangeError", "x is not a function"
    )
    assert fingerprint("Error", "disk full") != fingerprint("Error", "disk empty")
    # Words made of hex letters are words, not ids.
    assert template("bad facade decade") == "bad facade decade"


def test_template_shows_placeholders() -> None:
    assert template("GET https://x.test/a/1 took 12.5 ms for f3a9c2d4e7f01b2c") == (
        "GET <url> took <n> ms for <hex>"
    )
    assert len(fingerprint("E", "m")) == 16
    assert len(template("x" * 10_000)) == 300


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # A redaction marker inside a URL (the userinfo and query rules put them there) is part
        # of the URL: the template must not keep what follows the marker.
        (
            "connect to postgres://app:[REDACTED:userinfo]@db.internal/app failed",
            "connect to <url> failed",
        ),
        ("GET https://x.test/a?token=[REDACTED:query]&b=1 failed", "GET <url> failed"),
        (
            "call https://u:[REDACTED:userinfo]@h.test/x?api_key=[REDACTED:query] (retry 2)",
            "call <url> (retry <n>)",
        ),
        ("http://[::1]:8080/health down", "<url> down"),
        ("GET http://x.test/items[3] 404", "GET <url> <n>"),
        # A bracket that opened before the URL still closes outside it.
        ("see [http://x.test/a] now", "see [<url>] now"),
        ("(http://x.test/a)", "(<url>)"),
    ],
)
def test_urls_with_markers_and_brackets_make_clean_templates(message: str, expected: str) -> None:
    assert template(message) == expected


def test_the_same_url_error_with_different_hosts_groups_once_redacted() -> None:
    assert fingerprint(
        "OperationalError", "connect to postgres://app:[REDACTED:userinfo]@primary.internal/app"
    ) == fingerprint(
        "OperationalError", "connect to postgres://app:[REDACTED:userinfo]@replica.internal/billing"
    )
