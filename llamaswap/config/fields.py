"""Typed reads from the untyped YAML tree; a wrong type records a problem and yields the default."""

from __future__ import annotations

from typing import Any, TypeVar

from llamaswap.config.gofmt import format_value
from llamaswap.config.problems import Problems, describe, join

T = TypeVar("T")


class Section:
    """A mapping from the YAML tree, its key path, and where to record problems."""

    def __init__(self, raw: Any, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.add(path, f"expected a mapping, got {describe(raw)}")
            raw = {}
        self.raw: dict[Any, Any] = raw

    def has(self, key: str) -> bool:
        """True when ``key`` is present with a non-null value."""
        return self.raw.get(key) is not None

    def at(self, key: str) -> str:
        """The key path of ``key`` in this section."""
        return join(self.path, key)

    def bad(self, key: str, reason: str) -> None:
        """Record a problem for ``key``."""
        self.problems.add(self.at(key), reason)

    def section(self, key: str) -> Section:
        """The sub-mapping under ``key`` (empty when absent)."""
        return Section(self.raw.get(key), self.at(key), self.problems)

    def get_int(self, key: str, default: int) -> int:
        """An integer (an integral float is accepted, as go-yaml does)."""
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.bad(key, f"expected an integer, got {describe(value)}")
            return default
        if isinstance(value, float):
            if not value.is_integer():
                self.bad(key, f"expected an integer, got {format_value(value)}")
                return default
            return int(value)
        return value

    def get_non_negative_ints(
        self, fields: tuple[tuple[str, str], ...], defaults: object
    ) -> dict[str, float]:
        """``{field: value}`` for each ``(key, field)``: an integer >= 0, else the field of
        ``defaults`` (and the problem is reported)."""
        values: dict[str, float] = {}
        for key, field in fields:
            default = int(getattr(defaults, field))
            value = self.get_int(key, default)
            if value < 0:
                self.bad(key, f"must be >= 0, got {value}")
                value = default
            values[field] = value
        return values

    def get_bool(self, key: str, default: bool) -> bool:
        """A boolean (only true/false)."""
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(key, f"expected true or false, got {describe(value)}")
            return default
        return value

    def get_str(self, key: str, default: str = "") -> str:
        """A string; other scalars are accepted in their Go text form."""
        return self.scalar_str(self.raw.get(key), self.at(key), default)

    def scalar_str(self, value: Any, path: str, default: str = "") -> str:
        """``value`` as a string, or a problem at ``path`` when it is a list or mapping."""
        if value is None:
            return default
        if isinstance(value, str):
            return value
        if isinstance(value, (dict, list)):
            self.problems.add(path, f"expected a string, got {describe(value)}")
            return default
        return format_value(value)

    def get_str_list(self, key: str) -> list[str]:
        """A list of strings (a null list is empty)."""
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(key, f"expected a list, got {describe(value)}")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            text = self.scalar_str(item, f"{self.at(key)}[{i}]", "")
            if item is not None and not isinstance(item, (dict, list)):
                out.append(text)
        return out

    def get_map(self, key: str) -> dict[Any, Any]:
        """A mapping (a null mapping is empty)."""
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(key, f"expected a mapping, got {describe(value)}")
            return {}
        return value
