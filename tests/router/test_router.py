"""The Router on task.Clock: event queue discipline, unload pause, cancel, shutdown, TTL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from llamaswap.config.model import (
    Config,
    ModelConfig,
    RouterConfig,
    RoutingConfig,
    SchedulerConfig,
)
from llamaswap.errors import (
    ModelNotFound,
    ModelUnloaded,
    ShuttingDown,
    UpstreamError,
    UpstreamStartFailed,
)
from llamaswap.process.state import ProcessState
from llamaswap.router import builtin
from llamaswap.router.base import Grant, Router
from llamaswap.router.scheduler.fifo import FIFOScheduler
from llamaswap.router.scheduler.serial import SerialScheduler

from .fakes import FakeUpstream, SpyFactory, SpyScheduler

READY = ProcessState.READY


def build(scheduler: str = "serial", *, auto_start: bool = True, auto_stop: bool = True,
          models: dict[str, ModelConfig] | None = None,
          groups: dict[str, Any] | None = None,
          settings: dict[str, Any] | None = None,
          ) -> tuple[Router, dict[str, FakeUpstream], SpyScheduler, Clock]:
    """A Router over fake upstreams a, b, c with a spy around the chosen built-in scheduler."""
    models = models or {m: ModelConfig(id=m, health_check_timeout=7, unload_timeout=3)
                        for m in "abc"}
    ups = {m: FakeUpstream(cfg, auto_start=auto_start, auto_stop=auto_stop)
           for m, cfg in models.items()}
    clock = Clock()
    factory = SpyFactory(builtin.serial if scheduler == "serial" else builtin.fifo)
    swapper = builtin.group.build(settings={"groups": groups or {}}, models=models)
    router = Router(name="group", upstreams=ups, scheduler_factory=factory, swapper=swapper,
                    settings=settings or {}, models=models, reactor=clock)
    assert factory.spy is not None
    return router, ups, factory.spy, clock


def result_of(d: Deferred[Any]) -> Any:
    """The current result of ``d`` (a Failure's value for errors); AssertionError if pending."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    value = out[0]
    d.addErrback(lambda _: None)
    return value.value if isinstance(value, Failure) else value


def pending(d: Deferred[Any]) -> bool:
    """Whether ``d`` has not fired yet."""
    return not d.called


def test_router_grants_ready_model_and_counts_in_flight() -> None:
    """A request for a model that starts at once gets a Grant; done() ends it."""
    router, ups, spy, _ = build()
    grant = result_of(router.request("a"))
    assert isinstance(grant, Grant)
    assert grant.model_id == "a" and grant.upstream is ups["a"]
    assert ups["a"].in_flight == 1
    assert router.snapshot()["in_flight"] == {"a": 1}
    grant.done()
    grant.done()
    assert ups["a"].in_flight == 0
    assert spy.names() == ["request", "swap_done", "serve_done"]


def test_router_unknown_model_is_not_found() -> None:
    """An unknown model fails with ModelNotFound."""
    router, _, _, _ = build()
    err = result_of(router.request("ghost"))
    assert isinstance(err, ModelNotFound)
    assert err.status == 404


def test_router_swap_evicts_with_health_check_timeout() -> None:
    """Eviction stops the running model with its healthCheckTimeout before starting the target."""
    router, ups, _, _ = build()
    result_of(router.request("a")).done()
    grant = result_of(router.request("b"))
    assert grant.model_id == "b"
    assert ups["a"].stop_timeouts == [7]
    assert ups["a"].state is ProcessState.STOPPED
    assert ups["b"].state is READY


def test_router_start_failure_passes_llamaswap_error() -> None:
    """An UpstreamStartFailed from upstream.start reaches the caller as-is."""
    router, ups, _, _ = build(auto_start=False)
    d = router.request("a")
    assert pending(d)
    failure = UpstreamStartFailed("upstream command exited prematurely")
    ups["a"].finish_start(failure)
    assert result_of(d) is failure


def test_router_start_failure_other_errors_are_wrapped() -> None:
    """A non-LlamaSwapError from start becomes an UpstreamError that names it."""
    router, ups, _, _ = build(auto_start=False)
    d = router.request("a")
    ups["a"].finish_start(OSError("no such file"))
    err = result_of(d)
    assert isinstance(err, UpstreamError)
    assert "no such file" in err.message


def test_router_no_reentrancy_when_effects_complete_at_once() -> None:
    """Grants whose callers finish and re-request synchronously never nest scheduler calls."""
    router, ups, spy, _ = build("fifo")
    served: list[str] = []

    def serve(grant: Grant, again: int) -> None:
        served.append(grant.model_id)
        grant.done()
        if again:
            router.request("a").addCallback(serve, again - 1)

    for _ in range(3):
        router.request("a").addCallback(serve, 2)
    assert served == ["a"] * 9
    assert spy.max_depth == 1
    assert ups["a"].in_flight == 0
    assert ups["a"].starts == 1


def test_router_swap_done_is_posted_not_nested() -> None:
    """A swap whose start completes at once reports SwapDone as a separate event."""
    router, _, spy, _ = build()
    router.request("a")
    assert spy.names() == ["request", "swap_done"]
    assert spy.max_depth == 1


def test_router_unload_pauses_delivery() -> None:
    """While on_unload's Deferred is pending no other event reaches the scheduler."""
    router, ups, spy, _ = build(auto_stop=False)
    grant = result_of(router.request("a"))
    unloaded = router.unload(["a"])
    assert ups["a"].stop_timeouts == [3]
    later = router.request("b")
    grant.done()
    assert spy.names() == ["request", "swap_done", "unload"]
    assert pending(unloaded) and pending(later)
    ups["a"].finish_stop()
    assert result_of(unloaded) is None
    assert spy.names()[3:] == ["request", "serve_done", "swap_done"]
    assert isinstance(result_of(later), Grant)


def test_router_unload_fails_waiters() -> None:
    """Unloading a loading model fails its waiters with ModelUnloaded."""
    router, ups, _, _ = build(auto_start=False)
    d = router.request("a")
    router.unload(["a"], timeout=2)
    err = result_of(d)
    assert isinstance(err, ModelUnloaded)
    assert ups["a"].state is ProcessState.STOPPED


def test_router_unload_groups_by_timeout_ascending() -> None:
    """Without a timeout, targets are unloaded in groups by unloadTimeout, shortest first."""
    models = {m: ModelConfig(id=m, unload_timeout=t) for m, t in (("a", 5), ("b", 1), ("c", 5))}
    router, ups, spy, _ = build("fifo", models=models, auto_stop=False,
                                groups={"all": {"swap": False, "members": ["a", "b", "c"]}})
    for m in "abc":
        result_of(router.request(m)).done()
    d = router.unload()
    unloads = [arg for name, arg in spy.events if name == "unload"]
    assert unloads == [(("b",), 1.0)]
    ups["b"].finish_stop()
    unloads = [arg for name, arg in spy.events if name == "unload"]
    assert unloads == [(("b",), 1.0), (("a", "c"), 5.0)]
    assert pending(d)
    ups["a"].finish_stop()
    ups["c"].finish_stop()
    assert result_of(d) is None


def test_router_unload_explicit_timeout_is_one_batch() -> None:
    """A positive timeout unloads every target at once with that timeout."""
    router, ups, spy, _ = build()
    result_of(router.request("a")).done()
    result_of(router.unload(timeout=9))
    assert [arg for name, arg in spy.events if name == "unload"] == [(("a", "b", "c"), 9.0)]
    assert ups["a"].stop_timeouts == [9]


def test_router_cancel_before_grant() -> None:
    """Cancelling a queued request errbacks it, posts on_cancel, and it never loads."""
    router, ups, spy, _ = build()
    grant = result_of(router.request("a"))
    d = router.request("b")
    d.cancel()
    assert isinstance(result_of(d), CancelledError)
    assert spy.names()[-1] == "cancel"
    grant.done()
    assert ups["b"].starts == 0


def test_router_cancel_while_loading_is_never_granted() -> None:
    """A request cancelled while its model loads is not granted and not counted."""
    router, ups, _, _ = build("fifo", auto_start=False)
    d = router.request("a")
    d.cancel()
    ups["a"].finish_start()
    assert ups["a"].in_flight == 0
    assert router.snapshot()["in_flight"] == {}
    assert router.scheduler.snapshot()["in_flight"] == {}


def test_router_cancel_racing_grant_releases_it() -> None:
    """A grant decided in the same event as a cancel is released with done()."""
    router, ups, spy, _ = build("fifo", auto_start=False)
    first, second = router.request("a"), router.request("a")

    def cancel_second(g: Grant) -> Grant:
        second.cancel()
        return g

    first.addCallback(cancel_second)
    ups["a"].finish_start()
    assert isinstance(result_of(first), Grant)
    assert isinstance(result_of(second), CancelledError)
    assert ups["a"].in_flight == 1
    assert router.scheduler.snapshot()["in_flight"] == {"a": 1}
    assert spy.names()[-2:] == ["serve_done", "cancel"]


def test_router_cancel_after_grant_is_noop() -> None:
    """Cancelling a fired request leaves the grant to its owner."""
    router, ups, spy, _ = build()
    d = router.request("a")
    grant = result_of(d)
    d.cancel()
    assert ups["a"].in_flight == 1
    grant.done()
    assert ups["a"].in_flight == 0
    assert "cancel" not in spy.names()


def test_router_shutdown_fails_everyone() -> None:
    """Shutdown fails waiting and queued requests, shuts upstreams down, refuses new ones."""
    router, ups, spy, _ = build(auto_start=False, auto_stop=False)
    loading, queued = router.request("a"), router.request("b")
    done = router.shutdown(timeout=4)
    assert isinstance(result_of(loading), ShuttingDown)
    assert isinstance(result_of(queued), ShuttingDown)
    assert spy.names()[-1] == "shutdown"
    assert ups["a"].shutdown_timeouts == [4]
    assert router.shutdown() is done
    assert result_of(done) is None
    assert all(u.state is ProcessState.SHUTDOWN for u in ups.values())
    late = result_of(router.request("a"))
    assert isinstance(late, ShuttingDown)
    assert late.message == "group is shutting down"


def test_router_shutdown_waits_for_upstreams() -> None:
    """The shutdown Deferred fires only when every upstream has stopped."""
    router, ups, _, _ = build(auto_stop=False)
    grant = result_of(router.request("a"))
    done = router.shutdown()
    assert pending(done)
    ups["a"].finish_stop()
    assert result_of(done) is None
    grant.done()
    assert ups["a"].in_flight == 0


def test_router_shutdown_releases_pending_unload() -> None:
    """An unload waiting behind a stop still completes when the router shuts down."""
    router, ups, _, _ = build(auto_stop=False)
    result_of(router.request("a")).done()
    unloaded = router.unload(["a"])
    queued = router.request("b")
    done = router.shutdown()
    ups["a"].finish_stop()
    assert result_of(unloaded) is None
    assert isinstance(result_of(queued), ShuttingDown)
    assert result_of(done) is None


def test_router_ttl_goes_through_scheduler() -> None:
    """An upstream's on_idle unloads it through the scheduler with its unloadTimeout."""
    router, ups, spy, _ = build()
    result_of(router.request("a")).done()
    assert ups["a"].on_idle is not None
    ups["a"].on_idle("a")
    assert ("unload", (("a",), 3.0)) in spy.events
    assert ups["a"].state is ProcessState.STOPPED


def test_router_positions_pushed_to_waiters() -> None:
    """Queued requests are told their positions through on_position."""
    router, _, _, _ = build()
    grant = result_of(router.request("a"))
    pb: list[int] = []
    pc: list[int] = []
    router.request("b", on_position=pb.append)
    router.request("c", on_position=pc.append)
    assert pb == [1] and pc == [2]
    grant.done()
    assert pc == [2, 1]


def test_router_listeners_see_swaps_and_queue() -> None:
    """Listeners get swap_started, swap_done with its duration, and queue changes."""
    router, ups, _, clock = build(auto_start=False)
    seen: list[tuple[str, dict[str, Any]]] = []
    remove = router.add_listener(lambda e, f: seen.append((e, f)))
    router.request("a")
    router.request("b")
    clock.advance(2.5)
    assert router.snapshot()["swaps"] == [{"model": "a", "evict": [], "elapsed": 2.5}]
    ups["a"].finish_start()
    clock.advance(0)
    names = [e for e, _ in seen]
    assert names[0] == "swap_started" and seen[0][1] == {"model": "a", "evict": []}
    assert ("swap_done", {"model": "a", "duration": 2.5, "error": None}) in seen
    assert ("queue", {"queue": [{"model": "b", "position": 1}]}) in seen
    assert ("request_granted", {"model": "a", "wait": 2.5}) in seen
    remove()
    count = len(seen)
    router.request("c")
    clock.advance(0)
    assert len(seen) == count


def test_listeners_hear_a_grant_after_its_caller_used_it() -> None:
    """A request granted at once is in its caller's hands before any listener runs."""
    router, ups, _, clock = build(auto_start=False)
    first = router.request("a")
    ups["a"].finish_start()
    first.addCallback(lambda grant: grant.done())
    clock.advance(0)
    order: list[str] = []
    router.add_listener(lambda event, fields: order.append(event))
    router.request("a").addCallback(lambda grant: order.append("caller"))
    assert order == ["caller"]
    clock.advance(0)
    assert order[:2] == ["caller", "request_granted"]


def test_router_snapshot_is_json_able() -> None:
    """The snapshot lists process states, queue, in-flight and swaps as JSON."""
    router, _, _, _ = build()
    result_of(router.request("a"))
    router.request("b")
    snap = json.loads(json.dumps(router.snapshot()))
    assert snap["processes"] == {"a": "ready", "b": "stopped", "c": "stopped"}
    assert snap["queue"] == [{"model": "b", "position": 1}]
    assert snap["in_flight"] == {"a": 1}
    assert snap["swaps"] == []
    assert snap["scheduler"]["scheduler"] == "serial"


def test_router_grant_carries_scheduler_metadata() -> None:
    """The Grant carries metadata the scheduler recorded (fifo_priority)."""
    router, _, _, _ = build("fifo", settings={"priority": {"a": 3}})
    assert result_of(router.request("a")).metadata == {"fifo_priority": "3"}


def test_router_scheduler_crash_fails_the_request() -> None:
    """A scheduler that raises on a request fails that request instead of leaving it hanging."""
    router, _, _, _ = build()
    router.scheduler.inner.on_request = lambda req: 1 / 0  # type: ignore[attr-defined]
    err = result_of(router.request("a"))
    assert isinstance(err, UpstreamError)
    assert "ZeroDivisionError" in err.message


def test_router_from_config_resolves_plugins() -> None:
    """from_config picks the scheduler and swapper named in routing."""
    models = {m: ModelConfig(id=m) for m in "ab"}
    ups = {m: FakeUpstream(cfg) for m, cfg in models.items()}
    config = Config(models=models)
    router = Router.from_config(config, ups, Clock())
    assert isinstance(router.scheduler, SerialScheduler)
    assert router.name == "group"
    config = Config(models=models, routing=RoutingConfig(
        router=RouterConfig(use="group"),
        scheduler=SchedulerConfig(use="fifo", settings={"fifo": {"priority": {"b": 2}}})))
    router = Router.from_config(config, ups, Clock())
    assert isinstance(router.scheduler, FIFOScheduler)
    assert router.scheduler.priority == {"b": 2}


def test_router_from_config_unknown_plugin() -> None:
    """An unknown scheduler name raises PluginNotFound."""
    from llamaswap.plugins import PluginNotFound

    config = Config(routing=RoutingConfig(scheduler=SchedulerConfig(use="nope")))
    with pytest.raises(PluginNotFound):
        Router.from_config(config, {}, Clock())


def test_router_shutdown_fails_waiters_at_once_even_during_unload() -> None:
    """Waiting callers get ShuttingDown immediately, even while an unload holds the queue."""
    router, ups, spy, _ = build("fifo", auto_stop=False,
                                groups={"p": {"swap": False, "members": ["a", "b"]}})
    result_of(router.request("a")).done()
    router.unload(["a"])
    queued = router.request("b")
    router.shutdown()
    assert isinstance(result_of(queued), ShuttingDown)
    assert "shutdown" not in spy.names()
    ups["a"].finish_stop()
    assert spy.names()[-1] == "shutdown"


def test_router_releases_a_grant_held_after_its_request_ended() -> None:
    """A grant still held a grace period after its request ended is released, loudly."""
    from twisted.logger import globalLogPublisher

    from llamaswap.router.base import GRANT_GRACE

    router, ups, spy, clock = build()
    grant = result_of(router.request("a"))
    request_over: Deferred[None] = Deferred()
    router.hold_for(grant, request_over)
    critical: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(critical.append)
    try:
        request_over.callback(None)
        clock.advance(GRANT_GRACE / 2)
        assert ups["a"].in_flight == 1 and not grant.finished
        clock.advance(GRANT_GRACE)
    finally:
        globalLogPublisher.removeObserver(critical.append)
    assert grant.finished and ups["a"].in_flight == 0
    assert router.snapshot()["in_flight"] == {}
    assert router.leaked_grants == 1
    assert spy.names()[-1] == "serve_done"
    assert any("invariant broken" in str(e.get("log_format")) for e in critical)


def test_router_leaves_a_grant_given_back_in_time_alone() -> None:
    """A grant released when its request ends (even by a lost connection) is no leak."""
    router, _ups, spy, clock = build()
    grant = result_of(router.request("a"))
    request_over: Deferred[None] = Deferred()
    router.hold_for(grant, request_over)
    request_over.errback(Failure(ConnectionError("client gone")))
    grant.done()
    clock.advance(10)
    assert router.leaked_grants == 0
    assert spy.names().count("serve_done") == 1
