"""`tailpipe collect`: the HTTP app and its server (`app`), and its parts: the token check
(`auth`), body reading (`body`), the items of a request (`items`), the Kafka sink (`sink`),
refusals (`rejection`) and the metrics (`metrics`). Each part knows nothing of HTTP routing."""
