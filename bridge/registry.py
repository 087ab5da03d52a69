"""The one registry of commands.

Dispatch, argument validation, REPL completion, `:help`, `--help` and the generated
docs all read this registry; nothing else lists commands. Plugins add to it with the
same `@command` decorator the built-in DSPy commands use.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InvalidArguments, UnknownCommand

if TYPE_CHECKING:
    from .engine import Context

# Names longer than this get no "did you mean" (none is registered that long anyway).
MAX_SUGGESTED_NAME = 64

Handler = Callable[[dict[str, Any], "Context"], dict[str, Any]]

# JSON types an argument may declare, with the Python types that satisfy them.
_ARG_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "string|object": (str, dict),
    "array|object": (list, dict),
    "any": (object,),
}


@dataclass(frozen=True)
class Arg:
    """One documented argument of a command."""

    name: str
    type: str = "any"
    required: bool = False
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in _ARG_TYPES:
            raise ValueError(f"argument {self.name!r}: unknown type {self.type!r}")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return not self.required
        if self.type in ("integer", "number") and isinstance(value, bool):
            return False  # JSON true is not a number, though Python says bool is an int
        return isinstance(value, _ARG_TYPES[self.type])


@dataclass(frozen=True)
class CommandSpec:
    """A registered command: its handler and everything the tools around it need to know."""

    name: str
    handler: Handler
    summary: str
    args: tuple[Arg, ...] = ()
    # Scheduling classes, see engine.SessionScheduler:
    #   "inline"  answered on the reader thread at once (ping, get_stats): never queued;
    #   "read"    runs concurrently with other reads of its session (execute_program);
    #   "write"   waits for the session's earlier requests and holds back its later ones;
    #   "global"  a write across every session (cleanup, reset_state).
    scheduling: str = "write"
    aliases: tuple[str, ...] = ()
    plugin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, args: dict[str, Any]) -> None:
        """Checks declared arguments; undeclared ones pass, since clients send extras."""
        problems = []
        for arg in self.args:
            value = args.get(arg.name)
            if value is None and arg.required:
                problems.append(f"'{arg.name}' is required ({arg.type})")
            elif not arg.accepts(value):
                problems.append(f"'{arg.name}' must be {arg.type}, got {_json_type(value)}")
        if problems:
            raise InvalidArguments(f"{self.name}: " + "; ".join(problems))

    @functools.cached_property
    def validated(self) -> bool:
        """Whether any argument is constrained (a ping's are not, and skips the check)."""
        return any(arg.required or arg.type != "any" for arg in self.args)

    @property
    def arg_names(self) -> list[str]:
        return [arg.name for arg in self.args]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for name, kinds in (("string", (str,)), ("integer", (int,)), ("number", (float,)),
                        ("object", (dict,)), ("array", (list,))):
        if isinstance(value, kinds):
            return name
    return "null" if value is None else type(value).__name__


_SCHEDULING = ("inline", "read", "write", "global")


class Registry:
    """Name → CommandSpec, with aliases resolving to the same spec."""

    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}
        self._aliases: dict[str, str] = {}
        self._fast: dict[str, CommandSpec] | None = None

    def fast_inline(self) -> dict[str, CommandSpec]:
        """Name (and alias) → spec of inline commands without constrained arguments.

        The engine answers these straight from the decoded frame (health pings are the
        most frequent request of all); rebuilt whenever a command is registered.
        """
        fast = self._fast
        if fast is None:
            fast = self._fast = {name: self._specs[canonical] for name, canonical in self._aliases.items()
                                 if self._specs[canonical].scheduling == "inline"
                                 and not self._specs[canonical].validated}
        return fast

    def add(self, spec: CommandSpec) -> CommandSpec:
        if spec.scheduling not in _SCHEDULING:
            raise ValueError(f"{spec.name}: scheduling must be one of {_SCHEDULING}")
        for name in (spec.name, *spec.aliases):
            existing = self._aliases.get(name)
            if existing is not None and self._specs[existing].handler is not spec.handler:
                raise ValueError(f"command {name!r} is already registered")
            self._aliases[name] = spec.name
        self._specs[spec.name] = spec
        self._fast = None
        return spec

    def find(self, name: str) -> CommandSpec | None:
        """The spec of a name or alias, or None: no suggestion is computed."""
        canonical = self._aliases.get(name)
        return None if canonical is None else self._specs[canonical]

    def get(self, name: str) -> CommandSpec:
        canonical = self._aliases.get(name)
        if canonical is None:
            raise UnknownCommand(name, self.suggest(name))
        return self._specs[canonical]

    def __contains__(self, name: object) -> bool:
        return name in self._aliases

    def names(self, include_aliases: bool = False) -> list[str]:
        return sorted(self._aliases if include_aliases else self._specs)

    def specs(self) -> list[CommandSpec]:
        return [self._specs[name] for name in sorted(self._specs)]

    def suggest(self, name: str) -> str | None:
        """The closest registered name, for 'did you mean' hints.

        Only for names of plausible length: difflib's cost grows with the name, and a
        60 MB "command" must not hold the reader thread for seconds.
        """
        if not isinstance(name, str) or len(name) > MAX_SUGGESTED_NAME:
            return None
        close = difflib.get_close_matches(name, list(self._aliases), n=1, cutoff=0.6)
        return close[0] if close else None


REGISTRY = Registry()


def command(name: str, *, args: tuple[Arg, ...] | list[Arg] = (), scheduling: str = "write",
            summary: str | None = None, aliases: tuple[str, ...] = (),
            registry: Registry | None = None) -> Callable[[Handler], Handler]:
    """Registers a handler `(args: dict, ctx: Context) -> dict` under `name`.

    The summary defaults to the handler's docstring's first line, so help text lives
    beside the code it describes.
    """

    def decorate(handler: Handler) -> Handler:
        doc = inspect.getdoc(handler) or ""
        spec = CommandSpec(
            name=name, handler=handler, summary=summary or (doc.splitlines()[0] if doc else name),
            args=tuple(args), scheduling=scheduling, aliases=tuple(aliases),
            plugin=None if handler.__module__.startswith("bridge.") else handler.__module__,
        )
        (registry or REGISTRY).add(spec)
        return handler

    return decorate
