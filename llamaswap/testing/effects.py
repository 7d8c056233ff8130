"""A recording fake of ``IEffects`` for testing schedulers as pure state machines.

The Python twin of ``fakeEffects`` in llama-swap's scheduler tests: set process
states in ``states``, make ``grant_serve`` fail for a model with
``serve_result``, drive the scheduler's ``on_*`` methods directly and assert on
the recorded ``starts``, ``grants`` and ``stops``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from llamaswap.interfaces import IEffects
from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest

__all__ = ["GrantRecord", "RecordingEffects", "StartRecord", "StopRecord"]


@attrs.frozen
class StartRecord:
    """One ``start_swap`` call."""

    model: str
    evict: tuple[str, ...]


@attrs.frozen
class GrantRecord:
    """One ``grant_serve`` (``error`` is None) or ``grant_error`` call."""

    req: HandlerRequest
    model: str
    error: Exception | None = None
    serve: bool = False


@attrs.frozen
class StopRecord:
    """One ``stop_processes`` call."""

    timeout: float
    ids: tuple[str, ...]


@implementer(IEffects)
class RecordingEffects:
    """Records every effect; never calls the scheduler back.

    ``stop_processes`` returns an already-fired Deferred unless
    ``manual_stops`` is True: then it returns a pending Deferred, kept in
    ``pending_stops``, that the test fires with ``fire_stops()``.
    """

    def __init__(self, states: Mapping[str, ProcessState] | None = None, *,
                 manual_stops: bool = False) -> None:
        self.states: dict[str, ProcessState] = dict(states or {})
        self.serve_result: dict[str, bool] = {}
        self.gone: set[int] = set()
        self.starts: list[StartRecord] = []
        self.grants: list[GrantRecord] = []
        self.stops: list[StopRecord] = []
        self.manual_stops = manual_stops
        self.pending_stops: list[Deferred[None]] = []

    # IEffects

    def model_state(self, model_id: str) -> ProcessState | None:
        """The state set in ``states``, or None for an unknown model."""
        return self.states.get(model_id)

    def running_models(self) -> Mapping[str, ProcessState]:
        """Every model in ``states`` that is starting, ready or stopping."""
        return {m: s for m, s in self.states.items() if s.is_running()}

    def start_swap(self, model_id: str, evict: Sequence[str]) -> None:
        """Record the swap; the test delivers ``on_swap_done`` itself."""
        self.starts.append(StartRecord(model_id, tuple(evict)))

    def grant_error(self, req: HandlerRequest, error: Exception) -> None:
        """Record the error."""
        self.grants.append(GrantRecord(req, req.model, error))

    def grant_serve(self, req: HandlerRequest, model_id: str) -> bool:
        """Record the grant; False when ``serve_result[model_id]`` is False or req is gone."""
        ok = self.serve_result.get(model_id, True) and id(req) not in self.gone
        self.grants.append(GrantRecord(req, model_id, None, ok))
        return ok

    def stop_processes(self, timeout: float, ids: Sequence[str]) -> Deferred[None]:
        """Record the stop; fired at once unless ``manual_stops``."""
        self.stops.append(StopRecord(timeout, tuple(ids)))
        if not self.manual_stops:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.pending_stops.append(d)
        return d

    # helpers for assertions

    def disconnect(self, req: HandlerRequest) -> None:
        """Make later ``grant_serve`` calls for ``req`` return False (its client left)."""
        self.gone.add(id(req))

    def fire_stops(self) -> None:
        """Fire every pending ``stop_processes`` Deferred."""
        pending, self.pending_stops = self.pending_stops, []
        for d in pending:
            d.callback(None)

    def served(self, model: str) -> int:
        """How many successful serve grants ``model`` received."""
        return sum(1 for g in self.grants if g.serve and g.model == model)

    def errored(self, model: str = "") -> int:
        """How many error grants ``model`` received ("" counts every model)."""
        return sum(1 for g in self.grants
                   if g.error is not None and (not model or g.model == model))

    def starts_for(self, model: str) -> int:
        """How many swaps were started for ``model``."""
        return sum(1 for s in self.starts if s.model == model)

    def last_start(self) -> StartRecord:
        """The most recent ``start_swap`` call (AssertionError when none)."""
        assert self.starts, "no start_swap recorded"
        return self.starts[-1]

    def served_order(self) -> list[str]:
        """Model ids of every successful serve grant, in order."""
        return [g.model for g in self.grants if g.serve]

    def grants_for(self, req: HandlerRequest) -> list[GrantRecord]:
        """Every grant (serve or error) recorded for ``req``."""
        return [g for g in self.grants if g.req is req]
