"""Where replayed replies arrive, from any thread, counted per request id."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import orjson

from .compare import reply_id
from .events import is_event

class Inbox:
    """Replies as they come back, counted per request id, from any thread.

    `on_reply`, when given, is called once per reply as it arrives (the REPL's progress
    counter), whichever target delivered it.
    """

    def __init__(self, on_reply: Callable[[], None] | None = None) -> None:
        self.on_reply = on_reply
        self.cond = threading.Condition()
        self.arrived: dict[Any, int] = defaultdict(int)
        self.replies: dict[Any, deque[Any]] = defaultdict(deque)
        self.dead: str | None = None
        self.total = 0
        # Events are not replies: they go here (the replayer compares them and answers
        # callbacks), never into the reply counts.
        self.on_event: Callable[[dict[str, Any]], None] | None = None

    def _event(self, payload: bytes) -> bool:
        """Hands an event to on_event; False for a reply."""
        if b'"event"' not in payload:
            return False
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        if not is_event(frame):
            return False
        if self.on_event is not None:
            self.on_event(frame)
        return True

    def _store(self, rid: Any, reply: Any) -> None:
        self.replies[rid].append(reply)
        self.arrived[rid] += 1
        self.total += 1

    def deliver(self, reply: Any) -> None:
        if is_event(reply):
            if self.on_event is not None:
                self.on_event(reply)
            return
        rid = reply.get("id") if isinstance(reply, dict) else None
        if isinstance(rid, (dict, list)):
            rid = None
        with self.cond:
            self._store(rid, reply)
            self.cond.notify_all()
        if self.on_reply is not None:  # outside the lock: it may draw on a terminal
            self.on_reply()

    def deliver_now(self, payload: bytes) -> None:
        """deliver_bytes for replies sent from the replaying thread itself: nobody can be
        waiting for them, so no lock or wake-up is needed. Replies stay bytes until a
        comparison needs them decoded."""
        if self._event(payload):
            return
        self._store(reply_id(payload), payload)
        if self.on_reply is not None:
            self.on_reply()

    def deliver_bytes(self, payload: bytes) -> None:
        if self._event(payload):
            return
        rid = reply_id(payload)
        with self.cond:
            self._store(rid, payload)
            self.cond.notify_all()
        if self.on_reply is not None:
            self.on_reply()

    def gone(self, reason: str) -> None:
        with self.cond:
            self.dead = reason
            self.cond.notify_all()

    def wait_for_any(self, seen_total: int, deadline: float) -> None:
        """Sleeps until a reply arrives after `seen_total` had, the deadline, or the target dies."""
        with self.cond:
            while self.total == seen_total and self.dead is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.cond.wait(min(remaining, 0.25))

