"""The in-process benchmark still runs against today's code (a smoke test, no figures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_hotpath_bench_runs_both_targets() -> None:
    """``hotpath_bench.py`` drives the Site and the service and prints their rows."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "hotpath_bench.py"), "--requests", "50"],
        capture_output=True, text=True, timeout=120, cwd=BENCHMARKS,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines()
            if line.startswith("| ") and "µs" not in line and "---" not in line]
    assert rows == ["site", "service"]
