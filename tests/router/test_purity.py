"""Schedulers and swappers stay pure: no reactor, no web, no process machinery."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "llamaswap" / "router"
FILES = sorted([*PKG.glob("scheduler/*.py"), *PKG.glob("swapper/*.py")])


def imported(path: Path) -> set[str]:
    """Every module name imported by ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_purity_no_forbidden_imports(path: Path) -> None:
    """No reactor, llamaswap.web or llamaswap.process (except its state enum) imports."""
    for name in imported(path):
        assert name != "twisted.internet.reactor", name
        assert not name.startswith("llamaswap.web"), name
        if name.startswith("llamaswap.process"):
            assert name.startswith("llamaswap.process.state"), name


def test_purity_files_found() -> None:
    """The scan covers the built-in schedulers and swappers."""
    assert {p.name for p in FILES} >= {"serial.py", "fifo.py", "group.py", "matrix.py",
                                       "matrix_dsl.py"}
