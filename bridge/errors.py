"""Errors with stable `error_type` codes.

Clients match on `error_type` (stable) and show `error` (human text). Every failure a
handler or the protocol layer can produce is one of these classes, so the code that
turns exceptions into replies never has to guess.
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base of every error that becomes a `success: false` reply."""

    error_type: str = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(BridgeError):
    error_type = "invalid_request"


class InvalidJSON(BridgeError):
    error_type = "invalid_json"


class InvalidUTF8(BridgeError):
    error_type = "invalid_utf8"


class FrameTooLarge(BridgeError):
    error_type = "frame_too_large"


class TruncatedFrame(BridgeError):
    error_type = "truncated_frame"


class UnknownCommand(BridgeError):
    error_type = "unknown_command"

    def __init__(self, name: str, suggestion: str | None = None) -> None:
        # The exact text "Unknown command: X" is matched by existing Elixir clients; a name
        # of absurd length is cut, since the reply would otherwise carry it all back.
        shown = name if len(name) <= 200 else f"{name[:200]}… ({len(name)} characters)"
        super().__init__(f"Unknown command: {shown}",
                         details={"suggestion": suggestion} if suggestion else None)


class InvalidArguments(BridgeError):
    error_type = "invalid_arguments"


class SerializationFailed(BridgeError):
    error_type = "serialization_error"


class Cancelled(BridgeError):
    error_type = "cancelled"


class ShuttingDown(BridgeError):
    error_type = "shutting_down"


class LimitExceeded(BridgeError):
    """A table a client can grow (sessions, programs, session data, known secrets) is full."""

    error_type = "limit_exceeded"


class Overloaded(BridgeError):
    """More requests are queued than the worker accepts; the client should retry later."""

    error_type = "overloaded"


class JobNotFound(BridgeError):
    """get_job/cancel_job of an id this worker never started, or forgot (after 10 min)."""

    error_type = "job_not_found"


class DeadlineExceeded(BridgeError):
    """The request's `deadline_ms` passed; its work was abandoned."""

    error_type = "deadline_exceeded"


class CallbackFailed(BridgeError):
    """A callback into the client failed: answered with an error, not answered in time,
    or not possible for this request."""

    error_type = "callback_failed"


class RequestNotFound(BridgeError):
    """`cancel` of a request id that is unknown or already answered."""

    error_type = "request_not_found"
