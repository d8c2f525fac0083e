"""`tailpipe collect`: the HTTP app and its server (`app`), and its parts: the token check
(`auth`), body reading (`body`), the items of a request (`items`), a streaming Tail Worker's
events grouped by invocation (`tail_stream`), the Kafka sink (`sink`), refusals (`rejection`),
the metrics (`metrics`), and the OTLP receivers (`otlp_receiver`) with their encodings
(`otlp_encoding`), the walk and cutting of an export they share (`otlp_export`) and each
signal's grouping (`otlp_logs`, `otlp_traces`). Each part but `app` and `otlp_receiver` knows
nothing of HTTP routing."""
