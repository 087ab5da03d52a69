"""`dspex repl` when stdin is not a terminal: one command per line in, one JSON line out.

Protocol commands (and the friendly forms that send one) print the engine's reply as
it is. Meta-commands print `{"success": true, "meta": KIND, "result": ...}`; input the
console rejects prints `{"success": false, "error", "error_type", "suggestion"}`. A
command continues on the next lines while brackets or quotes are open, as on the terminal,
if those lines are indented (or close the bracket); a line at the left margin always
starts a new command. Nothing else is written
to stdout, so the output can be piped into `jq`. The exit code is 1 if anything failed.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import orjson

from dspex_cli.exit_status import ExitStatus

from .parsing import is_complete
from .shell import Shell


class JsonLinesOutput:
    """Output that writes one JSON document per line, and nothing else."""

    def __init__(self, stream: IO[str], errors: IO[str] | None = None) -> None:
        self.stream = stream
        # Where notices go (the Environment's stderr); the process's stderr by default.
        self.errors = errors

    def _write(self, value: Any) -> None:
        self.stream.write(orjson.dumps(value, default=str).decode() + "\n")
        self.stream.flush()

    def sent(self, request: dict[str, Any], raw: bool) -> None:
        pass  # the reply carries the request id; the input line is the request

    def reply(self, request: dict[str, Any], reply: dict[str, Any], elapsed_ms: float | None,
              raw: bool) -> None:
        self._write(reply)

    def error(self, message: str, suggestion: str | None = None, error_type: str = "error") -> None:
        body: dict[str, Any] = {"success": False, "error": message, "error_type": error_type}
        if suggestion:
            body["suggestion"] = suggestion
        self._write(body)

    def notice(self, message: str, suggestion: str | None = None) -> None:
        # Not an answer to any input line: stderr keeps stdout one line per command.
        hint = f" ({suggestion})" if suggestion else ""
        (self.errors or sys.stderr).write(f"dspex repl: {message}{hint}\n")

    def info(self, message: str, data: dict[str, Any] | None = None) -> None:
        self._write({"success": True, "meta": "info", "message": message, "result": data or {}})

    def data(self, kind: str, payload: Any) -> None:
        self._write({"success": True, "meta": kind, "result": payload})

    def event(self, frame: dict[str, Any]) -> None:
        # Only requests that asked have events (`:stream on`, client tools): a line each.
        self._write({"event": frame.get("event"), "id": frame.get("id"), "data": frame.get("data")})

    def cancelled(self, request: dict[str, Any]) -> None:
        self.error(f"{request['command']} (id {request['id']}) was interrupted", None, "cancelled")


def run_pipe(shell: Shell, source: IO[str]) -> ExitStatus:
    """Reads commands until end of input; the exit code says whether all succeeded."""
    buffer = ""
    for line in source:
        if buffer and not line[:1].isspace() and not line.lstrip().startswith(("}", "]")):
            # A line at the left margin starts a new command: the unfinished one before it
            # gets its error instead of swallowing every command that follows.
            shell.handle(buffer)
            buffer = ""
            if shell.quit_requested:
                break
        buffer += line
        if not is_complete(buffer):
            continue
        text, buffer = buffer, ""
        shell.handle(text)
        if shell.quit_requested:
            break
    if buffer.strip():
        shell.handle(buffer)  # what is still open at the end gets its error, not silence
    return ExitStatus.FAILURE if shell.failures else ExitStatus.OK
