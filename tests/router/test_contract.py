"""Contract checks: every built-in scheduler/swapper pairing passes them, broken ones fail."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from twisted.internet.defer import Deferred
from zope.interface import implementer

from llamaswap.config.model import MatrixConfig
from llamaswap.interfaces import IEffects, IScheduler, ISwapper
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone
from llamaswap.router.scheduler.fifo import FIFOScheduler
from llamaswap.router.scheduler.serial import SerialScheduler
from llamaswap.router.swapper.group import GroupSwapper
from llamaswap.router.swapper.matrix import MatrixSwapper
from llamaswap.testing.contract import (
    ContractViolation,
    check_scheduler,
    run_scenario,
    scenario_ops,
)

MODELS = ["a", "b", "c"]
LIMITS = {"a": 4, "b": 2, "c": 10}

SWAPPERS: dict[str, Callable[[], ISwapper]] = {
    "group_default": lambda: GroupSwapper(None, MODELS),
    "group_parallel": lambda: GroupSwapper(
        {"p": {"swap": False, "exclusive": False, "members": ["a", "b"]}}, MODELS),
    "matrix": lambda: MatrixSwapper(MatrixConfig(sets=(("ab", "a & b"), ("c", "c"))), MODELS),
}

BUILDERS: dict[str, Callable[[IEffects], IScheduler]] = {
    "serial": lambda eff: SerialScheduler("t", eff, limits=LIMITS),
}


def _fifo_with(make_swapper: Callable[[], ISwapper]) -> Callable[[IEffects], IScheduler]:
    return lambda eff: FIFOScheduler("t", make_swapper(), eff, limits=LIMITS, priority={"c": 2})


BUILDERS.update({f"fifo_{name}": _fifo_with(mk) for name, mk in SWAPPERS.items()})


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_contract_builtin_schedulers_pass_checks(name: str) -> None:
    """Scripted and 300 random scenarios keep the contract for each built-in pairing."""
    check_scheduler(BUILDERS[name], MODELS, random_runs=300, seed=7, limits=LIMITS)


@settings(max_examples=300, deadline=None)
@given(ops=scenario_ops(len(MODELS)))
def test_contract_builtin_schedulers_property(ops: list[tuple[Any, ...]]) -> None:
    """Random interleavings from hypothesis keep the contract for every built-in pairing."""
    for build in BUILDERS.values():
        run_scenario(build, MODELS, ops, limits=LIMITS)


@implementer(IScheduler)
class Broken:
    """A deliberately wrong FIFO-like scheduler; ``bug`` picks what it gets wrong."""

    def __init__(self, effects: IEffects, bug: str) -> None:
        self.eff = effects
        self.bug = bug
        self.inner = SerialScheduler("t", effects)

    def on_request(self, req: HandlerRequest) -> None:
        """Delegate, or misbehave."""
        if self.bug == "drop":
            return
        self.inner.on_request(req)
        if self.bug == "double":
            self.eff.grant_error(req, RuntimeError("again"))

    def on_swap_done(self, event: SwapDone) -> None:
        """Delegate."""
        self.inner.on_swap_done(event)

    def on_serve_done(self, event: ServeDone) -> None:
        """Delegate."""
        self.inner.on_serve_done(event)

    def on_cancel(self, req: HandlerRequest) -> None:
        """Delegate, or ignore cancels of the loading request."""
        if self.bug == "ignore_cancel":
            self.inner.queued = [q for q in self.inner.queued if q is not req]
            return
        self.inner.on_cancel(req)

    def on_unload(self, targets: Sequence[str], timeout: float) -> Deferred[None]:
        """Delegate, or forget to stop."""
        if self.bug == "unload_no_stop":
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        return self.inner.on_unload(targets, timeout)

    def on_shutdown(self, reason: Exception) -> None:
        """Delegate, or forget the queue."""
        if self.bug == "shutdown_forgets":
            return
        self.inner.on_shutdown(reason)

    def snapshot(self) -> dict[str, Any]:
        """Delegate, or lie about in-flight counts."""
        snap = self.inner.snapshot()
        if self.bug == "negative":
            snap["in_flight"] = {"a": -1}
        return snap


@pytest.mark.parametrize(("bug", "ops", "message"), [
    ("drop", [("request", 0)], "never resolved"),
    ("double", [("request", -1)], "already resolved"),
    ("ignore_cancel", [("request", 0), ("cancel", 0), ("swap_done", 0, True)],
     "after its on_cancel"),
    ("unload_no_stop", [("request", 0), ("unload", (0,), True)], "did not stop them all"),
    ("shutdown_forgets", [("request", 0), ("request", 1), ("shutdown",)], "unresolved"),
    ("negative", [("request", 0)], "negative"),
])
def test_contract_catches_broken_schedulers(bug: str, ops: list[tuple[Any, ...]],
                                            message: str) -> None:
    """Each contract check fails a scheduler that breaks it."""
    with pytest.raises(ContractViolation, match=message):
        run_scenario(lambda eff: Broken(eff, bug), MODELS, ops)


def test_contract_catches_eviction_of_busy_model() -> None:
    """Evicting a model with requests in flight is a violation in strict mode."""
    @implementer(ISwapper)
    class EvictAll:
        """Evicts everything."""

        def eviction_for(self, target: str, running: Sequence[str]) -> list[str]:
            """Everything else."""
            return [m for m in running if m != target]

        def on_swap_start(self, target: str, running: Sequence[str]) -> None:
            """Nothing."""

    def build(eff: IEffects) -> IScheduler:
        sched = FIFOScheduler("t", EvictAll(), eff)
        sched.in_flight = {}  # FIFO guards busy models; break that guard for the test
        original = sched._decide

        def no_guard(req: HandlerRequest) -> bool:
            saved, sched.in_flight = sched.in_flight, {}
            try:
                return original(req)
            finally:
                sched.in_flight = {**saved, **sched.in_flight}

        sched._decide = no_guard  # type: ignore[method-assign]
        return sched

    with pytest.raises(ContractViolation, match="with requests in flight"):
        run_scenario(build, MODELS, [("request", 0), ("swap_done", 0, True), ("request", 1)])


def test_contract_catches_limit_breach() -> None:
    """Admitting more than the limit is a violation when limits are given."""
    with pytest.raises(ContractViolation, match="limit 1"):
        run_scenario(lambda eff: SerialScheduler("t", eff), MODELS,
                     [("request", 0), ("request", 0)], limits={"a": 1})
