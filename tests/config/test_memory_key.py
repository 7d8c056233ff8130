"""``models.<id>.memory`` and the memory router's settings: parsed sizes, key-path errors."""

from __future__ import annotations

import pytest

from llamaswap.config.model import MemoryNeed
from llamaswap.memory import GIB, format_size, parse_size

from .support import load, one_problem

ROUTERS = frozenset({"group", "matrix", "memory"})


def test_memory_key_parsed() -> None:
    """gpu is a size in bytes; devices a list of GPU indexes; absent means not set."""
    config = load("""
    models:
      a: {cmd: "s ${PORT}", memory: {gpu: 6GiB, devices: [0, 1]}}
      b: {cmd: "s ${PORT}", memory: {gpu: 512 MiB}}
      c: {cmd: "s ${PORT}"}
    """)
    assert config.models["a"].memory == MemoryNeed(gpu=6 * GIB, devices=(0, 1))
    assert config.models["b"].memory == MemoryNeed(gpu=512 * 1024**2)
    assert config.models["c"].memory == MemoryNeed()


@pytest.mark.parametrize(("body", "problem"), [
    ("{gpu: lots}", "models.a.memory.gpu: expected a size like 6GiB, 512MiB or 8GB, got 'lots'"),
    ("{gpu: 6GiB, devices: [0, x]}",
     "models.a.memory.devices[1]: expected a GPU index (an integer >= 0), got 'x'"),
    ("{gpu: 6GiB, vram: 1}", "models.a.memory.vram: unknown key (memory takes gpu and devices)"),
    ("6GiB", "models.a.memory: expected a mapping, got '6GiB'"),
])
def test_memory_key_errors_name_the_key_path(body: str, problem: str) -> None:
    """Each mistake is one problem naming models.<id>.memory.<key>."""
    assert one_problem(f'models:\n  a: {{cmd: "s ${{PORT}}", memory: {body}}}\n') == problem


def test_memory_router_settings_checked() -> None:
    """margin must be a fraction or percentage; pinned must name models."""
    text = """
    models:
      a: {cmd: "s ${PORT}"}
    routing:
      router: {use: memory, settings: {margin: 2, pinned: [a, ghost]}}
      scheduler: {use: fifo}
    """
    with pytest.raises(Exception) as caught:
        load(text, installed_routers=ROUTERS)
    assert list(caught.value.problems) == [  # type: ignore[attr-defined]
        "routing.router.settings.margin: expected a fraction in [0, 1) or a percentage like "
        "5%, got 2",
        'routing.router.settings.pinned[1]: references unknown model "ghost"',
    ]
    good = text.replace("margin: 2", "margin: 10%").replace(", ghost", "")
    settings = load(good, installed_routers=ROUTERS).routing.router.settings
    assert settings["margin"] == "10%" and list(settings["pinned"]) == ["a"]


def test_memory_router_with_serial_warns() -> None:
    """The memory router lets models run together: the default serial scheduler warns."""
    config = load('models:\n  a: {cmd: "s ${PORT}"}\nrouting: {router: {use: memory}}\n',
                  installed_routers=ROUTERS)
    assert any("routing.scheduler.use: fifo" in w for w in config.warnings)


def test_sizes() -> None:
    """Binary and decimal units; bare integers are bytes; format_size rounds for people."""
    assert parse_size("1.5G") == int(1.5 * GIB)
    assert parse_size("8GB") == 8 * 1000**3
    assert parse_size(4096) == 4096
    assert format_size(6.1 * GIB) == "6.1 GiB"
    assert format_size(300 * 1024**2) == "300 MiB"
    with pytest.raises(ValueError):
        parse_size(-1)
