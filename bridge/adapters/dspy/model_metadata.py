"""DSPy's model-metadata lookups, remembered per model instead of repeated on every LM call.

DSPy 3.4 looks the model up in its price map (`dspy.clients.model_metadata.model_info`)
two to four times per LM call: once for the call's capabilities, once or twice for its
cost. For a name the map does not hold (every self-hosted model behind vLLM or Ollama,
and every test or benchmark server) each lookup walks all ~4,500 entries looking for an
alias, about 1 ms each: measured on this project's benchmark machine, that was more than
two thirds of DSPy's own CPU per call (7.3 ms -> 2.2 ms per synchronous call, 11.0 ->
3.5 ms per `acall`, docs/benchmarks.md). The answer depends only on the arguments and on
the loaded map, which DSPy loads once per process, so the adapter remembers it.

What callers get does not change: an answer is computed by DSPy's own function the first
time, and every caller receives its own deep copy, as DSPy's function returns one (callers
may change it). A map that DSPy reloads invalidates what was remembered. Model names come
from clients, so the table is bounded (least recently used answers go first).
"""

from __future__ import annotations

import copy
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["MAX_REMEMBERED", "RememberedModelInfo", "install"]

# Distinct (provider, model, namespaces) answers kept; a worker serves a handful of models.
MAX_REMEMBERED = 256

# The DSPy modules that bound `model_info` by name at their import (`from ... import
# model_info`): replacing the attribute of the metadata module alone would not reach them.
_USERS = ("dspy.clients.costs", "dspy.clients.capabilities")


class RememberedModelInfo:
    """Stands in for DSPy's `model_info(provider, model, *, namespaces=None)`."""

    def __init__(self, original: Callable[..., dict[str, Any]], metadata: ModuleType,
                 limit: int = MAX_REMEMBERED) -> None:
        self.original = original
        self._metadata = metadata
        self._limit = limit
        self._lock = threading.Lock()
        # key -> (the map the answer was read from, the answer)
        self._answers: OrderedDict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = OrderedDict()
        self.computed = 0  # answers DSPy's function computed (tests read it)

    def __call__(self, provider: Any, model: Any, *, namespaces: Any = None) -> dict[str, Any]:
        try:
            key = (provider, model, None if namespaces is None else tuple(namespaces))
            hash(key)
        except TypeError:  # arguments DSPy never passes: no key, so no memory
            return self.original(provider, model, namespaces=namespaces)
        loaded = getattr(self._metadata, "_data", None)
        with self._lock:
            entry = self._answers.get(key)
            if entry is not None and entry[0] is loaded and loaded is not None:
                self._answers.move_to_end(key)
                return copy.deepcopy(entry[1])
        answer = self.original(provider, model, namespaces=namespaces)
        with self._lock:
            self.computed += 1
            # The map as it is after the call: the first lookup is what loads it.
            self._answers[key] = (getattr(self._metadata, "_data", None), copy.deepcopy(answer))
            self._answers.move_to_end(key)
            while len(self._answers) > self._limit:
                self._answers.popitem(last=False)
        return answer

    def __len__(self) -> int:
        return len(self._answers)


def install(limit: int = MAX_REMEMBERED) -> RememberedModelInfo | None:
    """Puts the remembering lookup in place of DSPy's, once DSPy is imported; idempotent.

    Returns None, and changes nothing, when this DSPy does not have the function where
    3.4 has it: the memory is an optimisation, never a condition of running."""
    metadata = sys.modules.get("dspy.clients.model_metadata")
    original = getattr(metadata, "model_info", None)
    if metadata is None or not callable(original):
        return None
    if isinstance(original, RememberedModelInfo):
        return original
    remembered = RememberedModelInfo(original, metadata, limit)
    metadata.model_info = remembered  # type: ignore[attr-defined]
    for name in _USERS:
        user = sys.modules.get(name)
        if user is not None and getattr(user, "model_info", None) is original:
            user.model_info = remembered  # type: ignore[attr-defined]
    return remembered
