"""Dead-letter records and object names: pure, no services."""

from __future__ import annotations

import gzip
from collections import Counter

import orjson
import pytest

from pipeline import __version__
from pipeline.deadletters.record import decode_object, encode, first_offset_of, object_key, record
from pipeline.errors import DecodeError
from pipeline.transform.batch import DeadLetter

AT = "2026-11-29T05:00:00.000+00:00"


def test_object_names_are_deterministic_and_sort_as_numbers() -> None:
    key = object_key("dead-letters", "events", 3, 9, 120)
    assert key == "dead-letters/events/3/00000000000000000009-00000000000000000120.jsonl.gz"
    assert object_key("/p/", "t", 0, 1, 2).startswith("p/t/0/")
    assert object_key("", "t", 0, 1, 2).startswith("t/0/")
    assert first_offset_of(key) == 9
    later = object_key("dead-letters", "events", 3, 100, 101)
    assert key < later


def test_records_round_trip_with_origin_error_and_version() -> None:
    letters = [
        DeadLetter(7, 1_700_000_000_000, b"k", b'{"broken": ', (("h", b"v"),), "DecodeError", "x"),
        DeadLetter(8, 1_700_000_000_001, None, b"\xff\xfe\x00", (), "DecodeError", "not utf-8"),
    ]
    body = encode(record("events", 2, d, AT, Counter()) for d in letters)
    assert body == encode(record("events", 2, d, AT, Counter()) for d in letters)
    lines = [orjson.loads(x) for x in gzip.decompress(body).splitlines()]
    assert lines[0]["value_encoding"] == "utf-8"
    assert lines[1]["value_encoding"] == "base64"
    assert {line["pipeline_version"] for line in lines} == {__version__}
    assert lines[0]["dead_lettered_at"] == AT
    back = decode_object(body)
    assert [(t, p) for t, p, _ in back] == [("events", 2), ("events", 2)]
    assert [d for _, _, d in back] == letters


def test_secrets_are_redacted_and_json_stays_json() -> None:
    value = orjson.dumps(
        {"logs": [{"message": ['password: "hunter2"', "Bearer ghp_" + "a" * 36]}], "x": "\0"}
    )
    counts: Counter[str] = Counter()
    letter = DeadLetter(1, 0, b"Bearer ghp_" + b"b" * 36, value, (), "CheckViolationError", "e")
    out = record("t", 0, letter, AT, counts)
    assert "hunter2" not in out["value"]
    assert "ghp_" not in out["value"]
    assert "ghp_" not in out["key"]
    assert orjson.loads(out["value"])["x"] == "\0"  # still the same JSON, NUL and all
    assert sum(counts.values()) >= 3


def test_a_body_that_is_not_an_object_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="gzip"):
        decode_object(b"plain")
    with pytest.raises(DecodeError, match="line 1"):
        decode_object(gzip.compress(b'{"offset": 1}\n'))
