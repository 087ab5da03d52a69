"""What the console lets through to a live worker: `--read-only`, and confirmation first.

Whether a command only reads, or destroys state, is a property of the command in the one
registry (`CommandSpec.read_only` / `CommandSpec.destructive`), never a list kept here.
"""

from __future__ import annotations

from typing import Any

from .parsing import ParseError


class Refused(ParseError):
    """A command the console will not send (read-only mode, or a confirmation answered no)."""

    error_type = "refused"


def is_destructive(spec: Any) -> bool:
    """Whether running the command can delete state or stop the worker."""
    return bool(getattr(spec, "destructive", False))


def is_read(spec: Any) -> bool:
    """Whether the command leaves the worker's state as it was (what `--read-only` allows)."""
    return bool(getattr(spec, "read_only", False))


def destructive_question(command: str) -> str:
    return f"You're about to run a destructive command: {command}. Do you want to proceed?"


def check_read_only(spec: Any) -> None:
    if not is_read(spec):
        raise Refused(f"Read-only console: {spec.name} would change the worker, so it was not sent",
                      "this console was started with --read-only; reads (list_*, get_*, ping, "
                      "execute_program) still work")
