"""Reusable contract checks for scheduler plugins.

Drive any ``IScheduler`` through scripted and random scenarios against a
simulated world (processes that start, stop and crash; clients that wait,
disconnect and finish) and assert the contract every scheduler must keep:

* every request resolves exactly once (served, failed, or dropped after its
  cancel), and none is left waiting when nothing else can happen;
* no grant after ``on_cancel``; only ready models are served;
* in-flight counts never go negative (and match the world when the
  scheduler's snapshot reports ``in_flight``);
* a model with requests in flight is never evicted (``strict_eviction``);
* ``on_unload`` fails the waiting requests of unloaded models and its
  Deferred fires once ``stop_processes`` has;
* ``on_shutdown`` fails everyone still waiting;
* admitted requests never exceed a model's concurrency limit (``limits``).

Usage from any test suite::

    from llamaswap.testing.contract import check_scheduler
    check_scheduler(lambda effects: MyScheduler("t", effects), ["a", "b", "c"])

or with hypothesis, ``@given(scenario_ops())`` and ``run_scenario(build, models, ops)``.
Ops are tuples: ``("request", i)`` (i indexes models; -1 is an unknown model),
``("swap_done", i, ok)``, ``("serve_done", i)``, ``("cancel", i)``,
``("disconnect", i)`` (client gone, ``on_cancel`` delivered later),
``("deliver_cancels",)``, ``("crash", i)``, ``("unload", (i, ...), sync)``,
``("shutdown",)``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from llamaswap.interfaces import IEffects, IScheduler
from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone
from llamaswap.testing.scenarios import Op, random_ops, scenario_ops, scripted_scenarios

__all__ = [
    "ContractViolation",
    "SimulatedWorld",
    "check_scheduler",
    "random_ops",
    "run_scenario",
    "scenario_ops",
    "scripted_scenarios",
]

Builder = Callable[[IEffects], IScheduler]
UNKNOWN = "unknown-model"


class ContractViolation(AssertionError):
    """A scheduler broke the contract; the message says how, and the ops so far."""


@attrs.define(eq=False)
class _Tracked:
    req: HandlerRequest
    outcome: str | None = None      # "served", "error", "dropped" (grant_serve False)
    gone: bool = False               # the client disconnected
    cancel_delivered: bool = False   # on_cancel reached the scheduler
    error: Exception | None = None

    @property
    def open(self) -> bool:
        return self.outcome is None and not self.cancel_delivered


@attrs.define(eq=False)
class _Swap:
    model: str
    evict: tuple[str, ...]


@implementer(IEffects)
class SimulatedWorld:
    """An IEffects that simulates processes and clients and checks every call."""

    def __init__(self, models: Sequence[str], *, strict_eviction: bool = True,
                 limits: Mapping[str, int] | None = None) -> None:
        self.models = list(models)
        self.states = {m: ProcessState.STOPPED for m in self.models}
        self.strict_eviction = strict_eviction
        self.limits = dict(limits or {})
        self.tracked: list[_Tracked] = []
        self.by_req: dict[HandlerRequest, _Tracked] = {}
        self.swaps: list[_Swap] = []
        self.serving: list[_Tracked] = []
        self.in_flight: dict[str, int] = {}
        self.pending_cancels: list[_Tracked] = []
        self.pending_stops: list[tuple[Deferred[None], tuple[str, ...]]] = []
        self.sync_stops = True
        self.shut_down = False
        self.log: list[Op] = []

    def fail(self, message: str) -> ContractViolation:
        """A ContractViolation that lists the ops run so far."""
        return ContractViolation(f"{message}\nops so far: {self.log!r}")

    # IEffects

    def model_state(self, model_id: str) -> ProcessState | None:
        """The simulated state, None for unknown models."""
        return self.states.get(model_id)

    def running_models(self) -> Mapping[str, ProcessState]:
        """Starting, ready and stopping models."""
        return {m: s for m, s in self.states.items() if s.is_running()}

    def start_swap(self, model_id: str, evict: Sequence[str]) -> None:
        """Record a swap; check the target is known and nothing busy is evicted."""
        self._check_alive("start_swap")
        if model_id not in self.states:
            raise self.fail(f"start_swap for unknown model {model_id!r}")
        if model_id in evict:
            raise self.fail(f"start_swap({model_id!r}) evicts its own target")
        if self.strict_eviction:
            busy = [m for m in evict if self.in_flight.get(m, 0) > 0]
            if busy:
                raise self.fail(f"start_swap({model_id!r}) evicts {busy} with requests in flight")
        for m in evict:
            if m in self.states and self.states[m].is_running():
                self.states[m] = ProcessState.STOPPING
        if self.states[model_id] is ProcessState.STOPPED:
            self.states[model_id] = ProcessState.STARTING
        self.swaps.append(_Swap(model_id, tuple(evict)))

    def grant_error(self, req: HandlerRequest, error: Exception) -> None:
        """Check the request may still be resolved, then record the error."""
        t = self._resolving(req, "grant_error")
        if not isinstance(error, Exception):
            raise self.fail(f"grant_error with a non-exception {error!r}")
        t.outcome, t.error = "error", error

    def grant_serve(self, req: HandlerRequest, model_id: str) -> bool:
        """Check the grant; False when the client is gone, else count it in flight."""
        t = self._resolving(req, "grant_serve")
        if model_id != req.model:
            raise self.fail(f"request for {req.model!r} granted to {model_id!r}")
        if self.states.get(model_id) is not ProcessState.READY:
            raise self.fail(f"grant_serve for {model_id!r} in state {self.states.get(model_id)}")
        if t.gone:
            t.outcome = "dropped"
            return False
        t.outcome = "served"
        self.serving.append(t)
        self.in_flight[model_id] = self.in_flight.get(model_id, 0) + 1
        return True

    def stop_processes(self, timeout: float, ids: Sequence[str]) -> Deferred[None]:
        """Stop ``ids``; the Deferred fires at once or right after the unload returns."""
        for m in ids:
            if m in self.states:
                self.states[m] = ProcessState.STOPPED
        if self.sync_stops:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.pending_stops.append((d, tuple(ids)))
        return d

    # checks

    def _check_alive(self, what: str) -> None:
        if self.shut_down:
            raise self.fail(f"{what} called after on_shutdown")

    def _resolving(self, req: HandlerRequest, what: str) -> _Tracked:
        self._check_alive(what)
        t = self.by_req.get(req)
        if t is None:
            raise self.fail(f"{what} for a request the scheduler was never given")
        if t.cancel_delivered:
            raise self.fail(f"{what} for a request after its on_cancel")
        if t.outcome is not None:
            raise self.fail(f"{what} for a request already resolved ({t.outcome})")
        return t

    def check_invariants(self, scheduler: IScheduler) -> None:
        """Snapshot is JSON-able; in-flight counts agree; limits hold."""
        try:
            snap = scheduler.snapshot()
            json.dumps(snap)
        except Exception as e:
            raise self.fail(f"snapshot() is not JSON-able: {e!r}") from e
        reported = snap.get("in_flight") if isinstance(snap, dict) else None
        if isinstance(reported, dict):
            for model in set(reported) | set(self.in_flight):
                got = reported.get(model, 0)
                if got < 0:
                    raise self.fail(f"in-flight count for {model!r} is negative ({got})")
                if got != self.in_flight.get(model, 0):
                    raise self.fail(f"scheduler counts {got} in flight for {model!r}, "
                                    f"the world {self.in_flight.get(model, 0)}")
        for model, limit in self.limits.items():
            held = sum(1 for t in self.tracked if t.req.model == model
                       and (t.open or t in self.serving))
            if held > limit:
                raise self.fail(f"{held} requests admitted for {model!r}, limit {limit}")


def run_scenario(build: Builder, models: Sequence[str], ops: Iterable[Op], *,
                 strict_eviction: bool = True, limits: Mapping[str, int] | None = None,
                 settle: bool = True) -> SimulatedWorld:
    """Run ``ops`` against ``build(world)``; raise ContractViolation on any breach.

    With ``settle`` the world then completes every swap and serve until
    nothing is pending, and checks that no request was left waiting.
    """
    world = SimulatedWorld(models, strict_eviction=strict_eviction, limits=limits)
    sched = build(world)
    for op in ops:
        if world.shut_down:
            break
        world.log.append(op)
        _apply(world, sched, op)
        world.check_invariants(sched)
    if settle and not world.shut_down:
        _settle(world, sched)
    return world


def _pick(items: Sequence[Any], index: int) -> Any:
    return items[index % len(items)] if items else None


def _apply(world: SimulatedWorld, sched: IScheduler, op: Op) -> None:
    kind = op[0]
    if kind == "request":
        model = UNKNOWN if op[1] < 0 else _pick(world.models, op[1]) or UNKNOWN
        req = HandlerRequest(model)
        t = _Tracked(req)
        world.tracked.append(t)
        world.by_req[req] = t
        sched.on_request(req)
    elif kind == "swap_done":
        swap = _pick(world.swaps, op[1])
        if swap is not None:
            _finish_swap(world, sched, swap, bool(op[2]))
    elif kind == "serve_done":
        t = _pick(world.serving, op[1])
        if t is not None:
            _finish_serve(world, sched, t)
    elif kind in ("cancel", "disconnect"):
        t = _pick([t for t in world.tracked if t.outcome is None and not t.gone], op[1])
        if t is not None:
            t.gone = True
            world.pending_cancels.append(t)
            if kind == "cancel":
                _deliver_cancels(world, sched)
    elif kind == "deliver_cancels":
        _deliver_cancels(world, sched)
    elif kind == "crash":
        model = _pick(world.models, op[1])
        if model is not None and world.states[model] is ProcessState.READY:
            world.states[model] = ProcessState.STOPPED
    elif kind == "unload":
        targets = sorted({_pick(world.models, i) for i in op[1]} - {None})
        _unload(world, sched, targets, sync=bool(op[2]))
    elif kind == "shutdown":
        waiting = [t for t in world.tracked if t.open]
        sched.on_shutdown(RuntimeError("shutting down"))
        world.shut_down = True
        left = [t.req.model for t in waiting if t.open]
        if left:
            raise world.fail(f"on_shutdown left requests for {left} unresolved")
    else:
        raise ValueError(f"unknown op {op!r}")


def _finish_swap(world: SimulatedWorld, sched: IScheduler, swap: _Swap, ok: bool) -> None:
    world.swaps.remove(swap)
    for m in swap.evict:
        if world.states.get(m) is ProcessState.STOPPING:
            world.states[m] = ProcessState.STOPPED
    error = None
    if ok and world.states[swap.model] is ProcessState.STARTING:
        world.states[swap.model] = ProcessState.READY
    elif world.states[swap.model] is not ProcessState.READY:
        world.states[swap.model] = ProcessState.STOPPED
        error = RuntimeError(f"start of {swap.model} failed")
    sched.on_swap_done(SwapDone(swap.model, error))


def _finish_serve(world: SimulatedWorld, sched: IScheduler, t: _Tracked) -> None:
    world.serving.remove(t)
    world.in_flight[t.req.model] -= 1
    if not world.in_flight[t.req.model]:
        del world.in_flight[t.req.model]
    sched.on_serve_done(ServeDone(t.req.model))


def _deliver_cancels(world: SimulatedWorld, sched: IScheduler) -> None:
    pending, world.pending_cancels = world.pending_cancels, []
    for t in pending:
        if t.outcome is None:
            t.cancel_delivered = True
        sched.on_cancel(t.req)


def _unload(world: SimulatedWorld, sched: IScheduler, targets: list[str], sync: bool) -> None:
    waiting = [t for t in world.tracked if t.open and t.req.model in targets]
    world.sync_stops = sync
    d = sched.on_unload(targets, 5.0)
    world.sync_stops = True
    if not isinstance(d, Deferred):
        raise world.fail("on_unload did not return a Deferred")
    stopped = [m for m in targets if world.states[m] is ProcessState.STOPPED]
    if stopped != targets:
        raise world.fail(f"on_unload({targets}) did not stop them all via stop_processes")
    pending, world.pending_stops = world.pending_stops, []
    if pending and d.called:
        raise world.fail("on_unload's Deferred fired before stop_processes did")
    for stop, _ in pending:
        stop.callback(None)
    fired: list[object] = []
    d.addBoth(fired.append)
    if not fired:
        raise world.fail(f"on_unload({targets}) Deferred did not fire after the stops")
    served = [t.req.model for t in waiting if t.outcome == "served"]
    left = [t.req.model for t in waiting if t.open]
    if served or left:
        raise world.fail(f"on_unload({targets}) served {served} / left {left} waiting")


def _settle(world: SimulatedWorld, sched: IScheduler) -> None:
    _deliver_cancels(world, sched)
    world.check_invariants(sched)
    for _ in range(10_000):
        if world.swaps:
            world.log.append(("swap_done", 0, True))
            _finish_swap(world, sched, world.swaps[0], True)
        elif world.serving:
            world.log.append(("serve_done", 0))
            _finish_serve(world, sched, world.serving[0])
        else:
            break
        world.check_invariants(sched)
    stuck = [t.req.model for t in world.tracked if t.open]
    if stuck:
        raise world.fail(f"requests for {stuck} never resolved though nothing is pending")


def check_scheduler(build: Builder, models: Sequence[str] = ("a", "b", "c"), *,
                    random_runs: int = 200, seed: int = 0, strict_eviction: bool = True,
                    limits: Mapping[str, int] | None = None) -> None:
    """Run the scripted scenarios and ``random_runs`` random ones; raise on any breach."""
    for name, ops in scripted_scenarios().items():
        try:
            run_scenario(build, models, ops, strict_eviction=strict_eviction, limits=limits)
        except ContractViolation as e:
            raise ContractViolation(f"scenario {name!r}: {e}") from None
    rng = random.Random(seed)
    for _ in range(random_runs):
        run_scenario(build, models, random_ops(rng, len(models)),
                     strict_eviction=strict_eviction, limits=limits)
