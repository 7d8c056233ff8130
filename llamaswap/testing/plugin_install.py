"""Install a plugin package into a private directory, for tests that need a real ``pip install``.

Blocking (``subprocess.run``): for test code only, never for the reactor thread.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["EXAMPLE_PLUGIN", "install_plugin", "plugin_env"]

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "batching"


def install_plugin(source: Path, target: Path) -> Path:
    """``pip install --no-deps --target target`` a copy of ``source``; returns ``target``.

    The source tree is copied first so the build leaves nothing behind in it.
    Twisted only sees the plugin in processes that start with ``target`` on
    their path: use ``plugin_env`` for a subprocess.
    """
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--no-build-isolation", "--no-index", "--target", str(target), str(copy)],
            check=True, capture_output=True, text=True)
    return target


def plugin_env(target: Path, *extra_paths: Path,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment whose PYTHONPATH starts with ``target`` (then ``extra_paths``)."""
    env = dict(os.environ if base is None else base)
    parts = [str(target), *map(str, extra_paths)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env
