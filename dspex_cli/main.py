"""Entry point of the `dspex` console script.

`dspex serve` is spawned by Elixir for every worker, so it takes a fast path: fd 1 is
protected (bridge.serve.stdio) before anything else is imported, and the typer machinery the other
subcommands use is never loaded. `dspex repl` skips typer too, to reach its prompt fast.
"""

from __future__ import annotations

import os
import sys


def version_line() -> str:
    """`dspex 0.1.0 (DSPy 3.4.1, Python 3.11.7)`, read from package metadata: no DSPy import."""
    import platform
    from importlib import metadata

    def version_of(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    # Not bridge.system.versions(): importing bridge loads the engine, a third of this time.
    return f"dspex {version_of('dspex')} (DSPy {version_of('dspy')}, Python {platform.python_version()})"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["--version"], ["-V"]):
        # Answered before typer loads: a version check should cost an interpreter start only.
        print(version_line())
        return 0
    if args and args[0] == "serve":
        # The parent is noted first: if it died while we import, the watcher would
        # otherwise adopt init as "the parent" and never notice.
        parent_pid = os.getppid()
        # Before any plugin, adapter or library that might print is imported: the protocol
        # gets a private copy of fd 1, fd 1 becomes stderr. (The bridge package's own
        # modules load first, as this import's parents; none of them writes anything.)
        from bridge.serve.stdio import protect_stdout

        protocol_fd = protect_stdout()
        from dspex_cli.serve_cmd import run_serve

        return run_serve(args[1:], protocol_fd, parent_pid=parent_pid)
    if args and args[0] == "repl" and "--help" not in args:
        # The console's first prompt must appear in under half a second; typer's
        # start-up alone costs a quarter of that, so the REPL parses its own options.
        from dspex_cli.repl.runner import main as repl_main

        return repl_main(args[1:])
    from dspex_cli.app import run_app

    return run_app(args)


if __name__ == "__main__":
    raise SystemExit(main())
