"""The terminal of `dspex top`: cbreak mode, the alternate screen and key parsing."""

from __future__ import annotations

import io
import os
import select
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex_cli.env import Environment


class Terminal:
    """cbreak mode, the alternate screen and a hidden cursor, restored however we leave."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.fd = env.stdin.fileno()
        self.saved: Any = None

    def __enter__(self) -> Terminal:
        import termios
        import tty

        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self.env.write("\x1b[?1049h\x1b[?25l")
        return self

    def __exit__(self, *exc: object) -> None:
        import termios

        self.env.write("\x1b[?25h\x1b[?1049l")
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.env.stdout.fileno())
            return max(20, size.columns), max(5, size.lines)
        except OSError:
            return 80, 24

    def keys(self, timeout: float) -> list[str]:
        """The keys pressed within `timeout` seconds (possibly none)."""
        readable, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not readable:
            return []
        data = os.read(self.fd, 1024)
        if not data:  # the terminal is gone
            return ["q"]
        return parse_keys(data.decode("utf-8", "replace"))

    def draw(self, renderable: Any, width: int, height: int) -> None:
        from rich.console import Console

        buffer = io.StringIO()
        console = Console(file=buffer, width=width, height=height, force_terminal=True, highlight=False,
                          color_system=None if "NO_COLOR" in self.env.variables else "standard", soft_wrap=False)
        console.print(renderable, crop=True, overflow="ellipsis")
        lines = buffer.getvalue().split("\n")[:height]
        self.env.write("\x1b[H" + "\x1b[K\r\n".join(lines) + "\x1b[K\x1b[J")


_SEQUENCES = {"\x1b[A": "up", "\x1b[B": "down", "\x1bOA": "up", "\x1bOB": "down", "\x1b[5~": "pgup",
              "\x1b[6~": "pgdown", "\x1b[C": "right", "\x1b[D": "left"}


def parse_keys(text: str) -> list[str]:
    """Splits what the terminal sent into key names ("up", "enter", "esc", "backspace", "x")."""
    keys, i = [], 0
    while i < len(text):
        for sequence, name in _SEQUENCES.items():
            if text.startswith(sequence, i):
                keys.append(name)
                i += len(sequence)
                break
        else:
            char = text[i]
            i += 1
            if char == "\x1b":
                if i < len(text) and text[i] == "[":  # an unknown sequence: skip it whole
                    while i < len(text) and not text[i].isalpha() and text[i] != "~":
                        i += 1
                    i += 1
                    continue
                keys.append("esc")
            elif char in "\r\n":
                keys.append("enter")
            elif char in "\x7f\b":
                keys.append("backspace")
            else:
                keys.append(char)
    return keys
