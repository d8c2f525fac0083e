"""Parsers for setting values: `(name, raw) -> value`, or a `SettingsError` naming the setting.

A raw value is a string from the environment or whatever type the TOML file holds; every
parser accepts both, so a file and a variable mean the same thing. Whatever the input, a
parser returns a valid value or raises `SettingsError`: never another exception.

The grammars, the same for settings, alert rules, destinations and command-line arguments:

- integer: ASCII digits only (`²`, `٣` or `1_000` are not numbers here), at most `MAX_INT`;
  a TOML integer as it is. Booleans are not numbers.
- number: ASCII decimal, optionally signed, with an optional exponent (`0.5`, `2e-3`); never
  `nan` or `inf`, and nothing that overflows to them. A TOML integer or float, if finite.
- duration: a number of seconds (a TOML integer or float, or a string), or a string of an
  unsigned ASCII decimal followed by one unit: `ms`, `s`, `m`, `h` or `d` (`500ms`, `30s`,
  `1.5h`, `7d`). No sign, no exponent, no space inside, no compound (`1h30m`); surrounding
  whitespace is ignored. From 1 ms (`MIN_DURATION_S`) to 36500 days (`MAX_DURATION_S`).
- text: any string without NUL and without lone surrogates (bytes that were not UTF-8);
  file paths also without control characters or line separators.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipeline.errors import SettingsError

_IDENTIFIER = re.compile(r"[A-Za-z0-9._-]{1,249}\Z")
_HOST_PORT = re.compile(r"\[?[A-Za-z0-9.:-]+\]?:[0-9]{1,5}\Z")
_PG_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
_INTEGER = re.compile(r"[0-9]+\Z", re.ASCII)
_SIGNED_INTEGER = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z", re.ASCII)
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(ms|s|m|h|d)?\Z", re.ASCII)
_USERINFO_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

MAX_INT = 2**63 - 1
"""The largest integer setting: a PostgreSQL bigint, a Kafka int64."""
MIN_DURATION_S = 0.001
MAX_DURATION_S = 36500 * 86400.0
"""100 years: any date that far back or ahead is still a valid date."""
DURATION = "a duration like 500ms, 30s, 15m, 1h or 7d (1ms to 36500d)"


def text(name: str, raw: object) -> str:
    """A string without NUL or lone surrogates (an environment value that was not UTF-8)."""
    if not isinstance(raw, str):
        raise SettingsError(name, "a string", raw)
    if "\0" in raw or _has_surrogate(raw):
        raise SettingsError(name, "text without NUL or bytes that are not UTF-8", raw)
    return raw


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown(value: str) -> str:
    """`value` as it may appear in a one-line message: itself when it is printable on one
    line, else its repr (which escapes line breaks and control characters)."""
    return value if value.isprintable() else repr(value)


def nonempty(name: str, raw: object) -> str:
    value = text(name, raw).strip()
    if not value:
        raise SettingsError(name, "a non-empty string", raw)
    return value


def identifier(name: str, raw: object) -> str:
    """Kafka topic and group names and SQL schema names share this safe alphabet."""
    value = text(name, raw)
    if not _IDENTIFIER.match(value):
        raise SettingsError(name, "1-249 characters of letters, digits, '.', '_' or '-'", raw)
    return value


def integer(name: str, raw: object, low: int, high: int, expected: str) -> int:
    """An integer in [low, high]: a TOML integer, or ASCII digits (surrounding space ignored;
    a sign only when `low` is negative)."""
    if isinstance(raw, bool):
        raise SettingsError(name, expected, raw)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and (_SIGNED_INTEGER if low < 0 else _INTEGER).match(raw.strip()):
        digits = raw.strip().lstrip("+-").lstrip("0") or "0"
        if len(digits) > len(str(max(abs(low), abs(high)))):
            raise SettingsError(name, expected, raw)  # before int(), which refuses 5000 digits
        value = -int(digits) if raw.strip().startswith("-") else int(digits)
    else:
        raise SettingsError(name, expected, raw)
    if not low <= value <= high:
        raise SettingsError(name, expected, raw)
    return value


def positive_int(name: str, raw: object) -> int:
    return integer(name, raw, 1, MAX_INT, "a positive integer")


def port(name: str, raw: object) -> int:
    try:
        value = positive_int(name, raw)
    except SettingsError:
        value = 0
    if not 1 <= value <= 65535:
        raise SettingsError(name, "a TCP port (1-65535)", raw)
    return value


def listen_port(name: str, raw: object) -> int:
    """A port to listen on; 0 lets the system pick a free one (the log says which)."""
    if integer(name, raw, 0, 65535, "a TCP port (1-65535), or 0 for any free one") == 0:
        return 0
    return port(name, raw)


def number(name: str, raw: object, expected: str = "a number") -> float:
    """A finite number: a TOML integer or float, or an ASCII decimal string."""
    if isinstance(raw, bool):
        raise SettingsError(name, expected, raw)
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:  # an integer beyond any float
            raise SettingsError(name, expected, raw) from None
    elif isinstance(raw, str) and _NUMBER.match(raw.strip()):
        value = float(raw.strip())
    else:
        raise SettingsError(name, expected, raw)
    if not math.isfinite(value):
        raise SettingsError(name, expected, raw)
    return value


def positive_float(name: str, raw: object) -> float:
    value = number(name, raw, "a positive number")
    if not value > 0:
        raise SettingsError(name, "a positive number", raw)
    return value


def duration(name: str, raw: object) -> float:
    """A duration in seconds: see the grammar at the top of this module."""
    if isinstance(raw, bool):
        raise SettingsError(name, DURATION, raw)
    if isinstance(raw, int | float):
        seconds = number(name, raw, DURATION)
    elif isinstance(raw, str) and (found := _DURATION.match(raw.strip())):
        amount, unit = found.groups()
        seconds = float(amount) * _UNITS[unit or "s"]
    else:
        raise SettingsError(name, DURATION, raw)
    if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:  # also false for nan
        raise SettingsError(name, DURATION, raw)
    return seconds


def duration_ms(name: str, raw: object) -> int:
    """A duration in whole milliseconds (at least 1)."""
    return max(1, round(duration(name, raw) * 1000))


def share(name: str, raw: object) -> float:
    """A fraction in (0, 1]."""
    value = positive_float(name, raw) if raw not in (0, "0") else 0.0
    if not 0 < value <= 1:
        raise SettingsError(name, "a share in (0, 1], such as 0.5", raw)
    return value


def boolean(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(name, "true or false", raw)


def string_list(name: str, raw: object) -> tuple[str, ...]:
    """A list: comma-separated in the environment, an array of strings in TOML."""
    if isinstance(raw, str):
        return tuple(item.strip() for item in text(name, raw).split(",") if item.strip())
    if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        return tuple(text(name, item) for item in raw if item)
    raise SettingsError(name, "a comma-separated list of strings", raw)


def check_keys(where: str, table: dict[str, Any], allowed: Sequence[str]) -> None:
    """Refuse keys outside `allowed` (a misspelt key would be ignored in silence), naming the
    key on one line whatever it holds."""
    for key in table:
        if key not in allowed:
            raise SettingsError(
                f"{where}: {shown(key)}", f"one of the keys {', '.join(allowed)}", key
            )


def choice(options: Sequence[str]) -> Callable[[str, object], str]:
    def parse(name: str, raw: object) -> str:
        value = text(name, raw)
        if value not in options:
            shown = ", ".join(o or repr(o) for o in options)
            raise SettingsError(name, f"one of {shown}", raw)
        return value

    return parse


def optional_path(name: str, raw: object) -> str:
    """A file path, or empty. Existence is checked when the file is used, not here; a path
    with a control character or a line break is refused, so every message naming the file
    stays on one line."""
    value = text(name, raw).strip()
    if any(unicodedata.category(c) in {"Cc", "Zl", "Zp"} for c in value):
        raise SettingsError(name, "a file path without control characters", raw)
    return value


def host_ports(name: str, raw: object) -> str:
    value = text(name, raw).strip()
    hosts = [h.strip() for h in value.split(",")]
    if not value or not all(_HOST_PORT.match(h) and _port_of(h) for h in hosts):
        raise SettingsError(name, "host:port[,host:port...]", raw)
    return ",".join(hosts)


def _port_of(host_port: str) -> bool:
    return 1 <= int(host_port.rpartition(":")[2]) <= 65535


def _split(name: str, value: str, expected: str) -> Any:
    """`urlsplit`, whose ValueError (`http://[`) becomes a SettingsError."""
    try:
        return urlsplit(value)
    except ValueError:
        raise SettingsError(name, expected, value) from None


def http_url(name: str, raw: object) -> str:
    """An http(s) URL with a host, or empty to mean the service's default endpoint."""
    value = text(name, raw).strip()
    if not value:
        return value
    expected = "an http:// or https:// URL"
    parts = _split(name, value, expected)
    try:
        parts.port  # noqa: B018  # raises on a port that is not one
    except ValueError:
        raise SettingsError(name, expected, raw) from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(name, expected, raw)
    return value


def postgres_dsn(name: str, raw: object) -> str:
    value = nonempty(name, raw)
    try:
        parts = urlsplit(value)
    except ValueError:
        expected = "a postgresql://user@host:port/dbname URL"
        raise SettingsError(name, expected, mask_url_password(value)) from None
    if parts.scheme not in {"postgres", "postgresql"} or not (parts.netloc or parts.query):
        raise SettingsError(
            name, "a postgresql://user@host:port/dbname URL", mask_url_password(value)
        )
    sslmode = parse_qs(parts.query).get("sslmode", ["prefer"])[-1]
    if sslmode not in _PG_SSLMODES:
        raise SettingsError(name, f"sslmode in {', '.join(sorted(_PG_SSLMODES))}", sslmode)
    return value


def dlq_url(name: str, raw: object) -> str:
    value = nonempty(name, raw)
    parts = _split(name, value, "s3://bucket/prefix or file:///absolute/path")
    if parts.scheme == "s3" and _IDENTIFIER.match(parts.netloc):
        return value.rstrip("/")
    if parts.scheme == "file" and parts.path.startswith("/"):
        return value
    raise SettingsError(name, "s3://bucket/prefix or file:///absolute/path", raw)


def mask_url_password(url: str) -> str:
    """`postgresql://u:secret@h/db` -> `postgresql://u:***@h/db`; other URLs unchanged. One
    that cannot be split (`postgresql://u:secret@[`) is masked by pattern."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO_PASSWORD.sub(r"\1***@", url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()
