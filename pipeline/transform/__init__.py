"""Invocation -> rows + rollups, pure: a message's rows, rollups and dead letters.

The transformer (`transformer`) decodes, redacts (`redact/`), extracts API calls, LLM usage,
rate limits and scans (`extract/`), fingerprints errors (`fingerprint`) and sketches latency
(`sketch`) into a batch (`batch`) and its rollups (`rollup`); `inspect` prints what it would
store. No I/O.
"""
