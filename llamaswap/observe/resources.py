"""The observability of one App: built once per App by the service, mounted by the web layer."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.web.resource import Resource

from llamaswap.observe.activity import ActivityStore, open_store
from llamaswap.observe.activity_api import CapturesResource, MetricsApiResource
from llamaswap.observe.captures import CaptureCache
from llamaswap.observe.events import EventHub, EventsResource, model_status_json
from llamaswap.observe.gpu import load_nvml
from llamaswap.observe.gpumemory import GpuMemoryCollector
from llamaswap.observe.hooks import RequestObserver
from llamaswap.observe.inflight import InflightResource, InflightTracker
from llamaswap.observe.logs import LogsResource
from llamaswap.observe.metrics import RequestMetrics
from llamaswap.observe.metrics_api import MetricsResource, PerformanceResource
from llamaswap.observe.performance import PerformanceMonitor, SystemCollector
from llamaswap.observe.pipeline import RequestPipeline
from llamaswap.observe.recorder import ActivityRecorder
from llamaswap.observe.streaming import BoundedStream
from llamaswap.observe.sysstats import SystemReader
from llamaswap.observe.types import RunInThread, thread_runner

_log = Logger()
MIB = 1024 * 1024


def build_observe_resources(get_app: Callable[[], Any]) -> dict[str, Resource]:
    """The observability endpoints keyed by path prefix (no leading slash)."""
    return {
        "metrics": MetricsResource(get_app),
        "logs": LogsResource(get_app),
        "api/events": EventsResource(get_app),
        "api/metrics": MetricsApiResource(get_app),
        "api/performance": PerformanceResource(get_app),
        "api/inflight": InflightResource(get_app),
        "api/captures": CapturesResource(get_app),
    }


class Observability:
    """Metrics, activity, captures, in-flight table, events and sampling of one App."""

    def __init__(
        self,
        app: Any,
        *,
        clock: Any,
        run_in_thread: RunInThread,
        nvml_loader: Callable[[], ModuleType] = load_nvml,
        system: SystemReader | None = None,
        previous: Observability | None = None,
    ) -> None:
        """Build everything from ``app.config``; nothing runs until ``start()``.

        With ``previous`` (the Observability of the App being replaced by a reload) the
        Prometheus series, the activity store (when ``store``/``metricsMaxInMemory`` are
        unchanged) and the captures carry over, so counters and history survive reloads.
        """
        config = app.config
        self.app = app
        self._store_key = (config.store.path, config.metrics_max_in_memory)
        self._owns_store = True
        self._collector: SystemCollector | None = None
        self.metrics: RequestMetrics
        self.store: ActivityStore
        self.captures: CaptureCache
        if previous is not None:
            self.metrics = previous.metrics
            previous.detach_metrics(set(app.config.models))
        else:
            self.metrics = RequestMetrics()
        if previous is not None and previous._store_key == self._store_key:
            previous._owns_store = False
            self.store = previous.store
            self.captures = previous.captures
            self.captures.max_bytes = max(0, config.capture_buffer_mb) * MIB
        else:
            self.captures = CaptureCache(max(0, config.capture_buffer_mb) * MIB)
            self.store = open_store(
                run_in_thread, config.store.path, config.metrics_max_in_memory, clock
            )
        self.recorder = ActivityRecorder(self.store, self.captures)
        self.pipeline = RequestPipeline(
            [lambda f: self.metrics.observe_request(f.rec, f.tokens), self.recorder],
            keep_body_bytes=self.captures.max_bytes,
        )
        self.hub = EventHub()
        self.inflight = InflightTracker(clock, watched=self.hub.has_subscribers)
        self.performance: PerformanceMonitor | None = None
        if not config.performance.disabled:
            self.performance = PerformanceMonitor(
                clock=clock,
                every=config.performance.every,
                run_in_thread=run_in_thread,
                system=system,
                nvml_loader=nvml_loader,
            )
            self._collector = SystemCollector(self.performance)
            self.metrics.registry.register(self._collector)
        self._memory_collector: GpuMemoryCollector | None = None
        if app.extras.get("memory") is not None:
            self._memory_collector = GpuMemoryCollector(app)
            self.metrics.registry.register(self._memory_collector)
        self._memory_view: Any = None
        self._clock = clock
        self.memory_loaded: Deferred[None] = succeed(None)
        self.inflight.listeners.append(lambda payload: self.hub.publish("inflight", payload))
        self.recorder.listeners.append(lambda row_id: self.hub.publish("activity", {"id": row_id}))
        self._streams: set[BoundedStream] = set()
        self._undo: list[Callable[[], None]] = []

    @classmethod
    def build(cls, app: Any, reactor: Any, **kw: Any) -> Observability:
        """Build for ``app`` with ``reactor``'s clock and thread pool, and ``attach()`` it.

        Pass ``previous=<old Observability>`` on reload (then stop the old one).
        """
        obs = cls(app, clock=reactor, run_in_thread=thread_runner(reactor), **kw)
        obs.attach()
        return obs

    def attach(self) -> None:
        """Install into the App: extras["observability"], the request observers and the
        profile-change hook the profile API calls (idempotent)."""
        app = self.app
        app.extras["observability"] = self
        for observer in self.observers:
            if observer not in app.observers:
                app.observers.append(observer)
        app.extras.setdefault("on_profile_change", lambda _name: self.profile_changed())

    def detach_metrics(self, keep_models: set[str]) -> None:
        """Hand the registry to a successor: drop the sampler and vanished models' states."""
        if self._collector is not None:
            self.metrics.registry.unregister(self._collector)
            self._collector = None
        if self._memory_collector is not None:
            self.metrics.registry.unregister(self._memory_collector)
            self._memory_collector = None
        for model_id in self.app.config.models:
            if model_id not in keep_models:
                self.metrics.forget_model(model_id)

    @property
    def observers(self) -> list[RequestObserver]:
        """What the service appends to ``app.observers``."""
        return [self.inflight, self.pipeline]

    def start(self) -> None:
        """Listen to upstream states and router events; start sampling."""
        for model_id, upstream in self.app.upstreams.items():
            self.metrics.init_model(model_id, upstream.state)
            self._undo.append(upstream.add_state_listener(self._on_state))
        add_listener = getattr(self.app.router, "add_listener", None)
        if add_listener is not None:
            undo = add_listener(self._on_router_event)
            if callable(undo):
                self._undo.append(undo)
        memory = self.app.extras.get("memory")
        if memory is not None:
            memory.listeners.append(self._on_memory)
            memory.measured_listeners.append(self._on_measured)
            self._undo.append(lambda: memory.listeners.remove(self._on_memory))
            self._undo.append(lambda: memory.measured_listeners.remove(self._on_measured))
            self.memory_loaded = self.store.load_memory().addCallback(memory.remember)
            self.memory_loaded.addErrback(
                lambda f: _log.failure("reading remembered GPU memory", f))
        if self.performance is not None:
            self.performance.start()

    def _on_measured(self, model_id: str, figures: dict[int, int]) -> None:
        """Remember a model's measured GPU memory across restarts."""
        self.store.save_memory(model_id, figures, self._clock.seconds()).addErrback(
            lambda f: _log.failure("remembering GPU memory of {model}", f, model=model_id))

    def _on_memory(self) -> None:
        """A GPU memory sample came in: tell event streams the figures."""
        if not self.hub.has_subscribers():
            return
        gpus = {"gpus": self.app.extras["memory"].gpus_view()}
        status = model_status_json(self.app)
        if (gpus, status.text) != self._memory_view:
            self._memory_view = (gpus, status.text)
            self.hub.publish("memory", gpus)
            self.hub.publish("modelStatus", status)

    def _on_state(self, model_id: str, old: Any, new: Any) -> None:
        self.metrics.on_state(model_id, old, new)
        if self.hub.has_subscribers():
            self.hub.publish("modelStatus", model_status_json(self.app))

    def _on_router_event(self, name: str, fields: dict[str, Any]) -> None:
        self.metrics.on_router_event(name, fields)
        if name == "queue":
            self.hub.publish("queue", fields)

    def queue_snapshot(self) -> dict[str, Any] | None:
        """The router's snapshot for the ``queue`` event (None when the router has none)."""
        snapshot = getattr(self.app.router, "snapshot", None)
        if snapshot is None:
            return None
        try:
            return snapshot()
        except Exception:
            _log.failure("router snapshot failed")
            return None

    def profile_changed(self) -> None:
        """Tell event streams the active profile changed (the profile API calls this)."""
        self.hub.publish("profileChanged", {"active": self.app.active_profile})
        self.hub.publish("modelStatus", model_status_json(self.app))

    def track(self, stream: BoundedStream) -> None:
        """Close ``stream`` when this App stops (reload or shutdown)."""
        self._streams.add(stream)
        stream.on_close(lambda: self._streams.discard(stream))

    def stop(self) -> Deferred[Any]:
        """End open streams, stop listening and sampling, close the store."""
        for stream in list(self._streams):
            stream.close()
        for undo in self._undo:
            undo()
        self._undo.clear()
        waits: list[Deferred[Any]] = [self.store.close()] if self._owns_store else []
        if self.performance is not None:
            waits.append(self.performance.stop())
        return DeferredList(waits, consumeErrors=True)
