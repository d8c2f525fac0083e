"""Positions: the offsets of each partition and the batches holding what was read past them."""

from __future__ import annotations

from pipeline.kafka import synth
from pipeline.replica.positions import Positions
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import Transformer
from tests.support.replica import START

TRANSFORMER = Transformer(Extractor.from_files())
A, B = ("t", 0), ("t", 1)


def fill(batch: Batch, key: tuple[str, int], offsets: range) -> None:
    stream = synth.messages(3, START)
    for offset in offsets:
        m = next(stream)
        TRANSFORMER.add(batch, key[0], key[1], offset, START, m.key, m.value)


def test_rewind_points_are_the_oldest_unstored_offsets_and_drop_leaves_no_trace() -> None:
    p = Positions()
    fill(p.filling, A, range(10, 20))
    fill(p.filling, B, range(5, 8))
    first = p.hand_off()
    assert first is not None
    fill(p.filling, A, range(20, 25))
    assert p.hand_off() is not None
    fill(p.filling, A, range(25, 27))
    assert p.rewind_points({A, B}) == {A: 10, B: 5}
    p.drop({A})
    assert all(A not in batch.parts for batch in p.in_flight())
    assert p.rewind_points({A, B}) == {B: 5}
    assert p.hand_off() is None, "an empty filling batch is not handed off"


def test_stored_up_to_counts_only_partitions_still_owned() -> None:
    p = Positions()
    fill(p.filling, A, range(0, 4))
    fill(p.filling, B, range(0, 2))
    batch = p.hand_off()
    assert batch is not None
    p.stored_up_to(batch, owned={A})
    p.done(batch)
    assert p.stored == {A: 4}
    assert p.unflushed == []


def test_seek_forget_and_restart() -> None:
    p = Positions()
    fill(p.filling, A, range(0, 3))
    fill(p.filling, B, range(0, 3))
    p.sought({A: 100})
    assert A not in p.filling.parts, "rows taken before the seek leave the filling batch"
    assert B in p.filling.parts
    assert p.stored[A] == p.next[A] == 100
    p.next[B] = 3
    p.restart([B])
    assert B not in p.next
    assert B in p.filling.parts, "no stored offset: what was read from the group's stays"
    p.forget([A])
    assert A not in p.stored
    assert A not in p.next


def test_a_seek_after_a_lost_flush_takes_what_was_read_meanwhile_out_of_every_batch() -> None:
    """A flush finds A lost; the writer drops A and reads its stored offset, which can take
    seconds (the broker away). Meanwhile the poll loop goes on from past what was dropped
    (aiokafka's prefetched records) and hands batches off. Had they kept A, the next flush
    would store a part of A starting above the stored offset, which the compare-and-set lets
    through: the rows between would be skipped (found by `make chaos` with Kafka restarts)."""
    p = Positions()
    fill(p.filling, A, range(100, 110))
    failed = p.hand_off()
    assert failed is not None
    p.drop({A})  # `Rebalance.recover`, before its seek
    fill(p.filling, A, range(110, 120))  # read meanwhile, handed off
    assert p.hand_off() is not None
    fill(p.filling, A, range(120, 125))
    fill(p.filling, B, range(0, 3))
    p.sought({A: 100}, everywhere=True)
    assert all(A not in batch.parts for batch in p.in_flight())
    assert B in p.filling.parts
    assert (p.stored[A], p.next[A]) == (100, 100)
    # On assignment (the writer may be storing a batch) only the filling batch is touched.
    fill(p.filling, A, range(100, 104))
    handed = p.hand_off()
    assert handed is not None
    p.sought({A: 100})
    assert A in handed.parts
