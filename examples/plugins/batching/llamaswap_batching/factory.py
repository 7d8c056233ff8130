"""The plugin object: an ISchedulerFactory instance named ``batching``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from llamaswap.interfaces import IEffects, IScheduler, ISchedulerFactory, ISwapper
from llamaswap_batching.scheduler import DEFAULT_MAX_SKIPS, BatchingScheduler


@implementer(ISchedulerFactory)
class BatchingSchedulerFactory:
    """Builds BatchingScheduler; settings: ``max_skips`` (int, default 8)."""

    name = "batching"
    description = "batch same-model requests; no request is overtaken more than max_skips times"

    def build(self, *, name: str, effects: IEffects, swapper: ISwapper,
              settings: Mapping[str, Any] | None = None,
              models: Mapping[str, Any] | None = None, **kwargs: Any) -> IScheduler:
        """A BatchingScheduler; each model's ``concurrency_limit`` (> 0) is its limit."""
        settings = settings or {}
        max_skips = int(settings.get("max_skips", DEFAULT_MAX_SKIPS))
        if max_skips < 0:
            raise ValueError(f"batching: max_skips must be >= 0, got {max_skips}")
        limits = {m: getattr(cfg, "concurrency_limit", 0) for m, cfg in (models or {}).items()}
        return BatchingScheduler(name, swapper, effects, max_skips=max_skips,
                                 limits={m: n for m, n in limits.items() if n > 0})


batching = BatchingSchedulerFactory()
