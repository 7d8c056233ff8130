"""MemorySwapper as a pure state machine over fake memory snapshots (no NVML anywhere)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from twisted.logger import Logger, LogLevel, globalLogPublisher
from zope.interface.verify import verifyObject

from llamaswap.config.model import MemoryNeed, ModelConfig
from llamaswap.errors import InsufficientMemory
from llamaswap.interfaces import ISwapper
from llamaswap.memory import GIB, DeviceMemory, MemorySnapshot, ModelMemory, resolve_need
from llamaswap.process.state import ProcessState
from llamaswap.router import builtin
from llamaswap.router.events import HandlerRequest, ServeDone, SwapDone
from llamaswap.router.scheduler.fifo import FIFOScheduler
from llamaswap.router.swapper.memory import MemorySwapper, persistent_models
from llamaswap.testing.effects import RecordingEffects


def model(model_id: str, gpu: float | None = None, devices: Sequence[int] = (),
          env: Sequence[str] = ()) -> ModelConfig:
    """A model config with an optional ``memory`` key (gpu in GiB)."""
    need = MemoryNeed(gpu=None if gpu is None else int(gpu * GIB), devices=tuple(devices))
    return ModelConfig(id=model_id, cmd=f"serve {model_id}", memory=need, env=tuple(env))


class FakeGpu:
    """A mutable snapshot: devices in GiB, per-model usage, measured figures and LRU times."""

    def __init__(self, *totals: float) -> None:
        self.now = 1000.0
        self.totals = {i: int(t * GIB) for i, t in enumerate(totals)}
        self.other = {i: 0 for i in self.totals}  # held by processes that are not models
        self.usage: dict[str, dict[int, int]] = {}
        self.measured: dict[str, dict[int, int]] = {}
        self.estimates: dict[str, int] = {}
        self.last_used: dict[str, float] = {}

    def use(self, model_id: str, gib: float, device: int = 0, at: float = 0.0) -> None:
        """``model_id`` holds ``gib`` on ``device`` now and was last used at ``at``."""
        self.usage.setdefault(model_id, {})[device] = int(gib * GIB)
        self.last_used[model_id] = at

    def stop(self, model_id: str) -> None:
        """``model_id``'s process is gone: its memory is free again."""
        self.usage.pop(model_id, None)

    def __call__(self) -> MemorySnapshot:
        """The snapshot as the Router's provider would hand it."""
        devices = {}
        for d, total in self.totals.items():
            used = self.other[d] + sum(u.get(d, 0) for u in self.usage.values())
            devices[d] = DeviceMemory(total=total, free=total - used)
        names = set(self.usage) | set(self.measured) | set(self.estimates) | set(self.last_used)
        models = {
            m: ModelMemory(usage=dict(self.usage.get(m, {})), measured=self.measured.get(m),
                           estimate=self.estimates.get(m), last_used=self.last_used.get(m, 0.0))
            for m in names
        }
        return MemorySnapshot(now=self.now, devices=devices, models=models)


def swapper(gpu: FakeGpu, *models: ModelConfig, persistent: Sequence[str] = (),
            margin: float = 0.0) -> MemorySwapper:
    """A MemorySwapper over ``models`` reading ``gpu``."""
    return MemorySwapper({m.id: m for m in models}, gpu, persistent=persistent, margin=margin)


def test_memory_provides_iswapper() -> None:
    """MemorySwapper provides ISwapper; the built-in factory builds one with the provider."""
    gpu = FakeGpu(8)
    sw = builtin.memory.build(settings={}, models={"a": model("a", 2)}, log=None, memory=gpu)
    assert verifyObject(ISwapper, sw)
    assert sw.eviction_for("a", []) == []


def test_memory_fits_alongside() -> None:
    """A model that fits next to the running ones evicts nothing."""
    gpu = FakeGpu(10)
    gpu.use("a", 4)
    sw = swapper(gpu, model("a", 4), model("b", 5))
    assert sw.eviction_for("b", ["a"]) == []


def test_memory_running_target_evicts_nothing() -> None:
    """A target that is already running needs no room."""
    gpu = FakeGpu(10)
    gpu.use("a", 9)
    gpu.use("b", 1)
    assert swapper(gpu, model("a", 9), model("b", 1)).eviction_for("a", ["a", "b"]) == []


def test_memory_evicts_lru_just_enough() -> None:
    """Least recently used first, and only as many as the need takes."""
    gpu = FakeGpu(10)
    gpu.use("old", 3, at=100)
    gpu.use("mid", 3, at=200)
    gpu.use("new", 3, at=300)
    sw = swapper(gpu, model("old", 3), model("mid", 3), model("new", 3), model("t", 3))
    assert sw.eviction_for("t", ["mid", "new", "old"]) == ["old"]
    gpu.last_used["old"] = 400
    assert sw.eviction_for("t", ["mid", "new", "old"]) == ["mid"]


def test_memory_keeps_an_lru_model_that_turns_out_not_needed() -> None:
    """An old small model evicted first is kept when the larger next one alone makes room."""
    gpu = FakeGpu(10)
    gpu.use("small", 1, at=100)
    gpu.use("big", 8, at=200)
    sw = swapper(gpu, model("small", 1), model("big", 8), model("t", 8))
    assert sw.eviction_for("t", ["big", "small"]) == ["big"]


def test_memory_margin_counts() -> None:
    """The margin (a fraction of each device) is kept free."""
    gpu = FakeGpu(10)
    gpu.use("a", 5)
    models = (model("a", 5), model("b", 4.8))
    assert swapper(gpu, *models, margin=0.0).eviction_for("b", ["a"]) == []
    assert swapper(gpu, *models, margin=0.05).eviction_for("b", ["a"]) == ["a"]


def test_memory_persistent_and_pinned_never_evicted() -> None:
    """Members of persistent groups and pinned models stay; the others go."""
    gpu = FakeGpu(10)
    gpu.use("p", 4, at=1)
    gpu.use("q", 4, at=2)
    gpu.use("r", 1, at=3)
    settings = {"groups": {"g": {"persistent": True, "members": ["p"]}}, "pinned": ["q"]}
    assert persistent_models(settings) == {"p", "q"}
    sw = swapper(gpu, model("p", 4), model("q", 4), model("r", 1), model("t", 2),
                 persistent=persistent_models(settings))
    assert sw.eviction_for("t", ["p", "q", "r"]) == ["r"]


def test_memory_never_fits_is_an_error_naming_the_figures() -> None:
    """A need above device size minus margin raises InsufficientMemory, no eviction."""
    gpu = FakeGpu(8)
    gpu.use("a", 1)
    sw = swapper(gpu, model("a", 1), model("huge", 12), margin=0.05)
    with pytest.raises(InsufficientMemory) as caught:
        sw.eviction_for("huge", ["a"])
    assert caught.value.status == 507
    assert caught.value.message == (
        "huge needs 12.0 GiB on GPU0 (config), which has 8.0 GiB in all and 7.6 GiB after the "
        "5% margin: it can never be loaded there")


def test_memory_short_after_everything_allowed_tries_anyway() -> None:
    """Blocked by a persistent model: evict what may go, and say so in the log line."""
    gpu = FakeGpu(10)
    gpu.use("p", 6, at=1)
    gpu.use("r", 2, at=2)
    sw = swapper(gpu, model("p", 6), model("r", 2), model("t", 5), persistent=["p"])
    plan = sw.plan("t", ["p", "r"])
    assert plan.evict == ("r",)
    assert "still short on GPU0 after evicting everything allowed (kept: p); trying anyway" \
        in plan.describe()


def test_memory_multi_device() -> None:
    """A model on two devices needs room on both; only models on short devices are evicted."""
    gpu = FakeGpu(10, 10)
    gpu.use("on0", 6, device=0, at=1)
    gpu.use("on1", 3, device=1, at=2)
    gpu.use("also1", 2, device=1, at=3)
    sw = swapper(gpu, model("on0", 6, [0]), model("on1", 3, [1]), model("also1", 2, [1]),
                 model("both", 10, [0, 1]))
    # 5 GiB on each device: GPU0 has 4 free (evict on0), GPU1 has 5 free (keep both).
    assert sw.eviction_for("both", ["also1", "on0", "on1"]) == ["on0"]
    gpu.use("also1", 3, device=1, at=3)
    assert sw.eviction_for("both", ["also1", "on0", "on1"]) == ["on0", "on1"]


def test_memory_devices_from_cuda_visible_devices() -> None:
    """Without a devices key, CUDA_VISIBLE_DEVICES in env says which device a model uses."""
    gpu = FakeGpu(10, 10)
    gpu.use("a", 8, device=0)
    sw = swapper(gpu, model("a", 8, [0]), model("b", 8, env=["CUDA_VISIBLE_DEVICES=1"]))
    assert sw.eviction_for("b", ["a"]) == []
    need = resolve_need(sw.models["b"], ModelMemory(), [0, 1])
    assert need.devices == (1,) and need.per_device == {1: 8 * GIB}


def test_memory_unknown_need_takes_the_whole_device() -> None:
    """A target with no figure evicts every model on its devices; a running one blocks all."""
    gpu = FakeGpu(10, 10)
    gpu.use("a", 1, device=0, at=1)
    gpu.use("b", 1, device=1, at=2)
    sw = swapper(gpu, model("a", 1, [0]), model("b", 1, [1]), model("u", devices=[0]),
                 model("c", 1, [0]))
    assert sw.eviction_for("u", ["a", "b"]) == ["a"]
    assert "needs the whole GPU0 (its memory is unknown)" in sw.plan("u", ["a", "b"]).describe()
    # u is loading with an unknown need: it holds GPU0 whole, so c must evict it.
    assert sw.eviction_for("c", ["b", "u"]) == ["u"]


def test_memory_loading_model_reserves_what_it_still_needs() -> None:
    """A running model that holds less than its need still counts its whole need."""
    gpu = FakeGpu(10)
    gpu.use("loading", 1, at=5)
    sw = swapper(gpu, model("loading", 6), model("t", 5))
    assert sw.eviction_for("t", ["loading"]) == ["loading"]
    gpu.use("loading", 0, at=5)
    assert sw.eviction_for("t", ["loading"]) == ["loading"]
    assert sw.eviction_for("small", ["loading"]) == ["loading"]  # unknown need: whole device


def test_memory_stopped_since_sample_counts_as_free() -> None:
    """Memory a model held at the sample is free again once it is no longer running."""
    gpu = FakeGpu(10)
    gpu.use("gone", 8, at=1)
    sw = swapper(gpu, model("gone", 8), model("t", 8))
    assert sw.eviction_for("t", []) == []


def test_memory_precedence_config_measured_estimate_unknown() -> None:
    """Need: the memory key, else the measured figure, else the GGUF estimate, else unknown."""
    figures = ModelMemory(measured={0: 3 * GIB}, estimate=5 * GIB)
    assert resolve_need(model("a", 2), figures, [0]).source == "config"
    assert resolve_need(model("a", 2), figures, [0]).per_device == {0: 2 * GIB}
    need = resolve_need(model("a"), figures, [0])
    assert (need.source, need.per_device) == ("measured", {0: 3 * GIB})
    need = resolve_need(model("a"), ModelMemory(estimate=5 * GIB), [0, 1])
    assert (need.source, need.per_device) == ("estimate", {0: int(2.5 * GIB), 1: int(2.5 * GIB)})
    need = resolve_need(model("a"), ModelMemory(), [0])
    assert (need.source, need.per_device, need.devices) == ("unknown", None, (0,))


def test_memory_estimate_vs_measured_changes_the_decision() -> None:
    """A pessimistic estimate evicts; once the model was measured smaller it stays."""
    gpu = FakeGpu(10)
    gpu.use("a", 4, at=1)
    gpu.estimates["t"] = 7 * GIB
    sw = swapper(gpu, model("a", 4), model("t"))
    assert sw.eviction_for("t", ["a"]) == ["a"]
    gpu.measured["t"] = {0: 5 * GIB}
    assert sw.eviction_for("t", ["a"]) == []


def test_memory_without_devices_evicts_all_but_persistent() -> None:
    """No GPU figures: one model at a time, as the default group router, persistent kept."""
    sw = MemorySwapper({"a": model("a"), "b": model("b"), "p": model("p")}, None,
                       persistent=["p"])
    assert sw.eviction_for("a", ["b", "p"]) == ["b"]
    assert sw.plan("a", ["b", "p"]).describe() == (
        "a: no GPU memory figures (GPU memory has not been sampled yet); "
        "evicting b (last used just now)")


def test_memory_swap_log_line_says_why() -> None:
    """on_swap_start logs the need, the free memory and each eviction's age and size."""
    gpu = FakeGpu(8)
    gpu.use("qwen-7b", 5.2, at=gpu.now - 240)
    lines: list[str] = []

    def observer(event: dict[str, object]) -> None:
        if event.get("log_namespace") == "test-memory" and event["log_level"] is LogLevel.info:
            lines.append(str(event["line"]))

    sw = MemorySwapper({"qwen-7b": model("qwen-7b", 5.2), "t": model("t", 6.1)}, gpu,
                       log=Logger(namespace="test-memory"))
    globalLogPublisher.addObserver(observer)
    try:
        sw.on_swap_start("t", ["qwen-7b"])
    finally:
        globalLogPublisher.removeObserver(observer)
    assert lines == ["t needs 6.1 GiB on GPU0 (config), 2.4 GiB free on GPU0; "
                     "evicting qwen-7b (last used 4 min ago, 5.2 GiB)"]


def test_memory_factory_settings() -> None:
    """margin takes a fraction or a percentage; pinned must name models."""
    models = {"a": model("a")}
    sw = builtin.memory.build(settings={"margin": "10%", "pinned": ["a"]}, models=models)
    assert isinstance(sw, MemorySwapper)
    assert sw.margin == pytest.approx(0.1) and sw.persistent == {"a"}
    with pytest.raises(ValueError, match=r"routing.router.settings.margin: expected"):
        builtin.memory.build(settings={"margin": "lots"}, models=models)
    with pytest.raises(ValueError, match=r"routing.router.settings.pinned: 'z' is not a model"):
        builtin.memory.build(settings={"pinned": ["z"]}, models=models)


# The swapper driving the FIFO scheduler: the decisions a user sees.

def fifo(gpu: FakeGpu, *models: ModelConfig) -> tuple[FIFOScheduler, RecordingEffects]:
    """A FIFO scheduler over fake effects using a MemorySwapper on ``gpu``."""
    eff = RecordingEffects({m.id: ProcessState.STOPPED for m in models})
    return FIFOScheduler("test", swapper(gpu, *models), eff), eff


def finish(s: FIFOScheduler, eff: RecordingEffects, gpu: FakeGpu, target: str, gib: float) -> None:
    """Complete the last swap for ``target``: evicted ones stop, target holds ``gib``."""
    start = [x for x in eff.starts if x.model == target][-1]
    for gone in start.evict:
        eff.states[gone] = ProcessState.STOPPED
        gpu.stop(gone)
    eff.states[target] = ProcessState.READY
    gpu.use(target, gib, at=gpu.now)
    s.on_swap_done(SwapDone(target))


def test_memory_fifo_models_that_fit_load_in_parallel() -> None:
    """Two models that fit together start at once, without waiting for each other."""
    gpu = FakeGpu(10)
    s, eff = fifo(gpu, model("a", 4), model("b", 4))
    s.on_request(HandlerRequest("a"))
    s.on_request(HandlerRequest("b"))
    assert [(x.model, list(x.evict)) for x in eff.starts] == [("a", []), ("b", [])]


def test_memory_fifo_evicts_lru_after_serving() -> None:
    """A third model that does not fit waits for nothing but the LRU model's eviction."""
    gpu = FakeGpu(10)
    s, eff = fifo(gpu, model("a", 4), model("b", 4), model("c", 4))
    for name in ("a", "b"):
        r = HandlerRequest(name)
        s.on_request(r)
        gpu.now += 10
        finish(s, eff, gpu, name, 4)
        s.on_serve_done(ServeDone(name))
    s.on_request(HandlerRequest("c"))
    assert (eff.starts[-1].model, list(eff.starts[-1].evict)) == ("c", ["a"])


def test_memory_fifo_never_fits_ends_the_request() -> None:
    """The scheduler answers a never-fitting model with the swapper's error, no swap."""
    gpu = FakeGpu(8)
    s, eff = fifo(gpu, model("huge", 20))
    s.on_request(HandlerRequest("huge"))
    [grant] = eff.grants
    assert isinstance(grant.error, InsufficientMemory)
    assert eff.starts == []


def test_memory_fifo_keeps_the_scheduler_contract() -> None:
    """fifo over the memory swapper passes the reusable contract checks (a, b fit; c alone)."""
    from llamaswap.testing.contract import check_scheduler

    gpu = FakeGpu(10)
    models = (model("a", 4), model("b", 4), model("c", 8))
    check_scheduler(lambda eff: FIFOScheduler("t", swapper(gpu, *models), eff), ["a", "b", "c"],
                    random_runs=50)


def test_memory_running_target_does_not_read_the_snapshot() -> None:
    """A request for a loaded model costs no snapshot (every request to it asks)."""
    calls: list[int] = []

    def provider() -> MemorySnapshot:
        calls.append(1)
        return MemorySnapshot()

    sw = MemorySwapper({"a": model("a", 1)}, provider)
    assert sw.eviction_for("a", ["a", "b"]) == []
    assert calls == []
