"""What a replay needs to know of a recorded request before sending it: whether it acts on
the whole worker (a barrier), and, for a live replay, what recording scrubbed from it."""

from __future__ import annotations

import functools
from typing import Any

from ..redact import REDACTED

_BARRIERS: dict[str, bool] = {}


def is_barrier(command: str | None) -> bool:
    """Whether a command acts on the whole worker (the engine runs it after everything earlier)."""
    if command is None:
        return False
    known = _BARRIERS.get(command)
    if known is None:
        spec = _catalog().find(command)  # the commands of a default worker
        known = spec is not None and spec.scheduling == "global"
        _BARRIERS[command] = known
    return known


def drop_redacted(frame: Any) -> Any:
    """A request for a live replay: what recording scrubbed is left out, and each adapter
    may fill it in within its own rules (DSPy: a provider key from the environment, never
    for an api_base the transcript names)."""
    if isinstance(frame, dict) and isinstance(frame.get("args"), dict):
        for adapter in _live_adapters():
            frame = adapter.live_replay_frame(frame)
        frame = {**frame, "args": {k: v for k, v in frame["args"].items() if v != REDACTED}}
    return frame


@functools.cache
def _catalog() -> Any:
    from ..catalog import catalog

    return catalog()


@functools.cache
def _live_adapters() -> list[Any]:
    from ..adapters import default_adapters

    return default_adapters()


__all__ = ["drop_redacted", "is_barrier"]
