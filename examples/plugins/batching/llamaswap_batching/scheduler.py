"""BatchingScheduler: FIFO-style batching with a bound on overtaking (anti-starvation).

Like llamaswap's ``fifo``, a request for a model that is already loaded is
served at once, even while requests for other models wait: that batches work
per model and saves swaps. Unlike ``fifo`` it cannot starve anyone (llama-swap
issue #612): every waiting request counts how many later requests were served
before it, and once one has been overtaken ``max_skips`` times, requests for
other models stop being served until its model has been swapped in.

Pure: it imports only the public contract (``llamaswap.interfaces``, the
event types, the errors and ``ProcessState``) and never touches the reactor.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from llamaswap.errors import ConcurrencyLimitExceeded, ModelNotFound, ModelUnloaded
from llamaswap.interfaces import IEffects, IScheduler, ISwapper
from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone, broadcast_positions

DEFAULT_MAX_SKIPS = 8
DEFAULT_LIMIT = 10


class _Waiting:
    """A request with its arrival number and how often it has been overtaken."""

    def __init__(self, req: HandlerRequest, seq: int) -> None:
        self.req = req
        self.seq = seq
        self.skips = 0


@implementer(IScheduler)
class BatchingScheduler:
    """Serve loaded models first, but never overtake a request more than ``max_skips`` times."""

    def __init__(self, name: str, swapper: ISwapper, effects: IEffects, *,
                 max_skips: int = DEFAULT_MAX_SKIPS,
                 limits: Mapping[str, int] | None = None) -> None:
        self.name = name
        self.swapper = swapper
        self.effects = effects
        self.max_skips = max_skips
        self.limits = dict(limits or {})
        self.queue: list[_Waiting] = []
        self.swaps: dict[str, tuple[list[str], list[_Waiting]]] = {}
        self.in_flight: dict[str, int] = {}
        self._seq = itertools.count()

    # IScheduler

    def on_request(self, req: HandlerRequest) -> None:
        """Admit (404, 429), queue in arrival order, then try to make progress."""
        if self.effects.model_state(req.model) is None:
            self.effects.grant_error(req, ModelNotFound(
                f"no local server found for requested model {req.model}"))
            return
        if self._held(req.model) >= self.limits.get(req.model, DEFAULT_LIMIT):
            self.effects.grant_error(req, ConcurrencyLimitExceeded())
            return
        self.queue.append(_Waiting(req, next(self._seq)))
        self._pump()

    def on_swap_done(self, event: SwapDone) -> None:
        """Grant or fail the swap's waiters, then make progress."""
        swap = self.swaps.pop(event.model_id, None)
        if swap is None:
            return
        for w in swap[1]:
            if event.error is not None:
                self.effects.grant_error(w.req, event.error)
            else:
                self._serve(w)
        self._pump()

    def on_serve_done(self, event: ServeDone) -> None:
        """One request ended; make progress when its model became idle."""
        left = self.in_flight.get(event.model_id, 0) - 1
        if left > 0:
            self.in_flight[event.model_id] = left
            return
        self.in_flight.pop(event.model_id, None)
        self._pump()

    def on_cancel(self, req: HandlerRequest) -> None:
        """Forget a request whose client went away."""
        self.queue = [w for w in self.queue if w.req is not req]
        for _, waiters in self.swaps.values():
            waiters[:] = [w for w in waiters if w.req is not req]
        broadcast_positions([w.req for w in self.queue])

    def on_unload(self, targets: Sequence[str], timeout: float) -> Deferred[None]:
        """Fail what waits for ``targets``, stop them, then make progress."""
        err = ModelUnloaded(f"{self.name}: model unloaded")
        for model in [m for m in self.swaps if m in targets]:
            for w in self.swaps.pop(model)[1]:
                self.effects.grant_error(w.req, err)
        for w in [w for w in self.queue if w.req.model in targets]:
            self.effects.grant_error(w.req, err)
        self.queue = [w for w in self.queue if w.req.model not in targets]

        def resume(result: object) -> object:
            self._pump()
            return result

        return self.effects.stop_processes(timeout, list(targets)).addBoth(resume)

    def on_shutdown(self, reason: Exception) -> None:
        """Fail everyone still waiting."""
        waiting = [w for _, ws in self.swaps.values() for w in ws] + self.queue
        self.swaps, self.queue = {}, []
        for w in waiting:
            self.effects.grant_error(w.req, reason)

    def snapshot(self) -> dict[str, Any]:
        """Queue (positions and skips), swaps and in-flight counts."""
        return {
            "scheduler": "batching",
            "max_skips": self.max_skips,
            "queue": [{"model": w.req.model, "position": i + 1, "skips": w.skips}
                      for i, w in enumerate(self.queue)],
            "swaps": [{"model": m, "evict": list(e), "waiters": len(ws)}
                      for m, (e, ws) in self.swaps.items()],
            "in_flight": dict(self.in_flight),
        }

    # internals

    def _held(self, model: str) -> int:
        waiting = len(self.swaps[model][1]) if model in self.swaps else 0
        queued = sum(1 for w in self.queue if w.req.model == model)
        return self.in_flight.get(model, 0) + waiting + queued

    def _serve(self, w: _Waiting) -> None:
        """Grant ``w``; every older queued request has now been overtaken once more."""
        if self.effects.grant_serve(w.req, w.req.model):
            self.in_flight[w.req.model] = self.in_flight.get(w.req.model, 0) + 1
        for older in self.queue:
            if older.seq < w.seq:
                older.skips += 1

    def _pump(self) -> None:
        """Walk the queue in arrival order: join, serve, start a swap, or keep waiting."""
        starving = next((w.req.model for w in self.queue if w.skips >= self.max_skips), None)
        pending, self.queue = self.queue, []
        for w in pending:
            if starving is not None and w.req.model != starving:
                self.queue.append(w)
            elif not self._try(w):
                self.queue.append(w)
        broadcast_positions([w.req for w in self.queue])

    def _try(self, w: _Waiting) -> bool:
        """Resolve or hand ``w`` to a swap; False when it must keep waiting."""
        model = w.req.model
        if model in self.swaps:
            self.swaps[model][1].append(w)
            return True
        state = self.effects.model_state(model)
        if state is None:
            self.effects.grant_error(w.req, ModelNotFound(
                f"no local server found for requested model {model}"))
            return True
        running = sorted(set(self.effects.running_models()) | (set(self.swaps) - {model}))
        evict = list(self.swapper.eviction_for(model, running))
        if self._collides(model, evict):
            return False
        if state is ProcessState.READY and not evict:
            self._serve(w)
            return True
        if any(self.in_flight.get(m, 0) for m in evict):
            return False
        self.swaps[model] = (evict, [w])
        self.swapper.on_swap_start(model, running)
        self.effects.start_swap(model, evict)
        return True

    def _collides(self, model: str, evict: list[str]) -> bool:
        for other, (other_evict, _) in self.swaps.items():
            if other in evict or model in other_evict or set(evict) & set(other_evict):
                return True
        return False
