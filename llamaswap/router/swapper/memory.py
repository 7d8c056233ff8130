"""MemorySwapper: keep every model that fits in GPU memory, evict only what must go.

For a target that is not running, the swapper reads the latest ``MemorySnapshot`` and
works out, per device the target needs, what is available: NVML's free figure, minus
the margin, plus what models that stopped since the sample held, minus what running
models are still expected to take (a model that is loading holds less than it needs).
When the target's need does not fit, the least recently used running models on the
short devices are evicted, one at a time, until it does; then any of them that turn
out not to be needed are kept after all. Models in ``persistent`` groups and
``pinned`` models are never evicted. A model whose need is unknown needs its devices
whole (every other model on them is evicted), and a running one with unknown need holds
its devices whole. A need larger than a device minus the margin can never fit and is
refused with ``InsufficientMemory``. Without any device figures (no NVIDIA GPU, NVML
missing) every other model is evicted, as the default group router does.

Pure: a function of ``(target, running)``, the model configs and the snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from llamaswap.errors import InsufficientMemory
from llamaswap.interfaces import ISwapper
from llamaswap.memory import EMPTY_SNAPSHOT, MemorySnapshot, Need, format_size, resolve_need

__all__ = ["DEFAULT_MARGIN", "MemorySwapper", "SwapPlan", "persistent_models"]

DEFAULT_MARGIN = 0.05
_WHOLE = math.inf


@attrs.frozen
class Eviction:
    """One model the plan stops: when it was last used and what it frees, in bytes."""

    model: str
    last_used: float
    frees: float


@attrs.frozen
class SwapPlan:
    """Why a target can run after stopping ``evict`` (as figures and one log line)."""

    target: str
    need: Need | None
    available: Mapping[int, float]
    evict: tuple[str, ...]
    evictions: tuple[Eviction, ...] = ()
    now: float = 0.0
    note: str = ""

    def describe(self) -> str:
        """``a needs 6.1 GiB on GPU0, 2.3 GiB free; evicting b (last used 4 min ago, 5.2 GiB)``."""
        if self.need is None:
            head = f"{self.target}: {self.note}"
        elif self.need.per_device is None:
            gpus = ", ".join(f"GPU{d}" for d in self.need.devices)
            head = f"{self.target} needs the whole {gpus} (its memory is unknown)"
        else:
            needs = ", ".join(f"{format_size(b)} on GPU{d}"
                              for d, b in sorted(self.need.per_device.items()))
            free = ", ".join(f"{_size(self.available.get(d, 0))} free on GPU{d}"
                             for d in sorted(self.need.per_device))
            head = f"{self.target} needs {needs} ({self.need.source}), {free}"
        if not self.evictions:
            tail = "; nothing to evict"
        elif self.need is None:  # no figures: nothing to say about sizes
            tail = "; evicting " + ", ".join(
                f"{e.model} (last used {_ago(self.now - e.last_used)})" for e in self.evictions)
        else:
            tail = "; evicting " + ", ".join(
                f"{e.model} (last used {_ago(self.now - e.last_used)}, {_size(e.frees)})"
                for e in self.evictions)
        note = f"; {self.note}" if self.note and self.need is not None else ""
        return head + tail + note


def persistent_models(settings: Mapping[str, Any]) -> set[str]:
    """Members of ``persistent`` groups plus the ``pinned`` list of the router settings."""
    out = {str(m) for m in settings.get("pinned") or ()}
    for group in (settings.get("groups") or {}).values():
        if _get(group, "persistent"):
            out.update(str(m) for m in _get(group, "members") or ())
    return out


@implementer(ISwapper)
class MemorySwapper:
    """Evicts the least recently used models until the target fits in GPU memory."""

    def __init__(self, models: Mapping[str, Any],
                 memory: Callable[[], MemorySnapshot] | None = None, *,
                 persistent: Iterable[str] = (), margin: float = DEFAULT_MARGIN,
                 log: Logger | None = None) -> None:
        """``memory`` returns the latest snapshot; ``margin`` is a fraction of each device."""
        if not 0 <= margin < 1:
            raise ValueError(f"routing.router.settings.margin: must be in [0, 1), got {margin}")
        self.models = dict(models)
        self.memory = memory or (lambda: EMPTY_SNAPSHOT)
        self.persistent = frozenset(persistent)
        self.margin = margin
        self.log = log or Logger()

    def eviction_for(self, target: str, running: Sequence[str]) -> list[str]:
        """The running models to stop so that ``target`` fits; raises InsufficientMemory."""
        return list(self.plan(target, running).evict)

    def on_swap_start(self, target: str, running: Sequence[str]) -> None:
        """Log why each model is evicted (or that nothing had to be)."""
        try:
            line = self.plan(target, running).describe()
        except InsufficientMemory as error:
            line = error.message
        self.log.info("memory router: {line}", line=line)

    def plan(self, target: str, running: Sequence[str]) -> SwapPlan:
        """The whole decision for ``target`` against ``running``, with its figures."""
        if target in running:  # the hot path (every request to a loaded model): no snapshot
            return SwapPlan(target, None, {}, (), note="already running")
        snap = self.memory()
        others = [m for m in running if m != target]
        if not snap.devices:
            evict = [m for m in others if m not in self.persistent]
            why = snap.unavailable or "no GPU found"
            return SwapPlan(target, None, {}, tuple(evict),
                            tuple(Eviction(m, snap.model(m).last_used, 0) for m in evict),
                            now=snap.now, note=f"no GPU memory figures ({why})")
        return _Planner(self, snap, target, others).plan()

    def margin_of(self, total: int) -> int:
        """The bytes kept free on a device of ``total`` bytes."""
        return int(total * self.margin)


class _Planner:
    """One planning pass over a snapshot (the swapper stays stateless)."""

    def __init__(self, swapper: MemorySwapper, snap: MemorySnapshot, target: str,
                 others: list[str]) -> None:
        self.swapper = swapper
        self.snap = snap
        self.target = target
        self.others = others
        known = snap.devices.keys()
        self.needs = {m: resolve_need(swapper.models.get(m), snap.model(m), known)
                      for m in [target, *others]}

    def plan(self) -> SwapPlan:
        need = self.needs[self.target]
        self._check_never_fits(need)
        kept = set(self.others)
        if need.per_device is None:
            evict = [m for m in self._evictable(kept, need.devices)]
            return self._result(need, set(self.others), evict, "")
        short = self._short(need, kept)
        evicted: list[str] = []
        while short:
            candidates = self._evictable(kept, short)
            if not candidates:
                break
            kept.discard(candidates[0])
            evicted.append(candidates[0])
            short = self._short(need, kept)
        note = ""
        if short:
            note = (f"still short on {', '.join(f'GPU{d}' for d in short)} after evicting "
                    f"everything allowed{self._holders(kept, short)}; trying anyway")
        else:
            for m in sorted(evicted, key=self._last_used, reverse=True):
                if not self._short(need, kept | {m}):
                    kept.add(m)
            evicted = [m for m in evicted if m not in kept]
        return self._result(need, set(self.others), evicted, note)

    def _result(self, need: Need, before: set[str], evicted: Collection[str],
                note: str) -> SwapPlan:
        order = [m for m in self.others if m in evicted]
        by_lru = sorted(order, key=self._last_used)
        available = {d: self._available(d, before) for d in need.devices}
        evictions = tuple(
            Eviction(m, self._last_used(m), self._frees(m, need.devices)) for m in by_lru)
        return SwapPlan(self.target, need, available, tuple(order), evictions,
                        now=self.snap.now, note=note)

    def _check_never_fits(self, need: Need) -> None:
        for d, size in sorted((need.per_device or {}).items()):
            total = self.snap.devices[d].total
            room = total - self.swapper.margin_of(total)
            if size > room:
                raise InsufficientMemory(
                    f"{self.target} needs {format_size(size)} on GPU{d} ({need.source}), "
                    f"which has {format_size(total)} in all and {format_size(room)} after "
                    f"the {self.swapper.margin:.0%} margin: it can never be loaded there")

    def _evictable(self, kept: Collection[str], devices: Collection[int]) -> list[str]:
        """Kept models that may be evicted and touch ``devices``, least recently used first."""
        wanted = set(devices)
        found = [m for m in kept
                 if m not in self.swapper.persistent and wanted & self._touches(m)]
        return sorted(found, key=lambda m: (self._last_used(m), m))

    def _touches(self, model: str) -> set[int]:
        return set(self.needs[model].devices) | set(self.snap.model(model).usage)

    def _short(self, need: Need, kept: set[str]) -> list[int]:
        return [d for d, size in sorted((need.per_device or {}).items())
                if size > self._available(d, kept)]

    def _available(self, device: int, kept: Collection[str]) -> float:
        """Free on ``device`` if only ``kept`` (of the running models) stayed."""
        dev = self.snap.devices[device]
        free: float = dev.free - self.swapper.margin_of(dev.total)
        for model, figures in self.snap.models.items():
            if model not in kept:
                free += figures.usage.get(device, 0)  # gone since the sample, or evicted
        for model in kept:
            free -= self._still_to_take(model, device)
        return free

    def _still_to_take(self, model: str, device: int) -> float:
        """What a kept model is expected to take on ``device`` beyond what it held."""
        need = self.needs[model]
        if device not in need.devices:
            return 0
        held = self.snap.model(model).usage.get(device, 0)
        if need.per_device is None:
            return _WHOLE if model not in self.swapper.persistent else 0
        return max(0, need.per_device.get(device, 0) - held)

    def _frees(self, model: str, devices: Iterable[int]) -> float:
        """What evicting ``model`` gives back on ``devices``."""
        usage = self.snap.model(model).usage
        need = self.needs[model].per_device
        out = 0.0
        for d in devices:
            held = usage.get(d, 0)
            out += max(held, need.get(d, 0)) if need is not None else held
        return out

    def _last_used(self, model: str) -> float:
        figures = self.snap.models.get(model)
        return figures.last_used if figures is not None else math.inf

    def _holders(self, kept: Collection[str], short: Iterable[int]) -> str:
        held = [m for m in sorted(kept) if set(short) & self._touches(m)]
        return f" (kept: {', '.join(held)})" if held else ""


def _size(value: float) -> str:
    return "unknown" if math.isinf(value) else format_size(max(0.0, value))


def _ago(seconds: float) -> str:
    if math.isinf(seconds) or seconds < 1:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _get(group: Any, key: str) -> Any:
    return group.get(key) if isinstance(group, Mapping) else getattr(group, key, None)
