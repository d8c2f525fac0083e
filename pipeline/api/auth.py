"""Bearer tokens: each may read, or read and write. Compared in constant time.

Every token is compared, whatever matched first, so the time taken says nothing about which
token (or how much of one) was right.
"""

from __future__ import annotations

import hmac
from enum import IntEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer


class Access(IntEnum):
    READ = 1
    WRITE = 2


class Tokens:
    def __init__(self, read: tuple[str, ...], write: tuple[str, ...]) -> None:
        self._tokens = [(t.encode(), Access.READ) for t in read]
        self._tokens += [(t.encode(), Access.WRITE) for t in write]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def access(self, authorization: str | None) -> Access | None:
        scheme, _, presented = (authorization or "").partition(" ")
        given = presented.strip().encode()
        granted: Access | None = None
        for token, access in self._tokens:
            if hmac.compare_digest(token, given) and scheme.lower() == "bearer":
                granted = access if granted is None else max(granted, access)
        return granted


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
