"""Rich renderables for `dspex inspect`: worker views, the --watch dashboard, --follow lines.

Every function here takes plain data (what the control socket gave) and returns something
rich can render; none of them talks to a worker. That keeps the views testable by
rendering them into a fixed-width console. The small formatters live in formatting.py.
"""

from __future__ import annotations

import time
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .formatting import duration, ago, millis, size, clock, one_line, tokens, sparkline, _table, _lm_model  # noqa: F401  (re-exported for the views' users)

# -- workers ---------------------------------------------------------------------------------


def workers_table(workers: list[dict[str, Any]], now: float | None = None) -> RenderableType:
    if not workers:
        return Text("No live dspex workers for this user on this machine.")
    table = _table(f"{len(workers)} live dspex worker(s)", "pid", "worker id", "mode", "control", "uptime",
                   "version", "socket")
    now = now or time.time()
    for w in workers:
        started = w.get("started_at")
        table.add_row(str(w.get("pid")), str(w.get("worker_id")), str(w.get("mode")), str(w.get("control")),
                      duration(now - started) if started else "-", str(w.get("version") or "-"),
                      str(w.get("socket")))
    return table


# -- one worker --------------------------------------------------------------------------------


def status_view(status: dict[str, Any]) -> RenderableType:
    counters = status.get("counters") or {}
    rates = status.get("rates") or {}
    recent = rates.get("10s") or {}
    minute = rates.get("60s") or {}
    versions = status.get("versions") or {}
    memory = status.get("memory") or {}
    latency = status.get("lm_latency_ms") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("worker", f"{status.get('worker_id')}  pid {status.get('pid')}  parent {status.get('ppid')}")
    grid.add_row("mode", f"{status.get('mode')}  control {status.get('control')}"
                 + ("  [shutting down]" if status.get("shutting_down") else ""))
    grid.add_row("uptime", f"{duration(status.get('uptime'))}  (since {clock(status.get('started_at'))})")
    grid.add_row("versions", "  ".join(f"{k} {v}" for k, v in versions.items() if v))
    grid.add_row("memory", f"rss {size(memory.get('rss'))}  ({memory.get('percent', 0)}%)  "
                 f"threads {status.get('threads')}  dspy {'loaded' if status.get('dspy_loaded') else 'not loaded'}")
    grid.add_row("default LM", _lm_model(status.get("default_lm")))
    grid.add_row("counters", f"commands {counters.get('commands', 0)}  errors {counters.get('errors', 0)}  "
                 f"protocol errors {counters.get('protocol_errors', 0)}  LM calls {counters.get('lm_calls', 0)}")
    grid.add_row("state", f"sessions {counters.get('sessions', 0)}  programs {counters.get('programs', 0)}  "
                 f"in flight {counters.get('inflight', 0)}")
    grid.add_row("rates", _rates_line(recent, minute))
    grid.add_row("LM latency", f"p50 {millis(latency.get('p50'))}  p95 {millis(latency.get('p95'))}  "
                 f"p99 {millis(latency.get('p99'))}  max {millis(latency.get('max'))}  "
                 f"over {latency.get('recent', 0)} recent call(s)")
    usage = status.get("usage") or {}
    if usage:
        grid.add_row("tokens", "  ".join(f"{k} {v}" for k, v in usage.items()))
    errors = status.get("errors_by_type") or {}
    grid.add_row("errors by type", "  ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none")
    return Panel(grid, title="status", title_align="left", box=box.ROUNDED, expand=False)


def _rates_line(recent: dict[str, Any], minute: dict[str, Any]) -> str:
    """Each window named once: a worker younger than 10 s has only one window to speak of."""
    short = (f"{recent.get('requests_per_s', 0):g} req/s, {recent.get('errors_per_s', 0):g} err/s, "
             f"{recent.get('lm_calls_per_s', 0):g} LM calls/s")
    if recent.get("tokens_per_min"):
        short += f", {recent.get('tokens_per_min'):g} tokens/min"
    line = f"{short} over the last {recent.get('window_s', 0):g}s"
    if minute and minute.get("window_s", 0) > recent.get("window_s", 0) + 0.5:
        line += f";  {minute.get('requests_per_s', 0):g} req/s over the last {minute.get('window_s', 0):g}s"
    return line


def sessions_table(sessions: list[dict[str, Any]], now: float | None = None) -> RenderableType:
    table = _table("sessions", "session", "programs", "LM", "last activity", "data fields",
                   empty=None if sessions else "no sessions")
    for s in sessions:
        programs = s.get("programs") or []
        table.add_row(str(s.get("session_id")), ", ".join(map(str, programs)) or "-", _lm_model(s.get("lm")),
                      ago(s.get("last_activity"), now), ", ".join(map(str, s.get("data_fields") or [])) or "-")
    return table


def programs_table(programs: list[dict[str, Any]], now: float | None = None) -> RenderableType:
    table = _table("programs", "session", "program", "type", "signature", "runs", "errors", "last executed",
                   "mean", empty=None if programs else "no programs")
    for p in programs:
        table.add_row(str(p.get("session_id")), str(p.get("program_id")), str(p.get("program_type")),
                      str(p.get("signature_def") or "-"), str(p.get("execution_count", 0)),
                      str(p.get("error_count", 0)), ago(p.get("last_executed"), now),
                      millis(p.get("mean_latency_ms")))
    return table


def inflight_table(inflight: list[dict[str, Any]], compact: bool = False) -> RenderableType:
    """Requests queued or running; `compact` (the --watch dashboard) keeps id, command, session, phase, age."""
    columns = ["id", "command", "session", "phase", "program", "model", "endpoint", "attempt", "age"]
    if compact:
        columns = ["id", "command", "session", "phase", "age"]
    table = _table("in flight", *columns, empty=None if inflight else "nothing in flight")
    for w in inflight:
        attempt = f"{w.get('attempt')}" + (f"/{w.get('retries')} retries" if w.get("retries") is not None else "") \
            if w.get("attempt") is not None else "-"
        phase = str(w.get("phase") or "running")
        if w.get("lm_call_ms") is not None:
            phase += f" {millis(w.get('lm_call_ms'))}"
        for callback in w.get("callbacks") or []:  # waiting on the client: name and age
            phase += f" [{callback.get('name')} {millis(callback.get('age_ms'))}]"
        cells = {"id": str(w.get("id")), "command": str(w.get("command")), "session": str(w.get("session_id")),
                 "phase": phase, "program": str(w.get("program_id") or "-"), "model": str(w.get("model") or "-"),
                 "endpoint": str(w.get("endpoint") or "-"), "attempt": attempt,
                 "age": millis(w.get("age_ms")) + (" (cancelled)" if w.get("cancelled") else "")}
        table.add_row(*(cells[name] for name in columns))
    return table


def _progress(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    done, total = progress.get("done") or 0, progress.get("total")
    if not total:
        return str(done)
    filled = min(10, round(10 * done / total))
    return f"{'█' * filled}{'░' * (10 - filled)} {done}/{total}"


def _score(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, (int, float)) else str(value)


def jobs_table(jobs: list[dict[str, Any]]) -> RenderableType:
    table = _table("jobs", "job", "kind", "status", "session", "progress", "score", "best", "LM calls",
                   "tokens", "cost", "elapsed", empty=None if jobs else "no jobs")
    for j in jobs:
        status = str(j.get("status"))
        if j.get("error_type"):
            status += f" ({j.get('error_type')})"
        table.add_row(str(j.get("job_id")), str(j.get("kind")), status, str(j.get("session_id")),
                      _progress(j), _score(j.get("score")), _score(j.get("best_score")),
                      str(j.get("lm_calls", 0)), tokens(j.get("tokens")),
                      f"${j.get('cost'):.4f}" if j.get("cost") else "-", duration(j.get("elapsed")))
    return table


def _frame_summary(entry: dict[str, Any]) -> str:
    frame = entry.get("frame")
    if entry.get("raw") is not None:
        return f"{entry.get('error', 'undecodable')}: {entry.get('raw')}"
    if not isinstance(frame, dict):
        return one_line(frame)
    if entry.get("direction") == "in":
        return one_line(frame.get("args") or {})
    if frame.get("success") is False:
        return f"{frame.get('error_type')}: {frame.get('error')}"
    return one_line(frame.get("result"))


def frames_table(frames: list[dict[str, Any]], width: int = 60) -> RenderableType:
    table = _table("frames", "time", "dir", "id", "command / outcome", "latency", "size", "content",
                   empty=None if frames else "no frames yet")
    for f in frames:
        direction = f.get("direction")
        if direction == "in":
            what = str(f.get("command") or "-")
        elif f.get("success") is False:
            what = f"error {f.get('error_type')}"
        elif f.get("success") is True:
            what = "ok"
        else:
            what = str(f.get("error") or "-")
        table.add_row(clock(f.get("timestamp")), "→ in" if direction == "in" else "← out", str(f.get("id", "-")),
                      what, millis(f.get("latency_ms")) if f.get("latency_ms") is not None else "",
                      size(f.get("size")), one_line(_frame_summary(f), width))
    return table


def lm_table(calls: list[dict[str, Any]], width: int = 50, compact: bool = False) -> RenderableType:
    """The LM call log; `compact` (the --watch dashboard) leaves out program, cost and status."""
    columns = ["time", "session", "model", "latency", "tokens", "prompt", "answer"]
    if not compact:
        columns[2:2] = ["program"]
        columns[5:5] = ["cost", "status"]
    table = _table("LM calls", *columns, empty=None if calls else "no LM calls yet")
    for c in calls:
        answer = f"ERROR {c.get('error')}" if c.get("error") else c.get("answer_preview") or ""
        cost = c.get("cost")
        cells = {"time": clock(c.get("timestamp")), "session": str(c.get("session_id") or "-"),
                 "program": str(c.get("program_id") or "-"), "model": str(c.get("model")),
                 "latency": millis(c.get("latency_ms")), "tokens": tokens(c.get("usage")),
                 "cost": f"${cost:.5f}" if isinstance(cost, (int, float)) else "-",
                 "status": str(c.get("status") or "-"), "prompt": one_line(c.get("prompt_preview") or "", width),
                 "answer": one_line(answer, width)}
        table.add_row(*(cells[name] for name in columns))
    return table


def lm_full(calls: list[dict[str, Any]]) -> RenderableType:
    """`lm --full`: each call's whole exchange (redacted by the worker), one block per call."""
    if not calls:
        return Text("no LM calls yet")
    parts: list[RenderableType] = []
    for c in calls:
        parts.append(Text(f"{clock(c.get('timestamp'))}  request #{c.get('request_id')}  session "
                          f"{c.get('session_id')}  program {c.get('program_id') or '-'}  {c.get('model')}  "
                          f"{millis(c.get('latency_ms'))}  {tokens(c.get('usage'))} tokens  {c.get('status')}",
                          style="bold"))
        for message in c.get("messages_full") or []:
            role = message.get("role", "?") if isinstance(message, dict) else "?"
            parts.append(Text(f"[{role}]", style="cyan"))
            parts.append(Text(_message_content(message)))
        if c.get("error"):
            parts.append(Text(f"ERROR {c.get('error')}", style="red"))
        for output in c.get("response_full") or []:
            parts.append(Text("[response]", style="magenta"))
            parts.append(Text(output.get("text", one_line(output, 100_000)) if isinstance(output, dict)
                              else str(output)))
        parts.append(Text(""))
    return Group(*parts)


def _message_content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, list):
        return "\n".join(str(p.get("text", p)) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


VIEW_RENDERERS = {
    "status": status_view,
    "sessions": lambda data: sessions_table(data.get("sessions") or []),
    "programs": lambda data: programs_table(data.get("programs") or []),
    "inflight": lambda data: inflight_table(data.get("inflight") or []),
    "jobs": lambda data: jobs_table(data.get("jobs") or []),
    "frames": lambda data: frames_table(data.get("frames") or [], width=10_000),
    "lm": lambda data: lm_table(data.get("calls") or [], width=10_000),
    "metrics": lambda data: Text(str(data.get("text") or "")),
}


def render_view(name: str, data: dict[str, Any], full: bool = False) -> RenderableType:
    if full and name == "lm":
        return lm_full(data.get("calls") or [])
    if full and name == "frames":
        return frames_table(data.get("frames") or [], width=1_000_000)
    renderer = VIEW_RENDERERS.get(name)
    if renderer is None:  # a view the worker knows and this CLI does not: show its data
        return Text(one_line(data, 10_000))
    return renderer(data)


def overview(snapshot: dict[str, Any]) -> RenderableType:
    """`dspex inspect WORKER`: status, sessions, programs, in-flight work and jobs (if any)."""
    parts = [status_view(snapshot["status"]), sessions_table(snapshot["sessions"]),
             programs_table(snapshot["programs"]), inflight_table(snapshot["inflight"])]
    if snapshot.get("jobs"):
        parts.append(jobs_table(snapshot["jobs"]))
    return Group(*parts)


# -- the --watch dashboard ---------------------------------------------------------------------


def dashboard(snapshot: dict[str, Any], now: float | None = None) -> RenderableType:
    """One frame of `--watch`: header, sessions, in-flight work, recent LM latency."""
    status = snapshot["status"]
    counters = status.get("counters") or {}
    recent = (status.get("rates") or {}).get("10s") or {}
    memory = status.get("memory") or {}
    header = Text.assemble(
        (f"{status.get('worker_id')}", "bold"), f"  pid {status.get('pid')}  {status.get('mode')}",
        f"  up {duration(status.get('uptime'))}  rss {size(memory.get('rss'))}",
        f"  {recent.get('requests_per_s', 0):g} req/s", f"  commands {counters.get('commands', 0)}",
        (f"  errors {counters.get('errors', 0)}", "red" if counters.get("errors") else ""),
        f"  in flight {counters.get('inflight', 0)}", f"  LM calls {counters.get('lm_calls', 0)}",
        ("  SHUTTING DOWN", "bold red") if status.get("shutting_down") else "",
    )
    calls = snapshot.get("lm") or []
    latencies = [c["latency_ms"] for c in calls if isinstance(c.get("latency_ms"), (int, float))]
    latency = status.get("lm_latency_ms") or {}
    lm_summary = Text.assemble(
        ("LM latency  ", "bold"), sparkline(latencies[-40:]) or "no LM calls yet",
        f"  p50 {millis(latency.get('p50'))}  p95 {millis(latency.get('p95'))}  max {millis(latency.get('max'))}",
    )
    sessions = snapshot.get("sessions") or []
    inflight = snapshot.get("inflight") or []
    return Group(
        Panel(header, title="dspex inspect --watch", title_align="left", expand=False,
              subtitle=f"refreshed {clock(now or time.time())}  q or Ctrl-C to quit", subtitle_align="right"),
        sessions_table(sessions[:10], now),
        inflight_table(inflight[:10], compact=True),
        *([jobs_table(snapshot["jobs"][:10])] if snapshot.get("jobs") else []),
        lm_summary,
        lm_table(calls[-5:], width=30, compact=True),
    )


# -- --follow -----------------------------------------------------------------------------------


def follow_line(event: dict[str, Any]) -> Text:
    """One `tail -f` line for a streamed event."""
    kind = event.get("event")
    data = event.get("data") or {}
    when = clock(data.get("timestamp") or event.get("timestamp"))
    if kind == "frame":
        if data.get("direction") == "in":
            session = f" [{data['session_id']}]" if data.get("session_id") else ""
            return Text.assemble(when, ("  → ", "cyan"), f"#{data.get('id', '-')} {data.get('command', '?')}{session} ",
                                 one_line(_frame_summary(data), 100))
        latency = f" {millis(data.get('latency_ms'))}" if data.get("latency_ms") is not None else ""
        outcome = ("ok", "green") if data.get("success") else (f"error {data.get('error_type')}", "red")
        return Text.assemble(when, ("  ← ", "magenta"), f"#{data.get('id', '-')} ", outcome, latency, " ",
                             one_line(_frame_summary(data), 100))
    if kind == "lm_call":
        answer = f"ERROR {data.get('error')}" if data.get("error") else data.get("answer_preview") or ""
        return Text.assemble(when, ("  LM ", "yellow"), f"{data.get('model')} {millis(data.get('latency_ms'))} ",
                             f"{tokens(data.get('usage'))} tok  ", one_line(data.get("prompt_preview") or "", 60),
                             " ⇒ ", one_line(answer, 60))
    if kind == "dropped":
        return Text(f"{when}  … {data.get('count')} event(s) dropped (inspector too slow)", style="red")
    return Text.assemble(when, (f"  {kind} ", "blue"), one_line(data, 120))
