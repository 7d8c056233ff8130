"""The memory router through the real service, with a fake GPU the responders report into."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor

from llamaswap.config import load_config_text
from llamaswap.memory import GIB
from llamaswap.service import LlamaSwapService
from llamaswap.testing.fakegpu import FakeGpuProbe
from llamaswap.testing.ports import free_port_block
from llamaswap.testing.service import service_url

PY = sys.executable
RESPONDER = PY + " -m llamaswap.testing.responder --port ${PORT} --fake-gpu "

CONFIG = """
healthCheckTimeout: 15
startPort: {start_port}
models:
  alpha:
    cmd: {responder} --model alpha --fake-gpu-memory 4GiB
  beta:
    cmd: {responder} --model beta --fake-gpu-memory 4GiB
  gamma:
    cmd: {responder} --model gamma --fake-gpu-memory 4GiB
    memory: {{gpu: 4GiB}}
  huge:
    cmd: {responder} --model huge --fake-gpu-memory 12GiB
    memory: {{gpu: 12GiB, devices: [0]}}
routing:
  router: {{use: memory, settings: {{margin: 5%}}}}
  scheduler: {{use: fifo}}
"""


@pytest_twisted.async_yield_fixture
async def service(tmp_path: Path) -> AsyncIterator[LlamaSwapService]:
    """The service over one fake 10 GiB GPU whose usage the responders report."""
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    text = CONFIG.format(start_port=free_port_block(), responder=RESPONDER + str(gpu))
    svc = LlamaSwapService(
        config_path=str(tmp_path / "unused.yaml"), config=load_config_text(text),
        listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
        memory_probe=lambda: FakeGpuProbe(str(gpu), {0: 10 * GIB}),
    )
    svc.startService()
    yield svc
    await svc.stopService()




async def chat(svc: LlamaSwapService, model: str) -> tuple[int, dict[str, Any]]:
    """One chat completion; then a fresh GPU sample, so the next decision sees its memory."""
    resp = await treq.post(service_url(svc) + "/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}]})
    body = json.loads(await resp.content())
    await svc.get_app().extras["memory"].refresh()
    return resp.code, body


async def running(svc: LlamaSwapService) -> dict[str, Any]:
    """The /running body."""
    resp = await treq.get(service_url(svc) + "/running")
    return dict(json.loads(await resp.content()))


@pytest_twisted.ensureDeferred
async def test_memory_service_co_resident_then_lru_eviction(service: LlamaSwapService) -> None:
    """Models that fit stay together; one that does not evicts the least recently used."""
    assert (await chat(service, "alpha"))[0] == 200
    # beta's need is unknown until it has run once: it takes the whole GPU.
    assert (await chat(service, "beta"))[0] == 200
    assert [r["model"] for r in (await running(service))["running"]] == ["beta"]
    # alpha was measured at 4 GiB, beta too: 10 GiB - 5% holds both.
    assert (await chat(service, "alpha"))[0] == 200
    body = await running(service)
    assert [r["model"] for r in body["running"]] == ["alpha", "beta"]
    alpha = body["running"][0]["memory"]
    assert alpha["used"] == {"0": 4 * GIB} and alpha["measured"] == {"0": 4 * GIB}
    assert (alpha["expected"], alpha["expected_source"]) == (4 * GIB, "measured")
    assert body["gpus"] == [{"id": 0, "total": 10 * GIB, "free": 2 * GIB}]
    # gamma needs 4 GiB (its memory key), 1.5 GiB is free: beta, used longest ago, goes.
    assert (await chat(service, "gamma"))[0] == 200
    assert [r["model"] for r in (await running(service))["running"]] == ["alpha", "gamma"]
    history = service.proxy_log.history().decode()
    assert ("gamma needs 4.0 GiB on GPU0 (config), 1.5 GiB free on GPU0; evicting beta "
            "(last used") in history


@pytest_twisted.ensureDeferred
async def test_memory_service_never_fits_is_a_clear_error(service: LlamaSwapService) -> None:
    """A model larger than the GPU gets 507 naming the figures and never starts."""
    assert (await chat(service, "alpha"))[0] == 200
    code, body = await chat(service, "huge")
    assert code == 507
    assert body["error"]["code"] == "insufficient_memory"
    assert body["error"]["message"] == (
        "huge needs 12.0 GiB on GPU0 (config), which has 10.0 GiB in all and 9.5 GiB after "
        "the 5% margin: it can never be loaded there")
    assert [r["model"] for r in (await running(service))["running"]] == ["alpha"]


@pytest_twisted.ensureDeferred
async def test_memory_service_metrics_gauges(service: LlamaSwapService) -> None:
    """/metrics has the per-model GPU memory gauges and the GPU's free memory."""
    assert (await chat(service, "alpha"))[0] == 200
    resp = await treq.get(service_url(service) + "/metrics")
    text = (await resp.content()).decode()
    assert 'llamaswap_model_gpu_memory_bytes{gpu="0",model="alpha"} 4.294967296e+09' in text
    assert ('llamaswap_model_gpu_memory_expected_bytes{model="gamma",source="config"} '
            '4.294967296e+09') in text
    assert 'llamaswap_gpu_memory_free_bytes{gpu="0"} 6.442450944e+09' in text


@pytest_twisted.ensureDeferred
async def test_memory_service_events_carry_the_figures(service: LlamaSwapService) -> None:
    """/api/events sends the GPUs' free memory and each model's memory in modelStatus."""
    from observe.http import read_body
    from twisted.web.client import Agent

    response = await Agent(reactor).request(b"GET", (service_url(service) + "/api/events").encode())
    events = read_body(response)
    await events.wait_for(b'"type": "inflight"')
    assert (await chat(service, "alpha"))[0] == 200
    await events.wait_for(b'\\"measured\\": {\\"0\\": 4294967296}')
    events.abort()
    last: dict[str, Any] = {}
    for block in events.data.split(b"\n\n"):
        if b"data:" not in block:
            continue
        message = json.loads(block.split(b"data:", 1)[1])
        last[message["type"]] = json.loads(message["data"])
    assert last["memory"] == {"gpus": [{"id": 0, "total": 10 * GIB, "free": 6 * GIB}]}
    alpha = next(m for m in last["modelStatus"] if m["id"] == "alpha")
    assert alpha["memory"]["used"] == {"0": 4 * GIB}
    assert (alpha["memory"]["expected"], alpha["memory"]["expected_source"]) == (
        4 * GIB, "measured")


@pytest_twisted.ensureDeferred
async def test_memory_service_remembers_measurements_across_restarts(tmp_path: Path) -> None:
    """A model measured once is known by its figure after a restart with the same store."""
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    store = tmp_path / "activity.db"
    text = CONFIG.format(start_port=free_port_block(), responder=RESPONDER + str(gpu))
    text += f"store: {{path: {store}}}\n"

    def start() -> LlamaSwapService:
        svc = LlamaSwapService(
            config_path=str(tmp_path / "unused.yaml"), config=load_config_text(text),
            listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
            memory_probe=lambda: FakeGpuProbe(str(gpu), {0: 10 * GIB}),
        )
        svc.startService()
        return svc

    first = start()
    try:
        assert (await chat(first, "alpha"))[0] == 200
    finally:
        await first.stopService()
    second = start()
    try:
        await second.get_app().extras["observability"].memory_loaded
        watch = second.get_app().extras["memory"]
        assert watch.measured == {"alpha": {0: 4 * GIB}}
        # alpha's need is known before it runs again: it joins gamma instead of evicting it.
        assert (await chat(second, "gamma"))[0] == 200
        assert (await chat(second, "alpha"))[0] == 200
        assert [r["model"] for r in (await running(second))["running"]] == ["alpha", "gamma"]
    finally:
        await second.stopService()
