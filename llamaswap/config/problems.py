"""Collect configuration problems, then raise them together as one ConfigError."""

from __future__ import annotations

from llamaswap.config.errors import ConfigError


class Problems:
    """An ordered list of ``key.path: reason`` lines, plus non-fatal warnings."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def add(self, path: str, reason: str) -> None:
        """Record one problem at ``path`` (an empty path records the bare reason)."""
        line = f"{path}: {reason}" if path else reason
        if line not in self.lines:
            self.lines.append(line)

    def warn(self, path: str, reason: str) -> None:
        """Record one warning at ``path``."""
        line = f"{path}: {reason}" if path else reason
        if line not in self.warnings:
            self.warnings.append(line)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self) -> None:
        """Raise ConfigError holding every recorded problem, if there is one."""
        if self.lines:
            raise ConfigError(self.lines)


def join(path: str, key: object) -> str:
    """``path.key`` (or ``key`` at the top level)."""
    return f"{path}.{key}" if path else str(key)


def describe(value: object) -> str:
    """A short description of a wrong value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return repr(text)
    return repr(value)
