"""The error tree in `pipeline/errors.py` is the whole tree: every error class of the package
is in it, under the parent it really has."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pipeline
from pipeline import errors

# A tree line: box-drawing indentation, then the class (`module.Class` outside errors.py).
_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Za-z_.]+[A-Za-z])\b")


def error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in the package, by its name in the tree: `Class` in
    errors.py, else its module's path below `pipeline.` then the class. Private ones (control
    flow inside one function) are left out, as the docstring says."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if module_info.name.endswith("__main__"):
            continue  # importing it runs the command
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                where = module.__name__.removeprefix("pipeline.")
                found[name if where == "errors" else f"{where}.{name}"] = value
    return found


def drawn() -> dict[str, str | None]:
    """The tree in errors.py's docstring: each class and its parent (None for the root)."""
    doc = errors.__doc__ or ""
    lines = doc.split("::", 1)[1].lstrip("\n").split("\n\n", 1)[0].splitlines()
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        match = _LINE.match(line)
        if not match or (not match["name"][0].isupper() and "." not in match["name"]):
            continue  # a continuation of the line above
        depth = len(match["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match["name"]] = stack[-1][1] if stack else None
        stack.append((depth, match["name"]))
    return parents


def test_every_error_class_is_in_the_tree_under_its_real_parent() -> None:
    classes = error_classes()
    tree = drawn()
    assert set(classes) == set(tree), {
        "not drawn": sorted(set(classes) - set(tree)),
        "drawn, not defined": sorted(set(tree) - set(classes)),
    }
    for name, parent in tree.items():
        cls = classes[name]
        if parent is None:
            assert cls is errors.TailpipeError
        else:
            assert classes[parent] in cls.__bases__, f"{name} is not a {parent}"


def test_every_error_is_a_tailpipe_error() -> None:
    """So the CLI prints any of them as one line, and `except TailpipeError` means all."""
    outside = [n for n, c in error_classes().items() if not issubclass(c, errors.TailpipeError)]
    assert outside == []
