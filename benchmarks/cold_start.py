"""Cold-start overhead of llamaswap's process manager (not a test).

For each run it starts the test responder with ``--start-delay`` through
``Upstream.start()`` and measures:

* detection lag: when ``start()`` fired minus when the responder itself became
  healthy (the responder prints ``healthy at <epoch>``; both clocks are the
  machine's wall clock);
* launcher cost: time from spawn to the command's first instruction through the
  launcher, minus the same without it (a bare ``reactor.spawnProcess``).

Overhead = detection lag + launcher cost, the time a swap costs beyond the
upstream's own start time. Target: <= 50 ms median.

Then whole swaps through the Router (two models, one at a time: each request
stops the other and starts its own; the model is a stdlib-only HTTP server, ``TINY``),
against that server's own start (spawned directly:
spawn to its ``healthy at``) and own stop (SIGTERM to exit, spawned directly), taken
alternately so both see the same load:
swap overhead = median swap - median own start - median own stop. Target: <= 20 ms.

Usage: PYTHONPATH=. python benchmarks/cold_start.py [--runs 15] [--delays 0,0.3,1]
       [--swap-delay 0.3]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import statistics
import sys
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater, react

from llamaswap.config.model import ModelConfig
from llamaswap.process.upstream import Upstream

PY = sys.executable
# A stdlib-only upstream for the swap figure (a Python that imports Twisted takes a second
# to start on a busy machine, and varies by more than the overhead being measured): it
# listens, answers /health 503 until DELAY has passed, prints ``healthy at <epoch>`` then,
# answers 200 afterwards, and exits on SIGTERM.
TINY = """
import select, socket, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
ready = time.time() + delay
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(64)
told = False
while True:
    wait = max(0.0, ready - time.time()) if not told else None
    if select.select([s], [], [], wait)[0]:
        c, _ = s.accept(); c.recv(65536)
        ok = time.time() >= ready
        c.sendall(b"HTTP/1.1 %s\\r\\ncontent-length: 0\\r\\nconnection: close\\r\\n\\r\\n"
                  % (b"200 OK" if ok else b"503 Loading"))
        c.close()
    if not told and time.time() >= ready:
        told = True
        print("healthy at %f" % ready, flush=True)
"""
STAMP = f"{PY} -c 'import time; print(repr(time.time()), flush=True)'"


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def detection_lag(delay: float) -> float:
    """Seconds between the responder being healthy and start() firing."""
    port = free_port()
    model = ModelConfig(
        id="bench", proxy=f"http://127.0.0.1:{port}",
        cmd=f"{PY} -m llamaswap.testing.responder --port {port} --start-delay {delay}",
    )
    up = Upstream(model, reactor=reactor)
    await up.start()
    ready = reactor.seconds()
    while b"healthy at" not in up.logs.history():
        await deferLater(reactor, 0.005, lambda: None)
    match = re.search(rb"healthy at ([0-9.]+)", up.logs.history())
    assert match is not None
    await up.stop(5)
    return ready - float(match.group(1))


class _Stamp(ProcessProtocol):
    """Fires with the first line the child prints."""

    def __init__(self) -> None:
        self.line: Deferred[bytes] = Deferred()
        self.buf = b""

    def outReceived(self, data: bytes) -> None:
        """Collect the stamp."""
        self.buf += data
        if b"\n" in self.buf and not self.line.called:
            self.line.callback(self.buf.split(b"\n")[0])


async def exec_delay(through_launcher: bool) -> float:
    """Seconds from asking for a spawn to the child's first Python statement."""
    if through_launcher:
        up = Upstream(ModelConfig(id="stamp", cmd=STAMP, check_endpoint="none"), reactor=reactor)
        asked = reactor.seconds()
        await up.start()
        while b"\n" not in up.logs.history():
            await deferLater(reactor, 0.002, lambda: None)
        stamp = float(up.logs.history().split(b"\n")[0])
        await up.stop(5)
        return stamp - asked
    proto = _Stamp()
    asked = reactor.seconds()
    args = [PY, "-c", "import time; print(repr(time.time()), flush=True)"]
    reactor.spawnProcess(proto, PY, args, env=dict(os.environ))  # type: ignore[attr-defined]
    return float(await proto.line) - asked


class _Responder(ProcessProtocol):
    """A responder spawned directly: fires ``healthy`` with its stamp, ``ended`` at exit."""

    def __init__(self) -> None:
        self.healthy: Deferred[float] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.buf = b""

    def outReceived(self, data: bytes) -> None:
        """Look for the ``healthy at`` line."""
        self.buf += data
        match = re.search(rb"healthy at ([0-9.]+)", self.buf)
        if match and not self.healthy.called:
            self.healthy.callback(float(match.group(1)))

    def processEnded(self, reason: Any) -> None:
        """The responder exited."""
        self.ended.callback(None)


async def own_start_stop(delay: float) -> tuple[float, float]:
    """The responder's own start (spawn to healthy) and stop (SIGTERM to exit), no llamaswap."""
    proto = _Responder()
    args = [PY, "-I", "-S", "-c", TINY, str(free_port()), str(delay)]
    asked = reactor.seconds()
    reactor.spawnProcess(proto, PY, args, env=dict(os.environ))  # type: ignore[attr-defined]
    start = await proto.healthy - asked
    await deferLater(reactor, 0.05, lambda: None)
    asked = reactor.seconds()
    proto.transport.signalProcess("TERM")  # type: ignore[attr-defined]
    await proto.ended
    return start, reactor.seconds() - asked


async def swaps_and_own(delay: float, runs: int) -> tuple[list[float], list[tuple[float, float]]]:
    """Swaps through the Router, each followed by one direct own start/stop (same load)."""
    from llamaswap.config import load_config_text
    from llamaswap.router.base import Router
    from llamaswap.testing.ports import free_port_block

    models = "".join(f"  {m}: {{cmd: \"x ${{PORT}}\"}}\n" for m in ("a", "b"))
    config = load_config_text(f"startPort: {free_port_block()}\nmodels:\n{models}")
    upstreams = {}
    for m, c in config.models.items():
        port = c.proxy.rsplit(":", 1)[1]
        cmd = shlex.join([PY, "-I", "-S", "-c", TINY, port, str(delay)])
        upstreams[m] = Upstream(attrs.evolve(c, cmd=cmd), reactor=reactor)
    router = Router.from_config(config, upstreams, reactor)
    (await router.request("a")).done()
    swaps, own = [], []
    for i in range(runs):
        asked = reactor.seconds()
        grant = await router.request("b" if i % 2 == 0 else "a")
        swaps.append(reactor.seconds() - asked)
        grant.done()
        own.append(await own_start_stop(delay))
    await router.shutdown(5)
    return swaps, own


async def main(_reactor: Any, runs: int, delays: list[float], swap_delay: float) -> None:
    """Run the measurements and print a table."""
    direct = [await exec_delay(False) for _ in range(runs)]
    launched = [await exec_delay(True) for _ in range(runs)]
    launcher_cost = statistics.median(launched) - statistics.median(direct)
    print(f"exec delay direct   median {statistics.median(direct) * 1000:7.1f} ms")
    print(f"exec delay launcher median {statistics.median(launched) * 1000:7.1f} ms")
    print(f"launcher cost              {launcher_cost * 1000:7.1f} ms")
    for delay in delays:
        lags = [await detection_lag(delay) for _ in range(runs)]
        total = [lag + launcher_cost for lag in lags]
        print(
            f"start-delay {delay:4.1f}s: detection lag median {statistics.median(lags) * 1000:6.1f}"
            f" ms p90 {pct(lags, 0.9) * 1000:6.1f} ms | overhead median "
            f"{statistics.median(total) * 1000:6.1f} ms p90 {pct(total, 0.9) * 1000:6.1f} ms"
        )
    swaps, own = await swaps_and_own(swap_delay, runs)
    own_start = statistics.median(s for s, _ in own)
    own_stop = statistics.median(s for _, s in own)
    swap = statistics.median(swaps)
    print(f"swap (start-delay {swap_delay}s): own start median {own_start * 1000:6.1f} ms, "
          f"own stop median {own_stop * 1000:6.1f} ms, swap median {swap * 1000:6.1f} ms "
          f"(p90 {pct(swaps, 0.9) * 1000:6.1f} ms) | overhead "
          f"{(swap - own_start - own_stop) * 1000:6.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--delays", default="0,0.3,1")
    parser.add_argument("--swap-delay", type=float, default=0.3)
    opts = parser.parse_args()
    react(lambda r: Deferred.fromCoroutine(
        main(r, opts.runs, [float(d) for d in opts.delays.split(",")], opts.swap_delay)))
