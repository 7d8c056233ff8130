"""flush_now and send_now: bytes written during a callback leave at once on plain TCP."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from llamaswap.web.flush import flush_now, send_now


class _Sink(Protocol):
    """Fires ``got`` with the first bytes it receives."""

    def __init__(self, got: Deferred[bytes]) -> None:
        self.got = got

    def dataReceived(self, data: bytes) -> None:
        if not self.got.called:
            self.got.callback(data)


class _Writer(Protocol):
    """Writes on connect and notes what the transport still held before and after flush."""

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def connectionMade(self) -> None:
        self.transport.write(b"hello")  # type: ignore[union-attr]
        self.seen.append(self.transport._tempDataLen)  # type: ignore[union-attr]
        flush_now(self.transport)
        self.seen.append(self.transport._tempDataLen)  # type: ignore[union-attr]
        self.seen.append(int(self.transport in reactor.getWriters()))  # type: ignore[attr-defined]


@pytest_twisted.inlineCallbacks
def test_flush_sends_now_and_stops_writing() -> Any:
    """Right after flush_now nothing is buffered and the socket is no longer watched."""
    got: Deferred[bytes] = Deferred()
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, Factory.forProtocol(lambda: _Sink(got)), interface="127.0.0.1"
    )
    seen: list[int] = []

    client = yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), _Writer(seen)
    )
    try:
        assert (yield got) == b"hello"
        assert seen == [5, 0, 0]
    finally:
        client.transport.loseConnection()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_upstream_connections_do_not_wait_for_acks() -> Any:
    """Connections of the lean upstream client have Nagle's algorithm off."""
    from llamaswap.web.fastclient import FastPool

    got: Deferred[bytes] = Deferred()
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, Factory.forProtocol(lambda: _Sink(got)), interface="127.0.0.1"
    )
    pool = FastPool(reactor, "127.0.0.1", port.getHost().port, 5)
    conn = yield pool.acquire()
    try:
        assert conn.transport.getTcpNoDelay() is True
    finally:
        conn.abort()
        pool.close()
        yield port.stopListening()


def test_other_transports_are_left_alone() -> None:
    """A transport that is not a plain TCP connection keeps its own buffering."""
    transport = StringTransport()
    transport.write(b"x")
    flush_now(transport)
    flush_now(None)
    assert transport.value() == b"x"
    send_now(transport, b"y")
    assert transport.value() == b"xy"


class _Collector(Protocol):
    """Keeps everything it receives; fires ``done`` once ``size`` bytes arrived."""

    def __init__(self, size: int, done: Deferred[bytes]) -> None:
        self.size = size
        self.done = done
        self.data = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.size and not self.done.called:
            self.done.callback(bytes(self.data))


class _Idle(Protocol):
    """A client side the test writes through."""


def _connected_pair(expected: int) -> Any:
    """A listening collector expecting ``expected`` bytes and a client connected to it."""
    done: Deferred[bytes] = Deferred()
    collectors: list[_Collector] = []

    def build() -> _Collector:
        collectors.append(_Collector(expected, done))
        return collectors[-1]

    port = reactor.listenTCP(0, Factory.forProtocol(build), interface="127.0.0.1")  # type: ignore[attr-defined]
    client = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), _Idle())
    return port, client, done, collectors


@pytest_twisted.inlineCallbacks
def test_send_now_skips_the_buffer_when_nothing_waits() -> Any:
    """On an idle plain TCP connection the bytes go to the socket, not the transport."""
    port, connecting, done, _ = _connected_pair(5)
    client = yield connecting
    transport = client.transport
    written: list[bytes] = []
    original_write = transport.write
    transport.write = lambda data: (written.append(data), original_write(data))
    try:
        send_now(transport, b"hello")
        assert written == [] and transport not in reactor.getWriters()  # type: ignore[attr-defined]
        assert (yield done) == b"hello"
    finally:
        transport.loseConnection()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_send_now_keeps_the_order_of_what_waits() -> Any:
    """Bytes already buffered leave first: send_now queues behind them."""
    port, connecting, done, _ = _connected_pair(8)
    client = yield connecting
    try:
        client.transport.write(b"first-")  # buffered until the reactor's next turn
        send_now(client.transport, b"me")
        assert (yield done) == b"first-me"
    finally:
        client.transport.loseConnection()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_what_the_kernel_refuses_is_sent_by_the_transport() -> Any:
    """A send larger than the socket buffers: the rest is buffered and arrives intact."""
    size = 16 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    port, connecting, done, collectors = _connected_pair(size)
    client = yield connecting
    try:
        collectors[0].transport.pauseProducing()  # the peer reads nothing for now
        send_now(client.transport, payload)
        assert client.transport.dataBuffer or client.transport._tempDataLen
        collectors[0].transport.resumeProducing()
        assert (yield done) == payload
    finally:
        client.transport.loseConnection()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_an_answer_leaves_in_one_send(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Through the real Site, a response's head and body go out together, in one send."""
    from proxy_fakes import SiteEnv
    from test_dispatch_flow import MODELS

    import llamaswap.web.channel as channel_module

    sends: list[bytes] = []
    real_send = channel_module.send_now

    def counting(transport: Any, data: bytes) -> None:
        sends.append(data)
        real_send(transport, data)

    monkeypatch.setattr(channel_module, "send_now", counting)
    env = SiteEnv(dict(MODELS))
    try:
        for method, path, kwargs in (
            ("GET", "/health", {}),
            ("POST", "/v1/chat/completions", {"json": {"model": "m1"}}),
        ):
            del sends[:]
            resp = yield env.request(method, path, **kwargs)
            body = yield resp.content()
            assert resp.code == 200
            assert len(sends) == 1
            assert sends[0].startswith(b"HTTP/1.1 200 ") and sends[0].endswith(body)
    finally:
        yield env.close()
