"""Values orjson refuses to write (integers beyond 64 bits, dict keys that are not strings) must
not cost the record they are in: they are written as text and the record is kept."""

from __future__ import annotations

import pytest

from pipeline.formats.decode import decode
from tests.logger.test_envelope import captured_logger

WIDE = 2**70


def test_a_wide_integer_in_a_field_is_kept_as_text() -> None:
    log, captured = captured_logger()
    log.info(
        "x",
        n=WIDE,
        widest_orjson_writes=2**64 - 1,
        below=-(2**63) - 1,
        nested={"a": [WIDE, 1], "b": (WIDE,)},
        ok=5,
    )
    assert log.errors == 0
    item = captured.only()
    assert item["logs"][0]["context"] == {
        "n": str(WIDE),
        "widest_orjson_writes": 2**64 - 1,  # orjson writes it: left a number
        "below": str(-(2**63) - 1),
        "nested": {"a": [str(WIDE), 1], "b": [str(WIDE)]},
        "ok": 5,
    }
    (invocation,) = decode(captured.values[0])  # and the pipeline reads it
    assert invocation.logs[0].data == item["logs"][0]["context"]


def test_keys_that_are_not_strings_are_kept_as_text() -> None:
    log, captured = captured_logger()
    log.info("x", by_status={200: 3, None: 1}, flags={True: "y"})
    assert log.errors == 0
    context = captured.only()["logs"][0]["context"]
    assert context == {"by_status": {"200": 3, "None": 1}, "flags": {"True": "y"}}


def test_a_wide_integer_in_a_job_and_in_a_typed_record() -> None:
    log, captured = captured_logger()

    def run() -> None:
        with log.job("import", batch=WIDE):
            log.info("inside", n=WIDE)
            # A count the pipeline could not store (its columns are 64-bit) is nulled and
            # shown, as any invalid typed field is: as text, the decoder would refuse the item.
            log.api_call("github", "/x", status=200, tokens_in=WIDE)
            raise ValueError(f"wide {WIDE}")

    with pytest.raises(ValueError, match="wide"):
        run()
    assert log.errors == 0
    item = captured.only()
    assert item["event"]["job"] == {"name": "import", "batch": str(WIDE)}
    assert item["logs"][0]["context"] == {"n": str(WIDE)}
    call = item["logs"][1]
    assert call["record"]["tokens_in"] is None
    assert call["context"] == {"invalid_fields": {"tokens_in": str(WIDE)}}
    assert item["exceptions"][0]["message"] == f"wide {WIDE}"
    (invocation,) = decode(captured.values[0])
    assert invocation.logs[1].kind == "api_call"
