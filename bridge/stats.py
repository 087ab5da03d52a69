"""The worker's counters: what get_stats, inspect and the metrics report."""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import Counter
from typing import Any

# Upper bounds (seconds) of the latency histograms' buckets; the last bucket is +Inf.
# Fixed, so a histogram is one list of integers and an observation one bisect.
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                      30.0, 60.0, 120.0)
# LM models are named by clients: beyond this many, further models are counted together.
MAX_MODELS = 64
OTHER_MODELS = "(other)"
# Outcome names are error types (a closed set in practice); bounded all the same.
MAX_OUTCOMES = 256


class Histogram:
    """Counts per fixed bucket (not cumulative), their sum and count: Prometheus's shape."""

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for value in self.counts:
            running += value
            out.append(running)
        return out

    def copy(self) -> Histogram:
        twin = Histogram()
        twin.counts = list(self.counts)
        twin.total, twin.count = self.total, self.count
        return twin


class ModelTotals:
    """One LM model's calls, failures, tokens, cost and latency."""

    __slots__ = ("calls", "failures", "tokens", "cost", "latency")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.tokens: Counter[str] = Counter()
        self.cost = 0.0
        self.latency = Histogram()


class Stats:
    """Counters for get_stats and inspect. One lock: requests finish on many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counted = 0
        # Pings answered from the cached reply (bridge.ping_reply), counted apart: on their
        # path one attribute increment is all the counting, where the command count and the
        # per-name table cost ~900 instructions of a ping's ~25,000. The figures read below
        # (command_count, by_command) include them.
        self.pings = 0
        self.error_count = 0
        self.protocol_errors = 0
        # A plain dict, not a Counter: Counter defines __delitem__, which makes every
        # `counter[key] = value` a call through Python's slot machinery, ~10x a dict's store.
        # Keys are registered commands only (a bounded set).
        self._by_command: dict[str, int] = {}
        self.errors_by_type: Counter[str] = Counter()
        self.lm_calls = 0
        self.usage: Counter[str] = Counter()
        self.cost = 0.0
        # Scheduled requests only (inline ones such as ping are counted in by_command and
        # never timed: timing them would cost more than answering them).
        self.finished: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.by_model: dict[str, ModelTotals] = {}

    def count_command(self, name: str) -> None:
        # No lock: only the thread that submits requests (the reader, in a worker)
        # counts commands, and this runs for every request, where a lock is a measurable cost.
        self._counted += 1
        counts = self._by_command
        counts[name] = counts.get(name, 0) + 1

    @property
    def command_count(self) -> int:
        """Requests received (valid or not), pings included."""
        return self._counted + self.pings

    @property
    def by_command(self) -> dict[str, int]:
        """Requests received per command name (a copy), pings included."""
        counts = dict(self._by_command)
        if self.pings:
            counts["ping"] = counts.get("ping", 0) + self.pings
        return counts

    def count_error(self, error_type: str, protocol: bool = False) -> None:
        with self._lock:
            self.error_count += 1
            self.errors_by_type[error_type] += 1
            if protocol:
                self.protocol_errors += 1

    def count_finished(self, command: str, seconds: float, outcome: str) -> None:
        """A scheduled request ended ("ok" or its error type) after `seconds`."""
        with self._lock:
            key = (command, outcome)
            if key not in self.finished and len(self.finished) >= MAX_OUTCOMES:
                key = (command, "other")
            self.finished[key] += 1
            histogram = self.latency.get(command)
            if histogram is None:
                histogram = self.latency[command] = Histogram()
            histogram.observe(seconds)

    def count_lm_call(self, usage: dict[str, Any], model: Any = None, cost: Any = None,
                      latency_ms: Any = None, failed: bool = False) -> None:
        with self._lock:
            self.lm_calls += 1
            name = str(model) if model else "unknown"
            totals = self.by_model.get(name)
            if totals is None:
                if len(self.by_model) >= MAX_MODELS:
                    name = OTHER_MODELS
                totals = self.by_model.setdefault(name, ModelTotals())
            totals.calls += 1
            totals.failures += 1 if failed else 0
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    self.usage[key] += value
                    totals.tokens[key] += value
            if isinstance(cost, (int, float)) and not isinstance(cost, bool) and math.isfinite(cost):
                self.cost += cost
                totals.cost += cost
            if isinstance(latency_ms, (int, float)) and not isinstance(latency_ms, bool):
                totals.latency.observe(latency_ms / 1000)

    def metrics_snapshot(self) -> dict[str, Any]:
        """Consistent copies of the histograms and per-model totals, for /metrics."""
        with self._lock:
            return {
                "finished": dict(self.finished),
                "latency": {name: h.copy() for name, h in self.latency.items()},
                "by_model": {name: {"calls": t.calls, "failures": t.failures, "tokens": dict(t.tokens),
                                    "cost": t.cost, "latency": t.latency.copy()}
                             for name, t in self.by_model.items()},
                "errors_by_type": dict(self.errors_by_type), "error_count": self.error_count,
                "protocol_errors": self.protocol_errors, "lm_calls": self.lm_calls, "cost": self.cost,
                "usage": dict(self.usage),
            }

    def reset(self) -> tuple[int, int]:
        with self._lock:
            commands, errors = self.command_count, self.error_count
            self._counted = self.pings = self.error_count = self.protocol_errors = 0
            self._by_command.clear()
            self.errors_by_type.clear()
            return commands, errors
