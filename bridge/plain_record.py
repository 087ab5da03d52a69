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
        # Tuples, as a dataclass compares: a field that is the same object on both sides
        # (a NaN score) counts as equal.
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields if name not in self._hidden)
        return f"{type(self).__name__}({shown})"

    def _values(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self._fields])


class FrozenRecord(PlainRecord):
    """A PlainRecord that cannot change after `__init__`, hashable over its fields, like a
    `@dataclass(frozen=True)`.

    `__init__` sets the fields through `self.__dict__` (or `object.__setattr__`); any other
    assignment or deletion raises AttributeError (a dataclass raises FrozenInstanceError, an
    AttributeError too). `functools.cached_property` still works: it writes `__dict__` itself.
    """

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of frozen {type(self).__name__}")

    def __hash__(self) -> int:
        # A TypeError for an unhashable field value (a dict), as a frozen dataclass raises.
        return hash(self._values())
