"""The built-in scheduler and swapper plugins: ``serial``, ``fifo``, ``group``, ``matrix``,
``memory``.

``twisted/plugins/llamaswap_plugin.py`` exposes these instances to
``getPlugins``. Importing this module is cheap: each factory imports its
implementation inside ``build``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from llamaswap.interfaces import IEffects, IScheduler, ISchedulerFactory, ISwapper, ISwapperFactory

__all__ = ["fifo", "group", "matrix", "memory", "serial"]


def _limits(models: Mapping[str, Any]) -> dict[str, int]:
    from llamaswap.router.scheduler.common import limits_from_models

    return limits_from_models(models)


@implementer(ISchedulerFactory)
class SerialSchedulerFactory:
    """Builds SerialScheduler: arrival order, one request at a time (the default)."""

    name = "serial"
    description = "strict arrival order, one request at a time, one model in memory (default)"

    def build(self, *, name: str, effects: IEffects, models: Mapping[str, Any] | None = None,
              log: Logger | None = None, **kwargs: Any) -> IScheduler:
        """A SerialScheduler with each model's concurrency limit; the swapper is unused."""
        from llamaswap.router.scheduler.serial import SerialScheduler

        return SerialScheduler(name, effects, limits=_limits(models or {}), log=log)


@implementer(ISchedulerFactory)
class FIFOSchedulerFactory:
    """Builds FIFOScheduler; settings: ``priority`` {model id: int}."""

    name = "fifo"
    description = "batch requests for loaded models, priority queue, parallel swaps (llama-swap)"

    def build(self, *, name: str, effects: IEffects, swapper: ISwapper,
              settings: Mapping[str, Any] | None = None,
              models: Mapping[str, Any] | None = None,
              log: Logger | None = None, **kwargs: Any) -> IScheduler:
        """A FIFOScheduler using ``settings["priority"]`` and the models' concurrency limits."""
        from llamaswap.router.scheduler.fifo import FIFOScheduler

        priority = {str(k): int(v) for k, v in ((settings or {}).get("priority") or {}).items()}
        return FIFOScheduler(name, swapper, effects, priority=priority,
                             limits=_limits(models or {}), log=log)


@implementer(ISwapperFactory)
class GroupSwapperFactory:
    """Builds GroupSwapper from ``settings["groups"]`` (SPEC 2.7)."""

    name = "group"
    description = "evict by group: swap, exclusive, persistent (default)"

    def build(self, *, settings: Mapping[str, Any] | None = None,
              models: Mapping[str, Any] | None = None, log: Logger | None = None,
              **kwargs: Any) -> ISwapper:
        """A GroupSwapper; raises ValueError for members that are not models."""
        from llamaswap.router.swapper.group import GroupSwapper

        return GroupSwapper((settings or {}).get("groups"), list(models or {}))


@implementer(ISwapperFactory)
class MatrixSwapperFactory:
    """Builds MatrixSwapper from ``settings["matrix"]`` (SPEC 2.8)."""

    name = "matrix"
    description = "evict the cheapest way to reach an allowed set of co-resident models"

    def build(self, *, settings: Mapping[str, Any] | None = None,
              models: Mapping[str, Any] | None = None, log: Logger | None = None,
              **kwargs: Any) -> ISwapper:
        """A MatrixSwapper; raises MatrixError (a ValueError) for a bad matrix."""
        matrix = (settings or {}).get("matrix")
        if matrix is None:
            raise ValueError("routing.router.use is 'matrix' but "
                             "routing.router.settings.matrix is not set")
        from llamaswap.router.swapper.matrix import MatrixSwapper

        return MatrixSwapper(matrix, list(models or {}), log=log)


@implementer(ISwapperFactory)
class MemorySwapperFactory:
    """Builds MemorySwapper from the ``memory`` snapshot provider the Router passes.

    Settings: ``margin`` (a fraction like 0.05 or a percentage like "5%" of each device
    kept free) and ``pinned`` (model ids never evicted, like members of persistent groups).
    """

    name = "memory"
    description = "keep every model that fits in GPU memory; evict the least recently used"

    def build(self, *, settings: Mapping[str, Any] | None = None,
              models: Mapping[str, Any] | None = None, log: Logger | None = None,
              memory: Callable[[], Any] | None = None, **kwargs: Any) -> ISwapper:
        """A MemorySwapper; raises ValueError for a bad margin or an unknown pinned model."""
        from llamaswap.router.swapper.memory import (
            DEFAULT_MARGIN,
            MemorySwapper,
            persistent_models,
        )

        settings = settings or {}
        models = models or {}
        from llamaswap.memory import parse_margin

        margin = parse_margin(settings.get("margin", DEFAULT_MARGIN))
        for model_id in settings.get("pinned") or ():
            if model_id not in models:
                raise ValueError(f"routing.router.settings.pinned: {model_id!r} is not a model")
        return MemorySwapper(models, memory, persistent=persistent_models(settings),
                             margin=margin, log=log)


serial = SerialSchedulerFactory()
fifo = FIFOSchedulerFactory()
group = GroupSwapperFactory()
matrix = MatrixSwapperFactory()
memory = MemorySwapperFactory()
