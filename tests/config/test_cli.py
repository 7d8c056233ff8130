"""``python -m llamaswap.config``: the offline config checker."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from llamaswap.config.__main__ import main


@pytest.fixture(autouse=True)
def _plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the built-in plugins are installed."""
    import llamaswap.plugins as plugins

    monkeypatch.setattr(plugins, "scheduler_factories", lambda: {"serial": 1, "fifo": 2})
    monkeypatch.setattr(plugins, "swapper_factories", lambda: {"group": 1, "matrix": 2})


def test_good_config_prints_summary_and_warnings(tmp_path: Path) -> None:
    """A valid file exits 0 with its warnings and a one-line summary."""
    path = tmp_path / "c.yaml"
    path.write_text("modles: {}\nmodels:\n  m: {cmd: 's ${PORT}', aliases: [x]}\n")
    out = io.StringIO()
    assert main([str(path)], out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("warning: modles: unknown top-level key")
    assert lines[1] == "ok: 1 models, 1 aliases, 0 peers; router group, scheduler serial"


def test_bad_config_prints_each_problem(tmp_path: Path) -> None:
    """An invalid file exits 1 with one line per problem."""
    path = tmp_path / "c.yaml"
    path.write_text("globalTTL: -1\nlogToStdout: x\n")
    out = io.StringIO()
    assert main([str(path)], out) == 1
    assert out.getvalue().splitlines() == [
        "error: globalTTL: must be >= 0, got -1",
        "error: logToStdout: must be one of: proxy, upstream, both, none",
    ]


def test_usage() -> None:
    """No arguments prints the usage and exits 2."""
    out = io.StringIO()
    assert main([], out) == 2 and out.getvalue().startswith("usage:")
