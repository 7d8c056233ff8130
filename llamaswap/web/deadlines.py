"""Deadlines for slow and idle clients (``clientTimeouts``): heads, bodies, idle keep-alives.

Each connection is in one phase: ``idle`` (waiting for a request), ``head`` (some of a
request head arrived), ``body`` (the head is whole, the body is arriving), ``busy`` (the
request is being answered: no client deadline applies) or ``cut`` (closed by a deadline,
waiting for the socket to go). The channel records phase changes as it goes, which costs
an attribute write; one sweep a fraction of a second apart, across every connection,
closes those past their deadline:

* ``head`` longer than ``requestHeader`` seconds since its first byte: ``408``, close;
* ``body`` receiving less than ``minBodyRate`` bytes a second over a ``requestBody``-second
  stretch (with ``minBodyRate: 0``, nothing at all in that stretch): ``408``, close;
* ``idle`` for ``idle`` seconds: close.

Cut connections are counted and reported in one log line per interval, not one each.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from llamaswap.config.model import ClientTimeouts
from llamaswap.errors import error_body
from llamaswap.web.channel import LlamaSwapChannel

log = Logger(namespace="llamaswap")

IDLE = "idle"
HEAD = "head"
BODY = "body"
BUSY = "busy"
CUT = "cut"

# A cut connection whose socket has not closed this long after is aborted.
ABORT_AFTER = 10.0
# At most one report line about cut connections per this many seconds.
REPORT_EVERY = 10.0
# The sweep runs this often at most and at least, whatever the limits are.
SWEEP_MIN, SWEEP_MAX = 0.05, 1.0

_WHY = {
    HEAD: "the request head did not arrive within clientTimeouts.requestHeader ({limit}s)",
    BODY: "the request body arrived slower than clientTimeouts.minBodyRate ({rate} bytes/s "
    "over {limit}s)",
}


def timeout_response(message: str) -> bytes:
    """A whole ``408 Request Timeout`` answer with an OpenAI-style body, closing."""
    body = json.dumps(error_body(408, message)).encode() + b"\n"
    return (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def sweep_interval(limits: ClientTimeouts) -> float:
    """How often to sweep: a tenth of the shortest limit, within bounds."""
    enabled = [v for v in (limits.request_header, limits.request_body, limits.idle) if v > 0]
    if not enabled:
        return SWEEP_MAX
    return min(SWEEP_MAX, max(SWEEP_MIN, min(enabled) / 10))


class TimedChannel(LlamaSwapChannel):
    """The HTTP channel, telling the site's ``ClientDeadlines`` which phase it is in."""

    phase = IDLE
    phase_since = 0.0
    body_mark = 0
    window_start = 0.0
    deadlines: ClientDeadlines | None = None

    def enter(self, phase: str) -> None:
        """Record that the connection is now in ``phase``."""
        self.phase = phase
        deadlines = self.deadlines
        if deadlines is not None:
            self.phase_since = self.window_start = deadlines.clock.seconds()
        self.body_mark = 0

    def received_body_bytes(self) -> int:
        """How many body bytes the request being received has had so far."""
        request = self.requests[-1] if self.requests else None
        return int(getattr(request, "body_received", 0))

    def connectionMade(self) -> None:
        """Start being watched by the site's deadlines."""
        super().connectionMade()
        deadlines = getattr(getattr(self, "site", None), "deadlines", None)
        if isinstance(deadlines, ClientDeadlines):
            self.deadlines = deadlines
            deadlines.watch(self)
        self.enter(IDLE)

    def resetTimeout(self) -> None:
        """Bytes arrived: on an idle connection they start a request head (and its clock)."""
        if self.phase == IDLE:
            self.enter(HEAD)
        super().resetTimeout()

    def allHeadersReceived(self) -> None:
        """The head is whole: the body's clock starts."""
        self.enter(BODY)
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        """The request is whole: no client deadline while it is answered."""
        self.phase = BUSY
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        """The answer is sent: idle until the next request starts."""
        if self.phase != CUT:
            self.enter(IDLE)
        super().requestDone(request)

    def connectionLost(self, reason: Any = None) -> None:
        """Stop being watched."""
        if self.deadlines is not None:
            self.deadlines.unwatch(self)
        super().connectionLost(reason)


class ClientDeadlines:
    """Sweeps a site's connections and closes those past a ``clientTimeouts`` deadline."""

    def __init__(self, clock: Any, limits: Callable[[], ClientTimeouts]) -> None:
        """``clock``: an IReactorTime; ``limits``: the current settings (read every sweep)."""
        self.clock = clock
        self.limits = limits
        self.channels: set[TimedChannel] = set()
        self.counts: Counter[str] = Counter()
        self._next: IDelayedCall | None = None
        self._last_report = 0.0

    def watch(self, channel: TimedChannel) -> None:
        """Watch a new connection."""
        self.channels.add(channel)

    def unwatch(self, channel: TimedChannel) -> None:
        """Forget a closed connection."""
        self.channels.discard(channel)

    def start(self) -> None:
        """Sweep from now on."""
        if self._next is None:
            self._last_report = self.clock.seconds()
            self._schedule(self.limits())

    def stop(self) -> None:
        """Stop sweeping (what was counted and not yet reported is reported now)."""
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self.report(self.clock.seconds(), force=True)

    def _schedule(self, limits: ClientTimeouts) -> None:
        self._next = self.clock.callLater(sweep_interval(limits), self.sweep)

    def sweep(self) -> None:
        """Close every connection past its deadline, report, and schedule the next sweep."""
        now = self.clock.seconds()
        limits = self.limits()
        try:
            for channel in list(self.channels):
                self._check(channel, now, limits)
            self.report(now)
        except Exception:
            log.failure("checking client deadlines failed")
        self._schedule(limits)

    def _check(self, channel: TimedChannel, now: float, limits: ClientTimeouts) -> None:
        transport = channel.transport
        if transport is None or not getattr(transport, "connected", True):
            # Gone without telling the channel (a WebSocket upgrade takes its connectionLost).
            self.unwatch(channel)
            return
        phase = channel.phase
        if phase == HEAD:
            if limits.request_header and now - channel.phase_since > limits.request_header:
                self._cut(channel, HEAD, now, limits)
        elif phase == BODY:
            window = now - channel.window_start
            if limits.request_body and window >= limits.request_body:
                received = channel.received_body_bytes()
                got = received - channel.body_mark
                if got <= 0 or got < limits.min_body_rate * window:
                    self._cut(channel, BODY, now, limits)
                else:
                    channel.window_start, channel.body_mark = now, received
        elif phase == IDLE:
            if limits.idle and now - channel.phase_since > limits.idle:
                self._cut(channel, IDLE, now, limits)
        elif phase == CUT and now - channel.phase_since > ABORT_AFTER:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()

    def _cut(self, channel: TimedChannel, why: str, now: float, limits: ClientTimeouts) -> None:
        channel.phase, channel.phase_since = CUT, now
        self.counts[why] += 1
        transport = channel.transport
        if transport is None:
            return
        if why != IDLE and not getattr(transport, "disconnecting", False):
            # (A connection already closing, after a 413 say, gets no second answer.)
            limit = limits.request_header if why == HEAD else limits.request_body
            message = "request timed out: " + _WHY[why].format(
                limit=f"{limit:g}", rate=f"{limits.min_body_rate:g}"
            )
            transport.write(timeout_response(message))
        transport.loseConnection()

    def report(self, now: float, force: bool = False) -> None:
        """Log what was cut since the last report, at most once per ``REPORT_EVERY``."""
        if not self.counts or (not force and now - self._last_report < REPORT_EVERY):
            return
        counts, self.counts = self.counts, Counter()
        period = f"{max(now - self._last_report, 0):.0f}s"
        self._last_report = now
        slow = counts[HEAD] + counts[BODY]
        if slow:
            log.warn(
                "closed {slow} slow client connections in the last {period}: {head} sent no "
                "whole request head in time, {body} sent the body too slowly "
                "(clientTimeouts); {open} client connections open",
                slow=slow, period=period, head=counts[HEAD], body=counts[BODY],
                open=len(self.channels),
            )
        if counts[IDLE]:
            log.debug(
                "closed {idle} idle keep-alive client connections in the last {period}",
                idle=counts[IDLE], period=period,
            )


__all__ = ["ClientDeadlines", "TimedChannel", "sweep_interval", "timeout_response"]
