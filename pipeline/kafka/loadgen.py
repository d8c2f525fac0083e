"""`tailpipe loadgen`: publish synthetic tail events to the topic, as fast or as paced as asked.

Generation is `synth.messages` (deterministic for a seed and start time); publishing is the
bulk publisher (acknowledged batches). Pacing sleeps per slice of messages, not per message,
so a requested rate costs no per-event timer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pipeline.kafka.publisher import BulkPublisher
from pipeline.kafka.synth import messages
from pipeline.settings import Settings

_SLICE = 1000


@dataclass(frozen=True, slots=True)
class Plan:
    count: int | None
    duration_s: float | None
    rate: float | None
    seed: int
    poison_ratio: float
    start_ms: int
    reject_ratio: float = 0.0
    step_ms: int = 7
    """Event time between consecutive messages: a demo spreads a few thousand over hours."""


@dataclass(frozen=True, slots=True)
class Report:
    sent: int
    poison: int
    seconds: float
    rejected: int = 0
    """Well-formed messages that cannot be stored (synth's `reject_ratio`)."""

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"sent {self.sent} messages ({self.poison} malformed, {self.rejected} unstorable) "
            f"in {self.seconds:.2f} s: "
            f"{self.rate:,.0f} messages/s"
        )


async def run(settings: Settings, topic: str, plan: Plan) -> Report:
    stream = messages(
        plan.seed, plan.start_ms, poison_ratio=plan.poison_ratio,
        reject_ratio=plan.reject_ratio, step_ms=plan.step_ms,
    )  # fmt: skip
    sent = poison = rejected = 0
    started = time.monotonic()
    deadline = started + plan.duration_s if plan.duration_s is not None else None
    async with BulkPublisher(settings, topic) as publisher:
        while plan.count is None or sent < plan.count:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if plan.rate:
                ahead = sent / plan.rate - (now - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            todo = _SLICE if plan.count is None else min(_SLICE, plan.count - sent)
            for _ in range(todo):
                message = next(stream)
                await publisher.add(message.key, message.value)
                poison += message.poison
                rejected += message.rejected
            sent += todo
    return Report(sent, poison, time.monotonic() - started, rejected)
