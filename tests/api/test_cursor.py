"""The recent-logs cursor (pipeline/api/cursor.py) on its own: signed, compact, URL-safe, and
refused when edited, hand-made, signed under another key, or asking for a window no first page
could have fixed. test_api pages through a real one against stored rows."""

from __future__ import annotations

import base64
import string
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.api import cursor
from pipeline.api.cursor import Cursor, InvalidCursor, Position
from pipeline.api.params import MAX_HOURS

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EPOCH, END_OF_TIME = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
KEY = cursor.key_for(["read-token-0123456789", "write-token-0123456789"])
TOPIC = "tail-events"


def made(
    hours: float = 24, until: datetime = NOW, topic: str = TOPIC, ts: datetime | None = None
) -> Cursor:
    since = until - timedelta(hours=hours)
    at = Position(ts or until - timedelta(minutes=3), 123_456_789, 5, 2, 7, topic)
    return Cursor(since, until, at)


def test_a_cursor_comes_back_as_it_was_made() -> None:
    original = made()
    text = cursor.encode(original, KEY)
    assert set(text) <= set(string.ascii_letters + string.digits + "-_"), "URL-safe as it is"
    assert len(text) <= 100, "compact"
    assert cursor.decode(text, KEY, NOW) == original


def test_the_longest_topic_still_fits_the_parameter() -> None:
    text = cursor.encode(made(hours=MAX_HOURS, topic="t" * 249), KEY)  # Kafka's longest name
    assert len(text) <= 512  # the `cursor` parameter's max_length
    assert cursor.decode(text, KEY, NOW).after.topic == "t" * 249


def test_an_edited_cursor_is_refused_wherever_the_edit() -> None:
    raw = base64.urlsafe_b64decode(cursor.encode(made(), KEY) + "==")
    for i in range(len(raw)):
        for flip in (0x01, 0x80):
            edited = bytearray(raw)
            edited[i] ^= flip
            text = base64.urlsafe_b64encode(bytes(edited)).decode().rstrip("=")
            with pytest.raises(InvalidCursor, match="not a cursor this API made"):
                cursor.decode(text, KEY, NOW)


def test_a_cursor_signed_under_other_tokens_is_refused() -> None:
    """What happens to every outstanding cursor when the API's tokens change."""
    other = cursor.key_for(["read-token-0123456789"])
    assert other != KEY
    with pytest.raises(InvalidCursor, match="tokens changed"):
        cursor.decode(cursor.encode(made(), other), KEY, NOW)


def test_the_key_is_the_same_for_the_same_tokens_in_any_order() -> None:
    """Every replica configured alike shares it: paging works behind a load balancer."""
    assert cursor.key_for(["write-token-0123456789", "read-token-0123456789", ""]) == KEY
    assert len(KEY) == 32


def hand_made(since: datetime, until: datetime) -> str:
    """The unsigned base64 JSON cursor this API used to take, asking for what it likes."""
    us = [round(t.timestamp() * 1_000_000) for t in (since, until, until)]
    return base64.urlsafe_b64encode(orjson.dumps([1, *us, 0, 0, 0, 0, TOPIC])).decode()


@pytest.mark.parametrize(
    "text",
    [
        hand_made(EPOCH, END_OF_TIME),  # 8,000 years: the cursor
        hand_made(NOW - timedelta(hours=1), NOW),
        "",
        "not-a-cursor",
        "a",
        "====",
        "YWJj",
        "!!!!",
        "a b",
        "\u00e9t\u00e9",
        "A" * 512,
    ],
)
def test_hand_made_cursors_are_refused(text: str) -> None:
    with pytest.raises(InvalidCursor, match="not a cursor this API made"):
        cursor.decode(text, KEY, NOW)


@pytest.mark.parametrize(
    ("forged", "problem"),
    [
        (Cursor(EPOCH, END_OF_TIME, made().after), "between 1 and 2160 hours"),
        (made(hours=24 * 365 * 50), "between 1 and 2160 hours"),
        (made(hours=MAX_HOURS + 1), "between 1 and 2160 hours"),
        (made(hours=MAX_HOURS, until=NOW + timedelta(days=30)), "ends in the future"),
        (made(hours=0), "between 1 and 2160 hours"),
        (made(hours=0.5), "between 1 and 2160 hours"),
        (made(hours=-5), "between 1 and 2160 hours"),
        (made(hours=1, until=NOW - timedelta(hours=MAX_HOURS + 1)), "older than 2160 hours"),
        (made(hours=1, ts=NOW - timedelta(hours=2)), "outside its window"),
        (made(hours=1, ts=NOW + timedelta(minutes=1)), "outside its window"),
    ],
)
def test_a_signed_cursor_still_gets_no_more_than_hours_allows(forged: Cursor, problem: str) -> None:
    """Whoever can compute the key (they hold every token) signs what they like: the window is
    checked again, against the limits of `hours`."""
    with pytest.raises(InvalidCursor, match=problem):
        cursor.decode(cursor.encode(forged, KEY), KEY, NOW)


def test_the_limits_themselves_are_taken() -> None:
    for kept in (
        made(hours=MAX_HOURS),
        made(hours=1),
        made(hours=1, until=NOW + cursor.SKEW),  # a replica whose clock runs ahead
        made(hours=1, until=NOW - timedelta(hours=MAX_HOURS) + timedelta(seconds=1)),
    ):
        assert cursor.decode(cursor.encode(kept, KEY), KEY, NOW) == kept


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_=", max_size=600))
def test_no_text_but_a_signed_cursor_is_taken(text: str) -> None:
    with pytest.raises(InvalidCursor):
        cursor.decode(text, KEY, NOW)
