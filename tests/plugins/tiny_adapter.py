"""A complete framework adapter in one file, for the seam's own tests: a per-session
tally. It is loaded with `dspex serve --plugin tiny_adapter --adapters tally` and must
work with no DSPy anywhere in the worker."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from bridge import Adapter, Arg, BridgeError, register_adapter
from bridge.registry import CommandSpec, Registry, command

COMMANDS = Registry()


class TallyOverflow(BridgeError):
    error_type = "tally_overflow"


class Tally:
    def __init__(self) -> None:
        self.total = 0


class TallyAdapter(Adapter):
    name = "tally"

    def commands(self) -> Iterable[CommandSpec]:
        return COMMANDS.specs()

    def new_session_state(self) -> Tally:
        return Tally()

    def session_fields(self, state: Tally, view: bool = False) -> dict[str, Any]:
        return {"tally": state.total}

    def on_cleanup_session(self, state: Tally) -> dict[str, Any]:
        return {"tally_dropped": state.total}

    def on_cleanup(self, states: list[Tally]) -> dict[str, Any]:
        dropped = sum(state.total for state in states)
        for state in states:
            state.total = 0
        return {"tally_dropped": dropped}

    def on_reset(self, states: list[Tally]) -> dict[str, Any]:
        return {"tallies_reset": len(states)}

    def ping_fields(self) -> dict[str, Any]:
        return {"tally_ready": True}

    def stats_fields(self, states: list[Tally]) -> dict[str, Any]:
        return {"tally_sessions": len(states), "dspy_imported": "dspy" in sys.modules}

    def error_types(self) -> tuple[type[BridgeError], ...]:
        return (TallyOverflow,)

    def views(self) -> dict[str, Any]:
        return {"tallies": ("every session's tally", lambda engine, args: {
            "tallies": {s.session_id: s.state["tally"].total for s in engine.sessions.all() if "tally" in s.state}})}


@command("tally_add", registry=COMMANDS, args=(Arg("n", "integer", required=True), Arg("session_id", "string")))
def tally_add(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Adds n to the session's tally."""
    state = ctx.session.slot(ctx.engine.adapter("tally"))
    if state.total + args["n"] > 1000:
        raise TallyOverflow("the tally would pass 1000")
    state.total += args["n"]
    return {"total": state.total, "session_id": ctx.session_id}


register_adapter(TallyAdapter)
