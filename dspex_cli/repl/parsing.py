"""From one line (or a few, while brackets are open) of console input to a request.

Accepted forms:

* `command key=value key.sub=value ...`: values are read as JSON when they parse
  (`3`, `true`, `{"a": 1}`, `"quoted"`), else kept as strings; `'single quotes'` make a
  string of anything; `key.sub=value` builds nested objects.
* `command {json}`: the arguments as one JSON object, sent exactly as written.
* `:meta arguments`: a console meta-command (see meta.py); `help`, `quit` and `exit`
  also work without the colon, as in most consoles.
* `name = inputs -> outputs`: defines a program from a DSPy string signature.
* `name(field="value", n=3)`: runs a program with keyword inputs.

Command and argument names come from the one command registry (bridge.catalog()) only.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any


OPENERS = {"{": "}", "[": "]", "(": ")"}
CLOSERS = {v: k for k, v in OPENERS.items()}
BARE_META_WORDS = ("help", "quit", "exit")

_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"
_DEFINE = re.compile(rf"^(?P<name>{_NAME})\s*=\s*(?P<signature>.*->.*)$", re.S)
_CALL = re.compile(rf"^(?P<name>{_NAME})\s*\(", re.S)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_0-9][A-Za-z0-9_]*)*$")


_plugin_names: list[str] = []
_plugins_loaded = threading.Event()
_plugin_lock = threading.Lock()
plugin_errors: list[str] = []


def use_plugins(names: list[str]) -> None:
    """Plugin modules whose commands the console should know (besides $DSPEX_PLUGINS)."""
    _plugin_names[:] = names


_catalog: Any = None


def registry() -> Any:
    """Every command a default worker serves (bridge.catalog()), plugins' included.

    Imported on first use rather than with this module: the bridge is not needed to
    draw the first prompt, and loading it later keeps start-up short.
    """
    global _catalog
    if not _plugins_loaded.is_set():
        with _plugin_lock:
            if not _plugins_loaded.is_set():
                from bridge import catalog

                _load_plugins()
                _catalog = catalog()
                _plugins_loaded.set()
    return _catalog


def _load_plugins() -> None:
    import importlib
    import os

    from_env = [n.strip() for n in os.environ.get("DSPEX_PLUGINS", "").split(",") if n.strip()]
    for name in dict.fromkeys([*_plugin_names, *from_env]):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken plugin costs its commands, not the console
            plugin_errors.append(f"plugin {name} not loaded: {type(exc).__name__}: {exc}")


class ParseError(ValueError):
    """Input the console cannot turn into a request; shown in red with its suggestion."""

    error_type = "parse_error"

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion


def command_for(tag: str) -> str:
    """The command the console sends for an effect tag (bridge.registry.CREATES_PROGRAM ...).

    The friendly forms (`:def`, `qa(...)`, `:lm`, `:programs`) name effects, not commands;
    an effect no loaded adapter provides is the user's error, with a hint.
    """
    try:
        return registry().for_effect(tag).name
    except LookupError as exc:
        raise ParseError(f"No command of this console does that: {exc}",
                         "start the worker with the adapter or plugin that provides it") from None


@dataclass(frozen=True)
class Empty:
    """A blank line or a comment."""


@dataclass(frozen=True)
class MetaInput:
    name: str
    argument: str


@dataclass(frozen=True)
class ProtocolInput:
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    # Arguments written as a JSON object go out untouched, undeclared keys included.
    verbatim: bool = False


@dataclass(frozen=True)
class DefineInput:
    program_id: str
    signature: str
    program_type: str = "predict"


@dataclass(frozen=True)
class CallInput:
    program_id: str
    inputs: dict[str, Any]


Parsed = Empty | MetaInput | ProtocolInput | DefineInput | CallInput


# -- balance --------------------------------------------------------------------------

class _Nesting:
    """Quote and bracket state, one character at a time: what the balance check and the
    word splitter both follow."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.quote: str | None = None
        self._escaped = False

    def step(self, char: str) -> bool:
        """Takes in one character; False for a closer that matches no open bracket."""
        if self.quote is not None:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == self.quote:
                self.quote = None
        elif char in ("'", '"'):
            self.quote = char
        elif char in OPENERS:
            self.stack.append(char)
        elif char in CLOSERS:
            if not self.stack or self.stack[-1] != CLOSERS[char]:
                return False
            self.stack.pop()
        return True


def open_brackets(text: str) -> tuple[list[str], str | None]:
    """The brackets still open at the end of `text`, and the open quote if any."""
    nesting = _Nesting()
    for char in text:
        if not nesting.step(char):
            # A stray closer never becomes balanced by typing more: let parse report it.
            return [], None
    return nesting.stack, nesting.quote


def is_complete(text: str) -> bool:
    """Whether Enter should run the input, or insert a newline because something is open."""
    if text.rstrip().endswith("\\"):
        return False
    stack, quote = open_brackets(text)
    return not stack and quote is None


# -- tokens and values ----------------------------------------------------------------

def split_words(text: str) -> list[str]:
    """Splits on whitespace outside quotes and brackets."""
    words: list[str] = []
    current: list[str] = []
    nesting = _Nesting()
    for char in text:
        if char.isspace() and nesting.quote is None and not nesting.stack:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(char)
        if not nesting.step(char):
            raise ParseError(f"Unbalanced '{char}' in: {''.join(current)}",
                             "check the brackets; values with spaces need quotes")
    if nesting.quote is not None:
        raise ParseError(f"Unclosed {nesting.quote} quote", f"close it with {nesting.quote}")
    if nesting.stack:
        raise ParseError(f"Unclosed '{nesting.stack[-1]}'", f"close it with '{OPENERS[nesting.stack[-1]]}'")
    if current:
        words.append("".join(current))
    return words


def parse_value(text: str) -> Any:
    """JSON when it parses; 'single-quoted' text as a string; anything else as written."""
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1].replace("\\'", "'")
    try:
        return json.loads(text)
    except ValueError as exc:
        if text[:1] in ("{", "[", '"'):
            raise ParseError(f"Invalid JSON in {text[:40]!r}: {exc.msg} (column {exc.colno})",
                             "fix the JSON, or wrap plain text in 'single quotes'") from None
        return text


def parse_assignments(words: list[str]) -> dict[str, Any]:
    """`key=value key.sub=value` words into a (nested) dict."""
    result: dict[str, Any] = {}
    for word in words:
        key, sep, raw = word.partition("=")
        if not sep or not _KEY.match(key):
            raise ParseError(f"Expected key=value, got {word!r}",
                             "write arguments as name=value, e.g. program_id=qa")
        target = result
        parts = key.split(".")
        for part in parts[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ParseError(f"{key!r}: '{part}' is already set to a value, not an object")
            target = nested
        target[parts[-1]] = parse_value(raw)
    return result


def closest(name: str, candidates: list[str]) -> str | None:
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return found[0] if found else None


# -- the forms ------------------------------------------------------------------------

def parse(text: str) -> Parsed:
    """One complete input to what it asks for; raises ParseError with a suggestion."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return Empty()
    # A trailing backslash only continued the line.
    stripped = re.sub(r"\\\n", " ", stripped).rstrip("\\").strip()
    if stripped.startswith(":"):
        name, _, argument = stripped[1:].partition(" ")
        if not name:
            raise ParseError("':' needs a meta-command name", "type :help for the list")
        return MetaInput(name.strip(), argument.strip())
    if stripped.startswith(("{", "[")):
        return parse_whole_request(stripped)
    head = stripped.split(None, 1)[0]
    if head in BARE_META_WORDS and head not in registry():
        return MetaInput(head, stripped[len(head):].strip())
    if (match := _DEFINE.match(stripped)) and match["name"] not in registry():
        return DefineInput(match["name"], " ".join(match["signature"].split()))
    if (match := _CALL.match(stripped)) and match["name"] not in registry():
        return parse_call(stripped)
    return parse_protocol(stripped)


def parse_whole_request(text: str) -> ProtocolInput:
    """A protocol request pasted whole, e.g. a frame copied from a transcript."""
    hint = 'write `command {"arg": ...}`, or a whole request {"command": "ping", "args": {}}'
    try:
        request = json.loads(text)
    except ValueError as exc:
        raise ParseError(f"Invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", hint) from None
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise ParseError('A JSON request must be an object with a "command" string', hint)
    args = request.get("args") or {}
    if not isinstance(args, dict):
        raise ParseError('"args" must be an object', hint)
    if request["command"] not in registry():
        suggestion = registry().suggest(request["command"])
        raise ParseError(f"Unknown command: {request['command']}",
                         f"did you mean '{suggestion}'?" if suggestion else "type :help for the commands")
    return ProtocolInput(registry().get(request["command"]).name, args, verbatim=True)


def parse_protocol(text: str) -> ProtocolInput:
    name, _, rest = text.partition(" ")
    name = name.strip()
    rest = rest.strip()
    REGISTRY = registry()
    if name not in REGISTRY:
        suggestion = REGISTRY.suggest(name)
        hint = f"did you mean '{suggestion}'?" if suggestion else "type :help for the commands"
        raise ParseError(f"Unknown command: {name}", hint)
    spec = REGISTRY.get(name)
    if rest.startswith("{"):
        try:
            args = json.loads(rest)
        except ValueError as exc:
            raise ParseError(f"Invalid JSON arguments: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                             "check quotes and commas; keys need double quotes") from None
        if not isinstance(args, dict):
            raise ParseError("JSON arguments must be an object")
        return ProtocolInput(spec.name, args, verbatim=True)
    args = parse_assignments(split_words(rest))
    known = spec.arg_names
    for key in args:
        if key not in known:
            close = closest(key, known)
            listed = ", ".join(known) or "none"
            hint = (f"did you mean '{close}'? " if close else "") + \
                   f"{spec.name} takes: {listed}; send {spec.name} {{json}} to pass other keys as they are"
            raise ParseError(f"{spec.name} has no argument '{key}'", hint)
    return ProtocolInput(spec.name, args)


def _literal(node: ast.expr) -> Any:
    # JSON spellings are welcome in a console that also speaks JSON.
    if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[node.id]
    return ast.literal_eval(node)


def parse_call(text: str) -> CallInput:
    """`qa(question="...", n=3)`: keyword inputs only, values as Python or JSON literals."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ParseError(f"Cannot read the call: {exc.msg}",
                         'write it as name(field="value", other=3)') from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ParseError("Cannot read the call", 'write it as name(field="value", other=3)')
    if call.args:
        raise ParseError("Program inputs must be named", f'write {call.func.id}(field="value")')
    inputs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ParseError("**kwargs is not supported here", "name each input")
        try:
            inputs[keyword.arg] = _literal(keyword.value)
        except (ValueError, SyntaxError):
            raise ParseError(f"Input {keyword.arg!r} is not a literal value",
                             "use strings, numbers, lists, dicts, true/false/null") from None
    return CallInput(call.func.id, inputs)


def format_assignments(args: dict[str, Any]) -> str:
    """Arguments written back in the console's key=value form (what `:json off` shows)."""
    parts = []
    for key, value in args.items():
        if isinstance(value, str) and value and re.fullmatch(r"[\w./:@+-]+", value) \
                and not _looks_like_json(value):
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}={json.dumps(value, ensure_ascii=False)}")
    return " ".join(parts)


def _looks_like_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True
