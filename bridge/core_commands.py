"""Worker-level commands of the contract: health, stats, sessions, lifecycle.

They know no framework: what adapters hold (DSPy's programs and LMs) reaches these
replies through the adapters' hooks (see bridge.adapter.Adapter).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .adapter import session_states
from .engine import Context
from .errors import InvalidArguments, RequestNotFound
from .registry import (BUILDS_STATE, CLEARS_SESSIONS, DROPS_SESSION, LISTS_SESSIONS, REPORTS_STATS,
                       RESETS_WORKER, Arg, Registry, command)
from .system import memory_usage
from .wire.messages import short_repr

COMMANDS = Registry()


def _from_adapters(engine: Any, hook: Callable[[Any, list[Any]], dict[str, Any]],
                   sessions: list[Any] | None = None) -> dict[str, Any]:
    """The reply fields every adapter contributes, each given its slot of every session."""
    fields: dict[str, Any] = {}
    for adapter in engine.adapters:
        fields.update(hook(adapter, session_states(engine, adapter, sessions)))
    return fields


# The contract allows any args on a ping, so none is type-checked: a pool sending
# `initialization: "true"` must still get its answer.
@command("ping", read_only=True, scheduling="inline", registry=COMMANDS, args=(
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
        "mode": engine.config.mode,
        "worker_id": engine.worker_id,
    }
    for fields in engine.ping_field_sources:
        reply.update(fields())
    return reply


@command("get_stats", read_only=True, scheduling="inline", registry=COMMANDS, tags={REPORTS_STATS})
def get_stats(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Counters, memory and uptime of this worker."""
    engine = ctx.engine
    stats = engine.stats
    reply = {
        "sessions_count": len(engine.sessions.all()),
        "command_count": stats.command_count,
        "error_count": stats.error_count,
        "protocol_errors": stats.protocol_errors,
        "errors_by_type": dict(stats.errors_by_type),
        "commands_by_name": stats.by_command,  # a copy already
        "inflight": len(engine.inflight),  # inline commands such as this one are never in it
        "lm_calls": stats.lm_calls,
        "usage": dict(stats.usage),
        "uptime": engine.uptime(),
        "memory_usage": memory_usage(),
        "mode": engine.config.mode,
        "worker_id": engine.worker_id,
    }
    reply.update(_from_adapters(engine, lambda adapter, states: adapter.stats_fields(states)))
    return reply


@command("cleanup", destructive=True, scheduling="global", registry=COMMANDS, tags={CLEARS_SESSIONS})
def cleanup(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drops what every adapter holds in every session (the standalone bridge's farewell)."""
    reply = {"status": "cleaned", **_from_adapters(ctx.engine, lambda adapter, states: adapter.on_cleanup(states))}
    return _with_cancelled_jobs(reply, ctx.engine.jobs.cancel_all())


def _with_cancelled_jobs(reply: dict[str, Any], cancelled: int) -> dict[str, Any]:
    # Only when there were any: the replies of clients that never start jobs stay as they were.
    if cancelled:
        reply["jobs_cancelled"] = cancelled
    return reply


@command("reset_state", destructive=True, scheduling="global", registry=COMMANDS, tags={RESETS_WORKER})
def reset_state(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drops all sessions and what adapters hold, and zeroes the counters."""
    engine = ctx.engine
    dropped = engine.sessions.clear()
    cancelled = engine.jobs.cancel_all()
    reply: dict[str, Any] = {"status": "reset",
                             **_from_adapters(engine, lambda adapter, states: adapter.on_reset(states), dropped)}
    commands, errors = engine.stats.reset()
    reply.update({"sessions_cleared": len(dropped), "commands_reset": commands, "errors_reset": errors})
    return _with_cancelled_jobs(reply, cancelled)


@command("cleanup_session", destructive=True, registry=COMMANDS, tags={DROPS_SESSION},
         args=(Arg("session_id", "string", help="the session to drop"),))
def cleanup_session(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drops one session's state and data; other sessions are untouched."""
    session_id = args.get("session_id")
    if not session_id:
        raise InvalidArguments("Session ID required for cleanup")
    engine = ctx.engine
    dropped = engine.sessions.drop(session_id)
    reply: dict[str, Any] = {"status": "cleaned", "session_id": session_id}
    for adapter in engine.adapters:
        state = dropped.state.get(adapter.name) if dropped is not None else None
        reply.update(adapter.on_cleanup_session(state if state is not None else adapter.new_session_state()))
    # No job is left running without an owner.
    return _with_cancelled_jobs(reply, engine.jobs.cancel_session(session_id))


@command("list_sessions", read_only=True, scheduling="inline", registry=COMMANDS, tags={LISTS_SESSIONS})
def list_sessions(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The sessions this worker holds, with what each adapter keeps in them."""
    sessions = []
    for session in ctx.engine.sessions.all():
        entry: dict[str, Any] = {"session_id": session.session_id}
        for adapter in ctx.engine.adapters:
            entry.update(adapter.session_fields(session.slot(adapter)))
        entry.update({"data_keys": sorted(session.data), "created_at": session.created_at,
                      "last_activity": session.last_activity})
        sessions.append(entry)
    return {"sessions": sessions, "total_count": len(sessions)}


@command("shutdown", destructive=True, registry=COMMANDS, scheduling="inline", args=(Arg("worker_id", "any"),))
def shutdown(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Replies, then the worker exits once in-flight work has finished."""
    engine = ctx.engine
    sessions = len(engine.sessions.all())
    engine.shutting_down.set()
    if engine.on_shutdown is not None:
        engine.on_shutdown()
    return {"status": "shutting_down", "worker_id": args.get("worker_id", engine.worker_id),
            "mode": engine.config.mode, "sessions_cleaned": sessions}



@command("get_session_data", read_only=True, registry=COMMANDS, args=(
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


@command("update_session_data", registry=COMMANDS, tags={BUILDS_STATE}, args=(
    Arg("session_id", "string"),
    Arg("operation", "string", help="set (default), delete, merge or clear",
        choices=("set", "delete", "merge", "clear")),
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



@command("cancel", registry=COMMANDS, scheduling="inline", args=(
    Arg("request_id", "any", required=True, help="the id of the request to end"),))
def cancel(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Ends a request now: it is answered `cancelled`, none of its further LM calls or
    callbacks start, and a job it waits for is cancelled."""
    request_id = args["request_id"]
    if not ctx.engine.cancel_request(request_id):
        raise RequestNotFound(f"No unanswered request with id {short_repr(request_id)} (unknown or already answered)")
    return {"request_id": request_id, "status": "cancelled"}
