"""Two-way frames: events a request asked for, callbacks into the client, cancellation,
deadlines, and replies that come later than their handler returns.

Every frame the worker writes is a reply (`success`, exactly one per request) or an event
(`event`, never `success`), both carrying the request's id. A request gets events only
when it asked for them (`"stream": true`, or a client-side tool or metric, which needs
`callback` events), so existing clients never see one. See docs/protocol.md, "Two-way
frames".
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from .context import Context, OnceReply, Send
from .errors import BridgeError, CallbackFailed, Cancelled, DeadlineExceeded, InvalidArguments, LimitExceeded
from .redact import holds_known_secret, scrub_text
from .wire import codec, messages

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("dspex.twoway")

# Many callbacks may be outstanding at once (an agent's tools, an evaluation's metric on 16
# threads); the table is bounded all the same, since a client that never answers grows it.
MAX_OUTSTANDING_CALLBACKS = 10_000
DEFAULT_CALLBACK_TIMEOUT_MS = 30_000
# A day: longer budgets are almost certainly unit mistakes (seconds sent as ms are not).
MAX_DEADLINE_MS = 86_400_000


class Deferred:
    """What a handler returns when its reply comes later (a job it waits for): the
    request's scheduling slot is freed at once, and the reply is sent when `future` ends."""

    __slots__ = ("future",)

    def __init__(self, future: Future[dict[str, Any]] | None = None) -> None:
        self.future: Future[dict[str, Any]] = future or Future()


def _positive_ms(value: Any, name: str, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidArguments(f"'{name}' must be a positive number of milliseconds")
    return float(min(value, maximum))


class RequestOptions:
    """The two-way options of one request, read once at arrival."""

    __slots__ = ("stream", "deadline_ms", "callback_timeout_ms")

    def __init__(self, stream: bool = False, deadline_ms: float | None = None,
                 callback_timeout_ms: float = DEFAULT_CALLBACK_TIMEOUT_MS) -> None:
        self.stream = stream
        self.deadline_ms = deadline_ms
        self.callback_timeout_ms = callback_timeout_ms


PLAIN = RequestOptions()


def request_options(request: dict[str, Any], args: dict[str, Any]) -> RequestOptions:
    """`stream`, `deadline_ms` and `callback_timeout_ms`, from the request's args or its
    envelope (clients that build args only can still set them). Raises InvalidArguments."""
    def pick(name: str) -> Any:
        return args[name] if name in args else request.get(name)

    stream, deadline, callback_timeout = pick("stream"), pick("deadline_ms"), pick("callback_timeout_ms")
    if stream is None and deadline is None and callback_timeout is None:
        return PLAIN
    if stream is not None and not isinstance(stream, bool):
        raise InvalidArguments("'stream' must be true or false")
    return RequestOptions(
        bool(stream),
        None if deadline is None else _positive_ms(deadline, "deadline_ms", MAX_DEADLINE_MS),
        DEFAULT_CALLBACK_TIMEOUT_MS if callback_timeout is None
        else _positive_ms(callback_timeout, "callback_timeout_ms", MAX_DEADLINE_MS))


class RequestContext(Context):
    """The context of a scheduled request: it can be cancelled, have a deadline, send the
    events it asked for and call back into the client."""

    __slots__ = ("wants_events", "takes_callbacks", "deadline", "callback_timeout_s", "_once")

    def __init__(self, engine: Engine, request_id: Any, command: str, session_id: str,
                 once: OnceReply | None, options: RequestOptions = PLAIN, wants_events: bool = False,
                 cancel: threading.Event | None = None, takes_callbacks: bool = False) -> None:
        super().__init__(engine, request_id, command, session_id,
                         cancel if cancel is not None else once.cancel if once is not None else None)
        self._once = once
        self.wants_events = wants_events
        # Callback events, which a client tool or metric asks for without asking for the
        # stream (a streamed request may call back too); see enable_callbacks.
        self.takes_callbacks = wants_events or takes_callbacks
        self.deadline = None if options.deadline_ms is None else self.started + options.deadline_ms / 1000
        self.callback_timeout_s = options.callback_timeout_ms / 1000

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Sends one event of this request, if it asked for events and is not answered yet."""
        once = self._once
        if not (self.wants_events or (event == "callback" and self.takes_callbacks)) or once is None or once.answered:
            return
        self.engine.send_event(once, messages.event(self.request_id, event, data))

    def enable_callbacks(self) -> None:
        """Lets this request send `callback` events (and only those) although its args
        declare no client tool or metric: the hook for a handler that learns late that it
        needs the client, e.g. execute_program of a program built with client tools (the
        declarations live in the program, not in the request). Asking is what running such
        a program means, so the "events only when asked" rule holds."""
        self.takes_callbacks = True

    @property
    def answered(self) -> bool:
        """Whether the request's reply has gone (a callback then has nobody to ask)."""
        return self._once is not None and self._once.answered

    def remaining(self, cap: float | None = None) -> float | None:
        """Seconds left of the request's budget, at most `cap` (None: no bound at all)."""
        if self.deadline is None:
            return cap
        left = max(0.0, self.deadline - time.monotonic())
        return left if cap is None else min(cap, left)

    def callback(self, kind: str, name: str, args: dict[str, Any]) -> Any:
        """Asks the client to run its tool or metric `name` and waits for the answer."""
        return self.engine.callbacks.call(self, kind, name, args)

    def for_job(self, cancel: threading.Event) -> RequestContext:
        """The context a job of this request works in: the job's own cancel flag, this
        request's events and callbacks while the request waits for the job."""
        job_ctx = RequestContext(self.engine, self.request_id, self.command, self.session_id, self._once,
                                 cancel=cancel, wants_events=self.wants_events, takes_callbacks=self.takes_callbacks)
        job_ctx.deadline, job_ctx.callback_timeout_s = self.deadline, self.callback_timeout_s
        return job_ctx


class CallbackTable:
    """Callbacks sent to the client and not answered yet, by callback id."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: dict[str, tuple[Future[Any], Any, str, float]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.stray_answers = 0
        self.sent = 0

    def call(self, ctx: RequestContext, kind: str, name: str, args: dict[str, Any]) -> Any:
        if not ctx.takes_callbacks:
            raise CallbackFailed(f"{kind} {name} lives in the client, but this request takes no events")
        if ctx.answered:  # e.g. a job started with wait:false: no request waits to relay the callback
            raise CallbackFailed(f"{kind} {name} lives in the client, but its request was already answered")
        if ctx.cancel.is_set():
            raise Cancelled(f"Request cancelled: {kind} {name} not called")
        future: Future[Any] = Future()
        with self._lock:
            if len(self._pending) >= MAX_OUTSTANDING_CALLBACKS:
                raise LimitExceeded(f"{MAX_OUTSTANDING_CALLBACKS} callbacks are already waiting for the client")
            callback_id = f"c-{next(self._ids)}"
            self._pending[callback_id] = (future, ctx.request_id, name, time.monotonic())
            self.sent += 1
        ctx.note(phase="callback", callback=f"{kind} {name}")
        try:
            ctx.emit("callback", {"callback_id": callback_id, "kind": kind, "name": name, "args": args})
            timeout = ctx.remaining(ctx.callback_timeout_s) or 0.0
            waited_until = time.monotonic() + timeout
            while True:  # short steps, so a cancel or a deadline ends the wait at once
                if ctx.cancel.is_set():
                    raise Cancelled(f"Request cancelled while waiting for {kind} {name}")
                left = waited_until - time.monotonic()
                if left <= 0:
                    raise CallbackFailed(f"{kind} {name} was not answered within {timeout * 1000:.0f} ms")
                try:
                    return future.result(timeout=min(left, 0.05))
                except FutureTimeout:
                    continue
        finally:
            ctx.note(phase="running", callback=None)
            with self._lock:
                self._pending.pop(callback_id, None)

    def answer(self, frame: dict[str, Any]) -> None:
        """A client's answer frame `{callback_id, result}` or `{callback_id, error}`. A stray,
        duplicate or malformed answer is logged and counted, never fatal."""
        callback_id = frame.get("callback_id")
        with self._lock:
            entry = self._pending.get(callback_id) if isinstance(callback_id, str) else None
        if entry is None or entry[0].done():
            self._stray(f"answer for unknown or finished callback {messages.short_repr(callback_id)}")
            return
        future = entry[0]
        has_result, has_error = "result" in frame, "error" in frame
        if has_result == has_error:
            self._stray(f"callback {callback_id}: an answer needs exactly one of 'result' and 'error'")
            future.set_exception(CallbackFailed(f"the client's answer to {entry[2]} had "
                                                f"{'both' if has_result else 'neither'} 'result' and 'error'"))
        elif has_error:
            future.set_exception(CallbackFailed(f"{entry[2]} failed in the client: {scrub_text(str(frame['error']))[:2000]}"))
        else:
            future.set_result(frame["result"])

    def _stray(self, what: str) -> None:
        self.stray_answers += 1
        self.engine.stats.count_error("stray_callback_answer", protocol=True)
        log.warning("%s", what)

    def outstanding(self) -> list[dict[str, Any]]:
        """What inspect shows: each waiting callback's request, name and age."""
        now = time.monotonic()
        with self._lock:
            entries = list(self._pending.items())
        return [{"callback_id": cid, "request_id": rid, "name": name, "age_ms": round((now - at) * 1000, 1)}
                for cid, (_, rid, name, at) in entries]


class DeadlineTimer:
    """One thread for every request's deadline: a heap of (when, once), started on first use."""

    def __init__(self, expire: Callable[[OnceReply, float], None]) -> None:
        self._expire = expire
        self._heap: list[tuple[float, int, OnceReply, float]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, once: OnceReply, deadline_ms: float) -> None:
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + deadline_ms / 1000, next(self._order), once, deadline_ms))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dspex-deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, once, budget = heapq.heappop(self._heap)
            if not once.answered:
                try:
                    self._expire(once, budget)
                except Exception:  # the timer must outlive any one request
                    log.exception("deadline handling failed")


def asks_for_callbacks(args: dict[str, Any]) -> bool:
    """Whether a request declares a tool or metric that lives in the client (`"handler":
    "client"` in `tools` or `metric`): such a request takes callback events even unstreamed."""
    for value in (args.get("tools"), args.get("metric")):
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, dict) and item.get("handler") == "client" for item in items):
            return True
    return False


def encode_event(event: dict[str, Any]) -> bytes | None:
    """An event's bytes, or None (logged) when its data cannot be written."""
    try:
        return codec.encode(event)
    except BridgeError as exc:
        log.warning("event %s of request %s dropped: %s", event.get("event"), messages.short_repr(event.get("id")),
                    exc.message)
        return None


class TwoWayReplies:
    """The engine's part of two-way frames: deferred replies, events, cancel, deadlines.

    A mixin of `bridge.engine.Engine` (it uses the engine's accepted set, reply path and
    job table), kept here so the engine module stays about its one job, dispatch.
    """

    # What the engine provides (declared for readers and type checkers).
    twoway_counts: dict[str, int]
    _idle: threading.Condition
    _accepted: set[OnceReply]
    jobs: Any
    recent_frames: Any
    frame_taps: list[Any]
    _reply_error: Callable[..., None]
    _send: Callable[..., None]
    _leave_inflight: Callable[[int], None]
    _release: Callable[[OnceReply], None]

    def _defer(self, deferred: Deferred, request_id: Any, send: Send, key: int | None,
               finished: Callable[[BaseException | None], None]) -> None:
        """Sends the reply when the deferred result is there; frees what the request held."""
        def finish(future: Future[dict[str, Any]]) -> None:
            exc: BaseException | None = None
            try:
                exc = future.exception()
                if exc is not None:
                    self._reply_error(request_id, exc, send)
                else:
                    self._send(codec.encode(messages.reply(request_id, future.result())), send)
            except BaseException as failure:  # never lose the request's one reply
                exc = failure
                self._reply_error(request_id, failure, send)
            finally:
                finished(exc)
                if key is not None:
                    self._leave_inflight(key)
                if type(send) is OnceReply:
                    self._release(send)

        deferred.future.add_done_callback(finish)

    def send_event(self, once: OnceReply, event: dict[str, Any]) -> None:
        """Writes one event of an unanswered request (its reply has not gone yet)."""
        data = encode_event(event)
        if data is None or once.answered:
            return
        if holds_known_secret(data):
            data = messages.scrubbed_reply(data)
        self.twoway_counts["events_sent"] += 1
        now = time.monotonic()
        self.recent_frames.append(("out", now, data))
        for tap in self.frame_taps:
            tap("out", data, now)
        once.send(data)

    def cancel_request(self, request_id: Any, reason: str = "Cancelled by the client") -> bool:
        """Ends an accepted request now: it is answered `cancelled`, no further LM call or
        callback of it starts, and a job it waits for is cancelled. False when no unanswered
        request has that id."""
        with self._idle:
            targets = [once for once in self._accepted if not once.answered and once.request_id == request_id]
        if targets:
            self.twoway_counts["cancelled"] += 1
        for once in targets:
            once.cancel.set()
            self._reply_error(once.request_id, Cancelled(reason), once)  # type: ignore[arg-type]
        if targets:
            self.jobs.cancel_started_by(request_id)
        return bool(targets)

    def _expire(self, once: OnceReply, budget_ms: float) -> None:
        self.twoway_counts["expired"] += 1
        once.cancel.set()
        self._reply_error(once.request_id, DeadlineExceeded(  # type: ignore[arg-type]
            f"Request exceeded its deadline of {budget_ms:g} ms; its work was abandoned"), once)
        self.jobs.cancel_started_by(once.request_id)
