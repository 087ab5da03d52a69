"""The terminal a dspex command runs in: its streams, whether each is a TTY, width, colour.

Every subcommand and the REPL write through one Environment instead of reaching for
sys.stdout or building a rich Console of their own. That is what lets a test render a
command's output "on a terminal 80 columns wide" or "into a pipe" with a StringIO and
compare, without a pseudo-terminal; and what keeps the rules of each in one place:

* a terminal gets rich's usual behaviour, fitted to its width;
* anything else (a pipe, a file, CI logs) gets no wrapping at an imagined 80 columns
  (see dspex_cli.console.PIPE_WIDTH) and no colour codes;
* NO_COLOR (https://no-color.org) turns colour off even on a terminal.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# What a terminal whose size cannot be read is taken to be.
FALLBACK_TERMINAL_WIDTH = 80


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


@dataclass
class Environment:
    """Where a command reads and writes, and what kind of place each stream is."""

    stdin: IO[str]
    stdout: IO[str]
    stderr: IO[str]
    stdin_tty: bool = False
    stdout_tty: bool = False
    stderr_tty: bool = False
    # Columns of the terminal stdout is on. None on a real terminal means "ask it at
    # every print", so a console follows a resized window; ignored off a terminal.
    width: int | None = None
    colour: bool = False
    # Variables the command may read (DSPEX_*, NO_COLOR), kept here so a test can set them.
    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_process(cls) -> Environment:
        """The environment this process was started in."""
        stdout_tty = _is_tty(sys.stdout)
        return cls(stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr, stdin_tty=_is_tty(sys.stdin),
                   stdout_tty=stdout_tty, stderr_tty=_is_tty(sys.stderr), width=None,
                   colour=stdout_tty and "NO_COLOR" not in os.environ, variables=dict(os.environ))

    @classmethod
    def simulated(cls, stdout: IO[str], *, terminal: bool, width: int = FALLBACK_TERMINAL_WIDTH,
                  stdin: IO[str] | None = None, stderr: IO[str] | None = None, colour: bool = False,
                  variables: dict[str, str] | None = None) -> Environment:
        """An environment over given streams: `terminal=True` makes them TTYs `width` columns wide."""
        import io

        return cls(stdin=stdin if stdin is not None else io.StringIO(), stdout=stdout,
                   stderr=stderr if stderr is not None else io.StringIO(), stdin_tty=terminal,
                   stdout_tty=terminal, stderr_tty=terminal, width=width if terminal else None,
                   colour=colour and terminal, variables=dict(variables or {}))

    @property
    def columns(self) -> int:
        """The width output should fit: the terminal's, or unlimited off a terminal."""
        from dspex_cli.console import PIPE_WIDTH

        if not self.stdout_tty:
            return PIPE_WIDTH
        return self.width or shutil.get_terminal_size((FALLBACK_TERMINAL_WIDTH, 24)).columns

    @property
    def interactive(self) -> bool:
        """Both ends are a terminal: a person is typing and reading."""
        return self.stdin_tty and self.stdout_tty

    def console(self, *, stderr: bool = False, **options: Any) -> Console:
        """A rich Console on stdout (or stderr) that follows this environment's rules.

        Extra keyword arguments go to rich.console.Console (e.g. highlight=False).
        """
        from rich.console import Console

        from dspex_cli.console import PIPE_WIDTH

        terminal = self.stderr_tty if stderr else self.stdout_tty
        options.setdefault("highlight", False)
        options.setdefault("soft_wrap", False)
        if "width" not in options and (self.width is not None or not terminal):
            options["width"] = self.width if terminal else PIPE_WIDTH
        if not self.colour:
            options.setdefault("color_system", None)
        return Console(file=self.stderr if stderr else self.stdout, force_terminal=terminal,
                       force_interactive=terminal, **options)

    def write(self, text: str) -> None:
        """Text on stdout, as it is (JSON for scripts, generated files)."""
        self.stdout.write(text)
        self.stdout.flush()

    def error_line(self, where: str, message: str) -> None:
        """`where: message` as one line on stderr, with any secret it picked up scrubbed."""
        from bridge.redact import scrub_text

        text = " ".join(scrub_text(message).split())
        self.stderr.write(f"{where}: {text}\n")
        self.stderr.flush()

    def silence_stdout(self) -> None:
        """After the reader of stdout went away (`dspex ... | head`): further output goes nowhere."""
        try:
            self.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
        except OSError:
            pass


def environment_of(ctx: Any) -> Environment:
    """The Environment run_app gave a typer/click command (the process's own without one)."""
    obj = getattr(ctx.find_root(), "obj", None) if ctx is not None else None
    return obj if isinstance(obj, Environment) else Environment.from_process()


__all__ = ["FALLBACK_TERMINAL_WIDTH", "Environment", "environment_of"]
