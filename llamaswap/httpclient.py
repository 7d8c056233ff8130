"""Client-side plumbing for upstream connections: quiet pools and fast endpoints."""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from zope.interface import implementer


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
