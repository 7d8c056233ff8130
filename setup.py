"""Build hooks: record the git commit and build date in the package (``llamaswap._build_info``).

Metadata lives in setup.cfg; this file only stamps what ``--version`` and ``/api/version``
report. A wheel built from a git checkout gets the checkout's HEAD; an sdist carries the
stamp of the checkout it was made from; without git (a plain source tree) nothing is
written and llamaswap reports ``unknown``.
"""

from __future__ import annotations

import datetime
import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
STAMP = os.path.join("llamaswap", "_build_info.py")


def git_commit() -> str | None:
    """HEAD of the checkout this file is the top of, or None."""
    try:
        out = subprocess.run(
            ["git", "-C", HERE, "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 2 or os.path.realpath(out[0]) != os.path.realpath(HERE):
        return None
    return out[1]


def build_date() -> str:
    """Now in UTC (or SOURCE_DATE_EPOCH, for reproducible builds), RFC 3339."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch
        else datetime.datetime.now(datetime.UTC)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_stamp(root: str) -> None:
    """Write ``llamaswap/_build_info.py`` under ``root`` when the commit is known."""
    commit = git_commit()
    if commit is None:
        return
    path = os.path.join(root, STAMP)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            '"""Written by setup.py at build time."""\n\n'
            f"COMMIT = {commit!r}\nBUILD_DATE = {build_date()!r}\n"
        )


class StampedBuildPy(build_py):
    """build_py that also stamps the built package (not an editable install: git tells)."""

    def run(self) -> None:
        """Build, then stamp."""
        super().run()
        if not getattr(self, "editable_mode", False):
            write_stamp(self.build_lib)


class StampedSdist(sdist):
    """sdist whose tree carries the stamp, so a wheel built from it knows its commit."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        """Copy the tree, then stamp it."""
        super().make_release_tree(base_dir, files)
        write_stamp(base_dir)


setup(cmdclass={"build_py": StampedBuildPy, "sdist": StampedSdist})
