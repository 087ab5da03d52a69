"""`dspex inspect`: look inside live workers (through their control sockets) or transcripts.

    dspex inspect                     live workers on this machine
    dspex inspect WORKER              status, sessions, programs, in-flight work
    dspex inspect WORKER VIEW         one view: status sessions programs inflight frames lm
    dspex inspect WORKER --follow     frames and LM calls as they happen (like tail -f)
    dspex inspect WORKER --watch      a live dashboard, refreshed once a second
    dspex inspect FILE.jsonl [VIEW]   a recorded transcript: summary sessions programs timeline lm

Every failure is one line on stderr and a non-zero exit: 2 for bad input (options, view
names, files that are not transcripts), 1 when a worker cannot be reached or goes away.
"""

from __future__ import annotations

import os
import stat
import time
from collections import deque
from typing import Any

import orjson
import typer

from dspex_cli.env import Environment, environment_of
from dspex_cli.exit_status import ExitStatus, UserError, run_guarded

DEFAULT_LIMIT = 20
DEFAULT_TRANSCRIPT_LIMIT = 100
WATCH_INTERVAL = 1.0
# Views of a transcript, and worker-view names accepted as their aliases.
TRANSCRIPT_VIEWS = ("summary", "sessions", "programs", "timeline", "lm")
TRANSCRIPT_ALIASES = {"status": "summary", "frames": "timeline"}


class InspectFailure(UserError):
    """Ends the command with one line on stderr and the given exit status (default:
    FAILURE, a worker that cannot be reached; USAGE for bad input)."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.FAILURE) -> None:
        super().__init__(message, status)


def worker_views() -> tuple[str, ...]:
    """The views a worker answers, from the control server's own table."""
    from bridge.control import known_views

    return tuple(name for name in known_views() if name != "commands")


# -- talking to workers ------------------------------------------------------------------------


def collect_overview(client: Any) -> dict[str, Any]:
    """What `dspex inspect WORKER` shows (and prints with --json)."""
    status = client.call("status")
    sessions = client.call("sessions")["sessions"]
    programs = client.call("programs")["programs"]
    inflight = client.call("inflight")["inflight"]
    return {"pid": status["pid"], "worker_id": status["worker_id"], "mode": status["mode"],
            "uptime": status["uptime"], "status": status, "sessions": sessions, "programs": programs,
            "inflight": inflight}


def collect_dashboard(client: Any) -> dict[str, Any]:
    """One refresh of --watch."""
    return {"status": client.call("status"), "sessions": client.call("sessions")["sessions"],
            "inflight": client.call("inflight")["inflight"],
            "lm": client.call("lm", {"limit": 40, "preview": 60})["calls"]}


def _worker_dicts(workers: list[Any]) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for w in workers:
        item = w.as_dict()
        item["uptime"] = round(now - w.started_at, 3) if w.started_at else None
        out.append(item)
    return out


# -- transcripts -------------------------------------------------------------------------------


def _summary_of(message: Any, direction: str) -> str:
    if not isinstance(message, dict):
        return "" if message is None else str(message)
    if direction == "in":
        return orjson.dumps(message.get("args") or {}, option=orjson.OPT_NON_STR_KEYS).decode()
    if message.get("success") is False:
        return f"{message.get('error_type')}: {message.get('error')}"
    return orjson.dumps(message.get("result"), option=orjson.OPT_NON_STR_KEYS).decode()


def transcript_report(path: str, limit: int = DEFAULT_TRANSCRIPT_LIMIT) -> dict[str, Any]:
    """Reads a transcript once (streaming) into the data behind its views."""
    from bridge.control import cut, describe_lm_call, public
    from bridge.transcript import EndEntry, FrameEntry, LMCallEntry, read_transcript

    from bridge import catalog
    from bridge.registry import CONFIGURES_LM

    # What each recorded command did is read from its tags in the registry, not its name.
    commands = catalog()
    transcript = read_transcript(path)
    pending: dict[str, dict[str, Any]] = {}
    sessions: dict[str, dict[str, Any]] = {}
    programs: dict[tuple[str, str], dict[str, Any]] = {}
    timeline: deque[dict[str, Any]] = deque(maxlen=limit)
    lm_calls: deque[dict[str, Any]] = deque(maxlen=limit)
    counts = {"frames_in": 0, "frames_out": 0, "requests": 0, "errors": 0, "lm_calls": 0, "unanswered": 0}
    complete = False
    last_ms = 0.0

    def session(sid: str, at: float) -> dict[str, Any]:
        entry = sessions.get(sid)
        if entry is None:
            entry = sessions[sid] = {"session_id": sid, "requests": 0, "errors": 0, "programs": [], "lm": None,
                                     "first_ms": at, "last_ms": at}
        entry["last_ms"] = at
        return entry

    for entry in transcript:
        if isinstance(entry, EndEntry):
            complete = True
            continue
        if isinstance(entry, LMCallEntry):
            counts["lm_calls"] += 1
            lm_calls.append(describe_lm_call(entry.record, 160))
            continue
        assert isinstance(entry, FrameEntry)
        last_ms = max(last_ms, entry.offset_ms)
        message = entry.frame if entry.decoded else None
        item: dict[str, Any] = {"offset_ms": entry.offset_ms, "direction": entry.direction, "line": entry.line}
        if message is None:
            item["error"] = "not JSON"
            item["summary"] = (entry.raw or b"")[:200].decode("utf-8", "replace")
        elif isinstance(message, dict):
            rid = message.get("id")
            item["id"] = rid
            key = repr(rid)
            if entry.direction == "in":
                counts["requests"] += 1
                command = message.get("command")
                args = message.get("args") if isinstance(message.get("args"), dict) else {}
                sid = str(args.get("session_id") or "anonymous")
                item["command"] = command
                item["session_id"] = sid
                session(sid, entry.offset_ms)["requests"] += 1
                if commands.has_tag(command, CONFIGURES_LM) and args.get("model"):
                    if args.get("session_id"):
                        session(sid, entry.offset_ms)["lm"] = str(args.get("model"))
                pending[key] = {"at": entry.offset_ms, "command": command, "session_id": sid, "args": args}
            else:
                request = pending.pop(key, None)
                item["success"] = message.get("success")
                if message.get("success") is False:
                    counts["errors"] += 1
                    item["error_type"] = message.get("error_type")
                if request is not None:
                    latency = round(entry.offset_ms - request["at"], 3)
                    item["latency_ms"] = latency
                    item["command"] = request["command"]
                    _account(commands, request, message, latency, sessions, programs, session)
        item["summary"] = item.get("summary") or _summary_of(cut(public(message), 200), entry.direction)
        if entry.direction == "in":
            counts["frames_in"] += 1
        else:
            counts["frames_out"] += 1
        timeline.append(item)
    counts["unanswered"] = len(pending)
    program_list = []
    for record in programs.values():
        runs = record.pop("_latencies")
        record["mean_latency_ms"] = round(sum(runs) / len(runs), 3) if runs else None
        program_list.append(record)
    return public({"path": str(path), "header": transcript.header, "complete": complete, "torn": transcript.torn,
                   "duration_ms": last_ms, "counts": counts, "sessions": list(sessions.values()),
                   "programs": program_list, "timeline": list(timeline), "lm_calls": list(lm_calls)})


def _account(commands: Any, request: dict[str, Any], reply: dict[str, Any], latency: float,
             sessions: dict[str, Any], programs: dict[tuple[str, str], dict[str, Any]], session: Any) -> None:
    """Credits a reply to its session and program."""
    from bridge.registry import CREATES_PROGRAM, RUNS_PROGRAM

    sid = request["session_id"]
    args = request["args"]
    ok = reply.get("success") is True
    result = reply.get("result") if isinstance(reply.get("result"), dict) else {}
    if not ok:
        session(sid, request["at"])["errors"] += 1
    command = request["command"]
    if commands.has_tag(command, CREATES_PROGRAM) and ok:
        program_id = str(result.get("program_id") or args.get("id") or args.get("program_id"))
        signature = result.get("signature_def") or args.get("signature")
        programs[(sid, program_id)] = {"session_id": sid, "program_id": program_id,
                                       "program_type": result.get("program_type") or args.get("program_type"),
                                       "signature": signature if isinstance(signature, str) else None,
                                       "execution_count": 0, "error_count": 0, "_latencies": []}
        listed = sessions[sid]["programs"]
        if program_id not in listed:
            listed.append(program_id)
    elif commands.has_tag(command, RUNS_PROGRAM):
        program_id = str(args.get("program_id"))
        record = programs.get((sid, program_id))
        if record is None and not ok:
            return  # most likely a program that never existed; the session counted the error
        if record is None:  # created before the recording started
            record = programs[(sid, program_id)] = {"session_id": sid, "program_id": program_id,
                                                    "program_type": None, "signature": None,
                                                    "execution_count": 0, "error_count": 0, "_latencies": []}
        record["execution_count"] += 1
        record["_latencies"].append(latency)
        if not ok:
            record["error_count"] += 1


# -- output --------------------------------------------------------------------------------------


def _print_json(env: Environment, value: Any) -> None:
    env.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def _parse_limit(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InspectFailure(f"--limit must be a whole number, got {text!r}", ExitStatus.USAGE) from None
    if not 1 <= value <= 10_000:
        raise InspectFailure(f"--limit must be between 1 and 10000, got {value}", ExitStatus.USAGE)
    return value


def _is_file_target(target: str) -> bool:
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return target.endswith((".jsonl", ".json", ".ndjson"))
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


# -- the modes -----------------------------------------------------------------------------------


def inspect_workers(as_json: bool, env: Environment) -> int:
    from bridge.control_client import list_workers

    from dspex_cli.inspect_views import workers_table

    workers = _worker_dicts(list_workers())
    if as_json:
        _print_json(env, workers)
    else:
        env.console().print(workers_table(workers))
    return ExitStatus.OK


def inspect_transcript(path: str, view: str | None, as_json: bool, limit: int, env: Environment) -> int:
    from bridge.transcript import TranscriptError

    from dspex_cli.inspect_views import TRANSCRIPT_RENDERERS, transcript_overview

    if view is not None:
        view = TRANSCRIPT_ALIASES.get(view, view)
        if view not in TRANSCRIPT_VIEWS:
            raise InspectFailure(f"unknown transcript view {view!r} (choose from {', '.join(TRANSCRIPT_VIEWS)})",
                                 ExitStatus.USAGE)
    try:
        report = transcript_report(path, limit)
    except TranscriptError as exc:
        raise InspectFailure(str(exc), ExitStatus.USAGE) from None
    if as_json:
        if view is None:
            _print_json(env, report)
        else:
            key = {"summary": None, "timeline": "timeline", "lm": "lm_calls"}.get(view, view)
            _print_json(env, {k: v for k, v in report.items() if k in ("path", "header", "counts", "complete")}
                        if key is None else {view: report[key]})
        return ExitStatus.OK
    env.console().print(transcript_overview(report) if view is None else TRANSCRIPT_RENDERERS[view](report))
    return ExitStatus.OK


def inspect_worker(spec: str, view: str | None, as_json: bool, limit: int, env: Environment) -> int:
    from bridge.control_client import ControlClient, resolve_worker

    from dspex_cli.inspect_views import overview, render_view

    views = worker_views()
    if view is not None and view not in views:
        raise InspectFailure(f"unknown view {view!r} (choose from {', '.join(views)})", ExitStatus.USAGE)
    worker = resolve_worker(spec)
    with ControlClient(worker.socket) as client:
        if view is None:
            data = collect_overview(client)
            if as_json:
                data["socket"] = worker.socket
                _print_json(env, data)
            else:
                env.console().print(overview(data))
            return ExitStatus.OK
        args = {"limit": limit} if view in ("frames", "lm") else {}
        data = client.call(view, args)
    if as_json:
        _print_json(env, data)
    else:
        env.console().print(render_view(view, data))
    return ExitStatus.OK


def follow_worker(spec: str, view: str | None, as_json: bool, env: Environment) -> int:
    from bridge.control_client import ControlClient, WorkerGone, resolve_worker

    from dspex_cli.inspect_views import follow_line

    if view not in (None, "frames", "lm"):
        raise InspectFailure("--follow streams frames and LM calls: give no view, 'frames' or 'lm'", ExitStatus.USAGE)
    worker = resolve_worker(spec)
    console = env.console()
    client = ControlClient(worker.socket)
    try:
        for event in client.subscribe(frames=view in (None, "frames"), lm=view in (None, "lm")):
            if as_json:
                env.write(orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
            else:
                console.print(follow_line(event))
    except WorkerGone:
        raise InspectFailure(f"worker {worker.worker_id} (pid {worker.pid}) stopped") from None
    except KeyboardInterrupt:  # the way to stop following: not an interruption of anything
        return ExitStatus.OK
    finally:
        client.close()
    return ExitStatus.OK


def watch_worker(spec: str, env: Environment, interval: float = WATCH_INTERVAL) -> int:
    from bridge.control_client import ControlClient, ControlError, resolve_worker
    from rich.live import Live

    from dspex_cli.inspect_views import dashboard

    worker = resolve_worker(spec)
    client = ControlClient(worker.socket)
    console = env.console()
    try:
        first = dashboard(collect_dashboard(client))
        with Live(first, console=console, screen=console.is_terminal, auto_refresh=False,
                  redirect_stderr=False) as live:
            while True:
                time.sleep(interval)
                try:
                    snapshot = collect_dashboard(client)
                except ControlError as exc:
                    live.stop()
                    raise InspectFailure(f"worker {worker.worker_id} (pid {worker.pid}) stopped during "
                                         f"--watch: {exc.message}") from None
                live.update(dashboard(snapshot), refresh=True)
    except KeyboardInterrupt:
        return ExitStatus.OK
    finally:
        client.close()


def run_inspect(target: str | None, view: str | None, follow: bool, watch: bool, as_json: bool,
                limit_text: str | None, extra: list[str], env: Environment | None = None) -> int:
    """Runs inside the CLI's error boundary: every failure becomes one line and an exit status."""
    environment = env or Environment.from_process()
    return run_guarded("dspex inspect", lambda: _inspect(target, view, follow, watch, as_json, limit_text,
                                                         extra, environment), environment)


def _inspect(target: str | None, view: str | None, follow: bool, watch: bool, as_json: bool,
             limit_text: str | None, extra: list[str], env: Environment) -> int:
    from bridge.control_client import ControlError

    try:
        for given in (target, view):
            if given is not None and given.startswith("-") and given != "-":
                raise InspectFailure(f"unknown option {given!r} (see dspex inspect --help)", ExitStatus.USAGE)
        if extra:
            raise InspectFailure(f"unexpected argument(s): {' '.join(extra)} (see dspex inspect --help)",
                                 ExitStatus.USAGE)
        if follow and watch:
            raise InspectFailure("--follow and --watch cannot be combined", ExitStatus.USAGE)
        if watch and as_json:
            raise InspectFailure("--watch is a live screen; use --json without it for scripts", ExitStatus.USAGE)
        if target is None:
            if follow or watch or view:
                raise InspectFailure("name a worker (pid, worker id or socket path) to follow or watch",
                                     ExitStatus.USAGE)
            return inspect_workers(as_json, env)
        if _is_file_target(target) and not stat.S_ISSOCK(_mode(target)):
            if follow or watch:
                raise InspectFailure("--follow and --watch need a live worker, not a transcript file", ExitStatus.USAGE)
            return inspect_transcript(target, view, as_json, _parse_limit(limit_text, DEFAULT_TRANSCRIPT_LIMIT), env)
        limit = _parse_limit(limit_text, DEFAULT_LIMIT)
        if follow:
            return follow_worker(target, view, as_json, env)
        if watch:
            if view is not None:
                raise InspectFailure("--watch shows the whole dashboard; drop the view", ExitStatus.USAGE)
            return watch_worker(target, env)
        return inspect_worker(target, view, as_json, limit, env)
    except ControlError as exc:  # a worker that cannot be reached, or went away
        raise InspectFailure(exc.message, ExitStatus.FAILURE) from None


def _mode(path: str) -> int:
    """The file's mode bits, or none at all for a path that does not exist."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return stat.S_IFMT(0)


def register(app: typer.Typer) -> None:
    @app.command("inspect", help=(
        "Look inside live workers or recorded transcripts. No argument: the live workers on this "
        "machine. WORKER (pid, worker id or socket path): its status, sessions, programs and in-flight "
        "work; add VIEW (status sessions programs inflight frames lm) for one view. FILE.jsonl: a "
        "transcript's summary, sessions, programs, timeline and LM calls."),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def inspect(
        ctx: typer.Context,
        target: str = typer.Argument(None, metavar="TARGET",
                                     help="pid, worker id, control socket path, or transcript file",
                                     show_default=False),
        view: str = typer.Argument(None, metavar="VIEW", help="one view (see above)", show_default=False),
        follow: bool = typer.Option(False, "--follow", "-f", help="stream frames and LM calls as they happen"),
        watch: bool = typer.Option(False, "--watch", "-w", help="live dashboard, refreshed once a second"),
        as_json: bool = typer.Option(False, "--json", help="print the data as JSON for scripts"),
        # A string, so that a bad number gets inspect's own one-line message.
        limit: str = typer.Option(None, "--limit", "-n", metavar="N",
                                  help="how many frames / LM calls / timeline entries (1-10000)",
                                  show_default=False),
    ) -> None:
        raise typer.Exit(run_inspect(target, view, follow, watch, as_json, limit, list(ctx.args), environment_of(ctx)))


__all__ = ["collect_dashboard", "collect_overview", "register", "run_inspect", "transcript_report"]
