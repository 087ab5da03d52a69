"""The control socket's views: read-only looks at a live worker, in one registry.

The views are `CommandSpec`s in a `ViewRegistry` (the registry type of the engine's
commands): a view's handler takes `(args, server)`, as a command's takes `(args, ctx)`.
`CORE_VIEWS` holds the core's; each `ControlServer` builds its own registry from them,
its engine's adapters' views (DSPy: programs) and the socket's own `subscribe` and
`exec`, so two servers share nothing they could change.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..adapter import session_states
from ..errors import BridgeError
from ..registry import CommandSpec, Registry
from ..wire import codec
from .incident import QUEUED, WAITING_ON_SESSION, inflight_entries, thread_stacks
from .present import DEFAULT_STRING_LIMIT, describe_frame, describe_lm_call, int_arg, percentile, public, snapshot

if TYPE_CHECKING:
    from ..engine import Engine
    from .server import ControlServer

View = Callable[[dict[str, Any], "ControlServer"], dict[str, Any]]
AdapterView = Callable[["Engine", dict[str, Any]], dict[str, Any]]


class ViewRegistry(Registry):
    """A registry of control views; it lists them in the order they were added, which is
    the order `dspex inspect` offers them in."""

    def in_order(self) -> list[CommandSpec]:
        return list(self._specs.values())

    def add_view(self, name: str, summary: str, handler: View, *, read_only: bool = True,
                 **extra: Any) -> CommandSpec:
        # Views run on the connection's thread at once: "inline" in the engine's terms.
        return self.add(CommandSpec(name=name, handler=handler, summary=summary,  # type: ignore[arg-type]
                                    scheduling="inline", read_only=read_only, extra=extra))


CORE_VIEWS = ViewRegistry()


def view(name: str, summary: str) -> Callable[[View], View]:
    """Registers a core view of the control socket (these are not engine commands)."""
    def register(handler: View) -> View:
        CORE_VIEWS.add_view(name, summary, handler)
        return handler
    return register


def adapter_view(handler: AdapterView) -> View:
    """An adapter's view (given the engine) as a control view (given the server)."""
    return lambda args, server: handler(server.engine, args)


def known_views() -> list[str]:
    """The views a default worker answers: the core's, then each adapter's."""
    from ..adapters import default_adapters

    names = [spec.name for spec in CORE_VIEWS.in_order()]
    for adapter in default_adapters():
        names += [name for name in adapter.views() if name not in names]
    return names


@view("status", "pid, worker id, mode, uptime, versions, memory, counters, rates, errors by type")
def _status(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    from ..system import memory_usage, versions

    engine = server.engine
    stats = engine.stats
    sessions = engine.sessions.all()
    latencies = [c.get("latency_ms") for c in snapshot(lambda: list(engine.recent_lm_calls))]
    latencies = [x for x in latencies if isinstance(x, (int, float))]
    cpu = os.times()
    jobs = [job.view(with_result=False) for job in engine.jobs.all()]
    status = {
        "pid": os.getpid(), "ppid": os.getppid(), "worker_id": engine.worker_id,
        "mode": engine.config.mode, "control": "read-only" if server.read_only else "on",
        "started_at": engine.started_wall, "uptime": round(engine.uptime(), 3),
        "versions": versions(), "memory": memory_usage(), "threads": threading.active_count(),
        "shutting_down": engine.shutting_down.is_set(), "argv": list(engine.config.argv),
        "control_connections": server.connections,
        "counters": {
            "commands": stats.command_count, "errors": stats.error_count,
            "protocol_errors": stats.protocol_errors, "lm_calls": stats.lm_calls,
            "sessions": len(sessions), "inflight": len(engine.inflight),
            # Two-way frames: events sent, requests cancelled, deadlines expired, callbacks.
            **engine.twoway_counts, "callbacks_sent": engine.callbacks.sent,
            "callbacks_outstanding": len(engine.callbacks.outstanding()),
            "stray_callback_answers": engine.callbacks.stray_answers,
        },
        "commands_by_name": snapshot(lambda: stats.by_command),
        "errors_by_type": snapshot(lambda: dict(stats.errors_by_type)),
        "usage": snapshot(lambda: dict(stats.usage)), "cost_usd": round(stats.cost, 9),
        "rates": server.rates.rates(),
        # CPU seconds used so far: an inspector turns two readings into a CPU %.
        "cpu_seconds": round(cpu.user + cpu.system, 3), "queued": max(0, len(engine._accepted) - len(engine.inflight)),
        "jobs": {"total": len(jobs), "running": sum(1 for j in jobs if j.get("status") == "running")},
        "metrics_address": getattr(engine, "metrics_address", None),
        "lm_latency_ms": {"recent": len(latencies), "p50": percentile(latencies, 0.5),
                          "p95": percentile(latencies, 0.95), "p99": percentile(latencies, 0.99),
                          "max": round(max(latencies), 3) if latencies else None},
    }
    for adapter in engine.adapters:  # what each framework adds (DSPy: loaded, default LM, programs)
        fields = adapter.status_fields(session_states(engine, adapter, sessions))
        status["counters"].update(fields.pop("counters", {}))
        status.update(fields)
    return public(status)


@view("sessions", "sessions with what each adapter keeps in them (DSPy: programs, LM) and last activity")
def _sessions(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    now = time.time()
    sessions = []
    for session in server.engine.sessions.all():
        entry: dict[str, Any] = {"session_id": session.session_id}
        for adapter in server.engine.adapters:
            state = session.state.get(adapter.name)
            if state is not None:
                entry.update(snapshot(lambda: adapter.session_fields(state, view=True)))
        sessions.append({
            **entry,
            "data_fields": snapshot(lambda: sorted(map(str, session.data))),
            "created_at": session.created_at, "last_activity": session.last_activity,
            "idle_s": round(now - session.last_activity, 3),
        })
    sessions.sort(key=lambda s: -s["last_activity"])
    return public({"sessions": sessions, "total": len(sessions)})


@view("inflight", "requests queued or running: command, session, phase, program, model, endpoint, attempt, age")
def _inflight(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    work = inflight_entries(server.engine)
    waiting: dict[Any, list[dict[str, Any]]] = {}
    for callback in server.engine.callbacks.outstanding():
        waiting.setdefault(repr(callback["request_id"]), []).append(
            {"name": callback["name"], "age_ms": callback["age_ms"], "callback_id": callback["callback_id"]})
    for entry in work:  # callbacks sent to the client and not answered yet, per request
        entry["callbacks"] = waiting.get(repr(entry.get("id")), [])
    return public({"inflight": work, "total": len(work),
                   "queued": sum(1 for w in work if w["phase"] in (QUEUED, WAITING_ON_SESSION))})


@view("jobs", "jobs (evaluate, compile, batch): status, progress, scores, LM calls, tokens, cost, age")
def _jobs(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    jobs = [job.view(with_result=False) for job in server.engine.jobs.all()]
    jobs.sort(key=lambda j: (j["status"] != "running", -j["created_at"]))
    return public({"jobs": jobs, "total": len(jobs),
                   "running": sum(1 for j in jobs if j["status"] == "running")})


@view("frames", "the last N frames in and out, decoded, redacted, long values cut")
def _frames(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    engine = server.engine
    limit = int_arg(args, "limit", 20, 1, 100_000)  # more than the ring holds means all of it
    max_string = int_arg(args, "max_string", DEFAULT_STRING_LIMIT, 16, 100_000)
    frames = snapshot(engine.frame_log)
    shown = frames[-limit:]
    # Replies in the window need their requests' arrival times; earlier requests are only
    # decoded for their id (cheap), never redacted or cut.
    request_times: dict[str, float] = {}
    for direction, at, payload in frames[:len(frames) - len(shown)]:
        if direction == "in":
            try:
                message = codec.decode(payload)
            except BridgeError:
                continue
            if isinstance(message, dict):
                request_times[repr(message.get("id"))] = at
    described = [describe_frame(engine, d, at, p, max_string, request_times) for d, at, p in shown]
    return {"frames": described, "total": len(frames), "capacity": engine.recent_frames.maxlen}


LM_FILTERS = ("session_id", "program_id", "model")


@view("lm", "the last N LM calls: session, program, model, latency, tokens, cost, status, previews "
            "(filters session_id, program_id, model; full: prompt and response)")
def _lm(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    engine = server.engine
    limit = int_arg(args, "limit", 20, 1, 100_000)
    preview = int_arg(args, "preview", 160, 16, 100_000)
    full = args.get("full") is True
    wanted = {key: str(args[key]) for key in LM_FILTERS if args.get(key) not in (None, "")}
    calls = snapshot(engine.lm_call_log)
    matching = [c for c in calls if all(str(c.get(k)) == v for k, v in wanted.items())]
    return {"calls": [describe_lm_call(c, preview, full=full) for c in matching[-limit:]], "total": len(calls),
            "matching": len(matching), "capacity": engine.recent_lm_calls.maxlen}


@view("commands", "the control commands and views this socket answers")
def _commands(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    names = {spec.name: spec.summary for spec in server.views.in_order()}
    return {"commands": names, "read_only": server.read_only}


@view("stack", "Python stacks (file:line function, no locals) of all threads, or of one request's")
def _stack(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    return public(thread_stacks(server.engine, args.get("request_id")))


@view("metrics", "the worker's figures in Prometheus text format (what --metrics serves at /metrics)")
def _metrics(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    from .metrics import CONTENT_TYPE, render_metrics

    return {"text": render_metrics(server.engine), "content_type": CONTENT_TYPE}
