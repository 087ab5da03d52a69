"""Small subcommands: `shim` (DSPex drop-in launcher), `commands` (the registry), `demo`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from dspex_cli.env import environment_of
from dspex_cli.exit_status import UserError

SHIM_TEMPLATE = '''#!{python}
"""Launcher that lets the DSPex Elixir library run `dspex serve`.

DSPex checks that this file mentions class DSPyBridge, def handle_command and
def main(); they are here for that check. The real worker is dspex's.
"""
import os
import sys


class DSPyBridge:
    """Marker for DSPex's environment check; the worker is dspex.serve."""

    def handle_command(self, command, args):
        raise NotImplementedError("served by dspex")


def main():
    # Python puts this script's directory first on sys.path; a neighbour (or this file)
    # named like one of dspex's packages, e.g. bridge.py, must not shadow them.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path.append(sys.path.pop(0))
    from dspex_cli.main import main as dspex_main

    sys.exit(dspex_main(["serve", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
'''


def shim_text(python: str | None = None) -> str:
    """The launcher script for DSPex, bound to this interpreter."""
    return SHIM_TEMPLATE.format(python=python or sys.executable)


def write_shim(output: Path, text: str) -> None:
    """Writes the launcher, executable; a path that cannot take it is the user's error."""
    if output.is_dir():
        raise UserError(f"{output} is a directory; give a file name, e.g. {output / 'dspex_bridge.py'}")
    try:
        output.write_text(text)
        output.chmod(0o755)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    @app.command("shim")
    def shim(ctx: typer.Context,
             output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE",
                                                   help="write the script here (made executable)")) -> None:
        """Print a launcher script that DSPex accepts as its Python bridge."""
        env = environment_of(ctx)
        text = shim_text()
        if output is None:
            env.write(text)
            return
        write_shim(output, text)
        env.stderr.write(f"wrote {output}\n")

    @app.command("commands")
    def commands(ctx: typer.Context, markdown: bool = typer.Option(False, "--markdown", help="as a Markdown table"),
                 as_json: bool = typer.Option(False, "--json", help="as JSON, for scripts"),
                 plugin: list[str] = typer.Option([], "--plugin", metavar="MODULE",
                                                  help="also load this plugin module (repeatable)")) -> None:
        """List every registered command with its arguments (from the one registry)."""
        from dspex_cli.registry_view import render_commands

        if markdown and as_json:
            raise UserError("choose one of --markdown and --json")
        render_commands(markdown=markdown, as_json=as_json, plugins=plugin, env=environment_of(ctx))

    @app.command("demo")
    def demo(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print every request and reply frame as JSON lines")
             ) -> None:
        """Spawn `dspex serve` and run a short session against the offline mock LM."""
        from dspex_cli.demo import run_demo

        raise typer.Exit(run_demo(as_json=as_json, env=environment_of(ctx)))
