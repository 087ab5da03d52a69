"""Per-session state: programs, the session's LM and its data.

Every program lives in the namespace of one session id ("anonymous" when a request
names none), in both modes, so two Elixir sessions never see each other's programs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import LimitExceeded

ANONYMOUS = "anonymous"


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
class Session:
    session_id: str
    programs: dict[str, ProgramRecord] = field(default_factory=dict)
    lm: LMHandle | None = None
    data: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)

    def touch(self) -> None:
        self.last_activity = time.time()


# Sessions are created by any request that names one: a client must not be able to grow
# the table without bound (cleanup_session and cleanup free places).
DEFAULT_MAX_SESSIONS = 10_000


class SessionStore:
    """All sessions of one worker. Structural changes are guarded by one lock."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.max_sessions = max_sessions

    def get(self, session_id: str) -> Session:
        """The session, created on first use (Elixir never announces sessions)."""
        session = self._sessions.get(session_id)
        if session is None:
            with self._lock:
                session = self._sessions.get(session_id)
                if session is None:
                    if len(self._sessions) >= self.max_sessions:
                        raise LimitExceeded(f"This worker already holds {self.max_sessions} sessions; "
                                            "send cleanup_session for finished ones")
                    session = self._sessions[session_id] = Session(session_id)
        return session

    def peek(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def drop(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.pop(session_id, None)

    def clear(self) -> list[Session]:
        with self._lock:
            dropped = list(self._sessions.values())
            self._sessions.clear()
            return dropped

    def all(self) -> list[Session]:
        return list(self._sessions.values())

    def program_count(self) -> int:
        return sum(len(s.programs) for s in self.all())
