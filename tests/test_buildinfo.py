"""The version figures: package version, the commit it was built from, build date."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path

from llamaswap.buildinfo import build_info

REPO = Path(__file__).resolve().parents[1]


def _head() -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def test_version_is_the_installed_package_version() -> None:
    """The version is the installed distribution's, not a constant of the source."""
    assert build_info().version == metadata.version("llamaswap")


def test_commit_is_the_checkout_it_was_built_from() -> None:
    """Built (tox's wheel) or installed editable from this checkout: its HEAD is the commit."""
    head = _head()
    assert head is not None, "the tests run from a git checkout"
    assert build_info().commit == head


def test_wheel_records_its_build_date() -> None:
    """The wheel tox tests is stamped at build time: a real date, not ``unknown``."""
    if not os.environ.get("TOX_ENV_NAME"):
        assert build_info().build_date == "unknown"  # an editable checkout has no build
        return
    assert build_info().build_date != "unknown"
    assert build_info().build_date.endswith("Z")
