"""One token check for the API and the collector (pipeline/web/tokens.py): SHA-256 digests compared
in constant time against every token, so neither which token matched, nor how long one is,
nor how many there are shows in what is compared.

The compare itself is watched by wrapping `hmac.compare_digest` (it still does the comparing);
what the processes answer is checked on the real apps in test_api and test_collect."""

from __future__ import annotations

import ast
import hmac
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from pipeline.api import auth
from pipeline.api.app import create_app
from pipeline.collector import auth as collector_token
from pipeline.settings import Settings
from pipeline.web import tokens
from tests.conftest import ROOT

# Lengths from 1 to 200 bytes, one not ASCII: a raw compare would see each length.
READ = ("r", "read-token-" + "x" * 40, "rëad-tökén")
WRITE = ("w" * 200,)
HTTP_READ = READ[:2]  # a header holds ASCII


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every pair hmac.compare_digest is given while the test runs."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def watching(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", watching)
    return seen


@pytest.mark.parametrize(
    "presented",
    ["r", READ[1], READ[2], WRITE[0], "", "x", READ[1][:-1], READ[1] + "x", "w" * 199, "ë" * 300],
)
def test_the_api_compares_digests_against_every_token(
    compared: list[tuple[bytes, bytes]], presented: str
) -> None:
    access = auth.Tokens(READ, WRITE).access(f"Bearer {presented}")
    expected = (
        auth.Access.WRITE if presented in WRITE else auth.Access.READ if presented in READ else None
    )
    assert access == expected
    assert len(compared) == len(READ) + len(WRITE), "every token, whatever matched"
    assert {(len(a), len(b)) for a, b in compared} == {(32, 32)}, "digests, never raw bytes"
    assert {a for a, _ in compared} == {tokens.digest(presented)}


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {READ[0]}"},
        {"x-tailpipe-token": READ[2]},
        {"authorization": "Bearer nope", "x-tailpipe-token": WRITE[0]},
        {"authorization": "Bearer " + READ[1][:-1]},
        {"x-tailpipe-token": "r" * 64},
        {},
    ],
)
def test_the_collector_compares_digests_against_every_token(
    compared: list[tuple[bytes, bytes]], headers: dict[str, str]
) -> None:
    known = READ + WRITE
    allowed = collector_token.Tokens(known, "x-tailpipe-token").allows(headers)
    candidates = [tokens.bearer(headers.get("authorization")), headers.get("x-tailpipe-token")]
    assert allowed == any(c in known for c in candidates)
    assert len(compared) == 2 * len(known), "both candidates, against every token"
    assert {(len(a), len(b)) for a, b in compared} == {(32, 32)}


def test_levels_take_the_highest_match_and_empty_tokens_grant_nothing() -> None:
    checked = tokens.Tokens([("same", 1), ("same", 2), ("", 3), ("other", 1)])
    assert len(checked) == 3
    assert checked.level("same") == 2
    assert checked.level("other") == 1
    assert checked.level("") == 0
    assert checked.level("\udcff") == 0  # a header's odd byte: hashed, never an exception
    with pytest.raises(ValueError, match="positive"):
        tokens.Tokens([("t", 0)])
    assert not tokens.Tokens([("", 1)])


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("  Bearer abc", "abc"),
        ("Basic abc", ""),
        ("Bearer", ""),
        ("abc", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_bearer(header: str | None, token: str) -> None:
    assert tokens.bearer(header) == token


def test_api_and_collector_hold_no_token_check_of_their_own() -> None:
    """Both go through pipeline/web/tokens.py: neither hashes nor compares anything itself."""
    for path in ("pipeline/api/auth.py", "pipeline/collector/auth.py"):
        tree = ast.parse((ROOT / path).read_text())
        imported = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            f"{node.module}.{alias.name}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) for alias in node.names
        }  # fmt: skip
        assert "pipeline.web.tokens" in imported, path
        assert not {"hmac", "hashlib", "secrets"} & {name.split(".")[0] for name in imported}
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not {"compare_digest", "sha256", "encode"} & names, path
        compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
        assert all(not isinstance(op, ast.Eq | ast.NotEq) for c in compares for op in c.ops), (
            f"{path}: a token compared with =="
        )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The real API app: every answer below comes before any query, so no data is needed."""
    configured = replace(settings, api_read_tokens=HTTP_READ, api_write_tokens=WRITE)
    with TestClient(create_app(configured)) as client:
        yield client


@pytest.mark.parametrize("token", HTTP_READ + WRITE)
def test_the_api_takes_each_token_whatever_its_length(api: TestClient, token: str) -> None:
    header = {"Authorization": f"Bearer {token}"}
    # Past the token check, a bad parameter is the next refusal: 422, never 401.
    assert api.get("/api/logs/recent", params={"hours": 0}, headers=header).status_code == 422
    patch = api.patch("/api/errors/0123456789abcdef", json={"status": "gone"}, headers=header)
    assert patch.status_code == (422 if token in WRITE else 403)


@pytest.mark.parametrize(
    "token", ["", "R", "rr", READ[1][:-1], READ[1] + "x", "w" * 199, "w" * 201]
)
def test_the_api_refuses_near_misses(api: TestClient, token: str) -> None:
    header = {"Authorization": f"Bearer {token}"}
    response = api.get("/api/logs/recent", params={"hours": 0}, headers=header)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
