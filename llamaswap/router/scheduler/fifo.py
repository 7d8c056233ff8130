"""FIFOScheduler: join swaps, fast-path ready models, parallel non-colliding swaps.

A port of the seeds' ``fifo.go`` (SPEC 4.2). Requests for a ready model are
served at once even while others wait (``A B C A B C`` becomes ``A A B B C
C``); otherwise a request joins the swap already loading its model, waits in a
queue kept in descending priority order (FIFO among equals), or starts a swap
whose eviction set comes from the swapper. A model with requests in flight is
never evicted. The per-model concurrency limit is counted at admission
(SPEC 4.5): queued requests and swap waiters hold a slot too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from llamaswap.errors import LlamaSwapError
from llamaswap.interfaces import IEffects, IScheduler, ISwapper, ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone, broadcast_positions
from llamaswap.router.scheduler.common import (
    fail_queued,
    not_found,
    refuse_at_admission,
    unloaded,
)

__all__ = ["FIFOScheduler"]


@attrs.define
class _ActiveSwap:
    """One swap in flight and the requests waiting for it."""

    model: str
    evict: list[str]
    waiters: list[HandlerRequest]


@implementer(IScheduler)
class FIFOScheduler:
    """Priority-ordered FIFO queue with swap joining and parallel swaps."""

    def __init__(self, name: str, swapper: ISwapper, effects: IEffects, *,
                 priority: Mapping[str, int] | None = None,
                 limits: Mapping[str, int] | None = None,
                 log: Logger | None = None) -> None:
        self.name = name
        self.swapper = swapper
        self.effects = effects
        self.priority: Mapping[str, int] = priority or {}
        self.limits: Mapping[str, int] = limits or {}
        self.log = log or Logger()
        self.active: dict[str, _ActiveSwap] = {}
        self.in_flight: dict[str, int] = {}
        self.queued: list[HandlerRequest] = []

    # IScheduler

    def on_request(self, req: HandlerRequest) -> None:
        """Admit ``req`` (404, 429), then join, serve, queue or start a swap (SPEC 4.2)."""
        if refuse_at_admission(self.effects, req, self._held(req.model), self.limits):
            return
        if not self._decide(req):
            self._enqueue(req)

    def on_swap_done(self, event: SwapDone) -> None:
        """Grant or fail every waiter of the finished swap, then drain the queue."""
        swap = self.active.pop(event.model_id, None)
        if swap is None:
            return
        for waiter in swap.waiters:
            if event.error is not None:
                self.effects.grant_error(waiter, event.error)
            else:
                self._grant(waiter, event.model_id)
        self._drain()

    def on_serve_done(self, event: ServeDone) -> None:
        """One request on ``model_id`` ended; drain when the model became idle."""
        count = self.in_flight.get(event.model_id, 0) - 1
        if count > 0:
            self.in_flight[event.model_id] = count
            return
        self.in_flight.pop(event.model_id, None)
        self._drain()

    def on_cancel(self, req: HandlerRequest) -> None:
        """Remove a gone client's request from the queue and every swap's waiters."""
        removed = False
        if req in self.queued:
            self.queued = [q for q in self.queued if q is not req]
            removed = True
        for swap in self.active.values():
            if req in swap.waiters:
                swap.waiters = [w for w in swap.waiters if w is not req]
                removed = True
        if removed:
            broadcast_positions(self.queued)

    def on_unload(self, targets: Sequence[str], timeout: float) -> Deferred[None]:
        """Fail waiters and queued requests of ``targets``, stop them, then drain."""
        target_set = set(targets)
        err = unloaded(self.name)
        for model in sorted(target_set & set(self.active)):
            for waiter in self.active.pop(model).waiters:
                self.effects.grant_error(waiter, err)
        kept = fail_queued(self.queued, target_set, err, self.effects)
        if kept is not None:
            self.queued = kept
            broadcast_positions(self.queued)

        def drain(result: object) -> object:
            self._drain()
            return result

        d = self.effects.stop_processes(timeout, list(targets))
        d.addBoth(drain)
        return d

    def on_shutdown(self, reason: Exception) -> None:
        """Fail every swap waiter and queued request with ``reason``."""
        active, self.active = self.active, {}
        for swap in active.values():
            for waiter in swap.waiters:
                self.effects.grant_error(waiter, reason)
        queued, self.queued = self.queued, []
        for q in queued:
            self.effects.grant_error(q, reason)

    def snapshot(self) -> dict[str, Any]:
        """Queue with positions and priorities, active swaps and in-flight counts."""
        return {
            "scheduler": "fifo",
            "queue": [
                {"model": q.model, "position": i + 1, "priority": self._priority(q.model)}
                for i, q in enumerate(self.queued)
            ],
            "swaps": [
                {"model": s.model, "evict": list(s.evict), "waiters": len(s.waiters)}
                for s in self.active.values()
            ],
            "in_flight": dict(self.in_flight),
        }

    # the decision tree

    def _decide(self, req: HandlerRequest) -> bool:
        """Steps 3-7 of SPEC 4.2; False means the request stays (or goes) in the queue."""
        swap = self.active.get(req.model)
        if swap is not None:
            swap.waiters.append(req)
            return True
        state = self.effects.model_state(req.model)
        if state is None:
            self.effects.grant_error(req, not_found(req.model))
            return True
        running = self._running_set(req.model)
        try:
            evict = list(self.swapper.eviction_for(req.model, running))
        except LlamaSwapError as error:  # e.g. a model that can never fit in memory
            self.effects.grant_error(req, error)
            return True
        collides = self._collides(req.model, evict)
        if state is ProcessState.READY and not evict and not collides:
            self._grant(req, req.model)
            return True
        if collides or any(self.in_flight.get(m, 0) > 0 for m in evict):
            return False
        self.log.debug("{name}: starting swap for {model}, evicting {evict}",
                       name=self.name, model=req.model, evict=evict)
        self.active[req.model] = _ActiveSwap(req.model, evict, [req])
        self.swapper.on_swap_start(req.model, running)
        self.effects.start_swap(req.model, evict)
        return True

    def _drain(self) -> None:
        """Re-run the decision tree over the queue, keeping blocked requests in order."""
        if not self.queued:
            return
        pending, self.queued = self.queued, []
        self.queued = [q for q in pending if not self._decide(q)]
        if len(self.queued) != len(pending):
            broadcast_positions(self.queued)

    def _grant(self, req: HandlerRequest, model: str) -> None:
        """Hand ``req`` to ``model``; count it in flight only if its caller took it."""
        req.metadata["fifo_priority"] = str(self._priority(model))
        if self.effects.grant_serve(req, model):
            self.in_flight[model] = self.in_flight.get(model, 0) + 1

    def _enqueue(self, req: HandlerRequest) -> None:
        """Insert before the first queued request of strictly lower priority."""
        p = self._priority(req.model)
        index = len(self.queued)
        for i, q in enumerate(self.queued):
            if self._priority(q.model) < p:
                index = i
                break
        self.queued.insert(index, req)
        broadcast_positions(self.queued)

    # helpers

    def _priority(self, model: str) -> int:
        return int(self.priority.get(model, 0))

    def _held(self, model: str) -> int:
        """Slots ``model`` holds: in flight, waiting on a swap, or queued (SPEC 4.5)."""
        held = self.in_flight.get(model, 0)
        swap = self.active.get(model)
        if swap is not None:
            held += len(swap.waiters)
        return held + sum(1 for q in self.queued if q.model == model)

    def _running_set(self, exclude: str) -> list[str]:
        """Live processes plus the targets of other active swaps, sorted."""
        running = set(self.effects.running_models())
        running.update(m for m in self.active if m != exclude)
        return sorted(running)

    def _collides(self, target: str, evict: list[str]) -> bool:
        """Whether a swap (target, evict) would fight an active swap (SPEC 4.2 step 5)."""
        evict_set = set(evict)
        for model, swap in self.active.items():
            if model == target:
                continue
            if model in evict_set or target in swap.evict or evict_set.intersection(swap.evict):
                return True
        return False
