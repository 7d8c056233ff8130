"""SerialScheduler as a pure state machine: a port of every test in serial_test.go, and more."""

from __future__ import annotations

from llamaswap.errors import ConcurrencyLimitExceeded, ModelNotFound, ModelUnloaded, UpstreamError
from llamaswap.interfaces import IScheduler
from llamaswap.process.state import ProcessState
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone
from llamaswap.router.scheduler.serial import SerialScheduler
from llamaswap.testing.effects import RecordingEffects

STOPPED = ProcessState.STOPPED
READY = ProcessState.READY


def make(**states: ProcessState) -> tuple[SerialScheduler, RecordingEffects]:
    """A serial scheduler over fake effects with the given process states."""
    eff = RecordingEffects(states)
    return SerialScheduler("test", eff), eff


def req(model: str, positions: list[int] | None = None) -> HandlerRequest:
    """A request that records its queue positions into ``positions``."""
    return HandlerRequest(model, on_position=positions.append if positions is not None else None)


def test_serial_fast_path_already_loaded() -> None:
    """A request for the only ready model is served without a swap."""
    s, eff = make(a=READY)
    s.on_request(req("a"))
    assert eff.starts == []
    assert eff.served("a") == 1


def test_serial_cold_start_loads_then_serves() -> None:
    """A stopped model is loaded first and served only when the swap is done."""
    s, eff = make(a=STOPPED)
    s.on_request(req("a"))
    assert eff.starts_for("a") == 1
    assert eff.served("a") == 0
    eff.states["a"] = READY
    s.on_swap_done(SwapDone("a"))
    assert eff.served("a") == 1


def test_serial_unknown_model() -> None:
    """An unknown model is answered with ModelNotFound and starts nothing."""
    s, eff = make()
    s.on_request(req("ghost"))
    assert eff.starts == []
    assert eff.errored("ghost") == 1
    err = eff.grants[0].error
    assert isinstance(err, ModelNotFound)
    assert err.message == "no local server found for requested model ghost"


def test_serial_evicts_every_other_model() -> None:
    """Loading a model evicts every other running model, whatever the groups."""
    s, eff = make(x=READY, y=READY, a=STOPPED)
    s.on_request(req("a"))
    st = eff.last_start()
    assert st.model == "a"
    assert sorted(st.evict) == ["x", "y"]


def test_serial_one_job_at_a_time() -> None:
    """A second request waits while the first serves and starts after it ends."""
    s, eff = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    assert eff.starts_for("b") == 0
    assert eff.served("a") == 1
    s.on_serve_done(ServeDone("a"))
    assert eff.starts_for("b") == 1
    assert eff.last_start().evict == ("a",)


def test_serial_same_model_consecutive_no_reload() -> None:
    """Back-to-back requests for the loaded model run one after another without a reload."""
    s, eff = make(a=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("a"))
    eff.states["a"] = READY
    s.on_swap_done(SwapDone("a"))
    assert eff.served("a") == 1
    s.on_serve_done(ServeDone("a"))
    assert eff.served("a") == 2
    assert eff.starts_for("a") == 1


def test_serial_strict_arrival_order() -> None:
    """qwen36 qwen35 sdxl qwen36 run in exactly that order, reloading qwen36 at the end."""
    s, eff = make(qwen36=STOPPED, qwen35=STOPPED, sdxl=STOPPED)
    for m in ["qwen36", "qwen35", "sdxl", "qwen36"]:
        s.on_request(req(m))
    assert [st.model for st in eff.starts] == ["qwen36"]

    def step(model: str, want_evict: list[str]) -> None:
        st = eff.last_start()
        assert st.model == model
        assert sorted(st.evict) == want_evict
        for e in st.evict:
            eff.states[e] = STOPPED
        eff.states[model] = READY
        s.on_swap_done(SwapDone(model))
        s.on_serve_done(ServeDone(model))

    step("qwen36", [])
    step("qwen35", ["qwen36"])
    step("sdxl", ["qwen35"])
    step("qwen36", ["sdxl"])
    assert eff.served_order() == ["qwen36", "qwen35", "sdxl", "qwen36"]


def test_serial_swap_error_fails_caller_and_advances() -> None:
    """A failed load errors its caller and the next queued request starts loading."""
    s, eff = make(a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    boom = UpstreamError("boom")
    s.on_swap_done(SwapDone("a", boom))
    assert eff.errored("a") == 1
    assert eff.grants[0].error is boom
    assert eff.starts_for("b") == 1


def test_serial_grant_serve_false_advances() -> None:
    """When the active caller left before its grant, the queue advances to the next one."""
    s, eff = make(a=STOPPED, b=STOPPED)
    eff.serve_result["a"] = False
    s.on_request(req("a"))
    s.on_request(req("b"))
    eff.states["a"] = READY
    s.on_swap_done(SwapDone("a"))
    assert eff.served("a") == 0
    assert eff.starts_for("b") == 1


def test_serial_on_cancel_queued_request() -> None:
    """A cancelled queued request is dropped and never starts a load."""
    s, eff = make(a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    cancelled = req("b")
    s.on_request(cancelled)
    assert len(s.queued) == 1
    s.on_cancel(cancelled)
    assert s.queued == []
    eff.states["a"] = READY
    s.on_swap_done(SwapDone("a"))
    s.on_serve_done(ServeDone("a"))
    assert eff.starts_for("b") == 0
    assert eff.grants_for(cancelled) == []


def test_serial_on_shutdown_fails_queued_and_active_load() -> None:
    """Shutdown fails the loading request and both queued requests with the reason."""
    s, eff = make(a=STOPPED, b=STOPPED, c=STOPPED)
    for m in "abc":
        s.on_request(req(m))
    reason = RuntimeError("shutting down")
    s.on_shutdown(reason)
    assert eff.errored() == 3
    assert all(g.error is reason for g in eff.grants)
    assert s.queued == []


def test_serial_on_unload_while_serving() -> None:
    """Unloading the serving model stops it but the queue waits for its ServeDone."""
    s, eff = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    assert eff.served("a") == 1
    d = s.on_unload(["a"], 1.0)
    assert [(st.timeout, st.ids) for st in eff.stops] == [(1.0, ("a",))]
    assert eff.starts_for("b") == 0
    assert d.called
    eff.states["a"] = STOPPED
    s.on_serve_done(ServeDone("a"))
    assert eff.starts_for("b") == 1


def test_serial_on_unload_drops_queued_and_stops() -> None:
    """Unloading the loading model fails it, stops it, and the queue advances."""
    s, eff = make(a=STOPPED, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    s.on_unload(["a"], 1.0)
    assert eff.errored("a") == 1
    assert isinstance(eff.grants[0].error, ModelUnloaded)
    assert eff.grants[0].error.message == "test: model unloaded"
    assert eff.stops[0].ids == ("a",)
    assert eff.starts_for("b") == 1


# Beyond the Go tests: Deferred semantics, cancel, limits, positions, snapshot.


def test_serial_provides_ischeduler() -> None:
    """SerialScheduler provides IScheduler."""
    from zope.interface.verify import verifyObject

    s, _ = make()
    assert verifyObject(IScheduler, s)


def test_serial_on_unload_waits_for_stop_before_advancing() -> None:
    """on_unload's Deferred fires after stop_processes; only then does the queue advance."""
    eff = RecordingEffects({"a": STOPPED, "b": STOPPED, "c": STOPPED}, manual_stops=True)
    s = SerialScheduler("test", eff)
    s.on_request(req("a"))
    s.on_request(req("b"))
    s.on_request(req("c"))
    d = s.on_unload(["a", "b"], 5.0)
    assert not d.called
    assert eff.errored() == 2
    assert eff.starts_for("c") == 0
    eff.fire_stops()
    assert d.called
    assert eff.starts_for("c") == 1


def test_serial_on_unload_stop_failure_still_advances() -> None:
    """A failing stop_processes still advances the queue and the failure reaches the caller."""
    eff = RecordingEffects({"a": STOPPED, "b": STOPPED}, manual_stops=True)
    s = SerialScheduler("test", eff)
    s.on_request(req("a"))
    s.on_request(req("b"))
    d = s.on_unload(["a"], 5.0)
    failures: list[object] = []
    d.addErrback(failures.append)
    eff.pending_stops[0].errback(RuntimeError("stop failed"))
    assert len(failures) == 1
    assert eff.starts_for("b") == 1


def test_serial_on_cancel_loading_request_is_never_granted() -> None:
    """Cancelling the loading request means it is never granted; the next one then runs."""
    s, eff = make(a=STOPPED, b=STOPPED)
    first = req("a")
    s.on_request(first)
    s.on_request(req("b"))
    s.on_cancel(first)
    eff.states["a"] = READY
    s.on_swap_done(SwapDone("a"))
    assert eff.grants_for(first) == []
    assert eff.starts_for("b") == 1


def test_serial_on_cancel_unknown_request_is_noop() -> None:
    """Cancelling a request the scheduler does not hold changes nothing."""
    s, eff = make(a=READY)
    served = req("a")
    s.on_request(served)
    s.on_cancel(served)
    s.on_cancel(req("a"))
    assert s.snapshot()["active"] == {"model": "a", "phase": "serving"}
    assert eff.served("a") == 1


def test_serial_cancelled_loading_request_not_failed_by_unload() -> None:
    """A cancelled loading request is not granted an error by a later unload."""
    s, eff = make(a=STOPPED)
    first = req("a")
    s.on_request(first)
    s.on_cancel(first)
    s.on_unload(["a"], 1.0)
    s.on_shutdown(RuntimeError("bye"))
    assert eff.grants_for(first) == []


def test_serial_cancelled_loading_request_not_failed_by_shutdown() -> None:
    """Shutdown does not grant an error to a cancelled loading request."""
    s, eff = make(a=STOPPED)
    first = req("a")
    s.on_request(first)
    s.on_cancel(first)
    s.on_shutdown(RuntimeError("bye"))
    assert eff.grants_for(first) == []


def test_serial_stale_events_are_ignored() -> None:
    """SwapDone for another model, or ServeDone while idle or loading, changes nothing."""
    s, eff = make(a=STOPPED, b=STOPPED)
    s.on_serve_done(ServeDone("a"))
    s.on_request(req("a"))
    s.on_swap_done(SwapDone("b"))
    s.on_serve_done(ServeDone("a"))
    assert eff.grants == []
    assert s.snapshot()["active"] == {"model": "a", "phase": "swapping"}


def test_serial_concurrency_limit_counts_queued_requests() -> None:
    """Admission counts queued and active requests: the request over the limit gets a 429."""
    eff = RecordingEffects({"a": STOPPED})
    s = SerialScheduler("test", eff, limits={"a": 2})
    s.on_request(req("a"))
    s.on_request(req("a"))
    over = req("a")
    s.on_request(over)
    [g] = eff.grants_for(over)
    assert isinstance(g.error, ConcurrencyLimitExceeded)
    assert g.error.status == 429
    eff.states["a"] = READY
    s.on_swap_done(SwapDone("a"))
    s.on_serve_done(ServeDone("a"))
    again = req("a")
    s.on_request(again)
    assert eff.grants_for(again) == []


def test_serial_default_concurrency_limit_is_ten() -> None:
    """Without a configured limit a model admits ten requests, the eleventh gets a 429."""
    s, eff = make(a=STOPPED)
    for _ in range(11):
        s.on_request(req("a"))
    assert eff.errored("a") == 1
    assert isinstance(eff.grants[0].error, ConcurrencyLimitExceeded)


def test_serial_positions_are_broadcast() -> None:
    """Queued requests learn their positions as the queue moves."""
    s, eff = make(a=STOPPED, b=STOPPED)
    pa: list[int] = []
    pb: list[int] = []
    pc: list[int] = []
    s.on_request(req("a", pa))
    s.on_request(req("b", pb))
    s.on_request(req("a", pc))
    assert pa == [1]
    assert pb[-1] == 1 and pc[-1] == 2
    eff.states["a"] = READY
    s.on_swap_done(SwapDone("a"))
    s.on_serve_done(ServeDone("a"))
    assert pc[-1] == 1


def test_serial_snapshot_is_json_able() -> None:
    """The snapshot lists the queue with positions and the active job."""
    import json

    s, _ = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    snap = s.snapshot()
    json.dumps(snap)
    assert snap["queue"] == [{"model": "b", "position": 1}]
    assert snap["active"] == {"model": "a", "phase": "serving"}
    assert snap["in_flight"] == {"a": 1}


def test_serial_queued_model_that_vanished_is_not_found() -> None:
    """A queued request whose model disappeared by its turn gets ModelNotFound."""
    s, eff = make(a=READY, b=STOPPED)
    s.on_request(req("a"))
    s.on_request(req("b"))
    del eff.states["b"]
    s.on_serve_done(ServeDone("a"))
    assert isinstance(eff.grants[-1].error, ModelNotFound)
