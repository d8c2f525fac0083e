"""An exception's stack as the logger stores it: Python's traceback, chain and all, starting
where the application's code does.

    [21 framework frames omitted]
  File "/app/users.py", line 12, in lookup
    return USERS[key]
           ~~~~~^^^^^
KeyError: 'u1'

The above exception was the direct cause of the following exception:

  File "/app/api.py", line 30, in get_user
    raise NotFound(f"no user {uid}") from error

Each exception of the chain is shown the way Python's own traceback shows it, oldest first:
its frames, then its `Name: message` line, then the sentence joining it to the next one ("The
above exception was the direct cause of the following exception:" for `raise ... from`,
"During handling of the above exception, another exception occurred:" for an exception raised
in an `except` block, unless `from None` suppressed it). The last exception's own line is left
out: its name and message are the entry's `name` and `message` already. There is no "Traceback
(most recent call last):" line either, so a stack starts with an indented line whenever its
first exception has frames, as the decoder expects of a stack without a V8 header. A chain is
cut after `MAX_CHAIN` exceptions (the oldest are dropped, with a note saying so); a cycle ends
where it closes (`traceback.TracebackException` breaks it). An exception group's
sub-exceptions follow its frames, each under a `[sub-exception 2 of 3]` line, `MAX_GROUP_WIDTH`
of them per group and `MAX_GROUP_DEPTH` groups deep, as Python bounds its own.

In-app frames (Sentry's `in_app`): a frame is the application's unless its file is in the
standard library, in site-packages or dist-packages (an installed library), frozen (importlib),
or part of this logger (the middleware's and the job decorator's frames are instrumentation).
A package listed in `InApp.packages` is the application's even installed in site-packages, for
a service deployed as a wheel. The frames before an exception's first in-app frame, the
server's and the framework's (Starlette's middleware stack, FastAPI's routing: 21 frames for one
FastAPI handler), are collapsed into one `[N framework frames omitted]` line, so the stack
starts in the handler; an exception with no in-app frame at all keeps every frame. Frames
after the first in-app one are all kept: a library frame at the end is where it failed.
"""

from __future__ import annotations

import os
import re
import sysconfig
import traceback
from dataclasses import dataclass
from functools import lru_cache

MAX_CHAIN = 10
"""Exceptions shown of one chain of causes and contexts, the newest ones."""
MAX_GROUP_WIDTH = 10
MAX_GROUP_DEPTH = 3
MAX_SHOWN = 50
"""Exceptions shown in one stack in all, counting every group's members and their chains."""

CAUSE = "The above exception was the direct cause of the following exception:"
CONTEXT = "During handling of the above exception, another exception occurred:"

_PACKAGE = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True, slots=True)
class InApp:
    """Which frames are the application's: see the module's docstring. `packages` are
    top-level import names (`billing`, not `billing.api`) whose files count as in-app even in
    site-packages."""

    packages: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in self.packages:
            if type(name) is not str or not _PACKAGE.fullmatch(name):
                raise ValueError(
                    f"in_app: expected top-level package names such as 'billing', got {name!r}"
                )

    def __call__(self, filename: str) -> bool:
        return _in_app(filename, self.packages)


APPLICATION = InApp()
"""The default: no installed package is the application's."""

_SEPARATORS = tuple({os.sep, "/"})
_LOGGER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LIBRARY_DIRS = ("site-packages", "dist-packages")


def _stdlib_dirs() -> tuple[str, ...]:
    """The standard library's directories: where `os` itself is (lib-dynload below it), and
    the interpreter's own idea of it, both resolved (a venv's paths may be links)."""
    dirs = {os.path.dirname(os.__file__), sysconfig.get_path("stdlib")}
    found = set()
    for path in dirs:
        if path:
            found.add(os.path.abspath(path) + os.sep)
            found.add(os.path.realpath(path) + os.sep)
    return tuple(sorted(found))


_STDLIB = _stdlib_dirs()


@lru_cache(maxsize=4096)
def _in_app(filename: str, packages: frozenset[str]) -> bool:
    """Cached: a stack has the same few hundred files over and over."""
    if filename.startswith("<"):
        # `<frozen importlib._bootstrap>` is the interpreter's; `<string>`, `<stdin>` and a
        # notebook's cells are code someone wrote.
        return not filename.startswith("<frozen ")
    path = os.path.abspath(filename)
    if path.startswith(_LOGGER_DIR):
        return False
    parts = re.split("|".join(map(re.escape, _SEPARATORS)), path)
    for index, part in enumerate(parts):
        if part in _LIBRARY_DIRS:
            top = parts[index + 1] if index + 1 < len(parts) else ""
            return top.removesuffix(".py") in packages
    return not path.startswith(_STDLIB)


def format_stack(exc: BaseException, in_app: InApp = APPLICATION) -> str:
    """The stored stack of `exc` (see the module's docstring); "" when there is nothing to show
    (an exception never raised, with no chain)."""
    te = traceback.TracebackException(
        type(exc),
        exc,
        exc.__traceback__,
        compact=True,
        max_group_width=MAX_GROUP_WIDTH,
        max_group_depth=MAX_GROUP_DEPTH,
    )
    lines: list[str] = []
    _chain(te, in_app, lines, [MAX_SHOWN], 0, last_line=False)
    return "\n".join(lines).strip("\n")


def _chain(
    te: traceback.TracebackException,
    in_app: InApp,
    out: list[str],
    budget: list[int],
    depth: int,
    *,
    last_line: bool,
) -> None:
    """`te` and what led to it, oldest first. `last_line`: whether `te`'s own `Name: message`
    line is shown (not for the entry's exception itself)."""
    links: list[tuple[traceback.TracebackException, str]] = []
    current: traceback.TracebackException | None = te
    joining = ""
    while current is not None and len(links) < MAX_CHAIN:
        links.append((current, joining))
        if current.__cause__ is not None:
            current, joining = current.__cause__, CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, joining = current.__context__, CONTEXT
        else:
            current = None
    if current is not None:
        out.append("  [earlier exceptions of this chain omitted]")
        out.append("")
    for index in range(len(links) - 1, -1, -1):
        item, joined_by = links[index]
        if budget[0] <= 0:
            out.append("  [more exceptions omitted]")
            return
        budget[0] -= 1
        _frames(item.stack, in_app, out)
        if index > 0 or last_line:
            out.extend("".join(item.format_exception_only()).rstrip("\n").split("\n"))
        _members(item, in_app, out, budget, depth)
        if index > 0:
            out.extend(("", joined_by, ""))


def _members(
    te: traceback.TracebackException,
    in_app: InApp,
    out: list[str],
    budget: list[int],
    depth: int,
) -> None:
    """An exception group's sub-exceptions, each with its own chain."""
    members: list[traceback.TracebackException] | None = getattr(te, "exceptions", None)
    if not members:
        return
    if depth >= MAX_GROUP_DEPTH:
        out.append(f"  [{len(members)} sub-exceptions nested too deep, omitted]")
        return
    shown = members[:MAX_GROUP_WIDTH]
    for number, member in enumerate(shown, 1):
        out.extend(("", f"  [sub-exception {number} of {len(members)}]"))
        _chain(member, in_app, out, budget, depth + 1, last_line=True)
    if len(members) > len(shown):
        out.extend(("", f"  [{len(members) - len(shown)} more sub-exceptions omitted]"))


def _frames(stack: traceback.StackSummary, in_app: InApp, out: list[str]) -> None:
    frames = list(stack)
    first = next((i for i, frame in enumerate(frames) if in_app(frame.filename)), 0)
    if first:
        plural = "s" if first != 1 else ""
        out.append(f"  [{first} framework frame{plural} omitted]")
        stack = traceback.StackSummary.from_list(frames[first:])
    for block in stack.format():
        out.extend(block.rstrip("\n").split("\n"))
