"""``GET /api/hardware``: what is detected, from where, and what a failed detection answers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from llamaswap.config import load_config_text
from llamaswap.observe.hardware import (
    DETECT_TIMEOUT,
    HardwareInfo,
    detect,
    parse_cpuinfo,
    parse_mem_total,
)
from llamaswap.service import LlamaSwapService
from llamaswap.testing.service import service_url

from .fakes import fake_nvml

CPUINFO = "".join(
    f"processor\t: {n}\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: {n // 4}\n"
    f"core id\t\t: {n % 2}\n\n"
    for n in range(8)
)


def test_cpuinfo_model_and_physical_cores() -> None:
    """The model name and distinct (package, core) pairs: 8 threads, 2 packages x 2 cores."""
    assert parse_cpuinfo(CPUINFO) == ("AMD EPYC 7763 64-Core Processor", 4)
    assert parse_cpuinfo("processor : 0\nHardware : BCM2835\n") == ("BCM2835", None)


def test_mem_total_in_bytes() -> None:
    """MemTotal is read in kB and reported in bytes."""
    assert parse_mem_total("MemTotal:       16384 kB\nMemFree: 1 kB\n") == 16384 * 1024
    assert parse_mem_total("nothing here\n") is None


def _host(tmp_path: Path) -> dict[str, str]:
    """A fake /proc, /etc and / for detect()."""
    proc, etc, root = tmp_path / "proc", tmp_path / "etc", tmp_path / "root"
    for d in (proc, etc, root):
        d.mkdir()
    (proc / "cpuinfo").write_text(CPUINFO)
    (proc / "meminfo").write_text("MemTotal:       32768 kB\n")
    (etc / "os-release").write_text('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    (root / ".dockerenv").write_text("")
    return {"proc": str(proc), "etc": str(etc), "root": str(root)}


def _nvml() -> ModuleType:
    """A fake NVML with two H100s, a driver and a CUDA version."""
    mod = fake_nvml([
        {"name": b"NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "used": 1, "total": 85520809984},
        {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-2", "used": 1, "total": 85520809984},
    ])
    mod.nvmlSystemGetDriverVersion = lambda: "550.54.15"  # type: ignore[attr-defined]
    mod.nvmlSystemGetCudaDriverVersion = lambda: 12040  # type: ignore[attr-defined]
    return mod


def test_detect_reports_llama_swap_shape(tmp_path: Path) -> None:
    """schema_version 1: capture, architecture, OS, environment, cpu, memory, accelerators."""
    nvml = _nvml()
    snap = detect(now=0.0, version="9.9", nvml_loader=lambda: nvml, **_host(tmp_path))
    assert snap["schema_version"] == 1 and snap["captured_at"] == "1970-01-01T00:00:00Z"
    assert snap["capture"] == {"scope": "inference_host", "method": "detected",
                               "detector": {"name": "llamaswap", "version": "9.9"}}
    assert snap["operating_system"]["distribution"] == "Debian GNU/Linux 12 (bookworm)"
    assert snap["environment"]["container"] == "docker"
    assert snap["cpu"] == {"model": "AMD EPYC 7763 64-Core Processor",
                           "logical_cores": os.cpu_count(), "physical_cores": 4}
    assert snap["memory"] == {"capacity_bytes": 32768 * 1024}
    assert snap["accelerators"] == [
        {"vendor": "nvidia", "index": i, "name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{i + 1}",
         "memory_bytes": 85520809984, "driver_version": "550.54.15", "cuda_version": "12.4"}
        for i in (0, 1)
    ]
    assert snap["notes"] == []
    assert nvml.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_no_gpu_is_an_empty_list_with_a_note(tmp_path: Path) -> None:
    """Without NVML (no driver) or without pynvml: no accelerators, and a note saying why."""
    host = _host(tmp_path)
    broken = fake_nvml([], init_error="NVML Shared Library Not Found")
    snap = detect(now=0.0, version="1", nvml_loader=lambda: broken, **host)
    assert snap["accelerators"] == []
    assert snap["notes"] == ["NVML: NVML Shared Library Not Found"]

    def missing() -> ModuleType:
        raise ImportError("No module named 'pynvml'")

    snap = detect(now=0.0, version="1", nvml_loader=missing, **host)
    assert snap["accelerators"] == [] and "pynvml is not installed" in snap["notes"][0]


def test_detection_that_hangs_gives_up_after_the_timeout() -> None:
    """A detection still running after 10 s is abandoned with a warning; the answer is 503."""
    clock = Clock()
    info = HardwareInfo()
    stuck: Deferred[Any] = Deferred()
    with capturedLogs() as events:
        info.start(clock, lambda *a, **k: stuck, version="1")
        clock.advance(DETECT_TIMEOUT - 0.1)
        assert info.error is None
        clock.advance(0.1)
    assert info.snapshot is None and info.error
    assert [formatEvent(e) for e in events] == [f"hardware detection failed: {info.error}"]


def test_detection_result_is_kept() -> None:
    """A detection that returns is what the endpoint serves."""
    info = HardwareInfo()
    info.start(Clock(), lambda *a, **k: succeed({"schema_version": 1}), version="1")
    assert info.snapshot == {"schema_version": 1} and info.error is None


@pytest_twisted.ensureDeferred
async def test_api_hardware_from_the_running_service(tmp_path: Path) -> None:
    """The real service detects this host once and serves it; a reload keeps the snapshot."""
    svc = LlamaSwapService(
        config_path=None, config=load_config_text("models: {}\n"),
        listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
    )
    svc.startService()
    try:
        assert svc.hardware.finished is not None
        await svc.hardware.finished
        url = service_url(svc) + "/api/hardware"
        resp = await treq.get(url)
        assert resp.code == 200
        body = json.loads(await resp.content())
        assert body["cpu"]["logical_cores"] == os.cpu_count()
        assert body["memory"]["capacity_bytes"] > 0
        assert isinstance(body["accelerators"], list)
        assert body == svc.hardware.snapshot
    finally:
        await svc.stopService()
