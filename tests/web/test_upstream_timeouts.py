"""The ``timeouts`` keys on upstream connections: idleConn, keepalive, tlsHandshake."""

from __future__ import annotations

import json
import socket
from types import MappingProxyType
from typing import Any

import pytest
import pytest_twisted
from proxy_fakes import SiteEnv, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from llamaswap.config import load_config_text
from llamaswap.config.model import PeerConfig, Timeouts
from llamaswap.config.models import EXPECT_CONTINUE_UNUSED
from llamaswap.httpclient import GO_DEFAULT_KEEPALIVE, HandshakeDeadlineEndpoint
from llamaswap.testing.tlscert import self_signed
from llamaswap.web.fastclient import FastPool, UpstreamConnection
from llamaswap.web.pools import NO_IDLE_LIMIT, UpstreamPools


def _idle_connection(pool: FastPool) -> tuple[UpstreamConnection, StringTransport]:
    """A connection of ``pool`` over a StringTransport, released to the pool now."""
    conn = UpstreamConnection(pool)
    transport = StringTransport()
    conn.makeConnection(transport)
    pool.release(conn)
    return conn, transport


def test_idle_conn_closes_fast_pool_connections_idle_that_long() -> None:
    """idleConn: each pooled connection closes once it has been idle for idleConn seconds."""
    clock = Clock()
    pool = FastPool(clock, "127.0.0.1", 8080, 5, idle_timeout=4)
    _first, first = _idle_connection(pool)
    clock.advance(2)
    _second, second = _idle_connection(pool)
    clock.advance(1.9)
    assert not first.disconnecting and not second.disconnecting
    clock.advance(0.1)
    assert first.disconnecting and not second.disconnecting
    clock.advance(2)
    assert second.disconnecting
    assert pool.take_idle() is None
    assert clock.getDelayedCalls() == []


def test_idle_conn_counts_from_the_last_release() -> None:
    """A connection reused before idleConn starts a new idle period when it comes back."""
    clock = Clock()
    pool = FastPool(clock, "127.0.0.1", 8080, 5, idle_timeout=4)
    conn, transport = _idle_connection(pool)
    clock.advance(3)
    assert pool.take_idle() is conn
    pool.release(conn)
    clock.advance(3.5)
    assert not transport.disconnecting
    clock.advance(0.5)
    assert transport.disconnecting


def test_idle_conn_zero_keeps_idle_connections() -> None:
    """idleConn 0 means no limit, as in Go: nothing is scheduled, nothing closes."""
    clock = Clock()
    pool = FastPool(clock, "127.0.0.1", 8080, 5, idle_timeout=0)
    _conn, transport = _idle_connection(pool)
    assert clock.getDelayedCalls() == []
    assert not transport.disconnecting


def test_idle_conn_reaches_both_clients() -> None:
    """The lean client's pool and the Agent's pool (https upstreams) get the model's idleConn."""
    pools = UpstreamPools(reactor)
    fast = pools.fast_pool_for("m", b"http://127.0.0.1:9/v1", Timeouts(idle_conn=7))
    assert fast.idle_timeout == 7
    pools.agent_for("peer", Timeouts(idle_conn=11))
    pool = pools.connection_pool("peer")
    assert pool is not None and pool.cachedConnectionTimeout == 11
    pools.agent_for("unlimited", Timeouts(idle_conn=0))
    pool = pools.connection_pool("unlimited")
    assert pool is not None and pool.cachedConnectionTimeout == NO_IDLE_LIMIT


class _Held(Protocol):
    """A server side that only holds the connection open."""


def _listen_silent() -> Any:
    """A TCP server on loopback that accepts and never says anything."""
    return reactor.listenTCP(0, Factory.forProtocol(_Held), interface="127.0.0.1")


def _keepalive_of(transport: Any) -> tuple[int, int, int]:
    """SO_KEEPALIVE, TCP_KEEPIDLE and TCP_KEEPINTVL of a connection's socket."""
    sock = transport.getHandle()
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    )


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux socket options")
@pytest_twisted.ensureDeferred
async def test_keepalive_sets_tcp_keepalive_period_on_upstream_sockets() -> None:
    """keepalive: pooled connections probe after that many idle seconds (0 is Go's 15 s)."""
    port = _listen_silent()
    pools = UpstreamPools(reactor)
    url = b"http://127.0.0.1:%d/" % port.getHost().port
    try:
        conn = await pools.fast_pool_for("m", url, Timeouts(keepalive=7)).acquire()
        on, idle, interval = _keepalive_of(conn.transport)
        assert on != 0 and idle == interval == 7
        endpoint = pools.routes(Timeouts(keepalive=0)).route(
            "http", "127.0.0.1", port.getHost().port).endpoint
        proto = await endpoint.connect(Factory.forProtocol(Protocol))
        on, idle, interval = _keepalive_of(proto.transport)
        assert on != 0 and idle == interval == GO_DEFAULT_KEEPALIVE
        conn.abort()
        proto.transport.abortConnection()
    finally:
        await pools.close_all()
        await port.stopListening()


@implementer(IHandshakeListener)
class _Watched(Protocol):
    """Records the handshake and the end of the connection."""

    def __init__(self) -> None:
        self.shaken: Deferred[None] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()

    def handshakeCompleted(self) -> None:
        self.shaken.callback(None)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost.callback(reason.value)


def _deadline_endpoint(port: int, clock: Clock, limit: float) -> HandshakeDeadlineEndpoint:
    """TLS to 127.0.0.1:``port`` with a handshake limit timed by ``clock``."""
    tls = wrapClientTLS(
        optionsForClientTLS("localhost"), TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    )
    return HandshakeDeadlineEndpoint(tls, clock, limit, f"127.0.0.1:{port}")


@pytest_twisted.ensureDeferred
async def test_tls_handshake_limit_aborts_a_silent_server() -> None:
    """tlsHandshake: a server that accepts TCP but never answers TLS is cut off at the limit."""
    port = _listen_silent()
    clock = Clock()
    try:
        endpoint = _deadline_endpoint(port.getHost().port, clock, 2)
        proto = await endpoint.connect(Factory.forProtocol(_Watched))
        assert isinstance(proto, _Watched)
        clock.advance(1.9)
        assert not proto.lost.called
        clock.advance(0.1)
        why = await proto.lost
        assert isinstance(why, ConnectionLost), repr(why)
        assert not proto.shaken.called
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tls_handshake_in_time_is_left_alone() -> None:
    """A handshake that finishes in time stops the clock; the connection stays open."""
    cert = self_signed(["localhost"], ["127.0.0.1"])
    from twisted.internet.ssl import Certificate

    port = reactor.listenSSL(0, Factory.forProtocol(_Held), cert.server_options(),
                             interface="127.0.0.1")
    clock = Clock()
    try:
        tls = wrapClientTLS(
            optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(cert.cert_pem)),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        )
        endpoint = HandshakeDeadlineEndpoint(tls, clock, 2, "server")
        proto = await endpoint.connect(Factory.forProtocol(_Watched))
        assert isinstance(proto, _Watched)
        await proto.shaken
        assert clock.getDelayedCalls() == []
        clock.advance(10)
        assert not proto.lost.called
        proto.transport.loseConnection()  # type: ignore[union-attr]
        await proto.lost
    finally:
        await port.stopListening()


def test_tls_handshake_and_keepalive_reach_the_routes() -> None:
    """The model's or peer's tlsHandshake and keepalive shape the endpoints of its routes."""
    pools = UpstreamPools(reactor)
    routes = pools.routes(Timeouts(tls_handshake=3, keepalive=9))
    assert (routes.tls_handshake, routes.keepalive) == (3, 9)
    endpoint = routes.route("https", "peer.test", 443).endpoint
    assert isinstance(endpoint, HandshakeDeadlineEndpoint) and endpoint.limit == 3
    untimed = pools.routes(Timeouts(tls_handshake=0)).route("https", "peer.test", 443).endpoint
    assert not isinstance(untimed, HandshakeDeadlineEndpoint)


@pytest_twisted.ensureDeferred
async def test_peer_whose_tls_never_completes_gets_an_error_answer() -> None:
    """Through llamaswap: a peer stuck before its TLS handshake fails the request with 502."""
    port = _listen_silent()
    peer = PeerConfig(
        id="stuck", proxy=f"https://127.0.0.1:{port.getHost().port}", models=("llama",),
        timeouts=Timeouts(tls_handshake=1, response_header=60),
    )
    env = SiteEnv({}, peers=MappingProxyType({"stuck": peer}))
    try:
        resp = await env.request("POST", "/v1/chat/completions", json={"model": "stuck/llama"})
        body = json.loads(await resp.content())
        assert resp.code == 502
        assert "stuck" in body["error"]["message"]
    finally:
        await env.close()
        await port.stopListening()


def test_expect_continue_is_accepted_with_a_warning() -> None:
    """expectContinue cannot apply (bodies are sent whole): a warning names the key and why."""
    config = load_config_text(
        "models:\n"
        "  m:\n"
        "    cmd: s ${PORT}\n"
        "    timeouts: {expectContinue: 3}\n"
        "peers:\n"
        "  p:\n"
        "    proxy: http://10.0.0.1:8080\n"
        "    models: [x]\n"
        "    timeouts: {expectContinue: 1}\n"
    )
    assert f"models.m.timeouts.expectContinue: {EXPECT_CONTINUE_UNUSED}" in config.warnings
    assert f"peers.p.timeouts.expectContinue: {EXPECT_CONTINUE_UNUSED}" in config.warnings
    assert not any("expectContinue" in w for w in load_config_text("models: {}").warnings)
