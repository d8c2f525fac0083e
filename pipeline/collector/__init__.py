"""`tailpipe collect`: the HTTP app and its server (`app`), and its parts: token check, body
reading, item parsing, the Kafka sink and the metrics. Each part knows nothing of HTTP
routing."""
