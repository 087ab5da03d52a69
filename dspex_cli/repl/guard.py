"""What the console lets through to a live worker: `--read-only`, and confirmation first.

Whether a command only reads, or destroys state, is a property of the command in the one
registry (bridge.registry.CommandSpec). Until CommandSpec carries it explicitly
(`read_only` / `destructive`), it is derived here from what the registry already says:
a command that runs across every session (`scheduling == "global"`) is destructive, as
are the few per-session ones below that delete or stop something.
"""

from __future__ import annotations

from typing import Any

from .parsing import ParseError

# Destructive commands the registry's scheduling does not mark as global (until it says so itself).
_DESTRUCTIVE_BEYOND_GLOBAL = frozenset({"shutdown", "cleanup_session", "delete_program"})
# Name prefixes that mean "only reads", by the registry's own naming convention.
_READ_PREFIXES = ("get_", "list_")


class Refused(ParseError):
    """A command the console will not send (read-only mode, or a confirmation answered no)."""

    error_type = "refused"


def is_destructive(spec: Any) -> bool:
    """Whether running the command can delete state or stop the worker."""
    flag = getattr(spec, "destructive", None)
    if flag is not None:
        return bool(flag)
    return spec.scheduling == "global" or spec.name in _DESTRUCTIVE_BEYOND_GLOBAL


def is_read(spec: Any) -> bool:
    """Whether the command leaves the worker's state as it was (what `--read-only` allows)."""
    flag = getattr(spec, "read_only", None)
    if flag is not None:
        return bool(flag)
    if is_destructive(spec):
        return False
    # "inline" commands are answered at once without touching sessions (ping, get_stats,
    # list_sessions); "read" ones run concurrently because they change nothing (execute_program).
    return spec.scheduling in ("inline", "read") or spec.name.startswith(_READ_PREFIXES)


def destructive_question(command: str) -> str:
    return f"You're about to run a destructive command: {command}. Do you want to proceed?"


def check_read_only(spec: Any) -> None:
    if not is_read(spec):
        raise Refused(f"Read-only console: {spec.name} would change the worker, so it was not sent",
                      "this console was started with --read-only; reads (list_*, get_*, ping, "
                      "execute_program) still work")
