"""The dead-letter guard rail: stop, rather than drain a topic into the dead-letter store.

After a bad deploy every message may fail to decode; dead-lettering them all would empty the
topic into S3 and leave nothing for the fixed version to read. So when more than `max_share`
of the last `window` messages would be dead-lettered, the replica stops consuming, says it is
not ready, and raises a critical alert; nothing of the batch that tripped it is stored.

Pure bookkeeping over runs of messages, counted per batch, not per message. Within a batch the
dead letters are counted as the most recent messages: the strictest order, so a burst of bad
messages trips the rail however the batch interleaves them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    window: int = 1000
    max_share: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"guard window must be at least 1 message, got {self.window}")
        if not 0 < self.max_share <= 1:
            raise ValueError(f"guard share must be in (0, 1], got {self.max_share}")

    @property
    def limit(self) -> float:
        """Dead letters in a full window above which the rail trips."""
        return self.max_share * self.window


class Guard:
    def __init__(self, policy: GuardPolicy) -> None:
        self.policy = policy
        self._runs: deque[tuple[int, bool]] = deque()  # (messages, all dead?), oldest first
        self._size = 0
        self.tripped = False

    def dead_in_window(self, messages: int = 0, dead: int = 0) -> int:
        """Dead letters among the last `window` messages, were a batch of `messages` with
        `dead` dead letters added now."""
        window = self.policy.window
        if dead >= window:
            return window
        count = dead
        remaining = window - dead - (messages - dead)
        for n, is_dead in reversed(self._runs):
            if remaining <= 0:
                break
            taken = min(n, remaining)
            count += taken if is_dead else 0
            remaining -= taken
        return count

    def would_trip(self, messages: int, dead: int) -> bool:
        return dead > 0 and self.dead_in_window(messages, dead) > self.policy.limit

    def record(self, messages: int, dead: int) -> None:
        """Count a stored batch."""
        if messages > dead:
            self._push(messages - dead, False)
        if dead:
            self._push(dead, True)

    def _push(self, n: int, is_dead: bool) -> None:
        self._runs.append((n, is_dead))
        self._size += n
        excess = self._size - self.policy.window
        while excess > 0:
            oldest, flag = self._runs[0]
            if oldest <= excess:
                self._runs.popleft()
                self._size -= oldest
                excess -= oldest
            else:
                self._runs[0] = (oldest - excess, flag)
                self._size -= excess
                excess = 0
