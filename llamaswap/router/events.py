"""The events a scheduler receives: requests, swap completions, serve completions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs


@attrs.define(eq=False)
class HandlerRequest:
    """One client request waiting for a routing decision; compared by identity.

    ``on_position`` is told the request's 1-based queue position whenever it
    changes; ``metadata`` holds what the scheduler wants recorded with the
    request (e.g. ``fifo_priority``).
    """

    model: str
    on_position: Callable[[int], None] | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)

    def tell_position(self, position: int) -> None:
        """Report a queue position to whoever waits on this request."""
        if self.on_position is not None:
            self.on_position(position)


@attrs.frozen
class SwapDone:
    """A swap for ``model_id`` finished; ``error`` is set when it failed."""

    model_id: str
    error: Exception | None = None


@attrs.frozen
class ServeDone:
    """A granted request for ``model_id`` finished, however it ended."""

    model_id: str


def broadcast_positions(queue: Sequence[HandlerRequest]) -> None:
    """Tell every queued request its 1-based place in ``queue``."""
    for index, req in enumerate(queue):
        req.tell_position(index + 1)
