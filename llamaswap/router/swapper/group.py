"""GroupSwapper: the eviction policy of the group router (SPEC 2.7, 4.3).

For a target T in group G, a running model R (R != T) in group H is evicted
when H is G and G swaps, or when H is another group, G is exclusive and H is
not persistent. Models in no group belong to ``(default)`` (swap, exclusive),
so with no groups configured one model runs at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from zope.interface import implementer

from llamaswap.config.model import GroupConfig
from llamaswap.interfaces import ISwapper

__all__ = ["DEFAULT_GROUP", "GroupSwapper", "groups_from_settings"]

DEFAULT_GROUP = "(default)"


def groups_from_settings(groups: Mapping[str, Any] | None,
                         model_ids: Iterable[str]) -> dict[str, GroupConfig]:
    """Normalise ``settings["groups"]`` and add the implicit ``(default)`` group.

    Accepts GroupConfig values or plain mappings (``swap``, ``exclusive``,
    ``persistent``, ``members``). Raises ValueError for a member that is no
    model or that appears in two groups.
    """
    ids = list(model_ids)
    known = set(ids)
    out: dict[str, GroupConfig] = {}
    owner: dict[str, str] = {}
    for group_id, raw in (groups or {}).items():
        group = raw if isinstance(raw, GroupConfig) else GroupConfig(
            id=group_id,
            swap=bool(raw.get("swap", True)),
            exclusive=bool(raw.get("exclusive", True)),
            persistent=bool(raw.get("persistent", False)),
            members=tuple(raw.get("members", ())),
        )
        for member in group.members:
            if member not in known:
                raise ValueError(f'creating group router: no model config for "{member}"')
            if member in owner and owner[member] != group_id:
                raise ValueError(f"model member {member} is used in multiple groups: "
                                 f"{owner[member]} and {group_id}")
            owner[member] = group_id
        out[group_id] = group
    orphans = sorted(m for m in ids if m not in owner)
    if orphans:
        default = out.get(DEFAULT_GROUP)
        members = tuple(sorted({*orphans, *(default.members if default else ())}))
        out[DEFAULT_GROUP] = GroupConfig(id=DEFAULT_GROUP, members=members)
    return out


@implementer(ISwapper)
class GroupSwapper:
    """Evicts by group membership: ``swap``, ``exclusive`` and ``persistent``."""

    def __init__(self, groups: Mapping[str, Any] | None, model_ids: Iterable[str]) -> None:
        self.groups = groups_from_settings(groups, model_ids)
        self.group_of: dict[str, GroupConfig] = {}
        for group in self.groups.values():
            for member in group.members:
                self.group_of[member] = group
        self._default = self.groups.get(DEFAULT_GROUP, GroupConfig(id=DEFAULT_GROUP))

    def _group(self, model: str) -> GroupConfig:
        return self.group_of.get(model, self._default)

    def eviction_for(self, target: str, running: Sequence[str]) -> list[str]:
        """The running models that target's group rules say must stop, each named once."""
        g = self._group(target)
        out: list[str] = []
        seen: set[str] = set()
        for model in running:
            if model == target or model in seen:
                continue
            seen.add(model)
            h = self._group(model)
            if h.id == g.id:
                if g.swap:
                    out.append(model)
            elif g.exclusive and not h.persistent:
                out.append(model)
        return out

    def on_swap_start(self, target: str, running: Sequence[str]) -> None:
        """Nothing to log: the group decision is visible in the scheduler's debug line."""
