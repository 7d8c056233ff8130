"""Several sources (config file + config dir) merged by SPEC 1.2's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaswap.config import ConfigError, load_config_sources

from .support import ROUTERS, SCHEDULERS

OPTS = {"environ": {"K2": "sk-2"}, "installed_routers": ROUTERS,
        "installed_schedulers": SCHEDULERS}


def write(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` and return the path as a string."""
    path.write_text(text)
    return str(path)


def test_merge_file_and_directory(tmp_path: Path) -> None:
    """Models, macros and lists from every source combine; non-YAML files are ignored."""
    main = write(tmp_path / "main.yaml", "macros: {a: 1}\napiKeys: [sk-1]\n"
                 "models:\n  m1: {cmd: 's ${PORT} ${b}'}\n")
    conf = tmp_path / "conf.d"
    conf.mkdir()
    write(conf / "20-more.yml", "models:\n  m2: {cmd: 's ${PORT} ${a}'}\n")
    write(conf / "10-base.yaml", "macros: {b: 2}\napiKeys: ['${env.K2}']\n")
    write(conf / "empty.yaml", "# nothing\n")
    write(conf / "notes.txt", "not: yaml: at: all")
    config = load_config_sources(main, str(conf), **OPTS)  # type: ignore[arg-type]
    assert config.models["m1"].cmd == "s 5800 2" and config.models["m2"].cmd == "s 5801 1"
    assert config.api_keys == ("sk-1", "sk-2")


def test_duplicate_identity_entries(tmp_path: Path) -> None:
    """A model defined by two sources is an error naming both files."""
    conf = tmp_path / "d"
    conf.mkdir()
    first = write(conf / "a.yaml", "models:\n  dup: {cmd: 's ${PORT}'}\n")
    second = write(conf / "b.yaml", "models:\n  dup: {cmd: 's ${PORT}'}\n")
    with pytest.raises(ConfigError) as info:
        load_config_sources(None, str(conf), **OPTS)  # type: ignore[arg-type]
    assert info.value.problems == (
        f'duplicate models "dup" found in {second} (already defined in {first})',)


def test_scalar_conflicts_and_kinds(tmp_path: Path) -> None:
    """Different scalars, or a scalar against a list, are conflicts; equal values are fine."""
    conf = tmp_path / "d"
    conf.mkdir()
    first = write(conf / "a.yaml", "logLevel: debug\nglobalTTL: 5\n")
    second = write(conf / "b.yaml", "logLevel: debug\nglobalTTL: 6\n")
    with pytest.raises(ConfigError) as info:
        load_config_sources(None, str(conf), **OPTS)  # type: ignore[arg-type]
    assert info.value.problems == (
        f'conflict at "globalTTL": {second} sets a different value than {first}',)
    write(conf / "b.yaml", "apiKeys: x\n")
    write(conf / "a.yaml", "apiKeys: [y]\n")
    with pytest.raises(ConfigError) as info:
        load_config_sources(None, str(conf), **OPTS)  # type: ignore[arg-type]
    assert info.value.problems == (
        f'conflict at "apiKeys": incompatible YAML node kinds (sequence in {first} vs scalar '
        f"in {second})",)


def test_source_listing_errors(tmp_path: Path) -> None:
    """Empty directory, missing directory, and the file inside the directory are errors."""
    with pytest.raises(ConfigError, match="no configuration sources found"):
        load_config_sources(None, str(tmp_path), **OPTS)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="-config-dir"):
        load_config_sources(None, str(tmp_path / "nope"), **OPTS)  # type: ignore[arg-type]
    inside = write(tmp_path / "c.yaml", "{}\n")
    with pytest.raises(ConfigError, match="is also present in -config-dir"):
        load_config_sources(inside, str(tmp_path), **OPTS)  # type: ignore[arg-type]
