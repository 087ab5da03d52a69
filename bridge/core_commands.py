"""Worker-level commands of the contract: health, stats, sessions, lifecycle.

They know no framework: what adapters hold (DSPy's programs and LMs) reaches these
replies through the adapters' hooks (see bridge.adapter.Adapter).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from operator import call as _call
from typing import Any

import orjson

from .adapter import session_states
from .engine import Context
from .errors import InvalidArguments, RequestNotFound
from .registry import (BUILDS_STATE, CLEARS_SESSIONS, DROPS_SESSION, LISTS_SESSIONS, REPORTS_STATS,
                       RESETS_WORKER, Arg, Registry, command)
from .system import memory_usage
from .wire.messages import short_repr

COMMANDS = Registry()
_dumps = orjson.dumps
_time = time.time
_monotonic = time.monotonic


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


class PingTemplate:
    """A ping reply written by bytes concatenation instead of being built and encoded.

    A ping's result is static except its `timestamp` and `uptime`: the status changes only
    when a drain begins, mode and worker id never, and each adapter's fields only when its
    `ping_fields_version()` changes. So the reply's static parts are made once per
    combination of those, by calling the `ping` handler itself (the template cannot drift
    from the handler) and encoding its result, and each ping fills in its id and two clock
    readings. Health pings are the most frequent request of all.
    """

    __slots__ = ("_engine", "_shutting_down", "_started", "_versions", "_key", "_status", "_rest")

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._shutting_down = engine.shutting_down.is_set
        self._started = engine.started
        from .adapter import Adapter

        # Only adapters that add fields can change them (the engine's ping_field_sources).
        self._versions = tuple(adapter.ping_fields_version for adapter in engine.adapters
                               if type(adapter).ping_fields is not Adapter.ping_fields)
        self._key: tuple[Any, ...] | None = None
        self._status: bytes | None = None  # up to the result's timestamp value
        self._rest: bytes | None = None  # after the uptime value, up to the reply's timestamp

    def encoded(self, request_id: Any) -> bytes | None:
        """The reply to a ping with this id (an int or str), or None when only the generic
        path can answer it: an adapter whose fields are not versioned, a result that plain
        orjson cannot encode, a handler that fails (its error reply is the generic path's),
        an id orjson cannot write (an integer beyond 64 bits, a string with lone surrogates)."""
        # map, not a comprehension: on Python 3.11 a comprehension is a function call of its own.
        key = (self._shutting_down(), *map(_call, self._versions))
        if key != self._key:
            if None in key or not self._build(key):
                return None
        status = self._status
        if status is None:
            return None
        now = _time()
        try:
            # One orjson call writes the three values: Python's own float repr (and bytes
            # %-formatting) cost four times as much. Floats never hold a comma, so the
            # first two commas end the clock readings whatever the id is.
            values = _dumps((now, _monotonic() - self._started, request_id))
        except TypeError:
            return None
        first = values.index(b",")
        second = values.index(b",", first + 1)
        timestamp = values[1:first]
        return b"".join((b'{"id":', values[second + 1:-1], status, timestamp, b',"uptime":',
                         values[first + 1:second], self._rest, timestamp, b"}"))

    def _build(self, key: tuple[Any, ...]) -> bool:
        # The key is read before the handler runs, so the fields cached under it are at
        # least as new as it: a change during the build shows up as a new key next time.
        self._key, self._status, self._rest = key, None, None
        try:
            result = ping({}, Context(self._engine, 0, "ping", "anonymous"))
            rest = dict(result)
            status = rest.pop("status")
            clock = (rest.pop("timestamp"), rest.pop("uptime"))
            if list(result)[:3] != ["status", "timestamp", "uptime"] \
                    or not all(type(value) is float for value in clock):
                return False  # an adapter replaced the clock fields: not this template's shape
            middle = _dumps(rest)[1:-1]
            self._status = b',"success":true,"result":{"status":' + _dumps(status) + b',"timestamp":'
        except Exception:
            return False
        # The reply's own timestamp is the result's clock reading: one reading, both fields.
        self._rest = (b"," + middle if middle else b"") + b'},"timestamp":'
        return True


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
        "commands_by_name": dict(stats.by_command),
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
