"""The real service for hostile-client tests: start it, find its port, check nothing is held."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import provider

from llamaswap.config import load_config_text
from llamaswap.service import LlamaSwapService
from llamaswap.testing.ports import free_port_block
from llamaswap.testing.service import service_port

CONFIG = """
healthCheckTimeout: 15
startPort: {start_port}
models:
  alpha:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model alpha
  beta:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model beta
"""


class TroubleLog:
    """Collects every logged failure, traceback, critical event and 'Unhandled Error'."""

    def __init__(self) -> None:
        self.events: list[str] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            text = formatEvent(event)
            if (
                "log_failure" in event
                or event.get("isError")
                or str(event.get("log_level", "")).endswith("critical")
                or "Unhandled Error" in text
                or "Traceback" in text
            ):
                failure = event.get("log_failure")
                detail = failure.getTraceback() if failure is not None else ""
                self.events.append(f"{text} {detail}".strip())

        self.observer: Callable[[LogEvent], None] = observe


@asynccontextmanager
async def running_service(tmp_path: Path, config: str = CONFIG) -> AsyncIterator[LlamaSwapService]:
    """The whole service on a free port (``config`` with ``{start_port}`` and ``{py}`` filled
    in; by default two responder models), stopped afterwards."""
    text = config.format(start_port=free_port_block(), py=sys.executable)
    svc = LlamaSwapService(
        config_path=str(tmp_path / "unused.yaml"),
        config=load_config_text(text),
        listen="tcp:0:interface=127.0.0.1",
        watch_config=False,
        reactor=reactor,
    )
    svc.startService()
    try:
        yield svc
    finally:
        assert svc.port_service is not None
        site = svc.port_service.factory
        await svc.stopService()
        await site.pools.close_all()


def port_of(svc: LlamaSwapService) -> int:
    """The TCP port the service listens on."""
    return service_port(svc)


def held(svc: LlamaSwapService) -> dict[str, Any]:
    """What is still held: grants in flight, queued requests, leaked grants, in-flight rows."""
    app = svc.get_app()
    snap = app.router.snapshot()
    observability = app.extras.get("observability")
    rows = observability.inflight.snapshot()["requests"] if observability is not None else []
    return {
        "in_flight": snap["in_flight"],
        "queue": snap["queue"],
        "leaked": app.router.leaked_grants,
        "rows": [(r["model"], r["req_path"]) for r in rows],
    }


async def wait_until_nothing_held(svc: LlamaSwapService, within: float = 5.0) -> None:
    """Wait (a bounded poll) until no grant, queued request or in-flight row is left.

    The server learns of a closed client connection on a later reactor turn than the
    test closes it; nothing else tells the test when that happened.
    """
    nothing = {"in_flight": {}, "queue": [], "leaked": 0, "rows": []}
    state = held(svc)
    deadline = reactor.seconds() + within
    while state != nothing and reactor.seconds() < deadline:
        await deferLater(reactor, 0.05, lambda: None)
        state = held(svc)
    assert state == nothing


async def chat_works(svc: LlamaSwapService, model: str = "alpha") -> None:
    """A plain chat request on a new connection is answered, with 200."""
    url = f"http://127.0.0.1:{port_of(svc)}/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = await treq.post(url, json=body)
    payload = json.loads(await treq.text_content(response))
    assert response.code == 200, payload
    assert payload["model"] == model


def start_watching_log() -> TroubleLog:
    """A TroubleLog listening to the global log from now on."""
    trouble = TroubleLog()
    globalLogPublisher.addObserver(trouble.observer)
    return trouble


def stop_watching_log(trouble: TroubleLog) -> None:
    """Stop listening."""
    globalLogPublisher.removeObserver(trouble.observer)
