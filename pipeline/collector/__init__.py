"""The parts of `tailpipe collect` (pipeline/collect.py): token check, body reading, item
parsing, the Kafka sink and the metrics. Each module knows nothing of HTTP routing."""
