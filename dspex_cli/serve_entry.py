"""`serve` as typer sees it: listed in `dspex --help`, forwarded to the fast path.

`dspex serve` itself never reaches typer (see main.py); this entry exists so that the
command appears in help and behaves the same if typer ever does dispatch it.
"""

from __future__ import annotations

import typer

from dspex_cli.serve_cmd import SERVE_HELP


def register(app: typer.Typer) -> None:
    @app.command("serve", help=SERVE_HELP + " Run `dspex serve --help` for its options.",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                   "help_option_names": []})
    def serve(ctx: typer.Context) -> None:
        from bridge.serve.stdio import protect_stdout
        from dspex_cli.serve_cmd import run_serve

        protocol_fd = protect_stdout()
        raise typer.Exit(run_serve(list(ctx.args), protocol_fd))
