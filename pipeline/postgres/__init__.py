"""PostgreSQL: the connection (`connect`), schema migrations (`migrate`), the flush's SQL (COPY,
offsets, dead-letter index: `flush`) and the one transaction that runs it (`writer`), the rollup
upserts (`rollup_upserts`), day partitions created ahead of need (`day_partitions`) and dropped when
old (`retention`), and `tailpipe dlq list/replay` (`replay`), which reads the dead-letter index
and stores through the flush.
"""
