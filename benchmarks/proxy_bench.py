"""Proxy overhead benchmark: llamaswap vs a direct connection to the same upstream.

Targets, each against its own direct connection in the same run: ``site`` is the HTTP path
alone (the Site with a trivial router and no observers), ``service`` is the whole service
as users run it (``llamaswap --config``: scheduler, metrics, activity rows, access log), its
model a fastup it starts itself; ``go``, a reference: Go's ``httputil.ReverseProxy``
(what llama-swap proxies with) and nothing else, pinned the same way, which shows what one
proxy hop costs on the machine at hand; and ``relay``, another: a bare Twisted TCP relay
(``benchmarks/relay_proxy.py``), the floor of a Python/Twisted hop.

Needs the Go helpers (``bash /work/shared/tools/build.sh`` or ``LLAMASWAP_TOOLS=<dir>``):
``fastup`` (a fast fake OpenAI upstream) and ``loadgen``. Figures: added latency p50/p99
at 1 client (median of alternating rounds), first with nothing pinned (as users run it),
then pinned as below (the worst case: every hop wakes the other core); added latency at
16 clients, requests/s, streamed chunks/s with 100 streams, and the proxy's RSS with 1000
open streams, with the proxy pinned to one core (``taskset``) and loadgen and fastup
sharing the other core(s).
Usage:

    python benchmarks/proxy_bench.py [--seconds 5] [--only site|service|go|relay] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOOLS = Path(os.environ.get("LLAMASWAP_TOOLS", "/tmp/llamaswap-tools"))
TARGETS = ("site", "service", "go", "relay")


# -- the proxy process ----------------------------------------------------------------------


def bench_app(upstream: str) -> Any:
    """An App with one always-ready model proxied to ``upstream`` and a router that admits
    every request at once (no process management, no observers)."""
    sys.path.insert(0, str(ROOT))
    from twisted.internet.defer import succeed

    from llamaswap.config.model import Config, ModelConfig
    from llamaswap.process.state import ProcessState
    from llamaswap.web.app import App

    model = ModelConfig(id="m1", proxy=upstream)

    class Ready:
        """An always-ready upstream (no process management in this benchmark)."""

        model_id = "m1"
        state = ProcessState.READY
        proxy_url = upstream

        def __init__(self) -> None:
            self.model = model

        def add_state_listener(self, cb: Any) -> Any:
            return lambda: None

    class Grant:
        """A grant with nothing to release."""

        model_id = "m1"
        metadata: dict[str, Any] = {}

        def __init__(self, up: Ready) -> None:
            self.upstream = up

        def done(self) -> None:
            pass

    class DirectRouter:
        """Admits everything at once (the scheduler's cost is measured elsewhere)."""

        def __init__(self, up: Ready) -> None:
            self.up = up

        def request(self, model_id: str, on_position: Any = None) -> Any:
            return succeed(Grant(self.up))

        def hold_for(self, grant: Grant, request_over: Any) -> None:
            """Nothing to watch: these grants release nothing."""

    up = Ready()
    return App(
        config=Config(models={"m1": model}),
        router=DirectRouter(up),  # type: ignore[arg-type]
        upstreams={"m1": up},  # type: ignore[dict-item]
        proxy_log=None,  # type: ignore[arg-type]
        upstream_log=None,  # type: ignore[arg-type]
    )


def serve(upstream: str) -> None:
    """Run the Site for one model proxied to ``upstream``; print the port, serve forever."""
    app = bench_app(upstream)
    from twisted.internet import reactor

    from llamaswap.gcpolicy import settle_heap
    from llamaswap.web.site import build_site

    site = build_site(lambda: app, reactor)
    site.noisy = False
    settle_heap()  # as makeService does for the real service
    port = reactor.listenTCP(0, site, backlog=4096, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(port.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


# -- the driver -----------------------------------------------------------------------------


def free_port() -> int:
    """A port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cores: str) -> list[str]:
    """A taskset prefix when taskset exists."""
    return ["taskset", "-c", cores] if shutil.which("taskset") else []


def wait_port(port: int, timeout: float = 10) -> None:
    """Block until something listens on ``port`` (benchmark driver only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def loadgen(url: str, *args: str) -> dict[str, Any]:
    """Run loadgen once and return its JSON line."""
    cmd = [*pin(LOAD_CORES), str(TOOLS / "loadgen"), "-url", url + "/v1/chat/completions", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def set_cores(pid: int, cores: set[int]) -> None:
    """Move every thread of ``pid`` onto ``cores``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cores)
        except OSError:
            pass  # the thread ended meanwhile


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


PROXY_CORES = "0"
LOAD_CORES = "1-1023"
C1_ROUNDS = 3
SCENARIOS = [
    ("json_c16", ["-mode", "json", "-c", "16"]),
    ("stream_c100", ["-mode", "stream", "-c", "100", "-chunks", "50"]),
]


def start_site(upstream: str) -> tuple[subprocess.Popen[str], str]:
    """The benchmark Site (trivial router, no observers) in its own process; its base URL."""
    proc = subprocess.Popen(
        [*pin(PROXY_CORES), sys.executable, __file__, "serve", upstream],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


# fifo: the default scheduler (serial) runs one request at a time by design, which would
# measure the upstream's latency, not llamaswap's capacity.
SERVICE_CONFIG = """\
logLevel: info
routing:
  scheduler:
    use: fifo
models:
  m1:
    cmd: {cmd}
    proxy: http://127.0.0.1:{port}
    concurrencyLimit: 1100  # the default (10, as in llama-swap) would refuse most clients
"""


def load_cores() -> set[int]:
    """The cores ``LOAD_CORES`` names (``a-b`` ranges and commas)."""
    cores: set[int] = set()
    for part in LOAD_CORES.split(","):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores & set(range(os.cpu_count() or 1))


def start_service(workdir: Path) -> tuple[subprocess.Popen[str], str, str]:
    """``llamaswap --config`` as users run it, its model being a fastup it starts itself.

    Returns the process, llamaswap's base URL and the upstream's (direct) base URL. The
    model is loaded by one request through llamaswap before this returns.
    """
    up_port, port = free_port(), free_port()
    fastup = [*pin(LOAD_CORES), str(TOOLS / "fastup"), "--port", str(up_port), "--model", "m1"]
    config = workdir / "bench.yaml"
    config.write_text(SERVICE_CONFIG.format(cmd=" ".join(fastup), port=up_port))
    listen = f"tcp:{port}:interface=127.0.0.1:backlog=4096"
    proc = subprocess.Popen(
        [*pin(PROXY_CORES), sys.executable, "-c", "from llamaswap.tap import main; main()",
         "--config", str(config), "--listen", listen],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=workdir,
    )
    via = f"http://127.0.0.1:{port}"
    wait_port(port)
    loadgen(via, "-mode", "json", "-c", "1", "-n", "1", "-warm", "0")  # loads the model
    return proc, via, f"http://127.0.0.1:{up_port}"


def median(values: list[float]) -> float:
    """The middle value (mean of the two middle ones for an even count)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def one_client(direct: str, via: str, seconds: float) -> dict[str, Any]:
    """Latency with one client: rounds alternate direct and proxied runs, so a burst of
    noise from other processes lands on both; the medians of the rounds are reported."""
    rounds: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
    per_round = f"{max(seconds / C1_ROUNDS, 1.0)}s"
    for _ in range(C1_ROUNDS):
        rounds["direct"].append(loadgen(direct, "-mode", "json", "-c", "1", "-d", per_round))
        rounds["proxy"].append(loadgen(via, "-mode", "json", "-c", "1", "-d", per_round))
    return {
        side: {
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
            "rounds": runs,
        }
        for side, runs in rounds.items()
    }


def measure(
    direct: str, via: str, pid: int, seconds: float, upstream_pids: list[int]
) -> dict[str, Any]:
    """Every scenario against ``direct`` and through ``via`` (the proxy being ``pid``)."""
    global LOAD_CORES
    results: dict[str, Any] = {}
    # One client, as users run it: no process pinned, the kernel places all three (the
    # direct runs get the same freedom).
    everywhere = set(range(os.cpu_count() or 1))
    pinned_load = LOAD_CORES
    for each in (pid, *upstream_pids):
        set_cores(each, everywhere)
    LOAD_CORES = ",".join(map(str, sorted(everywhere)))
    try:
        results["json_c1"] = one_client(direct, via, seconds)
    finally:
        LOAD_CORES = pinned_load
        set_cores(pid, {int(PROXY_CORES)})
        for each in upstream_pids:
            set_cores(each, load_cores())
    # Pinned, the worst case for one client: every hop wakes the other core.
    results["json_c1_pinned"] = one_client(direct, via, seconds)
    for name, args in SCENARIOS:
        direct_run = loadgen(direct, *args, "-d", f"{seconds}s")
        before = cpu_seconds(pid)
        proxy_run = loadgen(via, *args, "-d", f"{seconds}s")
        used = cpu_seconds(pid) - before
        # Work per CPU second: robust when other processes share the machine.
        units = proxy_run.get("chunks") or proxy_run["n"]
        proxy_run["proxy_cpu_s"] = used
        proxy_run["per_cpu_second"] = units / used if used else 0.0
        results[name] = {"direct": direct_run, "proxy": proxy_run}
    idle = rss_kb(pid)
    peak = [idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    open_streams = loadgen(
        via, "-mode", "stream", "-c", "1000", "-chunks", "40", "-interval-ms", "100",
        "-warm", "0", "-d", str(max(seconds, 6)) + "s",
    )
    stop.set()
    sampler.join()
    results["streams_1000"] = {
        "proxy": open_streams,
        "rss_idle_mb": idle / 1024,
        "rss_peak_mb": peak[0] / 1024,
    }
    return results


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def go_proxy() -> Path | None:
    """The reference Go reverse proxy (``benchmarks/goproxy``), built with the tools' Go.

    None (with a note on stderr) when it is not built and no Go toolchain is at hand.
    """
    binary = TOOLS / "goproxy"
    if binary.exists():
        return binary
    go = next(iter(sorted(TOOLS.glob("venv/lib/python3*/site-packages/go/bin/go"))), None)
    if go is None:
        print("no Go toolchain under LLAMASWAP_TOOLS: skipping the Go reference", file=sys.stderr)
        return None
    env = dict(os.environ, GOCACHE=str(TOOLS / "gocache"), GOPATH=str(TOOLS / "gopath"),
               GOPROXY="off", GOTOOLCHAIN="local", GOFLAGS="-mod=mod")
    subprocess.run([str(go), "build", "-o", str(binary), "."], cwd=HERE / "goproxy", env=env,
                   check=True)
    return binary


def start_relay(upstream: str) -> tuple[subprocess.Popen[str], str]:
    """The bare Twisted TCP relay in front of ``upstream``, pinned like llamaswap; its URL."""
    proc = subprocess.Popen(
        [*pin(PROXY_CORES), sys.executable, str(HERE / "relay_proxy.py"), upstream],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


def start_go(binary: Path, upstream: str) -> tuple[subprocess.Popen[str], str]:
    """The Go reverse proxy in front of ``upstream``, pinned like llamaswap; its base URL."""
    proc = subprocess.Popen(
        [*pin(PROXY_CORES), str(binary), "-upstream", upstream],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


def run(seconds: float, targets: Sequence[str] = TARGETS) -> dict[str, Any]:
    """Every scenario, direct and through each target, in one run."""
    global LOAD_CORES
    ncpu = os.cpu_count() or 2
    LOAD_CORES = f"1-{ncpu - 1}" if ncpu > 1 else "0"
    for tool in ("fastup", "loadgen"):
        if not (TOOLS / tool).exists():
            raise SystemExit(f"{TOOLS / tool} missing: run bash /work/shared/tools/build.sh")
    results: dict[str, Any] = {"cores": ncpu, "seconds": seconds}
    go = go_proxy() if "go" in targets else None
    for name in ("site", "go", "relay"):
        if name not in targets or (name == "go" and go is None):
            continue
        up_port = free_port()
        fastup = subprocess.Popen(
            [*pin(LOAD_CORES), str(TOOLS / "fastup"), "--port", str(up_port), "--model", "m1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proxy = None
        try:
            wait_port(up_port)
            direct = f"http://127.0.0.1:{up_port}"
            if name == "site":
                proxy, via = start_site(direct)
            elif name == "go":
                proxy, via = start_go(go, direct)  # type: ignore[arg-type]
            else:
                proxy, via = start_relay(direct)
            results[name] = measure(direct, via, proxy.pid, seconds, [fastup.pid])
        finally:
            if proxy is not None:
                stop_process(proxy)
            stop_process(fastup)
    if "service" in targets:
        with tempfile.TemporaryDirectory() as tmp:
            service, via, direct = start_service(Path(tmp))
            try:
                # The service's model (a fastup) is its child process.
                results["service"] = measure(
                    direct, via, service.pid, seconds, children(service.pid)
                )
            finally:
                stop_process(service)
    return results


TITLES = {
    "site": "HTTP path only (the Site with a trivial router, no observers)",
    "service": "the whole service (`llamaswap --config`: scheduler, metrics, activity, logs)",
    "go": "reference: Go's httputil.ReverseProxy alone (benchmarks/goproxy), not llamaswap",
    "relay": "reference: a bare Twisted TCP relay (benchmarks/relay_proxy.py), not llamaswap",
}


def summary(results: dict[str, Any]) -> str:
    """A Markdown table per target, with ratios vs direct."""
    return "\n\n".join(
        f"### {title}\n\n{_table(results[name])}"
        for name, title in TITLES.items()
        if name in results
    )


def _table(r: dict[str, Any]) -> str:
    c1, c16, st = r["json_c1"], r["json_c16"], r["stream_c100"]
    c1p = r["json_c1_pinned"]
    s1k = r["streams_1000"]
    rows = [
        ("added latency p50, 1 client (ms)",
         c1["proxy"]["p50_ms"] - c1["direct"]["p50_ms"], c1),
        ("added latency p99, 1 client (ms)",
         c1["proxy"]["p99_ms"] - c1["direct"]["p99_ms"], c1),
        ("added latency p50, 1 client, pinned (ms)",
         c1p["proxy"]["p50_ms"] - c1p["direct"]["p50_ms"], c1p),
        ("added latency p50, 16 clients (ms)",
         c16["proxy"]["p50_ms"] - c16["direct"]["p50_ms"], c16),
        ("added latency p99, 16 clients (ms)",
         c16["proxy"]["p99_ms"] - c16["direct"]["p99_ms"], c16),
    ]
    lines = [
        "| figure | direct | via the proxy | ratio |",
        "|---|---|---|---|",
    ]
    for label, added, block in rows:
        key = "p50_ms" if "p50" in label else "p99_ms"
        lines.append(
            f"| {label}: {added:+.3f} | {block['direct'][key]:.3f} | {block['proxy'][key]:.3f} "
            f"| {block['proxy'][key] / max(block['direct'][key], 1e-9):.2f}x |"
        )
    for label, block, key in [
        ("requests/s, 16 clients (proxy on one core)", c16, "rps"),
        ("chunks/s, 100 streams", st, "chunks_per_s"),
    ]:
        lines.append(
            f"| {label} | {block['direct'][key]:.0f} | {block['proxy'][key]:.0f} "
            f"| {block['proxy'][key] / max(block['direct'][key], 1e-9):.2f}x |"
        )
    lines.append(
        f"| requests per proxy CPU-second, 16 clients | - | "
        f"{c16['proxy']['per_cpu_second']:.0f} | - |"
    )
    lines.append(
        f"| chunks per proxy CPU-second, 100 streams | - | "
        f"{st['proxy']['per_cpu_second']:.0f} | - |"
    )
    errors = sum(b["proxy"]["errors"] for b in (c1, c1p, c16, st)) + s1k["proxy"]["errors"]
    lines.append(
        f"| RSS with 1000 open streams (MB) | - | {s1k['rss_peak_mb']:.1f} "
        f"(idle {s1k['rss_idle_mb']:.1f}) | - |"
    )
    lines.append(f"| errors through the proxy | - | {errors} | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``serve URL``, be the proxy process)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--only", choices=TARGETS, action="append",
                        help="measure this target (repeatable); default: all")
    args = parser.parse_args(argv)
    results = run(args.seconds, tuple(args.only or TARGETS))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
