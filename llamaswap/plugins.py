"""Find scheduler and swapper plugins by name through Twisted plugin discovery."""

from __future__ import annotations

from typing import TypeVar

from twisted.plugin import getPlugins
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from llamaswap.interfaces import ISchedulerFactory, ISwapperFactory

T = TypeVar("T")


class PluginNotFound(LookupError):
    """No installed plugin carries the requested name."""

    def __init__(self, kind: str, name: str, installed: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.installed = installed
        listed = ", ".join(installed) or "none"
        super().__init__(f"unknown {kind} {name!r} (installed: {listed})")


def _by_name(interface: InterfaceClass) -> dict[str, object]:
    found: dict[str, object] = {}
    plugin: object
    for plugin in getPlugins(interface):  # type: ignore[arg-type]
        name = getattr(plugin, "name", None)
        if isinstance(name, str) and name not in found:
            found[name] = plugin
    return found


def scheduler_factories() -> dict[str, ISchedulerFactory]:
    """Every installed scheduler factory, by name."""
    return {k: ISchedulerFactory(v) for k, v in _by_name(ISchedulerFactory).items()}


def swapper_factories() -> dict[str, ISwapperFactory]:
    """Every installed swapper factory, by name."""
    return {k: ISwapperFactory(v) for k, v in _by_name(ISwapperFactory).items()}


def find_scheduler_factory(name: str) -> ISchedulerFactory:
    """The scheduler factory called ``name``; PluginNotFound lists what is installed."""
    factories = scheduler_factories()
    if name not in factories:
        raise PluginNotFound("scheduler", name, sorted(factories))
    factory = factories[name]
    verifyObject(ISchedulerFactory, factory)
    return factory


def find_swapper_factory(name: str) -> ISwapperFactory:
    """The swapper factory called ``name``; PluginNotFound lists what is installed."""
    factories = swapper_factories()
    if name not in factories:
        raise PluginNotFound("router", name, sorted(factories))
    factory = factories[name]
    verifyObject(ISwapperFactory, factory)
    return factory
