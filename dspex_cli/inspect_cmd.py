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
from typing import Any

import orjson
import typer

from dspex_cli.env import Environment, environment_of
from dspex_cli.exit_status import ExitStatus, UserError, run_guarded
from dspex_cli.inspect_transcript import DEFAULT_TRANSCRIPT_LIMIT, transcript_report

DEFAULT_LIMIT = 20
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
            "inflight": inflight, "jobs": client.call("jobs")["jobs"]}


def collect_dashboard(client: Any) -> dict[str, Any]:
    """One refresh of --watch."""
    return {"status": client.call("status"), "sessions": client.call("sessions")["sessions"],
            "inflight": client.call("inflight")["inflight"],
            "jobs": client.call("jobs")["jobs"],
            "lm": client.call("lm", {"limit": 40, "preview": 60})["calls"]}


def _worker_dicts(workers: list[Any]) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for w in workers:
        item = w.as_dict()
        item["uptime"] = round(now - w.started_at, 3) if w.started_at else None
        out.append(item)
    return out


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
    from bridge.control.client import list_workers

    from dspex_cli.inspect_views import workers_table

    workers = _worker_dicts(list_workers())
    if as_json:
        _print_json(env, workers)
    else:
        env.console().print(workers_table(workers))
    return ExitStatus.OK


def inspect_transcript(path: str, view: str | None, as_json: bool, limit: int, env: Environment) -> int:
    from bridge.record.transcript import TranscriptError

    from dspex_cli.transcript_views import TRANSCRIPT_RENDERERS, transcript_overview

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
    from bridge.control.client import ControlClient, resolve_worker

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
    from bridge.control.client import ControlClient, WorkerGone, resolve_worker

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
    from bridge.control.client import ControlClient, ControlError, resolve_worker
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
    from bridge.control.client import ControlError

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
