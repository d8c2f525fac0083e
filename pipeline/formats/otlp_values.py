"""OTLP/JSON's typed values: `AnyValue`, attribute lists, int64 numbers, nanosecond times.

The OTLP/JSON mapping (opentelemetry-proto `docs/specification.md`, "JSON Protobuf Encoding")
writes an attribute list as `[{"key": k, "value": AnyValue}]`, an `AnyValue` as an object with
one of `stringValue`, `boolValue`, `intValue`, `doubleValue`, `arrayValue` (`{"values":
[AnyValue]}`), `kvlistValue` (`{"values": [{"key", "value"}]}`) or `bytesValue` (base64), and
64-bit integers as decimal strings. Cloudflare's export writes them as JSON numbers instead
(`"intValue": 404`, docs: cloudflare-otlp-and-streaming-tail.md, A2), so both are read. An
empty `AnyValue` (`{}`) or a missing `value` is OTLP's null.

Values come out as plain JSON (str, bool, int, float, list, dict, None) so that they can be
stored in `extra`/`data` as they are. A `doubleValue` of `NaN` or `Infinity` (which proto3's
JSON writes as strings) is kept as that string: jsonb has no NaN. A `bytesValue` is kept as its
base64 text. Integers outside int64 are refused: neither OTLP nor jsonb's writer can hold one.
Errors are `DecodeError`s naming the element: `attributes[3].value.intValue`.
"""

from __future__ import annotations

import math

from pipeline.errors import DecodeError
from pipeline.formats.fields import MAX_MS, MIN_MS, at, expected
from pipeline.formats.invocation import JSON

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_NS_PER_MS = 1_000_000
_KINDS = (
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "arrayValue",
    "kvlistValue",
    "bytesValue",
)
_KIND_LIST = ", ".join(_KINDS)
_NON_FINITE = frozenset(("NaN", "Infinity", "-Infinity"))
_FLOAT_MAX = 2**1023


def attributes(value: JSON, prefix: str, name: str) -> dict[str, JSON]:
    """An attribute list as a dict, in order; a repeated key keeps its last value. Null or
    absent is `{}`."""
    if type(value) is not list:
        if value is None:
            return {}
        expected(prefix, name, "an array of {key, value}", value)
    found: dict[str, JSON] = {}
    for i, pair in enumerate(value):
        where = f"{prefix}{name}[{i}]."
        if type(pair) is not dict:
            expected(where, "", "an object {key, value}", pair)
        key = pair.get("key")
        if type(key) is not str:
            expected(where, "key", "a string", key)
        found[key] = any_value(pair.get("value"), where, "value")
    return found


def any_value(value: JSON, prefix: str, name: str) -> JSON:
    """One `AnyValue` as plain JSON. The common kinds are tried first, one lookup each."""
    if type(value) is not dict:
        if value is None:
            return None
        expected(prefix, name, "an AnyValue object", value)
    text = value.get("stringValue")
    if type(text) is str:
        return text
    for kind in _KINDS:
        if kind in value:
            return _kind(kind, value[kind], prefix, f"{name}.{kind}" if name else kind)
    if value:
        expected(prefix, name, f"an AnyValue (one of {_KIND_LIST})", value)
    return None


def _kind(kind: str, raw: JSON, prefix: str, name: str) -> JSON:
    if raw is None:
        return None
    if kind == "stringValue" or kind == "bytesValue":
        if type(raw) is not str:
            expected(prefix, name, "a string", raw)
        return raw
    if kind == "boolValue":
        if raw is not True and raw is not False:
            expected(prefix, name, "a boolean", raw)
        return raw
    if kind == "intValue":
        return int64(raw, prefix, name)
    if kind == "doubleValue":
        return _double(raw, prefix, name)
    if kind == "arrayValue":
        values = _values(raw, prefix, name)
        return [any_value(v, prefix, f"{name}.values[{i}]") for i, v in enumerate(values)]
    # kvlistValue
    return attributes(_values(raw, prefix, name), prefix, f"{name}.values")


def _values(raw: JSON, prefix: str, name: str) -> list[JSON]:
    """The `values` array of an `arrayValue` or `kvlistValue`; `{}` is an empty one."""
    if type(raw) is not dict:
        expected(prefix, name, "an object {values: [...]}", raw)
    values = raw.get("values")
    if values is None:
        return []
    if type(values) is not list:
        expected(prefix, f"{name}.values", "an array", values)
    return values


def int64(value: JSON, prefix: str, name: str) -> int:
    """An int64 written as a JSON number or as a decimal string (OTLP's form)."""
    if type(value) is int:
        number: int = value
    elif type(value) is str and 0 < len(value) <= 20 and _decimal(value):
        number = int(value)
    elif type(value) is float and value.is_integer():
        number = int(value)  # a large integer some writer printed as 1.7e18
    else:
        expected(prefix, name, "an int64 (a number or a decimal string)", value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise DecodeError(at(prefix, name), f"{number} is outside int64")
    return number


def _decimal(text: str) -> bool:
    digits = text[1:] if text[0] == "-" else text
    return digits.isascii() and digits.isdigit()


def _double(value: JSON, prefix: str, name: str) -> JSON:
    if type(value) is float:
        return value
    if type(value) is int:
        if -_FLOAT_MAX <= value <= _FLOAT_MAX:
            return float(value)
        # Only the standard library's parser (the lenient path, sanitize.loads) yields one.
        raise DecodeError(at(prefix, name), f"{value} is too large for a double")
    if type(value) is str:
        if value in _NON_FINITE:
            return value
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    expected(prefix, name, "a double (a number, or NaN/Infinity/-Infinity)", value)


def epoch_ns_as_ms(value: JSON, prefix: str, name: str) -> int | None:
    """A `fixed64` nanosecond time as epoch milliseconds; absent, null and 0 (OTLP's "not
    known") are None. Years 2000..2199 only, as for every timestamp tailpipe stores."""
    if value is None or value == "0" or (type(value) is int and value == 0):
        return None
    ns = int64(value, prefix, name)
    ms = ns // _NS_PER_MS
    if not MIN_MS <= ms < MAX_MS:
        raise DecodeError(at(prefix, name), f"{ns} is not epoch nanoseconds in years 2000..2199")
    return ms
