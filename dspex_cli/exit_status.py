"""Exit statuses of every dspex subcommand, the error a user's mistake raises, and the
one error boundary that turns what a command raised into a line on stderr and a status.

One table, so `dspex replay`, `dspex inspect`, `dspex shim` ... mean the same thing by
the same number; no other module of the CLI writes an exit code as a number.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dspex_cli.env import Environment


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

    @classmethod
    def of_exit_code(cls, code: object) -> int:
        """What a SystemExit's code means as a status: None is success, a message failure."""
        if code is None:
            return int(cls.OK)
        return int(code) if isinstance(code, int) else int(cls.FAILURE)


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, never a traceback."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def report_user_error(where: str, message: str, env: Environment | None = None) -> None:
    """`where: message` as one line on stderr, with any secret the message picked up scrubbed."""
    from dspex_cli.env import Environment

    (env or Environment.from_process()).error_line(where, message)


def run_guarded(where: str, body: Callable[[], int | None], env: Environment | None = None) -> int:
    """The error boundary: runs `body` and turns its outcome into an exit status.

    A UserError becomes `where: message` on stderr and its status; Ctrl-C becomes
    INTERRUPTED; a reader that went away (`dspex ... | head`) ends the command quietly;
    a SystemExit (typer, argparse) keeps its code. Anything else is a bug and keeps its
    traceback.
    """
    from dspex_cli.env import Environment

    environment = env or Environment.from_process()
    try:
        status = body()
    except SystemExit as exc:
        return ExitStatus.of_exit_code(exc.code)
    except UserError as exc:
        environment.error_line(where, exc.message)
        return int(exc.status)
    except KeyboardInterrupt:
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        environment.silence_stdout()
        return int(ExitStatus.OK)
    return int(ExitStatus.OK if status is None else status)


__all__ = ["ExitStatus", "UserError", "report_user_error", "run_guarded"]
