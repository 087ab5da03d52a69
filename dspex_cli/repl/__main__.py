"""`python -m dspex_cli.repl`: the console without the typer CLI in front (fastest start)."""

import sys

from dspex_cli.repl.runner import main

raise SystemExit(main(sys.argv[1:]))
