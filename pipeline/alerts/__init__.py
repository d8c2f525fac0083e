"""Critical alerts: rules (`rules.py`, `rules.toml`), the pure detection of conditions while a
batch is built and merged (`detect.py`), an alert's state per rule and group (`state.py`:
normal, pending, firing, resolving; pure), and the outbox that publishes the alerts committed in
`critical_alerts` to the alerts topic (`outbox.py`). `tailpipe alerts forward` reads that topic
(`forward.py`) and delivers each alert to the destinations that want it (`destinations.py`),
one lane per destination (`delivery.py`).

Alerts are recorded in the flush transaction that stores the events causing them, keyed by
dedup key and cooldown window, so every replica that sees a condition lands on the same row.
"""
