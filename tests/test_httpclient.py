"""Upstream endpoints: no resolver thread and no happy-eyeballs wait for localhost."""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from llamaswap.httpclient import ATTEMPT_DELAY, upstream_endpoint


def test_ip_literals_connect_directly() -> None:
    """IPv4 and IPv6 literals get plain TCP endpoints."""
    reactor = MemoryReactorClock()
    assert isinstance(upstream_endpoint(reactor, "127.0.0.1", 80, 5), TCP4ClientEndpoint)
    assert isinstance(upstream_endpoint(reactor, "::1", 80, 5), TCP6ClientEndpoint)


def test_localhost_tries_ipv4_loopback_first_without_resolving() -> None:
    """``localhost`` connects to 127.0.0.1 at once: no resolver, no 300 ms eyeball delay."""
    reactor = MemoryReactorClock()
    upstream_endpoint(reactor, "localhost", 5800, 5).connect(Factory.forProtocol(Protocol))
    assert [(host, port) for host, port, *_ in reactor.tcpClients] == [("127.0.0.1", 5800)]


def test_localhost_falls_back_to_ipv6_loopback_when_refused() -> None:
    """A server that listens on ::1 only is still reached through ``localhost``."""
    reactor = MemoryReactorClock()
    d = upstream_endpoint(reactor, "localhost", 5800, 5).connect(Factory.forProtocol(Protocol))
    _host, _port, factory, _timeout, _bind = reactor.tcpClients[0]
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert [host for host, *_ in reactor.tcpClients] == ["127.0.0.1", "::1"]
    outcome: list[object] = []
    d.addBoth(outcome.append)
    assert outcome == [], "still connecting to ::1, not failed"


def test_other_names_use_a_short_attempt_delay() -> None:
    """Names that resolve to several addresses are raced with a short delay, not 0.3 s."""
    endpoint = upstream_endpoint(MemoryReactorClock(), "gpu-box.lan", 80, 5)
    assert isinstance(endpoint, HostnameEndpoint)
    assert endpoint._attemptDelay == ATTEMPT_DELAY
