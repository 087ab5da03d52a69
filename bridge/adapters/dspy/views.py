"""The DSPy adapter's control-socket views (what `dspex inspect WORKER programs` shows)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...control.present import public, snapshot

if TYPE_CHECKING:
    from ...engine import Engine


def program_view(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    """Programs with signature, type, executions, last executed and mean latency."""
    wanted = args.get("session_id")
    programs = []
    for session in engine.sessions.all():
        if wanted is not None and session.session_id != wanted:
            continue
        state = session.state.get("dspy")
        if state is None:
            continue
        for record in snapshot(lambda: list(state.programs.values())):
            mean = record.mean_latency_ms
            programs.append({
                "session_id": session.session_id, "program_id": record.program_id,
                "program_type": record.program_type,
                "signature_def": record.description.get("signature_def"),
                "signature": record.signature, "created_at": record.created_at,
                "execution_count": record.execution_count, "error_count": record.error_count,
                "last_executed": record.last_executed,
                "mean_latency_ms": round(mean, 3) if mean is not None else None,
            })
    programs.sort(key=lambda p: (p["session_id"], p["created_at"]))
    return public({"programs": programs, "total": len(programs)})
