"""Which commands an engine serves: the core's, each adapter's and the plugins'.

The same list feeds dispatch, `dspex commands`, completion, help and the generated docs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .registry import REGISTRY, Registry

if TYPE_CHECKING:
    from .adapter import Adapter


def build_registry(adapters: Iterable[Adapter], extra: Registry | None = None) -> Registry:
    """The commands an engine serves: the core's, each adapter's, then `extra`'s
    (plugins' commands). Also what `dspex commands`, completion and docs list."""
    from .core_commands import COMMANDS as CORE
    from .jobs import COMMANDS as JOBS

    registry = Registry()
    for spec in (*CORE.specs(), *JOBS.specs()):
        registry.add(spec)
    for adapter in adapters:
        for spec in adapter.commands():
            registry.add(spec)
    for spec in (REGISTRY if extra is None else extra).specs():
        registry.add(spec)
    return registry


def catalog() -> Registry:
    """Every command a default worker would serve (for help, completion and docs)."""
    from .adapters import default_adapters

    return build_registry(default_adapters())
