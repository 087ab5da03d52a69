"""Making worker state safe and small enough to show: redaction, cutting, copying, and
how frames and LM calls are described to `dspex inspect` (live and from transcripts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BridgeError, InvalidArguments
from ..redact import TOO_DEEP, TooDeep, redact, scrub_text
from ..wire import codec

if TYPE_CHECKING:
    from ..engine import Engine

DEFAULT_STRING_LIMIT = 200
MAX_ITEMS = 20
MAX_DEPTH = 8


def public(value: Any) -> Any:
    """A copy safe to show: secret-named keys (outside user data) and secret values masked;
    a structure nested too deeply to check is shown as a marker instead."""
    try:
        return redact(value)
    except TooDeep:
        return TOO_DEEP


def cut(value: Any, max_string: int = DEFAULT_STRING_LIMIT, max_items: int = MAX_ITEMS,
        depth: int = 0) -> Any:
    """Shortens long strings and collections, saying how much was left out."""
    if isinstance(value, str):
        if len(value) <= max_string:
            return value
        return value[:max_string] + f"… [+{len(value) - max_string} chars]"
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return f"{{… {len(value)} keys}}"
        items = list(value.items())
        out = {k: cut(v, max_string, max_items, depth + 1) for k, v in items[:max_items]}
        if len(items) > max_items:
            out["…"] = f"+{len(items) - max_items} more keys"
        return out
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            return f"[… {len(value)} items]"
        shown = [cut(v, max_string, max_items, depth + 1) for v in value[:max_items]]
        if len(value) > max_items:
            shown.append(f"… +{len(value) - max_items} more items")
        return shown
    return value


def snapshot(copy: Callable[[], Any], attempts: int = 5) -> Any:
    """Copies a container another thread may be changing; retries the rare collision."""
    for _ in range(attempts - 1):
        try:
            return copy()
        except RuntimeError:  # "deque/dict mutated during iteration"
            time.sleep(0)
    return copy()


def int_arg(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArguments(f"'{name}' must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidArguments(f"'{name}' must be between {low} and {high}, got {value}")
    return value


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return round(ordered[index], 3)


# -- describing frames and LM calls --------------------------------------------------------


def describe_frame(engine: Engine, direction: str, at: float, payload: bytes, max_string: int,
                   request_times: dict[str, float] | None = None) -> dict[str, Any]:
    """One frame as inspect shows it: decoded, redacted, cut, with the reply's latency."""
    entry: dict[str, Any] = {"direction": direction, "size": len(payload),
                             "timestamp": engine.started_wall + (at - engine.started),
                             "age_ms": round((time.monotonic() - at) * 1000, 1)}
    try:
        message = codec.decode(payload)
    except BridgeError as exc:
        entry["error"] = exc.error_type
        entry["raw"] = cut(scrub_text(payload[:max_string * 2].decode("utf-8", "replace")), max_string)
        return entry
    if isinstance(message, dict):
        rid = message.get("id")
        entry["id"] = rid
        if direction == "in":
            entry["command"] = message.get("command")
            args = message.get("args")
            if isinstance(args, dict) and args.get("session_id"):
                entry["session_id"] = args.get("session_id")
            if request_times is not None:
                request_times[repr(rid)] = at
        else:
            entry["success"] = message.get("success")
            if message.get("error_type"):
                entry["error_type"] = message.get("error_type")
            started = request_times.pop(repr(rid), None) if request_times is not None else None
            if started is not None:
                entry["latency_ms"] = round((at - started) * 1000, 3)
    entry["frame"] = cut(public(message), max_string)
    # command and session id are copied from the frame as sent: a key sent as a command
    # name must be masked here too.
    return public(entry)


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, list):  # multi-part content: keep the text parts
        content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def describe_lm_call(record: dict[str, Any], preview: int, full: bool = False) -> dict[str, Any]:
    """An LM call record as inspect shows it: who, how long, tokens, what was asked and answered."""
    request = record.get("request") or {}
    messages = request.get("messages") or []
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
                     messages[-1] if messages else None)
    response = record.get("response") or {}
    outputs = response.get("outputs") or []
    answer = outputs[0] if outputs else None
    if isinstance(answer, dict):
        answer = answer.get("text", answer)
    entry = {
        "call_id": record.get("call_id"), "request_id": record.get("request_id"),
        "session_id": record.get("session_id"), "command": record.get("command"),
        "program_id": record.get("program_id"), "model": record.get("model"),
        "latency_ms": record.get("latency_ms"), "usage": record.get("usage") or {},
        "cost": record.get("cost"), "status": "error" if record.get("error") else "ok", "error": record.get("error"),
        "timestamp": record.get("timestamp"), "key": record.get("key"),
        "messages": len(messages), "params": request.get("params") or {},
        "prompt_preview": cut(_message_text(last_user) if last_user is not None else "", preview),
        "answer_preview": cut("" if answer is None else str(answer), preview),
    }
    if full:  # the whole exchange, still redacted; cut only far beyond any sane prompt
        entry["messages_full"] = messages
        entry["response_full"] = outputs
        return cut(public(entry), 1_000_000, 10_000)
    return cut(public(entry), max(preview, DEFAULT_STRING_LIMIT))

