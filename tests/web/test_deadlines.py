"""clientTimeouts: slow heads and bodies get a 408 and are closed; idle keep-alives are closed."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from webapi_support import make_app

from llamaswap.config import load_config_text
from llamaswap.config.model import ClientTimeouts
from llamaswap.web.app import App
from llamaswap.web.deadlines import (
    ABORT_AFTER,
    BODY,
    BUSY,
    HEAD,
    IDLE,
    REPORT_EVERY,
    TimedChannel,
    sweep_interval,
)
from llamaswap.web.site import LlamaSwapSite, build_site

_CLIENT = IPv4Address("TCP", "127.0.0.1", 1234)
GET = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


class Hang(Resource):
    """Never answers: the request stays busy."""

    isLeaf = True

    def render(self, request: Request) -> int:
        """Leave the request open."""
        return NOT_DONE_YET


@attrs.define
class Env:
    """A listening site on a clock, and the App whose config sets the limits."""

    clock: MemoryReactorClock
    site: LlamaSwapSite
    app: App

    def connect(self) -> tuple[TimedChannel, StringTransport]:
        """A new client connection."""
        transport = StringTransport()
        channel = self.site.buildProtocol(_CLIENT)
        assert isinstance(channel, TimedChannel)
        channel.makeConnection(transport)
        return channel, transport

    def set_limits(self, **limits: float) -> None:
        """Change clientTimeouts as a config reload would."""
        config = self.app.config
        self.app.config = attrs.evolve(
            config, client_timeouts=attrs.evolve(config.client_timeouts, **limits)
        )


@pytest.fixture
def env() -> Iterator[Env]:
    """The real site with default clientTimeouts, started on a MemoryReactorClock."""
    clock = MemoryReactorClock()
    app = make_app(load_config_text("models: {}\n"))
    site = build_site(lambda: app, clock)
    site.root_resource.mount("hang", Hang())
    site.startFactory()
    yield Env(clock, site, app)
    site.stopFactory()


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Log events from llamaswap's deadline sweep while the test runs."""
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "slow" in event or "idle" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def advance(clock: MemoryReactorClock, seconds: float, step: float = 0.5) -> None:
    """Let ``seconds`` pass in small steps, so every sweep runs."""
    for _ in range(round(seconds / step)):
        clock.advance(step)


def error_of(written: bytes) -> dict[str, Any]:
    """The OpenAI error object of a 408 answer."""
    assert written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    return dict(json.loads(written.partition(b"\r\n\r\n")[2])["error"])


def test_defaults_and_sweep_interval() -> None:
    """Defaults are generous; sweeps run a tenth of the shortest limit apart, within bounds."""
    assert sweep_interval(ClientTimeouts()) == 1.0
    assert sweep_interval(ClientTimeouts(request_header=2)) == pytest.approx(0.2)
    assert sweep_interval(ClientTimeouts(request_header=0, request_body=0, idle=0)) == 1.0
    assert sweep_interval(ClientTimeouts(request_header=0, request_body=0, idle=0.1)) == 0.05


def test_partial_head_is_cut_at_the_deadline(env: Env) -> None:
    """A head still incomplete after requestHeader seconds: a 408 JSON answer, then close."""
    channel, transport = env.connect()
    channel.dataReceived(b"GET /health HTTP/1.1\r\nHo")
    assert channel.phase == HEAD
    advance(env.clock, 29)
    assert transport.value() == b"" and not transport.disconnecting
    advance(env.clock, 2)
    error = error_of(transport.value())
    assert "clientTimeouts.requestHeader (30s)" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert transport.disconnecting


def test_trickled_head_is_cut_although_bytes_keep_coming(env: Env) -> None:
    """A byte a second does not extend the head's deadline (slowloris)."""
    channel, transport = env.connect()
    for byte in GET[:31]:
        channel.dataReceived(bytes([byte]))
        advance(env.clock, 1)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert transport.disconnecting


def test_head_clock_starts_at_its_first_byte(env: Env) -> None:
    """Time idle before a request starts does not count against its head."""
    channel, transport = env.connect()
    advance(env.clock, 100)
    channel.dataReceived(GET[:10])
    advance(env.clock, 25)
    channel.dataReceived(GET[10:])
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    assert channel.phase == IDLE and not transport.disconnecting


def test_idle_keep_alive_is_closed_quietly(env: Env) -> None:
    """After an answer, idle seconds without a new request close the connection, no 408."""
    channel, transport = env.connect()
    channel.dataReceived(GET)
    answered = transport.value()
    assert answered.startswith(b"HTTP/1.1 200 OK") and channel.phase == IDLE
    advance(env.clock, 119)
    assert not transport.disconnecting
    advance(env.clock, 2)
    assert transport.disconnecting
    assert transport.value() == answered


def test_body_at_the_minimum_rate_or_faster_is_not_cut(env: Env) -> None:
    """A long upload that keeps at least minBodyRate bytes a second is never cut."""
    channel, transport = env.connect()
    channel.dataReceived(
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    )
    assert channel.phase == BODY
    for _ in range(90):
        channel.dataReceived(b"x" * 600)
        advance(env.clock, 1)
    assert not transport.disconnecting and transport.value() == b""


def test_body_slower_than_the_minimum_rate_is_cut(env: Env) -> None:
    """Fewer than minBodyRate bytes a second over requestBody seconds: a 408 that says so."""
    channel, transport = env.connect()
    channel.dataReceived(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(35):
        channel.dataReceived(b"x" * 100)
        advance(env.clock, 1)
    error = error_of(transport.value())
    assert "clientTimeouts.minBodyRate (500 bytes/s over 30s)" in error["message"]
    assert transport.disconnecting


def test_stalled_body_is_cut_with_no_minimum_rate(env: Env) -> None:
    """With minBodyRate 0 any progress within requestBody seconds keeps the body going."""
    env.set_limits(min_body_rate=0, request_body=10)
    channel, transport = env.connect()
    channel.dataReceived(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    for _ in range(5):
        advance(env.clock, 9)
        channel.dataReceived(b"x")
    assert not transport.disconnecting
    advance(env.clock, 9)
    assert not transport.disconnecting  # a stall is caught by the end of the next stretch
    advance(env.clock, 12)
    assert transport.value().startswith(b"HTTP/1.1 408 ") and transport.disconnecting


def test_request_being_answered_has_no_client_deadline(env: Env) -> None:
    """A request waiting for its answer is never cut, however long it takes."""
    channel, transport = env.connect()
    channel.dataReceived(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    assert channel.phase == BUSY
    advance(env.clock, 1000, step=1)
    assert not transport.disconnecting and transport.value() == b""


def test_zero_disables_and_reloads_apply_to_open_connections(env: Env) -> None:
    """A limit of 0 is no limit; a changed limit applies at the next sweep."""
    env.set_limits(request_header=0)
    channel, transport = env.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    advance(env.clock, 300, step=1)
    assert not transport.disconnecting
    env.set_limits(request_header=5)
    advance(env.clock, 1)
    assert transport.value().startswith(b"HTTP/1.1 408 ") and transport.disconnecting


def test_a_cut_socket_that_lingers_is_aborted(env: Env) -> None:
    """A cut connection still open ABORT_AFTER seconds later is aborted."""
    channel, transport = env.connect()
    aborted: list[bool] = []
    transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
    channel.dataReceived(b"G")
    advance(env.clock, 31)
    assert transport.disconnecting and aborted == []
    advance(env.clock, ABORT_AFTER + 1)
    assert aborted


def test_cuts_are_reported_once_per_interval(env: Env, logged: list[dict[str, Any]]) -> None:
    """Cuts make at most one warning per REPORT_EVERY seconds, with counts; idle is debug."""
    for channel in [env.connect()[0] for _ in range(40)]:
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
    advance(env.clock, 31)
    warnings = [e for e in logged if "slow" in e]
    assert [(e["slow"], e["head"], e["body"]) for e in warnings] == [(40, 40, 0)]
    assert warnings[0]["log_level"].name == "warn"
    for _ in range(25):  # one stalled body a second: cut one a second
        channel, _transport = env.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n")
        advance(env.clock, 1)
    advance(env.clock, 31 + REPORT_EVERY)
    later = [e for e in logged if "slow" in e][1:]
    assert sum(e["body"] for e in later) == 25
    assert len(later) <= math.ceil(25 / REPORT_EVERY) + 1
    env.connect()
    advance(env.clock, 121 + REPORT_EVERY)
    idle = [e for e in logged if "idle" in e]
    assert [e["idle"] for e in idle] == [1] and idle[0]["log_level"].name == "debug"


def test_closed_connections_are_forgotten(env: Env) -> None:
    """A connection that closes is no longer watched."""
    channel, _ = env.connect()
    assert channel in env.site.deadlines.channels
    channel.connectionLost(None)
    assert channel not in env.site.deadlines.channels


def test_connections_gone_without_connection_lost_are_forgotten(env: Env) -> None:
    """A connection taken over (a WebSocket upgrade replaces connectionLost) is dropped once
    its socket is closed."""
    channel, transport = env.connect()
    channel.dataReceived(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    advance(env.clock, 5)
    assert channel in env.site.deadlines.channels
    transport.connected = False
    advance(env.clock, 1)
    assert channel not in env.site.deadlines.channels


def test_a_connection_already_closing_gets_no_second_answer(env: Env) -> None:
    """A body refused with 413 whose socket lingers is closed, with no 408 after the 413."""
    channel, transport = env.connect()
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n")
    refused = transport.value()
    assert refused.startswith(b"HTTP/1.1 413 ") and transport.disconnecting
    advance(env.clock, 70)
    assert transport.value() == refused
