"""Log history and live streams over real sockets; slow readers lose data with a marker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from llamaswap.config.model import Config, ModelConfig
from llamaswap.observe.logs import LogsResource

from .fakes import FakeLogBuffer
from .http import Served, read_body


class TrackedLog(FakeLogBuffer):
    """A FakeLogBuffer that reports when its last subscriber leaves."""

    def __init__(self) -> None:
        """Start with no subscribers."""
        super().__init__()
        self.emptied: Deferred[None] = Deferred()

    def subscribe(self, cb: Any) -> Any:
        """Subscribe, firing ``emptied`` on unsubscribe."""
        undo = super().subscribe(cb)

        def unsubscribe() -> None:
            undo()
            if not self._subs and not self.emptied.called:
                self.emptied.callback(None)

        return unsubscribe


def make_app() -> Any:
    """An App-shaped namespace with proxy, upstream, combined and one model log."""
    model_log = TrackedLog()
    model_log.write(b"model history\n")
    proxy = TrackedLog()
    proxy.write(b"[INFO] proxy history\n")
    config = Config(models={"org/m1": ModelConfig(id="org/m1")}, aliases={"fast": "org/m1"})
    return SimpleNamespace(
        config=config,
        upstreams={"org/m1": SimpleNamespace(logs=model_log)},
        proxy_log=proxy,
        upstream_log=TrackedLog(),
        extras={},
    )


@pytest.fixture
def served() -> Any:
    """The logs resource on a real port, with its App."""
    app = make_app()
    server = Served({b"logs": LogsResource(lambda: app)})
    server.app = app  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_logs_history_and_html_redirect(served: Any) -> Any:
    """GET /logs returns the combined history as text; a browser is sent to /ui/."""
    response = yield served.get("/logs")
    body = yield read_body(response).done
    assert response.code == 200 and body == b"[INFO] proxy history\n"
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    response = yield served.get("/logs", {"Accept": "text/html"})
    yield read_body(response).done
    assert response.code == 302 and response.headers.getRawHeaders(b"location") == [b"/ui/"]


@pytest_twisted.inlineCallbacks
def test_stream_sends_history_then_live_data_until_disconnect(served: Any) -> Any:
    """A model stream (by alias, '/' in the id) starts with history, then live writes."""
    response = yield served.get("/logs/stream/fast")
    assert response.headers.getRawHeaders(b"x-accel-buffering") == [b"no"]
    reader = read_body(response)
    yield reader.wait_for(b"model history\n")
    log = served.app.upstreams["org/m1"].logs
    log.write(b"live line\n")
    data = yield reader.wait_for(b"live line\n")
    assert data == b"model history\nlive line\n"
    reader.abort()
    yield log.emptied  # the server unsubscribed when the client left


@pytest_twisted.inlineCallbacks
def test_stream_without_history(served: Any) -> Any:
    """?no-history skips the history; only new writes arrive."""
    response = yield served.get("/logs/stream/org%2Fm1?no-history")
    reader = read_body(response)
    log = served.app.upstreams["org/m1"].logs
    assert log._subs  # subscribed before the response headers were sent
    log.write(b"only this\n")
    data = yield reader.wait_for(b"only this\n")
    assert data == b"only this\n"
    reader.abort()
    yield log.emptied


@pytest_twisted.inlineCallbacks
def test_proxy_and_upstream_streams_and_unknown_logger(served: Any) -> Any:
    """'proxy' and 'upstream' select those logs; an unknown name is a 400."""
    response = yield served.get("/logs/stream/proxy")
    reader = read_body(response)
    yield reader.wait_for(b"proxy history")
    reader.abort()
    response = yield served.get("/logs/stream/nope", {"Accept": "text/plain"})
    body = yield read_body(response).done
    assert response.code == 400
    assert b"invalid logger. Use 'proxy', 'upstream' or a model's ID" in body


@pytest_twisted.inlineCallbacks
def test_slow_reader_drops_with_marker_and_never_blocks_writer(served: Any) -> Any:
    """A reader that stops reading loses data past the bound; a marker says how much."""
    response = yield served.get("/logs/stream/upstream?no-history")
    reader = read_body(response)
    log = served.app.upstream_log
    reader.pause()
    line = b"x" * 1023 + b"\n"
    for _ in range(2048):  # 2 MiB written synchronously: the writer never waits
        log.write(line)
    log.write(b"END\n")
    reader.resume()
    yield reader.wait_for(" bytes dropped —\n".encode())
    log.write(b"AFTER\n")
    data = yield reader.wait_for(b"AFTER\n")
    dropped = int(data.split("\n— ".encode())[1].split(b" ")[0])
    received = data.count(line) * len(line)
    assert received + dropped == 2048 * 1024 + 4 and b"END" not in data
    assert received < 1024 * 1024
    reader.abort()
