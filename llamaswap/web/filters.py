"""Request body filters (SPEC 2.5): stripParams, setParams, setParamsByID, useModelName.

Param names are sjson-style paths: ``a.b`` is key ``b`` inside object ``a`` (created when
missing), a numeric component indexes an array, ``\\.`` is a literal dot. All functions
are pure: they take a decoded JSON object and return whether they changed it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from llamaswap.config.model import Filters

PROTECTED = "model"


class FilterError(ValueError):
    """A filter path cannot be applied to this body (e.g. it walks through a string)."""


def split_path(path: str) -> list[str]:
    """Split an sjson path on unescaped dots."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path):
            current.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _index(container: list[Any], key: str) -> int | None:
    if key == "-1":
        return len(container)
    if key.isdigit():
        return int(key)
    return None


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``body`` to ``value``, creating objects on the way."""
    parts = split_path(path)
    node: Any = body
    for depth, key in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, dict):
            if last:
                node[key] = copy.deepcopy(value)
                return
            nxt = node.get(key)
            if not isinstance(nxt, dict | list):
                nxt = {}
                node[key] = nxt
            node = nxt
        elif isinstance(node, list):
            idx = _index(node, key)
            if idx is None:
                raise FilterError(f"cannot set {path!r}: {key!r} is not an array index")
            while len(node) <= idx:
                node.append(None)
            if last:
                node[idx] = copy.deepcopy(value)
                return
            if not isinstance(node[idx], dict | list):
                node[idx] = {}
            node = node[idx]
        else:
            raise FilterError(f"cannot set {path!r}: it goes through a non-container value")


def delete_path(body: dict[str, Any], path: str) -> bool:
    """Remove ``path`` from ``body``; returns whether something was removed."""
    parts = split_path(path)
    node: Any = body
    for depth, key in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, dict):
            if key not in node:
                return False
            if last:
                del node[key]
                return True
            node = node[key]
        elif isinstance(node, list):
            idx = _index(node, key)
            if idx is None or idx >= len(node):
                return False
            if last:
                del node[idx]
                return True
            node = node[idx]
        else:
            return False
    return False


def strip_list(params: Iterable[str]) -> list[str]:
    """The effective stripParams: trimmed, no blanks, no duplicates, no ``model``, sorted."""
    names: set[str] = set()
    for entry in params:
        for part in entry.split(","):
            name = part.strip()
            if name and name != PROTECTED:
                names.add(name)
    return sorted(names)


def _set_all(body: dict[str, Any], params: Mapping[str, Any]) -> bool:
    changed = False
    for key in sorted(params):
        if key == PROTECTED:
            continue
        set_path(body, key, params[key])
        changed = True
    return changed


def apply_filters(body: dict[str, Any], filters: Filters, requested: str) -> bool:
    """Apply stripParams, setParams, then setParamsByID[requested]; True if anything ran."""
    changed = False
    for name in strip_list(filters.strip_params):
        changed = delete_path(body, name) or changed
    changed = _set_all(body, filters.set_params) or changed
    by_id = filters.set_params_by_id.get(requested)
    if by_id:
        changed = _set_all(body, by_id) or changed
    return changed


def use_model_name(body: dict[str, Any], name: str) -> bool:
    """Set the body's ``model`` to ``name`` (when non-empty); True if it changed."""
    if not name or body.get(PROTECTED) == name:
        return False
    body[PROTECTED] = name
    return True
