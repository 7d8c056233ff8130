"""Routes to upstreams: direct, absolute-form via an HTTP proxy, CONNECT tunnels."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Site

from llamaswap.process.health import http_prober
from llamaswap.proxyenv import ProxySettings, parse_proxy
from llamaswap.proxyroute import ProxyError, RouteCache, TunnelEndpoint, connect_request
from llamaswap.testing.forwardproxy import ForwardProxy
from llamaswap.testing.responder import Responder

reactor: Any = _reactor


# -- route decisions -------------------------------------------------------------------------


def routes(**env: str) -> RouteCache:
    """Routes for settings read from ``env`` (never connects)."""
    return RouteCache(reactor, ProxySettings.from_environ(env), 5)


def test_loopback_route_is_direct_and_origin_form() -> None:
    """Loopback upstreams keep the direct endpoint and origin-form requests."""
    r = routes(HTTP_PROXY="http://u:p@proxy:3128").route("http", "127.0.0.1", 8080)
    assert r.proxy is None and r.target_prefix == b"" and r.proxy_headers == ()


def test_http_route_via_proxy_uses_absolute_form_and_credentials() -> None:
    """A proxied http upstream gets an absolute-form prefix and Proxy-Authorization."""
    cache = routes(HTTP_PROXY="http://u:p@proxy:3128")
    r = cache.route("http", "10.0.0.5", 8080)
    assert r.proxy is not None and r.proxy.host == "proxy"
    assert r.target_prefix == b"http://10.0.0.5:8080"
    assert r.proxy_headers == ((b"Proxy-Authorization", b"Basic dTpw"),)
    assert cache.route("http", "10.0.0.5", 8080) is r  # decided once
    assert cache.route("http", "example.com", 80).target_prefix == b"http://example.com"
    assert cache.route("http", "2001:db8::1", 81).target_prefix == b"http://[2001:db8::1]:81"
    long_label = "a" * 60 + ".example"
    assert cache.route("http", long_label, 80).target_prefix == b"http://" + long_label.encode()
    assert cache.route("http", "bücher.example", 80).target_prefix == (
        b"http://xn--bcher-kva.example")


def test_https_route_via_proxy_has_no_absolute_prefix() -> None:
    """A proxied https upstream tunnels (CONNECT): requests stay in origin form."""
    r = routes(HTTPS_PROXY="proxy:3128").route("https", "api.example.com", 443)
    assert r.proxy is not None and r.target_prefix == b""


def test_connect_request_head() -> None:
    """CONNECT names host:port in the line and Host; credentials when given; IPv6 bracketed."""
    assert connect_request("a.example", 443, b"Basic eA==") == (
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n"
        b"Proxy-Authorization: Basic eA==\r\n\r\n"
    )
    assert connect_request("::1", 8443, None).startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\n")


@pytest_twisted.ensureDeferred
async def test_unsupported_proxy_scheme_fails_naming_it() -> None:
    """A socks5 proxy cannot be used: connecting fails with a message naming it."""
    r = routes(HTTP_PROXY="socks5://s:1080").route("http", "10.0.0.5", 80)
    with pytest.raises(ProxyError, match=r"socks5://s:1080 \(HTTP_PROXY\).*unsupported"):
        await r.endpoint.connect(Factory.forProtocol(Protocol))


# -- the CONNECT handshake without sockets -----------------------------------------------------


class FakeProxyEndpoint:
    """Connects the handshake protocol to a StringTransport at once."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.protocol: Any = None

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Build the protocol and attach it to the in-memory transport."""
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


class Inner(Protocol):
    """Records what arrives through the tunnel."""

    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def tunnel(clock: Clock) -> tuple[TunnelEndpoint, FakeProxyEndpoint]:
    """A tunnel to upstream.test:443 over a fake proxy connection, 5 s CONNECT timeout."""
    fake = FakeProxyEndpoint()
    proxy = parse_proxy("http://proxy.test:3128", "HTTPS_PROXY")
    return TunnelEndpoint(clock, fake, proxy, "upstream.test", 443, 5), fake


def failure_of(d: Deferred[Any]) -> Failure:
    """The failure ``d`` already holds."""
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "expected the Deferred to have failed"
    return failures[0]


def test_tunnel_opens_on_200_and_passes_bytes_after_the_head() -> None:
    """After a 200 the inner protocol owns the connection, bytes after the head included."""
    clock = Clock()
    endpoint, fake = tunnel(clock)
    inner = Inner()
    d = endpoint.connect(Factory.forProtocol(lambda: inner))
    assert fake.transport.value() == connect_request("upstream.test", 443, None)
    assert not d.called
    fake.protocol.dataReceived(b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nhel")
    assert d.result is inner
    assert inner.transport is fake.transport
    fake.protocol.dataReceived(b"lo")
    assert inner.data == b"hello"
    fake.protocol.connectionLost(Failure(ConnectionError()))
    assert inner.lost
    assert clock.getDelayedCalls() == []


def test_tunnel_head_may_arrive_in_pieces() -> None:
    """A response head split across reads still opens the tunnel."""
    endpoint, fake = tunnel(Clock())
    inner = Inner()
    d = endpoint.connect(Factory.forProtocol(lambda: inner))
    for piece in (b"HTTP/1.0 2", b"00 OK\r\n", b"\r", b"\n"):
        assert not d.called
        fake.protocol.dataReceived(piece)
    assert d.result is inner


def test_refused_connect_fails_with_the_status() -> None:
    """A non-200 answer fails the connection naming the proxy, target and status."""
    endpoint, fake = tunnel(Clock())
    d = endpoint.connect(Factory.forProtocol(Inner))
    fake.protocol.dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    error = failure_of(d).value
    assert isinstance(error, ProxyError)
    assert str(error) == (
        "proxy http://proxy.test:3128 (HTTPS_PROXY) refused CONNECT to upstream.test:443: "
        "403 Forbidden"
    )
    assert fake.transport.disconnecting


def test_garbage_answer_fails() -> None:
    """Something that is not an HTTP status line fails the connection."""
    endpoint, fake = tunnel(Clock())
    d = endpoint.connect(Factory.forProtocol(Inner))
    fake.protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert "malformed response to CONNECT" in str(failure_of(d).value)


def test_connect_answer_timeout() -> None:
    """A proxy that never answers CONNECT fails the connection after the timeout."""
    clock = Clock()
    endpoint, fake = tunnel(clock)
    d = endpoint.connect(Factory.forProtocol(Inner))
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.2)
    assert "did not answer CONNECT within 5s" in str(failure_of(d).value)
    assert fake.transport.disconnecting


def test_proxy_hanging_up_before_answering_fails() -> None:
    """A proxy that closes before answering fails the connection and stops the timer."""
    clock = Clock()
    endpoint, fake = tunnel(clock)
    d = endpoint.connect(Factory.forProtocol(Inner))
    fake.protocol.connectionLost(Failure(ConnectionError("gone")))
    assert "closed the connection before answering CONNECT" in str(failure_of(d).value)
    assert clock.getDelayedCalls() == []


def test_cancel_while_waiting_for_the_answer_drops_the_connection() -> None:
    """Cancelling the connect aborts the proxy connection and fails with CancelledError."""
    clock = Clock()
    endpoint, fake = tunnel(clock)
    d = endpoint.connect(Factory.forProtocol(Inner))
    d.cancel()
    assert failure_of(d).check(CancelledError)
    assert fake.transport.disconnecting
    assert clock.getDelayedCalls() == []


# -- over real sockets --------------------------------------------------------------------------


class Echo(Protocol):
    """Echoes everything back."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Collect(Protocol):
    """Collects bytes; fires ``got`` once ``want`` bytes have arrived."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.data = b""
        self.got: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.want and not self.got.called:
            self.got.callback(self.data)


@pytest.fixture
def proxy_env() -> Generator[tuple[ForwardProxy, int, int], None, None]:
    """A recording proxy (user:pw required) and an echo server, both on 127.0.0.1."""
    echo = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    echo_port = echo.getHost().port
    fp = ForwardProxy(reactor, hosts={"echo.test": ("127.0.0.1", echo_port)},
                      credentials=("user", "pw"))
    listening = reactor.listenTCP(0, fp.factory(), interface="127.0.0.1")
    yield fp, listening.getHost().port, echo_port
    pytest_twisted.blockon(fp.close())
    pytest_twisted.blockon(listening.stopListening())
    pytest_twisted.blockon(echo.stopListening())


@pytest_twisted.ensureDeferred
async def test_tunnel_through_a_real_proxy(proxy_env: tuple[ForwardProxy, int, int]) -> None:
    """CONNECT with credentials opens a no-delay byte pipe to a name only the proxy resolves."""
    fp, proxy_port, echo_port = proxy_env
    proxy = parse_proxy(f"http://user:pw@127.0.0.1:{proxy_port}", "HTTPS_PROXY")
    endpoint = TunnelEndpoint(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", proxy_port),
                              proxy, "echo.test", echo_port, 5)
    client = Collect(5)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    assert client.transport.getTcpNoDelay()  # type: ignore[union-attr]
    client.transport.write(b"hello")  # type: ignore[union-attr]
    assert await client.got == b"hello"
    assert [(s.method, s.target) for s in fp.seen] == [("CONNECT", f"echo.test:{echo_port}")]
    assert fp.seen[0].headers["proxy-authorization"] == "Basic dXNlcjpwdw=="
    client.transport.loseConnection()  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_wrong_credentials_are_a_407_proxy_error(
    proxy_env: tuple[ForwardProxy, int, int],
) -> None:
    """A proxy answering 407 fails the tunnel with that status in the message."""
    fp, proxy_port, echo_port = proxy_env
    cache = routes(HTTPS_PROXY=f"http://user:wrong@127.0.0.1:{proxy_port}")
    endpoint = cache.route("https", "echo.test", echo_port).endpoint
    with pytest.raises(ProxyError, match=r"refused CONNECT to echo\.test:.*: 407 "):
        await endpoint.connect(Factory.forProtocol(Protocol))
    assert fp.seen[0].headers["proxy-authorization"] == "Basic dXNlcjp3cm9uZw=="


@pytest_twisted.ensureDeferred
async def test_unreachable_proxy_is_named() -> None:
    """A proxy nobody listens on fails with a ProxyError naming it and the reason."""
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    closed = port.getHost().port
    await port.stopListening()
    r = routes(HTTP_PROXY=f"http://127.0.0.1:{closed}").route("http", "10.0.0.5", 80)
    with pytest.raises(ProxyError, match=rf"proxy http://127.0.0.1:{closed} \(HTTP_PROXY\): "
                                         r".*refused"):
        await r.endpoint.connect(Factory.forProtocol(Protocol))


@pytest_twisted.ensureDeferred
async def test_health_probe_goes_through_the_proxy_for_remote_hosts() -> None:
    """Health probes of a non-loopback URL use the proxy (absolute form, credentials)."""
    up = reactor.listenTCP(0, Site(Responder(reactor, "m", 0)), interface="127.0.0.1")
    up_port = up.getHost().port
    fp = ForwardProxy(reactor, hosts={"gpu.test": ("127.0.0.1", up_port)},
                      credentials=("u", "p"))
    listening = reactor.listenTCP(0, fp.factory(), interface="127.0.0.1")
    try:
        env = {"HTTP_PROXY": f"http://u:p@127.0.0.1:{listening.getHost().port}"}
        probe = http_prober(reactor, ProxySettings.from_environ(env))
        assert await probe(f"http://gpu.test:{up_port}/health", 5) == 200
        assert [(s.method, s.target) for s in fp.seen] == [
            ("GET", f"http://gpu.test:{up_port}/health")
        ]
        assert fp.seen[0].headers["proxy-authorization"] == "Basic dTpw"
        assert await probe(f"http://127.0.0.1:{up_port}/health", 5) == 200
        assert len(fp.seen) == 1  # loopback probed directly
    finally:
        await fp.close()
        await listening.stopListening()
        await up.stopListening()
