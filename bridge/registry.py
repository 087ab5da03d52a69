"""The one registry of commands.

Dispatch, argument validation, REPL completion, `:help`, `--help` and the generated
docs all read this registry; nothing else lists commands. Plugins add to it with the
same `@command` decorator the built-in DSPy commands use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import InvalidArguments, UnknownCommand
from .plain_record import FrozenRecord

if TYPE_CHECKING:
    from .engine import Context

# Names longer than this get no "did you mean" (none is registered that long anyway).
MAX_SUGGESTED_NAME = 64

Handler = Callable[[dict[str, Any], "Context"], dict[str, Any]]

# Effect tags: what a command does, in words tools around the worker can branch on
# without naming commands (the console learns program ids from whatever "creates_program",
# `dspex inspect` credits runs to whatever "runs_program"). Adapters and plugins may add
# tags of their own; these are the ones dspex's own tools read.
CREATES_PROGRAM = "creates_program"    # result.program_id (or args id) is a new program of the session
DELETES_PROGRAM = "deletes_program"    # args.program_id is gone from the session
LISTS_PROGRAMS = "lists_programs"      # result.programs: every program of the session, each with an id
DESCRIBES_PROGRAM = "describes_program"  # args.program_id -> result.program_data
RUNS_PROGRAM = "runs_program"          # args.program_id ran: result.outputs, duration_ms, usage
CONFIGURES_LM = "configures_lm"        # args/result.model is now the session's (or the default) LM
LISTS_SESSIONS = "lists_sessions"      # result.sessions: every session, each with a session_id
BUILDS_STATE = "builds_state"          # later requests depend on its effect (a recording's prelude)
DROPS_SESSION = "drops_session"        # args.session_id and all it held are gone
CLEARS_SESSIONS = "clears_sessions"    # every session is gone; the default LM stays
RESETS_WORKER = "resets_worker"        # every session and the default LM are gone
REPORTS_STATS = "reports_stats"        # result: lm_calls, usage, command_count, error_count
STREAMS = "streams"                    # with "stream": true it sends events (chunks, progress) before its reply
# Carried by a command that repeats another's effect under another name (a legacy
# spelling): a tool that must pick one command for an effect takes the one without it.
VARIANT = "variant"

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


class Arg(FrozenRecord):
    """One documented argument of a command (a frozen plain record, see bridge.plain_record)."""

    _fields = ("name", "type", "required", "help", "choices")

    name: str
    type: str
    required: bool
    help: str
    # The values completion offers and the docs list. The handler checks the value (it may
    # accept other spellings, such as "ChainOfThought" for chain_of_thought).
    choices: tuple[str, ...]

    def __init__(self, name: str, type: str = "any", required: bool = False, help: str = "",
                 choices: tuple[str, ...] = ()) -> None:
        if type not in _ARG_TYPES:
            raise ValueError(f"argument {name!r}: unknown type {type!r}")
        self.__dict__.update(name=name, type=type, required=required, help=help, choices=choices)

    def accepts(self, value: Any) -> bool:
        if value is None:
            return not self.required
        if self.type in ("integer", "number") and isinstance(value, bool):
            return False  # JSON true is not a number, though Python says bool is an int
        return isinstance(value, _ARG_TYPES[self.type])


class CommandSpec(FrozenRecord):
    """A registered command: its handler and everything the tools around it need to know
    (a frozen plain record, see bridge.plain_record)."""

    _fields = ("name", "handler", "summary", "args", "scheduling", "aliases", "read_only", "destructive",
               "plugin", "extra", "tags")

    name: str
    handler: Handler
    summary: str
    args: tuple[Arg, ...]
    # Scheduling classes, see engine.SessionScheduler:
    #   "inline"  answered on the reader thread at once (ping, get_stats): never queued;
    #   "read"    runs concurrently with other reads of its session (execute_program);
    #   "write"   waits for the session's earlier requests and holds back its later ones;
    #   "global"  a write across every session (cleanup, reset_state).
    scheduling: str
    aliases: tuple[str, ...]
    # What running it does to the worker, for tools that must not change it by accident:
    # read_only commands leave every session as it was (a read-only console allows only
    # them); destructive ones delete state or stop the worker (a console asks first).
    read_only: bool
    destructive: bool
    plugin: str | None
    extra: dict[str, Any]
    # Effect tags (see CREATES_PROGRAM ...): never part of the wire contract.
    tags: frozenset[str]

    def __init__(self, name: str, handler: Handler, summary: str, args: tuple[Arg, ...] = (),
                 scheduling: str = "write", aliases: tuple[str, ...] = (), read_only: bool = False,
                 destructive: bool = False, plugin: str | None = None, extra: dict[str, Any] | None = None,
                 tags: frozenset[str] = frozenset()) -> None:
        self.__dict__.update(name=name, handler=handler, summary=summary, args=args, scheduling=scheduling,
                             aliases=aliases, read_only=read_only, destructive=destructive, plugin=plugin,
                             extra={} if extra is None else extra, tags=tags)

    def has(self, tag: str) -> bool:
        """Whether the command carries this effect tag."""
        return tag in self.tags

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
        # Name (and alias) -> spec of inline commands without constrained arguments: the
        # engine answers these straight from the decoded frame (health pings are the most
        # frequent request of all). One dict kept up to date in place, so the engine binds
        # it once and looks a command up without a method call.
        self.fast_inline: dict[str, CommandSpec] = {}

    def add(self, spec: CommandSpec) -> CommandSpec:
        if spec.scheduling not in _SCHEDULING:
            raise ValueError(f"{spec.name}: scheduling must be one of {_SCHEDULING}")
        for name in (spec.name, *spec.aliases):
            existing = self._aliases.get(name)
            if existing is not None and self._specs[existing].handler is not spec.handler:
                raise ValueError(f"command {name!r} is already registered")
            self._aliases[name] = spec.name
        self._specs[spec.name] = spec
        fast = spec.scheduling == "inline" and not spec.validated
        for name in (spec.name, *spec.aliases):
            if fast:
                self.fast_inline[name] = spec
            else:
                self.fast_inline.pop(name, None)
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

    def tagged(self, tag: str) -> list[CommandSpec]:
        """Every command carrying `tag`, by name."""
        return [spec for spec in self.specs() if tag in spec.tags]

    def has_tag(self, name: object, tag: str) -> bool:
        """Whether the command called `name` (or an alias) carries `tag`; False if unknown."""
        canonical = self._aliases.get(name) if isinstance(name, str) else None
        return canonical is not None and tag in self._specs[canonical].tags

    def for_effect(self, tag: str) -> CommandSpec:
        """The one command a tool sends for an effect: the tagged command that is not a variant.

        Raises LookupError when none (or more than one) qualifies, so a missing adapter is a
        clear message rather than a guess.
        """
        found = [spec for spec in self.tagged(tag) if VARIANT not in spec.tags]
        if len(found) != 1:
            names = ", ".join(spec.name for spec in found) or "none"
            raise LookupError(f"no single command is tagged {tag!r} (found: {names})")
        return found[0]

    def suggest(self, name: str) -> str | None:
        """The closest registered name, for 'did you mean' hints.

        Only for names of plausible length: difflib's cost grows with the name, and a
        60 MB "command" must not hold the reader thread for seconds.
        """
        if not isinstance(name, str) or len(name) > MAX_SUGGESTED_NAME:
            return None
        import difflib  # only for a mistyped name: kept off the worker's start-up

        close = difflib.get_close_matches(name, list(self._aliases), n=1, cutoff=0.6)
        return close[0] if close else None


REGISTRY = Registry()


def command(name: str, *, args: tuple[Arg, ...] | list[Arg] = (), scheduling: str = "write",
            summary: str | None = None, aliases: tuple[str, ...] = (), read_only: bool = False,
            destructive: bool = False, registry: Registry | None = None,
            tags: frozenset[str] | set[str] | tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
    """Registers a handler `(args: dict, ctx: Context) -> dict` under `name`.

    The summary defaults to the handler's docstring's first line, so help text lives
    beside the code it describes. `tags` name the command's effects (CREATES_PROGRAM ...).
    """
    tag_set = frozenset(tags)
    if not all(isinstance(tag, str) and tag for tag in tag_set):
        raise ValueError(f"{name}: tags must be non-empty strings")

    def decorate(handler: Handler) -> Handler:
        # The docstring's first line (inspect.getdoc would cost an import at every start).
        doc = (handler.__doc__ or "").strip()
        spec = CommandSpec(
            name=name, handler=handler, summary=summary or (doc.splitlines()[0] if doc else name),
            args=tuple(args), scheduling=scheduling, aliases=tuple(aliases), read_only=read_only,
            destructive=destructive, tags=tag_set,
            plugin=None if handler.__module__.startswith("bridge.") else handler.__module__,
        )
        (registry or REGISTRY).add(spec)
        return handler

    return decorate
