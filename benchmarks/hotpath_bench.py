"""The proxy's own time per request, in one process, with no sockets and no other process.

``proxy_bench.py`` measures latency through real sockets, where the machine's scheduling
(waking an idle core costs more than llamaswap's Python on a VM) moves figures by 10-20 %
between runs. This benchmark takes the machine out: one small chat request is fed into the
real Site (``LlamaSwapChannel``, routing, model resolution, the lean upstream client) over
in-memory transports, the upstream's canned answer is fed back, and the Python time is
timed per request, split into:

* **critical path**: from the request's bytes arriving to its bytes being handed to the
  upstream connection, plus from the answer's bytes arriving to them being handed to the
  client connection: what a request waits for;
* **total**: everything the proxy does for the request, bookkeeping included (the
  inverse of requests per CPU-second, without the kernel's share).

Targets: ``site`` (the Site with a router that admits at once and no observers) and
``service`` (the service's App: the ``fifo`` scheduler's router, metrics, activity,
captures, the access log through the proxy log; the activity rows are stored inline,
where the service uses a worker thread). Figures are the median and the minimum over
batches; compare runs on the same machine. Usage:

    python benchmarks/hotpath_bench.py [--requests 20000] [--only site|service]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"User-Agent: Go-http-client/1.1\r\nContent-Length: 58\r\n"
    b"Content-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n"
    b'{"model":"m1","messages":[{"role":"user","content":"hi"}]}'
)
ANSWER_BODY = (
    b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":'
    b'"assistant","content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,'
    b'"total_tokens":4}}'
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 GMT\r\nContent-Length: %d\r\n\r\n" % len(ANSWER_BODY)
    + ANSWER_BODY
)


def service_app(reactor: Any) -> Any:
    """The App ``llamaswap --config`` builds (observers and proxy log on), its model ready."""
    from proxy_bench import SERVICE_CONFIG
    from twisted.internet.defer import maybeDeferred

    from llamaswap.config.loader import load_config_text
    from llamaswap.observe.logsetup import ProxyLogging
    from llamaswap.process.logs import LogBuffer
    from llamaswap.process.state import ProcessState
    from llamaswap.service import build_app

    # The benchmark service's configuration; its model is never started here.
    config = load_config_text(SERVICE_CONFIG.format(cmd="/bin/true", port=9))
    logs = LogBuffer(), LogBuffer(), LogBuffer()
    ProxyLogging(
        proxy_log=logs[0], upstream_log=logs[1], combined=logs[2], level=config.log_level,
        time_format=config.log_time_format, to_stdout="none", write=lambda data: None,
    )
    app = build_app(config, reactor, logs[0], logs[1], logs[2])
    observability = app.extras["observability"]
    # No reactor runs here, so neither the batch timer nor the worker thread would ever
    # store the activity rows (and the finished requests they hold would pile up): each
    # batch of 256 rows is stored inline instead, and counts in the total.
    observability.store._run = lambda work: maybeDeferred(work)
    observability.start()
    app.upstreams["m1"].state = ProcessState.READY
    return app


class Bench:
    """One client connection and one upstream connection, both in memory."""

    def __init__(self, target: str) -> None:
        from twisted.internet import reactor
        from twisted.internet.address import IPv4Address
        from twisted.internet.defer import succeed
        from twisted.internet.testing import StringTransport

        import llamaswap.web.fastclient as fastclient
        import llamaswap.web.fastproxy as fastproxy
        import llamaswap.web.site as site_module
        from llamaswap.gcpolicy import settle_heap
        from llamaswap.web.site import build_site

        if target == "site":
            from proxy_bench import bench_app

            app = bench_app("http://127.0.0.1:9")
        else:
            app = service_app(reactor)
        self.upstream = StringTransport()
        self.conn = fastclient.UpstreamConnection(None)  # type: ignore[arg-type]
        self.conn.makeConnection(self.upstream)
        conn = self.conn

        def take_idle(pool: Any) -> Any:
            conn.pool = pool
            return conn

        fastclient.FastPool.take_idle = take_idle  # type: ignore[method-assign]
        fastclient.FastPool.acquire = lambda pool: succeed(take_idle(pool))  # type: ignore
        fastclient.FastPool.release = lambda pool, c: None  # type: ignore[method-assign]
        # Where bytes leave: note when the request and the whole answer are handed over.
        self.marks: dict[str, int] = {}
        for module in (fastproxy, site_module):
            module.flush_now = self._handed_over  # type: ignore[attr-defined]

        def send_now(transport: Any, data: bytes) -> None:
            transport.write(data)
            self._handed_over(transport)

        fastclient.send_now = send_now  # type: ignore[attr-defined]
        peer = IPv4Address("TCP", "127.0.0.1", 5555)
        self.client = StringTransport(peerAddress=peer)
        self.reactor = reactor
        self.proto = build_site(lambda: app, reactor).buildProtocol(peer)
        assert self.proto is not None
        self.proto.makeConnection(self.client)
        self.answer_size = 1 << 60
        self.one()
        self.answer_size = self.client.io.tell()
        self.check()
        settle_heap()

    def _handed_over(self, transport: Any) -> None:
        if transport is self.upstream:
            self.marks.setdefault("sent", time.perf_counter_ns())
        elif transport is self.client and self.client.io.tell() >= self.answer_size:
            self.marks.setdefault("answered", time.perf_counter_ns())

    def one(self) -> tuple[int, int]:
        """One request and its answer: (critical path ns, total ns)."""
        self.marks.clear()
        t0 = time.perf_counter_ns()
        self.proto.dataReceived(REQUEST)
        t1 = time.perf_counter_ns()
        self.conn.dataReceived(ANSWER)
        # The reactor's next turn: what the request left for it (the chores' turn, the
        # router's listeners, due timers) runs, as in the service between requests.
        self.reactor.runUntilCurrent()
        t2 = time.perf_counter_ns()
        critical = self.marks.get("sent", t1) - t0 + self.marks.get("answered", t2) - t1
        self.client.clear()
        self.upstream.clear()
        return critical, t2 - t0

    def check(self) -> None:
        """The request reached the upstream and the whole answer reached the client."""
        self.marks.clear()
        self.proto.dataReceived(REQUEST)
        sent = self.upstream.value()
        self.conn.dataReceived(ANSWER)
        answer = self.client.value()
        if not (sent.startswith(b"POST /v1/chat/completions") and b" 200 OK" in answer
                and answer.endswith(ANSWER_BODY) and "sent" in self.marks
                and "answered" in self.marks):
            raise SystemExit(f"the request did not go through: {answer[:300]!r}")
        self.client.clear()
        self.upstream.clear()


def measure(target: str, requests: int, batch: int = 500) -> dict[str, float]:
    """Median and minimum over batches of the mean µs per request."""
    bench = Bench(target)
    for _ in range(2000):
        bench.one()
    critical: list[float] = []
    total: list[float] = []
    for _ in range(max(requests // batch, 1)):
        c = t = 0
        for _ in range(batch):
            one_c, one_t = bench.one()
            c += one_c
            t += one_t
        critical.append(c / batch / 1000)
        total.append(t / batch / 1000)
    critical.sort()
    total.sort()
    gc.collect()
    return {
        "critical_median_us": critical[len(critical) // 2],
        "critical_min_us": critical[0],
        "total_median_us": total[len(total) // 2],
        "total_min_us": total[0],
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each target in its own process (the service patches the Site's modules)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--only", choices=("site", "service"))
    args = parser.parse_args(argv)
    if args.only:
        figures = measure(args.only, args.requests)
        print(
            f"| {args.only} | {figures['critical_median_us']:.1f} "
            f"(min {figures['critical_min_us']:.1f}) | {figures['total_median_us']:.1f} "
            f"(min {figures['total_min_us']:.1f}) |",
            flush=True,
        )
        return 0
    import subprocess

    print("| target | critical path, µs per request | total, µs per request |")
    print("|---|---|---|", flush=True)
    for target in ("site", "service"):
        subprocess.run(
            [sys.executable, __file__, "--only", target, "--requests", str(args.requests)],
            check=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
