"""Width rules of dspex's rich output, and the console factory every command uses.

On a terminal, rich fits output to the window as usual. Anywhere else (a pipe, a file,
CI logs) nothing may be cut or wrapped at an imagined 80 columns: a script grepping
`dspex commands` for an argument name, or a CI log showing a long transcript path, must
see the whole text. So a console that is not writing to a terminal gets a width no line
will reach, and renderables that would stretch to the full width (rules, panels) are
kept at their natural size by the callers. The consoles themselves are built by
dspex_cli.env.Environment.console, from the streams of the command's Environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from dspex_cli.env import Environment

# Wide enough that no table row, path or JSON preview dspex prints is ever folded.
PIPE_WIDTH = 100_000
# What a full-width rule or heading uses when the real width is PIPE_WIDTH.
PIPE_RULE_WIDTH = 80


def make_console(*, stderr: bool = False, env: Environment | None = None, **options: Any) -> Console:
    """A Console on the environment's stdout (or stderr): terminal-sized on a TTY, never
    wrapping elsewhere. Without `env`, the process's own streams."""
    from dspex_cli.env import Environment

    return (env or Environment.from_process()).console(stderr=stderr, **options)


def is_wide(console: Console) -> bool:
    """Whether `console` is the non-terminal kind (full-width renderables should not stretch)."""
    return console.width >= PIPE_WIDTH


def rule_width(console: Console) -> int:
    """The width a heading rule should take on this console."""
    return PIPE_RULE_WIDTH if is_wide(console) else console.width


__all__ = ["PIPE_RULE_WIDTH", "PIPE_WIDTH", "is_wide", "make_console", "rule_width"]
