"""Worker-level commands of the contract: health, stats, sessions, lifecycle."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from ..dspy_loader import dspy_available, is_loaded
from ..engine import Context
from ..errors import InvalidArguments
from ..registry import Arg, command
from ..system import memory_usage


@functools.lru_cache(maxsize=1)
def gemini_available() -> bool:
    """Gemini is served through DSPy, so it needs DSPy and a key in the environment."""
    return dspy_available() and bool(os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"))


# The contract allows any args on a ping, so none is type-checked: a pool sending
# `initialization: "true"` must still get its answer.
@command("ping", read_only=True, scheduling="inline", args=(
    Arg("initialization", "any", help="sent by pools on the init ping"),
    Arg("worker_id", "any", help="echoed back by pools"),
))
def ping(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Health check: answered at once, even while LM calls run."""
    engine = ctx.engine
    reply = {
        "status": "shutting_down" if engine.shutting_down.is_set() else "ok",
        "timestamp": time.time(),
        "uptime": time.monotonic() - engine.started,
        # Whether the background import has finished: benchmarks and health checks wait on it.
        "dspy_loaded": is_loaded(),
        "mode": engine.config.mode,
        "dspy_available": dspy_available(),
        "gemini_available": gemini_available(),
        "worker_id": engine.worker_id,
    }
    if engine.startup_lm is not None and engine.default_lm is not None:
        # Only for a worker started with --lm / DSPEX_LM, so replies recorded without one replay exactly.
        reply["lm_model"] = engine.default_lm.model
    return reply


@command("get_stats", read_only=True, scheduling="inline")
def get_stats(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Counters, memory and uptime of this worker."""
    engine = ctx.engine
    stats = engine.stats
    reply = {
        "programs_count": engine.sessions.program_count(),
        "sessions_count": len(engine.sessions.all()),
        "command_count": stats.command_count,
        "error_count": stats.error_count,
        "protocol_errors": stats.protocol_errors,
        "errors_by_type": dict(stats.errors_by_type),
        "commands_by_name": dict(stats.by_command),
        "inflight": len(engine.inflight),  # inline commands such as this one are never in it
        "lm_calls": stats.lm_calls,
        "usage": dict(stats.usage),
        "uptime": engine.uptime(),
        "memory_usage": memory_usage(),
        "dspy_available": dspy_available(),
        "gemini_available": gemini_available(),
        "mode": engine.config.mode,
        "worker_id": engine.worker_id,
    }
    if engine.startup_lm is not None and engine.default_lm is not None:
        reply["lm_model"] = engine.default_lm.model
    return reply


@command("cleanup", destructive=True, scheduling="global")
def cleanup(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drops every program of every session (the standalone bridge's farewell)."""
    removed = sum(len(s.programs) for s in ctx.engine.sessions.all())
    for session in ctx.engine.sessions.all():
        session.programs.clear()
    return {"status": "cleaned", "programs_removed": removed}


@command("reset_state", destructive=True, scheduling="global")
def reset_state(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drops all sessions, programs and LMs and zeroes the counters."""
    engine = ctx.engine
    dropped = engine.sessions.clear()
    engine.default_lm = engine.startup_lm  # back to the worker's own LM (--lm), if any
    commands, errors = engine.stats.reset()
    return {"status": "reset", "programs_cleared": sum(len(s.programs) for s in dropped),
            "sessions_cleared": len(dropped), "commands_reset": commands, "errors_reset": errors}


@command("cleanup_session", destructive=True, args=(Arg("session_id", "string", help="the session to drop"),))
def cleanup_session(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drops one session's programs, LM and data; other sessions are untouched."""
    session_id = args.get("session_id")
    if not session_id:
        raise InvalidArguments("Session ID required for cleanup")
    dropped = ctx.engine.sessions.drop(session_id)
    return {"status": "cleaned", "session_id": session_id,
            "programs_removed": len(dropped.programs) if dropped else 0}


@command("list_sessions", read_only=True, scheduling="inline")
def list_sessions(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The sessions this worker holds, with their program counts and LMs."""
    sessions = [{"session_id": s.session_id, "programs": sorted(s.programs),
                 "lm": s.lm.public if s.lm else None, "data_keys": sorted(s.data),
                 "created_at": s.created_at, "last_activity": s.last_activity}
                for s in ctx.engine.sessions.all()]
    return {"sessions": sessions, "total_count": len(sessions)}


@command("shutdown", destructive=True, scheduling="inline", args=(Arg("worker_id", "any"),))
def shutdown(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Replies, then the worker exits once in-flight work has finished."""
    engine = ctx.engine
    sessions = len(engine.sessions.all())
    engine.shutting_down.set()
    if engine.on_shutdown is not None:
        engine.on_shutdown()
    return {"status": "shutting_down", "worker_id": args.get("worker_id", engine.worker_id),
            "mode": engine.config.mode, "sessions_cleaned": sessions}



@command("get_session_data", read_only=True, args=(
    Arg("session_id", "string"), Arg("key", "string", help="one key; all data when absent"),
))
def get_session_data(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Reads data the Elixir side stored in a session."""
    session = ctx.engine.sessions.get(ctx.session_id)
    key = args.get("key")
    if key is None:
        return {"session_id": ctx.session_id, "data": dict(session.data)}
    return {"session_id": ctx.session_id, "key": key, "value": session.data.get(key),
            "found": key in session.data}


@command("update_session_data", args=(
    Arg("session_id", "string"),
    Arg("operation", "string", help="set (default), delete, merge or clear"),
    Arg("key", "string"), Arg("value", "any"), Arg("data", "object", help="for merge"),
))
def update_session_data(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Stores, merges or deletes data in a session."""
    session = ctx.session
    operation = args.get("operation") or "set"
    key = args.get("key")
    if operation == "set":
        if key is None:
            raise InvalidArguments("update_session_data: 'key' is required for set")
        if key not in session.data:
            session.check_data_room(1)
        session.data[key] = args.get("value")
    elif operation == "delete":
        if key is None:
            raise InvalidArguments("update_session_data: 'key' is required for delete")
        session.data.pop(key, None)
    elif operation == "merge":
        data = args.get("data")
        if not isinstance(data, dict):
            raise InvalidArguments("update_session_data: 'data' object is required for merge")
        session.check_data_room(len(data.keys() - session.data.keys()))
        session.data.update(data)
    elif operation == "clear":
        session.data.clear()
    else:
        raise InvalidArguments(f"update_session_data: unknown operation {operation!r} "
                               "(use set, delete, merge or clear)")
    return {"session_id": ctx.session_id, "status": "updated", "operation": operation,
            "keys": sorted(session.data)}

