"""Chores: bookkeeping done at quiet moments, never lost, never in the way of a request."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from proxy_fakes import SiteEnv
from test_dispatch_flow import MODELS
from twisted.internet.task import Clock

from llamaswap.web.chores import CHORE_DELAY, Chores


def test_chores_wait_for_the_delay_then_run_in_order() -> None:
    """Nothing runs when added; after the delay everything runs, first added first."""
    clock = Clock()
    chores = Chores(clock)
    done: list[str] = []
    chores.add(done.append, "a")
    chores.add(done.append, "b")
    clock.advance(CHORE_DELAY / 2)
    assert done == [] and len(chores) == 2
    clock.advance(CHORE_DELAY / 2)
    assert done == ["a", "b"] and len(chores) == 0


def test_run_drains_what_chores_add_and_the_old_timer_bounds_later_ones() -> None:
    """run() does chores added by chores; one added later still waits at most the delay."""
    clock = Clock()
    chores = Chores(clock)
    done: list[str] = []
    chores.add(lambda: chores.add(done.append, "nested"))
    clock.advance(CHORE_DELAY / 2)
    chores.run()
    assert done == ["nested"]
    chores.add(done.append, "later")
    clock.advance(CHORE_DELAY / 2)  # the first timer, still running, takes it
    assert done == ["nested", "later"]
    assert clock.getDelayedCalls() == []


def test_a_failing_chore_is_logged_and_the_rest_run() -> None:
    """A chore that raises does not stop the ones after it."""
    chores = Chores(Clock())
    done: list[str] = []

    def broken() -> None:
        raise RuntimeError("observer bug")

    chores.add(broken)
    chores.add(done.append, "after")
    chores.run()
    assert done == ["after"]


def test_stop_runs_what_waits_and_leaves_no_timer() -> None:
    """Stopping does the waiting chores at once and cancels the timer."""
    clock = Clock()
    chores = Chores(clock)
    done: list[str] = []
    chores.add(done.append, "last")
    chores.stop()
    assert done == ["last"]
    assert clock.getDelayedCalls() == []


@pytest.fixture
def env() -> Generator[SiteEnv, None, None]:
    """The real Site whose chores would wait a minute unless something makes room."""
    e = SiteEnv(dict(MODELS))
    e.site.ctx.chores = Chores(e.site.ctx.reactor, delay=60)
    yield e
    e.site.ctx.chores.stop()
    pytest_twisted.blockon(e.close())


@pytest_twisted.inlineCallbacks
def test_next_model_request_does_the_previous_bookkeeping(
    env: SiteEnv,
) -> Generator[Any, Any, None]:
    """The first request's request_finished runs once the second one has been sent."""
    first = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield first.content()
    assert env.observer.finished == []
    second = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield second.content()
    assert len(env.observer.finished) == 1
    assert env.observer.finished[0].status == 200


@pytest.mark.parametrize("path", ["/health", "/running", "/v1/models", "/no/such/page"])
@pytest_twisted.inlineCallbacks
def test_other_endpoints_answer_after_the_bookkeeping(
    env: SiteEnv, path: str
) -> Generator[Any, Any, None]:
    """Any other endpoint first finishes what answered requests left to do."""
    first = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield first.content()
    assert env.observer.finished == []
    other = yield env.request("GET", path)
    yield other.content()
    assert len(env.observer.finished) == 1
