"""Request, swap, queue, process-state and token series, read back through the Prometheus parser."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock

from llamaswap.observe.metrics import RequestMetrics
from llamaswap.observe.pipeline import RequestPipeline
from llamaswap.process.state import ProcessState

from .traffic import drive, sse_body


def parse(metrics: RequestMetrics) -> dict[str, list[Any]]:
    """All samples by sample name."""
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` whose labels include ``labels``."""
    matches = [s for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return float(matches[0].value)


def setup() -> tuple[RequestMetrics, RequestPipeline, Clock]:
    """Metrics fed by a pipeline, on a fake clock."""
    metrics = RequestMetrics()
    pipeline = RequestPipeline([lambda f: metrics.observe_request(f.rec, f.tokens)])
    return metrics, pipeline, Clock()


def test_registry_is_per_instance() -> None:
    """Two RequestMetrics never share series (one registry per App)."""
    a, b = RequestMetrics(), RequestMetrics()
    a.swaps.labels("m1", "started").inc()
    assert "m1" in a.exposition().decode() and 'model="m1"' not in b.exposition().decode()


def test_streamed_usage_feeds_token_counters_and_latency() -> None:
    """An SSE response's final usage moves the token counters; TTFB and duration are observed."""
    metrics, pipeline, clock = setup()
    usage = {"prompt_tokens": 12, "completion_tokens": 34}
    drive([pipeline], clock, content_type="text/event-stream", chunks=sse_body(usage))
    body = json.dumps(
        {
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            "timings": {"prompt_n": 3, "predicted_n": 5, "predicted_per_second": 42.5},
        }
    ).encode()
    drive([pipeline], clock, chunks=[body[:7], body[7:]], ttfb=0.2, duration=0.3)
    s = parse(metrics)
    assert value(s, "llamaswap_prompt_tokens_total", model="m1") == 15
    assert value(s, "llamaswap_completion_tokens_total", model="m1") == 39
    assert value(s, "llamaswap_tokens_per_second", model="m1") == 42.5
    assert (
        value(
            s, "llamaswap_requests_total", model="m1", status="200", endpoint="/v1/chat/completions"
        )
        == 2
    )
    assert abs(value(s, "llamaswap_request_duration_seconds_sum", model="m1") - 2.3) < 1e-9
    assert value(s, "llamaswap_time_to_first_byte_seconds_count", model="m1") == 2
    assert value(s, "llamaswap_time_to_first_byte_seconds_bucket", model="m1", le="0.25") == 1


def test_error_responses_count_by_status_without_tokens() -> None:
    """A 502 is counted under its status and never adds tokens."""
    metrics, pipeline, clock = setup()
    body = b'{"usage":{"prompt_tokens":99,"completion_tokens":99}}'
    drive([pipeline], clock, status=502, chunks=[body], path="/v1/completions?x=1")
    s = parse(metrics)
    assert value(s, "llamaswap_requests_total", status="502", endpoint="/v1/completions") == 1
    assert "llamaswap_prompt_tokens_total" not in s


def test_router_events_count_swaps_queue_and_wait() -> None:
    """swap_started/swap_done move the swap counter and duration; queue sets the depth."""
    metrics = RequestMetrics()
    metrics.on_router_event("swap_started", {"model": "m1"})
    metrics.on_router_event("swap_done", {"model": "m1", "duration": 3.5, "error": None})
    metrics.on_router_event("swap_started", {"model": "m2"})
    metrics.on_router_event("swap_done", {"model": "m2", "duration": 1.0, "error": "exit 1"})
    metrics.on_router_event("queue", {"queue": [{"model": "m1"}, {"model": "m2"}]})
    metrics.on_router_event("request_granted", {"model": "m1", "wait": 0.75})
    s = parse(metrics)
    assert value(s, "llamaswap_swaps_total", model="m1", result="started") == 1
    assert value(s, "llamaswap_swaps_total", model="m1", result="ok") == 1
    assert value(s, "llamaswap_swaps_total", model="m2", result="failed") == 1
    assert value(s, "llamaswap_swap_duration_seconds_sum", model="m1") == 3.5
    assert value(s, "llamaswap_queue_depth") == 2
    assert value(s, "llamaswap_queue_wait_seconds_sum", model="m1") == 0.75


def test_process_state_is_one_for_current_state_only() -> None:
    """A state transition sets the new state's series to 1 and every other to 0."""
    metrics = RequestMetrics()
    metrics.init_model("m1", ProcessState.STOPPED)
    metrics.on_state("m1", ProcessState.STOPPED, ProcessState.STARTING)
    metrics.on_state("m1", ProcessState.STARTING, ProcessState.READY)
    s = parse(metrics)
    states = {x.labels["state"]: x.value for x in s["llamaswap_process_state"]}
    assert states == {"stopped": 0, "starting": 0, "ready": 1, "stopping": 0, "shutdown": 0}


def test_process_state_text_matches_prometheus_client() -> None:
    """The hand-kept state family is byte for byte what a prometheus_client Gauge writes."""
    registry = CollectorRegistry()
    gauge = Gauge("llamaswap_process_state", "1 for the current state of each model's process",
                  ["model", "state"], registry=registry)
    metrics = RequestMetrics()
    changes = [("plain", ProcessState.STOPPED), ('q"uote\\back\nline', ProcessState.READY),
               ("ünï/côde", ProcessState.STARTING), ("plain", ProcessState.STOPPING)]
    for model_id, new in changes:
        metrics.on_state(model_id, new, new)
        for state in ProcessState:
            gauge.labels(model_id, state.value).set(1 if state == new else 0)
    metrics.forget_model("ünï/côde")
    for state in ProcessState:
        gauge.remove("ünï/côde", state.value)
    assert metrics.process_state.exposition() == generate_latest(registry)
