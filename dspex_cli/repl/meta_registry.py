"""The console's meta-commands (`:help`, `:session`, ...) live in the one registry type.

A meta-command is a bridge.registry.CommandSpec (a MetaSpec, which adds what the
console shows and completes), held in a MetaRegistry: the Registry every command of the
bridge lives in, with the same `@meta(...)` decorator shape as `@command(...)`. Dispatch,
`:help`, completion and the lexer read META; a meta-command exists by being decorated,
nowhere else.

A handler gets a MetaContext, not the shell: the output, the target, the session, the
settings and the friendly operations, and nothing of the console's inner state.

bridge.registry is light (nothing of the engine runs at import), but importing it loads
the bridge package; this module is imported before the first prompt only through
meta.py's handlers, which the terminal console loads on the first meta-command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.registry import Arg, CommandSpec, Handler, Registry

from .parsing import ParseError, closest

if TYPE_CHECKING:
    from .shell import Output, Shell
    from .targets import Target

# What completion offers after a meta-command's name.
COMPLETE_KINDS = ("command", "session", "program", "file", "onoff", "model", "program_then_file", "kwargs",
                  "program_then_optimizer")


class MetaContext:
    """What a meta-command may use of the console it runs in.

    Everything here is public behaviour of the console (send a command, switch the
    session or the target, read and change the display settings, record); the handler
    never touches the shell behind it, so a meta-command cannot come to depend on how the
    shell keeps its state.
    """

    def __init__(self, shell: Shell) -> None:
        self._shell = shell

    # -- where output goes, where commands go --------------------------------------------

    @property
    def out(self) -> Output:
        return self._shell.out

    @property
    def target(self) -> Target:
        return self._shell.target

    def replace_target(self, new_target: Target) -> None:
        """Makes `new_target` the console's target and closes the old one."""
        shell = self._shell
        old, shell.target = shell.target, new_target
        old.close()
        shell.lm_label = None

    def send(self, command: str, args: dict[str, Any], *, show_reply: bool = True) -> dict[str, Any] | None:
        """Sends one protocol command as if typed (guards, display, learning included)."""
        return self._shell.send(command, args, show_reply=show_reply)

    def fail(self, message: str, suggestion: str | None, error_type: str) -> None:
        """Reports a failure (counted, as every failure of the console is)."""
        self._shell.fail(message, suggestion, error_type)

    # -- the session -----------------------------------------------------------------

    @property
    def session(self) -> str:
        return self._shell.session

    def switch_session(self, session_id: str) -> None:
        self._shell.switch_session(session_id)

    # -- display settings -----------------------------------------------------------------

    @property
    def show_json(self) -> bool:
        return self._shell.show_json

    @show_json.setter
    def show_json(self, value: bool) -> None:
        self._shell.show_json = value

    @property
    def stream(self) -> bool:
        return self._shell.stream

    @stream.setter
    def stream(self, value: bool) -> None:
        self._shell.stream = value

    @property
    def timing(self) -> bool:
        return self._shell.timing

    @timing.setter
    def timing(self, value: bool) -> None:
        self._shell.timing = value

    def quit(self) -> None:
        self._shell.quit_requested = True

    # -- recording ----------------------------------------------------------------------

    @property
    def recording_path(self) -> str | None:
        return self._shell.recording_path

    @property
    def setup_log(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The successful commands that built the current state (a copy)."""
        return list(self._shell.setup_log)

    def begin_recording(self, path: str, stop: Callable[[], Any]) -> None:
        self._shell.recording_path, self._shell.stop_recording = path, stop

    def end_recording(self) -> str | None:
        """Finishes the recording under way; returns its path (None if none was)."""
        shell = self._shell
        if shell.stop_recording is None:
            return None
        shell.stop_recording()
        finished = shell.recording_path
        shell.stop_recording = shell.recording_path = None
        return finished

    # -- the friendly layer -----------------------------------------------------------------

    def configure_lm(self, text: str) -> None:
        self._shell.configure_lm(text)

    def define(self, program_id: str, signature: str, program_type: str) -> None:
        self._shell.define(program_id, signature, program_type)

    def create_program(self, args: dict[str, Any]) -> dict[str, Any] | None:
        return self._shell.create_program(args)

    def call_program(self, program_id: str, inputs: dict[str, Any]) -> None:
        self._shell.call_program(program_id, inputs)

    def replay(self, argument: str) -> None:
        """`:replay`: dspex_cli.repl.replaying runs against the console as a whole."""
        from .replaying import run_replay

        run_replay(self._shell, argument)


MetaHandler = Callable[[MetaContext, str], None]


class MetaSpec(CommandSpec):
    """A meta-command: its handler `(ctx, argument)`, usage line and completion kind.

    A frozen plain record like the CommandSpec it extends (see bridge.plain_record): its
    fields are CommandSpec's, then these two.
    """

    _fields = (*CommandSpec._fields, "usage", "complete")

    usage: str
    complete: str | None

    def __init__(self, name: str, handler: Handler, summary: str, args: tuple[Arg, ...] = (),
                 scheduling: str = "write", aliases: tuple[str, ...] = (), read_only: bool = False,
                 destructive: bool = False, plugin: str | None = None, extra: dict[str, Any] | None = None,
                 tags: frozenset[str] = frozenset(), usage: str = "", complete: str | None = None) -> None:
        super().__init__(name, handler, summary, args, scheduling, aliases, read_only, destructive, plugin, extra,
                         tags)
        self.__dict__.update(usage=usage, complete=complete)


class MetaRegistry(Registry):
    """The Registry of meta-commands: the same type as the bridge's, plus a lookup whose
    failure is a console ParseError with a suggestion."""

    def add(self, spec: CommandSpec) -> CommandSpec:
        if not isinstance(spec, MetaSpec):
            raise TypeError(f"{spec.name}: a meta-command registry holds MetaSpecs")
        if spec.complete is not None and spec.complete not in COMPLETE_KINDS:
            raise ValueError(f"unknown completion kind {spec.complete!r}")
        return super().add(spec)

    def lookup(self, name: str) -> MetaSpec:
        spec = self.find(name)
        if spec is None:
            close = closest(name, self.names(include_aliases=True))
            raise ParseError(f"Unknown meta-command :{name}",
                             f"did you mean ':{close}'?" if close else "type :help for the list")
        assert isinstance(spec, MetaSpec)
        return spec

    def remove(self, name: str) -> None:
        """Drops a meta-command and its aliases (a plugin's or a test's)."""
        spec = self._specs.pop(name, None)
        if spec is None:
            return
        for alias in (spec.name, *spec.aliases):
            self._aliases.pop(alias, None)
            self.fast_inline.pop(alias, None)

    def run(self, ctx: MetaContext, name: str, argument: str) -> None:
        self.lookup(name).handler(ctx, argument)  # type: ignore[arg-type]


META = MetaRegistry()


def meta(name: str, usage: str = "", complete: str | None = None, aliases: tuple[str, ...] = (),
         registry: MetaRegistry | None = None) -> Callable[[MetaHandler], MetaHandler]:
    """Registers a meta-command `(ctx: MetaContext, argument: str) -> None`; its
    docstring's first line is its help."""

    def decorate(handler: MetaHandler) -> MetaHandler:
        summary = (handler.__doc__ or name).strip().splitlines()[0]
        (registry or META).add(MetaSpec(name=name, handler=handler, summary=summary,  # type: ignore[arg-type]
                                        aliases=tuple(aliases), usage=usage, complete=complete))
        return handler

    return decorate


def meta_names(include_aliases: bool = False) -> list[str]:
    return META.names(include_aliases)


def find_meta(name: str) -> MetaSpec:
    return META.lookup(name)


__all__ = ["COMPLETE_KINDS", "META", "MetaContext", "MetaHandler", "MetaRegistry", "MetaSpec", "find_meta",
           "meta", "meta_names"]
