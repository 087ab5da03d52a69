"""The engine's observation points and life cycle: events for subscribers, LM-call
records, draining and closing. A mixin of `bridge.engine.Engine`, apart from dispatch."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .context import Inflight, OnceReply
from .errors import BridgeError
from .redact import redact

log = logging.getLogger("dspex.engine")


class Lifecycle:
    """Publishing, LM-call records, draining and closing (see Engine)."""

    # What the engine provides (declared for readers and type checkers).
    listeners: list[Callable[[str, dict[str, Any]], None]]
    stats: Any
    recent_lm_calls: Any
    started: float
    inflight: dict[int, Inflight]
    _idle: threading.Condition
    _accepted: set[OnceReply]
    _reply_error: Callable[..., None]
    executor: Any
    jobs: Any

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Tells subscribers (inspect --follow, recorder) that something happened."""
        for listener in self.listeners:
            try:
                listener(kind, data)
            except Exception:  # an observer must never break serving
                log.exception("event listener failed")

    def record_lm_call(self, call: dict[str, Any]) -> None:
        """Called by an adapter after each external call (DSPy: each LM call) with its record,
        as made: secrets are masked on the way out, not here (see lm_call_log)."""
        self.stats.count_lm_call(call.get("usage") or {}, model=call.get("model"), cost=call.get("cost"),
                                 latency_ms=call.get("latency_ms"), failed=bool(call.get("error")))
        # Kept as made and redacted when read: masking a record walks its whole prompt and
        # answer (~3% of an evaluation's CPU), and the ring is read only when someone looks.
        self.recent_lm_calls.append(call)
        if self.listeners:
            self.publish("lm_call", redact(call))

    def lm_call_log(self) -> list[dict[str, Any]]:
        """The recent LM-call records, oldest first, with secrets masked (what inspect shows)."""
        return [redact(call) for call in list(self.recent_lm_calls)]

    def uptime(self) -> float:
        return float(time.monotonic() - self.started)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until nothing is in flight; False if the timeout came first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self.inflight or self._accepted:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining if remaining is None else min(remaining, 0.05))
        return True

    def fail_unfinished(self, exc: BridgeError) -> int:
        """Answers every accepted request that has no reply yet with `exc` (a drain giving
        up); their handlers' late replies are dropped. Returns how many were answered."""
        with self._idle:
            pending = [once for once in self._accepted if not once.answered]
        for once in pending:
            self._reply_error(once.request_id, exc, once)  # type: ignore[arg-type]
        return len(pending)

    def cancel_all(self) -> None:
        for entry in list(self.inflight.values()):
            entry.cancel.set()

    def close(self, wait: bool = False) -> None:
        self.cancel_all()
        self.jobs.cancel_all()
        self.executor.shutdown(wait=wait, cancel_futures=True)
