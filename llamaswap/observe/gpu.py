"""NVIDIA GPU figures through NVML (package nvidia-ml-py, module ``pynvml``); blocking calls."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import attrs

MIB = 1048576


@attrs.frozen
class GpuSample:
    """One GPU's figures at one time; a figure the driver does not report is None."""

    timestamp: float
    id: int
    name: str
    uuid: str
    temp_c: float | None = None
    vram_temp_c: float | None = None
    gpu_util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_mb: float | None = None
    mem_total_mb: float | None = None
    fan_speed_pct: float | None = None
    power_draw_w: float | None = None


def load_nvml(import_module: Callable[[str], ModuleType] = importlib.import_module) -> ModuleType:
    """Import ``pynvml``; ImportError means the library is not installed."""
    return import_module("pynvml")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlReader:
    """Samples every GPU NVML sees; ``open()`` must succeed before ``read()``."""

    def __init__(self, nvml: ModuleType) -> None:
        """Use the given ``pynvml``-like module (tests pass a fake)."""
        self._nvml = nvml
        self._handles: list[tuple[int, Any, str, str]] = []

    def open(self) -> int:
        """Initialise NVML and find the GPUs; returns how many (raises on NVML errors)."""
        nvml = self._nvml
        nvml.nvmlInit()
        self._handles = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = self._call("nvmlDeviceGetName", handle)
            uuid = self._call("nvmlDeviceGetUUID", handle)
            name = "" if name is None else _text(name)
            uuid = "" if uuid is None else _text(uuid)
            self._handles.append((index, handle, name, uuid))
        return len(self._handles)

    def close(self) -> None:
        """Shut NVML down (errors ignored)."""
        self._call("nvmlShutdown")

    def _call(self, name: str, *args: Any) -> Any:
        """``nvml.<name>(*args)``, or None when NVML reports an error."""
        try:
            return getattr(self._nvml, name)(*args)
        except self._nvml.NVMLError:
            return None

    def read(self, timestamp: float) -> list[GpuSample]:
        """One sample per GPU; any figure whose NVML call fails is None."""
        call = self._call
        out = []
        for index, h, name, uuid in self._handles:
            util = call("nvmlDeviceGetUtilizationRates", h)
            mem = call("nvmlDeviceGetMemoryInfo", h)
            power_mw = call("nvmlDeviceGetPowerUsage", h)
            out.append(
                GpuSample(
                    timestamp=timestamp,
                    id=index,
                    name=name,
                    uuid=uuid,
                    temp_c=call(
                        "nvmlDeviceGetTemperature",
                        h,
                        getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0),
                    ),
                    gpu_util_pct=None if util is None else float(util.gpu),
                    mem_util_pct=None if util is None else float(util.memory),
                    mem_used_mb=None if mem is None else mem.used / MIB,
                    mem_total_mb=None if mem is None else mem.total / MIB,
                    fan_speed_pct=call("nvmlDeviceGetFanSpeed", h),
                    power_draw_w=None if power_mw is None else power_mw / 1000.0,
                )
            )
        return out
