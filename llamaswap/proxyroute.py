"""How to reach an upstream: directly, through an HTTP proxy, or through a CONNECT tunnel.

A ``Route`` is decided once per (scheme, host, port) by ``RouteCache`` from the
``ProxySettings`` read at startup:

* direct: a TCP endpoint (TLS-wrapped for ``https``), exactly what was used before;
* ``http://`` through a proxy: the proxy's endpoint, with requests written in absolute form
  (``POST http://10.0.0.5:8080/v1/... HTTP/1.1``) and ``Proxy-Authorization`` added;
* ``https://`` through a proxy: ``CONNECT host:port`` on the proxy connection, then TLS to
  the upstream inside the tunnel (``TunnelEndpoint``; Twisted has no CONNECT client).

Failures to reach the proxy, or a refused CONNECT, fail the connection with ``ProxyError``,
whose message names the proxy and the reason.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import HostnameAddress
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, ProxyAgent
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

from llamaswap.httpclient import HandshakeDeadlineEndpoint, KeepAliveEndpoint, upstream_endpoint
from llamaswap.proxyenv import DIRECT, ProxySettings, ProxyURL, idna_host

MAX_CONNECT_HEAD = 16 * 1024


class ProxyError(ConnectError):
    """The proxy could not be reached, or it refused the tunnel; the message says which."""

    def __init__(self, message: str) -> None:
        super().__init__(string=message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@implementer(IStreamClientEndpoint)
class _NamedProxyEndpoint:
    """The proxy's endpoint; connection failures become ProxyErrors naming the proxy."""

    def __init__(self, endpoint: IStreamClientEndpoint, proxy: ProxyURL) -> None:
        self._endpoint = endpoint
        self._proxy = proxy

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect to the proxy."""
        d = self._endpoint.connect(factory)

        def named(failure: Failure) -> Failure:
            if failure.check(CancelledError, ProxyError):
                return failure
            return Failure(ProxyError(f"proxy {self._proxy.display}: "
                                      f"{failure.getErrorMessage()}"))

        return d.addErrback(named)


@implementer(IStreamClientEndpoint)
class _UnsupportedProxy:
    """A proxy whose scheme llamaswap cannot speak (socks5...): every connection fails."""

    def __init__(self, proxy: ProxyURL) -> None:
        self._proxy = proxy

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Fail at once, saying why."""
        return fail(ProxyError(f"proxy {self._proxy.display}: unsupported proxy scheme "
                               f"'{self._proxy.scheme}' (only http and https proxies)"))


def _host_bytes(host: str) -> bytes:
    """``host`` for the wire: punycode for international names, IPv6 in brackets."""
    if ":" in host:
        return b"[" + host.encode("ascii") + b"]"
    return idna_host(host).encode("ascii")


def connect_request(host: str, port: int, authorization: bytes | None) -> bytes:
    """The ``CONNECT host:port`` request head (with Proxy-Authorization when given)."""
    authority = _host_bytes(host) + b":%d" % port
    head = b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (authority, authority)
    if authorization is not None:
        head += b"Proxy-Authorization: " + authorization + b"\r\n"
    return head + b"\r\n"


class _ConnectHandshake(Protocol):
    """Sends CONNECT, reads the proxy's answer, then hands the connection to the real protocol.

    After a 200 the real protocol gets this connection's transport as its own, and this
    object's ``dataReceived``/``connectionLost`` are rebound to the real protocol's, so
    the tunnel adds no work per chunk.
    """

    def __init__(self, tunnel: TunnelEndpoint, factory: IProtocolFactory,
                 result: Deferred[IProtocol]) -> None:
        self._tunnel = tunnel
        self._factory = factory
        self._result = result
        self._buf = b""
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Ask the proxy for the tunnel; give up if it does not answer in time."""
        tunnel = self._tunnel
        if self._result.called:  # cancelled while connecting
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if ITCPTransport.providedBy(self.transport):
            # the tunnelled protocol only sees this socket through TLS: no Nagle, as in Go
            self.transport.setTcpNoDelay(True)
        self.transport.write(tunnel.request)  # type: ignore[union-attr]
        if tunnel.timeout > 0:
            self._timer = tunnel.reactor.callLater(tunnel.timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        """Collect the proxy's response head; 200 opens the tunnel, anything else fails."""
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_CONNECT_HEAD:
                self._fail("sent an oversized response to CONNECT")
            return
        head, rest = self._buf[:end], self._buf[end + 4 :]
        self._buf = b""
        status = head.split(b"\r\n", 1)[0]
        parts = status.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            self._fail(f"sent a malformed response to CONNECT: {_text(status)!r}")
            return
        if parts[1] != b"200":  # Go accepts 200 only
            self._fail(f"refused CONNECT to {self._tunnel.authority}: "
                       f"{_text(b' '.join(parts[1:]))}")
            return
        self._stop_timer()
        inner = self._factory.buildProtocol(
            HostnameAddress(_host_bytes(self._tunnel.host).strip(b"[]"), self._tunnel.port)
        )
        if inner is None:
            self.transport.abortConnection()  # type: ignore[union-attr]
            self._result.errback(ConnectError(string="protocol factory refused the connection"))
            return
        self.dataReceived = inner.dataReceived  # type: ignore[method-assign]
        self.connectionLost = inner.connectionLost  # type: ignore[method-assign,assignment]
        inner.makeConnection(self.transport)  # type: ignore[arg-type]
        self._result.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """The proxy hung up before the tunnel was open."""
        why = reason.getErrorMessage() if reason is not None else "connection lost"
        self._fail(f"closed the connection before answering CONNECT ({why})", abort=False)

    def cancel(self) -> None:
        """The caller gave up: drop the proxy connection."""
        self._stop_timer()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(f"did not answer CONNECT within {self._tunnel.timeout:g}s")

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fail(self, why: str, abort: bool = True) -> None:
        self._stop_timer()
        if abort and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        if not self._result.called:
            self._result.errback(ProxyError(f"proxy {self._tunnel.proxy.display} {why}"))


def _text(data: bytes) -> str:
    return data.decode("latin-1")


@implementer(IStreamClientEndpoint)
class TunnelEndpoint:
    """Connects to ``host``:``port`` through an HTTP proxy's CONNECT method.

    Wrap it with ``wrapClientTLS`` for TLS to the upstream inside the tunnel. The connect
    Deferred fires with the protocol built by the caller's factory once the proxy has
    answered 200, fails with ``ProxyError`` otherwise, and can be cancelled.
    """

    def __init__(self, reactor: Any, proxy_endpoint: IStreamClientEndpoint, proxy: ProxyURL,
                 host: str, port: int, timeout: float) -> None:
        self.reactor = reactor
        self.proxy = proxy
        self.host = host
        self.port = port
        self.timeout = timeout
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.request = connect_request(host, port, proxy.authorization)
        self._proxy_endpoint = proxy_endpoint

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Open the proxy connection, ask for the tunnel, then connect ``factory`` through it."""
        handshake: list[_ConnectHandshake] = []
        connecting: list[Deferred[IProtocol]] = []

        def cancel(_: Deferred[IProtocol]) -> None:
            if handshake:
                handshake[0].cancel()
            elif connecting:
                connecting[0].cancel()

        result: Deferred[IProtocol] = Deferred(cancel)
        proto = _ConnectHandshake(self, factory, result)
        handshake_factory = Factory.forProtocol(lambda: proto)
        handshake_factory.noisy = False
        d = self._proxy_endpoint.connect(handshake_factory)
        connecting.append(d)

        def connected(_: IProtocol) -> None:
            handshake.append(proto)

        def failed(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        d.addCallbacks(connected, failed)
        return result


@attrs.frozen
class Route:
    """Where connections for one upstream go and how requests on them are written."""

    endpoint: IStreamClientEndpoint
    proxy: ProxyURL | None = None
    target_prefix: bytes = b""
    """``http://host:port`` when requests must use the absolute form (http via a proxy)."""
    proxy_headers: tuple[tuple[bytes, bytes], ...] = ()
    """Headers every request through the proxy carries (Proxy-Authorization)."""


@implementer(IAgentEndpointFactory)
class RouteCache:
    """Routes (and their endpoints) built once per (scheme, host, port), for one connect timeout."""

    def __init__(
        self,
        reactor: Any,
        proxies: ProxySettings = DIRECT,
        connect_timeout: float = 0,
        tls_policy: IPolicyForHTTPS | None = None,
        *,
        keepalive: float = 0,
        tls_handshake: float = 0,
    ) -> None:
        """``keepalive``: TCP keep-alive period of new connections (0: off).

        ``tls_handshake``: most seconds a TLS handshake may take (0: no limit).
        """
        self.reactor = reactor
        self.proxies = proxies
        self.timeout = connect_timeout or 30
        self.keepalive = keepalive
        self.tls_handshake = tls_handshake
        self._tls = tls_policy
        self._routes: dict[tuple[str, str, int], Route] = {}
        self._proxy_endpoints: dict[ProxyURL, IStreamClientEndpoint] = {}
        self._by_uri: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def route(self, scheme: str, host: str, port: int) -> Route:
        """The route to ``scheme://host:port`` (decided once, then cached)."""
        key = (scheme, host, port)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._decide(scheme, host, port)
        return route

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The endpoint for ``uri`` (for an Agent; absolute-form routes need ``build_agent``).

        Keyed by the URI's raw fields: Agent asks for every request, pooled or not.
        """
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._by_uri.get(key)
        if endpoint is None:
            endpoint = self._by_uri[key] = self.route(
                uri.scheme.decode("ascii"), uri.host.decode("ascii"), uri.port
            ).endpoint
        return endpoint

    def _tls_policy(self) -> IPolicyForHTTPS:
        if self._tls is None:
            self._tls = BrowserLikePolicyForHTTPS()
        return self._tls

    def _decide(self, scheme: str, host: str, port: int) -> Route:
        if scheme not in ("http", "https"):
            raise SchemeNotSupported(f"unsupported scheme: {scheme!r}")
        proxy = self.proxies.proxy_for(scheme, host, port)
        if proxy is None:
            endpoint = self._tcp(host, port)
            if scheme == "https":
                endpoint = self._with_tls(endpoint, host, port)
            return Route(endpoint)
        proxy_endpoint = self._proxy_endpoint(proxy)
        auth = proxy.authorization
        if scheme == "http":
            netloc = _host_bytes(host) + (b":%d" % port if port != 80 else b"")
            headers = ((b"Proxy-Authorization", auth),) if auth is not None else ()
            return Route(proxy_endpoint, proxy, b"http://" + netloc, headers)
        tunnel = TunnelEndpoint(self.reactor, proxy_endpoint, proxy, host, port, self.timeout)
        return Route(self._with_tls(tunnel, host, port), proxy)

    def _proxy_endpoint(self, proxy: ProxyURL) -> IStreamClientEndpoint:
        """One endpoint per proxy, shared by every route through it."""
        endpoint = self._proxy_endpoints.get(proxy)
        if endpoint is not None:
            return endpoint
        if not proxy.supported:
            endpoint = _UnsupportedProxy(proxy)
        else:
            endpoint = self._tcp(proxy.host, proxy.port)
            if proxy.scheme == "https":
                endpoint = self._with_tls(endpoint, proxy.host, proxy.port)
            endpoint = _NamedProxyEndpoint(endpoint, proxy)
        self._proxy_endpoints[proxy] = endpoint
        return endpoint

    def _tcp(self, host: str, port: int) -> IStreamClientEndpoint:
        """A TCP endpoint to ``host``:``port``, with keep-alive when configured."""
        endpoint = upstream_endpoint(self.reactor, host, port, self.timeout)
        if self.keepalive > 0:
            endpoint = KeepAliveEndpoint(endpoint, self.keepalive)
        return endpoint

    def _with_tls(self, endpoint: IStreamClientEndpoint, host: str,
                  port: int) -> IStreamClientEndpoint:
        creator = self._tls_policy().creatorForNetloc(host.encode("idna"), port)
        tls = wrapClientTLS(creator, endpoint)
        if self.tls_handshake > 0:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            tls = HandshakeDeadlineEndpoint(tls, self.reactor, self.tls_handshake, where)
        return tls


@implementer(IAgent)
class RoutingAgent:
    """An Agent that sends each request along its route: direct/tunnelled, or via an HTTP proxy."""

    def __init__(self, reactor: Any, routes: RouteCache, pool: Any) -> None:
        self._reactor = reactor
        self._routes = routes
        self._pool = pool
        self._direct = Agent.usingEndpointFactory(reactor, routes, pool=pool)
        self._via: dict[IStreamClientEndpoint, IAgent] = {}

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """Issue ``method uri`` along the route of ``uri``'s scheme, host and port."""
        parsed = URI.fromBytes(uri)
        route = self._routes.route(
            parsed.scheme.decode("ascii"), parsed.host.decode("ascii"), parsed.port
        )
        if not route.target_prefix:
            return self._direct.request(method, uri, headers, bodyProducer)
        agent = self._via.get(route.endpoint)
        if agent is None:
            agent = self._via[route.endpoint] = ProxyAgent(
                route.endpoint, self._reactor, self._pool
            )
        if route.proxy_headers:
            headers = Headers() if headers is None else headers.copy()
            for name, value in route.proxy_headers:
                headers.setRawHeaders(name, [value])
        return agent.request(method, uri, headers, bodyProducer)


def build_agent(reactor: Any, routes: RouteCache, pool: Any) -> IAgent:
    """A plain endpoint-factory Agent when no proxy can apply, else a ``RoutingAgent``."""
    if not routes.proxies.active:
        return Agent.usingEndpointFactory(reactor, routes, pool=pool)
    return RoutingAgent(reactor, routes, pool)
