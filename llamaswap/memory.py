"""GPU memory figures as swappers see them: one snapshot of devices and models (pure data).

The Router hands a swapper factory a ``memory`` keyword: a callable returning the latest
``MemorySnapshot``. Sizes are bytes; devices are NVML indexes; times are the reactor's
seconds. Nothing here does I/O.

What a model needs (``resolve_need``): the ``memory.gpu`` key, else what was measured the
last time the model was ready, else the GGUF estimate, else unknown (the whole device).
Which devices: the ``memory.devices`` key, else ``CUDA_VISIBLE_DEVICES`` in the model's
``env``, else the measured devices, else every device.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import attrs

__all__ = [
    "EMPTY_SNAPSHOT",
    "DeviceMemory",
    "MemorySnapshot",
    "ModelMemory",
    "Need",
    "format_size",
    "parse_margin",
    "parse_size",
    "resolve_need",
]

GIB = 1024**3
_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


@attrs.frozen
class DeviceMemory:
    """One GPU: its total memory and what NVML called free when sampled."""

    total: int
    free: int


@attrs.frozen
class ModelMemory:
    """What is known about one model's GPU memory.

    ``usage``: what its process tree held per device when the devices were sampled
    (empty when it was not running). ``measured``: per device, the most it held the
    last time it was ready (remembered across restarts), or None. ``estimate``: bytes
    in all from its GGUF file, or None. ``last_used``: when a request last ended on it
    (or when it became ready; the snapshot's ``now`` while requests are in flight).
    """

    usage: Mapping[int, int] = attrs.field(factory=dict)
    measured: Mapping[int, int] | None = None
    estimate: int | None = None
    last_used: float = 0.0


@attrs.frozen
class MemorySnapshot:
    """Devices and models at ``now``; no devices means no figures (``unavailable`` says why)."""

    now: float = 0.0
    devices: Mapping[int, DeviceMemory] = attrs.field(factory=dict)
    models: Mapping[str, ModelMemory] = attrs.field(factory=dict)
    unavailable: str | None = None

    def model(self, model_id: str) -> ModelMemory:
        """The figures of ``model_id`` (empty ones when nothing is known)."""
        return self.models.get(model_id) or _NOTHING


_NOTHING = ModelMemory()
EMPTY_SNAPSHOT = MemorySnapshot(unavailable="GPU memory has not been sampled yet")


def parse_size(value: object) -> int:
    """Bytes from an integer or a string like ``6GiB``, ``512 MiB``, ``6GB``, ``1.5G``.

    ``K``/``M``/``G``/``T`` alone and ``KiB``... are powers of 1024; ``KB``... of 1000.
    Raises ValueError saying what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 6GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected a size like 6GiB, 512MiB or 8GB, got {value!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_margin(value: object) -> float:
    """A margin as a fraction: ``0.05``, ``5%`` or ``"0.05"``; ValueError naming the key."""
    text = str(value).strip()
    try:
        margin = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        margin = -1.0
    if isinstance(value, bool) or not 0 <= margin < 1:
        raise ValueError("routing.router.settings.margin: expected a fraction in [0, 1) "
                         f"or a percentage like 5%, got {value!r}")
    return margin


def format_size(size: float) -> str:
    """``6.1 GiB``, ``512 MiB``: one decimal from GiB up."""
    if size >= GIB:
        return f"{size / GIB:.1f} GiB"
    return f"{size / 1024**2:.0f} MiB"


CONFIG = "config"
MEASURED = "measured"
ESTIMATE = "estimate"
UNKNOWN = "unknown"


@attrs.frozen
class Need:
    """Bytes per device (None: unknown, the whole device), the devices, and where from."""

    per_device: Mapping[int, int] | None
    devices: tuple[int, ...]
    source: str

    @property
    def total(self) -> int | None:
        """Bytes in all, or None when unknown."""
        return None if self.per_device is None else sum(self.per_device.values())


def resolve_need(model: Any, figures: ModelMemory, known: Collection[int]) -> Need:
    """The need of a model (its ModelConfig, or None) on the ``known`` devices."""
    config = getattr(model, "memory", None)
    devices = _devices(model, config, figures, known)
    gpu = getattr(config, "gpu", None)
    if gpu is not None:
        return Need(_spread(gpu, devices), devices, CONFIG)
    if figures.measured:
        measured = {d: b for d, b in figures.measured.items() if d in known}
        if measured:
            return Need(measured, tuple(sorted(set(devices) | set(measured))), MEASURED)
    if figures.estimate is not None:
        return Need(_spread(figures.estimate, devices), devices, ESTIMATE)
    return Need(None, devices, UNKNOWN)


def _devices(model: Any, config: Any, figures: ModelMemory,
             known: Collection[int]) -> tuple[int, ...]:
    for candidate in (
        tuple(getattr(config, "devices", ()) or ()),
        _cuda_visible(model),
        tuple(sorted(figures.measured or ())),
    ):
        found = tuple(d for d in candidate if d in known)
        if found:
            return found
    return tuple(sorted(known))


def _cuda_visible(model: Any) -> tuple[int, ...]:
    """The integer indexes in ``CUDA_VISIBLE_DEVICES`` of the model's env (UUIDs skipped)."""
    env_dict = getattr(model, "env_dict", None)
    value = env_dict().get("CUDA_VISIBLE_DEVICES", "") if env_dict is not None else ""
    return tuple(int(p) for p in value.split(",") if p.strip().isdigit())


def _spread(total: int, devices: tuple[int, ...]) -> dict[int, int]:
    """``total`` bytes spread evenly over ``devices``."""
    if not devices:
        return {}
    share = -(-total // len(devices))
    return {d: share for d in devices}
