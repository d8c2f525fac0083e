"""tailpipe: Workers-style tail events from Kafka into PostgreSQL, exactly once."""

from importlib.util import find_spec

__version__ = "0.1.0"


def compiled() -> bool:
    """Whether the hot path (decoding, redaction, extraction, rows) runs as the C extensions
    mypyc builds from it, as every wheel and `make` install has it. Plain source (a checkout
    never installed) runs the same code about a third slower. Looked up, not imported."""
    spec = find_spec("pipeline.transform.transformer")
    return spec is not None and spec.origin is not None and not spec.origin.endswith(".py")
