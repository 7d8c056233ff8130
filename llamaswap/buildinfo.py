"""What build this is: package version, the git commit and date recorded at build time."""

from __future__ import annotations

import functools
import importlib
import os
import platform
import subprocess
from importlib import metadata

import attrs

import twisted
from llamaswap import __version__

UNKNOWN = "unknown"


@attrs.frozen
class BuildInfo:
    """The version figures ``--version`` prints and ``/api/version`` serves."""

    version: str
    commit: str
    build_date: str
    python: str
    twisted: str

    def as_json(self) -> dict[str, str]:
        """llama-swap's ``/api/version`` keys plus the Python and Twisted versions."""
        return {
            "version": self.version,
            "commit": self.commit,
            "build_date": self.build_date,
            "python": self.python,
            "twisted": self.twisted,
        }


def _package_version() -> str:
    try:
        return metadata.version("llamaswap")
    except metadata.PackageNotFoundError:
        return __version__


def _stamped() -> tuple[str, str] | None:
    """Commit and date written into the package when its wheel was built (``setup.py``)."""
    try:
        module = importlib.import_module("llamaswap._build_info")
    except ImportError:
        return None
    return str(module.COMMIT), str(module.BUILD_DATE)


def _checkout_commit() -> str | None:
    """HEAD of the git checkout this package runs from (an editable install), if it is one."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        top = subprocess.run(
            ["git", "-C", root, "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(top) != 2 or os.path.realpath(top[0]) != os.path.realpath(root):
        return None
    return top[1]


@functools.lru_cache(maxsize=1)
def build_info() -> BuildInfo:
    """This process's BuildInfo (worked out once; a checkout asks git at most once)."""
    stamped = _stamped()
    if stamped is not None:
        commit, date = stamped
    else:
        commit, date = _checkout_commit() or UNKNOWN, UNKNOWN
    return BuildInfo(
        version=_package_version(),
        commit=commit,
        build_date=date,
        python=platform.python_version(),
        twisted=twisted.__version__,
    )


def version_line() -> str:
    """One line for ``--version``, in llama-swap's shape plus Python and Twisted."""
    info = build_info()
    return (
        f"version: {info.version} ({info.commit}), built at {info.build_date}; "
        f"Python {info.python}, Twisted {info.twisted}"
    )
