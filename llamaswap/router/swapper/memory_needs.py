"""What a model needs on which GPU: the precedence rules of the memory router (pure).

Need: the ``memory.gpu`` key, else what was measured the last time the model was ready,
else the GGUF estimate, else unknown (the whole device). Devices: the ``memory.devices``
key, else ``CUDA_VISIBLE_DEVICES`` in the model's ``env``, else the measured devices,
else every device.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import attrs

from llamaswap.memory import ModelMemory

__all__ = ["CONFIG", "ESTIMATE", "MEASURED", "UNKNOWN", "Need", "resolve_need"]

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
