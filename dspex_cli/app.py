"""The typer application behind every subcommand except the fast path of `serve`.

Each subcommand lives in its own module exposing `register(app)`; this file only
assembles them, so adding a subcommand never means editing a list elsewhere.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="dspex",
    help="The DSPy side of Elixir applications: a port worker, replay, inspect and a console.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that contribute subcommands, each through its own `register(app)`.
SUBCOMMAND_MODULES = (
    "dspex_cli.serve_entry",
    "dspex_cli.tools_cmd",
    "dspex_cli.replay_cmd",
    "dspex_cli.inspect_cmd",
    "dspex_cli.repl_cmd",
)


def _assemble() -> typer.Typer:
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a subcommand still being built is simply absent
        module.register(app)
    return app


def run_app(argv: list[str]) -> int:
    """Runs the CLI and turns its outcome into an exit code."""
    command = typer.main.get_command(_assemble())
    try:
        command.main(args=argv, prog_name="dspex", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
