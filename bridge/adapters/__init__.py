"""Finding framework adapters: built-in ones by name, others from the `dspex.adapters`
entry point group or from plugin modules that call `register_adapter`.

Adapters are named as "module:attribute" strings and imported only here, so the core
never imports a framework's code itself; importing an adapter module must not import
its framework either (DSPy is loaded lazily, on first use or by `warm()`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..adapter import Adapter

log = logging.getLogger("dspex.adapters")

BUILTIN = ("bridge.adapters.dspy:DSPyAdapter", "bridge.adapters.python:PythonAdapter")
ENTRY_POINT_GROUP = "dspex.adapters"

AdapterFactory = Callable[[], "Adapter"]
_registered: list[AdapterFactory] = []


def register_adapter(factory: AdapterFactory) -> AdapterFactory:
    """For plugin modules: `register_adapter(MyAdapter)` adds it to every engine built later."""
    if factory not in _registered:
        _registered.append(factory)
    return factory


def load_factory(reference: str) -> AdapterFactory:
    """"module:attribute" -> the adapter class or factory it names."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "ADAPTER")


def _entry_point_factories() -> list[AdapterFactory]:
    from importlib.metadata import entry_points

    factories = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.value in BUILTIN:
            continue
        try:
            factories.append(point.load())
        except Exception as exc:  # one broken package must not stop the worker
            log.warning("adapter entry point %s failed to load: %s", point.name, exc)
    return factories


def default_adapters(entry_points: bool = False) -> list[Adapter]:
    """A fresh instance of every known adapter: built-in, registered, and with
    `entry_points` those of the `dspex.adapters` group (off by default: scanning every
    installed distribution costs start-up time). `dspex serve` passes its config's
    `entry_point_adapters` (DSPEX_ENTRY_POINT_ADAPTERS); an in-process engine that wants
    them passes True itself."""
    factories: list[AdapterFactory] = [load_factory(name) for name in BUILTIN]
    if entry_points:
        factories += _entry_point_factories()
    factories += [f for f in _registered if f not in factories]
    return [factory() for factory in factories]
