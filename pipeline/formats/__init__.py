"""bytes -> Invocation, pure: every accepted input format decoded into the typed `Invocation`.

Workers trace items (`trace_items`), Logpush records (`logpush`), tailpipe's logger envelope
(`envelope`), OTLP logs (`otlp_logs`, with OTLP/JSON's values in `otlp_values`), a trace
item's log entries and exceptions (`entries`), console arguments
(`console`), wrangler's concatenated JSON stream (`jsonstream`), the field readers (`fields`),
text PostgreSQL cannot hold (`sanitize`), and the records they produce (`invocation`). `decode`
is the entry point. No I/O, no clock.
"""
