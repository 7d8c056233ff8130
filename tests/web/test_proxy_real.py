"""The request path with every real part: config, responder processes, Router, Site, sockets."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.web.client import ResponseFailed

from llamaswap.config import load_config_text
from llamaswap.service import LlamaSwapService
from llamaswap.testing.ports import free_port_block
from llamaswap.testing.service import service_url

CONFIG = """
healthCheckTimeout: 15
startPort: {start_port}
models:
  alpha:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model alpha
    aliases: [a]
    sendLoadingState: true
"""



@pytest_twisted.async_yield_fixture
async def service(tmp_path: Path) -> AsyncIterator[LlamaSwapService]:
    """The whole service with one responder model; stopped (and its process reaped) after."""
    config = load_config_text(CONFIG.format(start_port=free_port_block(), py=sys.executable))
    svc = LlamaSwapService(
        config_path=str(tmp_path / "unused.yaml"),
        config=config,
        listen="tcp:0:interface=127.0.0.1",
        watch_config=False,
        reactor=reactor,
    )
    svc.startService()
    yield svc
    assert svc.port_service is not None
    site = svc.port_service.factory
    await svc.stopService()
    await site.pools.close_all()




def wait_for_log(svc: LlamaSwapService, marker: bytes) -> Deferred[float]:
    """Fires with reactor time when ``marker`` appears in the upstream processes' output."""
    d: Deferred[float] = Deferred()

    def seen(data: bytes) -> None:
        if marker in data and not d.called:
            unsubscribe()
            d.callback(reactor.seconds())

    unsubscribe = svc.upstream_log.subscribe(seen)
    return d


@pytest_twisted.ensureDeferred
async def test_openai_client_through_real_service(service: LlamaSwapService) -> None:
    """Cold start, then streaming chat, embeddings and a transcription upload."""
    client = openai.OpenAI(base_url=service_url(service) + "/v1", api_key="x", max_retries=0,
                           timeout=30)

    def run() -> tuple[str, list[float], str]:
        chunks = client.chat.completions.create(
            model="a", messages=[{"role": "user", "content": "hi"}], stream=False
        )
        emb = client.embeddings.create(model="alpha", input="x")
        audio = io.BytesIO(b"RIFF" + b"\x00" * 1024)
        audio.name = "clip.wav"
        text = client.audio.transcriptions.create(model="alpha", file=audio)
        return chunks.choices[0].message.content or "", emb.data[0].embedding, text.text

    content, embedding, text = await deferToThread(run)
    assert content
    assert embedding
    assert text


@pytest_twisted.ensureDeferred
async def test_disconnect_reaches_the_responder(service: LlamaSwapService) -> None:
    """A client leaving mid-stream makes the real upstream see an abandoned stream."""
    url = service_url(service) + "/v1/chat/completions"
    warm = await treq.post(url, json={"model": "alpha"})
    await warm.content()
    resp = await treq.post(
        url, json={"model": "alpha", "stream": True, "x_chunks": 500, "x_interval_ms": 20},
        unbuffered=True,
    )
    assert resp.code == 200
    abandoned = wait_for_log(service, b"abandoned stream")
    got_some: Deferred[None] = Deferred()

    class Reader(Protocol):
        def dataReceived(self, data: bytes) -> None:
            if not got_some.called:
                got_some.callback(None)

        def connectionLost(self, reason: Any = None) -> None:
            pass

    reader = Reader()
    resp.deliverBody(reader)
    await got_some
    left = reactor.seconds()
    reader.transport.stopProducing()  # type: ignore[union-attr]
    seen = await abandoned
    assert seen - left < 0.5


@pytest_twisted.ensureDeferred
async def test_upstream_crash_is_not_a_clean_end(service: LlamaSwapService) -> None:
    """When the responder dies mid-stream the client's body fails instead of ending."""
    url = service_url(service) + "/v1/chat/completions"
    resp = await treq.post(
        url, json={"model": "alpha", "stream": True, "x_chunks": 50, "x_crash_after": 3}
    )
    assert resp.code == 200
    with pytest.raises(ResponseFailed):
        await resp.content()


@pytest_twisted.ensureDeferred
async def test_loading_stream_for_cold_model(service: LlamaSwapService) -> None:
    """A streaming chat to a stopped model shows loading events, then the real answer."""
    url = service_url(service) + "/v1/chat/completions"
    resp = await treq.post(url, json={"model": "alpha", "stream": True, "x_chunks": 2})
    assert resp.code == 200
    body = await resp.content()
    assert b"llama-swap loading model: alpha" not in body  # typed in 5-char pieces
    texts = []
    for block in body.split(b"\n\n"):
        if block.startswith(b'data: {"choices":[{"delta":{"reasoning_content"'):
            texts.append(json.loads(block[6:])["choices"][0]["delta"]["reasoning_content"])
    typed = "".join(texts)
    assert "llama-swap loading model: alpha" in typed
    assert "Done! (" in typed
    assert body.rstrip().endswith(b"data: [DONE]")


class StopBeforeForward:
    """Wraps the real Router: hands out each grant only after its process has been stopped."""

    def __init__(self, router: Any) -> None:
        self.router = router

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)

    def request(self, model_id: str, on_position: Any = None) -> Deferred[Any]:
        """The real grant, delivered once ``grant.upstream`` is stopped (the SPEC 3.5 race)."""
        inner = self.router.request(model_id, on_position)
        outer: Deferred[Any] = Deferred(lambda _: inner.cancel())

        def granted(grant: Any) -> None:
            grant.upstream.stop(5).addCallback(lambda _: outer.callback(grant))

        inner.addCallbacks(granted, outer.errback)
        return outer


@pytest_twisted.ensureDeferred
async def test_process_stopped_between_grant_and_forward(service: LlamaSwapService) -> None:
    """A grant whose responder stopped before the forward is a 503; the router is not stuck."""
    app = service.get_app()
    router = app.router
    app.router = StopBeforeForward(router)  # type: ignore[assignment]
    url = service_url(service) + "/v1/chat/completions"
    resp = await treq.post(url, json={"model": "a"})
    body = await resp.json()
    assert resp.code == 503
    assert body["error"]["message"] == "[alpha] process is not ready"
    assert body["error"]["code"] == "service_unavailable"
    upstream = app.upstreams["alpha"]
    assert upstream.state == "stopped" and upstream.in_flight == 0
    assert router.snapshot()["in_flight"] == {}
    app.router = router
    resp = await treq.post(url, json={"model": "a"})
    assert resp.code == 200
    await resp.content()
