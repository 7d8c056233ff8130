"""Helpers for the config tests: load text with a fixed environment and plugin set."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import pytest

from llamaswap.config import Config, ConfigError, load_config_text

ROUTERS = frozenset({"group", "matrix"})
SCHEDULERS = frozenset({"serial", "fifo"})


def load(text: str, env: Mapping[str, str] | None = None, **kwargs: object) -> Config:
    """Load dedented YAML with the built-in plugin names and an explicit environment."""
    options: dict[str, object] = {
        "environ": dict(env or {}),
        "installed_routers": ROUTERS,
        "installed_schedulers": SCHEDULERS,
    }
    options.update(kwargs)
    return load_config_text(textwrap.dedent(text), **options)  # type: ignore[arg-type]


def problems(text: str, env: Mapping[str, str] | None = None, **kwargs: object) -> list[str]:
    """The problem lines loading ``text`` raises (the test fails if it loads)."""
    with pytest.raises(ConfigError) as info:
        load(text, env, **kwargs)
    return list(info.value.problems)


def one_problem(text: str, env: Mapping[str, str] | None = None, **kwargs: object) -> str:
    """The single problem line loading ``text`` raises."""
    found = problems(text, env, **kwargs)
    assert len(found) == 1, found
    return found[0]
