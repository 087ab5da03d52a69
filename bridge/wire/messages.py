"""The messages of the wire: what a request must be, and the envelopes sent back.

Every part that answers requests (the engine on the port, the control socket, the REPL's
targets, replay) reads requests and writes replies through these functions, so the
rules and the key order of the envelopes are written down once:

- request: `{"id", "command", "args"}`; `args` may be missing or null (an empty object);
- reply: `{"id", "success": true, "result", "timestamp"}`;
- error: `{"id", "success": false, "error", "error_type", "timestamp"}` plus `details`
  when there are any;
- event (a subscription's stream): `{"id", "event", "data", "timestamp"}`.

Key order is part of the contract's bytes (recordings compare replies as written), so
the builders below are the only places these dicts are made. The engine's inline path
for health pings builds its reply dict inline for speed, in the same order; a unit test
checks the two agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import BridgeError, InvalidArguments, InvalidRequest, SerializationFailed
from ..redact import TooDeep, scrub_text, scrub_values
from . import codec

# Error texts are cut here: a message may quote client input (a 60 MB command name).
MAX_ERROR_TEXT = 2000

_time = time.time


class Request(NamedTuple):
    """A request that passed the envelope checks (its command may still be unknown).
    A named tuple: built for every queued request, and cheaper than a frozen dataclass."""

    id: Any
    command: str
    args: dict[str, Any]


class RejectedRequest(Exception):
    """A decoded message that is not a usable request.

    `answerable` says whether an error reply can be addressed to `request_id`: a message
    without a usable id can only be logged and counted, since no client would match it.
    """

    def __init__(self, error: BridgeError, request_id: Any = None, answerable: bool = True) -> None:
        super().__init__(error.message)
        self.error = error
        self.request_id = request_id
        self.answerable = answerable


def usable_id(value: Any) -> bool:
    """Whether a reply can carry this id back: any JSON scalar except null."""
    return value is not None and not isinstance(value, (dict, list))


def parse_request(message: Any, *, require_id: bool = True) -> Request:
    """The request in a decoded frame; raises RejectedRequest saying why it is not one.

    With `require_id=False` (the control socket, whose own client always sends ids but
    whose older peers did not) a missing or unusable id is echoed back as it came.
    """
    if not isinstance(message, dict):
        raise RejectedRequest(InvalidRequest(
            f"Request must be a JSON object, got {type(message).__name__}"), None, answerable=False)
    request_id = message.get("id")
    if require_id and not usable_id(request_id):
        raise RejectedRequest(InvalidRequest("Request has no usable 'id'; it cannot be answered"),
                              request_id, answerable=False)
    command = message.get("command")
    if not isinstance(command, str) or not command:
        raise RejectedRequest(InvalidRequest("Request 'command' must be a non-empty string"), request_id)
    args = message.get("args")
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        raise RejectedRequest(InvalidArguments(f"'args' must be an object, got {type(args).__name__}"),
                              request_id)
    return Request(request_id, command, args)


def request(request_id: Any, command: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request envelope, as clients (the REPL, replay, exec) send it."""
    return {"id": request_id, "command": command, "args": args or {}}


def reply(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    """A success reply."""
    return {"id": request_id, "success": True, "result": result, "timestamp": _time()}


def error_reply(request_id: Any, error_type: str, message: str,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure reply; `message` and `details` must already be safe to show."""
    envelope: dict[str, Any] = {"id": request_id, "success": False, "error": message,
                                "error_type": error_type, "timestamp": _time()}
    if details:
        envelope["details"] = details
    return envelope


def _scrubbed_details(details: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return scrub_values(details)
    except TooDeep:
        return None  # details too deep to check are left out, the error itself still goes


def error_reply_for(request_id: Any, exc: BaseException,
                    clean_details: Callable[[dict[str, Any]], Any] = _scrubbed_details) -> dict[str, Any]:
    """The failure reply for an exception: its error type, its scrubbed and cut message,
    and its details passed through `clean_details` (None drops them)."""
    error_type, message, details = describe_error(exc)
    return error_reply(request_id, error_type, message, clean_details(details) if details else None)


def event(request_id: Any, kind: str, data: Any) -> dict[str, Any]:
    """One item of a stream answering request `request_id` (a control subscription)."""
    return {"id": request_id, "event": kind, "data": data, "timestamp": _time()}


def is_reply(message: Any) -> bool:
    """Whether a decoded message is a reply (success or failure) rather than an event."""
    return isinstance(message, dict) and isinstance(message.get("success"), bool)


def encode_or_error(message: dict[str, Any]) -> bytes:
    """The encoded message; if it cannot be encoded, an error reply to its id that can.

    For peers that must get an answer whatever a view returned (the control socket).
    """
    try:
        return codec.encode(message)
    except SerializationFailed as exc:
        return codec.encode(error_reply(message.get("id"), exc.error_type, exc.message))


# -- error texts ------------------------------------------------------------------------------


def _cut_text(text: str) -> str:
    if len(text) <= MAX_ERROR_TEXT:
        return text
    return f"{text[:MAX_ERROR_TEXT]}… ({len(text) - MAX_ERROR_TEXT} more characters)"


def safe_text(text: str) -> str:
    """Scrubbed, then cut. Scrubbing first: a cut through a secret would show its start.
    The text is trimmed before scrubbing only far past the cut, so scrubbing stays cheap."""
    return _cut_text(scrub_text(text[:2 * MAX_ERROR_TEXT + 4096]))


def short_repr(value: Any) -> str:
    """A value (an id, a name) as it may appear in a log line or error message."""
    return safe_text(repr(value))


def describe_error(exc: BaseException) -> tuple[str, str, dict[str, Any] | None]:
    """(error_type, message, details) for any exception, with secrets scrubbed and long
    messages cut (they may quote client input)."""
    if isinstance(exc, BridgeError):
        return exc.error_type, safe_text(exc.message), exc.details
    error_type = getattr(exc, "error_type", None)
    if isinstance(error_type, str):
        return error_type, safe_text(str(exc)), None
    text = str(exc) or type(exc).__name__
    return "internal_error", safe_text(f"{type(exc).__name__}: {text}"), None


__all__ = ["MAX_ERROR_TEXT", "RejectedRequest", "Request", "describe_error", "encode_or_error", "error_reply",
           "error_reply_for", "event", "is_reply", "parse_request", "reply", "request", "safe_text",
           "scrubbed_reply", "short_repr", "usable_id"]


def scrubbed_reply(data: bytes) -> bytes:
    """A reply with every registered secret value masked, except in its id: the client
    matches replies by id, which must come back exactly as sent."""
    reply = codec.decode_reply(data)
    rest = {key: value for key, value in reply.items() if key != "id"}
    try:
        cleaned = {"id": reply.get("id"), **scrub_values(rest)}
    except TooDeep:
        cleaned = error_reply(reply.get("id"), "serialization_error",
                                       "Reply nested too deeply to be checked for secrets")
    return codec.encode(cleaned)
