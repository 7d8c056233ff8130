"""Chores: bookkeeping done at quiet moments, never lost, never in the way of a request."""

from __future__ import annotations

import socket
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from proxy_fakes import SiteEnv
from test_dispatch_flow import MODELS
from twisted.internet.abstract import FileDescriptor
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.pollreactor import PollReactor
from twisted.internet.task import Clock

from llamaswap.web.chores import CHORE_DELAY, Chores, io_waiting_probe


class Sockets:
    """A stand-in for the reactor's poller: says whether a socket waits, answer by answer."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)

    def __call__(self) -> bool:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def two_chores(io_waiting: Sockets) -> tuple[Clock, Chores, list[str]]:
    """Chores on a Clock with ``a`` then ``b`` waiting; ``done`` lists what ran."""
    clock = Clock()
    chores = Chores(clock, io_waiting=io_waiting)
    done: list[str] = []
    chores.add(done.append, "a")
    chores.add(done.append, "b")
    return clock, chores, done


def test_an_idle_proxy_does_its_chores_on_the_next_turn_in_order() -> None:
    """Nothing runs when added; the reactor's next turn does all of them, first added first."""
    clock, chores, done = two_chores(Sockets(False))
    assert done == [] and len(chores) == 2
    clock.advance(0)
    assert done == ["a", "b"] and len(chores) == 0


def test_a_busy_proxy_leaves_its_chores_for_the_delay() -> None:
    """While a socket waits the next turn does nothing; the delay does everything."""
    clock, chores, done = two_chores(Sockets(True))
    clock.advance(0)
    clock.advance(CHORE_DELAY / 2)
    assert done == [] and len(chores) == 2
    clock.advance(CHORE_DELAY / 2)
    assert done == ["a", "b"] and clock.getDelayedCalls() == []


def test_run_while_idle_stops_as_soon_as_a_socket_waits() -> None:
    """One chore at a time, asking before each: an arrived request waits for one chore only."""
    chores = Chores(Clock(), io_waiting=Sockets(False, False, True))
    done: list[str] = []
    for name in "abcd":
        chores.add(done.append, name)
    chores.run_while_idle()
    assert done == ["a", "b"] and len(chores) == 2


def test_over_the_backlog_chores_run_even_when_busy() -> None:
    """A proxy that is never idle still does the chores beyond the backlog as it goes."""
    chores = Chores(Clock(), backlog=2, io_waiting=Sockets(True))
    done: list[str] = []
    for name in "abcde":
        chores.add(done.append, name)
    chores.run_while_idle()
    assert done == ["a", "b", "c"] and len(chores) == 2


@pytest.mark.parametrize("reactor_type", [EPollReactor, PollReactor])
def test_the_probe_sees_what_the_reactor_would_wake_for(reactor_type: type) -> None:
    """Against twisted's own epoll and poll reactors: quiet until a socket has bytes."""
    reactor = reactor_type()
    left, right = socket.socketpair()
    reader = FileDescriptor(reactor)
    reader.fileno = left.fileno  # type: ignore[method-assign]
    try:
        reactor.addReader(reader)
        probe = io_waiting_probe(reactor)
        assert probe() is False
        right.send(b"x")
        assert probe() is True
        assert probe() is True  # asking leaves the readiness for the reactor's own wait
    finally:
        reactor.removeReader(reader)
        left.close()
        right.close()


def test_a_closed_poller_counts_as_idle() -> None:
    """A chore running while its reactor shuts down is not stopped by the closed poller."""
    reactor = EPollReactor()
    probe = io_waiting_probe(reactor)
    reactor._poller.close()
    assert probe() is False


def test_a_reactor_without_a_poller_counts_as_idle() -> None:
    """With no poller to ask (a Clock, another reactor) every chore runs at its first chance."""
    assert io_waiting_probe(Clock())() is False


def test_run_drains_what_chores_add_and_the_old_timer_bounds_later_ones() -> None:
    """run() does chores added by chores; one added later still waits at most the delay."""
    clock = Clock()
    chores = Chores(clock, io_waiting=Sockets(True))
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
    assert done == ["last"]  # neither the next turn nor the delay is left to run
    assert clock.getDelayedCalls() == []


@pytest.fixture
def env() -> Generator[SiteEnv, None, None]:
    """The real Site, always busy, whose chores would wait a minute unless made room for."""
    e = SiteEnv(dict(MODELS))
    e.site.ctx.chores = Chores(e.site.ctx.reactor, delay=60, io_waiting=lambda: True)
    yield e
    e.site.ctx.chores.stop()
    pytest_twisted.blockon(e.close())


@pytest_twisted.inlineCallbacks
def test_next_model_request_does_the_previous_bookkeeping(
    env: SiteEnv,
) -> Generator[Any, Any, None]:
    """The first request's request_finished runs once the second one has been sent.

    Sockets count as busy until the second request is on its way, so neither a reactor
    turn nor the delay can do it first: the first's bookkeeping lands between the second's
    send and its answer.
    """
    observer = env.observer
    env.site.ctx.chores = Chores(
        env.site.ctx.reactor, delay=60, io_waiting=lambda: len(observer.started) < 2
    )
    first = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield first.content()
    assert observer.finished == []
    second = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield second.content()
    one, two = (rec.id for rec in observer.started)
    assert observer.events.index(("finished", one)) < observer.events.index(("response", two))
    assert observer.finished[0].status == 200


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
