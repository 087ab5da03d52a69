"""What the console reads from a worker's control socket outside of requests: its LM calls."""

from __future__ import annotations

from typing import Any


def socket_of(info: Any) -> str:
    """The socket path of a resolved worker (older records call it `socket`)."""
    return str(getattr(info, "socket_path", None) or info.socket)


def control_lm_calls(spec: str, limit: int) -> list[dict[str, Any]] | None:
    """The `lm` view of a worker's control socket, as a list of call records."""
    try:
        from bridge.control.client import ControlClient, resolve_worker

        info = resolve_worker(spec)
        client = ControlClient(socket_of(info))
        try:
            view = client.call("lm", {"limit": limit})
        finally:
            client.close()
    except Exception:
        return None
    return lm_records_from_view(view, limit)


def lm_records_from_view(view: Any, limit: int) -> list[dict[str, Any]] | None:
    """Finds the list of LM call records in a control-socket reply, whatever wraps it."""
    if isinstance(view, dict) and "result" in view and "success" in view:
        view = view.get("result")
    if isinstance(view, dict):
        for key in ("calls", "lm_calls", "lm", "items", "records"):
            if isinstance(view.get(key), list):
                view = view[key]
                break
    if not isinstance(view, list):
        return None
    records = [r for r in view if isinstance(r, dict)]
    return records[-limit:] if limit > 0 else records
