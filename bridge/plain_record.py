"""Value classes for the worker's start-up path, without dataclasses' import-time cost.

A dataclass generates and compiles its methods when its module is imported: about a
millisecond per class, and the ten on the way to a worker's first reply cost a sixth of
that path. Classes that the engine needs before the first reply therefore write their own
`__init__` and list their fields in `_fields`; equality and repr come from here.
"""

from __future__ import annotations


class PlainRecord:
    """Equality and repr over `_fields` (in that order); mutable and unhashable like a
    plain dataclass, unless a subclass defines `__hash__`."""

    _fields: tuple[str, ...] = ()
    #: Fields left out of repr (locks, events).
    _hidden: frozenset[str] = frozenset()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields if name not in self._hidden)
        return f"{type(self).__name__}({shown})"
