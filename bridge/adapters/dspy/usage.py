"""`get_usage`: LM calls, tokens and cost per session and per program.

Each LM call's record carries its own `cost` (see lm_calls.call_cost) and a job's view
its totals; this command answers the longer-lived totals. They live here rather than
as new keys of list_programs / get_program_info / execute_program because the replies
recorded in recordings/ must replay unchanged, and replay reports a new key as a
difference.
"""

from __future__ import annotations

from typing import Any

from ...context import Context
from ...registry import Arg, command
from .commands import COMMANDS
from .errors import ProgramNotFound
from .state import UsageTotals


@command("get_usage", registry=COMMANDS, read_only=True, scheduling="read", args=(
    Arg("session_id", "string"),
    Arg("program_id", "string", help="only this program's totals"),
))
def get_usage(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """LM calls, tokens and cost (USD, where the model's price is known) of the session and its programs."""
    session = ctx.engine.sessions.peek(ctx.session_id)
    state = session.state.get("dspy") if session is not None else None
    programs = dict(getattr(state, "programs", None) or {})
    program_id = args.get("program_id")
    if program_id is not None:
        if program_id not in programs:
            raise ProgramNotFound(program_id)
        programs = {program_id: programs[program_id]}
    totals = state.usage if state is not None else UsageTotals()
    return {"session_id": ctx.session_id, "session": totals.view(),
            "programs": {pid: record.usage.view() for pid, record in programs.items()}}
