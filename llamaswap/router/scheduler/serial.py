"""SerialScheduler: strict arrival order, one request at a time, one model in memory.

A port of the seeds' ``serial.go``. Requests run in exact arrival order and at
most one request is loading or serving at any instant. When the next request
targets a model other than the one loaded, every other running model is
evicted first, whatever the groups say: ``A B C A`` is served as ``A B C A``
(the last ``A`` reloads). Like every scheduler it is a pure state machine that
acts only through ``IEffects``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from llamaswap.interfaces import IEffects, IScheduler, ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone, broadcast_positions
from llamaswap.router.scheduler.common import (
    fail_queued,
    not_found,
    refuse_at_admission,
    unloaded,
)

__all__ = ["SerialScheduler"]


class _Phase(enum.Enum):
    IDLE = "idle"
    SWAPPING = "swapping"
    SERVING = "serving"


@implementer(IScheduler)
class SerialScheduler:
    """One request at a time, in arrival order; switching models evicts all others."""

    def __init__(self, name: str, effects: IEffects, *, limits: Mapping[str, int] | None = None,
                 log: Logger | None = None) -> None:
        self.name = name
        self.effects = effects
        self.limits: Mapping[str, int] = limits or {}
        self.log = log or Logger()
        self.queued: list[HandlerRequest] = []
        self.active: HandlerRequest | None = None
        self.phase = _Phase.IDLE
        self.active_cancelled = False

    # IScheduler

    def on_request(self, req: HandlerRequest) -> None:
        """Admit ``req`` (404 unknown, 429 over the limit), queue it, start the next job."""
        if refuse_at_admission(self.effects, req, self._held(req.model), self.limits):
            return
        self.queued.append(req)
        broadcast_positions(self.queued)
        self._start_next()

    def on_swap_done(self, event: SwapDone) -> None:
        """Serve (or fail) the active request when its load finishes, then advance."""
        active = self.active
        if active is None or self.phase is not _Phase.SWAPPING or active.model != event.model_id:
            return
        if self.active_cancelled:
            self._clear()
        elif event.error is not None:
            self.effects.grant_error(active, event.error)
            self._clear()
        elif self._serve():
            return
        self._start_next()

    def on_serve_done(self, event: ServeDone) -> None:
        """The active request finished: free the slot and start the next one."""
        if self.active is None or self.phase is not _Phase.SERVING:
            return
        self._clear()
        self._start_next()

    def on_cancel(self, req: HandlerRequest) -> None:
        """Drop a queued request; a loading one is never served (its load still finishes)."""
        if req is self.active and self.phase is _Phase.SWAPPING:
            self.active_cancelled = True
            return
        if req in self.queued:
            self.queued = [q for q in self.queued if q is not req]
            broadcast_positions(self.queued)

    def on_unload(self, targets: Sequence[str], timeout: float) -> Deferred[None]:
        """Fail the loading/queued requests of ``targets``, stop them, then advance."""
        target_set = set(targets)
        err = unloaded(self.name)
        active = self.active
        if active is not None and self.phase is _Phase.SWAPPING and active.model in target_set:
            if not self.active_cancelled:
                self.effects.grant_error(active, err)
            self._clear()
        kept = fail_queued(self.queued, target_set, err, self.effects)
        if kept is not None:
            self.queued = kept
            broadcast_positions(self.queued)

        def advance(result: object) -> object:
            # A still-serving request advances through on_serve_done instead.
            if self.active is None:
                self._start_next()
            return result

        d = self.effects.stop_processes(timeout, list(targets))
        d.addBoth(advance)
        return d

    def on_shutdown(self, reason: Exception) -> None:
        """Fail the loading request and every queued request with ``reason``."""
        if self.active is not None and self.phase is _Phase.SWAPPING:
            if not self.active_cancelled:
                self.effects.grant_error(self.active, reason)
            self._clear()
        queued, self.queued = self.queued, []
        for q in queued:
            self.effects.grant_error(q, reason)

    def snapshot(self) -> dict[str, Any]:
        """Queue (with positions), the active job and its phase, in-flight counts."""
        active = None
        if self.active is not None:
            active = {"model": self.active.model, "phase": self.phase.value}
        in_flight = {}
        if self.active is not None and self.phase is _Phase.SERVING:
            in_flight[self.active.model] = 1
        return {
            "scheduler": "serial",
            "queue": [{"model": q.model, "position": i + 1} for i, q in enumerate(self.queued)],
            "active": active,
            "in_flight": in_flight,
        }

    # internals

    def _held(self, model: str) -> int:
        """Requests admitted for ``model`` and not yet ended (queued or active)."""
        held = sum(1 for q in self.queued if q.model == model)
        if self.active is not None and self.active.model == model and not self.active_cancelled:
            held += 1
        return held

    def _clear(self) -> None:
        self.active = None
        self.phase = _Phase.IDLE
        self.active_cancelled = False

    def _serve(self) -> bool:
        """Grant the active request; False (and idle) when its caller is gone."""
        assert self.active is not None
        if self.effects.grant_serve(self.active, self.active.model):
            self.phase = _Phase.SERVING
            return True
        self.log.debug("{name}: caller for {model} gone before serve",
                       name=self.name, model=self.active.model)
        self._clear()
        return False

    def _start_next(self) -> None:
        """Begin the head of the queue when nothing is active."""
        while self.active is None and self.queued:
            req = self.queued.pop(0)
            broadcast_positions(self.queued)
            state = self.effects.model_state(req.model)
            if state is None:
                self.effects.grant_error(req, not_found(req.model))
                continue
            self.active = req
            evict = self._other_running(req.model)
            if state is ProcessState.READY and not evict:
                self._serve()
                continue
            self.log.debug("{name}: swapping to {model}, evicting {evict}",
                           name=self.name, model=req.model, evict=evict)
            self.phase = _Phase.SWAPPING
            self.effects.start_swap(req.model, evict)

    def _other_running(self, target: str) -> list[str]:
        return sorted(m for m in self.effects.running_models() if m != target)
