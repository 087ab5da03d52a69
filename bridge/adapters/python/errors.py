"""The Python adapter's errors, each with a stable `error_type`."""

from __future__ import annotations

from ...errors import BridgeError


class NotAllowed(BridgeError):
    """A target, method or reference the allow-list does not cover (or the adapter is off)."""

    error_type = "not_allowed"


class PythonCallFailed(BridgeError):
    """The called Python code raised; the message names the exception."""

    error_type = "python_error"


ERROR_TYPES: tuple[type[BridgeError], ...] = (NotAllowed, PythonCallFailed)
