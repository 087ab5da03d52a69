"""The ping result kept between changes, so a health ping is answered without its handler.

A ping's result is static except its `timestamp` and `uptime`: the status changes only
when a drain begins, mode and worker id never, and an adapter's fields only when it says
so (`Adapter.announces_ping_changes`, then `Engine.ping_fields_changed()`). So the result
is built once per change, by calling the `ping` handler itself (the cache cannot drift from
the handler) and encoded around its varying values; each ping writes its id and two clock
readings with one orjson call between those bytes (bridge.intake does that inline).

Why push rather than asking each adapter for a version number on every ping: a lone health
ping finds the interpreter's caches cold, and there each Python function call it passes
costs microseconds; three such calls (the drain flag, an adapter's version, the loader's
flag) cost as much as the rest of the ping together. With the cache invalidated by whoever
changes a field, the ping path calls no Python function at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .context import Context

if TYPE_CHECKING:
    from .engine import Engine

# The result's keys in the order the handler writes them; the clock pair is filled per ping.
CLOCK_KEYS = ("timestamp", "uptime")


class PingTemplate:
    """`result`: the reply's bytes around its values (up to the result's timestamp, and from
    after its uptime up to the reply's timestamp) for the ping path to fill in, None when it
    must be built again (`build`), or False while only the generic path can answer: an adapter that adds
    fields without announcing their changes, a result plain orjson cannot encode, a handler
    that fails (its error reply is the generic path's)."""

    __slots__ = ("_engine", "_lock", "_generation", "_cacheable", "result")

    def __init__(self, engine: Engine) -> None:
        from .adapter import Adapter

        self._engine = engine
        # Builds and invalidations are rare; the lock makes sure an invalidation that comes
        # while a result is being built is never overwritten by that (stale) result.
        self._lock = threading.Lock()
        self._generation = 0
        self._cacheable = all(type(adapter).ping_fields is Adapter.ping_fields or adapter.announces_ping_changes
                              for adapter in engine.adapters)
        self.result: tuple[bytes, bytes] | bool | None = None if self._cacheable else False

    def changed(self) -> None:
        """What a ping reports changed: the next ping builds the result again."""
        with self._lock:
            self._generation += 1
            if self._cacheable:
                self.result = None

    def build(self) -> tuple[bytes, bytes] | bool:
        """The result for the current state (False: answer this ping the generic way)."""
        generation = self._generation
        built: tuple[bytes, bytes] | bool = False
        try:
            result = ping_result(self._engine)
            orjson.dumps(result)
            # An adapter that replaced the clock fields makes a shape this cache cannot fill.
            if list(result)[:3] == ["status", *CLOCK_KEYS] and all(type(result[key]) is float for key in CLOCK_KEYS):
                rest = dict(result)
                status = rest.pop("status")
                for key in CLOCK_KEYS:
                    del rest[key]
                middle = orjson.dumps(rest)[1:-1]
                # The reply's own timestamp is the result's clock reading: one reading, both fields.
                built = (b',"success":true,"result":{"status":' + orjson.dumps(status) + b',"timestamp":',
                         (b"," + middle if middle else b"") + b'},"timestamp":')
        except Exception:
            pass  # the generic path answers, with its error reply if the handler fails
        # False too is kept until the next change: the state that made it has not moved.
        with self._lock:
            if generation == self._generation and self._cacheable:
                self.result = built
        return built


def ping_result(engine: Engine) -> dict[str, Any]:
    """What the `ping` handler answers now (the core's handler, looked up at call time)."""
    from .core_commands import ping

    return ping({}, Context(engine, 0, "ping", "anonymous"))


class AnnouncingEvent(threading.Event):
    """A threading.Event that calls `on_change` after each set and clear: the engine's
    shutting_down flag, whose state every ping reports."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def set(self) -> None:
        super().set()
        self._on_change()

    def clear(self) -> None:
        super().clear()
        self._on_change()
