"""Macro declarations and substitution (SPEC 2.3)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from llamaswap.config.gofmt import format_value
from llamaswap.config.problems import Problems, describe

RESERVED = ("PID", "PORT", "MODEL_ID")
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
REF_RE = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")

Macro = tuple[str, Any]


def _go_type(value: object) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def read_macros(raw: object, path: str, problems: Problems) -> list[Macro]:
    """Validate a ``macros:`` mapping; the valid entries in declaration order."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        problems.add(path, f"expected a mapping of macro names to values, got {describe(raw)}")
        return []
    out: list[Macro] = []
    for key, value in raw.items():
        name = str(key)
        if len(name) >= 64:
            problems.add(path, f"macro name '{name}' exceeds maximum length of 63 characters")
        elif not NAME_RE.match(name):
            problems.add(
                path,
                f"macro name '{name}' contains invalid characters, "
                "must match pattern ^[a-zA-Z0-9_-]+$",
            )
        elif isinstance(value, str) and f"${{{name}}}" in value:
            problems.add(path, f"macro '{name}' contains self-reference")
        elif not isinstance(value, (str, int, float, bool)):
            problems.add(
                path,
                f"macro '{name}' has invalid type {_go_type(value)}, "
                "must be a scalar type (string, int, float, or bool)",
            )
        elif name in RESERVED:
            problems.add(path, f"macro name '{name}' is reserved")
        else:
            out.append((name, value))
    return out


def model_scope(model_id: str, global_macros: Sequence[Macro], own: Sequence[Macro]) -> list[Macro]:
    """MODEL_ID, then globals (a model macro replaces its global in place), then model-only."""
    own_map = dict(own)
    scope: list[Macro] = [("MODEL_ID", model_id)]
    for name, value in global_macros:
        scope.append((name, own_map.pop(name, value)))
    scope.extend((name, value) for name, value in own if name in own_map)
    return scope


def expand_string(text: str, macros: Sequence[Macro]) -> Any:
    """Apply ``macros`` last-declared first; an exact ``${name}`` takes the typed value."""
    value: Any = text
    for name, macro_value in reversed(macros):
        if not isinstance(value, str):
            break
        ref = f"${{{name}}}"
        if ref not in value:
            continue
        if value == ref:
            value = macro_value
        else:
            value = value.replace(ref, format_value(macro_value))
    return value


def expand(tree: Any, macros: Sequence[Macro]) -> Any:
    """Substitute macros in every string of ``tree`` (map keys are left alone)."""
    if not macros:
        return tree
    if isinstance(tree, str):
        return expand_string(tree, macros) if "${" in tree else tree
    if isinstance(tree, dict):
        return {k: expand(v, macros) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expand(v, macros) for v in tree]
    return tree


def leftover_refs(tree: Any, path: str) -> list[tuple[str, str]]:
    """Every ``(path, name)`` of a ``${name}`` still present in the strings of ``tree``."""
    found: list[tuple[str, str]] = []
    if isinstance(tree, str):
        found.extend((path, m.group(1)) for m in REF_RE.finditer(tree))
    elif isinstance(tree, dict):
        for key, value in tree.items():
            found.extend(leftover_refs(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found.extend(leftover_refs(value, f"{path}[{i}]"))
    return found


def strip_comment_lines(text: str) -> str:
    """Drop the lines of a command whose first non-blank character is ``#``."""
    return "\n".join(ln for ln in text.split("\n") if not ln.lstrip().startswith("#"))
