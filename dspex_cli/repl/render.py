"""Rich rendering of the console's outcomes on a terminal.

Lists become tables, predictions become panels (reasoning first, dimmed), anything else
is highlighted JSON; errors are red with their error_type and a hint. Imported on first
output, never before the first prompt.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dspex_cli.env import Environment

from .parsing import format_assignments, registry


def _json(value: Any) -> JSON:
    return JSON(json.dumps(value, ensure_ascii=False, default=str))


def _cell(value: Any) -> Text:
    """A table cell as plain text: brackets in values must never be read as rich markup."""
    if value is None:
        return Text("-")
    if isinstance(value, float):
        return Text(f"{value:.1f}")
    if isinstance(value, (list, dict)):
        return Text(json.dumps(value, ensure_ascii=False))
    return Text(str(value))


class RichOutput:
    """Output for a terminal: the Environment's console, or any rich Console given."""

    def __init__(self, console: Console | None = None, env: Environment | None = None) -> None:
        self.console = console or (env or Environment.from_process()).console()
        self._progress_lock = threading.Lock()
        self._progress_shown = 0.0
        self._streaming: str | None = None  # the field whose chunks are being written

    # -- the Output protocol ------------------------------------------------------------

    def sent(self, request: dict[str, Any], raw: bool) -> None:
        if raw:
            # As on the wire: one compact line, so it can be copied into a client.
            self.console.print(Text("→ " + json.dumps(request, ensure_ascii=False), style="dim"),
                               soft_wrap=True)
            return
        args = format_assignments(request.get("args") or {})
        self.console.print(Text(f"→ {request['command']} {args}".rstrip(), style="dim"))

    def event(self, frame: dict[str, Any]) -> None:
        """A streamed chunk is written as it arrives, on one line per field; status,
        progress and callbacks as dim lines of their own."""
        kind, data = frame.get("event"), frame.get("data") if isinstance(frame.get("data"), dict) else {}
        with self._progress_lock:
            if kind == "chunk":
                field = str(data.get("field"))
                if field != self._streaming:
                    self._end_stream()
                    self.console.print(Text(f"{field}: ", style="bold"), end="")
                    self._streaming = field
                self.console.print(Text(str(data.get("delta") or "")), end="", soft_wrap=True)
                return
            self._end_stream()
            if kind == "progress":
                score = data.get("score")
                line = f"… {data.get('done')}/{data.get('total')}" + (f" score {score:g}" if isinstance(score, (int, float)) else "")
            elif kind == "callback":
                line = f"↪ {data.get('kind')} {data.get('name')} {json.dumps(data.get('args'), ensure_ascii=False)}"
            else:
                line = f"… {data.get('message', kind)}"
            self.console.print(Text(line, style="dim"), soft_wrap=True)

    def _end_stream(self) -> None:
        if self._streaming is not None:
            self.console.print()
            self._streaming = None

    def reply(self, request: dict[str, Any], reply: dict[str, Any], elapsed_ms: float | None,
              raw: bool) -> None:
        with self._progress_lock:
            self._end_stream()
        if raw:
            self.console.print(_json(reply))
        elif not reply.get("success"):
            self.error(str(reply.get("error")), reply.get("suggestion"), str(reply.get("error_type") or "error"))
        else:
            self.console.print(self._result(request.get("command", ""), reply.get("result") or {}))
        if elapsed_ms is not None:
            self.console.print(Text(f"({elapsed_ms:.1f} ms)", style="dim"))

    def error(self, message: str, suggestion: str | None = None, error_type: str = "error") -> None:
        line = Text()
        line.append(f"✗ {error_type}: ", style="bold red")
        line.append(message, style="red")
        self.console.print(line)
        if suggestion:
            self.console.print(Text(f"  hint: {suggestion}", style="yellow"))

    def notice(self, message: str, suggestion: str | None = None) -> None:
        self.error(message, suggestion, "warning")

    def info(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.console.print(Text(message, style="cyan"))

    def cancelled(self, request: dict[str, Any]) -> None:
        self.console.print(Text(f"✗ cancelled: {request['command']} (id {request['id']}) — "
                                "the console stopped waiting; the worker may still finish it",
                                style="bold red"))

    def progress(self, label: str, done: int, total: int, final: bool = False, note: str = "replies") -> None:
        """One status line rewritten in place (at most 10 times a second), ended when final."""
        with self._progress_lock:
            now = time.monotonic()
            if not final and done not in (0, total) and now - self._progress_shown < 0.1:
                return
            self._progress_shown = now
            line = f"{label}: {done}/{total} {note}"
            if not self.console.is_terminal:
                if final:
                    self.console.print(Text(line, style="dim"))
                return
            self.console.file.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.console.file.flush()

    def data(self, kind: str, payload: Any) -> None:
        renderer = getattr(self, f"_data_{kind}", None)
        self.console.print(renderer(payload) if renderer else _json(payload))

    # -- results by command ---------------------------------------------------------------

    def _result(self, command: str, result: dict[str, Any]) -> Any:
        """A reply's result, shown by what its command does (its tags), else as JSON."""
        from bridge.registry import CONFIGURES_LM, CREATES_PROGRAM, LISTS_PROGRAMS, LISTS_SESSIONS, RUNS_PROGRAM

        spec = registry().find(command) if isinstance(command, str) else None
        tags = spec.tags if spec is not None else frozenset()
        if RUNS_PROGRAM in tags and isinstance(result.get("outputs"), dict):
            return self._prediction(result)
        if LISTS_PROGRAMS in tags:
            return self._data_programs(result)
        if LISTS_SESSIONS in tags:
            return self._data_sessions({"current": None, "sessions": result.get("sessions") or []})
        if CREATES_PROGRAM in tags:
            return Text.assemble(("✓ ", "green"), (str(result.get("program_id")), "bold"),
                                 f" = {result.get('signature_def') or ''} ({result.get('program_type')})")
        if CONFIGURES_LM in tags:
            return Text.assemble(("✓ ", "green"), "LM ", (str(result.get("model")), "bold"),
                                 f" ({result.get('scope')}{', session ' + str(result.get('session_id')) if result.get('scope') == 'session' else ''})")
        return _json(result)

    def _prediction(self, result: dict[str, Any]) -> Panel:
        outputs = dict(result["outputs"])
        parts: list[Any] = []
        reasoning = outputs.pop("reasoning", None)
        if reasoning is not None:
            parts.append(Text(f"reasoning: {reasoning}", style="dim italic"))
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for name, value in outputs.items():
            table.add_row(Text(name), Text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)))
        parts.append(table)
        usage = result.get("usage") or {}
        details = [str(result.get("model") or "")]
        if result.get("duration_ms") is not None:
            details.append(f"{result['duration_ms']:.0f} ms")
        if usage.get("total_tokens") is not None:
            details.append(f"{usage['total_tokens']} tokens")
        return Panel(Group(*parts), title=Text(str(result.get("program_id"))), title_align="left",
                     subtitle=Text(" · ".join(d for d in details if d)), subtitle_align="right", border_style="green")

    # -- meta-command data ---------------------------------------------------------------

    def _data_programs(self, result: dict[str, Any]) -> Any:
        programs = result.get("programs") or []
        if not programs:
            return Text(f"no programs in session {result.get('session_id')}", style="dim")
        table = Table(title=Text(f"programs in {result.get('session_id')}"), title_justify="left")
        for column in ("id", "type", "signature", "runs", "errors", "mean ms"):
            table.add_column(column)
        for p in programs:
            table.add_row(_cell(p.get("id")), _cell(p.get("program_type")), _cell(p.get("signature_def")),
                          _cell(p.get("execution_count")), _cell(p.get("error_count")),
                          _cell(p.get("mean_latency_ms")))
        return table

    def _data_sessions(self, payload: dict[str, Any]) -> Any:
        table = Table(title="sessions", title_justify="left")
        for column in ("", "session", "programs", "LM", "data keys"):
            table.add_column(column)
        current = payload.get("current")
        rows = payload.get("sessions") or []
        if current and current not in {s.get("session_id") for s in rows}:
            rows = [*rows, {"session_id": current, "programs": [], "lm": None, "data_keys": []}]
        for s in rows:
            lm = s.get("lm") or {}
            table.add_row("*" if s.get("session_id") == current else "", _cell(s.get("session_id")),
                          _cell(", ".join(s.get("programs") or []) or "-"), _cell(lm.get("model") if lm else None),
                          _cell(", ".join(s.get("data_keys") or []) or "-"))
        return table

    def _data_help(self, payload: dict[str, Any]) -> Any:
        commands = Table(title="protocol commands (`command key=value ...` or `command {json}`)",
                         title_justify="left")
        commands.add_column("command", style="bold green")
        commands.add_column("arguments")
        commands.add_column("what it does")
        for c in payload["commands"]:
            commands.add_row(_cell(c["name"]), _cell(", ".join(c["args"]) or "-"), _cell(c["summary"]))
        metas = Table(title="console commands", title_justify="left")
        metas.add_column("meta", style="bold magenta")
        metas.add_column("usage")
        metas.add_column("what it does")
        for m in payload["meta"]:
            metas.add_row(_cell(m["name"]), _cell(m["usage"]), _cell(m["summary"]))
        shortcuts = Text.from_markup(
            "[bold]shortcuts[/]: [cyan]qa = question -> answer: int[/] defines a program, "
            "[cyan]qa(question=\"...\")[/] runs it. Tab completes, Ctrl-R searches history, "
            "Ctrl-C cancels a call, Ctrl-D exits.")
        return Group(commands, metas, shortcuts)

    def _data_help_command(self, payload: dict[str, Any]) -> Any:
        table = Table(title=Text(f"{payload['name']} — {payload['summary']}"), title_justify="left")
        table.add_column("argument", style="bold cyan")
        table.add_column("type")
        table.add_column("required")
        table.add_column("help")
        for a in payload["args"]:
            table.add_row(_cell(a["name"]), _cell(a["type"]), "yes" if a["required"] else "", _cell(a["help"]))
        if not payload["args"]:
            table.add_row("-", "", "", "takes no arguments")
        return table

    def _data_help_meta(self, payload: dict[str, Any]) -> Any:
        aliases = f" (also {', '.join(payload['aliases'])})" if payload["aliases"] else ""
        return Text.assemble((f"{payload['name']} {payload['usage']}".rstrip(), "bold magenta"), aliases,
                             "\n  ", payload["summary"])

    def _data_history(self, rows: list[dict[str, Any]]) -> Any:
        if not rows:
            return Text("no LM calls yet", style="dim")
        table = Table(title="last LM calls", title_justify="left")
        for column in ("model", "ms", "tokens", "prompt", "answer"):
            table.add_column(column, overflow="fold")
        for r in rows:
            answer = Text(r["answer"], style="red") if r.get("error") else r["answer"]
            table.add_row(_cell(r["model"]), _cell(r["latency_ms"]), _cell(r["tokens"]), _cell(r["prompt"]),
                          answer if isinstance(answer, Text) else _cell(answer))
        return table

    def _data_usage(self, payload: dict[str, Any]) -> Any:
        usage = payload.get("usage") or {}
        summary = Text(f"{payload.get('lm_calls') or 0} LM calls · "
                       f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion "
                       f"= {usage.get('total_tokens', 0)} tokens · {payload.get('commands')} commands, "
                       f"{payload.get('errors')} errors")
        by_model = payload.get("by_model") or {}
        if not by_model:
            return summary
        table = Table(title="by model (recent calls)", title_justify="left")
        for column in ("model", "calls", "prompt", "completion", "total", "mean ms"):
            table.add_column(column)
        for model, row in by_model.items():
            table.add_row(_cell(model), _cell(row["calls"]), _cell(row["prompt_tokens"]), _cell(row["completion_tokens"]),
                          _cell(row["total_tokens"]), _cell(row["latency_ms"] / max(row["calls"], 1)))
        return Group(summary, table)

    def _data_replay(self, payload: dict[str, Any]) -> Any:
        where = f" in {payload['where']}" if payload.get("where") else ""
        skipped = payload.get("skipped") or []
        note = Text("".join(f"\n  not sent: {s['command']} (request {s['id']}): {s['reason']}" for s in skipped),
                    style="yellow")
        if payload["ok"]:
            return Text(f"✓ {payload['file']}{where}: {payload.get('requests')} requests, every reply matched "
                        f"({payload['duration_ms']} ms)", style="green")
        if payload.get("error"):
            return Group(Text(f"✗ {payload['file']}{where}: {payload['error']}", style="bold red"), note)
        table = Table(title=Text(f"✗ {payload['file']}{where}: {len(payload['mismatches'])} mismatch(es)"),
                      title_justify="left", title_style="bold red")
        for column in ("request", "command", "path", "expected", "actual"):
            table.add_column(column, overflow="fold")
        for m in payload["mismatches"]:
            table.add_row(_cell(m["request_id"]), _cell(m["command"]), _cell(m["path"]),
                          Text(_cell(m["expected"]).plain, style="green"), Text(_cell(m["actual"]).plain, style="red"))
        return Group(table, note) if skipped else table
