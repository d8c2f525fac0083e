"""Parsers for setting values: `(name, raw) -> value`, or a `SettingsError` naming the setting.

A raw value is a string from the environment or whatever type the TOML file holds; every
parser accepts both, so a file and a variable mean the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

from pipeline.errors import SettingsError

_IDENTIFIER = re.compile(r"[A-Za-z0-9._-]{1,249}\Z")
_HOST_PORT = re.compile(r"\[?[A-Za-z0-9.:-]+\]?:\d{1,5}\Z")
_PG_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def text(name: str, raw: object) -> str:
    if isinstance(raw, str):
        return raw
    raise SettingsError(name, "a string", raw)


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


def positive_int(name: str, raw: object) -> int:
    if isinstance(raw, bool):
        raise SettingsError(name, "a positive integer", raw)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        value = int(raw.strip())
    else:
        raise SettingsError(name, "a positive integer", raw)
    if value <= 0:
        raise SettingsError(name, "a positive integer", raw)
    return value


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
    if raw in (0, "0"):
        return 0
    return port(name, raw)


def positive_float(name: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise SettingsError(name, "a positive number", raw)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, "a positive number", raw) from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(name, "a positive number", raw)
    return value


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
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        return tuple(item for item in raw if item)
    raise SettingsError(name, "a comma-separated list of strings", raw)


def choice(options: Sequence[str]) -> Callable[[str, object], str]:
    def parse(name: str, raw: object) -> str:
        value = text(name, raw)
        if value not in options:
            shown = ", ".join(o or repr(o) for o in options)
            raise SettingsError(name, f"one of {shown}", raw)
        return value

    return parse


def optional_path(name: str, raw: object) -> str:
    """A file path, or empty. Existence is checked when the file is used, not here."""
    return text(name, raw).strip()


def host_ports(name: str, raw: object) -> str:
    value = text(name, raw).strip()
    hosts = [h.strip() for h in value.split(",")]
    if not value or not all(_HOST_PORT.match(h) for h in hosts):
        raise SettingsError(name, "host:port[,host:port...]", raw)
    return ",".join(hosts)


def http_url(name: str, raw: object) -> str:
    """An http(s) URL, or empty to mean the service's default endpoint."""
    value = text(name, raw).strip()
    if value and (urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).netloc):
        raise SettingsError(name, "an http:// or https:// URL", raw)
    return value


def postgres_dsn(name: str, raw: object) -> str:
    value = nonempty(name, raw)
    parts = urlsplit(value)
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
    parts = urlsplit(value)
    if parts.scheme == "s3" and _IDENTIFIER.match(parts.netloc):
        return value.rstrip("/")
    if parts.scheme == "file" and parts.path.startswith("/"):
        return value
    raise SettingsError(name, "s3://bucket/prefix or file:///absolute/path", raw)


def mask_url_password(url: str) -> str:
    """`postgresql://u:secret@h/db` -> `postgresql://u:***@h/db`; other URLs unchanged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()
