"""Several config sources merged into one document (SPEC 1.2: ``-config`` plus ``-config-dir``)."""

from __future__ import annotations

import os
from typing import Any

from llamaswap.config.errors import ConfigError

# Children of these name entities and may not be defined by two sources.
IDENTITY_MAPS = frozenset({
    "models", "groups", "profiles", "selectors", "peers", "matrix",
    "routing.router.settings.groups", "routing.router.settings.matrix",
})


def list_sources(config_path: str | None, config_dir: str | None) -> list[str]:
    """The config file first, then the ``*.yml``/``*.yaml`` files of the directory, sorted."""
    sources: list[str] = []
    if config_path:
        sources.append(config_path)
    if config_dir:
        try:
            names = os.listdir(config_dir)
        except OSError as exc:
            raise ConfigError(f"-config-dir {config_dir}: {exc.strerror or exc}") from None
        found = sorted(
            os.path.join(config_dir, n) for n in names
            if n.endswith((".yml", ".yaml")) and os.path.isfile(os.path.join(config_dir, n))
        )
        if config_path:
            mine = os.path.realpath(config_path)
            if any(os.path.realpath(f) == mine for f in found):
                raise ConfigError(f"-config path {config_path} is also present in -config-dir "
                                  f"{config_dir}; remove it from one")
        if not found and not config_path:
            raise ConfigError("no configuration sources found")
        sources.extend(found)
    return sources


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "sequence"
    return "scalar"


def _origin(origins: dict[str, str], path: str) -> str:
    """The source that set ``path``, or the nearest of its parents that one source set whole."""
    while path:
        if path in origins:
            return origins[path]
        path = path.rpartition(".")[0]
    return "a previous source"


def merge(
    into: dict[str, Any], new: dict[str, Any], source: str, path: str = "",
    origins: dict[str, str] | None = None,
) -> None:
    """Merge document ``new`` (from ``source``) into ``into`` in place, by SPEC 1.2's rules.

    ``origins`` records which source set each key path, so that a conflict names both
    files; pass the same dict for every source of one merge.
    """
    origins = {} if origins is None else origins
    for key, value in new.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in into or into[key] is None:
            into[key] = value
            origins[here] = source
            continue
        old = into[key]
        if value is None:
            continue
        first = _origin(origins, here)
        if path in IDENTITY_MAPS:
            raise ConfigError(f'duplicate {path} "{key}" found in {source} (already defined in '
                              f"{first})")
        if _kind(old) != _kind(value):
            raise ConfigError(f'conflict at "{here}": incompatible YAML node kinds '
                              f"({_kind(old)} in {first} vs {_kind(value)} in {source})")
        if isinstance(old, dict):
            merge(old, value, source, here, origins)
        elif isinstance(old, list):
            into[key] = old + value
        elif type(old) is not type(value) or old != value:
            raise ConfigError(f'conflict at "{here}": {source} sets a different value than '
                              f"{first}")
