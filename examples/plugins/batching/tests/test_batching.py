"""The batching scheduler as a pure state machine, plus llamaswap's contract checks."""

from __future__ import annotations

from collections.abc import Sequence

from llamaswap_batching import BatchingScheduler, batching
from twisted.plugin import getPlugins
from zope.interface import implementer
from zope.interface.verify import verifyObject

from llamaswap.interfaces import IScheduler, ISchedulerFactory, ISwapper
from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone
from llamaswap.testing.contract import check_scheduler
from llamaswap.testing.effects import RecordingEffects

READY, STOPPED = ProcessState.READY, ProcessState.STOPPED


@implementer(ISwapper)
class OneAtATime:
    """Every other running model must stop (classic llama-swap)."""

    def eviction_for(self, target: str, running: Sequence[str]) -> list[str]:
        """Everything but the target."""
        return [m for m in running if m != target]

    def on_swap_start(self, target: str, running: Sequence[str]) -> None:
        """Nothing to log."""


def make(max_skips: int, **states: ProcessState) -> tuple[BatchingScheduler, RecordingEffects]:
    """A batching scheduler over fake effects."""
    eff = RecordingEffects(states)
    return BatchingScheduler("t", OneAtATime(), eff, max_skips=max_skips), eff


def test_batching_found_by_getplugins() -> None:
    """The installed plugin is found by name and verifies."""
    found = [p for p in getPlugins(ISchedulerFactory) if p.name == "batching"]
    assert found == [batching]
    assert verifyObject(ISchedulerFactory, batching)
    sched = batching.build(name="t", effects=RecordingEffects(), swapper=OneAtATime(),
                           settings={"max_skips": 2}, models={}, log=None)
    assert verifyObject(IScheduler, sched)
    assert sched.max_skips == 2


def test_batching_serves_loaded_model_first() -> None:
    """Requests for the loaded model overtake a waiting request for another model."""
    s, eff = make(8, a=READY, b=STOPPED)
    s.on_request(HandlerRequest("a"))
    s.on_request(HandlerRequest("b"))
    s.on_request(HandlerRequest("a"))
    assert eff.served_order() == ["a", "a"]
    assert s.snapshot()["queue"] == [{"model": "b", "position": 1, "skips": 1}]


def test_batching_bounds_overtaking() -> None:
    """After max_skips overtakes, new requests for the loaded model wait behind b."""
    s, eff = make(2, a=READY, b=STOPPED)
    s.on_request(HandlerRequest("a"))
    s.on_request(HandlerRequest("b"))
    for _ in range(3):
        s.on_request(HandlerRequest("a"))
    assert eff.served("a") == 3
    assert eff.starts == []
    for _ in range(3):
        s.on_serve_done(ServeDone("a"))
    assert eff.last_start().model == "b"
    assert eff.last_start().evict == ("a",)
    eff.states.update(a=STOPPED, b=READY)
    s.on_swap_done(SwapDone("b"))
    assert eff.served_order() == ["a", "a", "a", "b"]


def test_batching_zero_skips_is_arrival_order() -> None:
    """With max_skips 0 nobody overtakes: a b a is served a, b, a."""
    s, eff = make(0, a=READY, b=STOPPED)
    for m in "aba":
        s.on_request(HandlerRequest(m))
    assert eff.served_order() == ["a"]
    s.on_serve_done(ServeDone("a"))
    eff.states.update(a=STOPPED, b=READY)
    s.on_swap_done(SwapDone("b"))
    assert eff.served_order() == ["a", "b"]


def test_batching_keeps_the_contract() -> None:
    """llamaswap's reusable contract checks pass for several max_skips values."""
    for max_skips in (0, 1, 3, 8):
        check_scheduler(lambda eff, k=max_skips: BatchingScheduler(
            "t", OneAtATime(), eff, max_skips=k, limits={"b": 3}), ["a", "b", "c"],
            random_runs=150, seed=max_skips, limits={"a": 10, "b": 3, "c": 10})
