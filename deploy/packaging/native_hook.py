"""hatch build hook: compiles the native core (`pipeline/native`, Rust) with cargo.

Every wheel and every editable install runs it, as the mypyc hook compiles the typed Python
beside it. The library lands in the source tree as `pipeline/native/_core<EXT_SUFFIX>` (an
editable install imports it from there) and a wheel carries it by force-include. cargo is taken
from PATH, else from rustup's `~/.cargo/bin`; without it the build fails with one line saying
so, rather than ship the hot path slow. The crate's target directory is `.local/cargo-target`
(or `CARGO_TARGET_DIR`), kept between builds, so a rebuild compiles only what changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

CRATE = Path("pipeline") / "native"
LIBRARY = "lib_core.so"


def cargo() -> str:
    found = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not os.access(found, os.X_OK):
        raise RuntimeError(
            "tailpipe's native core needs cargo (Rust): install it with rustup and build again"
        )
    return found


class NativeHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        target = Path(os.environ.get("CARGO_TARGET_DIR") or root / ".local" / "cargo-target")
        command = [
            cargo(), "build", "--release", "--locked", "--quiet",
            "--manifest-path", str(root / CRATE / "Cargo.toml"), "--target-dir", str(target),
        ]  # fmt: skip
        env = {**os.environ, "PYO3_PYTHON": sys.executable}
        subprocess.run(command, check=True, env=env)
        built = root / CRATE / f"_core{sysconfig.get_config_var('EXT_SUFFIX')}"
        shutil.copy2(target / "release" / LIBRARY, built)
        if version != "editable":
            build_data["force_include"][str(built)] = str(CRATE / built.name)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
