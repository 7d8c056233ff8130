"""Prometheus metrics of one App: requests, latency, queue, swaps, process state and tokens.

Each App gets its own ``CollectorRegistry`` (never the global one). Feeds: ``observe_request``
(from the request pipeline), ``on_router_event`` (Router.add_listener) and ``on_state``
(Upstream.add_state_listener). The system/GPU collector is added when sampling is enabled.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from llamaswap.observe.hooks import RequestRecord
from llamaswap.observe.tokens import TokenStats
from llamaswap.process.state import ProcessState

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
SWAP_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


def endpoint_of(path: str) -> str:
    """The path without its query string (the ``endpoint`` label)."""
    return path.split("?", 1)[0]


def _label_value(value: str) -> str:
    """A label value escaped as the Prometheus text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class StateSeries:
    """The ``llamaswap_process_state`` gauge family, kept as text.

    A model's five lines are written when its state changes, so ``/metrics`` joins
    prepared bytes instead of formatting five samples per configured model each scrape.
    """

    HEADER = (
        b"# HELP llamaswap_process_state 1 for the current state of each model's process\n"
        b"# TYPE llamaswap_process_state gauge\n"
    )

    # For each current state, the tail of each of the five lines after ``state="``.
    _TAILS = {
        current: [f'{state.value}"}} {"1.0" if state == current else "0.0"}\n'
                  for state in ProcessState]
        for current in ProcessState
    }

    def __init__(self) -> None:
        """No models yet."""
        self._lines: dict[str, bytes] = {}

    def set(self, model_id: str, current: ProcessState) -> None:
        """1 for ``current``, 0 for every other state of ``model_id``."""
        prefix = f'llamaswap_process_state{{model="{_label_value(model_id)}",state="'
        tails = self._TAILS[ProcessState(current)]
        self._lines[model_id] = "".join([prefix + tail for tail in tails]).encode()

    def forget(self, model_id: str) -> None:
        """Drop ``model_id``'s series (it left the config)."""
        self._lines.pop(model_id, None)

    def exposition(self) -> bytes:
        """The family in Prometheus text format."""
        return self.HEADER + b"".join(self._lines.values())


class RequestMetrics:
    """The request/swap/queue/token series and their registry."""

    def __init__(self) -> None:
        """Create a fresh registry with every series registered."""
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "llamaswap_requests",
            "Requests by model, endpoint and status",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "llamaswap_request_duration_seconds",
            "Request duration, admission to last byte",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "llamaswap_time_to_first_byte_seconds",
            "Admission to the first response body byte",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "llamaswap_queue_depth", "Requests waiting in the scheduler queue", registry=r
        )
        self.queue_wait = Histogram(
            "llamaswap_queue_wait_seconds",
            "Time a request waited for its model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.swaps = Counter(
            "llamaswap_swaps",
            "Swaps by target model and result (started, ok, failed)",
            ["model", "result"],
            registry=r,
        )
        self.swap_duration = Histogram(
            "llamaswap_swap_duration_seconds",
            "Swap duration (evictions + start + health check)",
            ["model"],
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        self.process_state = StateSeries()
        self.prompt_tokens = Counter(
            "llamaswap_prompt_tokens",
            "Prompt (input) tokens reported by upstreams",
            ["model"],
            registry=r,
        )
        self.completion_tokens = Counter(
            "llamaswap_completion_tokens",
            "Completion (output) tokens reported by upstreams",
            ["model"],
            registry=r,
        )
        self.tokens_per_second = Gauge(
            "llamaswap_tokens_per_second",
            "Generation speed of the last request that reported it",
            ["model"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry and the process states in Prometheus text format."""
        return bytes(generate_latest(self.registry)) + self.process_state.exposition()

    def init_model(self, model_id: str, state: ProcessState) -> None:
        """Set the state series of a model before any transition is seen."""
        self.on_state(model_id, state, state)

    def forget_model(self, model_id: str) -> None:
        """Remove a model's state series (it left the config)."""
        self.process_state.forget(model_id)

    def on_state(self, model_id: str, old: ProcessState, new: ProcessState) -> None:
        """Upstream state listener: 1 for ``new``, 0 for every other state."""
        self.process_state.set(model_id, new)

    def on_router_event(self, name: str, fields: dict[str, Any]) -> None:
        """Router listener: swap_started, swap_done, queue, request_granted."""
        model = str(fields.get("model", ""))
        if name == "swap_started":
            self.swaps.labels(model, "started").inc()
        elif name == "swap_done":
            self.swaps.labels(model, "failed" if fields.get("error") else "ok").inc()
            duration = fields.get("duration")
            if isinstance(duration, int | float):
                self.swap_duration.labels(model).observe(duration)
        elif name == "queue":
            queue = fields.get("queue", fields.get("depth", 0))
            self.queue_depth.set(len(queue) if isinstance(queue, list | tuple) else float(queue))
        elif name == "request_granted":
            wait = fields.get("wait")
            if isinstance(wait, int | float):
                self._child(self.queue_wait, model).observe(wait)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: labels() costs a lock and a tuple a call."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, rec: RequestRecord, tokens: TokenStats) -> None:
        """Count a finished request and its tokens."""
        model, endpoint = rec.model_id, endpoint_of(rec.path)
        status = str(rec.status) if rec.status is not None else "none"
        child = self._child
        child(self.requests, model, endpoint, status).inc()
        if rec.finished_at is not None:
            child(self.duration, model, endpoint).observe(max(0.0, rec.finished_at - rec.started))
        if rec.first_byte_at is not None:
            child(self.ttfb, model, endpoint).observe(max(0.0, rec.first_byte_at - rec.started))
        if tokens.input_tokens > 0:
            child(self.prompt_tokens, model).inc(tokens.input_tokens)
        if tokens.output_tokens > 0:
            child(self.completion_tokens, model).inc(tokens.output_tokens)
        if tokens.tokens_per_second > 0:
            child(self.tokens_per_second, model).set(tokens.tokens_per_second)
