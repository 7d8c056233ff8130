"""The real service with responder upstreams: traffic moves /metrics, activity and events."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred

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
  beta:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model beta
"""



def start_service(tmp_path: Path, template: str) -> LlamaSwapService:
    """A started service on a free port; ``template`` gets ``start_port`` and ``py``."""
    config = load_config_text(template.format(start_port=free_port_block(), py=sys.executable))
    svc = LlamaSwapService(
        config_path=str(tmp_path / "unused.yaml"), config=config,
        listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
    )  # fmt: skip
    svc.startService()
    return svc


@pytest_twisted.async_yield_fixture
async def service(tmp_path: Path) -> AsyncIterator[LlamaSwapService]:
    """A started service with two responder models; stopped afterwards."""
    svc = start_service(tmp_path, CONFIG)
    yield svc
    await svc.stopService()




def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text to {(name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sse_usage(body: bytes) -> dict[str, Any]:
    """The last usage object in an SSE body."""
    found: dict[str, Any] = {}
    for line in body.splitlines():
        if line.startswith(b"data: {"):
            event = json.loads(line[6:])
            if event.get("usage"):
                found = event
    return found


def reported(obj: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens as SPEC 7.1 reads them: timings win over usage."""
    timings = obj.get("timings")
    if timings:
        return timings["prompt_n"], timings["predicted_n"]
    return obj["usage"]["prompt_tokens"], obj["usage"]["completion_tokens"]


@pytest_twisted.ensureDeferred
async def test_traffic_moves_metrics_activity_and_swaps(service: LlamaSwapService) -> None:
    """Two chats to alpha (JSON, SSE) and one to beta: tokens match usage, swaps are counted."""
    base = service_url(service)
    obs = service.get_app().extras["observability"]
    rows: list[int] = []
    three_rows: Deferred[None] = Deferred()

    def row_added(row_id: int) -> None:
        rows.append(row_id)
        if len(rows) == 3:
            three_rows.callback(None)

    obs.recorder.listeners.append(row_added)
    messages = [{"role": "user", "content": "one two three four"}]
    r = await treq.post(base + "/v1/chat/completions",
                        json={"model": "alpha", "messages": messages})  # fmt: skip
    first = json.loads(await treq.content(r))
    r = await treq.post(
        base + "/v1/chat/completions",
        json={"model": "alpha", "messages": messages, "stream": True,
              "stream_options": {"include_usage": True}},
    )  # fmt: skip
    assert r.headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
    streamed = sse_usage(await treq.content(r))
    r = await treq.post(base + "/v1/chat/completions",
                        json={"model": "beta", "messages": messages})  # fmt: skip
    beta = await treq.content(r)
    assert r.code == 200, (beta, service.upstream_log.history()[-3000:])
    await three_rows

    (p1, c1), (p2, c2) = reported(first), reported(streamed)
    prompt, completion = p1 + p2, c1 + c2
    r = await treq.get(base + "/metrics")
    m = samples((await treq.content(r)).decode())
    assert m[("llamaswap_prompt_tokens_total", (("model", "alpha"),))] == prompt
    assert m[("llamaswap_completion_tokens_total", (("model", "alpha"),))] == completion
    ok = (("endpoint", "/v1/chat/completions"), ("model", "alpha"), ("status", "200"))
    assert m[("llamaswap_requests_total", ok)] == 2
    assert m[("llamaswap_swaps_total", (("model", "alpha"), ("result", "ok")))] == 1
    swaps = {k: v for k, v in m.items() if k[0].startswith("llamaswap_swap")}
    assert m.get(("llamaswap_swaps_total", (("model", "beta"), ("result", "ok")))) == 1, swaps
    assert m[("llamaswap_process_state", (("model", "beta"), ("state", "ready")))] == 1
    assert m[("llamaswap_process_state", (("model", "alpha"), ("state", "stopped")))] == 1
    assert ("llamaswap_swap_duration_seconds_count", (("model", "alpha"),)) in m
    assert any(name == "llamaswap_memory_total_bytes" for name, _ in m)

    r = await treq.get(base + "/api/metrics/activity?model=alpha&order=asc")
    page = json.loads(await treq.content(r))
    assert page["total"] == 2
    assert page["data"][0]["tokens"]["output_tokens"] == first["usage"]["completion_tokens"]
    assert page["data"][1]["resp_content_type"].startswith("text/event-stream")
    assert page["data"][0]["has_capture"] is True


@pytest_twisted.ensureDeferred
async def test_events_and_model_log_follow_a_real_start(service: LlamaSwapService) -> None:
    """/api/events reports alpha starting then ready; /logs/stream/alpha carries its output."""
    from twisted.web.client import Agent

    from .http import read_body

    base = service_url(service)
    agent = Agent(reactor)
    events_response = await agent.request(b"GET", (base + "/api/events").encode())
    events = read_body(events_response)
    await events.wait_for(b'"type": "inflight"')
    log_response = await agent.request(b"GET", (base + "/logs/stream/alpha?no-history").encode())
    model_log = read_body(log_response)
    r = await treq.post(
        base + "/v1/chat/completions",
        json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.code == 200
    await treq.content(r)
    await events.wait_for(b'\\"state\\": \\"ready\\"')
    states = []
    for block in events.data.split(b"\n\n"):
        if b'"modelStatus"' in block:
            status = json.loads(json.loads(block.split(b"data:", 1)[1])["data"])
            states.append(next(m["state"] for m in status if m["id"] == "alpha"))
    assert states[0] == "stopped" and "starting" in states and states[-1] == "ready"
    await model_log.wait_for(b"listening on http://127.0.0.1:")  # the responder's own output
    events.abort()
    model_log.abort()
