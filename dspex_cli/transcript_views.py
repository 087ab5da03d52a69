"""Renderers of `dspex inspect FILE.jsonl`: a recorded transcript's summary, sessions,
programs, timeline and LM calls (the data comes from inspect_transcript)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from .inspect_views import _table, lm_table, millis, one_line


def transcript_summary(report: dict[str, Any]) -> RenderableType:
    header = report.get("header") or {}
    counts = report.get("counts") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("file", str(report.get("path")))
    grid.add_row("format", f"{header.get('format')} v{header.get('version')}")
    grid.add_row("recorded", f"{header.get('created_at', '-')}  worker {header.get('worker_id')}  "
                 f"mode {header.get('mode')}  pid {header.get('pid', '-')}")
    versions = header.get("versions") or {}
    if versions:
        grid.add_row("versions", "  ".join(f"{k} {v}" for k, v in versions.items() if v))
    grid.add_row("frames", f"{counts.get('frames_in', 0)} in, {counts.get('frames_out', 0)} out  "
                 f"requests {counts.get('requests', 0)}  errors {counts.get('errors', 0)}  "
                 f"unanswered {counts.get('unanswered', 0)}")
    grid.add_row("LM calls", str(counts.get("lm_calls", 0)))
    grid.add_row("duration", millis(report.get("duration_ms")))
    grid.add_row("complete", "yes (clean end)" if report.get("complete") else
                 "no end line (worker killed or still recording)" + (", torn last line" if report.get("torn") else ""))
    return Panel(grid, title="transcript", title_align="left", box=box.ROUNDED, expand=False)


def transcript_sessions_table(sessions: list[dict[str, Any]]) -> RenderableType:
    table = _table("sessions", "session", "requests", "errors", "programs", "LM", "first", "last",
                   empty=None if sessions else "no sessions")
    for s in sessions:
        table.add_row(str(s.get("session_id")), str(s.get("requests")), str(s.get("errors")),
                      ", ".join(s.get("programs") or []) or "-", str(s.get("lm") or "-"),
                      millis(s.get("first_ms")), millis(s.get("last_ms")))
    return table


def transcript_programs_table(programs: list[dict[str, Any]]) -> RenderableType:
    table = _table("programs", "session", "program", "type", "signature", "runs", "errors", "mean",
                   empty=None if programs else "no programs")
    for p in programs:
        table.add_row(str(p.get("session_id")), str(p.get("program_id")), str(p.get("program_type") or "-"),
                      str(p.get("signature") or "-"), str(p.get("execution_count", 0)),
                      str(p.get("error_count", 0)), millis(p.get("mean_latency_ms")))
    return table


def timeline_table(timeline: list[dict[str, Any]], width: int = 50) -> RenderableType:
    table = _table("timeline", "at", "dir", "id", "command / outcome", "latency", "content",
                   empty=None if timeline else "no frames")
    for f in timeline:
        if f.get("direction") == "in":
            what = str(f.get("command") or "-")
        elif f.get("success") is False:
            what = f"error {f.get('error_type')}"
        else:
            what = "ok" if f.get("success") else str(f.get("error") or "-")
        table.add_row(millis(f.get("offset_ms")), "→ in" if f.get("direction") == "in" else "← out",
                      str(f.get("id", "-")), what,
                      millis(f.get("latency_ms")) if f.get("latency_ms") is not None else "",
                      one_line(f.get("summary") or "", width))
    return table


TRANSCRIPT_RENDERERS = {
    "summary": transcript_summary,
    "sessions": lambda r: transcript_sessions_table(r.get("sessions") or []),
    "programs": lambda r: transcript_programs_table(r.get("programs") or []),
    "timeline": lambda r: timeline_table(r.get("timeline") or []),
    "lm": lambda r: lm_table(r.get("lm_calls") or []),
}


def transcript_overview(report: dict[str, Any]) -> RenderableType:
    return Group(*(render(report) for render in TRANSCRIPT_RENDERERS.values()))
