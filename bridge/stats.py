"""The worker's counters: what get_stats, inspect and the metrics report."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    """Counters for get_stats and inspect. One lock: requests finish on many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.command_count = 0
        self.error_count = 0
        self.protocol_errors = 0
        self.by_command: Counter[str] = Counter()
        self.errors_by_type: Counter[str] = Counter()
        self.lm_calls = 0
        self.usage: Counter[str] = Counter()

    def count_command(self, name: str) -> None:
        # No lock: only the thread that submits requests (the reader, in a worker)
        # counts commands, and this runs for every ping, where a lock is a measurable cost.
        self.command_count += 1
        self.by_command[name] += 1

    def count_error(self, error_type: str, protocol: bool = False) -> None:
        with self._lock:
            self.error_count += 1
            self.errors_by_type[error_type] += 1
            if protocol:
                self.protocol_errors += 1

    def count_lm_call(self, usage: dict[str, Any]) -> None:
        with self._lock:
            self.lm_calls += 1
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                value = usage.get(key)
                if isinstance(value, int):
                    self.usage[key] += value

    def reset(self) -> tuple[int, int]:
        with self._lock:
            commands, errors = self.command_count, self.error_count
            self.command_count = self.error_count = self.protocol_errors = 0
            self.by_command.clear()
            self.errors_by_type.clear()
            return commands, errors
