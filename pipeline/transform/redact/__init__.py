"""Secret redaction: pure rules, no I/O. Used by the structured logger on every record, and by
the pipeline before storage (rows, rollups, dead letters).

Four modules, each importing only the ones before it:

- `names`: whether a header, JSON key or parameter name holds a secret (`is_secret_name`);
- `rules`: the `Rule` type, and the rules of `rules.toml` (`RULES`), read and checked once;
- `triggers`: the one scan that finds which rules a text needs (their trigger words);
- `engine`: redaction applied, the entry points: `redact_text`, `redact_url`,
  `redact_headers`, `redact_json`, and for fast paths whether a text needs redaction at all
  (`needs_redaction`, `needs_redaction_utf8`; `has_trigger` for text already lower-cased).

Import what you use from the module that holds it: this package re-exports nothing, so a
caller names the step it depends on (the logger and the transform need only `engine`).
"""
