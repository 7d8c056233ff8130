"""The GPU memory probe (fake NVML, fake /proc) and the watch (task.Clock, inline thread)."""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from llamaswap.config.model import MemoryNeed, ModelConfig
from llamaswap.memory import GIB, DeviceMemory
from llamaswap.process.memprobe import NvmlProbe, ProbeSample, attribute_pids
from llamaswap.process.memwatch import MemoryWatch
from llamaswap.process.state import ProcessState


def write_proc(root: str, parents: Mapping[int, int]) -> None:
    """A fake /proc: ``<pid>/stat`` with the parent pid in its fourth field."""
    for pid, parent in parents.items():
        os.makedirs(os.path.join(root, str(pid)), exist_ok=True)
        with open(os.path.join(root, str(pid), "stat"), "w") as f:
            f.write(f"{pid} (some (odd) name) S {parent} {pid} {pid} 0\n")


def test_probe_attributes_pids_through_the_process_tree(tmp_path: Any) -> None:
    """A pid belongs to the model whose launcher is the pid itself or an ancestor."""
    write_proc(str(tmp_path), {100: 1, 101: 100, 102: 101, 200: 1, 300: 1})
    found = attribute_pids([102, 101, 200, 300, 999], {"a": 100, "b": 200}, str(tmp_path))
    assert found == {102: "a", 101: "a", 200: "b"}


def fake_nvml(devices: list[tuple[int, int, list[tuple[int, int | None]]]]) -> types.ModuleType:
    """pynvml's names over (total, free, [(pid, used)]) per device."""
    mod = types.ModuleType("pynvml")
    mod.calls = []  # type: ignore[attr-defined]
    mod.nvmlInit = lambda: mod.calls.append("init")  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: mod.calls.append("shutdown")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=devices[h][0], free=devices[h][1], used=devices[h][0] - devices[h][1])
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        types.SimpleNamespace(pid=p, usedGpuMemory=u) for p, u in devices[h][2]]

    def no_graphics(h: int) -> list[Any]:
        raise RuntimeError("not supported")

    mod.nvmlDeviceGetGraphicsRunningProcesses = no_graphics  # type: ignore[attr-defined]
    return mod


def test_nvml_probe_sums_a_model_tree_per_device(tmp_path: Any) -> None:
    """Devices' total/free and each model's processes summed per device; unknown pids ignored."""
    write_proc(str(tmp_path), {100: 1, 101: 100, 102: 100, 500: 1})
    nvml = fake_nvml([
        (10 * GIB, 4 * GIB, [(101, 3 * GIB), (102, 1 * GIB), (500, 2 * GIB)]),
        (8 * GIB, 6 * GIB, [(101, 2 * GIB), (102, None)]),
    ])
    probe = NvmlProbe(lambda: nvml, proc_root=str(tmp_path))
    sample = probe.sample({"a": 100})
    assert sample.devices == {0: DeviceMemory(10 * GIB, 4 * GIB), 1: DeviceMemory(8 * GIB, 6 * GIB)}
    assert sample.usage == {"a": {0: 4 * GIB, 1: 2 * GIB}}
    probe.close()
    assert nvml.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_nvml_probe_without_nvml_says_why() -> None:
    """No pynvml, or no GPU: no devices, and the reason, every time."""

    def missing() -> types.ModuleType:
        raise ImportError("No module named 'pynvml'")

    probe = NvmlProbe(missing)
    assert probe.sample({}).unavailable == (
        "pynvml (nvidia-ml-py) is not importable: No module named 'pynvml'")
    assert probe.sample({}).devices == {}
    assert NvmlProbe(lambda: fake_nvml([])).sample({}).unavailable == "NVML found no NVIDIA GPU"


class FakeUpstream:
    """The parts of Upstream the watch reads: pid, state, in_flight, last_use, listeners."""

    def __init__(self, model_id: str, pid: int) -> None:
        self.model = ModelConfig(id=model_id, memory=MemoryNeed())
        self.pid: int | None = pid
        self.state = ProcessState.STOPPED
        self.in_flight = 0
        self.last_use = 0.0
        self.listeners: list[Callable[[str, ProcessState, ProcessState], None]] = []

    def add_state_listener(self, cb: Callable[[str, ProcessState, ProcessState], None]
                           ) -> Callable[[], None]:
        """Register ``cb``."""
        self.listeners.append(cb)
        return lambda: self.listeners.remove(cb)

    def become(self, state: ProcessState) -> None:
        """Change state and tell the listeners."""
        old, self.state = self.state, state
        for cb in list(self.listeners):
            cb(self.model.id, old, state)


class ScriptedProbe:
    """Returns the sample the test set; counts calls."""

    def __init__(self) -> None:
        self.next = ProbeSample()
        self.roots: list[Mapping[str, int]] = []
        self.closed = False

    def sample(self, roots: Mapping[str, int]) -> ProbeSample:
        """The scripted sample."""
        self.roots.append(dict(roots))
        return self.next

    def close(self) -> None:
        """Remember it was closed."""
        self.closed = True


def inline(fn: Callable[[], Any]) -> Deferred[Any]:
    """Run ``fn`` at once (the thread runner, in tests)."""
    return maybeDeferred(fn)


def watch_over(*upstreams: FakeUpstream) -> tuple[MemoryWatch, ScriptedProbe, Clock]:
    """A started watch over ``upstreams`` with a scripted probe and a Clock."""
    clock = Clock()
    clock.advance(1000)
    probe = ScriptedProbe()
    watch = MemoryWatch({u.model.id: u for u in upstreams}, clock=clock, run_in_thread=inline,
                        probe=probe, every=2.0)
    watch.start()
    return watch, probe, clock


def test_watch_measures_the_peak_while_ready_and_tells_listeners() -> None:
    """Ready models' usage becomes their measured figure (the most seen in this ready period)."""
    a = FakeUpstream("a", 100)
    watch, probe, clock = watch_over(a)
    told: list[tuple[str, dict[int, int]]] = []
    watch.measured_listeners.append(lambda m, f: told.append((m, f)))
    probe.next = ProbeSample(devices={0: DeviceMemory(10, 6)}, usage={"a": {0: 3}})
    clock.advance(2)
    assert watch.measured == {}  # starting/stopped: not measured
    a.become(ProcessState.READY)
    assert watch.measured == {"a": {0: 3}}
    probe.next = ProbeSample(devices={0: DeviceMemory(10, 4)}, usage={"a": {0: 4}})
    clock.advance(2)
    probe.next = ProbeSample(devices={0: DeviceMemory(10, 5)}, usage={"a": {0: 2}})
    clock.advance(2)
    assert watch.measured == {"a": {0: 4}}
    assert told == [("a", {0: 3}), ("a", {0: 4})]
    assert probe.roots[-1] == {"a": 100}


def test_watch_snapshot_last_used_and_views() -> None:
    """last_used: now while busy, else the later of the last request's end and becoming ready."""
    a = FakeUpstream("a", 100)
    watch, probe, clock = watch_over(a)
    probe.next = ProbeSample(devices={0: DeviceMemory(10 * GIB, 6 * GIB)},
                             usage={"a": {0: 4 * GIB}})
    a.become(ProcessState.READY)
    assert watch.snapshot().model("a").last_used == 1000
    a.last_use = 1001
    clock.advance(5)
    assert watch.snapshot().model("a").last_used == 1001
    a.in_flight = 1
    assert watch.snapshot().model("a").last_used == 1005
    assert watch.snapshot().devices == {0: DeviceMemory(10 * GIB, 6 * GIB)}
    assert watch.model_view("a", a.model) == {
        "used": {"0": 4 * GIB}, "measured": {"0": 4 * GIB}, "estimate": None,
        "expected": 4 * GIB, "expected_source": "measured", "devices": [0]}
    assert watch.gpus_view() == [{"id": 0, "total": 10 * GIB, "free": 6 * GIB}]


def test_watch_without_devices_stops_polling_and_closes() -> None:
    """No GPU: the periodic sampling stops after the first answer; stop closes the probe."""
    a = FakeUpstream("a", 100)
    watch, probe, clock = watch_over(a)
    probe.next = ProbeSample(unavailable="NVML found no NVIDIA GPU")
    clock.advance(2)
    calls = len(probe.roots)
    clock.advance(10)
    assert len(probe.roots) == calls
    assert watch.snapshot().unavailable == "NVML found no NVIDIA GPU"
    a.become(ProcessState.READY)  # a state change still asks once
    assert len(probe.roots) == calls + 1
    watch.stop()
    assert probe.closed and a.listeners == []


def test_watch_carries_figures_over_a_reload() -> None:
    """The watch of a reloaded App starts with the previous one's measured figures."""
    a = FakeUpstream("a", 100)
    old, probe, clock = watch_over(a)
    probe.next = ProbeSample(devices={0: DeviceMemory(10, 6)}, usage={"a": {0: 3}})
    a.become(ProcessState.READY)
    new = MemoryWatch({"a": a}, clock=clock, run_in_thread=inline, probe=ScriptedProbe(),
                      previous=old)
    assert new.measured == {"a": {0: 3}}


def test_watch_remember_fills_only_what_this_run_did_not_measure() -> None:
    """Remembered figures count for models not measured yet, and only for this App's models."""
    a, b = FakeUpstream("a", 100), FakeUpstream("b", 200)
    watch, probe, _ = watch_over(a, b)
    probe.next = ProbeSample(devices={0: DeviceMemory(10, 6)}, usage={"a": {0: 3}})
    a.become(ProcessState.READY)
    watch.remember({"a": {0: 9}, "b": {0: 2}, "gone": {0: 1}})
    assert watch.measured == {"a": {0: 3}, "b": {0: 2}}


def test_watch_estimates_each_command_once_started() -> None:
    """At start every model's cmd is estimated in the thread; failures are skipped."""
    a, b, c = FakeUpstream("a", 100), FakeUpstream("b", 200), FakeUpstream("c", 300)
    a.model = ModelConfig(id="a", cmd="serve -m a.gguf")
    c.model = ModelConfig(id="c", cmd="serve -m broken.gguf")

    def estimate(cmd: str) -> int | None:
        if "broken" in cmd:
            raise ValueError("not a GGUF file")
        return 5 * GIB if "a.gguf" in cmd else None

    watch = MemoryWatch({"a": a, "b": b, "c": c}, clock=Clock(), run_in_thread=inline,
                        probe=ScriptedProbe(), estimate=estimate)
    watch.start()
    assert watch.estimates == {"a": 5 * GIB}
    assert watch.snapshot().model("a").estimate == 5 * GIB
    watch.stop()
