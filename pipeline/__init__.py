"""tailpipe: Workers-style tail events from Kafka into PostgreSQL, exactly once."""

__version__ = "0.1.0"
