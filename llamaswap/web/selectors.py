"""Selector strategies (SPEC 5.2): which target a selector ID sends a request to.

``warm`` and ``pin`` look only at process states. ``spillover`` also counts, per
selector and target, the requests currently routed there; the caller holds a
count until its request ends and gives it back with the returned release callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from llamaswap.config.model import SelectorConfig
from llamaswap.errors import LlamaSwapError
from llamaswap.process.state import ProcessState

#: Returns the state of a local model, or None when the target is not a local model.
StateLookup = Callable[[str], "ProcessState | None"]

_ACTIVE_STATES = (ProcessState.READY, ProcessState.STARTING)
_SKIPPED_STATES = (ProcessState.STOPPING, ProcessState.SHUTDOWN)


class SelectorUnavailable(LlamaSwapError):
    """A selector's strategy found no target to send the request to."""

    status = 503


def _noop() -> None:
    """Release nothing."""


@attrs.define
class SelectorRuntime:
    """Spillover counters and round-robin positions, one set per running App."""

    counts: dict[tuple[str, str], int] = attrs.field(factory=dict)
    last_pick: dict[str, int] = attrs.field(factory=dict)

    def count(self, selector_id: str, target: str) -> int:
        """Requests currently routed through ``selector_id`` to ``target``."""
        return self.counts.get((selector_id, target), 0)

    def acquire(self, selector_id: str, target: str) -> Callable[[], None]:
        """Count one request on ``target``; return an idempotent callable that uncounts it."""
        key = (selector_id, target)
        self.counts[key] = self.counts.get(key, 0) + 1
        released = False

        def release() -> None:
            """Give the count back once."""
            nonlocal released
            if released:
                return
            released = True
            left = self.counts.get(key, 0) - 1
            if left > 0:
                self.counts[key] = left
            else:
                self.counts.pop(key, None)

        return release

    def choose(
        self, selector: SelectorConfig, state_of: StateLookup
    ) -> tuple[str, Callable[[], None]]:
        """The target for one request and the callable that ends its accounting.

        Raises SelectorUnavailable when no target can take it.
        """
        if selector.strategy == "pin":
            return selector.targets[0], _noop
        if selector.strategy == "warm":
            return choose_warm(selector.targets, state_of), _noop
        if selector.strategy == "spillover":
            target = self._choose_spillover(selector, state_of)
            return target, self.acquire(selector.id, target)
        raise SelectorUnavailable(
            f'selector "{selector.id}" has unknown strategy "{selector.strategy}"'
        )

    def _choose_spillover(self, selector: SelectorConfig, state_of: StateLookup) -> str:
        """Least-busy active target under the limit, else the first cold one."""
        active: list[int] = []
        cold: list[int] = []
        for index, target in enumerate(selector.targets):
            state = state_of(target)
            busy = self.count(selector.id, target) > 0
            if state is None:  # a peer target
                (active if busy else cold).append(index)
            elif state in _SKIPPED_STATES:
                continue
            elif state in _ACTIVE_STATES or busy:
                active.append(index)
            else:
                cold.append(index)
        if not active:
            if not cold:
                raise SelectorUnavailable(
                    f'selector "{selector.id}" has no available spillover targets'
                )
            return selector.targets[cold[0]]
        counts = {i: self.count(selector.id, selector.targets[i]) for i in active}
        least = min(counts.values())
        if least >= selector.spillover and cold:
            return selector.targets[cold[0]]
        tied = [i for i in active if counts[i] == least]
        return selector.targets[self._round_robin(selector.id, tied)]

    def _round_robin(self, selector_id: str, tied: Sequence[int]) -> int:
        """The first of ``tied`` after the last pick, wrapping around."""
        last = self.last_pick.get(selector_id, -1)
        pick = next((i for i in tied if i > last), tied[0])
        self.last_pick[selector_id] = pick
        return pick


def choose_warm(targets: Sequence[str], state_of: StateLookup) -> str:
    """First ready target, else first starting one, else the first target (cold start)."""
    for wanted in (ProcessState.READY, ProcessState.STARTING):
        for target in targets:
            if state_of(target) == wanted:
                return target
    return targets[0]
