"""The Router's small parts: the upstream it needs, the Grant it hands out, error helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, FirstError
from twisted.python.failure import Failure

from llamaswap.errors import LlamaSwapError, UpstreamError
from llamaswap.process.state import ProcessState

__all__ = ["Grant", "UpstreamLike", "as_llamaswap_error", "latest_only", "unwrap",
           "unwrap_failure"]


class UpstreamLike(Protocol):
    """What the Router needs of ``llamaswap.process.upstream.Upstream``."""

    model_id: str
    state: ProcessState
    on_idle: Callable[[str], None] | None

    def start(self) -> Deferred[None]:
        """Bring the process to ready."""

    def stop(self, timeout: float) -> Deferred[None]:
        """Stop the process (SIGKILL after ``timeout``)."""

    def shutdown(self, timeout: float) -> Deferred[None]:
        """Stop the process for good."""

    def request_started(self) -> None:
        """A proxied request began."""

    def request_finished(self) -> None:
        """A proxied request ended."""

    def add_state_listener(
        self, cb: Callable[[str, ProcessState, ProcessState], None]
    ) -> Callable[[], None]:
        """Call ``cb(model_id, old, new)`` on every state change; returns the remover."""


def as_llamaswap_error(error: BaseException) -> LlamaSwapError:
    """``error`` itself when it is a LlamaSwapError, else an UpstreamError naming it."""
    if isinstance(error, LlamaSwapError):
        return error
    return UpstreamError(f"{type(error).__name__}: {error}")


def unwrap(failure: Failure) -> BaseException:
    value = failure.value
    if isinstance(value, FirstError):
        return unwrap(value.subFailure)
    return value


@attrs.define(eq=False)
class Grant:
    """Permission to proxy one request to ``upstream``; call ``done()`` when it ends."""

    model_id: str
    upstream: UpstreamLike
    metadata: dict[str, Any]
    _on_done: Callable[[Grant], None] = attrs.field(repr=False)
    finished: bool = False

    def done(self) -> None:
        """The proxied request ended, however it ended (idempotent)."""
        if self.finished:
            return
        self.finished = True
        self._on_done(self)


def latest_only(cb: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """Wrap a position callback so it hears a position only when it changed."""
    if cb is None:
        return None
    last: list[int] = []

    def tell(position: int) -> None:
        if last and last[0] == position:
            return
        last[:] = [position]
        cb(position)

    return tell


def unwrap_failure(failure: Failure) -> Failure:
    value = unwrap(failure)
    return failure if value is failure.value else Failure(value)
