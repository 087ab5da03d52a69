"""What `dspex top` draws: the pool table, one worker's page, a request's stack, the keys.

Plain data in, rich renderables out (nothing here talks to a worker), so every screen can
be rendered into a console of any size in a test. Columns are one table (`COLUMNS`): the
pool table, its sort keys, the help screen and the JSON snapshot all read it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from dspex_cli.inspect_views import clock, duration, millis, one_line, size


@dataclass(frozen=True)
class Column:
    title: str
    key: str  # the row field it shows and sorts by
    width: int  # the least it needs; the table is narrowed by dropping columns, not squeezing them
    show: Callable[[Any], str]
    priority: int  # lower stays longer when the terminal is narrow
    numeric: bool = True  # numbers sort largest first, text in order


def _rate(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.0f}%"


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def _cost(value: Any) -> str:
    return f"${value:.4f}" if isinstance(value, (int, float)) and value else "-"


def _ms(value: Any) -> str:
    return millis(value) if isinstance(value, (int, float)) else "-"


def _jobs(value: Any) -> str:
    return str(value) if value else "-"


COLUMNS: tuple[Column, ...] = (
    Column("worker", "worker_id", 10, str, 0, numeric=False),
    Column("pid", "pid", 6, str, 1),
    Column("mode", "mode", 10, str, 9, numeric=False),
    Column("up", "uptime", 6, duration, 8),
    Column("RSS", "rss", 8, size, 5),
    Column("CPU", "cpu_pct", 4, _pct, 3),
    Column("inflight", "inflight", 8, _count, 2),
    Column("oldest", "oldest_ms", 7, _ms, 2),
    Column("req/s", "requests_per_s", 5, _rate, 4),
    Column("err/s", "errors_per_s", 5, _rate, 6),
    Column("LM/s", "lm_calls_per_s", 5, _rate, 7),
    Column("LM p50", "lm_p50_ms", 7, _ms, 7),
    Column("LM p99", "lm_p99_ms", 7, _ms, 6),
    Column("tok/min", "tokens_per_min", 7, _rate, 8),
    Column("cost", "cost_usd", 8, _cost, 9),
    Column("jobs", "jobs_running", 4, _jobs, 8),
)
DEFAULT_SORT = "worker_id"

KEYS = (
    ("↑ ↓", "select a worker (or a request on a worker's page)"),
    ("Enter", "open the selected worker: sessions, programs, in-flight requests, jobs, last LM calls"),
    ("Esc", "back to the previous screen"),
    ("s / S", "sort by the next / previous column"),
    ("1-9", "sort by that column of the table"),
    ("r", "reverse the sort order"),
    ("/", "filter by worker id, pid or session (Enter applies, Esc clears)"),
    ("t", "on a worker's page: the Python stack of the selected request"),
    ("c", "on a worker's page: cancel the selected request (asks first)"),
    ("?", "this help"),
    ("q", "quit"),
)


def sort_rows(rows: list[dict[str, Any]], key: str, reverse: bool) -> list[dict[str, Any]]:
    """Numbers largest first (what is busiest is what matters), text in order; `reverse` flips."""
    column = next((c for c in COLUMNS if c.key == key), COLUMNS[0])

    def order(row: dict[str, Any]) -> tuple[int, Any, str]:
        value = row.get(column.key)
        if column.numeric:
            number = value if isinstance(value, (int, float)) else float("-inf")
            return (0, -number, str(row.get("worker_id")))
        return (0, str(value), str(row.get("pid")))
    ordered = sorted(rows, key=order)
    return list(reversed(ordered)) if reverse else ordered


def visible_columns(width: int) -> list[Column]:
    """The columns that fit `width`, keeping the table's order and the most useful ones."""
    chosen: list[Column] = []
    for column in sorted(COLUMNS, key=lambda c: c.priority):
        needed = sum(c.width + 1 for c in chosen) + column.width
        if needed <= width:
            chosen.append(column)
    return [c for c in COLUMNS if c in chosen]


def _header(left: str, right: str, width: int) -> Text:
    # Off a terminal the width is "unlimited": keep the right part close.
    gap = 3 if width > 1000 else max(1, width - len(left) - len(right))
    text = Text(left, style="bold")
    if len(left) + len(right) + 1 <= width:
        text.append(" " * gap + right, style="dim")
    return text


def pool_screen(rows: list[dict[str, Any]], *, selected: int, sort_key: str, reverse: bool, filter_text: str,
                width: int, height: int, message: str = "", now: float | None = None) -> RenderableType:
    """The pool: one row per worker, the selected one highlighted."""
    columns = visible_columns(width)
    sort_title = next((c.title for c in COLUMNS if c.key == sort_key), sort_key)
    arrow = "▲" if reverse else "▼"
    left = f"dspex top  {len(rows)} worker(s)  sort {sort_title} {arrow}"
    if filter_text:
        left += f"  filter {filter_text!r}"
    head = _header(left, f"{clock(now or time.time())[:8]}  ? keys  q quit", width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                  collapse_padding=True, expand=False)
    for index, column in enumerate(columns, start=1):
        title = column.title + (arrow if column.key == sort_key else "")
        table.add_column(title, min_width=column.width, no_wrap=True, overflow="ellipsis",
                         justify="left" if not column.numeric or column.key == "pid" else "right",
                         header_style="bold reverse" if column.key == sort_key else "bold")
    room = max(1, height - 5)
    first = max(0, min(selected - room + 1, len(rows) - room)) if selected >= room else 0
    for index, row in enumerate(rows[first:first + room], start=first):
        style = "reverse" if index == selected else ("red" if row.get("stuck") else "")
        table.add_row(*(column.show(row.get(column.key)) for column in columns), style=style)
    if not rows:
        body: RenderableType = Text("no live dspex workers for this user" +
                                    (f" match {filter_text!r}" if filter_text else ""), style="dim")
    else:
        body = table
    footer = Text(message or "Enter: open worker   s/1-9: sort   r: reverse   /: filter", style="dim")
    return Group(head, body, footer)


def _detail_line(request: dict[str, Any]) -> str:
    parts = [f"phase {request.get('phase')}"]
    for key, label in (("program_id", "program"), ("model", "model"), ("endpoint", "endpoint"),
                       ("attempt", "attempt"), ("retries", "retries"), ("tool", "tool")):
        if request.get(key) not in (None, ""):
            parts.append(f"{label} {request.get(key)}")
    if request.get("lm_call_ms") is not None:
        parts.append(f"in LM call {millis(request.get('lm_call_ms'))}")
    if request.get("cancelled"):
        parts.append("CANCELLED (finishing)")
    return "  ".join(parts)


def worker_screen(page: dict[str, Any], *, selected: int, width: int, height: int,
                  message: str = "") -> RenderableType:
    """One worker: its figures, in-flight requests with detail, sessions, programs, jobs, LM calls."""
    row = page["row"]
    head = _header(f"{row.get('worker_id')}  pid {row.get('pid')}  {row.get('mode')}  up "
                   f"{duration(row.get('uptime'))}  RSS {size(row.get('rss'))}  CPU {_pct(row.get('cpu_pct'))}",
                   "Esc back  t stack  c cancel  q quit", width)
    figures = Text(f"req/s {_rate(row.get('requests_per_s'))}  err/s {_rate(row.get('errors_per_s'))}  "
                   f"LM/s {_rate(row.get('lm_calls_per_s'))}  LM p50 {_ms(row.get('lm_p50_ms'))} "
                   f"p99 {_ms(row.get('lm_p99_ms'))}  tok/min {_rate(row.get('tokens_per_min'))}  "
                   f"cost {_cost(row.get('cost_usd'))}  (rates over the last {row.get('window_s', '?')}s)")
    inflight = page.get("inflight") or []
    parts: list[RenderableType] = [head, figures, Text(f"in flight ({len(inflight)})", style="bold")]
    if not inflight:
        parts.append(Text("  nothing in flight", style="dim"))
    for index, request in enumerate(inflight):
        mark = "▶ " if index == selected else "  "
        style = "reverse" if index == selected else ""
        parts.append(Text(f"{mark}#{request.get('id')} {request.get('command')} session "
                          f"{request.get('session_id')} {millis(request.get('age_ms'))}", style=style))
        parts.append(Text("    " + _detail_line(request), style="dim" if index != selected else ""))
    sessions = page.get("sessions") or []
    parts.append(Text(f"sessions ({len(sessions)})", style="bold"))
    for session in sessions[:8]:
        programs = ", ".join(map(str, session.get("programs") or [])) or "-"
        lm = session.get("lm") if isinstance(session.get("lm"), dict) else {}
        parts.append(Text(f"  {session.get('session_id')}  programs {programs}  LM {lm.get('model', '-')}  "
                          f"idle {duration(session.get('idle_s'))}"))
    programs = page.get("programs") or []
    parts.append(Text(f"programs ({len(programs)})", style="bold"))
    for program in programs[:8]:
        parts.append(Text(f"  {program.get('session_id')}/{program.get('program_id')}  {program.get('program_type')}"
                          f"  runs {program.get('execution_count', 0)}  errors {program.get('error_count', 0)}"
                          f"  mean {_ms(program.get('mean_latency_ms'))}"))
    jobs = page.get("jobs") or []
    if jobs:
        parts.append(Text(f"jobs ({len(jobs)})", style="bold"))
        for job in jobs[:5]:
            parts.append(Text(f"  {job.get('job_id')}  {job.get('kind')}  {job.get('status')}  "
                              f"session {job.get('session_id')}  elapsed {duration(job.get('elapsed'))}"))
    calls = page.get("lm") or []
    parts.append(Text(f"last LM calls ({len(calls)})", style="bold"))
    for call in calls[-5:]:
        status = "ERROR" if call.get("status") == "error" else "ok"
        parts.append(Text(f"  {clock(call.get('timestamp'))}  {call.get('model')}  {_ms(call.get('latency_ms'))}  "
                          f"{status}  session {call.get('session_id')}  program {call.get('program_id') or '-'}"))
    parts.append(Text(message or "↑↓ select request  t stack  c cancel  Esc back", style="dim"))
    return Group(*_fit(parts, height))


def _fit(parts: list[RenderableType], height: int) -> list[RenderableType]:
    """Keeps the last line (the prompt) visible on a short terminal."""
    if len(parts) <= height:
        return parts
    return [*parts[:max(1, height - 1)], parts[-1]]


def stack_lines(stack: dict[str, Any], full_paths: bool = False, innermost_first: bool = False) -> list[str]:
    """`file:line function` per frame, per thread: innermost last as in a traceback, or first
    (a small screen shows where the thread is now before how it got there)."""
    lines: list[str] = []
    if stack.get("note"):
        lines.append(str(stack["note"]))
    for thread in stack.get("threads") or []:
        serving = f" serving {', '.join(map(str, thread.get('requests') or []))}" if thread.get("requests") else ""
        marker = " (this inspector)" if thread.get("inspector") else ""
        lines.append(f"thread {thread.get('name')} ({thread.get('ident')}){serving}{marker}")
        frames = list(thread.get("frames") or [])
        for frame in reversed(frames) if innermost_first else frames:
            path = str(frame.get("file"))
            shown = path if full_paths else _short_path(path)
            lines.append(f"  {shown}:{frame.get('line')} {frame.get('function')}")
    return lines


def _short_path(path: str) -> str:
    """site-packages/dspy/clients/lm.py rather than the whole interpreter prefix."""
    for marker in ("site-packages/", "dist-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1] if marker.endswith("/") else path
    return path


def stack_screen(stack: dict[str, Any], *, width: int, height: int, offset: int = 0) -> RenderableType:
    request = stack.get("request_id")
    head = _header(f"stack of request #{request} ({stack.get('command')}, phase {stack.get('phase')}), "
                   "innermost first", "↑↓ scroll  Esc back  q quit", width)
    lines = stack_lines(stack, innermost_first=True)
    room = max(1, height - 2)
    offset = max(0, min(offset, len(lines) - room))
    body = [Text(one_line(line, 10_000), no_wrap=True, overflow="ellipsis") for line in lines[offset:offset + room]]
    return Group(head, *body)


def help_screen(width: int) -> RenderableType:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, meaning in KEYS:
        table.add_row(key, meaning)
    numbered = "  ".join(f"{i} {c.title}" for i, c in enumerate(visible_columns(width)[:9], start=1))
    return Group(Text("dspex top: keys", style="bold"), table, Text(f"columns: {numbered}", style="dim"),
                 Text("any key: back", style="dim"))


__all__ = ["COLUMNS", "DEFAULT_SORT", "KEYS", "help_screen", "pool_screen", "sort_rows", "stack_lines",
           "stack_screen", "visible_columns", "worker_screen"]
