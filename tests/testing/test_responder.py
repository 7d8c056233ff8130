"""The test responder as a real process, driven over real HTTP."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.web.client import ResponseFailed

from llamaswap.config.model import ModelConfig
from llamaswap.process.state import ProcessState as S
from llamaswap.process.upstream import Upstream
from llamaswap.testing.ports import free_port_block

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free TCP port below the ephemeral range (no client socket can take it meanwhile)."""
    return free_port_block(1)


def responder(flags: str = "", **kw: Any) -> Upstream:
    """An Upstream running the responder with ``flags`` on a free port."""
    port = free_port()
    model = ModelConfig(
        id="resp", cmd=f"{PY} -m llamaswap.testing.responder --port {port} --model base {flags}",
        proxy=f"http://127.0.0.1:{port}", **kw,
    )
    return Upstream(model, reactor=reactor)


async def eventually_true(check: Any, timeout: float = 5.0) -> None:
    """Poll an async ``check`` until it returns True."""
    waited = 0.0
    while not await check():
        assert waited < timeout, "condition not met in time"
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


@pytest.fixture(autouse=True)
def _pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned ``python -m llamaswap...`` must import this checkout."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest_twisted.async_yield_fixture
async def up() -> AsyncIterator[Upstream]:
    """A ready responder, stopped afterwards."""
    u = responder()
    await u.start()
    yield u
    await u.stop(5)


async def post(u: Upstream, path: str, body: Any) -> tuple[int, Any]:
    """POST JSON; returns (status, decoded JSON)."""
    resp = await treq.post(u.proxy_url + path, json=body)
    return resp.code, json.loads(await resp.content())


async def stats(u: Upstream) -> dict[str, int]:
    """GET /stats."""
    resp = await treq.get(u.proxy_url + "/stats")
    data: dict[str, int] = json.loads(await resp.content())
    return data


def sse_events(raw: bytes) -> list[str]:
    """The data fields of an SSE body."""
    return [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]


@pytest_twisted.ensureDeferred
async def test_health_is_503_until_start_delay_passes() -> None:
    """/health answers 503 while 'loading' and other routes already work."""
    u = responder("--start-delay 30", check_endpoint="/v1/models")
    await u.start()
    try:
        resp = await treq.get(u.proxy_url + "/health")
        assert resp.code == 503
        assert json.loads(await resp.content()) == {"status": "loading"}
    finally:
        await u.stop(5)


@pytest_twisted.ensureDeferred
async def test_chat_json_echoes_model_with_usage_and_timings(up: Upstream) -> None:
    """A non-streaming chat completion echoes the model and carries usage and timings."""
    code, body = await post(up, "/v1/chat/completions", {
        "model": "asked", "messages": [{"role": "user", "content": "one two three"}],
        "x_chunks": 3})
    assert code == 200 and body["model"] == "asked"
    assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert set(body["timings"]) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms",
                                    "predicted_per_second"}


@pytest_twisted.ensureDeferred
async def test_chat_stream_chunks_usage_timings_done(up: Upstream) -> None:
    """A streamed chat has x_chunks deltas, then usage+timings in the last event, then [DONE]."""
    resp = await treq.post(up.proxy_url + "/v1/chat/completions",
                           json={"model": "s", "stream": True, "x_chunks": 4})
    assert resp.headers.getRawHeaders("content-type") == ["text/event-stream"]
    events = sse_events(await resp.content())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:4]] == [
        "tok0 ", "tok1 ", "tok2 ", "tok3 "]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["model"] == "s"
    assert last["usage"]["completion_tokens"] == 4 and last["timings"]["predicted_n"] == 4


@pytest_twisted.ensureDeferred
async def test_openai_and_anthropic_clients(up: Upstream) -> None:
    """The official openai and anthropic clients parse the responder's JSON and streams."""

    def use_clients() -> tuple[str, str, str, str]:
        oa = openai.OpenAI(base_url=up.proxy_url + "/v1", api_key="x", max_retries=0)
        chat = oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in oa.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
            if c.choices
        )
        an = anthropic.Anthropic(base_url=up.proxy_url, api_key="x", max_retries=0)
        msg = an.messages.create(model="claude", max_tokens=10,
                                 messages=[{"role": "user", "content": "hi"}])
        with an.messages.stream(model="claude", max_tokens=10,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join(stream.text_stream)
        first = msg.content[0]
        assert first.type == "text"
        return str(chat.choices[0].message.content), streamed, first.text, text

    chat, streamed, msg, streamed_msg = await threads.deferToThread(use_clients)
    assert chat == streamed == msg == streamed_msg == "tok0 tok1 tok2 tok3 tok4 "


@pytest_twisted.ensureDeferred
async def test_other_endpoints(up: Upstream) -> None:
    """Completions, embeddings, rerank, responses, speech and transcription answer in shape."""
    code, body = await post(up, "/v1/completions", {"model": "c", "prompt": "x", "x_chunks": 2})
    assert body["choices"][0]["text"] == "tok0 tok1 " and body["model"] == "c"
    code, body = await post(up, "/v1/embeddings", {"model": "e", "input": ["a", "b"]})
    assert len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 8
    for path in ("/v1/rerank", "/rerank", "/v1/reranking"):
        code, body = await post(up, path, {"model": "r", "query": "a b",
                                           "documents": ["z", "a b"]})
        assert code == 200 and body["results"][0]["index"] == 1 and body["model"] == "r"
    code, body = await post(up, "/v1/responses", {"model": "o", "input": "hi"})
    assert body["output"][0]["content"][0]["text"] == "tok0 tok1 tok2 tok3 tok4 "
    resp = await treq.post(up.proxy_url + "/v1/audio/speech", json={"model": "t", "input": "hi"})
    assert resp.headers.getRawHeaders("content-type") == ["audio/mpeg"]
    assert (await resp.content()).startswith(b"ID3")
    resp = await treq.post(up.proxy_url + "/v1/audio/transcriptions",
                           data={"model": "whisper"}, files={"file": ("a.wav", b"12345")})
    body = json.loads(await resp.content())
    assert body["text"] == "The length of the file is 5 bytes" and body["model"] == "whisper"
    assert body["h_content_type"].startswith("multipart/form-data")


@pytest_twisted.ensureDeferred
async def test_echo_returns_request(up: Upstream) -> None:
    """Unknown paths echo method, path, query, headers and body."""
    resp = await treq.put(up.proxy_url + "/some/where?a=1&b=2", data=b"payload",
                          headers={"X-Test": "yes"})
    body = json.loads(await resp.content())
    assert body["method"] == "PUT" and body["path"] == "/some/where"
    assert body["query"] == "a=1&b=2" and body["body"] == "payload"
    assert body["headers"]["X-Test"] == "yes"


@pytest_twisted.ensureDeferred
async def test_fail_status_and_delay(up: Upstream) -> None:
    """x_fail_status answers that status; x_delay_ms delays the answer."""
    code, body = await post(up, "/v1/chat/completions", {"model": "m", "x_fail_status": 429})
    assert code == 429 and "error" in body
    started = reactor.seconds()
    code, _ = await post(up, "/v1/chat/completions", {"model": "m", "x_delay_ms": 200})
    assert code == 200 and reactor.seconds() - started >= 0.2


class _FirstBytes(Protocol):
    """Sends a request, fires ``got`` with the first response bytes."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.got: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        """Send the request."""
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        """First bytes: fire."""
        if not self.got.called:
            self.got.callback(data)


@pytest_twisted.ensureDeferred
async def test_abandoned_stream_is_counted_and_reported(up: Upstream) -> None:
    """A client that leaves mid-stream is counted in /stats and reported on stderr."""
    body = json.dumps({"stream": True, "x_chunks": 100, "x_interval_ms": 20}).encode()
    port = int(up.proxy_url.rsplit(":", 1)[1])
    proto = _FirstBytes(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
    assert b"200 OK" in await proto.got
    assert proto.transport is not None
    proto.transport.abortConnection()  # type: ignore[attr-defined]

    async def abandoned() -> bool:
        return (await stats(up))["abandoned"] == 1

    await eventually_true(abandoned)
    assert b"abandoned stream /v1/chat/completions" in up.logs.history()


@pytest_twisted.ensureDeferred
async def test_crash_after_kills_server_mid_stream() -> None:
    """x_crash_after ends the process abruptly after N chunks; the upstream sees it exit."""
    u = responder()
    await u.start()
    try:
        resp = await treq.post(u.proxy_url + "/v1/chat/completions",
                               json={"stream": True, "x_chunks": 10, "x_crash_after": 2})
        received: list[bytes] = []
        with pytest.raises(ResponseFailed):  # the chunked body is cut off
            await treq.collect(resp, received.append)
        events = sse_events(b"".join(received))
        assert len(events) == 2 and "[DONE]" not in events
        await eventually_true(lambda: _const(u.state is S.STOPPED))
        assert u.last_error is not None and "SIGKILL" in u.last_error
    finally:
        await u.stop(1)


async def _const(value: bool) -> bool:
    """An awaitable constant (for eventually_true)."""
    return value


@pytest_twisted.ensureDeferred
async def test_sigterm_exits_promptly_and_exit_after() -> None:
    """SIGTERM stops the responder well before the kill timeout; --exit-after exits on its own."""
    u = responder()
    await u.start()
    started = reactor.seconds()
    await u.stop(10)
    assert reactor.seconds() - started < 2
    u2 = responder("--exit-after 1")
    await u2.start()
    await eventually_true(lambda: _const(u2.state is S.STOPPED))
    assert u2.last_error is not None and "exit code 3" in u2.last_error
