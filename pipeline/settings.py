"""One typed settings object, from defaults, an optional TOML file and `TAILPIPE_*` variables.

Precedence: environment over file over defaults. Every field names its environment variable
(`TAILPIPE_` + the field name in upper case); the TOML file uses the field names themselves.
The defaults point at the local stack (`make stack-up`), so no configuration is needed there.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import SettingsError
from pipeline.logconfig import FORMATS, LEVELS
from pipeline.parse import (
    boolean,
    choice,
    dlq_url,
    duration,
    host_ports,
    http_url,
    identifier,
    listen_port,
    mask_url_password,
    nonempty,
    optional_path,
    port,
    positive_int,
    postgres_dsn,
    share,
    shown,
    string_list,
    text,
)

ENV_PREFIX = "TAILPIPE_"
Parser = Callable[[str, object], Any]


def _local_stack(environ: Mapping[str, str]) -> dict[str, str]:
    """Defaults that follow the local stack's ports, which `TAILPIPE_LOCAL_*` can move
    (deploy/local/stack.py reads the same variables)."""

    def local(name: str, default: int) -> int:
        variable = f"TAILPIPE_LOCAL_{name}_PORT"
        try:
            return port(variable, environ.get(variable, default))
        except SettingsError:  # not a port: the stack's own default
            return default

    return {
        "kafka_bootstrap": f"127.0.0.1:{local('KAFKA', 19092)}",
        "postgres_dsn": f"postgresql://tailpipe@127.0.0.1:{local('POSTGRES', 15432)}/tailpipe",
        "s3_endpoint": f"http://127.0.0.1:{local('S3', 19000)}",
    }


def _setting(default: Any, parse: Parser, *, secret: bool = False, doc: str = "") -> Any:
    return field(default=default, metadata={"parse": parse, "secret": secret, "doc": doc})


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a tailpipe process can be told. Validated when it is built."""

    kafka_bootstrap: str = _setting(
        "127.0.0.1:19092",
        host_ports,
        doc="Kafka bootstrap servers, host:port[,host:port...]",
    )
    topic: str = _setting("tail-events", identifier, doc="topic the producers publish to")
    group: str = _setting("tailpipe", identifier, doc="consumer group of the replicas")
    alerts_topic: str = _setting("tail-alerts", identifier, doc="topic for critical alerts")
    kafka_security_protocol: str = _setting("PLAINTEXT", choice(KAFKA_PROTOCOLS))
    kafka_sasl_mechanism: str = _setting("", choice(SASL_MECHANISMS))
    kafka_sasl_username: str = _setting("", text)
    kafka_sasl_password: str = _setting("", text, secret=True)
    kafka_ssl_cafile: str = _setting("", optional_path, doc="CA bundle for Kafka TLS")
    kafka_ssl_certfile: str = _setting("", optional_path, doc="client certificate (mTLS)")
    kafka_ssl_keyfile: str = _setting("", optional_path, doc="client key (mTLS)")
    postgres_dsn: str = _setting(
        "postgresql://tailpipe@127.0.0.1:15432/tailpipe",
        postgres_dsn,
        secret=True,
        doc="libpq-style URL; TLS through sslmode, sslrootcert, sslcert, sslkey parameters",
    )
    postgres_schema: str = _setting("public", identifier, doc="schema holding the tables")
    s3_endpoint: str = _setting(
        "http://127.0.0.1:19000",
        http_url,
        doc="S3-compatible endpoint; empty for AWS itself",
    )
    s3_region: str = _setting("us-east-1", nonempty)
    s3_access_key_id: str = _setting("tailpipe", text)
    s3_secret_access_key: str = _setting("tailpipe-local", text, secret=True)
    dlq_url: str = _setting(
        "s3://tailpipe-dlq/dead-letters", dlq_url, doc="s3://bucket/prefix or file:///path"
    )
    metrics_port: int = _setting(
        9464, listen_port, doc="each replica's /metrics, /healthz, /readyz (0: any free port)"
    )
    api_port: int = _setting(8080, port, doc="HTTP API")
    api_read_tokens: tuple[str, ...] = _setting(
        (), string_list, secret=True, doc="bearer tokens of the API that may read (comma-separated)"
    )
    api_write_tokens: tuple[str, ...] = _setting(
        (), string_list, secret=True, doc="bearer tokens that may also change error status"
    )
    api_pool_size: int = _setting(8, positive_int, doc="PostgreSQL connections of the API")
    collect_port: int = _setting(8081, port, doc="HTTP collector for Tail Workers and Logpush")
    collect_tokens: tuple[str, ...] = _setting(
        (), string_list, secret=True, doc="secrets the collector accepts (comma-separated)"
    )
    collect_secret_header: str = _setting(
        "x-tailpipe-token", nonempty, doc="header carrying a secret, besides Bearer auth"
    )
    collect_max_body_bytes: int = _setting(
        8 << 20, positive_int, doc="largest request body, after decompression"
    )
    batch_max_rows: int = _setting(20_000, positive_int, doc="flush after this many rows")
    batch_max_bytes: int = _setting(16 << 20, positive_int, doc="flush after this many bytes")
    batch_max_age: float = _setting(1.0, duration, doc="flush after this many seconds")
    dedup: bool = _setting(
        True,
        boolean,
        doc="store a sender's retried item once (off: for producers that never retry)",
    )
    dedup_window: float = _setting(
        86_400.0,
        duration,
        doc="how long after its event time an item's retry is still caught (at least 1h)",
    )
    stream_timeout: float = _setting(
        21_600.0,
        duration,
        doc="a streamed invocation with no event for this long is closed as `unknown`",
    )
    shutdown_grace: float = _setting(
        30.0, duration, doc="seconds a replica may take to flush and stop on SIGTERM"
    )
    dead_letter_guard_window: int = _setting(
        1000, positive_int, doc="recent messages the dead-letter guard rail looks at"
    )
    dead_letter_guard_share: float = _setting(
        0.5, share, doc="stop consuming when more than this share of them would be dead letters"
    )
    alert_rules: str = _setting(
        "",
        optional_path,
        doc="TOML alert rules replacing the built-in ones (see alerts/rules.toml)",
    )
    alert_publish_interval: float = _setting(
        1.0, duration, doc="seconds between outbox sweeps (a flush that alerts wakes it)"
    )
    alert_evaluate_interval: float = _setting(
        15.0, duration, doc="seconds between evaluations of the rules' [[condition]] tables"
    )
    alert_forward_attempts: int = _setting(
        5, positive_int, doc="deliveries tried per alert and destination before giving up"
    )
    alert_destinations: str = _setting(
        "", optional_path, doc="TOML file of Slack, Discord and webhook destinations"
    )
    connect_timeout: float = _setting(5.0, duration, doc="seconds to reach a dependency")
    log_format: str = _setting(
        "auto", choice(FORMATS), doc="json, text, or auto: text on a terminal, JSON otherwise"
    )
    log_level: str = _setting("info", choice(LEVELS), doc="debug, info, warning or error")

    def __post_init__(self) -> None:
        if self.stream_timeout < 1:
            raise SettingsError(
                "TAILPIPE_STREAM_TIMEOUT", "a duration of at least 1s", self.stream_timeout
            )
        if self.dedup_window < 3600:
            raise SettingsError(
                "TAILPIPE_DEDUP_WINDOW", "a duration of at least 1h", self.dedup_window
            )
        secured = self.kafka_security_protocol.startswith("SASL_")
        if secured and not self.kafka_sasl_mechanism:
            raise SettingsError(
                "TAILPIPE_KAFKA_SASL_MECHANISM",
                f"one of {', '.join(SASL_MECHANISMS[1:])} with {self.kafka_security_protocol}",
                "",
            )
        if secured and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise SettingsError(
                "TAILPIPE_KAFKA_SASL_USERNAME",
                "a username and TAILPIPE_KAFKA_SASL_PASSWORD with SASL",
                self.kafka_sasl_username,
            )

    @property
    def dlq_bucket(self) -> str:
        """The bucket of an `s3://` dead-letter URL ('' for `file://`)."""
        parts = urlsplit(self.dlq_url)
        return parts.netloc if parts.scheme == "s3" else ""


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}


def load(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings: defaults, then the TOML file, then `TAILPIPE_*` variables."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = _local_stack(environ)
    path = config_file or environ.get("TAILPIPE_CONFIG") or None
    if path:
        for key, raw in _read_toml(Path(path)).items():
            if key not in FIELDS:
                where = f"{shown(str(path))}: {shown(key)}"
                raise SettingsError(where, "a known setting name", key)
            values[key] = _parse(key, raw)
    for name in FIELDS:
        raw_env = environ.get(env_name(name))
        if raw_env is not None:
            values[name] = _parse(name, raw_env)
    return Settings(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise SettingsError("--config", "a readable TOML file", f"{path} ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("--config", "valid TOML", f"{path}: {exc}") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # not UTF-8; a NUL in the path
        raise SettingsError("--config", "a readable TOML file", f"{path} ({exc})") from None


def _parse(name: str, raw: object) -> Any:
    parse: Parser = FIELDS[name].metadata["parse"]
    return parse(env_name(name), raw)


def is_secret(name: str) -> bool:
    return bool(FIELDS[name].metadata["secret"])


def shown_value(settings: Settings, name: str, *, mask: bool) -> Any:
    """A setting's value for display: secrets masked unless asked for in the clear."""
    value = getattr(settings, name)
    if not mask or not value:
        return value
    if name == "postgres_dsn":
        return mask_url_password(value)
    if not is_secret(name):
        return value
    return tuple("***" for _ in value) if isinstance(value, tuple) else "***"


def render_toml(settings: Settings, *, mask: bool = True) -> str:
    """The effective settings as a TOML file that `--config` reads back."""
    lines = []
    for name, spec in FIELDS.items():
        doc = spec.metadata["doc"]
        lines.append(f"# {env_name(name)}" + (f": {doc}" if doc else ""))
        lines.append(f"{name} = {_toml_value(shown_value(settings, name, mask=mask))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + "".join(_toml_char(c) for c in str(value)) + '"'


def _toml_char(c: str) -> str:
    """A character inside a TOML basic string: quote, backslash and control characters
    escaped (a raw line break or tab there is not TOML)."""
    if c in '"\\':
        return "\\" + c
    if c < " " or c == "\x7f":
        return f"\\u{ord(c):04x}"
    return c


def field_for_env(name: str) -> str:
    """`TAILPIPE_TOPIC` -> `topic`, or a SettingsError for a name that is not a setting."""
    key = name.removeprefix(ENV_PREFIX).lower() if name.startswith(ENV_PREFIX) else ""
    if key not in FIELDS:
        raise SettingsError("--get", "a TAILPIPE_* setting name", name)
    return key
