"""The whole observability of an App over real sockets: /metrics, /api/performance,
/api/events framing and order, in-flight cancel, and stop() closing live streams."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from llamaswap.config.model import Config, ModelConfig, PeerConfig, PerformanceConfig
from llamaswap.observe.events import Encoded, frame, model_status, model_status_json
from llamaswap.observe.resources import Observability, build_observe_resources
from llamaswap.observe.sysstats import SystemReader
from llamaswap.observe.types import run_inline
from llamaswap.process.state import ProcessState

from .fakes import FakeLogBuffer, fake_nvml, make_proc
from .http import Served, read_body
from .test_performance import GPU0
from .traffic import drive, sse_body


class FakeUpstream:
    """An Upstream with a state, a log and state listeners."""

    def __init__(self) -> None:
        """Stopped, no listeners."""
        self.state = ProcessState.STOPPED
        self.logs = FakeLogBuffer()
        self.listeners: list[Any] = []

    def add_state_listener(self, cb: Any) -> Any:
        """Register ``cb(model_id, old, new)``."""
        self.listeners.append(cb)
        return lambda: self.listeners.remove(cb)

    def move(self, model_id: str, new: ProcessState) -> None:
        """Transition and tell listeners."""
        old, self.state = self.state, new
        for cb in list(self.listeners):
            cb(model_id, old, new)


class FakeRouter:
    """A Router with add_listener and snapshot."""

    def __init__(self) -> None:
        """No listeners, an empty queue."""
        self.listeners: list[Any] = []

    def add_listener(self, cb: Any) -> None:
        """Register ``cb(event_name, fields)``."""
        self.listeners.append(cb)

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        """Send a router event."""
        for cb in self.listeners:
            cb(name, fields)

    def snapshot(self) -> dict[str, Any]:
        """The queue state."""
        return {"processes": {}, "queue": [], "in_flight": {}, "swaps": []}


def make_app(tmp_path: Any, disabled: bool = False) -> Any:
    """An App-shaped namespace with two models, a peer and fake logs."""
    config = Config(
        models={
            "m2": ModelConfig(id="m2", name="Second", aliases=("two",)),
            "m1": ModelConfig(id="m1", unlisted=True),
        },
        peers={"cloud": PeerConfig(id="cloud", proxy="http://x", models=("gpt",))},
        performance=PerformanceConfig(disabled=disabled, every=5),
    )
    proxy_log, upstream_log = FakeLogBuffer(), FakeLogBuffer()
    proxy_log.write(b"[INFO] started\n")
    app = SimpleNamespace(
        config=config,
        router=FakeRouter(),
        upstreams={"m1": FakeUpstream(), "m2": FakeUpstream()},
        proxy_log=proxy_log,
        upstream_log=upstream_log,
        observers=[],
        active_profile=None,
        extras={},
    )
    make_proc(str(tmp_path), [(10, 10)])
    obs = Observability(
        app,
        clock=Clock(),
        run_in_thread=run_inline,
        nvml_loader=lambda: fake_nvml([GPU0]),
        system=SystemReader(str(tmp_path)),
    )
    app.extras["observability"] = obs
    app.observers.extend(obs.observers)
    obs.start()
    return app


def mount(resources: dict[str, Resource]) -> dict[bytes, Resource]:
    """Nest the prefix-keyed resources into a putChild tree."""
    top: dict[bytes, Resource] = {}
    for key, resource in resources.items():
        parts = [p.encode() for p in key.split("/")]
        if len(parts) == 1:
            top[parts[0]] = resource
            continue
        parent = top.setdefault(parts[0], Resource())
        parent.putChild(parts[1], resource)
    return top


@pytest.fixture
def served(tmp_path: Any) -> Any:
    """All observability resources of a started App on a real port."""
    app = make_app(tmp_path)
    server = Served(mount(build_observe_resources(lambda: app)))
    server.app = app  # type: ignore[attr-defined]
    yield server
    app.extras["observability"].stop()
    server.stop()


def events_of(data: bytes) -> list[tuple[str, Any]]:
    """Decode SSE frames into (type, payload) pairs, checking the framing."""
    out = []
    for block in data.split(b"\n\n"):
        if not block:
            continue
        event, data_line = block.split(b"\n")
        assert event == b"event:message" and data_line.startswith(b"data:{")
        message = json.loads(data_line[5:])
        assert isinstance(message["data"], str)  # double-encoded
        out.append((message["type"], json.loads(message["data"])))
    return out


def test_frame_is_double_encoded_without_spaces() -> None:
    """A frame is 'event:message' then 'data:' with the payload as a JSON string."""
    assert frame("activity", {"id": 3}) == (
        b'event:message\ndata:{"type": "activity", "data": "{\\"id\\": 3}"}\n\n'
    )


@pytest_twisted.inlineCallbacks
def test_metrics_endpoint_after_traffic_swap_and_state(served: Any) -> Any:
    """/metrics shows request, token, swap, state, system and GPU series from this App."""
    app = served.app
    obs = app.extras["observability"]
    app.router.emit("swap_started", {"model": "m1"})
    app.upstreams["m1"].move("m1", ProcessState.STARTING)
    app.upstreams["m1"].move("m1", ProcessState.READY)
    app.router.emit("swap_done", {"model": "m1", "duration": 2.0, "error": None})
    usage = {"prompt_tokens": 11, "completion_tokens": 22}
    drive(app.observers, Clock(), content_type="text/event-stream", chunks=sse_body(usage))
    response = yield served.get("/metrics")
    body = yield read_body(response).done
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("llamaswap_swaps_total", (("model", "m1"), ("result", "ok")))] == 1
    assert samples[("llamaswap_prompt_tokens_total", (("model", "m1"),))] == 11
    assert samples[("llamaswap_completion_tokens_total", (("model", "m1"),))] == 22
    assert samples[("llamaswap_process_state", (("model", "m1"), ("state", "ready")))] == 1
    assert samples[("llamaswap_process_state", (("model", "m2"), ("state", "stopped")))] == 1
    assert any(name == "llamaswap_gpu_util_percent" for name, _ in samples)
    assert any(name == "llamaswap_memory_total_bytes" for name, _ in samples)
    assert obs.performance is not None


@pytest_twisted.inlineCallbacks
def test_metrics_without_sampling_and_performance_disabled(tmp_path: Any) -> Any:
    """performance.disabled: /metrics keeps request series, no system/GPU; /api/performance 503."""
    app = make_app(tmp_path, disabled=True)
    server = Served(mount(build_observe_resources(lambda: app)))
    try:
        drive(app.observers, Clock())
        response = yield server.get("/metrics")
        body = (yield read_body(response).done).decode()
        assert response.code == 200 and "llamaswap_requests_total{" in body
        assert "llamaswap_memory_total_bytes" not in body and "llamaswap_gpu" not in body
        response = yield server.get("/api/performance")
        body = yield read_body(response).done
        assert response.code == 503 and json.loads(body) == {"enabled": False}
    finally:
        yield server.stop()
        yield app.extras["observability"].stop()


@pytest_twisted.inlineCallbacks
def test_performance_history_and_after(served: Any) -> Any:
    """/api/performance lists samples; ?after filters strictly; a bad after is a 400."""
    response = yield served.get("/api/performance")
    body = json.loads((yield read_body(response).done))
    assert body["enabled"] is True and len(body["sys_stats"]) == 1
    (gpu,) = body["gpu_stats"]
    assert (gpu["name"], gpu["temp_c"], gpu["mem_total_mb"]) == ("NVIDIA Fake 4090", 61, 24576)
    assert body["sys_stats"][0]["load_avg_5"] == 1.25
    response = yield served.get("/api/performance?after=2999-01-01T00:00:00Z")
    body = json.loads((yield read_body(response).done))
    assert body["sys_stats"] == [] and body["gpu_stats"] == []
    response = yield served.get("/api/performance?after=soon")
    body = json.loads((yield read_body(response).done))
    assert response.code == 400
    assert body["error"]["message"] == "invalid 'after' timestamp, use RFC3339 format"


def test_model_status_encoded_once_follows_states() -> None:
    """The pre-encoded modelStatus is the plain encoding of model_status, states current."""
    from llamaswap.config.model import Capabilities

    config = Config(
        models={
            "b": ModelConfig(id="b", name="Bee", aliases=("bee", "b2")),
            "a": ModelConfig(id="a", unlisted=True,
                             capabilities=Capabilities(context=4096)),
        },
        peers={"cloud": PeerConfig(id="cloud", proxy="http://x", models=("gpt",))},
    )
    ups = {"a": FakeUpstream(), "b": FakeUpstream()}
    app = SimpleNamespace(config=config, upstreams=ups, extras={})
    for model_id, state in [(None, None), ("b", ProcessState.READY), ("a", ProcessState.STOPPING)]:
        if model_id is not None:
            ups[model_id].state = state
        encoded = model_status_json(app)
        assert encoded == Encoded(json.dumps(model_status(app)))
    assert frame("modelStatus", encoded) == frame("modelStatus", model_status(app))


@pytest_twisted.inlineCallbacks
def test_events_initial_burst_then_live_events(served: Any) -> Any:
    """The burst comes in SPEC order; state, in-flight, activity, queue and logs follow live."""
    app = served.app
    response = yield served.get("/api/events")
    assert response.headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    reader = read_body(response)
    yield reader.wait_for(b'"type": "queue"')
    burst = events_of(reader.data)
    assert [t for t, _ in burst] == [
        "logData", "logData", "modelStatus", "uiConfig", "profileChanged", "inflight", "queue",
    ]  # fmt: skip
    assert burst[0][1] == {"source": "proxy", "data": "[INFO] started\n"}
    status = burst[2][1]
    assert [m["id"] for m in status] == ["m1", "m2", "cloud/gpt"]
    assert status[1]["aliases"] == ["two"] and status[0]["unlisted"] is True
    assert status[2]["peerID"] == "cloud" and status[2]["state"] == ""
    assert burst[3][1]["activity"] == {"session_id": ["X-Session-ID", "X-Litellm-Session-Id"]}
    assert burst[3][1]["routing"]["router"] == "group"
    assert burst[5][1] == {"operation": "snapshot", "requests": []}
    count = len(reader.data)

    app.upstreams["m2"].move("m2", ProcessState.STARTING)
    drive(app.observers, Clock(), chunks=[b'{"usage":{"prompt_tokens":1}}'])
    yield app.extras["observability"].store.flush()  # the activity row's batch goes out
    app.router.emit("queue", {"queue": [{"model": "m1", "position": 1}]})
    app.upstream_log.write(b"llama output\n")
    yield reader.wait_for(b"llama output")
    live = events_of(reader.data[count:])
    kinds = [(t, p.get("operation") if isinstance(p, dict) else None) for t, p in live]
    assert kinds == [
        ("modelStatus", None),
        ("inflight", "upsert"),
        ("inflight", "upsert"),
        ("inflight", "remove"),
        ("activity", None),
        ("queue", None),
        ("logData", None),
    ]
    assert [m["state"] for m in live[0][1] if m["id"] == "m2"] == ["starting"]
    assert live[1][1]["request"]["model"] == "m1" and live[4][1] == {"id": 1}
    assert live[6][1] == {"source": "upstream", "data": "llama output\n"}
    yield app.extras["observability"].stop()  # reload/shutdown ends the stream
    yield reader.done


@pytest_twisted.inlineCallbacks
def test_inflight_cancel(served: Any) -> Any:
    """Cancelling a live request calls its cancel hook; unknown ids are 404."""
    app = served.app
    cancelled: list[bool] = []
    rec = drive(app.observers, Clock(), finish=False)
    rec.cancel = lambda: cancelled.append(True)
    response = yield served.get(f"/api/inflight/{rec.id}/cancel", method=b"POST")
    body = json.loads((yield read_body(response).done))
    assert response.code == 200 and body == {"msg": "ok"} and cancelled == [True]
    response = yield served.get("/api/inflight/99999/cancel", method=b"POST")
    body = json.loads((yield read_body(response).done))
    assert response.code == 404 and body["error"]["message"] == "inflight request not found"


def test_inflight_byte_updates_are_throttled() -> None:
    """Body chunks upsert at most once per 250 ms; a final pending update is still sent."""
    from llamaswap.observe.inflight import InflightTracker

    clock = Clock()
    tracker = InflightTracker(clock)
    sent: list[Any] = []
    tracker.listeners.append(sent.append)
    rec = drive([tracker], clock, finish=False, ttfb=0.0, duration=0.0)
    base = len(sent)
    for _ in range(10):
        rec.bytes_out += 5
        tracker.response_chunk(rec, b"12345")
        clock.advance(0.01)
    assert len(sent) == base
    clock.advance(0.25)
    assert len(sent) == base + 1 and sent[-1]["request"]["resp_bytes"] == rec.bytes_out
    tracker.request_finished(rec)
    assert sent[-1] == {"operation": "remove", "id": str(rec.id)}


def test_inflight_builds_no_events_while_unwatched() -> None:
    """With nobody watching no upserts are built, yet the snapshot still lists the request."""
    from llamaswap.observe.inflight import InflightTracker

    clock = Clock()
    watching = [False]
    tracker = InflightTracker(clock, watched=lambda: watching[0])
    sent: list[Any] = []
    tracker.listeners.append(sent.append)
    rec = drive([tracker], clock, finish=False, ttfb=0.0, duration=0.0)
    assert sent == []
    assert [r["id"] for r in tracker.snapshot()["requests"]] == [str(rec.id)]
    watching[0] = True
    tracker.request_finished(rec)
    assert sent == [{"operation": "remove", "id": str(rec.id)}]


@pytest_twisted.inlineCallbacks
def test_reload_carries_series_and_activity_over(tmp_path: Any) -> Any:
    """A successor built with previous= keeps counters and rows; the old one stops cleanly."""
    old_app = make_app(tmp_path)
    old = old_app.extras["observability"]
    drive(old_app.observers, Clock())
    new_app = make_app(tmp_path)
    yield new_app.extras["observability"].stop()  # replaced by the successor below
    new_app.config = Config(models={"m1": ModelConfig(id="m1")})
    new = Observability(new_app, clock=Clock(), run_in_thread=run_inline, previous=old,
                        nvml_loader=lambda: fake_nvml([]))  # fmt: skip
    yield old.stop()
    drive([new.inflight, new.pipeline], Clock())
    text = new.metrics.exposition().decode()
    assert (
        'llamaswap_requests_total{endpoint="/v1/chat/completions",model="m1",status="200"} 2.0'
        in text
    )
    assert 'model="m2"' not in text
    yield new.store.flush()
    ids: list[int] = []
    new.recorder.listeners.append(ids.append)
    drive([new.pipeline], Clock())
    yield new.store.flush()
    assert ids == [3]  # the store (and its ids) survived the reload
    yield new.stop()


def test_build_attaches_observers_and_profile_hook() -> None:
    """build() installs itself, its observers (once) and the on_profile_change hook."""
    from twisted.internet import reactor

    app = SimpleNamespace(
        config=Config(performance=PerformanceConfig(disabled=True)),
        router=FakeRouter(), upstreams={}, observers=[], extras={}, active_profile=None,
    )  # fmt: skip
    obs = Observability.build(app, reactor)
    obs.attach()
    assert app.extras["observability"] is obs
    assert app.observers == [obs.inflight, obs.pipeline]
    seen: list[Any] = []
    obs.hub.subscribe(lambda kind, payload: seen.append((kind, payload)))
    app.active_profile = "fast"
    app.extras["on_profile_change"]("fast")
    assert seen[0] == ("profileChanged", {"active": "fast"}) and seen[1][0] == "modelStatus"


@pytest_twisted.inlineCallbacks
def test_wrong_method_is_405_and_head_works(served: Any) -> Any:
    """A POST to /metrics is 405 with Allow; HEAD answers like GET without a body."""
    response = yield served.get("/metrics", method=b"POST")
    yield read_body(response).done
    assert response.code == 405 and response.headers.getRawHeaders(b"allow") == [b"GET, HEAD"]
    response = yield served.get("/metrics", method=b"HEAD")
    assert response.code == 200
