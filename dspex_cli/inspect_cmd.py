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
from dataclasses import dataclass, field
from typing import Any

import orjson
import typer

from dspex_cli.env import Environment, environment_of
from dspex_cli.exit_status import ExitStatus, UserError, run_guarded
from dspex_cli.inspect_actions import LMFilters, QuitKey, inspect_cancel, inspect_prometheus, inspect_stack
from dspex_cli.inspect_transcript import DEFAULT_TRANSCRIPT_LIMIT, transcript_report

DEFAULT_LIMIT = 20
WATCH_INTERVAL = 1.0
# Views of a transcript, and worker-view names accepted as their aliases.
TRANSCRIPT_VIEWS = ("summary", "sessions", "programs", "timeline", "lm")
TRANSCRIPT_ALIASES = {"status": "summary", "frames": "timeline"}
# Views that act on one request and take its id after the view name.
ACTION_VIEWS = ("stack", "cancel")


class InspectFailure(UserError):
    """Ends the command with one line on stderr and the given exit status (default:
    FAILURE, a worker that cannot be reached; USAGE for bad input)."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.FAILURE) -> None:
        super().__init__(message, status)


def worker_views() -> tuple[str, ...]:
    """The views a worker answers, from the control server's own table."""
    from bridge.control import known_views

    return tuple(name for name in known_views() if name not in ("commands", *ACTION_VIEWS))


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


def check_view(view: str | None) -> None:
    """An unknown view name is bad input, answered with the closest known name."""
    import difflib

    views = (*worker_views(), *ACTION_VIEWS)
    if view is None or view in views:
        return
    close = difflib.get_close_matches(view, views, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise InspectFailure(f"unknown view {view!r}{hint} (choose from {', '.join(views)})", ExitStatus.USAGE)


def inspect_worker(spec: str, view: str | None, as_json: bool, limit: int, env: Environment,
                   full: bool = False, lm_filters: LMFilters | None = None) -> int:
    lm_filters = lm_filters or LMFilters()
    from bridge.control.client import ControlClient, resolve_worker

    from dspex_cli.inspect_views import overview, render_view

    check_view(view)
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
        args: dict[str, Any] = {"limit": limit} if view in ("frames", "lm") else {}
        if full and view == "frames":
            args["max_string"] = 100_000
        if view == "lm":
            args.update(lm_filters.as_args())
            args["full"] = full
        data = client.call(view, args)
    if as_json:
        _print_json(env, data)
    else:
        env.console().print(render_view(view, data, full=full))
    return ExitStatus.OK


def follow_worker(spec: str, view: str | None, as_json: bool, env: Environment,
                  lm_filters: LMFilters | None = None, full: bool = False) -> int:
    from bridge.control.client import ControlClient, WorkerGone, resolve_worker

    from dspex_cli.inspect_views import follow_line

    if view not in (None, "frames", "lm"):
        raise InspectFailure("--follow streams frames and LM calls: give no view, 'frames' or 'lm'", ExitStatus.USAGE)
    worker = resolve_worker(spec)
    console = env.console()
    client = ControlClient(worker.socket)
    filters = lm_filters or LMFilters()
    quitter = QuitKey(env, on_quit=client.close)
    try:
        for event in quitter.guard(client.subscribe(frames=view in (None, "frames"), lm=view in (None, "lm"),
                                                    max_string=100_000 if full else None)):
            if event.get("event") == "lm_call" and not filters.matches(event.get("data") or {}):
                continue
            if as_json:
                env.write(orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
            else:
                console.print(follow_line(event))
    except WorkerGone:
        if quitter.pressed:
            return ExitStatus.OK
        raise InspectFailure(f"worker {worker.worker_id} (pid {worker.pid}) stopped") from None
    except KeyboardInterrupt:  # the way to stop following: not an interruption of anything
        return ExitStatus.OK
    finally:
        quitter.stop()
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
            keys = QuitKey(env)
            try:
                while not keys.wait(interval):
                    try:
                        snapshot = collect_dashboard(client)
                    except ControlError as exc:
                        live.stop()
                        raise InspectFailure(f"worker {worker.worker_id} (pid {worker.pid}) stopped during "
                                             f"--watch: {exc.message}") from None
                    live.update(dashboard(snapshot), refresh=True)
            finally:
                keys.stop()
            return ExitStatus.OK
    except KeyboardInterrupt:
        return ExitStatus.OK
    finally:
        client.close()


@dataclass(frozen=True)
class InspectRequest:
    """Everything `dspex inspect` was asked, as typed."""

    target: str | None = None
    view: str | None = None
    follow: bool = False
    watch: bool = False
    as_json: bool = False
    limit_text: str | None = None
    extra: tuple[str, ...] = ()
    full: bool = False
    assume_yes: bool = False
    prometheus: bool = False
    lm_filters: LMFilters = field(default_factory=LMFilters)


def run_inspect(target: str | None, view: str | None, follow: bool, watch: bool, as_json: bool,
                limit_text: str | None, extra: list[str], env: Environment | None = None,
                **more: Any) -> int:
    """Runs inside the CLI's error boundary: every failure becomes one line and an exit status."""
    environment = env or Environment.from_process()
    request = InspectRequest(target, view, follow, watch, as_json, limit_text, tuple(extra), **more)
    return run_guarded("dspex inspect", lambda: _inspect(request, environment), environment)


def _inspect(request: InspectRequest, env: Environment) -> int:
    from bridge.control.client import ControlError

    target, view, follow, watch, as_json = request.target, request.view, request.follow, request.watch, request.as_json
    extra = list(request.extra)
    try:
        for given in (target, view):
            if given is not None and given.startswith("-") and given != "-":
                raise InspectFailure(f"unknown option {given!r} (see dspex inspect --help)", ExitStatus.USAGE)
        request_id = None
        if view in ACTION_VIEWS and extra:
            request_id, extra = extra[0], extra[1:]
        if extra:
            raise InspectFailure(f"unexpected argument(s): {' '.join(extra)} (see dspex inspect --help)",
                                 ExitStatus.USAGE)
        if follow and watch:
            raise InspectFailure("--follow and --watch cannot be combined", ExitStatus.USAGE)
        if watch and as_json:
            raise InspectFailure("--watch is a live screen; use --json without it for scripts", ExitStatus.USAGE)
        if target is None:
            if watch and not view:  # every worker at once: the same screen as `dspex top`
                from dspex_cli.top import run_top

                return run_top(WATCH_INTERVAL, False, False, None, None, env)
            if follow or view or request.prometheus:
                raise InspectFailure("name a worker (pid, worker id or socket path) to follow, watch or scrape",
                                     ExitStatus.USAGE)
            return inspect_workers(as_json, env)
        if _is_file_target(target) and not stat.S_ISSOCK(_mode(target)):
            if follow or watch:
                raise InspectFailure("--follow and --watch need a live worker, not a transcript file", ExitStatus.USAGE)
            return inspect_transcript(target, view, as_json, _parse_limit(request.limit_text,
                                                                          DEFAULT_TRANSCRIPT_LIMIT), env)
        limit = _parse_limit(request.limit_text, DEFAULT_LIMIT)
        check_view(view)
        if request.prometheus:
            if view is not None or follow or watch:
                raise InspectFailure("--prometheus prints the metrics once; drop the view and --follow/--watch",
                                     ExitStatus.USAGE)
            return inspect_prometheus(target, env)
        if view == "stack":
            return inspect_stack(target, request_id, as_json, request.full, env)
        if view == "cancel":
            if request_id is None:
                raise InspectFailure("cancel needs a REQUEST_ID (see `dspex inspect WORKER inflight`)",
                                     ExitStatus.USAGE)
            return inspect_cancel(target, request_id, request.assume_yes, as_json, env)
        if follow:
            return follow_worker(target, view, as_json, env, request.lm_filters, request.full)
        if watch:
            if view is not None:
                raise InspectFailure("--watch shows the whole dashboard; drop the view", ExitStatus.USAGE)
            return watch_worker(target, env)
        return inspect_worker(target, view, as_json, limit, env, request.full, request.lm_filters)
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
        "machine (--watch: all of them live, as `dspex top`). WORKER (pid, worker id or socket path): its "
        "status, sessions, programs and in-flight work; add VIEW (status sessions programs inflight jobs "
        "frames lm metrics) for one view, `stack [REQUEST_ID]` for Python stacks, `cancel REQUEST_ID` to "
        "end a request. FILE.jsonl: a transcript's summary, sessions, programs, timeline and LM calls."),
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
        full: bool = typer.Option(False, "--full", help="frames uncut; LM calls with prompt and response; "
                                                        "stacks with whole paths"),
        session: str = typer.Option(None, "--session", metavar="ID", help="LM calls of this session only"),
        program: str = typer.Option(None, "--program", metavar="ID", help="LM calls of this program only"),
        model: str = typer.Option(None, "--model", metavar="MODEL", help="LM calls of this model only"),
        yes: bool = typer.Option(False, "--yes", "-y", help="cancel without asking"),
        prometheus: bool = typer.Option(False, "--prometheus", help="print the worker's metrics in Prometheus "
                                                                    "text format"),
    ) -> None:
        raise typer.Exit(run_inspect(target, view, follow, watch, as_json, limit, list(ctx.args),
                                     environment_of(ctx), full=full, assume_yes=yes, prometheus=prometheus,
                                     lm_filters=LMFilters(session, program, model)))


__all__ = ["LMFilters", "collect_dashboard", "collect_overview", "register", "run_inspect", "transcript_report"]
