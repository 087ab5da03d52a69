"""A console shell writing into a 200-column rich console the test reads back (the REPL
meta-command tests share it)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from dspex_cli.repl.config import ModelMemory, ReplConfig
from dspex_cli.repl.render import RichOutput
from dspex_cli.repl.shell import Shell
from dspex_cli.repl.targets import InProcessTarget


class Screen:
    """A shell on an in-process target; `run` returns what one line printed."""

    def __init__(self, tmp_path: Path) -> None:
        self.buffer = io.StringIO()
        console = Console(file=self.buffer, width=200, force_terminal=False, color_system=None)
        self.shell = Shell(InProcessTarget(), RichOutput(console), ReplConfig(),
                           ModelMemory(tmp_path / "models.json"), interactive=True)

    def run(self, text: str) -> str:
        start = self.buffer.tell()
        self.shell.handle(text)
        return self.buffer.getvalue()[start:]
