"""What the DSPy adapter keeps: per session its programs and LM, per worker the default LM."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

# Programs are created by any request (each holds a DSPy module): bounded per worker.
MAX_PROGRAMS = 10_000

TOKEN_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass
class UsageTotals:
    """LM calls, tokens and cost summed over a program's or a session's calls.

    Cost sums only the calls whose price was known; `unpriced_calls` says how many were
    not, so a total of 0.0 is never mistaken for "free" when the model has no price.
    """

    lm_calls: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    unpriced_calls: int = 0
    # Calls of concurrent requests and job threads land here at the same time.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, usage: dict[str, Any], cost: float | None) -> None:
        with self.lock:
            self.lm_calls += 1
            for key in TOKEN_KEYS:
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    self.tokens[key] = self.tokens.get(key, 0) + value
            if isinstance(cost, (int, float)) and not isinstance(cost, bool):
                self.cost += float(cost)
            else:
                self.unpriced_calls += 1

    def view(self) -> dict[str, Any]:
        with self.lock:
            return {"lm_calls": self.lm_calls, "tokens": dict(self.tokens), "cost": round(self.cost, 10),
                    "unpriced_calls": self.unpriced_calls}


@dataclass
class ProgramRecord:
    """A created program and the bookkeeping that list/info/inspect report."""

    program_id: str
    program: Any  # the DSPy module; Any because bridge must not import dspy eagerly
    program_type: str
    signature: dict[str, Any]  # SignatureSpec.to_dict()
    description: dict[str, Any]  # what create_program returned, reused as program_data
    created_at: float = field(default_factory=time.time)
    execution_count: int = 0
    error_count: int = 0
    last_executed: float | None = None
    total_latency_ms: float = 0.0
    # The program's own LM (legacy create_gemini_program with a `model`), built on first use.
    own_lm: LMHandle | None = None
    # Every LM call made for this program: executions, evaluations, batches.
    usage: UsageTotals = field(default_factory=UsageTotals)
    # Executions run concurrently; their counters must not lose updates.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_execution(self, latency_ms: float, ok: bool) -> None:
        with self.lock:
            self.execution_count += 1
            if not ok:
                self.error_count += 1
            self.last_executed = time.time()
            self.total_latency_ms += latency_ms

    @property
    def mean_latency_ms(self) -> float | None:
        return self.total_latency_ms / self.execution_count if self.execution_count else None


@dataclass
class LMHandle:
    """A configured LM: the DSPy object plus a secret-free description of it."""

    lm: Any
    public: dict[str, Any]  # model, provider, temperature, ... never the api_key

    @property
    def model(self) -> str:
        return str(self.public.get("model"))


@dataclass
class DSPySession:
    """The DSPy adapter's slot in one session."""

    programs: dict[str, ProgramRecord] = field(default_factory=dict)
    lm: LMHandle | None = None
    # Every LM call made for this session's requests and jobs.
    usage: UsageTotals = field(default_factory=UsageTotals)
