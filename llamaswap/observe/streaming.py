"""A bounded, drop-on-overflow writer for long-lived responses (log streams, SSE).

The writer is the request's push producer: when the client's transport is full it pauses
us, we queue up to a byte or item limit and drop the rest, and on resume we flush the
queue followed by a marker saying how much was lost. The writer never blocks and never
lets a slow client grow memory without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

_log = Logger()


def drop_marker(dropped: int) -> bytes:
    """The line inserted where a log reader lost data."""
    return f"\n— {dropped} bytes dropped —\n".encode()


@implementer(IPushProducer)
class BoundedStream:
    """Writes to ``request`` while it keeps up; queues at most ``max_bytes``/``max_items``."""

    def __init__(
        self,
        request: Request,
        *,
        max_bytes: int = 256 * 1024,
        max_items: int | None = None,
        marker: Callable[[int], bytes] | None = drop_marker,
    ) -> None:
        """Register as ``request``'s streaming producer and watch for the client leaving."""
        self._request = request
        self._max_bytes = max_bytes
        self._max_items = max_items
        self._marker = marker
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._paused = False
        self.dropped_bytes = 0
        self.dropped_items = 0
        self._pending_marker = 0
        self.closed = False
        self._on_close: list[Callable[[], None]] = []
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._gone)

    def on_close(self, cb: Callable[[], None]) -> None:
        """Call ``cb`` once when the stream ends (client gone or ``close()``)."""
        if self.closed:
            cb()
        else:
            self._on_close.append(cb)

    def write(self, data: bytes) -> None:
        """Send ``data`` now, queue it while paused, or drop it when the queue is full."""
        if self.closed or not data:
            return
        if not self._paused and not self._queue:
            self._request.write(data)
            return
        full = self._queued + len(data) > self._max_bytes
        if self._max_items is not None and len(self._queue) >= self._max_items:
            full = True
        if full:
            self.dropped_bytes += len(data)
            self.dropped_items += 1
            self._pending_marker += len(data)
            return
        self._queue.append(data)
        self._queued += len(data)

    def pauseProducing(self) -> None:
        """The client is not keeping up: queue from now on."""
        self._paused = True

    def resumeProducing(self) -> None:
        """Flush the queue, then the drop marker, while the client keeps accepting."""
        self._paused = False
        while self._queue and not self._paused and not self.closed:
            data = self._queue.popleft()
            self._queued -= len(data)
            self._request.write(data)
        if not self._queue and self._pending_marker and not self.closed:
            dropped, self._pending_marker = self._pending_marker, 0
            if self._marker is not None:
                self._request.write(self._marker(dropped))
            else:
                _log.warn("slow event reader: dropped {n} messages", n=self.dropped_items)

    def stopProducing(self) -> None:
        """The connection is going away."""
        self._close(finish=False)

    def close(self) -> None:
        """End the response (server shutdown or reload)."""
        self._close(finish=True)

    def _gone(self, result: object) -> None:
        self._close(finish=False)
        if isinstance(result, Failure):
            return None
        return None

    def _close(self, finish: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        callbacks, self._on_close = self._on_close, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                _log.failure("stream close callback failed")
        if finish:
            try:
                self._request.unregisterProducer()
                self._request.finish()
            except Exception:
                _log.debug("stream closed after the client went away")
