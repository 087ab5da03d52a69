"""Tab completion: commands and argument names from the bridge's registry, meta-commands
from the console's (meta_registry.META, the same Registry type), and program ids,
session ids and models the console has seen.

`candidates()` is plain logic (tested directly); `ReplCompleter` adapts it to
prompt_toolkit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from .parsing import ParseError, command_for, registry

class Known(Protocol):
    """What the console has learnt (the Shell provides it)."""

    def known_programs(self) -> list[str]: ...

    @property
    def sessions(self) -> set[str]: ...

    @property
    def models(self) -> object: ...


@dataclass(frozen=True)
class Candidate:
    text: str  # replaces the word being typed
    word: str  # the word being typed
    meta: str = ""


def _matching(word: str, options: Iterable[str], meta: str = "") -> list[Candidate]:
    seen: set[str] = set()
    found = []
    for option in options:
        if option.startswith(word) and option not in seen:
            seen.add(option)
            found.append(Candidate(option, word, meta))
    return found


def _models(known: Known) -> list[str]:
    remembered = list(getattr(known.models, "models", []) or [])
    return remembered + [m for m in ("mock",) if m not in remembered]


def _files(word: str) -> list[Candidate]:
    directory, _, prefix = word.rpartition("/")
    base = os.path.expanduser(directory) if directory else "."
    try:
        entries = sorted(os.listdir(base or "/"))
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.startswith(prefix) and (prefix.startswith(".") or not entry.startswith(".")):
            full = f"{directory}/{entry}" if directory else entry
            if os.path.isdir(os.path.join(base or "/", entry)):
                full += "/"
            found.append(Candidate(full, word, "file"))
    return found


def candidates(text: str, known: Known) -> list[Candidate]:
    """What may complete the word at the end of `text` (the text before the cursor)."""
    word = re.search(r"\S*$", text).group()  # type: ignore[union-attr]
    before = text[: len(text) - len(word)]
    words = before.split()
    if not words:
        if word.startswith(":"):
            metas = _meta_registry()
            return [Candidate(f":{spec.name}", word, spec.summary[:40]) for spec in metas.specs()
                    if f":{spec.name}".startswith(word)]
        return (_matching(word, registry().names(include_aliases=True), "command")
                + _matching(word, [f"{p}(" for p in known.known_programs()], "program"))
    head = words[0]
    if head.startswith(":"):
        return _meta_argument(head[1:], len(words) - 1, word, known)
    if head in registry():
        return _command_argument(head, words[1:], word, known)
    return []


def _meta_argument(name: str, position: int, word: str, known: Known) -> list[Candidate]:
    metas = _meta_registry()
    try:
        command = metas.lookup(name)
    except ParseError:
        return []
    kind = command.complete
    if kind == "command":
        return (_matching(word, registry().names(), "command")
                + _matching(word, [f":{m}" for m in metas.names()], "meta"))
    if kind == "session":
        return _matching(word, sorted(known.sessions), "session") if position == 0 else []
    if kind == "onoff":
        return _matching(word, ("on", "off"), "") if position == 0 else []
    if kind == "file":
        return _files(word) if position == 0 else []
    if kind == "program":
        return _matching(word, known.known_programs(), "program") if position == 0 else []
    if kind == "program_then_file":
        if position == 0:
            return _matching(word, known.known_programs(), "program")
        return _files(word) if position == 1 else []
    if kind == "program_then_optimizer":  # :compile PROGRAM OPTIMIZER TRAINFILE [option=value ...]
        if position == 0:
            return _matching(word, known.known_programs(), "program")
        if position == 1:
            optimizer = next((a for a in registry().get("compile_program").args if a.name == "optimizer"), None)
            return _matching(word, optimizer.choices if optimizer is not None else (), "optimizer")
        return _files(word) if position == 2 else []
    if kind == "model":
        if position == 0:
            return _matching(word, _models(known), "model")
        from bridge.registry import CONFIGURES_LM

        return _command_argument(command_for(CONFIGURES_LM), [], word, known, skip={"model"})
    return []


def _meta_registry() -> Any:
    """The console's meta-commands (their handlers registered), imported on first completion."""
    from .meta import META

    return META


def _command_argument(command: str, typed: list[str], word: str, known: Known,
                      skip: set[str] | None = None) -> list[Candidate]:
    spec = registry().get(command)
    if "=" in word:
        key, _, value = word.partition("=")
        options: Iterable[str]
        if key == "program_id":
            options = known.known_programs()
        elif key == "session_id":
            options = sorted(known.sessions)
        elif key == "model":
            options = _models(known)
        else:
            arg = next((a for a in spec.args if a.name == key), None)
            if arg is not None and arg.choices:  # declared on the command's Arg: the registry's list
                options = arg.choices
            else:
                options = ("true", "false") if arg is not None and arg.type == "boolean" else ()
        return [Candidate(f"{key}={c.text}", word, c.meta) for c in _matching(value, options, key)]
    if word.startswith("{"):
        return []
    used = {w.split("=", 1)[0] for w in typed} | (skip or set())
    return [Candidate(f"{a.name}=", word, f"{a.type}{' required' if a.required else ''}")
            for a in spec.args if a.name.startswith(word) and a.name not in used]


class ReplCompleter(Completer):
    """prompt_toolkit's view of `candidates`."""

    def __init__(self, known: Known) -> None:
        self.known = known

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        try:
            found = candidates(document.text_before_cursor, self.known)
        except Exception:  # completion must never break typing
            return
        for candidate in found:
            yield Completion(candidate.text, start_position=-len(candidate.word), display_meta=candidate.meta)
