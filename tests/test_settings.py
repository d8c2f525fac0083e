"""Settings: precedence, validation messages, masking. Pure; no services needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import SettingsError
from pipeline.settings import Settings, load, render_toml
from tests.conftest import tailpipe


def test_defaults_point_at_the_local_stack() -> None:
    settings = load(environ={})
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.postgres_dsn == "postgresql://tailpipe@127.0.0.1:15432/tailpipe"
    assert settings.s3_endpoint == "http://127.0.0.1:19000"
    assert settings.dlq_bucket == "tailpipe-dlq"


def test_defaults_follow_moved_local_ports() -> None:
    settings = load(
        environ={"TAILPIPE_LOCAL_KAFKA_PORT": "29092", "TAILPIPE_LOCAL_S3_PORT": "29000"}
    )
    assert settings.kafka_bootstrap == "127.0.0.1:29092"
    assert settings.s3_endpoint == "http://127.0.0.1:29000"
    assert settings.postgres_dsn == "postgresql://tailpipe@127.0.0.1:15432/tailpipe"


def test_environment_wins_over_file(tmp_path: Path) -> None:
    config = tmp_path / "tailpipe.toml"
    config.write_text('topic = "from-file"\ngroup = "file-group"\nbatch_max_rows = 7\n')
    settings = load(config, environ={"TAILPIPE_TOPIC": "from-env"})
    assert settings.topic == "from-env"
    assert settings.group == "file-group"
    assert settings.batch_max_rows == 7


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("metrics_port = 9999\n")
    assert load(environ={"TAILPIPE_CONFIG": str(config)}).metrics_port == 9999


def test_durations_in_seconds_take_units() -> None:
    settings = load(environ={"TAILPIPE_BATCH_MAX_AGE": "500ms", "TAILPIPE_SHUTDOWN_GRACE": "2m"})
    assert (settings.batch_max_age, settings.shutdown_grace) == (0.5, 120.0)


def test_rendered_toml_reads_back_to_the_same_settings(tmp_path: Path) -> None:
    original = load(environ={"TAILPIPE_BATCH_MAX_AGE": "2.5", "TAILPIPE_LOG_FORMAT": "text"})
    config = tmp_path / "round.toml"
    config.write_text(render_toml(original, mask=False))
    assert load(config, environ={}) == original


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TAILPIPE_BATCH_MAX_ROWS": "abc"},
            "TAILPIPE_BATCH_MAX_ROWS: expected a positive integer, got 'abc'",
        ),
        (
            {"TAILPIPE_BATCH_MAX_ROWS": "0"},
            "TAILPIPE_BATCH_MAX_ROWS: expected a positive integer, got '0'",
        ),
        (  # issue 17: `'²'.isdigit()` is true, and int() then raised ValueError
            {"TAILPIPE_BATCH_MAX_ROWS": "\u00b2"},
            "TAILPIPE_BATCH_MAX_ROWS: expected a positive integer, got '\u00b2'",
        ),
        (
            {"TAILPIPE_BATCH_MAX_AGE": "nan"},
            "TAILPIPE_BATCH_MAX_AGE: expected a duration like 500ms, 30s, 15m, 1h or 7d "
            "(1ms to 36500d), got 'nan'",
        ),
        (
            {"TAILPIPE_METRICS_PORT": "70000"},
            "TAILPIPE_METRICS_PORT: expected a TCP port (1-65535), or 0 for any free one, "
            "got '70000'",
        ),
        (
            {"TAILPIPE_KAFKA_BOOTSTRAP": "localhost"},
            "TAILPIPE_KAFKA_BOOTSTRAP: expected host:port[,host:port...], got 'localhost'",
        ),
        (
            {"TAILPIPE_DLQ_URL": "ftp://x/y"},
            "TAILPIPE_DLQ_URL: expected s3://bucket/prefix or file:///absolute/path, got 'ftp://x/y'",
        ),
        (
            {"TAILPIPE_TOPIC": "bad topic"},
            "TAILPIPE_TOPIC: expected 1-249 characters of letters, digits, '.', '_' or '-', "
            "got 'bad topic'",
        ),
        (
            {"TAILPIPE_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "TAILPIPE_KAFKA_SECURITY_PROTOCOL: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, "
            "SASL_SSL, got 'TLS'",
        ),
        (
            {"TAILPIPE_POSTGRES_DSN": "postgresql://u@h/db?sslmode=sometimes"},
            "TAILPIPE_POSTGRES_DSN: expected sslmode in allow, disable, prefer, require, "
            "verify-ca, verify-full, got 'sometimes'",
        ),
        (
            {"TAILPIPE_STREAM_TIMEOUT": "500ms"},
            "TAILPIPE_STREAM_TIMEOUT: expected a duration of at least 1s, got 0.5",
        ),
        (
            {"TAILPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "TAILPIPE_KAFKA_SASL_MECHANISM: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 "
            "with SASL_SSL, got ''",
        ),
    ],
)
def test_bad_value_names_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(environ=env)
    assert str(caught.value) == message


def test_bad_setting_exits_2_with_one_line() -> None:
    result = tailpipe("config", env={"TAILPIPE_BATCH_MAX_ROWS": "abc"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        result.stderr
        == "tailpipe: TAILPIPE_BATCH_MAX_ROWS: expected a positive integer, got 'abc'\n"
    )


def test_unknown_key_in_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("batch_max_rowz = 5\n")
    result = tailpipe("check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"tailpipe: {config}: batch_max_rowz: expected a known setting name, got 'batch_max_rowz'"
    )


def test_sasl_and_tls_are_expressible() -> None:
    settings = load(
        environ={
            "TAILPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TAILPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TAILPIPE_KAFKA_SASL_USERNAME": "svc",
            "TAILPIPE_KAFKA_SASL_PASSWORD": "pw",
            "TAILPIPE_KAFKA_SSL_CAFILE": "/etc/ssl/certs/ca-certificates.crt",
            "TAILPIPE_POSTGRES_DSN": "postgresql://u:p@db:5432/x?sslmode=verify-full",
        }
    )
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.postgres_dsn.endswith("sslmode=verify-full")


def test_config_masks_secrets_and_get_prints_them() -> None:
    env = {
        "TAILPIPE_POSTGRES_DSN": "postgresql://app:hunter2@db.internal:5432/logs",
        "TAILPIPE_S3_SECRET_ACCESS_KEY": "s3cr3t-value",
    }
    shown = tailpipe("config", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout
    assert "s3cr3t-value" not in shown.stdout
    assert 'postgres_dsn = "postgresql://app:***@db.internal:5432/logs"' in shown.stdout
    assert 's3_secret_access_key = "***"' in shown.stdout
    one = tailpipe("config", "--get", "TAILPIPE_POSTGRES_DSN", env=env)
    assert one.stdout == "postgresql://app:hunter2@db.internal:5432/logs\n"
    unknown = tailpipe("config", "--get", "TAILPIPE_NOPE")
    assert unknown.returncode == 2
    assert "TAILPIPE_NOPE" in unknown.stderr


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.topic = "x"  # type: ignore[misc]


def test_a_huge_bad_value_is_named_in_one_short_line() -> None:
    """The error quoted the whole value: 5,000 digits made a 5,000-character line."""
    done = tailpipe("config", env={"TAILPIPE_BATCH_MAX_ROWS": "9" * 5000})
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("tailpipe: TAILPIPE_BATCH_MAX_ROWS: expected ")
    assert line.endswith("... (5002 characters)")
    assert len(line) < 250
