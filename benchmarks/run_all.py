"""Run every benchmark in this directory (tox -e bench); each prints its own table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["proxy_bench.py"]


def main() -> int:
    """Run each benchmark with the arguments given to this script; fail if one fails."""
    status = 0
    for name in BENCHMARKS:
        print(f"## {name}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / name), *sys.argv[1:]], check=False)
        status = status or result.returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
