"""Small helpers shared by the built-in schedulers (pure: no reactor, no processes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any

from llamaswap.errors import ConcurrencyLimitExceeded, ModelNotFound, ModelUnloaded
from llamaswap.interfaces import IEffects
from llamaswap.router.events import HandlerRequest

DEFAULT_CONCURRENCY_LIMIT = 10


def not_found(model: str) -> ModelNotFound:
    """The error for a model this router does not handle (SPEC 4.1)."""
    return ModelNotFound(f"no local server found for requested model {model}")


def unloaded(name: str) -> ModelUnloaded:
    """The error waiters of an unloaded model receive (SPEC 4.2)."""
    return ModelUnloaded(f"{name}: model unloaded")


def limits_from_models(models: Mapping[str, Any]) -> dict[str, int]:
    """Per-model concurrency limits: ``concurrency_limit`` when > 0, else 10 (SPEC 4.5)."""
    out: dict[str, int] = {}
    for model_id, model in models.items():
        limit = getattr(model, "concurrency_limit", 0) or 0
        out[model_id] = limit if limit > 0 else DEFAULT_CONCURRENCY_LIMIT
    return out


def limit_for(limits: Mapping[str, int], model: str) -> int:
    """The concurrency limit of ``model`` (10 when it has none)."""
    return limits.get(model, DEFAULT_CONCURRENCY_LIMIT)


def fail_queued(
    queued: Sequence[HandlerRequest], targets: Set[str], error: Exception, effects: IEffects
) -> list[HandlerRequest] | None:
    """Fail the queued requests for ``targets``; the remaining queue, or None if none failed."""
    kept: list[HandlerRequest] = []
    for req in queued:
        if req.model in targets:
            effects.grant_error(req, error)
        else:
            kept.append(req)
    return kept if len(kept) != len(queued) else None


def refuse_at_admission(
    effects: IEffects, req: HandlerRequest, held: int, limits: Mapping[str, int]
) -> bool:
    """Answer an unknown model (404) or one at its concurrency limit (429); True if refused.

    ``held`` is how many requests the scheduler already holds for ``req.model``.
    """
    if effects.model_state(req.model) is None:
        effects.grant_error(req, not_found(req.model))
        return True
    if held >= limit_for(limits, req.model):
        effects.grant_error(req, ConcurrencyLimitExceeded())
        return True
    return False
