"""FIFOScheduler as a pure state machine: every branch of the SPEC 4.2 decision tree."""

from __future__ import annotations

import json
from collections.abc import Sequence

from zope.interface import implementer
from zope.interface.verify import verifyObject

from llamaswap.errors import ConcurrencyLimitExceeded, ModelNotFound, ModelUnloaded, UpstreamError
from llamaswap.interfaces import IScheduler, ISwapper
from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone
from llamaswap.router.scheduler.fifo import FIFOScheduler
from llamaswap.router.swapper.group import GroupSwapper
from llamaswap.testing.effects import RecordingEffects

STOPPED = ProcessState.STOPPED
READY = ProcessState.READY
STARTING = ProcessState.STARTING


@implementer(ISwapper)
class TableSwapper:
    """Evicts what a table says (only models in ``running``); records on_swap_start."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.started: list[tuple[str, list[str]]] = []

    def eviction_for(self, target: str, running: Sequence[str]) -> list[str]:
        """Evict the table's entries that are running."""
        return [m for m in running if m in self.table.get(target, [])]

    def on_swap_start(self, target: str, running: Sequence[str]) -> None:
        """Record the call."""
        self.started.append((target, list(running)))


def one_at_a_time(models: Sequence[str]) -> GroupSwapper:
    """The default group router: every model in one swapping, exclusive group."""
    return GroupSwapper(None, models)


def make(swapper: ISwapper | None = None, priority: dict[str, int] | None = None,
         limits: dict[str, int] | None = None,
         **states: ProcessState) -> tuple[FIFOScheduler, RecordingEffects]:
    """A FIFO scheduler over fake effects with the given process states."""
    eff = RecordingEffects(states)
    sw = swapper or one_at_a_time(list(states))
    return FIFOScheduler("test", sw, eff, priority=priority, limits=limits), eff


def req(model: str, positions: list[int] | None = None) -> HandlerRequest:
    """A request that records its queue positions into ``positions``."""
    return HandlerRequest(model, on_position=positions.append if positions is not None else None)


def complete(s: FIFOScheduler, eff: RecordingEffects, model: str) -> None:
    """Finish the latest swap for ``model`` successfully, applying its evictions."""
    st = [x for x in eff.starts if x.model == model][-1]
    for e in st.evict:
        eff.states[e] = STOPPED
    eff.states[model] = READY
    s.on_swap_done(SwapDone(model))


def test_fifo_provides_ischeduler() -> None:
    """FIFOScheduler provides IScheduler."""
    s, _ = make()
    assert verifyObject(IScheduler, s)


def test_fifo_unknown_model() -> None:
    """An unknown model gets ModelNotFound with llama-swap's message."""
    s, eff = make(a=READY)
    s.on_request(req("ghost"))
    [g] = eff.grants
    assert isinstance(g.error, ModelNotFound)
    assert g.error.message == "no local server found for requested model ghost"


def test_fifo_fast_path_ready_model() -> None:
    """A ready model with nothing to evict is served at once and counted in flight."""
    s, eff = make(a=READY)
    r = req("a")
    s.on_request(r)
    assert eff.served("a") == 1
    assert eff.starts == []
    assert s.snapshot()["in_flight"] == {"a": 1}
    assert r.metadata["fifo_priority"] == "0"


def test_fifo_cold_start_starts_swap_and_serves_waiters() -> None:
    """A stopped model starts one swap; a second request joins it; both are served."""
    s, eff = make(a=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("a"))
    assert eff.starts_for("a") == 1
    assert s.snapshot()["swaps"] == [{"model": "a", "evict": [], "waiters": 2}]
    complete(s, eff, "a")
    assert eff.served("a") == 2
    assert s.snapshot()["in_flight"] == {"a": 2}


def test_fifo_swap_start_notifies_swapper_once() -> None:
    """on_swap_start is called once per committed swap with the running set eviction saw."""
    sw = TableSwapper({"b": ["a"]})
    s, eff = make(sw, a=READY, b=STOPPED)
    s.on_request(req("b"))
    s.on_request(req("b"))
    assert sw.started == [("b", ["a"])]
    assert eff.last_start().evict == ("a",)


def test_fifo_swap_error_fails_every_waiter() -> None:
    """A failed swap fails all its waiters with the same error and drains the queue."""
    s, eff = make(a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("a"))
    s.on_request(req("b"))
    assert eff.starts_for("b") == 0
    boom = UpstreamError("boom")
    s.on_swap_done(SwapDone("a", boom))
    assert [g.error for g in eff.grants] == [boom, boom]
    assert eff.starts_for("b") == 1


def test_fifo_swap_done_for_unknown_swap_is_ignored() -> None:
    """A SwapDone for a swap the scheduler does not track changes nothing."""
    s, eff = make(a=STOPPED)
    s.on_swap_done(SwapDone("a"))
    s.on_swap_done(SwapDone("a", UpstreamError("late")))
    assert eff.grants == []


def test_fifo_batches_same_model_requests() -> None:
    """A B C A B C with every model cold is served A A B B C C."""
    s, eff = make(a=STOPPED, b=STOPPED, c=STOPPED)
    for m in "abcabc":
        s.on_request(req(m))
    complete(s, eff, "a")
    for _ in range(2):
        s.on_serve_done(ServeDone("a"))
    complete(s, eff, "b")
    for _ in range(2):
        s.on_serve_done(ServeDone("b"))
    complete(s, eff, "c")
    assert eff.served_order() == ["a", "a", "b", "b", "c", "c"]


def test_fifo_fast_path_overtakes_queue() -> None:
    """A request for the ready model is served even while another model's request waits."""
    s, eff = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    s.on_request(req("a"))
    assert eff.served("a") == 2
    assert eff.starts == []
    assert s.snapshot()["queue"] == [{"model": "b", "position": 1, "priority": 0}]


def test_fifo_never_evicts_model_in_flight() -> None:
    """A swap that would evict a busy model waits until its last request ends."""
    s, eff = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("a"))
    s.on_request(req("b"))
    assert eff.starts_for("b") == 0
    s.on_serve_done(ServeDone("a"))
    assert eff.starts_for("b") == 0
    s.on_serve_done(ServeDone("a"))
    assert eff.starts_for("b") == 1
    assert eff.last_start().evict == ("a",)


def test_fifo_collision_when_evicting_active_target() -> None:
    """A swap whose evict set contains another swap's target is queued."""
    sw = TableSwapper({"b": ["a"]})
    s, eff = make(sw, a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    assert [st.model for st in eff.starts] == ["a"]
    complete(s, eff, "a")
    s.on_serve_done(ServeDone("a"))
    assert eff.starts_for("b") == 1


def test_fifo_collision_when_active_swap_evicts_target() -> None:
    """A ready model being evicted by an active swap is queued, not fast-pathed."""
    sw = TableSwapper({"b": ["a"]})
    s, eff = make(sw, a=READY, b=STOPPED)
    s.on_request(req("b"))
    s.on_request(req("a"))
    assert eff.served("a") == 0
    assert len(s.queued) == 1
    complete(s, eff, "b")
    assert eff.starts_for("a") == 1


def test_fifo_collision_when_evict_sets_overlap() -> None:
    """Two swaps evicting the same model do not run in parallel."""
    sw = TableSwapper({"b": ["x"], "c": ["x"]})
    s, eff = make(sw, x=READY, b=STOPPED, c=STOPPED)
    s.on_request(req("b"))
    s.on_request(req("c"))
    assert [st.model for st in eff.starts] == ["b"]
    complete(s, eff, "b")
    assert eff.starts_for("c") == 1
    assert eff.last_start().evict == ()


def test_fifo_parallel_swaps_when_no_collision() -> None:
    """Models of non-exclusive, non-swapping groups load in parallel."""
    groups = {"g": {"swap": False, "exclusive": False, "members": ["a", "b"]}}
    s, eff = make(GroupSwapper(groups, ["a", "b"]), a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    assert [st.model for st in eff.starts] == ["a", "b"]
    assert [st.evict for st in eff.starts] == [(), ()]


def test_fifo_same_group_serialises_before_start() -> None:
    """Two models of one swap group serialise even before either process has started."""
    s, eff = make(a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    assert [st.model for st in eff.starts] == ["a"]
    complete(s, eff, "a")
    s.on_serve_done(ServeDone("a"))
    assert eff.last_start().model == "b"
    assert eff.last_start().evict == ("a",)


def test_fifo_starting_model_not_ready_starts_swap_to_wait() -> None:
    """A model that is starting (not ready) gets a swap that waits for it."""
    s, eff = make(a=STARTING)
    s.on_request(req("a"))
    assert eff.starts_for("a") == 1
    assert eff.last_start().evict == ()


def test_fifo_priority_queue_order() -> None:
    """Priorities A=10 B=5 C=5 D=1 arriving B D C A are queued A B C D."""
    sw = TableSwapper({m: ["x"] for m in "abcd"})
    prio = {"a": 10, "b": 5, "c": 5, "d": 1}
    s, _eff = make(sw, prio, x=READY, a=STOPPED, b=STOPPED, c=STOPPED, d=STOPPED)
    s.on_request(req("x"))
    for m in "bdca":
        s.on_request(req(m))
    assert [q["model"] for q in s.snapshot()["queue"]] == ["a", "b", "c", "d"]
    assert [q["priority"] for q in s.snapshot()["queue"]] == [10, 5, 5, 1]


def test_fifo_priority_metadata_recorded_on_grant() -> None:
    """A granted request carries its model's priority as fifo_priority."""
    s, _ = make(None, {"a": 7}, a=READY)
    r = req("a")
    s.on_request(r)
    assert r.metadata == {"fifo_priority": "7"}


def test_fifo_grant_serve_false_not_counted() -> None:
    """A grant whose caller left is not counted in flight, so eviction is not blocked."""
    s, eff = make(a=READY, b=STOPPED)
    eff.serve_result["a"] = False
    s.on_request(req("a"))
    assert s.snapshot()["in_flight"] == {}
    s.on_request(req("b"))
    assert eff.starts_for("b") == 1


def test_fifo_concurrency_limit_counts_in_flight() -> None:
    """With limit 2 and two requests in flight the third gets a 429."""
    s, eff = make(None, None, {"a": 2}, a=READY)
    for _ in range(3):
        s.on_request(req("a"))
    assert eff.served("a") == 2
    err = eff.grants[-1].error
    assert isinstance(err, ConcurrencyLimitExceeded)
    assert err.headers == {"Retry-After": "1"}
    s.on_serve_done(ServeDone("a"))
    s.on_request(req("a"))
    assert eff.served("a") == 3


def test_fifo_concurrency_limit_counts_waiters_and_queue() -> None:
    """Swap waiters and queued requests hold slots: a flood gets 429s before any load."""
    s, eff = make(None, None, {"a": 2, "b": 1}, a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("a"))
    s.on_request(req("a"))
    s.on_request(req("b"))
    s.on_request(req("b"))
    assert eff.errored("a") == 1 and eff.errored("b") == 1
    assert all(isinstance(g.error, ConcurrencyLimitExceeded) for g in eff.grants)


def test_fifo_cancel_queued_request() -> None:
    """A cancelled queued request leaves the queue and is never granted; others move up."""
    s, eff = make(a=STOPPED, b=STOPPED, c=STOPPED)
    s.on_request(req("a"))
    gone = req("b")
    pc: list[int] = []
    s.on_request(gone)
    s.on_request(req("c", pc))
    assert pc == [2]
    s.on_cancel(gone)
    assert pc == [2, 1]
    complete(s, eff, "a")
    s.on_serve_done(ServeDone("a"))
    assert eff.grants_for(gone) == []
    assert eff.last_start().model == "c"


def test_fifo_cancel_swap_waiter() -> None:
    """A cancelled swap waiter is not granted when the swap completes."""
    s, eff = make(a=STOPPED)
    first, second = req("a"), req("a")
    s.on_request(first)
    s.on_request(second)
    s.on_cancel(first)
    complete(s, eff, "a")
    assert eff.grants_for(first) == []
    assert eff.served("a") == 1


def test_fifo_cancel_unknown_request_is_noop() -> None:
    """Cancelling a request the scheduler does not hold sends no position updates."""
    s, _eff = make(a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    pb: list[int] = []
    s.on_request(req("b", pb))
    s.on_cancel(req("b"))
    assert pb == [1]


def test_fifo_unload_fails_waiters_and_queue_then_drains() -> None:
    """Unload fails a's waiters and queued requests, stops a, then drains the rest."""
    eff = RecordingEffects({"a": STOPPED, "b": STOPPED}, manual_stops=True)
    s = FIFOScheduler("grp", one_at_a_time(["a", "b"]), eff)
    s.on_request(req("a"))
    s.on_request(req("b"))
    d = s.on_unload(["a"], 3.0)
    [g] = eff.grants
    assert isinstance(g.error, ModelUnloaded)
    assert g.error.message == "grp: model unloaded"
    assert eff.stops[0].timeout == 3.0 and eff.stops[0].ids == ("a",)
    assert not d.called
    assert eff.starts_for("b") == 0
    eff.fire_stops()
    assert d.called
    assert eff.starts_for("b") == 1


def test_fifo_unload_drops_queued_requests_for_target() -> None:
    """Queued requests for an unloaded model are failed; others stay queued."""
    s, eff = make(a=READY, b=STOPPED, c=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    s.on_request(req("c"))
    s.on_unload(["b"], 1.0)
    assert eff.errored("b") == 1
    assert [q["model"] for q in s.snapshot()["queue"]] == ["c"]


def test_fifo_unload_late_swap_done_is_ignored() -> None:
    """The SwapDone of a swap whose target was unloaded grants nothing."""
    s, eff = make(a=STOPPED)
    s.on_request(req("a"))
    s.on_unload(["a"], 1.0)
    s.on_swap_done(SwapDone("a"))
    assert eff.served("a") == 0
    assert eff.errored("a") == 1


def test_fifo_shutdown_fails_everyone() -> None:
    """Shutdown fails every swap waiter and queued request with the reason."""
    s, eff = make(a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("a"))
    s.on_request(req("b"))
    reason = RuntimeError("bye")
    s.on_shutdown(reason)
    assert [g.error for g in eff.grants] == [reason] * 3
    assert s.snapshot()["queue"] == [] and s.snapshot()["swaps"] == []


def test_fifo_drain_joins_active_swap() -> None:
    """On drain the second queued request for a model joins the swap the first one started."""
    s, eff = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    s.on_request(req("b"))
    assert eff.starts == []
    s.on_serve_done(ServeDone("a"))
    assert eff.starts_for("b") == 1
    assert s.snapshot()["swaps"] == [{"model": "b", "evict": ["a"], "waiters": 2}]
    assert s.snapshot()["queue"] == []


def test_fifo_drain_model_vanished_is_not_found() -> None:
    """A queued request whose model disappeared is failed with ModelNotFound on drain."""
    s, eff = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    del eff.states["b"]
    s.on_serve_done(ServeDone("a"))
    assert isinstance(eff.grants[-1].error, ModelNotFound)


def test_fifo_serve_done_drains_only_at_zero() -> None:
    """ServeDone drains the queue only when the model has no more requests in flight."""
    s, eff = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("a"))
    s.on_request(req("b"))
    s.on_serve_done(ServeDone("a"))
    assert s.snapshot()["in_flight"] == {"a": 1}
    assert eff.starts == []


def test_fifo_snapshot_is_json_able() -> None:
    """The snapshot is JSON-able and lists queue, swaps and in-flight counts."""
    s, _ = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    snap = json.loads(json.dumps(s.snapshot()))
    assert snap == {
        "scheduler": "fifo",
        "queue": [{"model": "b", "position": 1, "priority": 0}],
        "swaps": [],
        "in_flight": {"a": 1},
    }
