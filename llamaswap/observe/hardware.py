"""What hardware llamaswap runs on (``GET /api/hardware``): detected once at start, in a thread."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Callable
from types import ModuleType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from llamaswap.observe.gpu import load_nvml

log = Logger(namespace="llamaswap")

SCHEMA_VERSION = 1
DETECT_TIMEOUT = 10.0  # seconds, as llama-swap


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> tuple[str, int | None]:
    """The CPU model name and the number of physical cores in ``/proc/cpuinfo`` text."""
    model = ""
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in [*text.splitlines(), ""]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not key:  # end of one processor's block
            if core:
                cores.add((physical, core))
            physical = core = ""
        elif key in ("model name", "Model", "cpu model", "Hardware") and not model:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
    return model, (len(cores) or None)


def parse_mem_total(text: str) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` text, in bytes."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def _memory_bytes(proc: str) -> int | None:
    total = parse_mem_total(_read(os.path.join(proc, "meminfo")))
    if total is not None:
        return total
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _os_release(etc: str) -> str:
    for line in _read(os.path.join(etc, "os-release")).splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return ""


def _container(root: str) -> str | None:
    if os.path.exists(os.path.join(root, ".dockerenv")):
        return "docker"
    if os.path.exists(os.path.join(root, "run", ".containerenv")):
        return "podman"
    return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def nvidia_accelerators(nvml: ModuleType) -> list[dict[str, Any]]:
    """Every GPU NVML sees: index, name, uuid, memory, driver and CUDA versions."""
    def call(name: str, *args: Any) -> Any:
        try:
            return getattr(nvml, name)(*args)
        except (nvml.NVMLError, AttributeError):
            return None

    nvml.nvmlInit()
    try:
        driver = call("nvmlSystemGetDriverVersion")
        cuda = call("nvmlSystemGetCudaDriverVersion")
        out = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name, uuid = call("nvmlDeviceGetName", handle), call("nvmlDeviceGetUUID", handle)
            memory = call("nvmlDeviceGetMemoryInfo", handle)
            out.append({
                "vendor": "nvidia",
                "index": index,
                "name": "" if name is None else _text(name),
                "uuid": "" if uuid is None else _text(uuid),
                "memory_bytes": None if memory is None else int(memory.total),
                "driver_version": None if driver is None else _text(driver),
                "cuda_version": None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
            })
        return out
    finally:
        call("nvmlShutdown")


def detect(
    *,
    now: float,
    version: str,
    nvml_loader: Callable[[], ModuleType] = load_nvml,
    proc: str = "/proc",
    etc: str = "/etc",
    root: str = "/",
) -> dict[str, Any]:
    """The hardware snapshot (blocking: file reads and NVML; run it in a thread)."""
    model, physical = parse_cpuinfo(_read(os.path.join(proc, "cpuinfo")))
    notes: list[str] = []
    try:
        accelerators = nvidia_accelerators(nvml_loader())
    except ImportError:
        accelerators = []
        notes.append("pynvml is not installed: NVIDIA GPUs are not detected")
    except Exception as error:  # NVML not loadable: no driver, no GPU
        accelerators = []
        notes.append(f"NVML: {error}")
    return {
        "schema_version": SCHEMA_VERSION,
        "captured_at": datetime.datetime.fromtimestamp(now, datetime.UTC)
        .isoformat(timespec="seconds").replace("+00:00", "Z"),
        "capture": {
            "scope": "inference_host",
            "method": "detected",
            "detector": {"name": "llamaswap", "version": version},
        },
        "architecture": platform.machine(),
        "operating_system": {
            "name": platform.system().lower(),
            "release": platform.release(),
            "distribution": _os_release(etc),
        },
        "environment": {"container": _container(root), "python": platform.python_version()},
        "cpu": {
            "model": model or platform.processor(),
            "logical_cores": os.cpu_count(),
            "physical_cores": physical,
        },
        "memory": {"capacity_bytes": _memory_bytes(proc)},
        "accelerators": accelerators,
        "notes": notes,
    }


class HardwareInfo:
    """The snapshot ``/api/hardware`` serves: pending, detected, or failed (then 503)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] | None = None
        self.error: str | None = None
        self.finished: Deferred[None] | None = None  # fires once detection ended either way

    def start(self, reactor: Any, run_in_thread: Callable[..., Deferred[Any]],
              version: str, **detect_kwargs: Any) -> Deferred[None]:
        """Detect in a thread, giving up after DETECT_TIMEOUT; failures only log a warning."""
        d = run_in_thread(detect, now=reactor.seconds(), version=version, **detect_kwargs)
        d.addTimeout(DETECT_TIMEOUT, reactor)

        def done(snapshot: dict[str, Any]) -> None:
            self.snapshot = snapshot

        def failed(failure: Any) -> None:
            self.error = failure.getErrorMessage() or failure.type.__name__
            log.warn("hardware detection failed: {why}", why=self.error)

        self.finished = d.addCallbacks(done, failed)
        return self.finished
