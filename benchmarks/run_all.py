"""Run every benchmark in this directory with its defaults (tox -e bench); each prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["proxy_bench.py", "hotpath_bench.py", "cold_start.py", "cost_growth.py"]


def main() -> int:
    """Run each benchmark (or only those named on the command line); fail if one fails."""
    names = sys.argv[1:] or BENCHMARKS
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    status = 0
    for name in names:
        print(f"## {name}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / name)], env=env, check=False)
        status = status or result.returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
