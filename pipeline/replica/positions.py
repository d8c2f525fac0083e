"""Where each partition a replica reads stands, and the batches holding what it read.

Per partition: the offset stored in PostgreSQL (what the next flush's compare-and-set expects)
and the next offset to take (records below it are stale: fetched before a seek). Between the
two lie the rows of the filling batch and of the handed-off batches not stored yet (waiting,
queued or being flushed). A partition dropped or sought back must leave every one of those
batches, or a later batch would store offsets past rows that were never stored: so the batches
live here, next to the offsets they carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipeline.transform.batch import Batch

Key = tuple[str, int]
"""(topic, partition)"""


class Positions:
    def __init__(self) -> None:
        self.stored: dict[Key, int] = {}
        self.next: dict[Key, int] = {}
        self.filling = Batch()
        self.unflushed: list[Batch] = []

    def in_flight(self) -> tuple[Batch, ...]:
        """Every batch read but not stored, the filling one last."""
        return (*self.unflushed, self.filling)

    def hand_off(self) -> Batch | None:
        """Start a new filling batch; the old one, unless empty, is now unflushed."""
        batch, self.filling = self.filling, Batch()
        if not batch.parts:
            return None
        self.unflushed.append(batch)
        return batch

    def done(self, batch: Batch) -> None:
        """The writer is through with the batch, stored or not."""
        self.unflushed.remove(batch)

    def stored_up_to(self, batch: Batch, owned: Iterable[Key]) -> None:
        """The batch committed: its parts of partitions still owned are the stored offsets."""
        owned = set(owned)
        self.stored.update(
            {key: part.next_offset for key, part in batch.parts.items() if key in owned}
        )

    def drop(self, keys: set[Key]) -> None:
        """Take these partitions out of every batch not stored."""
        for batch in self.in_flight():
            batch.drop(keys)

    def forget(self, keys: Iterable[Key]) -> None:
        """Partitions no longer ours: nothing of them is held or expected."""
        keys = set(keys)
        self.drop(keys)
        self.restart(keys)

    def rewind_points(self, keys: set[Key]) -> dict[Key, int]:
        """The first unstored offset of each partition: batches are contiguous per partition,
        so it is the first offset of its oldest part not stored."""
        points: dict[Key, int] = {}
        for batch in self.in_flight():
            for key in keys & batch.parts.keys():
                points.setdefault(key, batch.parts[key].first_offset)
        return points

    def restart(self, keys: Iterable[Key]) -> None:
        """No offsets known for these: reading starts where the group's offset says."""
        for key in keys:
            self.stored.pop(key, None)
            self.next.pop(key, None)

    def sought(self, offsets: Mapping[Key, int], everywhere: bool = False) -> None:
        """Reading restarts at these offsets, the stored ones: rows taken before the seek
        leave the filling batch, and with `everywhere` every batch not stored.

        On assignment the writer's batches are its own (it may be storing one), and rows
        taken there came from the group's committed offset, which is never past the stored
        one: `flush.advance` refuses a part that starts below it. When a flush found a
        partition lost, the writer itself seeks (`Rebalance.recover`), and the rows taken
        while it read the stored offsets continue from past what it dropped: a part starting
        above the stored offset would pass the compare-and-set and skip the rows between. So
        they go from every batch."""
        if everywhere:
            self.drop(set(offsets))
        else:
            self.filling.drop(set(offsets))
        for key, offset in offsets.items():
            self.stored[key] = self.next[key] = offset
