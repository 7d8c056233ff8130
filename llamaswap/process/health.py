"""Readiness probing: an HTTP prober and the polling schedule used while starting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from llamaswap.httpclient import QuietHTTPConnectionPool
from llamaswap.proxyenv import DIRECT, ProxySettings
from llamaswap.proxyroute import RouteCache, build_agent

_log = Logger(namespace="llamaswap.process.health")

# The polling schedule: first probe at spawn, then FIRST_DELAY growing by FACTOR,
# capped at a ceiling that is MIN_CEILING for quick starters and grows to
# CEILING_FRACTION of the time spent starting, up to MAX_CEILING. A swap thus costs
# at most ~max(50 ms, 5 %) more than the upstream's own start time.
FIRST_DELAY = 0.01
FACTOR = 1.5
MIN_CEILING = 0.05
MAX_CEILING = 0.25
CEILING_FRACTION = 0.05
PROBE_TIMEOUT = 5.0

Prober = Callable[[str, float], "Deferred[int]"]
"""prober(url, timeout) -> Deferred firing with the HTTP status (errback: not reachable)."""


def go_duration(seconds: float) -> str:
    """Format seconds like Go's time.Duration (``15s``, ``2m0s``, ``500ms``)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{secs:g}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


class _Reactor(Protocol):
    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any
    ) -> IDelayedCall: ...

    def seconds(self) -> float: ...


def next_delay(previous: float | None, elapsed: float) -> float:
    """The wait before the next probe, given the last wait and the time since spawn."""
    if previous is None:
        return FIRST_DELAY
    ceiling = min(MAX_CEILING, max(MIN_CEILING, elapsed * CEILING_FRACTION))
    return min(previous * FACTOR, ceiling)


def http_prober(reactor: Any, proxies: ProxySettings = DIRECT) -> Prober:
    """A prober doing one GET per call on a fresh connection (no keep-alive).

    Probes travel like proxied traffic (SPEC 3.4): through the HTTP proxy ``proxies``
    names for the URL's host, directly for loopback (the usual local model).
    """
    pool = QuietHTTPConnectionPool(reactor, persistent=False)
    agent = build_agent(reactor, RouteCache(reactor, proxies, PROBE_TIMEOUT), pool)

    def probe(url: str, timeout: float) -> Deferred[int]:
        d = agent.request(b"GET", url.encode(), Headers({b"user-agent": [b"llamaswap-health"]}))

        def got(response: IResponse) -> int:
            response.deliverBody(_Discard())
            return int(response.code)

        status: Deferred[int] = d.addCallback(got)
        status.addTimeout(timeout, reactor)
        return status

    return probe


class _Discard:
    """A body protocol that drops the body and closes the connection."""

    transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        """Stop reading the body at once."""
        self.transport = transport
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        """Ignore body bytes."""

    def connectionLost(self, reason: Failure) -> None:
        """Nothing to clean up."""


class HealthPoller:
    """Polls ``url`` until it answers 200; ``on_ready`` is called once then.

    Probe failures and other statuses are retried on the schedule of
    ``next_delay``; the deadline is the caller's job. ``stop()`` cancels the
    pending wait and any probe in flight.
    """

    def __init__(
        self, reactor: _Reactor, prober: Prober, url: str, on_ready: Callable[[], None]
    ) -> None:
        self._reactor = reactor
        self._prober = prober
        self.url = url
        self._on_ready = on_ready
        self._started = reactor.seconds()
        self._delay: float | None = None
        self._timer: IDelayedCall | None = None
        self._inflight: Deferred[int] | None = None
        self._stopped = False
        self._poked = False
        self.probes = 0
        self.last_result = ""

    def start(self) -> None:
        """Send the first probe now."""
        self._probe()

    def poke(self) -> None:
        """The upstream said something (a log line): it may be ready, so probe now.

        A probe in flight is followed at once by another instead of waiting for the timer,
        so a server that logs when it is ready is seen within a probe's round trip.
        """
        if self._stopped:
            return
        if self._inflight is not None:
            self._poked = True
        elif self._timer is not None and self._timer.active():
            self._timer.cancel()
            self._probe()

    def stop(self) -> None:
        """Cancel everything; on_ready will not be called."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._inflight is not None:
            d, self._inflight = self._inflight, None
            d.cancel()

    def _probe(self) -> None:
        """Send one probe."""
        self._timer = None
        if self._stopped:
            return
        self.probes += 1
        d = self._prober(self.url, PROBE_TIMEOUT)
        self._inflight = d
        d.addCallbacks(self._got_status, self._got_error)
        d.addErrback(lambda f: _log.failure("health poller callback failed", f))

    def _got_status(self, status: int) -> None:
        """Ready on 200, else wait and retry."""
        self._inflight = None
        if self._stopped:
            return
        if status == 200:
            self._stopped = True
            self._on_ready()
            return
        self.last_result = f"HTTP {status}"
        self._schedule()

    def _got_error(self, failure: Failure) -> None:
        """Not reachable yet: wait and retry."""
        self._inflight = None
        if self._stopped:
            return
        self.last_result = failure.getErrorMessage() or failure.type.__name__
        self._schedule()

    def _schedule(self) -> None:
        """Arm the timer for the next probe (or probe now, when poked meanwhile)."""
        self._delay = next_delay(self._delay, self._reactor.seconds() - self._started)
        if self._poked:
            self._poked = False
            self._probe()
            return
        self._timer = self._reactor.callLater(self._delay, self._probe)
