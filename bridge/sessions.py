"""Per-session state: the session's data and one slot per framework adapter.

Everything a request creates lives in the namespace of one session id ("anonymous" when
a request names none), in both modes, so two Elixir sessions never see each other's
state. What an adapter keeps per session (DSPy: programs and the session's LM) lives in
that adapter's slot, made by the adapter on first use.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .errors import LimitExceeded
from .plain_record import PlainRecord

if TYPE_CHECKING:
    from .adapter import Adapter

ANONYMOUS = "anonymous"


class Session(PlainRecord):
    """One client session: its data and each adapter's state (a plain record, see
    bridge.plain_record)."""

    _fields = ("session_id", "data", "state", "created_at", "last_activity", "_slot_lock")
    _hidden = frozenset({"_slot_lock"})

    def __init__(self, session_id: str, data: dict[str, Any] | None = None, state: dict[str, Any] | None = None,
                 created_at: float | None = None, last_activity: float | None = None) -> None:
        self.session_id = session_id
        self.data: dict[str, Any] = {} if data is None else data
        # adapter name -> that adapter's per-session state
        self.state: dict[str, Any] = {} if state is None else state
        self.created_at = time.time() if created_at is None else created_at
        self.last_activity = time.time() if last_activity is None else last_activity
        self._slot_lock = threading.Lock()

    def slot(self, adapter: Adapter) -> Any:
        """The adapter's state in this session, made on first use."""
        state = self.state.get(adapter.name)
        if state is None:
            with self._slot_lock:
                state = self.state.get(adapter.name)
                if state is None:
                    state = self.state[adapter.name] = adapter.new_session_state()
        return state

    def touch(self) -> None:
        self.last_activity = time.time()

    def check_data_room(self, new_keys: int) -> None:
        """Refuses data that would take the session past MAX_DATA_KEYS keys."""
        if len(self.data) + new_keys > MAX_DATA_KEYS:
            raise LimitExceeded(f"Session {self.session_id!r} would hold more than {MAX_DATA_KEYS} data keys")


# Sessions are created by any request that names one: a client must not be able to grow
# the table without bound (cleanup_session and cleanup free places).
DEFAULT_MAX_SESSIONS = 10_000
# Likewise session data keys.
MAX_DATA_KEYS = 10_000


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

