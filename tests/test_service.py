"""The whole service in-process: config → upstream processes → router → HTTP, with real sockets."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest_twisted
import treq
from twisted.internet import reactor, threads

from llamaswap.config import load_config_text
from llamaswap.service import LlamaSwapService
from llamaswap.testing.ports import free_port_block
from llamaswap.testing.service import service_url

PY = sys.executable

CONFIG = """
healthCheckTimeout: 15
startPort: {start_port}
models:
  alpha:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model alpha
    aliases: [a]
  beta:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model beta
  gamma:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model gamma --fail-start
"""



@pytest_twisted.async_yield_fixture
async def service(tmp_path: Path) -> AsyncIterator[LlamaSwapService]:
    """A started LlamaSwapService on a free port with responder upstreams; stopped afterwards."""
    config = load_config_text(CONFIG.format(start_port=free_port_block(), py=PY))
    svc = LlamaSwapService(
        config_path=str(tmp_path / "unused.yaml"), config=config,
        listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
    )
    svc.startService()
    yield svc
    await svc.stopService()




def _children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


@pytest_twisted.ensureDeferred
async def test_service_openai_chat_and_swap(service: LlamaSwapService) -> None:
    """The openai client chats with two models in turn; the serial default keeps one running."""
    base = service_url(service)

    def chat(model: str) -> Any:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=30)
        messages = [{"role": "user", "content": "hi"}]
        return client.chat.completions.create(model=model, messages=messages)

    first = await threads.deferToThread(chat, "a")
    assert first.model == "a"
    second = await threads.deferToThread(chat, "beta")
    assert second.model == "beta"
    resp = await treq.get(base + "/running")
    running = json.loads(await resp.content())["running"]
    assert [r["model"] for r in running] == ["beta"]


@pytest_twisted.ensureDeferred
async def test_service_failed_start_is_a_clear_error(service: LlamaSwapService) -> None:
    """A model whose server exits at once answers 502 with the exit status in the message."""
    base = service_url(service)
    resp = await treq.post(
        base + "/v1/chat/completions",
        json={"model": "gamma", "messages": [{"role": "user", "content": "hi"}]},
    )
    body = json.loads(await resp.content())
    assert resp.code == 502
    assert "exit" in body["error"]["message"].lower()


@pytest_twisted.ensureDeferred
async def test_service_stop_leaves_no_upstream(tmp_path: Path) -> None:
    """Stopping the service stops every upstream it started."""
    config = load_config_text(CONFIG.format(start_port=free_port_block(), py=PY))
    svc = LlamaSwapService(
        config_path=str(tmp_path / "unused.yaml"), config=config,
        listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
    )
    svc.startService()
    base = service_url(svc)
    resp = await treq.post(
        base + "/v1/chat/completions",
        json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.code == 200
    await resp.content()
    pids = {p.pid for p in _children()}
    assert pids, "the upstream should be running"
    await svc.stopService()
    alive = [
        p for p in psutil.Process().children(recursive=True)
        if p.pid in pids and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
