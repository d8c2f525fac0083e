"""Reading the package's TOML data files (extraction rules and prices, alert rules and
destinations): the packaged defaults, or a user's file by path.

Read once, when rules and prices are built; extraction itself never touches a file. Every
problem becomes a `SettingsError` that names the file, so a bad `--rules` path or a TOML typo
stops the command with one line (exit code 2), like any other setting.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from typing import Any

from pipeline.errors import SettingsError

StrPath = str | os.PathLike[str]


def packaged_from(package: str, name: str) -> tuple[str, dict[str, Any]]:
    """`(label, document)` of a data file shipped in `package`."""
    raw = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return _parse(f"{package}/{name}", raw)


def user(path: StrPath) -> tuple[str, dict[str, Any]]:
    """`(label, document)` of the TOML file at `path`."""
    label = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            raw = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(label, "a readable UTF-8 TOML file", str(error)) from None
    return _parse(label, raw)


def _parse(label: str, raw: str) -> tuple[str, dict[str, Any]]:
    try:
        return label, tomllib.loads(raw)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(label, "valid TOML", str(error)) from None


def check_keys(where: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse keys outside `allowed`: a misspelt key would otherwise be ignored in silence."""
    for key in table:
        if key not in allowed:
            raise SettingsError(f"{where}: {key}", f"one of the keys {', '.join(allowed)}", key)
