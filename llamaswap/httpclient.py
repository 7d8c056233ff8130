"""Client-side plumbing for upstream connections: quiet pools, fast endpoints, timeouts."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ISystemHandle,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from zope.interface import implementer

log = Logger(namespace="llamaswap")


class _QuietClientFactory(_HTTP11ClientFactory):
    """The pool's per-connection factory, without "Starting factory" log lines."""

    noisy = False


class QuietHTTPConnectionPool(HTTPConnectionPool):
    """An HTTPConnectionPool whose connections open and close silently.

    Health probes and proxied requests open many connections; the stock pool logs
    two info lines for each, which buries what operators need to see.
    """

    _factory: Any = _QuietClientFactory


# Happy-eyeballs spacing for names that resolve to several addresses. Twisted's default
# (0.3 s) is paid in full whenever the first address is refused, e.g. ``localhost`` ->
# ::1 while the server listens on 127.0.0.1 only: every swap cost 300 ms more.
ATTEMPT_DELAY = 0.01


@implementer(IStreamClientEndpoint)
class _FirstThatConnects:
    """Try endpoints one after another until one connects (the last error if none does)."""

    def __init__(self, endpoints: list[IStreamClientEndpoint]) -> None:
        self._endpoints = endpoints

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect with the first endpoint, falling back to the next on failure."""
        d: Deferred[IProtocol] = self._endpoints[0].connect(factory)
        for endpoint in self._endpoints[1:]:
            d.addErrback(_connect_next, endpoint, factory)
        return d


def _connect_next(
    _failure: Failure, endpoint: IStreamClientEndpoint, factory: IProtocolFactory
) -> Deferred[IProtocol]:
    return endpoint.connect(factory)


def upstream_endpoint(
    reactor: Any, host: str, port: int, timeout: float
) -> IStreamClientEndpoint:
    """A client endpoint for an upstream host without needless resolver or eyeball delays.

    IP literals connect directly; ``localhost`` (llama-swap's default proxy host) tries
    127.0.0.1, then ::1, with no resolver thread; other names use HostnameEndpoint with a
    short attempt delay.
    """
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    if host.lower() in ("localhost", "localhost."):
        return _FirstThatConnects([
            TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout),
            TCP6ClientEndpoint(reactor, "::1", port, timeout=timeout),
        ])
    return HostnameEndpoint(reactor, host, port, timeout=timeout, attemptDelay=ATTEMPT_DELAY)


# Go's net.Dialer: a KeepAlive of zero means keep-alive probes every 15 s.
GO_DEFAULT_KEEPALIVE = 15


def set_keepalive(transport: Any, period: float) -> None:
    """Turn TCP keep-alive on with probes after ``period`` idle seconds, then every ``period``.

    This is what Go's dialer does with ``KeepAlive``: a dead peer (a crashed host, a dropped
    NAT entry) is noticed instead of leaving a pooled connection hanging.
    """
    if period <= 0 or not ITCPTransport.providedBy(transport):
        return
    transport.setTcpKeepAlive(True)
    if not ISystemHandle.providedBy(transport):
        return
    sock = transport.getHandle()
    if not isinstance(sock, socket.socket):
        return
    seconds = max(1, int(period))
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL"):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, seconds)


@implementer(IStreamClientEndpoint)
class KeepAliveEndpoint:
    """A TCP client endpoint whose connections send keep-alive probes (``timeouts.keepalive``)."""

    def __init__(self, endpoint: IStreamClientEndpoint, period: float) -> None:
        self._endpoint = endpoint
        self.period = period

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect, then set keep-alive on the new socket."""
        return self._endpoint.connect(factory).addCallback(self._configure)

    def _configure(self, protocol: IProtocol) -> IProtocol:
        set_keepalive(getattr(protocol, "transport", None), self.period)
        return protocol


@implementer(IHandshakeListener)
class _HandshakeWatch(Protocol):
    """Sits between the TLS layer and the real protocol until the handshake is over."""

    def __init__(self, inner: IProtocol, clock: IReactorTime, limit: float,
                 where: str) -> None:
        self.inner = inner
        self._clock = clock
        self._limit = limit
        self._where = where
        self._timer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        """Start the clock; the real protocol writes straight to the TLS transport."""
        self.transport = transport
        self._timer = self._clock.callLater(self._limit, self._expired)
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        """Hand application bytes on."""
        self.inner.dataReceived(data)

    def handshakeCompleted(self) -> None:
        """In time: stop the clock (the inner protocol may rebind its methods: no shortcut)."""
        self._stop()
        if IHandshakeListener.providedBy(self.inner):
            self.inner.handshakeCompleted()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Pass the loss on."""
        self._stop()
        self.inner.connectionLost(reason)

    def _stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expired(self) -> None:
        self._timer = None
        log.warn("TLS handshake with {where} did not finish within {limit:g}s "
                 "(timeouts.tlsHandshake); connection closed", where=self._where,
                 limit=self._limit)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class _WatchingFactory(Factory):
    """Builds the caller's protocol wrapped in a _HandshakeWatch."""

    noisy = False

    def __init__(self, factory: IProtocolFactory, clock: IReactorTime, limit: float,
                 where: str) -> None:
        self._factory = factory
        self._clock = clock
        self._limit = limit
        self._where = where

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """The caller's protocol, watched."""
        inner = self._factory.buildProtocol(addr)  # type: ignore[arg-type]
        if inner is None:
            return None
        return _HandshakeWatch(inner, self._clock, self._limit, self._where)


@implementer(IStreamClientEndpoint)
class HandshakeDeadlineEndpoint:
    """A TLS client endpoint that aborts a connection whose handshake outlasts ``limit`` s.

    ``timeouts.tlsHandshake``: an https upstream that accepts TCP but never finishes the TLS
    handshake fails the request instead of holding it until the response-header timeout.
    """

    def __init__(self, tls_endpoint: IStreamClientEndpoint, clock: IReactorTime, limit: float,
                 where: str) -> None:
        self._endpoint = tls_endpoint
        self._clock = clock
        self.limit = limit
        self._where = where

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect with the handshake watched; fires with the caller's own protocol."""
        watching = _WatchingFactory(factory, self._clock, self.limit, self._where)
        return self._endpoint.connect(watching).addCallback(_unwatched)


def _unwatched(protocol: IProtocol) -> IProtocol:
    return protocol.inner if isinstance(protocol, _HandshakeWatch) else protocol
