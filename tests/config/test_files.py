"""load_config on files: missing, unreadable, directories, and the source name in errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamaswap.config import ConfigError, load_config
from llamaswap.config.loader import load_config_text

from .support import ROUTERS, SCHEDULERS

OPTS = {"environ": {}, "installed_routers": ROUTERS, "installed_schedulers": SCHEDULERS}


def test_loads_a_file(tmp_path: Path) -> None:
    """A file on disk loads into a Config."""
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  m:\n    cmd: s ${PORT}\n")
    assert list(load_config(str(path), **OPTS).models) == ["m"]  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the path."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == (f"{path}: config file not found",)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that cannot be opened for lack of permission is a ConfigError."""
    import llamaswap.config.loader as loader

    path = tmp_path / "secret.yaml"
    path.write_text("{}")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make open() fail as it would for a user

        def denied(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(loader, "open", denied, raising=False)
    try:
        with pytest.raises(ConfigError) as info:
            load_config(str(path))
    finally:
        path.chmod(0o600)
    assert info.value.problems == (f"{path}: permission denied reading config file",)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory path is a ConfigError."""
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.problems == (f"{tmp_path}: is a directory, not a config file",)


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    """YAML syntax errors carry the file name, line and column."""
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  a: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), **OPTS)  # type: ignore[arg-type]
    assert info.value.problems[0].startswith(f"{path}: YAML syntax error at line 3, column 1")


def test_non_utf8_file(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"logLevel: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems[0].startswith(f"{path}: not UTF-8 text")


def test_unexpected_errors_are_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug inside the loader still surfaces as ConfigError with the source name."""
    import llamaswap.config.loader as loader

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(loader, "expand_document", boom)
    with pytest.raises(ConfigError) as info:
        load_config_text("{}", "cfg.yaml", **OPTS)  # type: ignore[arg-type]
    assert info.value.problems == (
        "cfg.yaml: unexpected error while loading: RuntimeError: kaboom",)


def test_several_problems_are_collected() -> None:
    """Independent problems are all reported in one error."""
    with pytest.raises(ConfigError) as info:
        load_config_text(
            "globalTTL: -1\nlogToStdout: x\nmodels:\n  m: {cmd: 's ${PORT}', ttl: -5}\n",
            **OPTS)  # type: ignore[arg-type]
    assert len(info.value.problems) == 3
    assert str(info.value) == "\n".join(info.value.problems)
