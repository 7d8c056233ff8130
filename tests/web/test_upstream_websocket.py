"""WebSocket upgrades: the handshake reaches the model, then bytes flow both ways until a close."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from proxy_fakes import SiteEnv, reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from llamaswap.config.model import ModelConfig, SelectorConfig
from llamaswap.process.state import ProcessState
from llamaswap.testing.rawclient import RawClient
from llamaswap.testing.wsecho import EchoServer
from llamaswap.web.names import selector_runtime
from llamaswap.web.upgrade import splice

UPGRADE = (
    b"GET /upstream/ws/socket?x=1 HTTP/1.1\r\nHost: client.test\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture
def env() -> Generator[tuple[SiteEnv, list[bytes], list[Deferred[None]]], None, None]:
    """A site whose model 'ws' is an upgrade-echo server, and another with ignoreWebsockets."""
    heads: list[bytes] = []
    closed: list[Deferred[None]] = []
    port = reactor.listenTCP(
        0, Factory.forProtocol(lambda: EchoServer(heads, closed)), interface="127.0.0.1"
    )
    url = f"http://127.0.0.1:{port.getHost().port}"
    e = SiteEnv(
        {
            "ws": ModelConfig(id="ws", proxy=url),
            "iws": ModelConfig(id="iws", proxy=url, ignore_websockets=True),
            "cold": ModelConfig(id="cold", proxy=url),
        },
        selectors={
            "s": SelectorConfig(id="s", strategy="spillover", targets=("iws", "cold")),
            "t": SelectorConfig(id="t", strategy="spillover", targets=("ws", "cold")),
        },
    )
    e.router.upstreams["cold"].state = ProcessState.STOPPED
    yield e, heads, closed
    pytest_twisted.blockon(e.close())
    pytest_twisted.blockon(port.stopListening())


def connect(e: SiteEnv, client: RawClient) -> None:
    """Connect ``client`` to the site."""
    f = ClientFactory()
    f.buildProtocol = lambda addr: client  # type: ignore[method-assign]
    reactor.connectTCP("127.0.0.1", e.port.getHost().port, f)


@pytest_twisted.inlineCallbacks
def test_websocket_passthrough(env: Any) -> Generator[Any, Any, None]:
    """The 101 comes back, frames flow both ways, a client close closes the upstream."""
    e, heads, closed = env
    client = RawClient(UPGRADE)
    connect(e, client)
    yield client.wait_for(b"\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 101 Switching Protocols")
    head = heads[0].lower()
    assert head.startswith(b"get /socket?x=1 http/1.1")
    assert b"upgrade: websocket" in head and b"host: client.test" in head
    assert b"sec-websocket-key: abc" in head
    client.transport.write(b"hello")  # type: ignore[union-attr]
    yield client.wait_for(b"echo:hello")
    upstream_closed: Deferred[None] = Deferred()
    closed.append(upstream_closed)
    finished = e.observer.wait_finished()
    client.transport.loseConnection()  # type: ignore[union-attr]
    yield upstream_closed
    yield finished
    assert e.router.requested == ["ws"]
    assert e.router.done_calls == 1


@pytest_twisted.inlineCallbacks
def test_ignored_websocket_needs_ready_model(env: Any) -> Generator[Any, Any, None]:
    """ignoreWebsockets: 409 when stopped; when ready it bypasses the router."""
    e, _, _ = env
    e.router.upstreams["iws"].state = ProcessState.STOPPED
    client = RawClient(UPGRADE)
    client_upgrade = UPGRADE.replace(b"/upstream/ws/", b"/upstream/iws/")
    client.connectionMade = lambda: client.transport.write(client_upgrade)  # type: ignore
    connect(e, client)
    yield client.wait_for(b"ignored websocket requests cannot start it")
    assert client.received.startswith(b"HTTP/1.1 409")
    client.transport.loseConnection()  # type: ignore[union-attr]
    yield client.lost
    e.router.upstreams["iws"].state = ProcessState.READY
    client = RawClient(UPGRADE)
    client.connectionMade = lambda: client.transport.write(client_upgrade)  # type: ignore
    connect(e, client)
    yield client.wait_for(b"\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 101")
    assert e.router.requested == []
    client.transport.loseConnection()  # type: ignore[union-attr]
    yield client.lost


def selector_upgrade(selector: str) -> bytes:
    """A WebSocket upgrade naming ``selector`` in the query of a GET model route."""
    return UPGRADE.replace(b"/upstream/ws/socket?x=1", b"/props?model=" + selector.encode())


@pytest_twisted.inlineCallbacks
def test_ignored_websocket_releases_spillover_count(env: Any) -> Generator[Any, Any, None]:
    """An open ignored websocket no longer counts: the next request still goes to its target."""
    e, heads, _ = env
    client = RawClient(selector_upgrade("s"))
    connect(e, client)
    yield client.wait_for(b"\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 101")
    assert heads[-1].lower().startswith(b"get /props?model=iws ")
    assert selector_runtime(e.app).counts == {}
    resp = yield e.request("POST", "/v1/chat/completions", json={"model": "s"})
    assert resp.code == 200
    assert (yield resp.content()) == b"ok"
    assert e.router.requested == ["iws"]
    assert heads[-1].lower().startswith(b"post /v1/chat/completions ")
    assert selector_runtime(e.app).counts == {}
    client.transport.write(b"still open")  # type: ignore[union-attr]
    yield client.wait_for(b"echo:still open")
    client.transport.loseConnection()  # type: ignore[union-attr]
    yield client.lost


@pytest_twisted.inlineCallbacks
def test_scheduled_websocket_keeps_spillover_count(env: Any) -> Generator[Any, Any, None]:
    """A websocket that is not ignored counts until it closes: the next request spills over."""
    e, _, _ = env
    client = RawClient(selector_upgrade("t"))
    connect(e, client)
    yield client.wait_for(b"\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 101")
    assert selector_runtime(e.app).count("t", "ws") == 1
    resp = yield e.request("POST", "/v1/chat/completions", json={"model": "t"})
    yield resp.content()
    assert e.router.requested == ["ws", "cold"]
    finished = e.observer.wait_finished()
    client.transport.loseConnection()  # type: ignore[union-attr]
    yield client.lost
    yield finished
    assert selector_runtime(e.app).counts == {}


@pytest_twisted.inlineCallbacks
def test_ignored_websocket_cut_when_model_stops(env: Any) -> Generator[Any, Any, None]:
    """An open ignored websocket is closed, both ways, as soon as its model leaves ready."""
    e, _, closed = env
    process = e.router.upstreams["iws"]
    watchers = len(process.listeners)
    client = RawClient(UPGRADE.replace(b"/upstream/ws/", b"/upstream/iws/"))
    connect(e, client)
    yield client.wait_for(b"\r\n\r\n")
    client.transport.write(b"hi")  # type: ignore[union-attr]
    yield client.wait_for(b"echo:hi")
    upstream_closed: Deferred[None] = Deferred()
    closed.append(upstream_closed)
    process.set_state("stopping")
    yield client.lost
    yield upstream_closed
    assert len(process.listeners) == watchers
    assert e.router.requested == []


def test_splice_ends_when_client_left_during_connect() -> None:
    """The client leaving before the upstream connects: the splice ends, upstream closed."""
    clock_reactor = MemoryReactorClock()
    request = Request(DummyChannel(), False)
    d = splice(
        reactor=clock_reactor, request=request, base_url="http://127.0.0.1:9",
        head=b"GET / HTTP/1.1\r\n\r\n", connect_timeout=5, target_name="upstream x",
    )
    request.connectionLost(Failure(ConnectionDone()))
    _, _, factory, _, _ = clock_reactor.tcpClients[0]
    upstream = StringTransport()
    factory.buildProtocol(None).makeConnection(upstream)
    assert upstream.disconnecting
    assert upstream.value() == b""
    assert d.called and d.result == "client disconnected"
