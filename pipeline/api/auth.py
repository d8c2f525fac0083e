"""Bearer tokens: each may read, or read and write.

Checked by pipeline/web/tokens.py, as the collector's are: SHA-256 digests compared in constant
time against every token, whatever matched first, so the time taken says nothing about which
token (or how much of one, or how long one is) was right.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.web import tokens as shared


class Access(IntEnum):
    READ = 1
    WRITE = 2


class Tokens:
    def __init__(self, read: tuple[str, ...], write: tuple[str, ...]) -> None:
        self._tokens = shared.Tokens(
            [(t, Access.READ) for t in read] + [(t, Access.WRITE) for t in write]
        )

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def access(self, authorization: str | None) -> Access | None:
        level = self._tokens.level(shared.bearer(authorization))
        return Access(level) if level else None


def _check(request: Request, needed: Access) -> None:
    tokens: Tokens = request.app.state.tokens
    granted = tokens.access(request.headers.get("authorization"))
    if granted is None:
        raise HTTPException(
            401,
            "missing or unknown token: send `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if granted < needed:
        raise HTTPException(403, "this token may only read")


# Declares the scheme in the OpenAPI document; the check itself is `_check`, on the raw header.
_bearer = HTTPBearer(auto_error=False, description="a read or a read-write token")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def reader(request: Request, _: Bearer) -> None:
    _check(request, Access.READ)


async def writer(request: Request, _: Bearer) -> None:
    _check(request, Access.WRITE)
