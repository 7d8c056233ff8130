"""Test doubles for the request path: an in-process fake upstream served on a real port."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import treq
from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IPushProducer
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from llamaswap.config.model import Config, ModelConfig
from llamaswap.observe.hooks import RequestRecord
from llamaswap.process.state import ProcessState
from llamaswap.web.app import App
from llamaswap.web.chores import Chores
from llamaswap.web.pools import UpstreamPools
from llamaswap.web.site import build_site

reactor: Any = _global_reactor




class UpstreamStats:
    """What the fake upstream saw: requests, abandoned streams, completions."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.abandoned = 0
        self.completed = 0
        self.abandoned_waiters: list[Deferred[float]] = []
        self.paused_waiters: list[Deferred[int]] = []
        self.bytes_written = 0
        self.big_finished = False

    def wait_abandoned(self) -> Deferred[float]:
        """Fires with reactor time when the next stream is abandoned by its client."""
        d: Deferred[float] = Deferred()
        self.abandoned_waiters.append(d)
        return d

    def wait_paused(self) -> Deferred[int]:
        """Fires with bytes written so far when the big stream is first paused."""
        d: Deferred[int] = Deferred()
        self.paused_waiters.append(d)
        return d


def sse_chunk(model: str, i: int) -> bytes:
    """One OpenAI-style streaming chat chunk."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


@implementer(IPushProducer)
class _BigWriter:
    """Writes a large body as fast as the socket allows; remembers when it was paused."""

    def __init__(self, request: Request, stats: UpstreamStats, total: int) -> None:
        self.request = request
        self.stats = stats
        self.left = total
        self.paused = False
        self.stopped = False
        self.chunk = b"x" * 65536
        request.registerProducer(self, True)
        reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        while not self.paused and not self.stopped and self.left > 0:
            n = min(self.left, len(self.chunk))
            self.left -= n
            self.stats.bytes_written += n
            self.request.write(self.chunk[:n])
        if self.left == 0 and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()
            self.stats.big_finished = True

    def pauseProducing(self) -> None:
        self.paused = True
        waiters, self.stats.paused_waiters = self.stats.paused_waiters, []
        for d in waiters:
            d.callback(self.stats.bytes_written)

    def resumeProducing(self) -> None:
        self.paused = False
        reactor.callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.stopped = True


class FakeUpstream(Resource):
    """An OpenAI-ish upstream: chat (JSON/SSE), echo, crash, big body, slow head."""

    isLeaf = True

    def __init__(self, model: str = "up", stats: UpstreamStats | None = None) -> None:
        super().__init__()
        self.model = model
        self.stats = stats or UpstreamStats()

    def render(self, request: Request) -> bytes | int:
        body = request.content.read() if request.content else b""
        path = request.path.decode()
        record = {
            "method": request.method.decode(),
            "path": path,
            "uri": request.uri.decode(),
            "headers": {
                k.decode().lower(): [v.decode("latin-1") for v in vs]
                for k, vs in request.requestHeaders.getAllRawHeaders()
            },
            "body": body,
        }
        self.stats.requests.append(record)
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        if path.endswith("/big"):
            request.setHeader(b"content-type", b"application/octet-stream")
            _BigWriter(request, self.stats, int(payload.get("total", 64 * 1024 * 1024)))
            return NOT_DONE_YET
        if path.endswith("/slowhead"):
            return NOT_DONE_YET
        if path.endswith("/crash"):
            request.setHeader(b"content-type", b"text/event-stream")
            request.write(sse_chunk(self.model, 0))
            request.write(sse_chunk(self.model, 1))
            transport = request.channel.transport
            reactor.callLater(0.01, transport.abortConnection)
            return NOT_DONE_YET
        if "transcriptions" in path:
            from llamaswap.web.extract import extract

            ctype = request.getHeader(b"content-type") or b""
            heard = extract(b"POST", ctype, body, b"").model
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"text": f"heard {heard} ({len(body)} bytes)"}).encode()
        if "embeddings" in path:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(
                {"object": "list", "model": payload.get("model", self.model),
                 "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                 "usage": {"prompt_tokens": 1, "total_tokens": 1}}
            ).encode()
        if path.endswith("/echo") or ("chat" not in path and "completions" not in path):
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"x-multi", b"a")
            request.responseHeaders.addRawHeader(b"x-multi", b"b")
            return json.dumps(
                {
                    "method": record["method"],
                    "uri": record["uri"],
                    "headers": record["headers"],
                    "body": body.decode("utf-8", "replace"),
                    "model": self.model,
                }
            ).encode()
        model = str(payload.get("model", self.model))
        if payload.get("stream"):
            return self._stream(request, model, int(payload.get("x_chunks", 5)),
                                float(payload.get("x_interval_ms", 0)) / 1000)
        request.setHeader(b"content-type", b"application/json")
        if path.endswith("/completions") and "chat" not in path:
            return json.dumps(
                {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": model,
                 "choices": [{"index": 0, "text": "hello", "finish_reason": "stop",
                              "logprobs": None}]}
            ).encode()
        return json.dumps(
            {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                          "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        ).encode()

    def _stream(self, request: Request, model: str, chunks: int, interval: float) -> int:
        request.setHeader(b"content-type", b"text/event-stream")
        state = {"i": 0, "gone": False}

        def lost(_: object) -> None:
            state["gone"] = True
            self.stats.abandoned += 1
            now = reactor.seconds()
            waiters, self.stats.abandoned_waiters = self.stats.abandoned_waiters, []
            for d in waiters:
                d.callback(now)

        def done(_: object) -> None:
            self.stats.completed += 1

        request.notifyFinish().addCallbacks(done, lost)

        def step() -> None:
            if state["gone"]:
                return
            i = state["i"]
            if i < chunks:
                request.write(sse_chunk(model, i))
                state["i"] = i + 1
                reactor.callLater(interval, step)
            else:
                request.write(b"data: [DONE]\n\n")
                request.finish()

        step()
        return NOT_DONE_YET


def listen(resource: Resource) -> tuple[Any, int]:
    """Serve ``resource`` on 127.0.0.1 port 0; returns (port, number)."""
    port = reactor.listenTCP(0, Site(resource), backlog=2048, interface="127.0.0.1")
    return port, port.getHost().port


OnPosition = Callable[[int], None]


class FakeProcess:
    """An Upstream with what the request path reads: state, proxy_url, state listeners."""

    def __init__(self, model: ModelConfig, proxy_url: str, state: str = "ready") -> None:
        self.model = model
        self.model_id = model.id
        self.proxy_url = proxy_url
        self.state = ProcessState(state)
        self.listeners: list[Callable[[str, ProcessState, ProcessState], None]] = []

    def add_state_listener(
        self, cb: Callable[[str, ProcessState, ProcessState], None]
    ) -> Callable[[], None]:
        """Register ``cb``; returns the remover."""
        self.listeners.append(cb)
        return lambda: self.listeners.remove(cb)

    def set_state(self, new: str) -> None:
        """Transition and tell the listeners."""
        old, self.state = self.state, ProcessState(new)
        for cb in list(self.listeners):
            cb(self.model_id, old, self.state)


class FakeGrant:
    """A Router grant that counts done() calls."""

    def __init__(self, upstream: FakeProcess, router: FakeRouter) -> None:
        self.model_id = upstream.model_id
        self.upstream = upstream
        self.metadata: dict[str, Any] = {"granted": True}
        self.router = router
        self.done_calls = 0

    def done(self) -> None:
        """Record the release."""
        self.done_calls += 1
        self.router.done_calls += 1


class FakeRouter:
    """Grants at once, or holds requests for the test to grant/fail, recording cancels."""

    def __init__(self, upstreams: dict[str, FakeProcess]) -> None:
        self.upstreams = upstreams
        self.hold = False
        self.grant_on_cancel = False
        self.fail_with: Exception | None = None
        self.held: list[tuple[str, Deferred[Any], OnPosition | None]] = []
        self.cancelled: list[str] = []
        self.requested: list[str] = []
        self.grants: list[FakeGrant] = []
        self.done_calls = 0
        self.waiting: list[Deferred[None]] = []
        self.watched: list[FakeGrant] = []
        self.over: list[FakeGrant] = []

    def request(self, model_id: str, on_position: OnPosition | None = None) -> Deferred[Any]:
        """A grant for ``model_id`` (now, held, or failed)."""
        self.requested.append(model_id)

        def cancel(d: Deferred[Any]) -> None:
            self.cancelled.append(model_id)
            if self.grant_on_cancel:
                d.callback(self.grant(model_id))

        d: Deferred[Any] = Deferred(cancel)
        if self.fail_with is not None:
            d.errback(self.fail_with)
        elif self.hold:
            self.held.append((model_id, d, on_position))
            waiting, self.waiting = self.waiting, []
            for w in waiting:  # once request() has returned, as a queue watcher sees it
                reactor.callLater(0, w.callback, None)
        else:
            d.callback(self.grant(model_id))
        return d

    def hold_for(self, grant: FakeGrant, request_over: Deferred[Any]) -> None:
        """Record that ``grant`` is watched; when its request is over it must be done."""
        self.watched.append(grant)
        request_over.addBoth(lambda _: self.over.append(grant))

    def wait_held(self) -> Deferred[None]:
        """Fires (on the next reactor turn) when the next request is held."""
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d

    def grant(self, model_id: str) -> FakeGrant:
        """A grant for a model, made ready first as the Router does."""
        upstream = self.upstreams[model_id]
        if upstream.state != ProcessState.READY:
            upstream.set_state("ready")
        g = FakeGrant(upstream, self)
        self.grants.append(g)
        return g


class RecordingObserver:
    """Remembers the hooks called, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.chunks = 0
        self.finished: list[RequestRecord] = []
        self.started: list[RequestRecord] = []
        self.waiters: list[Deferred[RequestRecord]] = []

    def request_started(self, rec: RequestRecord) -> None:
        self.events.append(("started", rec.id))
        self.started.append(rec)

    def response_started(self, rec: RequestRecord) -> None:
        self.events.append(("response", rec.id))

    def response_chunk(self, rec: RequestRecord, data: bytes) -> None:
        self.chunks += 1

    def request_finished(self, rec: RequestRecord) -> None:
        self.events.append(("finished", rec.id))
        self.finished.append(rec)
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(rec)

    def wait_finished(self) -> Deferred[RequestRecord]:
        """Fires with the record of the next request to finish."""
        d: Deferred[RequestRecord] = Deferred()
        self.waiters.append(d)
        return d


class SiteEnv:
    """The real Site on a port, fake processes/router, fake upstream on another port."""

    def __init__(
        self, models: dict[str, ModelConfig], pools: UpstreamPools | None = None, **config: Any
    ) -> None:
        self.stats = UpstreamStats()
        self.up_port, up = listen(FakeUpstream(stats=self.stats))
        self.up_url = f"http://127.0.0.1:{up}"
        procs = {k: FakeProcess(m, m.proxy or self.up_url) for k, m in models.items()}
        self.router = FakeRouter(procs)
        self.observer = RecordingObserver()
        self.app = App(
            config=Config(models=MappingProxyType(models), **config),
            router=self.router,  # type: ignore[arg-type]
            upstreams=procs,  # type: ignore[arg-type]
            proxy_log=None,  # type: ignore[arg-type]
            upstream_log=None,  # type: ignore[arg-type]
            observers=[self.observer],
        )
        self.site = build_site(lambda: self.app, reactor, pools)
        # The tests' clients share this reactor: their sockets would make the proxy look
        # busy at random moments. Idle, it does a request's bookkeeping on the turn after
        # the answer left, before the client can read it: tests see it deterministically.
        self.site.ctx.chores = Chores(reactor, io_waiting=lambda: False)
        self.port = reactor.listenTCP(0, self.site, backlog=2048, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def request(self, method: str, path: str, **kwargs: Any) -> Deferred[Any]:
        """A treq request to the site."""
        kwargs.setdefault("pool", self.pool)
        return treq.request(method, self.url + path, **kwargs)

    def close(self) -> Deferred[Any]:
        """Stop everything this environment started."""
        return DeferredList(
            [
                self.pool.closeCachedConnections(),
                self.site.pools.close_all(),
                self.port.stopListening(),
                self.up_port.stopListening(),
            ]
        )
