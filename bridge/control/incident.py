"""What an engineer needs during an incident: which requests are where, their stacks, and
a way to end one.

- `inflight_entries`: running requests with what their handlers noted (program, model,
  endpoint, phase, attempt) plus the accepted ones still waiting ("queued", "waiting on
  the session");
- `thread_stacks`: Python stacks of the worker's threads, taken with
  `sys._current_frames()` while the worker keeps serving; frames are `file:line function`
  only, never locals;
- `cancel_request`: ends a request as the protocol's cancel would (the caller gets
  `error_type: "cancelled"`).
"""

from __future__ import annotations

import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from .present import snapshot
from .security import ControlFailure

if TYPE_CHECKING:
    from ..context import Inflight, OnceReply
    from ..engine import Engine

# Deep recursion must not make a stack reply huge; the innermost frames matter most.
MAX_FRAMES = 200
QUEUED, WAITING_ON_SESSION = "queued", "waiting on the session"


class RequestNotFound(ControlFailure):
    def __init__(self, given: Any) -> None:
        super().__init__("request_not_found", f"no request {given!r} is queued or running in this worker "
                                              "(finished already? see `dspex inspect WORKER inflight`)")


def same_request(given: Any, request_id: Any) -> bool:
    """The CLI sends ids as typed text: `42` names the integer id 42 as well as the string."""
    return given == request_id or (not isinstance(request_id, (dict, list)) and str(given) == str(request_id))


def _running(engine: Engine) -> list[Inflight]:
    return snapshot(lambda: list(engine.inflight.values()))


def _accepted(engine: Engine) -> list[OnceReply]:
    return snapshot(lambda: list(engine._accepted))


def inflight_entries(engine: Engine) -> list[dict[str, Any]]:
    """Every request the worker holds, the longest-waiting first."""
    now, wall = time.monotonic(), time.time()
    running = _running(engine)
    running_ids = {repr(e.request_id) for e in running}
    busy_sessions = {e.session_id for e in running}
    entries: list[dict[str, Any]] = []
    for e in running:
        detail = dict(e.detail)
        entry = {"id": e.request_id, "command": e.command, "session_id": e.session_id,
                 "age_ms": round((now - e.started) * 1000, 1), "cancelled": e.cancel.is_set(),
                 "thread": e.thread, **detail, "phase": detail.get("phase", "running")}
        started = detail.get("lm_call_started")
        if entry["phase"] == "lm_call" and isinstance(started, (int, float)):
            entry["lm_call_ms"] = round((wall - started) * 1000, 1)
        entries.append(entry)
    for once in _accepted(engine):
        if once.answered or repr(once.request_id) in running_ids:
            continue
        phase = WAITING_ON_SESSION if once.session_id in busy_sessions else QUEUED
        entries.append({"id": once.request_id, "command": once.command, "session_id": once.session_id,
                        "age_ms": round((now - once.accepted_at) * 1000, 1), "cancelled": False,
                        "phase": phase, "thread": None})
    entries.sort(key=lambda w: -w["age_ms"])
    return entries


# -- stacks ---------------------------------------------------------------------------------


def _frames_of(frame: FrameType | None) -> list[dict[str, Any]]:
    """Outermost first, as a traceback reads; no locals, no source text."""
    frames = []
    while frame is not None and len(frames) < MAX_FRAMES:
        code = frame.f_code
        frames.append({"file": code.co_filename, "line": frame.f_lineno, "function": code.co_name})
        frame = frame.f_back
    frames.reverse()
    return frames


def _task_frames(task: Any) -> list[dict[str, Any]]:
    """A task's await chain, outermost first: where a suspended coroutine waits (an LM
    call's HTTP read), which no thread's stack shows. Read from another thread, so a task
    that moves on meanwhile gives a stale chain, never an error."""
    frames: list[dict[str, Any]] = []
    try:
        awaitable = task.get_coro()
        while awaitable is not None and len(frames) < MAX_FRAMES:
            frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
            if frame is not None:
                code = frame.f_code
                frames.append({"file": code.co_filename, "line": frame.f_lineno, "function": code.co_name})
            awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    except Exception:  # the coroutine changed under us: what was read so far stands
        pass
    return frames


def _task_entries(entries: list[Inflight]) -> list[dict[str, Any]]:
    return [{"ident": None, "name": f"asyncio task {entry.task.get_name()}", "daemon": True,
             "requests": [entry.request_id], "inspector": False, "frames": _task_frames(entry.task)}
            for entry in entries if entry.task is not None and not entry.task.done()]


def thread_stacks(engine: Engine, request_id: Any = None) -> dict[str, Any]:
    """The stacks of all threads, or of those serving one request (its own thread and any
    helper it handed work to, such as an LM call under a deadline)."""
    serving: dict[int, list[Any]] = {}
    wanted: set[int] | None = None
    target: Inflight | None = None
    for entry in _running(engine):
        for ident in (entry.thread, *entry.threads):
            if ident is not None:
                serving.setdefault(ident, []).append(entry.request_id)
        if request_id is not None and target is None and same_request(request_id, entry.request_id):
            target = entry
    if request_id is not None:
        if target is None:
            if any(same_request(request_id, o.request_id) for o in _accepted(engine) if not o.answered):
                return {"request_id": request_id, "phase": QUEUED, "threads": [],
                        "note": "the request is queued: no thread serves it yet"}
            raise RequestNotFound(request_id)
        wanted = {ident for ident in (target.thread, *target.threads) if ident is not None}
    names = {t.ident: t for t in threading.enumerate()}
    frames = sys._current_frames()
    me = threading.get_ident()
    threads = []
    for ident, frame in frames.items():
        if wanted is not None and ident not in wanted:
            continue
        thread = names.get(ident)
        threads.append({"ident": ident, "name": thread.name if thread else f"thread-{ident}",
                        "daemon": bool(thread and thread.daemon), "requests": serving.get(ident, []),
                        "inspector": ident == me, "frames": _frames_of(frame)})
    del frames  # frames hold references to every local of every thread
    threads.sort(key=lambda t: (not t["requests"], t["inspector"], t["name"]))
    # Requests served by asyncio tasks: their await chains first, where the work waits.
    threads[:0] = _task_entries([target] if target is not None else list(_running(engine)))
    out: dict[str, Any] = {"threads": threads, "total": len(threads)}
    if target is not None:
        out.update(request_id=target.request_id, command=target.command, session_id=target.session_id,
                   phase=target.detail.get("phase", "running"))
    return out


# -- cancelling ------------------------------------------------------------------------------


def find_request_id(engine: Engine, given: Any) -> Any:
    """The id, as the worker holds it, of a queued or running request named by `given`."""
    for entry in _running(engine):
        if same_request(given, entry.request_id):
            return entry.request_id
    for once in _accepted(engine):
        if not once.answered and same_request(given, once.request_id):
            return once.request_id
    raise RequestNotFound(given)


def cancel_request(engine: Engine, given: Any, reason: str) -> dict[str, Any]:
    """Ends a request now: its caller gets `cancelled`, its handler's cancel event is set
    (LM calls it has not started yet are refused) and its late reply is dropped."""
    request_id = find_request_id(engine, given)
    if not engine.cancel_request(request_id, reason=reason):
        raise RequestNotFound(given)
    return {"request_id": request_id, "cancelled": True, "reason": reason}


__all__ = ["RequestNotFound", "cancel_request", "find_request_id", "inflight_entries", "same_request",
           "thread_stacks"]
