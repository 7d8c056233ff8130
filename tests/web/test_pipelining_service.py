"""HTTP/1.1 pipelining through the real service: every request answered once, in order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from hostile_support import (
    chat_works,
    port_of,
    running_service,
    start_watching_log,
    stop_watching_log,
    wait_until_nothing_held,
)
from rawhttp import chunked_post, exchange, get, post, send_and_close
from twisted.internet.threads import deferToThread

from llamaswap.service import LlamaSwapService


@pytest_twisted.async_yield_fixture
async def service(tmp_path: Path) -> AsyncIterator[LlamaSwapService]:
    """The service with alpha and beta; the log must show no failure by the end."""
    trouble = start_watching_log()
    try:
        async with running_service(tmp_path) as svc:
            yield svc
    finally:
        stop_watching_log(trouble)
    assert trouble.events == []


def chat(model: str, **extra: object) -> bytes:
    """A chat body for ``model``."""
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       **extra}).encode()


@pytest_twisted.ensureDeferred
async def test_two_pipelined_gets_are_both_answered(service: LlamaSwapService) -> None:
    """The issue's first reproduction: two GET /health in one write, both 200."""
    data = get(b"/health") + get(b"/health", close=True)
    answers, closed = await deferToThread(exchange, port_of(service), data, 2)
    assert [a.status for a in answers] == [200, 200]
    assert [a.body for a in answers] == [b"OK", b"OK"]
    assert closed


@pytest_twisted.ensureDeferred
async def test_pipelining_after_a_proxied_post_does_not_wedge(service: LlamaSwapService) -> None:
    """The issue's second reproduction: POST chat, GET, GET close; then chats still work."""
    data = (post(b"/v1/chat/completions", b'{"model":"alpha","messages":[]}')
            + get(b"/health") + get(b"/health", close=True))
    answers, closed = await deferToThread(
        exchange, port_of(service), data, 3, [b"POST", b"GET", b"GET"])
    assert [a.status for a in answers] == [200, 200, 200]
    assert json.loads(answers[0].body)["model"] == "alpha"
    assert closed
    await wait_until_nothing_held(service)
    await chat_works(service, "alpha")
    await chat_works(service, "beta")
    await wait_until_nothing_held(service)


@pytest_twisted.ensureDeferred
async def test_pipelined_posts_to_two_models_answer_in_order(service: LlamaSwapService) -> None:
    """POSTs for alpha, beta, alpha in one write (two swaps): each answered by its model."""
    data = b"".join(post(b"/v1/chat/completions", chat(m)) for m in ("alpha", "beta", "alpha"))
    answers, _ = await deferToThread(
        exchange, port_of(service), data + get(b"/health", close=True), 4, [b"POST"] * 3 + [b"GET"])
    assert [a.status for a in answers] == [200] * 4
    assert [json.loads(a.body)["model"] for a in answers[:3]] == ["alpha", "beta", "alpha"]
    await wait_until_nothing_held(service)


@pytest_twisted.ensureDeferred
async def test_pipelined_chunked_bodies_and_streamed_answers(service: LlamaSwapService) -> None:
    """A chunked-body request, a streamed (SSE) answer and a plain one, pipelined."""
    first = chat("alpha")
    data = (
        chunked_post(b"/v1/chat/completions", [first[:10], first[10:]])
        + post(b"/v1/chat/completions", chat("alpha", stream=True, x_chunks=20))
        + post(b"/v1/chat/completions", chat("alpha"), close=True)
    )
    answers, closed = await deferToThread(exchange, port_of(service), data, 3, [b"POST"] * 3)
    assert [a.status for a in answers] == [200, 200, 200]
    assert json.loads(answers[0].body)["object"] == "chat.completion"
    events = [line for line in answers[1].body.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]" and len(events) >= 21
    assert json.loads(answers[2].body)["object"] == "chat.completion"
    assert closed
    await wait_until_nothing_held(service)


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_pipeline_releases_every_request(service: LlamaSwapService) -> None:
    """A client that closes while a stream is answered and more requests wait: nothing held."""
    port = port_of(service)
    slow = chat("alpha", stream=True, x_chunks=200, x_interval_ms=20)
    data = (post(b"/v1/chat/completions", slow) + post(b"/v1/chat/completions", chat("beta"))
            + get(b"/health"))
    for read in (0, 1, 300):
        await deferToThread(send_and_close, port, data, read)
    # and a client gone while its pipelined requests queue behind another model's swap
    await deferToThread(send_and_close, port,
                        post(b"/v1/chat/completions", chat("beta")) + data, 0)
    await wait_until_nothing_held(service)
    await chat_works(service, "beta")
    await chat_works(service, "alpha")
    await wait_until_nothing_held(service)
