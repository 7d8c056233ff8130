"""Probing GPU memory: each device's free/total and what each model's process tree holds.

Every call here blocks (NVML, /proc): ``MemoryWatch`` runs them in a thread. A probe is
anything with ``sample(roots)`` and ``close()``; ``NvmlProbe`` is the real one, and
``llamaswap.testing.fakegpu.FakeGpuProbe`` a fake for tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, Protocol

import attrs

from llamaswap.memory import DeviceMemory
from llamaswap.observe.gpu import load_nvml

__all__ = ["MemoryProbe", "NvmlProbe", "ProbeSample", "attribute_pids"]

MAX_DEPTH = 64


@attrs.frozen
class ProbeSample:
    """Devices (none: ``unavailable`` says why) and bytes per device per model."""

    devices: Mapping[int, DeviceMemory] = attrs.field(factory=dict)
    usage: Mapping[str, Mapping[int, int]] = attrs.field(factory=dict)
    unavailable: str | None = None


class MemoryProbe(Protocol):
    """What MemoryWatch samples through (blocking calls, made in a thread)."""

    def sample(self, roots: Mapping[str, int]) -> ProbeSample:
        """Devices now, and per model (``roots``: model id -> its launcher pid) its usage."""

    def close(self) -> None:
        """Release what ``sample`` opened."""


def _parent(pid: int, proc_root: str) -> int | None:
    """The parent pid from ``/proc/<pid>/stat``, or None when the process is gone."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def attribute_pids(pids: Iterable[int], roots: Mapping[str, int],
                   proc_root: str = "/proc") -> dict[int, str]:
    """Which model each pid belongs to: the model whose root is the pid or an ancestor."""
    owner = {pid: model for model, pid in roots.items()}
    out: dict[int, str] = {}
    for pid in pids:
        current: int | None = pid
        for _ in range(MAX_DEPTH):
            if current is None or current <= 1:
                break
            if current in owner:
                out[pid] = owner[current]
                break
            current = _parent(current, proc_root)
    return out


class NvmlProbe:
    """Samples NVML: memory info per device, compute and graphics processes' used memory."""

    def __init__(self, nvml_loader: Callable[[], ModuleType] = load_nvml,
                 proc_root: str = "/proc") -> None:
        """``nvml_loader`` returns a pynvml-like module (tests pass a fake)."""
        self._loader = nvml_loader
        self._proc_root = proc_root
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        self._unavailable: str | None = None

    def _open(self) -> None:
        try:
            nvml = self._loader()
        except ImportError as error:
            self._unavailable = f"pynvml (nvidia-ml-py) is not importable: {error}"
            return
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            handles = [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        except Exception as error:  # NVMLError: no driver, no library
            self._unavailable = f"NVML could not be initialised: {error}"
            return
        if not handles:
            self._unavailable = "NVML found no NVIDIA GPU"
            return
        self._nvml, self._handles = nvml, handles

    def sample(self, roots: Mapping[str, int]) -> ProbeSample:
        """One sample; after NVML failed to open once, the reason every time."""
        if self._nvml is None and self._unavailable is None:
            self._open()
        if self._nvml is None:
            return ProbeSample(unavailable=self._unavailable)
        devices: dict[int, DeviceMemory] = {}
        held: dict[int, dict[int, int]] = {}  # pid -> device -> bytes
        for index, handle in self._handles:
            info = self._call("nvmlDeviceGetMemoryInfo", handle)
            if info is None:
                continue
            devices[index] = DeviceMemory(total=int(info.total), free=int(info.free))
            for name in ("nvmlDeviceGetComputeRunningProcesses",
                         "nvmlDeviceGetGraphicsRunningProcesses"):
                for proc in self._call(name, handle) or ():
                    used = getattr(proc, "usedGpuMemory", None)
                    if isinstance(used, int) and used > 0:
                        per = held.setdefault(int(proc.pid), {})
                        per[index] = max(per.get(index, 0), used)
        return ProbeSample(devices=devices, usage=sum_by_model(held, roots, self._proc_root))

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, name)(*args)
        except Exception:  # NVMLError, or a function this driver lacks
            return None

    def close(self) -> None:
        """Shut NVML down if it was opened."""
        if self._nvml is not None:
            self._call("nvmlShutdown")
            self._nvml = None


def sum_by_model(held: Mapping[int, Mapping[int, int]], roots: Mapping[str, int],
                 proc_root: str = "/proc") -> dict[str, dict[int, int]]:
    """Bytes per device per model, from bytes per device per pid."""
    out: dict[str, dict[int, int]] = {}
    for pid, model in attribute_pids(held, roots, proc_root).items():
        per = out.setdefault(model, {})
        for device, size in held[pid].items():
            per[device] = per.get(device, 0) + size
    return out
