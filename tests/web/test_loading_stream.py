"""The sendLoadingState stream: typed events on a clock, then the real answer in the same stream."""

from __future__ import annotations

import json
import random
from collections.abc import Generator
from typing import Any

import pytest_twisted
from proxy_fakes import SiteEnv, reactor
from twisted.internet.task import Clock
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from llamaswap.config.model import ModelConfig
from llamaswap.errors import UpstreamStartFailed
from llamaswap.web.loading import RULE, LoadingStream


def reasoning(raw: bytes) -> list[str]:
    """The reasoning_content of every loading event in ``raw``."""
    out = []
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: {\"choices\""):
            payload = json.loads(block[6:])
            out.append(payload["choices"][0]["delta"]["reasoning_content"])
    return out


def make_stream(clock: Clock) -> tuple[LoadingStream, DummyChannel, Request]:
    """A LoadingStream writing to a real Request over a dummy channel."""
    channel = DummyChannel()
    request = Request(channel, False)
    request.method = b"POST"
    request.clientproto = b"HTTP/1.0"
    stream = LoadingStream(
        request, "m1", clock, lambda: True, rng=random.Random(1), remarks=["Feeding llamas"]
    )
    return stream, channel, request


def test_sequence_on_a_clock() -> None:
    """Head lines, a remark, a queue position, dots, then Done and the closing rule."""
    clock = Clock()
    clock.advance(100)
    stream, channel, _ = make_stream(clock)
    stream.start()
    clock.pump([0.1] * 10)  # type out the first lines, first tick at 0.75 s (remark)
    stream.position(3)
    clock.pump([0.1] * 10)
    clock.pump([0.1] * 10)
    done = stream.finish()
    clock.pump([0.1] * 12)
    assert done.called
    raw = channel.transport.written.getvalue()
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.0 200")
    assert b"content-type: text/event-stream" in head
    assert b"x-accel-buffering" not in head
    events = reasoning(raw.split(b"\r\n\r\n", 1)[1])
    assert all(len(e) <= 5 for e in events)
    text = "".join(events)
    assert text.startswith(f"{RULE}\nllama-swap loading model: m1\n")
    assert "\nFeeding llamas " in text
    assert "\nQueue position: #3 " in text
    assert "." in text
    assert text.endswith(f"\nDone! (3.00s)\n{RULE}\n \n")


def test_finish_waits_at_most_a_second() -> None:
    """finish() fires within one second even with a long queue, then writes nothing more."""
    clock = Clock()
    stream, channel, _ = make_stream(clock)
    stream.start()
    stream._line("x" * 500)
    done = stream.finish()
    clock.advance(1.0)
    assert done.called
    before = channel.transport.written.getvalue()
    clock.advance(5)
    assert channel.transport.written.getvalue() == before


def test_gone_client_stops_writing() -> None:
    """When the client is gone the stream stops on its next step."""
    clock = Clock()
    channel = DummyChannel()
    request = Request(channel, False)
    request.clientproto = b"HTTP/1.0"
    is_open = [True]
    stream = LoadingStream(request, "m1", clock, lambda: is_open[0])
    stream.start()
    is_open[0] = False
    clock.advance(1)
    assert stream.stopped
    assert clock.getDelayedCalls() == []


@pytest_twisted.inlineCallbacks
def test_loading_then_real_answer() -> Generator[Any, Any, None]:
    """A streaming chat for a cold model gets loading events, then the upstream's SSE."""
    e = SiteEnv({"m1": ModelConfig(id="m1", send_loading_state=True)})
    try:
        e.router.upstreams["m1"].state = type(e.router.upstreams["m1"].state)("stopped")
        e.router.hold = True
        held = e.router.wait_held()
        d = e.request("POST", "/v1/chat/completions", json={"model": "m1", "stream": True})
        yield held
        _, router_d, on_position = e.router.held[0]
        assert on_position is not None
        on_position(2)
        reactor.callLater(0.9, lambda: router_d.callback(e.router.grant("m1")))
        resp = yield d
        assert resp.code == 200
        assert resp.headers.getRawHeaders("content-type") == ["text/event-stream"]
        body = yield resp.content()
        text = "".join(reasoning(body))
        assert "loading model: m1" in text
        assert "Queue position: #2" in text
        assert "Done! (" in text
        assert body.endswith(b"data: [DONE]\n\n")
        assert b"tok0" in body
        assert e.router.grants[0].done_calls == 1
    finally:
        yield e.close()


@pytest_twisted.inlineCallbacks
def test_loading_then_error_envelope() -> Generator[Any, Any, None]:
    """If the model fails to start the error envelope ends the 200 stream."""
    e = SiteEnv({"m1": ModelConfig(id="m1", send_loading_state=True)})
    try:
        e.router.upstreams["m1"].state = type(e.router.upstreams["m1"].state)("stopped")
        e.router.hold = True
        held = e.router.wait_held()
        d = e.request("POST", "/v1/chat/completions", json={"model": "m1", "stream": True})
        yield held
        _, router_d, _ = e.router.held[0]
        reactor.callLater(0.2, router_d.errback, UpstreamStartFailed("m1 exited with code 1"))
        resp = yield d
        body = yield resp.content()
        assert resp.code == 200
        tail = body.rsplit(b"\n\n", 1)[-1]
        assert json.loads(tail)["error"]["message"] == "m1 exited with code 1"
    finally:
        yield e.close()


@pytest_twisted.inlineCallbacks
def test_stopped_while_loading_finishes() -> Generator[Any, Any, None]:
    """A model that stops while "Done!" is typed ends the 200 stream with the not-ready envelope."""
    e = SiteEnv({"m1": ModelConfig(id="m1", send_loading_state=True)})
    try:
        e.router.upstreams["m1"].state = type(e.router.upstreams["m1"].state)("stopped")
        e.router.hold = True
        held = e.router.wait_held()
        d = e.request("POST", "/v1/chat/completions", json={"model": "m1", "stream": True})
        yield held
        _, router_d, _ = e.router.held[0]
        router_d.callback(e.router.grant("m1"))
        e.router.upstreams["m1"].set_state("stopping")
        resp = yield d
        body = yield resp.content()
        assert resp.code == 200
        assert "Done! (" in "".join(reasoning(body))
        tail = json.loads(body.rsplit(b"\n\n", 1)[-1])
        assert tail["error"]["message"] == "[m1] process is not ready"
        assert e.router.grants[0].done_calls == 1
        assert e.stats.requests == []
    finally:
        yield e.close()


@pytest_twisted.inlineCallbacks
def test_no_loading_for_ready_or_non_streaming() -> Generator[Any, Any, None]:
    """Ready models and non-streaming requests never get the loading stream."""
    e = SiteEnv({"m1": ModelConfig(id="m1", send_loading_state=True)})
    try:
        resp = yield e.request("POST", "/v1/chat/completions", json={"model": "m1", "stream": True})
        body = yield resp.content()
        assert reasoning(body) == []
        e.router.upstreams["m1"].state = type(e.router.upstreams["m1"].state)("stopped")
        resp = yield e.request("POST", "/v1/chat/completions", json={"model": "m1"})
        assert resp.headers.getRawHeaders("content-type") == ["application/json"]
        yield resp.content()
    finally:
        yield e.close()
