"""Test doubles for Router tests: a fake Upstream with the real one's API, and a spy scheduler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from llamaswap.config.model import ModelConfig
from llamaswap.errors import ShuttingDown, UpstreamStartFailed
from llamaswap.interfaces import IEffects, IScheduler, ISchedulerFactory, ISwapper
from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone

StateListener = Callable[[str, ProcessState, ProcessState], None]


class FakeUpstream:
    """Same API as llamaswap.process.upstream.Upstream; starts/stops at once or on demand."""

    def __init__(self, model: ModelConfig, *, auto_start: bool = True,
                 auto_stop: bool = True) -> None:
        self.model = model
        self.model_id = model.id
        self.proxy_url = model.proxy
        self.state = ProcessState.STOPPED
        self.on_idle: Callable[[str], None] | None = None
        self.in_flight = 0
        self.auto_start = auto_start
        self.auto_stop = auto_stop
        self.starts = 0
        self.stop_timeouts: list[float] = []
        self.shutdown_timeouts: list[float] = []
        self.start_error: Exception | None = None
        self._start_waiters: list[Deferred[None]] = []
        self._stop_waiters: list[Deferred[None]] = []
        self._listeners: list[StateListener] = []

    def _set(self, new: ProcessState) -> None:
        old, self.state = self.state, new
        if old != new:
            for cb in list(self._listeners):
                cb(self.model_id, old, new)

    def add_state_listener(self, cb: StateListener) -> Callable[[], None]:
        """Register ``cb`` for transitions."""
        self._listeners.append(cb)
        return lambda: self._listeners.remove(cb)

    def start(self) -> Deferred[None]:
        """Ready at once, or when finish_start() is called."""
        if self.state is ProcessState.SHUTDOWN:
            return fail(ShuttingDown(f"[{self.model_id}] shutdown"))
        if self.state is ProcessState.READY:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._start_waiters.append(d)
        if self.state is not ProcessState.STARTING:
            self.starts += 1
            self._set(ProcessState.STARTING)
            if self.auto_start:
                self.finish_start()
        return d

    def finish_start(self, error: Exception | None = None) -> None:
        """Complete the pending start: ready, or failed with ``error`` (or start_error)."""
        assert self.state is ProcessState.STARTING, "no start pending"
        waiters, self._start_waiters = self._start_waiters, []
        error = error or self.start_error
        self._set(ProcessState.READY if error is None else ProcessState.STOPPED)
        for d in waiters:
            if error is None:
                d.callback(None)
            else:
                d.errback(error)

    def stop(self, timeout: float) -> Deferred[None]:
        """Stopped at once, or when finish_stop() is called; aborts a pending start."""
        self.stop_timeouts.append(timeout)
        if self.state in (ProcessState.STOPPED, ProcessState.SHUTDOWN):
            return succeed(None)
        if self.state is ProcessState.STARTING:
            self.finish_start(UpstreamStartFailed(f"[{self.model_id}] aborted"))
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stop_waiters.append(d)
        if self.state is not ProcessState.STOPPING:
            self._set(ProcessState.STOPPING)
            if self.auto_stop:
                self.finish_stop()
        return d

    def finish_stop(self) -> None:
        """Complete the pending stop."""
        assert self.state is ProcessState.STOPPING, "no stop pending"
        waiters, self._stop_waiters = self._stop_waiters, []
        self._set(ProcessState.STOPPED)
        for d in waiters:
            d.callback(None)

    def shutdown(self, timeout: float) -> Deferred[None]:
        """Stop, then the terminal SHUTDOWN state."""
        self.shutdown_timeouts.append(timeout)
        d = self.stop(timeout)
        d.addCallback(lambda _: self._set(ProcessState.SHUTDOWN))
        return d

    def request_started(self) -> None:
        """Count a proxied request."""
        self.in_flight += 1

    def request_finished(self) -> None:
        """Uncount a proxied request."""
        self.in_flight -= 1
        assert self.in_flight >= 0


@implementer(IScheduler)
class SpyScheduler:
    """Wraps a scheduler; records every event and the nesting depth of calls."""

    def __init__(self, inner: IScheduler) -> None:
        self.inner = inner
        self.events: list[tuple[str, Any]] = []
        self.depth = 0
        self.max_depth = 0

    def _call(self, name: str, arg: Any, fn: Callable[[], Any]) -> Any:
        self.events.append((name, arg))
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        try:
            return fn()
        finally:
            self.depth -= 1

    def on_request(self, req: HandlerRequest) -> None:
        """Delegate."""
        self._call("request", req.model, lambda: self.inner.on_request(req))

    def on_swap_done(self, event: SwapDone) -> None:
        """Delegate."""
        self._call("swap_done", event.model_id, lambda: self.inner.on_swap_done(event))

    def on_serve_done(self, event: ServeDone) -> None:
        """Delegate."""
        self._call("serve_done", event.model_id, lambda: self.inner.on_serve_done(event))

    def on_cancel(self, req: HandlerRequest) -> None:
        """Delegate."""
        self._call("cancel", req.model, lambda: self.inner.on_cancel(req))

    def on_unload(self, targets: Sequence[str], timeout: float) -> Deferred[None]:
        """Delegate."""
        result: Deferred[None] = self._call(
            "unload", (tuple(targets), timeout), lambda: self.inner.on_unload(targets, timeout))
        return result

    def on_shutdown(self, reason: Exception) -> None:
        """Delegate."""
        self._call("shutdown", type(reason).__name__, lambda: self.inner.on_shutdown(reason))

    def snapshot(self) -> dict[str, Any]:
        """Delegate."""
        return self.inner.snapshot()

    def names(self) -> list[str]:
        """The recorded event names."""
        return [name for name, _ in self.events]


@implementer(ISchedulerFactory)
class SpyFactory:
    """Builds a real scheduler through ``inner`` and wraps it in a SpyScheduler."""

    name = "spy"
    description = "records events"

    def __init__(self, inner: ISchedulerFactory) -> None:
        self.inner = inner
        self.spy: SpyScheduler | None = None

    def build(self, *, name: str, effects: IEffects, swapper: ISwapper,
              **kwargs: Any) -> IScheduler:
        """Build and wrap."""
        self.spy = SpyScheduler(self.inner.build(name=name, effects=effects, swapper=swapper,
                                                 **kwargs))
        return self.spy
