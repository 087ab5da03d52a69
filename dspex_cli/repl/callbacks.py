"""Events of the console's requests: streamed chunks, status and progress go to the output
as they arrive, and callbacks (tools and metrics that live in the client) are answered
here, by a Python function from `dspex repl --tools FILE` or, on a terminal, by hand.

A callback arrives on whichever thread the target delivers events on, while the shell
waits for the request's reply on the main thread; a hand answer is therefore queued and
asked for by the shell's wait loop (`answer_pending`), where the terminal is free.
"""

from __future__ import annotations

import queue
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ToolFunction = Callable[..., Any]
# A line the user answers with: "!text" is an error answer, anything else JSON (or a string).
ERROR_PREFIX = "!"


class ToolsFileError(Exception):
    """A --tools file that cannot be loaded, or that defines no function."""


def load_tools_file(path: str | Path) -> dict[str, ToolFunction]:
    """The functions a --tools file defines, by name (a `TOOLS` dict there wins). A tool is
    called with the callback's args as keyword arguments; a metric with `example` and
    `prediction`."""
    try:
        namespace = runpy.run_path(str(path), run_name="dspex_repl_tools")
    except FileNotFoundError:
        raise ToolsFileError(f"--tools: no such file {path}") from None
    except Exception as exc:  # the user's own code: say what broke, keep the console out of it
        raise ToolsFileError(f"--tools {path}: {type(exc).__name__}: {exc}") from None
    chosen = namespace.get("TOOLS")
    if isinstance(chosen, dict):
        functions = {str(name): fn for name, fn in chosen.items() if callable(fn)}
    else:
        functions = {name: value for name, value in namespace.items()
                     if callable(value) and not name.startswith("_") and not isinstance(value, type)
                     and getattr(value, "__module__", None) == "dspex_repl_tools"}
    if not functions:
        raise ToolsFileError(f"--tools {path}: defines no function (name them as the tools, e.g. def lookup(query): ...)")
    return functions


def call_function(function: ToolFunction, data: dict[str, Any]) -> dict[str, Any]:
    """The answer frame's body for a callback, from a local function."""
    args = data.get("args") if isinstance(data.get("args"), dict) else {}
    try:
        return {"result": orjson.loads(orjson.dumps(function(**args), default=str))}
    except Exception as exc:  # the agent sees the error, as it would for a tool that raises
        return {"error": f"{type(exc).__name__}: {exc}"}


def parse_hand_answer(line: str) -> dict[str, Any]:
    """What the user typed for a callback: `!text` an error, JSON a result, else the text."""
    text = line.strip()
    if text.startswith(ERROR_PREFIX):
        return {"error": text[len(ERROR_PREFIX):].strip() or "refused in the console"}
    if not text:
        return {"error": "no answer given in the console"}
    try:
        return {"result": orjson.loads(text)}
    except orjson.JSONDecodeError:
        return {"result": text}


def hand_prompt(data: dict[str, Any]) -> str:
    args = orjson.dumps(data.get("args"), option=orjson.OPT_SORT_KEYS).decode()
    return (f"{data.get('kind')} {data.get('name')} asks {args}\n"
            f"answer (JSON or text; {ERROR_PREFIX}text for an error): ")


class ClientCallbacks:
    """Answers each callback event: a --tools function, else the user (queued), else an error."""

    def __init__(self, functions: dict[str, ToolFunction] | None = None) -> None:
        self.functions = dict(functions or {})
        self.pending: queue.Queue[dict[str, Any]] = queue.Queue()
        self.answered = 0

    def on_callback(self, data: dict[str, Any], can_ask: bool, send: Callable[[dict[str, Any]], None]) -> None:
        function = self.functions.get(str(data.get("name")))
        if function is not None:
            self._send(send, data, call_function(function, data))
        elif can_ask:
            self.pending.put(data)
        else:
            self._send(send, data, {"error": f"no --tools function {data.get('name')} (a pipe cannot ask by hand)"})

    def answer_pending(self, ask: Callable[[str], str], send: Callable[[dict[str, Any]], None]) -> None:
        """Asks the user for each queued callback (the shell's wait loop calls this)."""
        while True:
            try:
                data = self.pending.get_nowait()
            except queue.Empty:
                return
            try:
                line = ask(hand_prompt(data))
            except (EOFError, KeyboardInterrupt):
                line = f"{ERROR_PREFIX}the user declined in the console"
            self._send(send, data, parse_hand_answer(line))

    def _send(self, send: Callable[[dict[str, Any]], None], data: dict[str, Any], body: dict[str, Any]) -> None:
        self.answered += 1
        send({"callback_id": data.get("callback_id"), **body})


__all__ = ["ClientCallbacks", "ToolsFileError", "call_function", "hand_prompt", "load_tools_file",
           "parse_hand_answer"]
