"""Bookkeeping that waits for a quiet moment instead of delaying the next request.

When an answer has left, the proxy still has work to do for it: the access log line, the
observers' ``request_finished`` (token counts, metrics, the activity row, the capture).
Done at once, that work runs exactly when the client, having read its answer, sends the
next request, which then waits for it. ``Chores`` holds that work and does it:

* right after the next model request has been sent to its upstream (the proxy has nothing
  to do until the upstream answers);
* before any other endpoint answers (so ``/metrics``, the activity API or ``/logs``
  always include every request already answered);
* ``delay`` seconds after the first one was added at the latest (an idle proxy);
* when the service stops.

Chores run in the order they were added; one that raises is logged and the rest still run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

# Longest a chore waits when no request comes to make room for it: short enough that an
# idle service's logs and metrics look immediate, long enough to never fire between a
# one-client benchmark's requests.
CHORE_DELAY = 0.002


class Chores:
    """A queue of deferred bookkeeping, drained at quiet moments (see the module doc)."""

    def __init__(self, reactor: IReactorTime, delay: float = CHORE_DELAY) -> None:
        self._reactor = reactor
        self._delay = delay
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._timer: IDelayedCall | None = None

    def __len__(self) -> int:
        """How many chores wait."""
        return len(self._queue)

    def add(self, chore: Callable[..., Any], *args: Any) -> None:
        """Do ``chore(*args)`` at the next quiet moment."""
        self._queue.append((chore, args))
        if self._timer is None:
            self._timer = self._reactor.callLater(self._delay, self._timed_out)

    def run(self) -> None:
        """Do every waiting chore now, including those they add."""
        queue = self._queue
        while queue:
            chore, args = queue.popleft()
            try:
                chore(*args)
            except Exception:
                log.failure("deferred bookkeeping {chore!r} failed", chore=chore)

    def stop(self) -> None:
        """Do what waits and drop the timer (the service is stopping)."""
        self.run()
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _timed_out(self) -> None:
        # Left running when run() drains early: one timer per ``delay`` at most, instead
        # of one scheduled and cancelled per request.
        self._timer = None
        self.run()
