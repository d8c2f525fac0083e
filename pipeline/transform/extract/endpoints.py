"""Endpoint templates: a request path with its varying parts replaced by placeholders.

Endpoints are grouped on, so `/repos/acme/api/issues/17` and `/repos/octo/cli/issues/4` must
become one value, and no query string may reach storage (queries carry search terms and, now
and then, tokens). Three styles, chosen per rule (`normalize` in `rules.toml`):

- `ids` (the default): query and fragment dropped; segments that are ids (all digits, a UUID,
  or 7+ hex digits with at least one digit, like a commit SHA) become `{id}`.
- `github`: as `ids`, plus GitHub's REST shapes: `/repos/{owner}/{repo}/...`, `/orgs/{org}`,
  `/users/{user}`, and everything under `.../contents/` as `{path}`. Other segments (`issues`,
  `pulls`, branch names) stay: they are few and they are what one wants to see.
- `none`: the path as logged.

Templating is pure and paths repeat (a Worker calls the same few endpoints), so results are
memoised in a bounded LRU cache; only short paths, so that the cache's size is bounded too.
"""

from __future__ import annotations

import re
from functools import lru_cache

STYLES = ("ids", "github", "none")

_IS_ID = re.compile(
    r"\d+|(?=[0-9a-f]*\d)[0-9a-f]{7,64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    re.IGNORECASE,
).fullmatch
_GITHUB_OWNERS = {"orgs": "{org}", "users": "{user}"}
_CACHED_LENGTH = 256
"""Longer paths are templated on every call: 4096 cache entries of any length would not be a
bounded amount of memory."""


def endpoint(method: str | None, path: str, style: str) -> str:
    """`METHOD /template`, or the template alone when no method was captured."""
    if len(path) <= _CACHED_LENGTH and (method is None or len(method) <= 16):
        return _cached(method, path, style)
    return _endpoint(method, path, style)


def _endpoint(method: str | None, path: str, style: str) -> str:
    template = path if style == "none" else _template(path, style)
    return f"{method.upper()} {template}" if method else template


_cached = lru_cache(maxsize=4096)(_endpoint)


def _template(path: str, style: str) -> str:
    cut = min((i for i in (path.find("?"), path.find("#")) if i >= 0), default=len(path))
    segments = path[:cut].split("/")
    start = 1
    if style == "github" and len(segments) > 2:
        root = segments[1]
        if root == "repos" and len(segments) > 3:
            segments[2:4] = ["{owner}", "{repo}"]
            if len(segments) > 5 and segments[4] == "contents":
                segments[5:] = ["{path}"]
            start = 4
        elif root in _GITHUB_OWNERS:
            segments[2] = _GITHUB_OWNERS[root]
            start = 3
    for i in range(start, len(segments)):
        if _IS_ID(segments[i]):
            segments[i] = "{id}"
    return "/".join(segments)
