"""Rates and subscriptions: what the control socket samples and streams from the engine.

The engine's hot path only appends to a subscriber's bounded queue; formatting and
sending happen on the subscriber's own connection thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .present import snapshot

if TYPE_CHECKING:
    from ..engine import Engine

SUBSCRIPTION_QUEUE = 2000


class RateSampler:
    """Samples the engine's counters once a second so status can report recent rates."""

    def __init__(self, engine: Engine, period: float = 1.0, keep: int = 62) -> None:
        self.engine = engine
        self.period = period
        self.samples: deque[tuple[float, int, int, int, int]] = deque(maxlen=keep)
        self.stopped = threading.Event()
        self.sample()

    def sample(self) -> None:
        self.samples.append(self._now())

    def _now(self) -> tuple[float, int, int, int, int]:
        stats = self.engine.stats
        return (time.monotonic(), stats.command_count, stats.error_count, stats.lm_calls,
                int(stats.usage.get("total_tokens", 0)))

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            self.sample()

    def rates(self) -> dict[str, dict[str, float]]:
        now = self._now()
        samples = snapshot(lambda: list(self.samples))
        out: dict[str, dict[str, float]] = {}
        for label, window in (("10s", 10.0), ("60s", 60.0)):
            base = next((s for s in samples if now[0] - s[0] <= window + 0.5), samples[0] if samples else now)
            span = max(now[0] - base[0], 1e-3)
            out[label] = {"window_s": round(span, 1),
                          "requests_per_s": round(max(0, now[1] - base[1]) / span, 3),
                          "errors_per_s": round(max(0, now[2] - base[2]) / span, 3),
                          "lm_calls_per_s": round(max(0, now[3] - base[3]) / span, 3),
                          "tokens_per_min": round(max(0, now[4] - base[4]) * 60 / span, 1)}
        uptime = max(self.engine.uptime(), 1e-3)
        out["lifetime"] = {"window_s": round(uptime, 1), "requests_per_s": round(now[1] / uptime, 3),
                           "errors_per_s": round(now[2] / uptime, 3),
                           "lm_calls_per_s": round(now[3] / uptime, 3),
                           "tokens_per_min": round(now[4] * 60 / uptime, 1)}
        return out


# -- subscriptions ---------------------------------------------------------------------------


class Subscription:
    """A subscriber's queue. The hot path only appends to it; the subscriber's thread does the rest."""

    def __init__(self, frames: bool, events: bool) -> None:
        self.frames = frames
        self.events = events
        self.queue: deque[tuple[str, Any, Any, float]] = deque(maxlen=SUBSCRIPTION_QUEUE)
        # Approximate (unlocked) count of items the full queue pushed out: reported, not exact.
        self.dropped = 0

    def push(self, item: tuple[str, Any, Any, float]) -> None:
        if len(self.queue) == SUBSCRIPTION_QUEUE:
            self.dropped += 1
        self.queue.append(item)


class SubscriptionHub:
    """One frame tap and one listener shared by every subscriber, installed on first use."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._installed = False

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            # Copy-on-write: the hot path iterates the list without a lock.
            self.subscribers = [*self.subscribers, subscription]
            if not self._installed:
                # Appended once and never removed, so the engine's loops over its taps and
                # listeners are never disturbed by a subscriber leaving.
                self.engine.frame_taps.append(self._tap)
                self.engine.listeners.append(self._listen)
                self._installed = True

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            self.subscribers = [s for s in self.subscribers if s is not subscription]

    def _tap(self, direction: str, payload: bytes, at: float) -> None:
        for sub in self.subscribers:
            if sub.frames:
                sub.push(("frame", direction, payload, at))

    def _listen(self, kind: str, data: dict[str, Any]) -> None:
        now = time.monotonic()
        for sub in self.subscribers:
            if sub.events:
                sub.push(("event", kind, data, now))

