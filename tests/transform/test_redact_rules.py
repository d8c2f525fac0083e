"""The redaction rules file: every rule catches its documented shape wherever the secret turns
up; a benign corpus (ids, hashes, model and repository names, plain URLs) comes out untouched;
the file is checked on load; the trigger scan selects exactly the rules it should; no rule
goes quadratic on a hostile line."""

from __future__ import annotations

import copy
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.deadletters.record import record
from pipeline.errors import SettingsError
from pipeline.transform.batch import DeadLetter
from pipeline.transform.extract import Extractor
from pipeline.transform.inspect import dumps, inspect
from pipeline.transform.redact import triggers
from pipeline.transform.redact.engine import (
    _json_text,
    has_trigger,
    redact_headers,
    redact_json,
    redact_json_text,
    redact_text,
)
from pipeline.transform.redact.rules import NAMES, RULES, Rule, parse_rules
from pipeline.transform.transformer import Transformer

ROOT = Path(__file__).resolve().parents[2]
TS = 1_764_374_400_000

EXAMPLES = [
    pytest.param(rule, text, secret, id=f"{rule.name}-{n}")
    for rule in RULES
    for n, (text, secret) in enumerate(rule.examples)
]
# Examples that are a secret on their own: placed in every kind of text below.
TOKENS = [
    pytest.param(rule.name, text, id=f"{rule.name}-{n}")
    for rule in RULES
    for n, (text, secret) in enumerate(rule.examples)
    if text == secret
]


def test_the_rule_set() -> None:
    assert len(RULES) >= 50
    assert (*(rule.name for rule in RULES), "header", "field") == NAMES
    assert len(set(NAMES)) == len(NAMES)
    assert sum(len(rule.kinds) for rule in RULES) >= 100
    for rule in RULES:
        assert re.fullmatch(r"[a-z_]+", rule.name)  # what the marker pattern accepts
        assert rule.triggers
        assert all(t == t.lower() for t in rule.triggers)
        assert rule.groups
        assert rule.source.startswith("https://")
        assert rule.examples


@pytest.mark.parametrize(("rule", "text", "secret"), EXAMPLES)
def test_every_example_is_redacted_by_its_rule(rule: Rule, text: str, secret: str) -> None:
    assert secret not in rule(text)
    counts: Counter[str] = Counter()
    out = redact_text(text, counts)
    assert secret not in out
    assert counts[rule.name] >= 1, counts  # counted under its own rule, not a broader one
    again: Counter[str] = Counter()
    assert redact_text(out, again) == out
    assert not again
    # The trigger invariant the transform's fast path relies on.
    assert any(trigger in text.lower() for trigger in rule.triggers)
    assert has_trigger(orjson.dumps({"v": text}).decode().lower())


def _trace(token: str) -> dict[str, Any]:
    """A trace item with `token` in its URL (path and query), a request header, log text,
    a logged object, an exception message and a stack frame."""
    return {
        "scriptName": "api",
        "outcome": "exception",
        "eventTimestamp": TS,
        "event": {
            "request": {
                "url": f"https://api.example.com/v1/{token}/items?q={token}&page=2",
                "method": "POST",
                "headers": {"x-debug-note": f"sent {token}", "accept": "*/*"},
            },
            "response": {"status": 502},
        },
        "logs": [
            {"timestamp": TS, "level": "error", "message": [f"calling upstream with {token}"]},
            {
                "timestamp": TS,
                "level": "log",
                "message": ["payload", {"note": f"value {token} end", "list": [{"v": token}]}],
            },
            {"timestamp": TS, "level": "info", "message": [f'{{"config": "{token}"}}']},
        ],
        "exceptions": [
            {
                "timestamp": TS,
                "name": "Error",
                "message": f"upstream rejected {token} (attempt 2)",
                "stack": f"Error: upstream rejected {token}\n"
                f"    at call (https://cdn.example.com/{token}/worker.js:10:5)",
            }
        ],
        "wallTime": 5,
        "cpuTime": 1,
    }


@pytest.mark.parametrize(("name", "token"), TOKENS)
def test_token_in_every_place(name: str, token: str) -> None:
    """What `tailpipe inspect` prints (rows, rollups, summary) holds the secret nowhere."""
    transformer = Transformer(Extractor.from_files())
    lines = list(inspect(transformer, [orjson.dumps(_trace(token))], TS))
    out = b"".join(dumps(line) for line in lines)
    assert token.encode() not in out
    assert name in lines[-1]["redactions"], lines[-1]
    assert set(lines[-1]["redactions"]) <= set(NAMES)

    # The logger's paths: free text, a URL, headers, a JSON document.
    counts: Counter[str] = Counter()
    assert token not in redact_text(f"GET https://h.example/x?page=2&q={token}", counts)
    headers = redact_headers({"x-debug-note": f"sent {token}", "accept": "*/*"}, counts)
    assert token not in headers["x-debug-note"]
    assert headers["accept"] == "*/*"
    doc = {"a": [{"b": {"c": f"value {token} end"}}, 3, None], token: 1}
    assert token not in repr(redact_json(doc, counts))
    # A key that became `[REDACTED:jwt]` or `[REDACTED:bearer]` names a secret: its value goes.
    assert set(counts) - {"field"} == {name}

    # A dead letter (a message that is not JSON) keeps the secret nowhere either.
    letter = DeadLetter(0, TS, token.encode(), f"not json {token}".encode(), (), "DecodeError", "")
    stored = orjson.dumps(record("t", 0, letter, "2025-11-29T00:00:00Z", Counter()))
    assert token.encode() not in stored


@pytest.mark.parametrize(("name", "token"), TOKENS)
def test_token_glued_to_punctuation(name: str, token: str) -> None:
    for text in (
        f"({token})",
        f"'{token}'",
        f"[{token}],",
        f"key: {token};",
        f"<{token}>",
        f"{token}\n",
        f"\t{token}",
        f"`{token}`",
    ):
        assert token not in redact_text(text), text


# --- the ten kinds issue 17 found stored in clear ------------------------------------------

ISSUE_17 = [
    ("slack", "xoxb-17653672481-19874698323-EXAMPLEexample0123456789"),
    ("slack", "xoxp-1234567890-1234567890-1234567890-0123456789abcdef0123456789abcdef"),
    ("slack_webhook", "https://hooks.slack.com/services/T00000000/B00000000/EXAMPLEexample012"),
    (
        "discord_webhook",
        "https://discord.com/api/webhooks/1234567890123456789/EXAMPLE0123456789abcdefABCDEF_-x",
    ),
    ("stripe", "sk_live_51EXAMPLE0123456789abcdefABCDEFxyzXYZ"),
    ("stripe", "rk_live_51EXAMPLE0123456789abcdefABCDEFxyzXYZ"),
    ("sendgrid", "SG.EXAMPLE0123456789abcd.EXAMPLE0123456789abcdefABCDEFxyzXYZ_EXAMPLE"),
    ("npm", "npm_EXAMPLE0123456789abcdefABCDEFxyzXYZE"),
    ("twilio", "SK0123456789abcdef0123456789abcdef"),
    ("shopify", "shpat_0123456789abcdef0123456789abcdef"),
    ("telegram", "1234567890:AAEXAMPLE0123456789abcdefABCDEFxyz"),
    ("telegram", "https://api.telegram.org/bot1234567890:AAEXAMPLE0123456789abcdefABCDEFxyz/getMe"),
]


@pytest.mark.parametrize(("name", "secret"), ISSUE_17)
def test_the_kinds_issue_17_found_in_clear(name: str, secret: str) -> None:
    # The part that must go: the whole token, or a URL's secret path.
    tail = secret.rsplit("/", 2)[-1] if "hooks" in secret else secret
    if "telegram.org" in secret:
        tail = secret.split("/bot", 1)[1].split("/", 1)[0]
    if "discord" in secret:
        tail = secret.rsplit("/", 1)[1]
    for text in (
        f"notify failed: {secret}",
        f"Error: POST {secret} returned 401",
        f'{{"destination": "{secret}", "ok": false}}',
        f"    at send ({secret}:1:1)",
    ):
        counts: Counter[str] = Counter()
        out = redact_text(text, counts)
        assert tail not in out, (text, out)
        assert counts[name] == 1, (text, counts)
    assert tail not in orjson.dumps(redact_json({"config": {"destination": secret}})).decode()


# --- context rules --------------------------------------------------------------------------

CONTEXT = [
    ("export GITHUB_TOKEN=opaque-EXAMPLE-1", "opaque-EXAMPLE-1", "kv"),
    ("OPENAI_API_KEY: 'opaque EXAMPLE 2'", "opaque EXAMPLE 2", "kv"),
    ("db password: opaque-EXAMPLE-3", "opaque-EXAMPLE-3", "kv"),
    ("AccountKey=c2VjcmV0LWtleS1FWEFNUExFLXZhbHVl==", "c2VjcmV0LWtleS1FWEFNUExFLXZhbHVl", None),
    ("Password=opaque-EXAMPLE-4;Server=db", "opaque-EXAMPLE-4", "kv"),
    ('body "{\\"client_secret\\":\\"opaque-EXAMPLE-5\\"}"', "opaque-EXAMPLE-5", "kv"),
    ('"{\\"password\\":\\"a\\\\\\"quoted\\\\\\" EXAMPLE\\"}"', "quoted", "kv"),
    ("psql --password opaque-EXAMPLE-6 --host db", "opaque-EXAMPLE-6", "flag"),
    ("<SessionToken>opaque-EXAMPLE-7</SessionToken>", "opaque-EXAMPLE-7", "xml"),
    ("Authorization: GenieKey opaque-EXAMPLE-8", "opaque-EXAMPLE-8", "scheme"),
    ("proxy said Basic dXNlcjpvcGFxdWUtRVhBTVBMRS05", "dXNlcjpvcGFxdWUtRVhBTVBMRS05", "basic"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "kv"),
    ("Authorization: Bearer opaque-EXAMPLE-10", "opaque-EXAMPLE-10", "bearer"),
]


@pytest.mark.parametrize(("line", "secret", "name"), CONTEXT)
def test_values_after_secret_names(line: str, secret: str, name: str | None) -> None:
    counts: Counter[str] = Counter()
    out = redact_text(line, counts)
    assert secret not in out
    if name is not None:
        assert counts[name] == 1, counts


KEPT = [
    "--verbose --dry-run --limit 100 --user alice --token-file /etc/token",
    "--no-password --password-stdin",
    "<TokenType>Bearer</TokenType><KeyName>primary</KeyName><user>bob</user>",
    "Basic authentication is disabled; use Basic auth over TLS only",
    "Authorization header missing",
    "token_type=bearer password_length=12 api_key_file=/etc/key token_expires_at=1700000000",
    "access_token=[REDACTED:query]&token_type=bearer expires_in=3600",
    "password=null token=None secret=undefined",
    "KeyError: 'u1'",  # the missing key is what a traceback is read for
    "jwt.exceptions.InvalidTokenError: 'Signature verification failed'",
]


@pytest.mark.parametrize("line", KEPT)
def test_names_that_hold_no_secret_keep_their_text(line: str) -> None:
    counts: Counter[str] = Counter()
    assert redact_text(line, counts) == line
    assert not counts


# --- the benign corpus ----------------------------------------------------------------------

BENIGN = [
    # Cloudflare ray ids, W3C trace context, request ids
    "cf-ray 8f3e5a7b9c1d2e4f-FRA",
    "ray=8f3e5a7b9c1d2e4f-FRA colo=FRA",
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7 sampled=1",
    "request_id=req_01HXYZ8F3E5A7B9C1D2E4F request-id: 7f9c2ba4-e88f-4b6e-9d1a-2c3d4e5f6a7b",
    "x-request-id: 8f3e5a7b-9c1d-2e4f-8f3e-5a7b9c1d2e4f; x-amz-request-id: 4442587FB7D0A2F9",
    "anthropic request-id req_011CSHoEeqs5C35K2UUqR7Fy, openai x-request-id req_abc123def456",
    # git SHAs, UUIDs, content hashes
    "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main)",
    "deployed 3f78685 to production",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "integrity sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "sha512-Q9QgXj0q8yDqZbb9w0sFyb2NTZp4rjVVTtf0T9Vtt2fL8lLN0m5d4QF9PWSMTAi1y0yD0A0fQmzK7k3Y0Cx7Jg==",
    'etag W/"5e15153d-120f" md5 9e107d9d372bb6826bd81d3542a419d6',
    # model names
    "model claude-sonnet-4-5-20250929 gpt-4o-mini @cf/meta/llama-3.1-8b-instruct gemini-2.5-pro",
    "llm usage model=claude-sonnet-4-5-20250929 input_tokens=1834 output_tokens=412",
    "models: sk-learn-compat, o4-mini, text-embedding-3-large, mistral-large-2411",
    # repositories, packages, plain URLs
    "scan completed repo=acme/api files=120 duration_ms=3400",
    "GET https://api.github.com/repos/acme/api/pulls?page=2&per_page=100 200 in 123ms",
    "https://github.com/acme/api/blob/0123456789abcdef0123456789abcdef01234567/README.md",
    "installed @cloudflare/workers-types@4.20250101.0 and hono@4.6.3",
    "npm_config_cache=/home/u/.npm npm_lifecycle_event=test npm_package_name=api",
    "docker image ghcr.io/acme/api:sha-3f78685 pulled",
    "repository acme/api, branch feature/sk-live-preview, tag v1.2.3",
    "see https://discord.com/developers/docs/intro and https://api.slack.com/messaging/webhooks",
    "https://hooks.slack.com/ is the webhook host",
    # public identifiers and public keys by design
    "stripe publishable key pk_live_51EXAMPLE0123456789abcdefABCDEF loaded",
    "pk_test_51EXAMPLE0123456789abcdefABCDEF",
    "twilio account AC0123456789abcdef0123456789abcdef sent SM0123456789abcdef0123456789abcdef",
    "POST https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages",
    "posted to slack channel C0123456789 thread 1712345678.123456 user U0123ABCD",
    "sentry dsn https://0123456789abcdef0123456789abcdef@o123456.ingest.sentry.io/4504",
    "mapbox public token pk.eyJ1IjoiZXhhbXBsZSIsImEiOiJleGFtcGxlIn0.EXAMPLE0123456789abcd",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUEXAMPLE\n-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDEXAMPLE\n-----END PUBLIC KEY-----",
    # Workers and Kafka identifiers
    "kafka tail-events[3] offset 1234567 lag 0",
    "kv namespace 0f2ac74b498b48028cb68387c421e279 bound as CACHE",
    "account 023e105f4ecef8ad9ca31a8372d0c353 zone 0123456789abcdef0123456789abcdef",
    "durable object 8ac3d9b1e2f04f5a9c7b6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4",
    "d1 database 6f1b5f76-2a0c-4a7e-9f00-4a7e9f004a7e",
    # prose and names that contain trigger words
    "Bearer tokens are described in RFC 6750; bearer authentication",
    "the author is alice; keyboard layout us; monkey business",
    "desk-top ask-me-anything task_test_1 risk-free sk-long-hyphenated-page-name",
    "timezone Asia/Tokyo, region ap-northeast-1 and us-east-1, locale en-US",
    "session_count=4 session_duration_ms=1200 tokens_in=5 max_tokens=4096",
    "x-ratelimit-remaining-tokens: 149000, x-ratelimit-limit-requests: 500",
    "TypeError: Cannot read properties of undefined (reading 'token')",
    "key-value store, hot-key detection, api-key-name header, cache key user:1234:profile",
    "sg.example.com msg.content msg.sg.x",
    "v1.0.3-beta released; api v1.0-preview",
    # stacks, numbers, addresses
    "Error: ECONNRESET at TLSSocket.onConnectEnd (node:_tls_wrap:1604:19)",
    "    at handleRequest (worker.js:123:45)\n    at async Object.fetch (index.js:10:3)",
    "order 1234567890 shipped, tracking 1Z999AA10123456784, phone +1 555 0100",
    "ipv6 fe80::aa:bb:cc connected; mac 00:1A:2B:3C:4D:5E; ts 1764374400:123",
    "GET /v1/items?page=2&sort=asc&per_page=100&cursor=eyJvZmZzZXQiOjEwMH0",
    "base64 aGVsbG8gd29ybGQ= decoded; email alice@example.com",
    "12 passed, 1 skipped in 3.2s; Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)",
    "{'level': 'info', 'msg': 'ok'} [1, 2, 3] (a, b)",
]


@pytest.mark.parametrize("line", BENIGN)
def test_benign_corpus_is_left_untouched(line: str) -> None:
    counts: Counter[str] = Counter()
    assert redact_text(line, counts) == line
    assert redact_json({"message": line, "items": [line]}, counts) == {
        "message": line,
        "items": [line],
    }
    assert not counts


def test_benign_corpus_through_inspect() -> None:
    item = {
        "scriptName": "api",
        "outcome": "ok",
        "eventTimestamp": TS,
        "logs": [{"timestamp": TS, "level": "log", "message": [line]} for line in BENIGN],
    }
    lines = list(inspect(Transformer(Extractor.from_files()), [orjson.dumps(item)], TS))
    messages = [x["row"]["message"] for x in lines if x.get("table") == "tail_logs"]
    assert messages == BENIGN
    assert lines[-1]["redactions"] == {}


# --- the file is checked on load ------------------------------------------------------------

VALID: dict[str, Any] = {
    "name": "acme",
    "title": "Acme tokens",
    "category": "devtools",
    "kinds": ["API token, acme_"],
    "shape": "acme_ + 20 base62",
    "source": "https://acme.example/docs/tokens",
    "triggers": ["acme_"],
    "pattern": r"(?<![A-Za-z0-9_])(?P<secret>acme_[A-Za-z0-9]{20,}+)",
    "examples": [
        "acme_EXAMPLE0123456789abcd",
        {"text": "x acme_EXAMPLE0123456789abcd", "secret": "acme_EXAMPLE0123456789abcd"},
    ],
}


def test_a_valid_document_parses() -> None:
    [rule] = parse_rules("acme.toml", {"rule": [VALID]})
    assert rule.name == "acme"
    assert rule("use acme_EXAMPLE0123456789abcd now") == "use [REDACTED:acme] now"
    named_table = {
        **VALID,
        "check": "secret_name",
        "triggers": [],
        "pattern": r"(?P<name>\w+)=(?P<secret>\S+)",
        "examples": [{"text": "token=x", "secret": "x"}],
    }
    [named] = parse_rules("x", {"rule": [named_table]})
    assert "token" in named.triggers  # rules that judge names get the name triggers


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"name": "Acme-Tokens"}, "name"),
        ({"name": "field"}, "name"),
        ({"title": ""}, "title"),
        ({"category": "misc"}, "category"),
        ({"kinds": []}, "kinds"),
        ({"source": "http://acme.example"}, "source"),
        ({"triggers": ["ACME_"]}, "triggers"),
        ({"triggers": ['acme"']}, "triggers"),
        ({"triggers": []}, "triggers"),
        ({"pattern": "(acme_"}, "pattern"),
        ({"pattern": "acme_[a-z]+"}, "pattern"),
        ({"check": "entropy"}, "check"),
        ({"check": "secret_name"}, "pattern"),
        ({"examples": []}, "examples"),
        ({"examples": ["no trigger here"]}, "examples"),
        ({"examples": [{"text": "acme_x", "secret": "other"}]}, "examples"),
        ({"entropy": 3.5}, "entropy"),
        ({"names": r"(\w+)="}, "names"),  # without a check on names
        (
            {"check": "secret_name", "names": r"\w+=", "pattern": r"(?P<name>\w+)=(?P<secret>\S+)"},
            "names",
        ),
        (
            {"check": "secret_name", "names": r"(\w+", "pattern": r"(?P<name>\w+)=(?P<secret>\S+)"},
            "names",
        ),
    ],
)
def test_a_malformed_rule_names_itself(change: dict[str, Any], key: str) -> None:
    table = {**VALID, **change}
    with pytest.raises(SettingsError) as caught:
        parse_rules("acme.toml", {"rule": [table]})
    assert caught.value.name.startswith("acme.toml: rule ")
    assert caught.value.name.endswith(f": {key}")
    if "name" not in change:
        assert "rule 'acme'" in str(caught.value)


def test_a_malformed_file() -> None:
    with pytest.raises(SettingsError, match=r"acme\.toml: rule 'acme': name"):
        parse_rules("acme.toml", {"rule": [VALID, VALID]})
    with pytest.raises(SettingsError, match=r"acme\.toml: rules"):
        parse_rules("acme.toml", {"rules": [VALID]})
    with pytest.raises(SettingsError, match=r"acme\.toml: rule"):
        parse_rules("acme.toml", {"rule": []})


# --- the trigger scan -----------------------------------------------------------------------

TRIGGERS = sorted({t for rule in RULES for t in rule.triggers})


def _brute(lowered: str) -> int:
    return sum(1 << i for i, rule in enumerate(RULES) if any(t in lowered for t in rule.triggers))


fragments = st.one_of(
    st.sampled_from(TRIGGERS),
    st.sampled_from(TRIGGERS).flatmap(lambda t: st.integers(0, len(t)).map(lambda i: t[i:])),
    st.sampled_from(TRIGGERS).flatmap(lambda t: st.integers(1, len(t)).map(lambda i: t[:i])),
    st.text(alphabet="abcdefgkpsxy_-.:/~$ 0123", max_size=4),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(fragments, max_size=8).map("".join))
def test_the_scan_selects_exactly_the_rules_whose_triggers_occur(text: str) -> None:
    expected = _brute(text)
    assert triggers.selected(text, 0) == expected
    assert has_trigger(text) is (expected != 0)


PIECES = sorted(
    {piece for rule in RULES for text, secret in rule.examples for piece in (text, secret[:12])}
    | set(TRIGGERS)
    | {" ", "=", ":", '"', "'", "\\", "/", "?", "&", "#", "@", "<", ">", "-", "_", ".", ",", ";"}
    | {"[REDACTED:kv]", "[REDACTED", "Bearer ", "Basic ", "--", "://", "null", "AA", "0123"}
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=12).map("".join))
def test_redaction_of_rule_pieces_is_idempotent(text: str) -> None:
    counts: Counter[str] = Counter()
    once = redact_text(text, counts)
    again: Counter[str] = Counter()
    assert redact_text(once, again) == once
    assert not again
    assert set(counts) <= set(NAMES)


# --- names: a rule's prefilter on the names its check judges ----------------------------------

NAMED = [rule for rule in RULES if rule.names is not None]
NAME_PIECES = sorted(
    set(PIECES) | {"input_tokens", "api_key", "Password", "x.y-z", "\\'", '\\"', "=>", " : ", "\t"}
)
name_texts = st.lists(st.sampled_from(NAME_PIECES) | st.text(max_size=3), max_size=14).map("".join)


def test_names_are_given_to_the_rules_that_need_them() -> None:
    assert [rule.name for rule in NAMED] == ["kv"]


def _without_names(rule: Rule, judged: list[str] | None = None) -> Rule:
    """`rule` with its pattern always run; with `judged`, noting every name its check sees."""
    accept = rule.accept
    assert accept is not None

    def noting(match: re.Match[str], secret: str) -> bool:
        if judged is not None:
            judged.append(match.group("name"))
        return accept(match, secret)

    return replace(rule, names=None, accept=noting)


@pytest.mark.parametrize("rule", NAMED, ids=[rule.name for rule in NAMED])
@settings(max_examples=3000, deadline=None)
@given(text=name_texts)
def test_names_finds_every_name_the_check_judges(rule: Rule, text: str) -> None:
    assert rule.names is not None
    judged: list[str] = []
    plain = _without_names(rule, judged)
    assert rule(text) == plain(text)
    assert set(judged) <= set(rule.names.findall(text))


@pytest.mark.parametrize("rule", NAMED, ids=[rule.name for rule in NAMED])
def test_names_change_no_redaction_of_the_corpora(rule: Rule) -> None:
    plain = _without_names(rule)
    texts = [*(text for r in RULES for text, _ in r.examples), *(line for line, *_ in CONTEXT)]
    for text in [*texts, *KEPT, *BENIGN]:
        with_names: Counter[str] = Counter()
        without: Counter[str] = Counter()
        assert rule(text, with_names) == plain(text, without), text
        assert with_names == without


def test_names_skip_lines_of_names_that_hold_no_secret() -> None:
    [kv] = (rule for rule in RULES if rule.name == "kv")
    line = "llm usage model=gpt-4o input_tokens=812 output_tokens=90 duration_ms=1200"
    assert kv.names is not None
    assert kv.names.findall(line)
    assert kv(line) == line
    assert kv(f"{line} api_key=k-EXAMPLE") == f"{line} api_key=[REDACTED:kv]"


def test_a_line_without_triggers_is_one_scan() -> None:
    """The fast path returns the very object: no rule ran, nothing was copied."""
    line = "scan finished for acme/infra: 3912 files in 61.0s; cache hit ratio 0.93"
    assert not has_trigger(line.lower())
    assert redact_text(line) is line
    # One regex holds every trigger of every rule.
    assert triggers.SEARCH_RE.groups == 0
    assert triggers.SCAN_RE.groups == len(TRIGGERS)


@pytest.mark.parametrize(("rule", "text", "secret"), EXAMPLES)
def test_fast_path_equals_full_walk_for_every_example(rule: Rule, text: str, secret: str) -> None:
    value = {"note": text, "nested": [{"v": text}], text[:40]: 1}
    counts: Counter[str] = Counter()
    full: Counter[str] = Counter()
    assert redact_json_text(value, counts) == _json_text(redact_json(copy.deepcopy(value), full))
    assert counts == full


# --- hostile input --------------------------------------------------------------------------

SIZE = 128 * 1024


def _hostile(rule: Rule) -> list[str]:
    """Long lines built from the rule's own triggers and examples: repeated, cut short,
    glued together; the shapes a regex goes quadratic on if it retries a long run from every
    position."""
    out: list[str] = []
    for trigger in rule.triggers[:8]:
        out.append(trigger * (SIZE // len(trigger)))
        out.append((trigger + "a1") * (SIZE // (len(trigger) + 2)))
    for text, secret in rule.examples[:3]:
        for piece in (text, text[:-1], secret[: len(secret) // 2], secret[:-1] + "-"):
            if piece:
                out.append(piece * (SIZE // len(piece)))
                out.append((piece + " ") * (SIZE // (len(piece) + 1)))
    return out


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_hostile_lines_stay_linear(rule: Rule) -> None:
    """Every line is 128 KB; a linear rule handles one in milliseconds, a quadratic one takes
    minutes. The bound is generous, so a slow machine does not fail it."""
    for line in _hostile(rule):
        started = time.perf_counter()
        once = rule(line)
        rule(once)
        elapsed = time.perf_counter() - started
        assert elapsed < 3.0, (rule.name, line[:60], elapsed)


def test_hostile_line_through_every_rule() -> None:
    line = "".join(TRIGGERS) * (SIZE // len("".join(TRIGGERS)))
    started = time.perf_counter()
    once = redact_text(line)
    assert redact_text(once) == once
    assert time.perf_counter() - started < 10.0


# --- documentation --------------------------------------------------------------------------


def test_docs_list_every_rule() -> None:
    """docs/events.md has a row per rule, in the file's order."""
    doc = (ROOT / "docs" / "events.md").read_text()
    section = doc.split("\n## Redaction\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE)
    assert listed == [rule.name for rule in RULES]
