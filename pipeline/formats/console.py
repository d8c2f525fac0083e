"""A console call's arguments as one line of text plus its structured part.

The runtime records `console.log(a, b, ...)` as the JSON array `[a, b, ...]`. `render` turns it
back into what a terminal would show, and picks out the structured data an extractor can query:

- text: strings as they are, every other value as compact JSON, joined by one space;
- data: the object arguments, and string arguments that hold a JSON object (application JSON
  often arrives double-encoded, `console.log(JSON.stringify(event))`), merged left to right into
  one object; on a key present in several, the later argument wins, as with `Object.assign`.
  `{}` (what the runtime records when serialisation failed) adds nothing; no object at all, or
  only empty ones, gives None.
"""

from __future__ import annotations

import orjson

from pipeline.formats.fields import MAX_DEPTH, too_deep
from pipeline.formats.invocation import JSON

_dumps = orjson.dumps
_loads = orjson.loads


def render(message: JSON) -> tuple[str, dict[str, JSON] | None]:
    """`(text, data)` of one log entry's `message`. A message that is not an array (older or
    hand-made captures) counts as a single argument; null or absent is an empty line."""
    if type(message) is not list:
        if message is None:
            return "", None
        message = [message]
    if len(message) == 1:
        # The common case, one string: no joining, no copies.
        only = message[0]
        if type(only) is str:
            return only, _embedded(only)
        if type(only) is dict:
            return _dumps(only).decode(), only or None
        return _dumps(only).decode(), None

    parts: list[str] = []
    data: dict[str, JSON] | None = None
    for arg in message:
        found: dict[str, JSON] | None
        if type(arg) is str:
            parts.append(arg)
            found = _embedded(arg)
        else:
            parts.append(_dumps(arg).decode())
            found = arg if type(arg) is dict and arg else None
        if found is not None:
            # A new dict, never an update in place: `found` belongs to the decoded message.
            data = found if data is None else {**data, **found}
    return " ".join(parts), data


def _embedded(arg: str) -> dict[str, JSON] | None:
    """The object a string argument encodes as JSON, if it encodes a non-empty one."""
    first, last = arg[:1], arg[-1:]
    if first != "{" or last != "}":
        # Most log strings are prose: two one-character tests reject them. Only padded JSON
        # (`JSON.stringify(x) + "\n"`) pays for a strip.
        if not (first.isspace() or last.isspace()):
            return None
        arg = arg.strip()
        if arg[:1] != "{" or arg[-1:] != "}":
            return None
    try:
        value = _loads(arg)
    except orjson.JSONDecodeError:
        return None  # prose that happens to start with "{": stays text only
    if type(value) is not dict or not value:
        return None
    # An over-deep payload stays text: the message itself was valid, so no error.
    if arg.count("{") + arg.count("[") > MAX_DEPTH and too_deep(value):
        return None
    return value
