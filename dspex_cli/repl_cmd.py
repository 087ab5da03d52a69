"""`dspex repl`: the interactive console (see dspex_cli/repl/ and docs/repl.md).

Its options are parsed by dspex_cli.repl.runner (argparse), not typer: typer builds
pydantic adapters for its parameters, which would cost the console a third of a second
before its first prompt. `python -m dspex_cli.repl` skips typer entirely.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("repl", help="Interactive console for DSPy through the bridge (JSON lines when piped). "
                              "Run `dspex repl --help` for its options.",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                   "help_option_names": []})
    def repl(ctx: typer.Context) -> None:
        from dspex_cli.repl.runner import main

        raise typer.Exit(main(list(ctx.args)))
