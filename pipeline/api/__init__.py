"""`tailpipe api`: the query API over what the pipeline stored, read-only but for error status.

A separate process from the consumers (it never imports them), scaled on its own, reading
PostgreSQL through an asyncpg pool. Spans of hours are answered from the rollups; only the
recent-logs search reads raw rows, through its indexes, a page at a time.
"""
