"""Small structural types shared by the observability modules (no imports of other parts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed

T = TypeVar("T")

RunInThread = Callable[[Callable[[], Any]], "Deferred[Any]"]


class LogSource(Protocol):
    """The part of ``llamaswap.process.logs.LogBuffer`` the observers use."""

    def write(self, data: bytes) -> None:
        """Append ``data`` and hand it to every subscriber."""

    def history(self) -> bytes:
        """The last bytes written (bounded)."""

    def subscribe(self, cb: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``cb`` on every write until the returned function is called."""


def run_inline(fn: Callable[[], T]) -> Deferred[T]:
    """A thread runner for tests: run ``fn`` now and wrap its result (or failure)."""
    try:
        return succeed(fn())
    except Exception as exc:  # pragma: no cover - trivial
        from twisted.internet.defer import fail

        return fail(exc)


def thread_runner(reactor: Any) -> RunInThread:
    """A runner that executes blocking callables in ``reactor``'s thread pool."""
    from twisted.internet.threads import deferToThreadPool

    def run(fn: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), fn)

    return run
