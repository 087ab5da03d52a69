"""References: Python objects a session holds for its client, and the JSON they cross as.

A result that is plain JSON (str/int/float/bool/None, lists and string-keyed objects of
them, bounded in depth and size) is sent as a value; anything else is kept in the
session's table and sent as `{"ref": "r-…", "type": "collections.Counter", "repr": "…"}`.
A `{"ref": "r-…"}` anywhere in a request's args stands for the object it names.
"""

from __future__ import annotations

import math
import os
import reprlib
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidArguments, LimitExceeded
from .allow import AllowList, check_reached
from .errors import NotAllowed

MAX_REFS_PER_SESSION = 1_000
MAX_REFS_PER_WORKER = 10_000
MAX_REPR = 200
# A value sent back as JSON: deeper or larger results become references instead.
MAX_VALUE_DEPTH = 32
MAX_VALUE_ITEMS = 10_000
# Args are client JSON, already bounded by the frame size; this bounds the walk's recursion.
MAX_ARG_DEPTH = 64

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = MAX_REPR
_repr.maxlevel = 3


@dataclass
class Ref:
    ref_id: str
    value: Any
    type_name: str
    repr: str
    created_at: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        return {"ref": self.ref_id, "type": self.type_name, "repr": self.repr}


def type_name(value: Any) -> str:
    kind = type(value)
    module = getattr(kind, "__module__", None) or "?"
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def short_repr(value: Any) -> str:
    """A repr of bounded length; an object whose repr fails still gets one."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the result
        text = f"<{type_name(value)} (repr failed: {type(exc).__name__})>"
    return text if len(text) <= MAX_REPR else text[:MAX_REPR - 1] + "…"


class Counter:
    """References held by every session of one worker (the per-worker bound)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def take(self) -> None:
        with self._lock:
            if self.count >= MAX_REFS_PER_WORKER:
                raise LimitExceeded(f"This worker already holds {MAX_REFS_PER_WORKER} Python references; "
                                    "send python.release or cleanup_session for finished ones")
            self.count += 1

    def give_back(self, n: int) -> None:
        with self._lock:
            self.count = max(0, self.count - n)


class RefTable:
    """One session's references. Calls of a session run concurrently, hence the lock."""

    def __init__(self, worker: Counter) -> None:
        self._refs: dict[str, Ref] = {}
        self._lock = threading.Lock()
        self._worker = worker

    def __len__(self) -> int:
        return len(self._refs)

    def add(self, value: Any) -> Ref:
        ref = Ref(f"r-{os.urandom(8).hex()}", value, type_name(value), short_repr(value))
        with self._lock:
            if len(self._refs) >= MAX_REFS_PER_SESSION:
                raise LimitExceeded(f"This session already holds {MAX_REFS_PER_SESSION} Python references; "
                                    "release some with python.release")
            self._worker.take()
            self._refs[ref.ref_id] = ref
        return ref

    def get(self, ref_id: Any, session_id: str) -> Ref:
        ref = self._refs.get(ref_id) if isinstance(ref_id, str) else None
        if ref is None:
            shown = ref_id if isinstance(ref_id, str) and len(ref_id) <= 40 else "(that id)"
            raise NotAllowed(f"No reference {shown} in session {session_id!r}: references belong to the "
                             "session that made them and end with python.release or cleanup_session")
        return ref

    def release(self, ref_ids: list[str] | None) -> tuple[int, list[str]]:
        """Drops the named references (all for None): (how many, names not held)."""
        with self._lock:
            if ref_ids is None:
                dropped, unknown = len(self._refs), []
                self._refs.clear()
            else:
                unknown = [ref_id for ref_id in ref_ids if self._refs.pop(ref_id, None) is None]
                dropped = len(ref_ids) - len(unknown)
        self._worker.give_back(dropped)
        return dropped, unknown

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            refs = list(self._refs.values())
        return [{**ref.public(), "created_at": ref.created_at} for ref in refs]


def _json_safe(value: Any, depth: int, budget: list[int]) -> Any:
    """The value as JSON (tuples as lists), or raises ValueError when it is not plain data."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_VALUE_DEPTH:
        raise ValueError("too large")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not finite")
        return value
    if type(value) in (list, tuple):
        return [_json_safe(item, depth + 1, budget) for item in value]
    if type(value) is dict:
        if not all(isinstance(key, str) for key in value):
            raise ValueError("non-string key")
        return {key: _json_safe(item, depth + 1, budget) for key, item in value.items()}
    raise ValueError("not plain data")


# Values of these kinds lead somewhere else (modules, code); they are checked before a
# reference to one is handed out (dict.get on a dict of modules must not yield `os`).
_LEADING = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def to_reply(value: Any, table: RefTable, allow: AllowList, shown: str) -> dict[str, Any]:
    """`{"value": ...}` for plain data, else a new reference in the session."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str, list, tuple, dict)):
        try:
            return {"value": _json_safe(value, 0, [MAX_VALUE_ITEMS])}
        except (ValueError, RecursionError):
            pass
    if isinstance(value, _LEADING):
        check_reached(value, allow, f"the result of {shown}")
    return table.add(value).public()


def resolve_args(value: Any, table: RefTable, session_id: str, depth: int = 0) -> Any:
    """Client JSON with every `{"ref": "r-…"}` replaced by the object it names."""
    if depth > MAX_ARG_DEPTH:
        raise InvalidArguments(f"args nested deeper than {MAX_ARG_DEPTH} levels")
    if isinstance(value, dict):
        if len(value) == 1 and "ref" in value:
            return table.get(value["ref"], session_id).value
        return {key: resolve_args(item, table, session_id, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_args(item, table, session_id, depth + 1) for item in value]
    return value
