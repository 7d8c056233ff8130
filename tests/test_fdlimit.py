"""The open-file limit is raised from soft to hard at start, capped where asked."""

from __future__ import annotations

import resource
import subprocess
import sys
from typing import Any

import pytest

from llamaswap import fdlimit
from llamaswap.fdlimit import OpenFileLimit, raise_open_file_limit


class FakeResource:
    """A ``resource`` module with one adjustable RLIMIT_NOFILE."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE
    RLIM_INFINITY = resource.RLIM_INFINITY

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        """Start at (soft, hard); ``refuse`` makes setrlimit fail as an unprivileged raise does."""
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which: int) -> tuple[int, int]:
        """The current limits."""
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        """Set, or refuse."""
        if self.refuse:
            raise ValueError("not allowed to raise maximum limit")
        self.limits = limits


def test_soft_is_raised_to_hard(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,024 of 524,288 becomes 524,288, and the line says it was raised."""
    fake = FakeResource(1024, 524288)
    monkeypatch.setattr(fdlimit, "resource", fake)
    limit = raise_open_file_limit()
    assert limit == OpenFileLimit(before=1024, soft=524288, hard=524288)
    assert limit is not None
    assert limit.describe() == "open-file limit: 524288 (raised from 1024)"


def test_cap_and_unlimited_hard(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A select() reactor's cap is respected; an unlimited hard limit means the kernel's cap."""
    fake = FakeResource(256, resource.RLIM_INFINITY)
    monkeypatch.setattr(fdlimit, "resource", fake)
    assert raise_open_file_limit(cap=1024) == OpenFileLimit(before=256, soft=1024, hard=-1)
    nr_open = tmp_path / "nr_open"
    nr_open.write_text("65536\n")
    monkeypatch.setattr(fdlimit, "NR_OPEN", str(nr_open))
    assert raise_open_file_limit() == OpenFileLimit(before=1024, soft=65536, hard=-1)


def test_refusal_or_nothing_to_do_keeps_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """When setrlimit refuses, or soft already equals hard, the figure is reported unchanged."""
    monkeypatch.setattr(fdlimit, "resource", FakeResource(1024, 4096, refuse=True))
    limit = raise_open_file_limit()
    assert limit == OpenFileLimit(before=1024, soft=1024, hard=4096)
    assert limit is not None
    assert limit.describe() == "open-file limit: 1024 (the hard limit is 4096)"
    monkeypatch.setattr(fdlimit, "resource", FakeResource(4096, 4096))
    unchanged = raise_open_file_limit()
    assert unchanged is not None
    assert unchanged.describe() == "open-file limit: 4096 (the hard limit)"


def test_real_process_limit_is_raised() -> None:
    """In a fresh process started with a low soft limit, the real rlimit goes up to the hard."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    code = (
        "import resource; from llamaswap.fdlimit import raise_open_file_limit as r; "
        "l = r(); print(l.before, l.soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, hard))

    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) == 32
    assert int(out[1]) == int(out[2]) > 32
    if hard != resource.RLIM_INFINITY:
        assert int(out[1]) == hard
