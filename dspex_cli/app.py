"""The typer application behind every subcommand except the fast path of `serve`.

Each subcommand lives in its own module exposing `register(app)`; this file only
assembles them, so adding a subcommand never means editing a list elsewhere. run_app
hands every subcommand the Environment it renders through (as the click context's
`obj`, see dspex_cli.env.environment_of) and runs it inside the CLI's one error boundary
(dspex_cli.exit_status.run_guarded): a UserError raised anywhere below becomes one line
on stderr and its exit status, never a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from dspex_cli.env import Environment
from dspex_cli.exit_status import ExitStatus, run_guarded

HELP_OPTION_NAMES = ["-h", "--help"]


def _plain_placeholders(command: Any, ctx: Any) -> None:
    """Help shows what to type: nothing after a flag (not `<bool>`), and an argument's
    own metavar (PATH...) instead of its Python type (`<list[str]>`)."""
    params = list(command.params)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.metavar is not None:
            # The type column repeats what the metavar says, in Python's words.
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]


class DspexCommand(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_placeholders(self, ctx)
        super().format_help(ctx, formatter)


class DspexGroup(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_placeholders(self, ctx)
        super().format_help(ctx, formatter)


app = typer.Typer(
    name="dspex",
    cls=DspexGroup,
    help="The DSPy side of Elixir applications: a port worker, replay, inspect and a console.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": HELP_OPTION_NAMES},
)


def _print_version(value: bool) -> None:
    if value:
        from dspex_cli.main import version_line

        typer.echo(version_line())
        raise typer.Exit(ExitStatus.OK)


@app.callback()
def root(version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                      help="print the versions of dspex, DSPy and Python, and exit")) -> None:
    """The DSPy side of Elixir applications: a port worker, replay, inspect and a console."""


# Modules that contribute subcommands, each through its own `register(app)`.
SUBCOMMAND_MODULES = (
    "dspex_cli.serve_entry",
    "dspex_cli.tools_cmd",
    "dspex_cli.replay_cmd",
    "dspex_cli.inspect_cmd",
    "dspex_cli.top",
    "dspex_cli.repl_cmd",
)


def _assemble() -> typer.Typer:
    if app.registered_commands:
        return app  # already assembled (run_app called twice in one process)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a subcommand still being built is simply absent
        module.register(app)
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # typer's default: give it dspex's help layout
            info.cls = DspexCommand
    return app


def run_app(argv: list[str], env: Environment | None = None) -> int:
    """Runs the CLI in `env` (the process's own streams by default) and returns its exit status."""
    environment = env or Environment.from_process()
    command = typer.main.get_command(_assemble())
    subcommands = getattr(command, "commands", {})
    where = f"dspex {argv[0]}" if argv and argv[0] in subcommands else "dspex"

    def body() -> None:
        # click and typer print help and usage errors to sys.stdout/sys.stderr themselves;
        # in a simulated environment those are its streams for the length of the command.
        with contextlib.redirect_stdout(environment.stdout), contextlib.redirect_stderr(environment.stderr):
            command.main(args=argv, prog_name="dspex", standalone_mode=True, obj=environment)

    return run_guarded(where, body, environment)
