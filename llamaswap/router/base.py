"""The Router: one event queue in front of a scheduler, and the effects it acts through.

Every scheduler call goes through ``_post``: events are delivered one at a
time, in order, never re-entrantly, and not at all while an ``on_unload``
Deferred is pending (the Go run loop blocks there too). Effects that complete
at once post their result as a new event; callers' Deferreds are fired only
after the scheduler call that resolved them has returned. Listeners hear the
router's events, in order, on the reactor's next turn: a caller granted at once
has sent its request by then.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from llamaswap.errors import LlamaSwapError, ShuttingDown, UpstreamError
from llamaswap.interfaces import IEffects, IScheduler, ISchedulerFactory, ISwapper
from llamaswap.memory import EMPTY_SNAPSHOT, MemorySnapshot
from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone
from llamaswap.router.grant import (
    Grant,
    UpstreamLike,
    as_llamaswap_error,
    latest_only,
    unwrap,
    unwrap_failure,
)

if TYPE_CHECKING:
    from llamaswap.config.model import Config, ModelConfig

__all__ = ["Grant", "Router", "UpstreamLike", "as_llamaswap_error"]

Listener = Callable[[str, dict[str, Any]], None]

GRANT_GRACE = 1.0
"""Seconds a grant may stay held after its request ended before ``hold_for`` releases it."""


@attrs.define(eq=False)
class _Swap:
    model: str
    evict: tuple[str, ...]
    started: float


@implementer(IEffects)
class Router:
    """Owns the upstreams and the event queue; implements IEffects for the scheduler."""

    def __init__(self, *, name: str, upstreams: Mapping[str, UpstreamLike],
                 scheduler_factory: ISchedulerFactory, swapper: ISwapper,
                 settings: Mapping[str, Any], models: Mapping[str, ModelConfig],
                 reactor: IReactorTime, log: Logger | None = None) -> None:
        self.name = name
        self.upstreams = dict(upstreams)
        self.models = dict(models)
        self.reactor = reactor
        self.log = log or Logger()
        self.swapper = swapper
        self._events: deque[Callable[[], None]] = deque()
        self._delivering = False
        self._paused = False
        self._closed = False
        self._stopped = False
        self._unload_waiters: set[Deferred[None]] = set()
        self._to_fire: list[Callable[[], None]] = []
        self._pending: dict[HandlerRequest, Deferred[Grant]] = {}
        self._arrived: dict[HandlerRequest, float] = {}
        self._granted: dict[HandlerRequest, Grant] = {}
        self._in_flight: dict[str, int] = {}
        self._swaps: dict[str, _Swap] = {}
        self._listeners: list[Listener] = []
        self._unheard: list[tuple[str, dict[str, Any]]] = []
        self._telling: Any = None
        self._last_queue: Any = None
        self._shutdown_d: Deferred[None] | None = None
        self.leaked_grants = 0
        self._ended_held: dict[Grant, float] = {}  # request over, grant not yet given back
        self._leak_check: Any = None
        # The running set, kept by the upstreams' state listeners: per-request effects
        # cost O(running), never O(configured models).
        self._running: dict[str, ProcessState] = {
            m: u.state for m, u in self.upstreams.items() if u.state.is_running()}
        self.scheduler: IScheduler = scheduler_factory.build(
            name=name, effects=self, swapper=swapper, settings=settings, models=self.models,
            log=self.log)
        for upstream in self.upstreams.values():
            upstream.on_idle = self._on_idle
            upstream.add_state_listener(self._on_state)

    @classmethod
    def from_config(cls, config: Config, upstreams: Mapping[str, UpstreamLike],
                    reactor: IReactorTime, log: Logger | None = None,
                    memory: Callable[[], MemorySnapshot] | None = None) -> Router:
        """Build a Router choosing scheduler and swapper plugins by the names in ``config``.

        ``memory`` returns the latest GPU memory snapshot; swapper factories get it as
        their ``memory`` keyword (without it, one that says no figures are known).
        """
        from llamaswap.plugins import find_scheduler_factory, find_swapper_factory

        routing = config.routing
        log = log or Logger()
        swapper = find_swapper_factory(routing.router.use).build(
            settings=routing.router.settings, models=config.models, log=log,
            memory=memory or _no_memory)
        return cls(name=routing.router.use, upstreams=upstreams,
                   scheduler_factory=find_scheduler_factory(routing.scheduler.use),
                   swapper=swapper, settings=routing.scheduler.settings_for(routing.scheduler.use),
                   models=config.models, reactor=reactor, log=log)

    # the public API

    def request(self, model_id: str,
                on_position: Callable[[int], None] | None = None) -> Deferred[Grant]:
        """Ask for ``model_id``; the Deferred fires with a Grant, or fails with a LlamaSwapError.

        Cancelling the Deferred (the client went away) removes the request from
        the scheduler; a grant that was already decided is released.
        """
        if self._closed:
            return fail(ShuttingDown(f"{self.name} is shutting down"))
        req = HandlerRequest(model_id, on_position=latest_only(on_position))
        d: Deferred[Grant] = Deferred(lambda _d: self._cancel(req))
        self._pending[req] = d
        self._arrived[req] = self.reactor.seconds()
        self._post(lambda: self._deliver_request(req))
        return d

    def unload(self, models: Sequence[str] | None = None,
               timeout: float | None = None) -> Deferred[None]:
        """Stop ``models`` (None: all) through the scheduler (SPEC 4.7).

        With no positive ``timeout`` the targets are grouped by their
        ``unload_timeout`` and the groups unloaded one after another, shortest
        first, the models of a group in parallel.
        """
        targets = [m for m in (self.upstreams if models is None else models)
                   if m in self.upstreams]
        if timeout is not None and timeout > 0:
            batches = [(float(timeout), targets)]
        else:
            by_timeout: dict[float, list[str]] = {}
            for m in targets:
                by_timeout.setdefault(self._model_float(m, "unload_timeout", 10.0), []).append(m)
            batches = sorted(by_timeout.items())
        return Deferred.fromCoroutine(self._unload_batches(batches))

    def shutdown(self, timeout: float = 30) -> Deferred[None]:
        """Fail every waiting request with ShuttingDown and shut every upstream down."""
        if self._shutdown_d is not None:
            return self._shutdown_d
        self._closed = True
        reason = ShuttingDown(f"{self.name} is shutting down")
        delivered: Deferred[None] = Deferred()
        # Callers hear at once, even while an unload holds the queue; the
        # scheduler's own grants for them are then ignored.
        pending, self._pending = self._pending, {}
        self._arrived.clear()
        for waiting in pending.values():
            if not waiting.called:
                waiting.errback(reason)

        def deliver() -> None:
            try:
                self.scheduler.on_shutdown(reason)
            finally:
                self._stopped = True
                self._events.clear()
                for req in list(self._pending):
                    self._resolve_error(req, reason)
                for waiter in list(self._unload_waiters):
                    self._to_fire.append(functools.partial(_fire, waiter))
                delivered.callback(None)

        self._events.appendleft(deliver)
        stops = [u.shutdown(timeout) for u in self.upstreams.values()]
        self._pump()
        all_done = gatherResults([delivered, *stops], consumeErrors=True)
        all_done.addErrback(
            lambda f: self.log.failure("shutting down upstreams", unwrap_failure(f)))
        self._shutdown_d = all_done.addCallback(lambda _: None)
        return self._shutdown_d

    def snapshot(self) -> dict[str, Any]:
        """Process states, queue, in-flight counts, active swaps and the scheduler's view."""
        sched = self.scheduler.snapshot()
        now = self.reactor.seconds()
        return {
            "processes": {m: _state_value(u.state) for m, u in self.upstreams.items()},
            "queue": list(sched.get("queue", [])),
            "in_flight": dict(self._in_flight),
            "swaps": [
                {"model": s.model, "evict": list(s.evict), "elapsed": now - s.started}
                for s in self._swaps.values()
            ],
            "scheduler": sched,
        }

    def hold_for(self, grant: Grant, request_over: Deferred[Any]) -> None:
        """Check that ``grant`` is given back once the request it serves is over.

        Every request path releases its grant when its request ends; a path that does not
        would hold the model, and with ``serial`` every model, until restart. So when
        ``request_over`` fires (with a result or a failure), a grant still held
        ``GRANT_GRACE`` seconds later is logged as a broken invariant and released. One
        timer at a time checks every such grant, not one per request.
        """

        def over(result: object) -> None:
            if grant.finished:
                return
            self._ended_held[grant] = self.reactor.seconds()
            if self._leak_check is None:
                self._leak_check = self.reactor.callLater(GRANT_GRACE, self._release_leaked)

        request_over.addBoth(over)

    def _release_leaked(self) -> None:
        """Release the grants still held ``GRANT_GRACE`` seconds after their request ended."""
        self._leak_check = None
        now = self.reactor.seconds()
        for grant, ended in list(self._ended_held.items()):
            if now - ended < GRANT_GRACE:
                continue
            del self._ended_held[grant]
            self.leaked_grants += 1
            self.log.critical(
                "invariant broken: the grant for {model} was still held {grace}s after its "
                "request ended; releasing it (a bug: please report it)",
                model=grant.model_id, grace=GRANT_GRACE)
            grant.done()
        if self._ended_held:
            first = min(self._ended_held.values())
            self._leak_check = self.reactor.callLater(
                max(first + GRANT_GRACE - now, 0), self._release_leaked)

    def add_listener(self, cb: Listener) -> Callable[[], None]:
        """Call ``cb(event, fields)`` on swap_started, swap_done, request_granted and
        queue changes, on the reactor turn after each."""
        self._listeners.append(cb)

        def remove() -> None:
            if cb in self._listeners:
                self._listeners.remove(cb)

        return remove

    # IEffects

    def model_state(self, model_id: str) -> ProcessState | None:
        """The state of ``model_id``'s upstream, or None when it is not ours."""
        upstream = self.upstreams.get(model_id)
        return None if upstream is None else upstream.state

    def running_models(self) -> Mapping[str, ProcessState]:
        """Every upstream that is starting, ready or stopping (a copy; O(running))."""
        return dict(self._running)

    def start_swap(self, model_id: str, evict: Sequence[str]) -> None:
        """Stop ``evict`` in parallel, start ``model_id``, then post SwapDone."""
        swap = _Swap(model_id, tuple(evict), self.reactor.seconds())
        self._swaps[model_id] = swap
        self._emit("swap_started", {"model": model_id, "evict": list(evict)})
        self._to_fire.append(lambda: self._run_swap(swap))

    def grant_error(self, req: HandlerRequest, error: Exception) -> None:
        """Fail ``req`` with ``error`` (wrapped in UpstreamError unless a LlamaSwapError)."""
        self._resolve_error(req, as_llamaswap_error(error))

    def grant_serve(self, req: HandlerRequest, model_id: str) -> bool:
        """Hand ``req`` a Grant for ``model_id``; False when its caller is gone."""
        d = self._pending.pop(req, None)
        upstream = self.upstreams.get(model_id)
        if d is None or upstream is None:
            return False
        upstream.request_started()
        self._in_flight[model_id] = self._in_flight.get(model_id, 0) + 1
        grant = Grant(model_id, upstream, dict(req.metadata), self._grant_done)
        self._granted[req] = grant
        now = self.reactor.seconds()
        arrived = self._arrived.pop(req, now)

        def fire() -> None:
            self._granted.pop(req, None)
            if not d.called:
                d.callback(grant)

        self._to_fire.append(fire)
        self._emit("request_granted", {"model": model_id, "wait": now - arrived})
        return True

    def stop_processes(self, timeout: float, ids: Sequence[str]) -> Deferred[None]:
        """Stop ``ids`` in parallel; fires when all have exited (unknown ids skipped)."""
        stops = [self.upstreams[m].stop(timeout) for m in ids if m in self.upstreams]
        d = DeferredList(stops, consumeErrors=True)

        def check(results: list[tuple[bool, Any]]) -> None:
            for ok, value in results:
                if not ok:
                    self.log.failure("stopping upstream", value)

        return d.addCallback(check)

    # the event queue

    def _post(self, event: Callable[[], None]) -> None:
        if self._stopped:
            return
        self._events.append(event)
        self._pump()

    def _pump(self) -> None:
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._events and not self._paused:
                event = self._events.popleft()
                try:
                    event()
                except Exception:
                    self.log.failure("{name}: scheduler event failed", name=self.name)
                self._flush()
        finally:
            self._delivering = False

    def _flush(self) -> None:
        """Fire callers' Deferreds and start swaps decided by the event just delivered."""
        while self._to_fire:
            todo, self._to_fire = self._to_fire, []
            for action in todo:
                try:
                    action()
                except Exception:
                    self.log.failure("{name}: effect failed", name=self.name)
        if self._listeners:
            queue = self.scheduler.snapshot().get("queue", [])
            if queue != self._last_queue:
                self._last_queue = queue
                self._emit("queue", {"queue": queue})

    # requests

    def _cancel(self, req: HandlerRequest) -> None:
        """Canceller of a request's Deferred: forget it, release a raced grant, post on_cancel."""
        self._pending.pop(req, None)
        self._arrived.pop(req, None)
        grant = self._granted.pop(req, None)
        if grant is not None:
            grant.done()
        self._post(lambda: self.scheduler.on_cancel(req))

    def _deliver_request(self, req: HandlerRequest) -> None:
        try:
            self.scheduler.on_request(req)
        except Exception as e:
            self.log.failure("{name}: scheduler failed on a request", name=self.name)
            self._resolve_error(req, as_llamaswap_error(e))

    def _resolve_error(self, req: HandlerRequest, error: LlamaSwapError) -> None:
        d = self._pending.pop(req, None)
        self._arrived.pop(req, None)
        if d is None:
            return

        def fire() -> None:
            if not d.called:
                d.errback(error)

        if self._delivering or self._paused:
            self._to_fire.append(fire)
        else:
            fire()

    def _grant_done(self, grant: Grant) -> None:
        self._ended_held.pop(grant, None)
        count = self._in_flight.get(grant.model_id, 0) - 1
        if count > 0:
            self._in_flight[grant.model_id] = count
        else:
            self._in_flight.pop(grant.model_id, None)
        grant.upstream.request_finished()
        self._post(lambda: self.scheduler.on_serve_done(ServeDone(grant.model_id)))

    # swaps, unloads, TTL

    def _run_swap(self, swap: _Swap) -> None:
        target = self.upstreams.get(swap.model)
        stops = [self.upstreams[m].stop(self._model_float(m, "health_check_timeout", 120.0))
                 for m in swap.evict if m in self.upstreams]
        d = gatherResults(stops, consumeErrors=True)
        if target is None:
            d.addCallback(lambda _: fail(UpstreamError(f"no upstream for {swap.model}")))
        else:
            d.addCallback(lambda _: target.start())

        def finished(result: object) -> None:
            error = as_llamaswap_error(unwrap(result)) if isinstance(result, Failure) else None
            self._swaps.pop(swap.model, None)
            self._emit("swap_done", {
                "model": swap.model,
                "duration": self.reactor.seconds() - swap.started,
                "error": None if error is None else error.message,
            })
            self._post(lambda: self.scheduler.on_swap_done(SwapDone(swap.model, error)))

        d.addBoth(finished)

    async def _unload_batches(self, batches: list[tuple[float, list[str]]]) -> None:
        for timeout, ids in batches:
            if self._closed:
                return
            done: Deferred[None] = Deferred()
            self._unload_waiters.add(done)
            self._post(functools.partial(self._deliver_unload, ids, timeout, done))
            try:
                await done
            finally:
                self._unload_waiters.discard(done)

    def _deliver_unload(self, ids: list[str], timeout: float, done: Deferred[None]) -> None:
        """Call on_unload and hold every other event until its Deferred fires."""
        self._paused = True

        def resume(result: object) -> None:
            self._paused = False
            if isinstance(result, Failure):
                self.log.failure("{name}: unload failed", result, name=self.name)
            self._to_fire.append(lambda: _fire(done))
            if not self._delivering:
                self._flush()
            self._pump()

        try:
            d = self.scheduler.on_unload(ids, timeout)
        except Exception:
            d = fail()
        d.addBoth(resume)

    def _on_idle(self, model_id: str) -> None:
        """An upstream's TTL expired: unload it through the scheduler."""
        if self._closed:
            return
        self.log.info("{model} Unloading model, TTL reached", model=model_id)
        self.unload([model_id]).addErrback(
            lambda f: self.log.failure("TTL unload of {model}", f, model=model_id))

    # helpers

    def _on_state(self, model_id: str, old: ProcessState, new: ProcessState) -> None:
        """An upstream changed state: keep the running set current."""
        if new.is_running():
            self._running[model_id] = new
        else:
            self._running.pop(model_id, None)

    def _model_float(self, model_id: str, attr: str, default: float) -> float:
        model = self.models.get(model_id)
        return float(getattr(model, attr, default)) if model is not None else default

    def _emit(self, event: str, fields: dict[str, Any]) -> None:
        """Tell the listeners of ``event`` on the next reactor turn (off the caller's path)."""
        if not self._listeners:
            return
        self._unheard.append((event, fields))
        if self._telling is None:
            self._telling = self.reactor.callLater(0, self._tell_listeners)

    def _tell_listeners(self) -> None:
        self._telling = None
        unheard, self._unheard = self._unheard, []
        for event, fields in unheard:
            for cb in list(self._listeners):
                try:
                    cb(event, fields)
                except Exception:
                    self.log.failure("router listener failed on {event}", event=event)


def _no_memory() -> MemorySnapshot:
    return EMPTY_SNAPSHOT


def _fire(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


def _state_value(state: ProcessState) -> str:
    return state.value if isinstance(state, ProcessState) else str(state)
