"""The streaming proxy core over real sockets: chunks, backpressure, disconnects, crashes."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
import treq
from proxy_fakes import FakeUpstream, UpstreamStats, listen, reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, ResponseFailed
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.errors import LlamaSwapError
from llamaswap.web.fastproxy import forward_fast
from llamaswap.web.pools import UpstreamPools
from llamaswap.web.proxy import ClientTracker, forward, outgoing_headers, outgoing_pairs
from llamaswap.web.render import render_error


class ForwardAll(Resource):
    """Forward every request to one upstream with ``forward``; remember how each ended."""

    isLeaf = True

    def __init__(
        self, pools: UpstreamPools, base: bytes, timeout: float = 0, fast: bool = False
    ) -> None:
        super().__init__()
        self.fast = fast
        self.pools = pools
        self.base = base
        self.timeout = timeout
        self.outcomes: list[str | None] = []
        self.ended: list[Deferred[str | None]] = []

    def render(self, request: Request) -> int:
        tracker = ClientTracker(request)
        body = request.content.read()
        if self.fast:
            d = forward_fast(
                pool=self.pools.fast_pool_for("up", self.base, 5),
                reactor=reactor,
                tracker=tracker,
                method=request.method,
                target=request.uri,
                headers=outgoing_pairs(request),
                body=body,
                target_name="upstream up",
                response_header_timeout=self.timeout,
            )
        else:
            d = forward(
                agent=self.pools.agent_for("up", 5),
                reactor=reactor,
                tracker=tracker,
                method=request.method,
                url=self.base + request.uri,
                headers=outgoing_headers(request),
                body=body,
                target_name="upstream up",
                response_header_timeout=self.timeout,
            )
        done: Deferred[str | None] = Deferred()
        self.ended.append(done)

        def ok(outcome: str | None) -> None:
            self.outcomes.append(outcome)
            done.callback(outcome)

        def err(failure: Failure) -> None:
            failure.trap(LlamaSwapError)
            self.outcomes.append("error")
            if tracker.open:
                request.write(render_error(request, failure.value))
                request.finish()
            done.callback("error")

        d.addCallbacks(ok, err)
        return NOT_DONE_YET


class Env:
    """A fake upstream and a forwarding proxy, both on real ports."""

    def __init__(self, timeout: float = 0, fast: bool = False) -> None:
        self.stats = UpstreamStats()
        self.up_port, up = listen(FakeUpstream(stats=self.stats))
        self.pools = UpstreamPools(reactor)
        self.resource = ForwardAll(self.pools, b"http://127.0.0.1:%d" % up, timeout, fast)
        self.proxy_port, self.port = listen(self.resource)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_pool = HTTPConnectionPool(reactor, persistent=True)

    def post(self, path: str, body: dict[str, Any]) -> Deferred[Any]:
        """POST JSON through the proxy."""
        return treq.post(self.url + path, json=body, pool=self.client_pool)

    @pytest_twisted.inlineCallbacks
    def close(self) -> Generator[Any, Any, None]:
        """Stop listening and drop pooled connections."""
        yield self.client_pool.closeCachedConnections()
        yield self.pools.close_all()
        yield self.proxy_port.stopListening()
        yield self.up_port.stopListening()


@pytest.fixture(params=["agent", "fast"])
def env(request: pytest.FixtureRequest) -> Generator[Env, None, None]:
    """A proxy (over Agent, or over the lean client) in front of a fake upstream."""
    e = Env(fast=request.param == "fast")
    yield e
    pytest_twisted.blockon(e.close())


class RawClient(Protocol):
    """A raw HTTP client that can stop reading or vanish mid-response."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = bytearray()
        self.got_data: Deferred[None] = Deferred()
        self.lost: Deferred[bytes] = Deferred()
        self.want = b""
        self.want_d: Deferred[None] | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.got_data.called:
            self.got_data.callback(None)
        if self.want_d is not None and self.want in self.received:
            d, self.want_d = self.want_d, None
            d.callback(None)

    def wait_for(self, marker: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if marker in self.received:
            d.callback(None)
        else:
            self.want, self.want_d = marker, d
        return d

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost.callback(bytes(self.received))


def raw_connect(port: int, request: bytes) -> Deferred[RawClient]:
    """Open a TCP connection to the proxy and send ``request``."""
    proto = RawClient(request)
    connected: Deferred[RawClient] = Deferred()

    class F(ClientFactory):
        def buildProtocol(self, addr: Any) -> Protocol:
            reactor.callLater(0, connected.callback, proto)
            return proto

    reactor.connectTCP("127.0.0.1", port, F())
    return connected


def chat_request(path: str, body: dict[str, Any]) -> bytes:
    """A raw HTTP/1.1 POST with a JSON body."""
    data = json.dumps(body).encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: proxy.test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
    )


@pytest_twisted.inlineCallbacks
def test_streams_chunk_by_chunk(env: Env) -> Generator[Any, Any, None]:
    """Each SSE chunk reaches the client before the upstream sends the next one."""
    client = yield raw_connect(
        env.port,
        chat_request("/v1/chat/completions",
                     {"model": "m", "stream": True, "x_chunks": 3, "x_interval_ms": 200}),
    )
    started = reactor.seconds()
    yield client.wait_for(b"tok0")
    first = reactor.seconds() - started
    assert first < 0.15, "first chunk was held back"
    assert b"tok1" not in client.received
    yield client.wait_for(b"tok1")
    assert b"tok2" not in client.received
    yield client.wait_for(b"0\r\n\r\n")
    head = bytes(client.received).split(b"\r\n\r\n", 1)[0].lower()
    assert b"transfer-encoding: chunked" in head
    assert b"x-accel-buffering: no" in head
    assert b"content-type: text/event-stream" in head
    client.transport.loseConnection()
    yield client.lost
    assert env.resource.outcomes == [None]


@pytest_twisted.inlineCallbacks
def test_non_streaming_keeps_length_and_headers(env: Env) -> Generator[Any, Any, None]:
    """A JSON answer keeps its Content-Length, multi-valued headers and status."""
    resp = yield env.post("/echo", {"model": "m"})
    body = yield resp.json()
    assert resp.code == 200
    assert resp.headers.getRawHeaders(b"x-multi") == [b"a", b"b"]
    assert resp.length == len(json.dumps(body).encode())
    assert json.loads(body["body"]) == {"model": "m"}


@pytest_twisted.inlineCallbacks
def test_forwarded_headers(env: Env) -> Generator[Any, Any, None]:
    """Host is the client's, X-Forwarded-For is appended, hop-by-hop headers are dropped."""
    resp = yield treq.post(
        env.url + "/echo?a=1",
        data=b"{}",
        headers={
            b"Host": b"client.example",
            b"X-Forwarded-For": b"10.0.0.9",
            b"Connection": b"keep-alive, x-private",
            b"X-Private": b"secret",
            b"Authorization": b"Bearer k",
        },
        pool=env.client_pool,
    )
    body = yield resp.json()
    h = body["headers"]
    assert h["host"] == ["client.example"]
    assert h["x-forwarded-for"] == ["10.0.0.9, 127.0.0.1"]
    assert "x-private" not in h
    assert h["authorization"] == ["Bearer k"]
    assert h["content-length"] == ["2"]
    assert body["uri"] == "/echo?a=1"


@pytest_twisted.inlineCallbacks
def test_client_disconnect_aborts_upstream_fast(env: Env) -> Generator[Any, Any, None]:
    """A client leaving mid-stream closes the upstream connection within 100 ms."""
    client = yield raw_connect(
        env.port,
        chat_request("/v1/chat/completions",
                     {"model": "m", "stream": True, "x_chunks": 1000, "x_interval_ms": 20}),
    )
    yield client.wait_for(b"tok1")
    abandoned = env.stats.wait_abandoned()
    left_at = reactor.seconds()
    client.transport.abortConnection()
    seen_at = yield abandoned
    assert seen_at - left_at < 0.1
    outcome = yield env.resource.ended[0]
    assert outcome == "client disconnected"
    assert env.stats.abandoned == 1


@pytest_twisted.inlineCallbacks
def test_upstream_crash_drops_client(env: Env) -> Generator[Any, Any, None]:
    """An upstream dying mid-body drops the client connection: no terminating chunk."""
    client = yield raw_connect(
        env.port, chat_request("/v1/chat/completions/crash", {"model": "m"})
    )
    received = yield client.lost
    assert b"tok1" in received
    assert not received.endswith(b"0\r\n\r\n")
    assert env.resource.outcomes == ["upstream connection lost mid-response"]


@pytest_twisted.inlineCallbacks
def test_upstream_crash_is_an_error_for_http_clients(env: Env) -> Generator[Any, Any, None]:
    """A real HTTP client sees a failed body, not a short successful one."""
    resp = yield env.post("/v1/chat/completions/crash", {"model": "m"})
    with pytest.raises(ResponseFailed):
        yield resp.content()


@pytest_twisted.inlineCallbacks
def test_slow_reader_pauses_upstream(env: Env) -> Generator[Any, Any, None]:
    """A client that stops reading pauses the upstream; nothing piles up in the proxy."""
    total = 256 * 1024 * 1024
    client = yield raw_connect(env.port, chat_request("/big", {"total": total}))
    yield client.got_data
    client.transport.pauseProducing()
    written_at_pause = yield env.stats.wait_paused()
    yield deferLater(reactor, 0.3, lambda: None)
    # The upstream is stuck: only socket buffers hold the difference.
    assert not env.stats.big_finished
    assert env.stats.bytes_written < 64 * 1024 * 1024
    assert env.stats.bytes_written - written_at_pause < 8 * 1024 * 1024
    client.transport.abortConnection()
    yield client.lost
    yield env.resource.ended[0]


@pytest_twisted.inlineCallbacks
def test_slow_reader_gets_everything_after_resuming(env: Env) -> Generator[Any, Any, None]:
    """After a pause the whole body still arrives intact."""
    total = 24 * 1024 * 1024
    client = yield raw_connect(env.port, chat_request("/big", {"total": total}))
    yield client.got_data
    client.transport.pauseProducing()
    yield env.stats.wait_paused()
    client.transport.resumeProducing()
    yield client.wait_for(b"\r\n0\r\n\r\n")
    body = bytes(client.received).split(b"\r\n\r\n", 1)[1]
    assert body.count(b"x") == total
    client.transport.loseConnection()
    yield client.lost


@pytest.mark.parametrize("fast", [False, True])
@pytest_twisted.inlineCallbacks
def test_connect_error_is_502_naming_upstream(fast: bool) -> Generator[Any, Any, None]:
    """An upstream that refuses connections gives a 502 JSON envelope naming it."""
    pools = UpstreamPools(reactor)
    dead_port, dead = listen(Resource())
    yield dead_port.stopListening()
    resource = ForwardAll(pools, b"http://127.0.0.1:%d" % dead, fast=fast)
    port, number = listen(resource)
    try:
        resp = yield treq.post(f"http://127.0.0.1:{number}/v1/x", data=b"{}", persistent=False)
        body = yield resp.json()
        assert resp.code == 502
        assert "upstream up is unreachable" in body["error"]["message"]
        assert body["error"]["code"] == "bad_gateway"
    finally:
        yield port.stopListening()
        yield pools.close_all()


@pytest.mark.parametrize("fast", [False, True])
@pytest_twisted.inlineCallbacks
def test_response_header_timeout_is_504(fast: bool) -> Generator[Any, Any, None]:
    """No response head within responseHeader seconds gives a 504."""
    e = Env(timeout=0.2, fast=fast)
    try:
        resp = yield e.post("/slowhead", {})
        body = yield resp.json()
        assert resp.code == 504
        assert "0.2s" in body["error"]["message"]
    finally:
        yield e.close()


@pytest_twisted.inlineCallbacks
def test_thousand_concurrent_streams(env: Env) -> Generator[Any, Any, None]:
    """1000 concurrent streaming clients through one upstream all complete without error."""
    pool = HTTPConnectionPool(reactor, persistent=False)

    def one(i: int) -> Deferred[bytes]:
        d = treq.post(
            env.url + "/v1/chat/completions",
            json={"model": "m", "stream": True, "x_chunks": 3, "x_interval_ms": 50},
            pool=pool,
        )
        return d.addCallback(treq.content)

    results = yield DeferredList([one(i) for i in range(1000)], consumeErrors=True)
    failures = [r for ok, r in results if not ok]
    assert failures == []
    assert all(r.endswith(b"data: [DONE]\n\n") and b"tok2" in r for _, r in results)
    assert env.resource.outcomes.count(None) == 1000
    assert env.stats.completed == 1000


def test_agent_path_drops_hop_by_hop_response_headers() -> None:
    """copy_response_head leaves out connection-scoped headers, as Go's ReverseProxy does."""
    from types import SimpleNamespace

    from twisted.web.http_headers import Headers
    from twisted.web.test.requesthelper import DummyRequest

    from llamaswap.web.proxy import copy_response_head

    upstream = Headers({
        b"Connection": [b"keep-alive, X-Hop"], b"X-Hop": [b"1"],
        b"Proxy-Authenticate": [b"Basic realm=x"], b"Keep-Alive": [b"timeout=5"],
        b"X-Keep": [b"2"],
    })
    request = DummyRequest([b""])
    copy_response_head(
        request,  # type: ignore[arg-type]
        SimpleNamespace(code=200, phrase=b"OK", headers=upstream, length=3),  # type: ignore[arg-type]
    )
    names = {name.lower() for name, _ in request.responseHeaders.getAllRawHeaders()}
    assert names == {b"x-keep", b"content-length"}
