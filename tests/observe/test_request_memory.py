"""A finished request is freed by reference counting, not left for the cyclic collector.

Every request the service handles builds a small graph (the twisted.web Request, the
ModelCall, the in-flight record, the upstream exchange). If those objects point at each
other after the request ends, only the cyclic collector frees them: memory waits, and the
collections it takes cost milliseconds in the middle of later requests.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from llamaswap.observe.hooks import RequestRecord
from llamaswap.service import LlamaSwapService
from llamaswap.testing.service import service_url
from llamaswap.web.dispatch import ModelCall
from llamaswap.web.fastproxy import _FastExchange
from llamaswap.web.proxy import ClientTracker
from llamaswap.web.site import LlamaSwapRequest

from .test_end_to_end import start_service

CONFIG = """
healthCheckTimeout: 15
startPort: {start_port}
routing:
  scheduler:
    use: fifo
models:
  alpha:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model alpha
"""

# The request path's own objects: none of them may be left in a reference cycle.
REQUEST_TYPES = (LlamaSwapRequest, ModelCall, RequestRecord, _FastExchange, ClientTracker)


@pytest_twisted.async_yield_fixture
async def service(tmp_path: Path) -> AsyncIterator[LlamaSwapService]:
    """A started service (observers on) with one responder model; stopped afterwards."""
    svc = start_service(tmp_path, CONFIG)
    yield svc
    await svc.stopService()


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """gc.garbage with DEBUG_SAVEALL: what the cyclic collector would have freed."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def rows_recorded(service: LlamaSwapService, count: int) -> Deferred[None]:
    """Fires once the recorder announced ``count`` more rows: the requests' last bookkeeping."""
    recorder = service.get_app().extras["observability"].recorder
    done: Deferred[None] = Deferred()
    seen: list[int] = []

    def added(row_id: int) -> None:
        seen.append(row_id)
        if len(seen) == count and not done.called:
            done.callback(None)

    recorder.listeners.append(added)
    return done.addBoth(lambda result: (recorder.listeners.remove(added), result)[1])


@pytest_twisted.ensureDeferred
async def test_finished_requests_leave_no_cycles(
    service: LlamaSwapService, saved_garbage: list[object]
) -> None:
    """JSON, streamed and failed chats: nothing of theirs is left for the cyclic collector."""
    base = service_url(service) + "/v1/chat/completions"
    messages = [{"role": "user", "content": "one two three"}]
    warm = await treq.post(base, json={"model": "alpha", "messages": messages})
    await treq.content(warm)  # loads the model; its swap is not what this test is about
    gc.collect()
    saved_garbage.clear()

    recorded = rows_recorded(service, 3)
    answers = [
        await treq.post(base, json={"model": "alpha", "messages": messages}),
        await treq.post(base, json={"model": "alpha", "messages": messages, "stream": True,
                                    "x_chunks": 4}),
        await treq.post(base, json={"model": "alpha", "messages": messages,
                                    "x_fail_status": 503}),
    ]
    bodies = [await treq.content(r) for r in answers]
    assert [r.code for r in answers] == [200, 200, 503], bodies
    assert bodies[1].count(b"data: ") >= 4
    await recorded
    # The last row is announced from inside its request's bookkeeping: let that unwind.
    await deferLater(reactor, 0, lambda: None)

    gc.collect()
    cyclic = sorted({type(o).__name__ for o in saved_garbage if isinstance(o, REQUEST_TYPES)})
    assert cyclic == []
