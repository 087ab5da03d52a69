"""Exit statuses of every dspex subcommand, and the error a user's mistake raises.

One table, so `dspex replay`, `dspex inspect`, `dspex shim` ... mean the same thing by
the same number, and the error boundary in dspex_cli.app turns a UserError into one line
on stderr and ExitStatus.USAGE instead of a traceback.
"""

from __future__ import annotations

import sys
from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    # The command ran and found a problem: a replay mismatch, a worker that cannot be reached.
    FAILURE = 1
    MISMATCH = 1
    # The user's input was wrong: options, paths, plugin names.
    USAGE = 2
    # `dspex replay`: a transcript that cannot be read or checked.
    UNREADABLE = 3
    # Ctrl-C: the shell convention 128 + SIGINT.
    INTERRUPTED = 130


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, never a traceback."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def report_user_error(where: str, message: str) -> None:
    """`where: message` as one line on stderr, with any secret the message picked up scrubbed."""
    from bridge.redact import scrub_text

    text = " ".join(scrub_text(message).split())
    sys.stderr.write(f"{where}: {text}\n")
    sys.stderr.flush()


__all__ = ["ExitStatus", "UserError", "report_user_error"]
