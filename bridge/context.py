"""What one request carries through the engine: its context, its in-flight entry, and
the once-only reply channel a drain relies on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import InvalidArguments
from .plain_record import PlainRecord
from .sessions import ANONYMOUS, Session

if TYPE_CHECKING:
    from .engine import Engine

Send = Callable[[bytes], None]


class Inflight(PlainRecord):
    """One request being worked on; what `inspect inflight` shows (a plain record, see
    bridge.plain_record)."""

    _fields = ("request_id", "command", "session_id", "started", "cancel", "detail", "thread", "threads", "task")

    def __init__(self, request_id: Any, command: str, session_id: str, started: float, cancel: threading.Event,
                 detail: dict[str, Any] | None = None, thread: int | None = None, threads: tuple[int, ...] = (),
                 task: Any = None) -> None:
        self.request_id = request_id
        self.command = command
        self.session_id = session_id
        self.started = started  # monotonic
        self.cancel = cancel
        # What handlers said about their progress through Context.note (program, model,
        # endpoint, phase, attempt); read by `inspect inflight` and `dspex top`.
        self.detail: dict[str, Any] = {} if detail is None else detail
        # The thread serving the request, and any helper thread it handed its work to (an LM
        # call under a deadline): `inspect stack REQUEST_ID` shows these threads' stacks.
        self.thread = thread
        self.threads = threads
        # The asyncio task serving it on an event loop (the DSPy adapter's lane): a suspended
        # coroutine is on no thread's stack, so `stack` walks the task's await chain instead.
        self.task = task


# Notes a handler may make are values for a table a client can see; a runaway handler
# must not grow one request's entry without bound.
MAX_NOTE_FIELDS = 32


class OnceReply:
    """The reply channel of one accepted request: lets exactly one reply through.

    A drain that gives up on a request answers it with an error; the real reply, should
    the handler finish later, must then be dropped, never sent as a second answer.
    """

    __slots__ = ("request_id", "send", "_lock", "answered", "cancel", "command", "session_id", "accepted_at")

    def __init__(self, request_id: Any, send: Send, command: str = "", session_id: str = "") -> None:
        self.request_id = request_id
        self.send = send
        self._lock = threading.Lock()
        self.answered = False
        # Set by a `cancel` or an expired deadline: the handler's context shares it.
        self.cancel = threading.Event()
        # Kept so a request that waits for a thread or its session shows up as "queued".
        self.command = command
        self.session_id = session_id
        self.accepted_at = time.monotonic()

    def claim(self) -> bool:
        """True for the first reply only."""
        with self._lock:
            if self.answered:
                return False
            self.answered = True
            return True


class Context:
    """What a handler gets besides its args: the engine, its session, its request."""

    # `inflight` is set only for scheduled requests (never on the inline ping path, which
    # leaves the slot empty: `note` reads it with getattr).
    __slots__ = ("engine", "request_id", "command", "session_id", "cancel", "started", "inflight")

    # An inline request (ping) never streams, has no deadline and cannot call back:
    # bridge.twoway.RequestContext, the context of scheduled requests, overrides these.
    wants_events = False
    deadline: float | None = None

    def __init__(self, engine: Engine, request_id: Any, command: str, session_id: str,
                 cancel: threading.Event | None = None) -> None:
        self.engine = engine
        self.request_id = request_id
        self.command = command
        self.session_id = session_id
        self.cancel = cancel or threading.Event()
        self.started = time.monotonic()

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Sends an event of this request if it asked for events (never, for this base)."""

    def remaining(self, cap: float | None = None) -> float | None:
        """Seconds left of the request's budget, at most `cap`; no budget here."""
        return cap

    def callback(self, kind: str, name: str, args: dict[str, Any]) -> Any:
        """Calls a tool or metric that lives in the client (scheduled requests only)."""
        from .twoway import CallbackFailed

        raise CallbackFailed(f"{kind} {name} lives in the client; this request cannot call back")

    @property
    def session(self) -> Session:
        """The request's session, created on first use."""
        session = self.engine.sessions.get(self.session_id)
        session.touch()
        return session

    def note(self, **fields: Any) -> None:
        """Tells inspectors what this request is doing (phase, program_id, model, endpoint,
        attempt ...). Cheap: one dict update; nothing at all for inline commands."""
        entry: Inflight | None = getattr(self, "inflight", None)
        if entry is None:
            return
        detail = entry.detail
        if len(detail) + len(fields) > MAX_NOTE_FIELDS and not detail.keys() >= fields.keys():
            return
        detail.update(fields)

    def note_task(self, task: Any) -> None:
        """Records the asyncio task that works for this request (for `stack`)."""
        entry: Inflight | None = getattr(self, "inflight", None)
        if entry is not None:
            entry.task = task

    def note_thread(self) -> None:
        """Records the calling thread as one that works for this request (for `stack`)."""
        entry: Inflight | None = getattr(self, "inflight", None)
        if entry is None:
            return
        ident = threading.get_ident()
        if ident != entry.thread and ident not in entry.threads:
            entry.threads = (*entry.threads[-7:], ident)



MAX_SESSION_ID = 256


def session_of(args: dict[str, Any]) -> str:
    """The namespace a request belongs to; "anonymous" when it names none.

    Strings and integers only (Elixir sends one or the other), of bounded length: the id
    becomes a key of tables the worker keeps.
    """
    value = args.get("session_id")
    if value is None or value == "":
        return ANONYMOUS
    if type(value) is str:
        if len(value) > MAX_SESSION_ID:
            raise InvalidArguments(f"'session_id' is longer than {MAX_SESSION_ID} characters")
        return value
    if type(value) is int:
        return str(value)
    raise InvalidArguments(f"'session_id' must be a string or an integer, got {type(value).__name__}")
