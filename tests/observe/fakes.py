"""Test doubles for the observability tests: a fake NVML module, a fake /proc tree, a LogBuffer."""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


def fake_nvml(gpus: list[dict[str, Any]], init_error: str | None = None) -> types.ModuleType:
    """A module with pynvml's names; each GPU dict gives figures, a missing key raises NVMLError."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    mod.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    calls: list[str] = []
    mod.calls = calls  # type: ignore[attr-defined]

    def get(h: int, key: str) -> Any:
        if key not in gpus[h]:
            raise FakeNVMLError(f"{key} not supported")
        return gpus[h][key]

    def init() -> None:
        calls.append("init")
        if init_error:
            raise FakeNVMLError(init_error)

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: get(h, "name")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUUID = lambda h: get(h, "uuid")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetTemperature = lambda h, s: get(h, "temp")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        gpu=get(h, "util"), memory=get(h, "mem_util")
    )
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        used=get(h, "used"), total=get(h, "total")
    )
    mod.nvmlDeviceGetPowerUsage = lambda h: get(h, "power_mw")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetFanSpeed = lambda h: get(h, "fan")  # type: ignore[attr-defined]
    return mod


def make_proc(root: str, cpu: list[tuple[int, int]], mem_total_kb: int = 8 * 1024 * 1024) -> None:
    """Write a fake /proc tree: per-core (busy, idle) jiffies, fixed memory, load and network."""
    os.makedirs(os.path.join(root, "net"), exist_ok=True)
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for i, (busy, idle) in enumerate(cpu):
        lines.append(f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0")
    with open(os.path.join(root, "stat"), "w") as f:
        f.write("\n".join(lines) + "\nintr 1 2 3\n")
    with open(os.path.join(root, "meminfo"), "w") as f:
        f.write(
            f"MemTotal:       {mem_total_kb} kB\nMemFree:        {mem_total_kb // 4} kB\n"
            f"MemAvailable:   {mem_total_kb // 2} kB\nSwapTotal:      1048576 kB\n"
            "SwapFree:        524288 kB\n"
        )
    with open(os.path.join(root, "loadavg"), "w") as f:
        f.write("0.50 1.25 2.00 1/100 1234\n")
    with open(os.path.join(root, "net", "dev"), "w") as f:
        f.write(
            "Inter-|   Receive  |  Transmit\n face |bytes packets|bytes\n"
            "    lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n"
            "  eth0: 3000 1 0 0 0 0 0 0 4000 2 0 0 0 0 0 0\n"
        )


class FakeLogBuffer:
    """Same API as llamaswap.process.logs.LogBuffer: write/history/subscribe."""

    def __init__(self, max_bytes: int = 100 * 1024) -> None:
        """Keep the last ``max_bytes``."""
        self._max = max_bytes
        self._data = b""
        self._subs: list[Callable[[bytes], None]] = []

    def write(self, data: bytes) -> None:
        """Append and notify subscribers."""
        self._data = (self._data + data)[-self._max :]
        for cb in list(self._subs):
            cb(data)

    def history(self) -> bytes:
        """The kept bytes."""
        return self._data

    def subscribe(self, cb: Callable[[bytes], None]) -> Callable[[], None]:
        """Add a subscriber; returns the unsubscribe function."""
        self._subs.append(cb)
        return lambda: self._subs.remove(cb) if cb in self._subs else None
