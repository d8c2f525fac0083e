"""A request the collector refuses, with the status and the message the sender sees."""

from __future__ import annotations

from typing import Any

from pipeline.errors import InputError


class Rejection(InputError):
    """Raised anywhere while handling a request; the route turns it into a JSON answer.

    `reason` is the `tailpipe_collect_rejects_total` label, so it must stay a small fixed set:
    `unauthorized`, `too_large`, `malformed`, `invalid`, `disconnected`.
    """

    def __init__(self, status: int, reason: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.detail = detail

    @classmethod
    def unauthorized(cls, header: str) -> Rejection:
        """No known token: every route says the same, naming both ways to send one."""
        return cls(
            401,
            "unauthorized",
            "missing or unknown token: send `Authorization: Bearer <token>` or "
            f"`{header}: <token>`",
        )

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.detail}
