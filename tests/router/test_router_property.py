"""Random interleavings through the real Router over fake upstreams: every caller hears once."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from llamaswap.errors import LlamaSwapError, UpstreamStartFailed
from llamaswap.process.state import ProcessState
from llamaswap.router.base import Grant

from .test_router import build

MODELS = "abc"

model = st.sampled_from(MODELS)
idx = st.integers(0, 7)
OPS = st.lists(st.one_of(
    st.tuples(st.just("request"), model),
    st.tuples(st.just("request"), st.just("ghost")),
    st.tuples(st.just("finish_start"), model, st.booleans()),
    st.tuples(st.just("finish_stop"), model),
    st.tuples(st.just("done"), idx),
    st.tuples(st.just("cancel"), idx),
    st.tuples(st.just("unload"), st.lists(model, min_size=1, max_size=3)),
    st.tuples(st.just("idle"), model),
    st.tuples(st.just("shutdown")),
), max_size=40)


def _run(scheduler: str, ops: list[tuple[Any, ...]]) -> None:
    router, ups, spy, _ = build(scheduler, auto_start=False, auto_stop=False,
                                groups={"p": {"swap": False, "exclusive": False,
                                              "members": ["a", "b"]}})
    outcomes: list[list[Any]] = []
    waiting: list[Deferred[Grant]] = []
    grants: list[Grant] = []
    odd: list[Failure] = []

    def track(d: Deferred[Grant]) -> None:
        seen: list[Any] = []
        outcomes.append(seen)

        def record(result: Any) -> None:
            seen.append(result)
            if isinstance(result, Grant):
                grants.append(result)
            elif isinstance(result, Failure) and not (
                    isinstance(result.value, LlamaSwapError) or result.check(CancelledError)):
                odd.append(result)
        d.addBoth(record)
        waiting.append(d)

    for op in ops:
        kind = op[0]
        if kind == "request":
            track(router.request(op[1]))
        elif kind == "finish_start" and ups[op[1]].state is ProcessState.STARTING:
            ups[op[1]].finish_start(None if op[2] else UpstreamStartFailed("boom"))
        elif kind == "finish_stop" and ups[op[1]].state is ProcessState.STOPPING:
            ups[op[1]].finish_stop()
        elif kind == "done" and grants:
            grants[op[1] % len(grants)].done()
        elif kind == "cancel":
            live = [d for d in waiting if not d.called]
            if live:
                live[op[1] % len(live)].cancel()
        elif kind == "unload":
            router.unload(op[1])
        elif kind == "idle" and ups[op[1]].on_idle is not None:
            ups[op[1]].on_idle(op[1])  # type: ignore[misc]
        elif kind == "shutdown":
            router.shutdown()
        assert spy.max_depth <= 1

    for _ in range(200):
        progressed = False
        for up in ups.values():
            if up.state is ProcessState.STARTING:
                up.finish_start()
                progressed = True
            elif up.state is ProcessState.STOPPING:
                up.finish_stop()
                progressed = True
        for g in grants:
            if not g.finished:
                g.done()
                progressed = True
        if not progressed:
            break
    assert all(len(seen) == 1 for seen in outcomes), outcomes
    assert odd == []
    assert all(up.in_flight == 0 for up in ups.values())
    assert router.snapshot()["in_flight"] == {}
    if not router._stopped:
        assert router.scheduler.snapshot()["in_flight"] == {}
        assert router.scheduler.snapshot()["queue"] == []
    assert spy.max_depth <= 1


@settings(max_examples=250, deadline=None)
@given(ops=OPS)
def test_router_property_every_caller_resolved_once(ops: list[tuple[Any, ...]]) -> None:
    """Under random events every request Deferred fires exactly once and nothing leaks."""
    _run("serial", ops)
    _run("fifo", ops)
