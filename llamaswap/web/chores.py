"""Bookkeeping that waits for a quiet moment instead of delaying the next request.

When an answer has left, the proxy still has work to do for it: the access log line, the
observers' ``request_finished`` (token counts, metrics, the activity row, the capture).
Done at once, that work runs exactly when the client, having read its answer, sends the
next request, which then waits for it. ``Chores`` holds that work and does it when the
proxy would otherwise wait:

* on the reactor turn after a chore was added, and right after the next model request
  has been sent to its upstream, one chore at a time for as long as no socket has
  something for the reactor (an answer arriving, a request, a client ready for more): the
  proxy works while the client reads its answer or the upstream computes, and a chore
  never makes an arrived answer or request wait for more than itself;
* whatever the sockets say, when more than ``backlog`` chores wait (a proxy that is
  never idle does them as it goes, as before);
* before any other endpoint answers (so ``/metrics``, the activity API or ``/logs``
  always include every request already answered);
* ``delay`` seconds after the first one was added at the latest;
* when the service stops.

Whether a socket is ready is asked of the reactor's own poller (``epoll_wait`` with no
timeout, under half a microsecond); a reactor without one counts as always idle, so every
chore runs at its first chance.

Chores run in the order they were added; one that raises is logged and the rest still run.
"""

from __future__ import annotations

import select
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

# More waiting than this and chores run whatever the sockets say: a busy proxy keeps up
# with its bookkeeping a request at a time instead of in one burst every ``delay``.
CHORE_BACKLOG = 16


def io_waiting_probe(reactor: object) -> Callable[[], bool]:
    """A call that says whether the reactor has a ready socket (or pipe) to attend to.

    Asks the epoll or poll object of twisted's ``EPollReactor`` / ``PollReactor`` (the
    private ``_poller``), which leaves what it reports for the reactor's own wait. Any
    other reactor: never.
    """
    poller = getattr(reactor, "_poller", None)
    epoll = getattr(select, "epoll", None)
    poll_type = type(select.poll()) if hasattr(select, "poll") else None
    if epoll is not None and isinstance(poller, epoll):
        args: tuple[int, ...] = (0, 1)  # no wait, at most one event
    elif poll_type is not None and isinstance(poller, poll_type):
        args = (0,)
    else:
        return lambda: False
    ask = poller.poll

    def io_waiting() -> bool:
        try:
            return bool(ask(*args))
        except (OSError, ValueError):  # a poller closed with its reactor: nothing waits
            return False

    return io_waiting


class Chores:
    """A queue of deferred bookkeeping, drained at quiet moments (see the module doc)."""

    def __init__(
        self,
        reactor: IReactorTime,
        delay: float = CHORE_DELAY,
        backlog: int = CHORE_BACKLOG,
        io_waiting: Callable[[], bool] | None = None,
    ) -> None:
        self._reactor = reactor
        self._delay = delay
        self._backlog = backlog
        self._io_waiting = io_waiting or io_waiting_probe(reactor)
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._timer: IDelayedCall | None = None
        self._turn: IDelayedCall | None = None

    def __len__(self) -> int:
        """How many chores wait."""
        return len(self._queue)

    def add(self, chore: Callable[..., Any], *args: Any) -> None:
        """Do ``chore(*args)`` at the next quiet moment."""
        self._queue.append((chore, args))
        if self._timer is None:
            self._timer = self._reactor.callLater(self._delay, self._timed_out)
        if self._turn is None:
            self._turn = self._reactor.callLater(0, self._next_turn)

    def run(self) -> None:
        """Do every waiting chore now, including those they add."""
        queue = self._queue
        while queue:
            self._run_one(*queue.popleft())

    def run_while_idle(self) -> None:
        """Do waiting chores one at a time while no socket waits (or too many chores do)."""
        queue = self._queue
        io_waiting = self._io_waiting
        while queue and (len(queue) > self._backlog or not io_waiting()):
            self._run_one(*queue.popleft())

    @staticmethod
    def _run_one(chore: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            chore(*args)
        except Exception:
            log.failure("deferred bookkeeping {chore!r} failed", chore=chore)

    def stop(self) -> None:
        """Do what waits and drop the timer (the service is stopping)."""
        self.run()
        for timer in (self._timer, self._turn):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._turn = None

    def _next_turn(self) -> None:
        # What stays when a socket is ready waits for the next request or the timer.
        self._turn = None
        self.run_while_idle()

    def _timed_out(self) -> None:
        # Left running when run() drains early: one timer per ``delay`` at most, instead
        # of one scheduled and cancelled per request.
        self._timer = None
        self.run()
