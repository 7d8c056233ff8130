"""The built-in plugins are found with getPlugins and build objects that verify."""

from __future__ import annotations

import subprocess
import sys

import pytest
from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface.verify import verifyObject

from llamaswap import plugins
from llamaswap.config.model import MatrixConfig, ModelConfig
from llamaswap.interfaces import IScheduler, ISchedulerFactory, ISwapper, ISwapperFactory
from llamaswap.router import builtin
from llamaswap.testing.effects import RecordingEffects

MODELS = {m: ModelConfig(id=m, concurrency_limit=3 if m == "a" else 0) for m in ("a", "b")}


def test_plugins_builtin_schedulers_found() -> None:
    """getPlugins finds serial and fifo."""
    names = {p.name for p in getPlugins(ISchedulerFactory)}
    assert {"serial", "fifo"} <= names


def test_plugins_builtin_swappers_found() -> None:
    """getPlugins finds group and matrix."""
    names = {p.name for p in getPlugins(ISwapperFactory)}
    assert {"group", "matrix"} <= names


@pytest.mark.parametrize("factory", [builtin.serial, builtin.fifo])
def test_plugins_scheduler_factories_verify(factory: object) -> None:
    """Each scheduler factory, and the scheduler it builds, passes verifyObject."""
    assert verifyObject(ISchedulerFactory, factory)
    found = plugins.find_scheduler_factory(factory.name)  # type: ignore[attr-defined]
    assert found is factory
    swapper = builtin.group.build(settings={}, models=MODELS, log=None)
    sched = found.build(name="group", effects=RecordingEffects(), swapper=swapper,
                        settings={"priority": {"a": 2}}, models=MODELS, log=Logger(),
                        future_keyword=1)  # type: ignore[call-arg]
    assert verifyObject(IScheduler, sched)
    assert sched.limits == {"a": 3, "b": 10}  # type: ignore[attr-defined]


def test_plugins_fifo_factory_reads_priority() -> None:
    """fifo's settings.priority reaches the scheduler."""
    sched = builtin.fifo.build(name="g", effects=RecordingEffects(),
                               swapper=builtin.group.build(settings={}, models=MODELS),
                               settings={"priority": {"a": "5"}}, models=MODELS)
    assert sched.priority == {"a": 5}  # type: ignore[attr-defined]


@pytest.mark.parametrize("factory", [builtin.group, builtin.matrix])
def test_plugins_swapper_factories_verify(factory: object) -> None:
    """Each swapper factory, and the swapper it builds, passes verifyObject."""
    assert verifyObject(ISwapperFactory, factory)
    found = plugins.find_swapper_factory(factory.name)  # type: ignore[attr-defined]
    assert found is factory
    settings = {"groups": {}, "matrix": MatrixConfig(sets=(("all", "a & b"),))}
    swapper = found.build(settings=settings, models=MODELS, log=Logger(),
                          another_keyword=2)  # type: ignore[call-arg]
    assert verifyObject(ISwapper, swapper)


def test_plugins_matrix_without_settings_is_an_error() -> None:
    """Selecting matrix without settings.matrix fails with the SPEC message."""
    with pytest.raises(ValueError, match=r"settings\.matrix is not set"):
        builtin.matrix.build(settings={}, models=MODELS)


def test_plugins_unknown_name_lists_installed() -> None:
    """An unknown scheduler name raises PluginNotFound naming what is installed."""
    with pytest.raises(plugins.PluginNotFound) as info:
        plugins.find_scheduler_factory("nope")
    assert "serial" in info.value.installed and "fifo" in info.value.installed
    assert "nope" in str(info.value)


def test_plugins_builtin_module_is_cheap_to_import() -> None:
    """Importing llamaswap.router.builtin does not import the implementations."""
    code = ("import sys, llamaswap.router.builtin; "
            "print([m for m in sys.modules if m.startswith('llamaswap.router.s')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
