"""The one exception configuration problems raise."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` holds one ``key.path: reason`` line each."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))
