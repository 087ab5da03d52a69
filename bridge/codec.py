"""JSON codec for frames: orjson both ways, strict about what a request may be."""

from __future__ import annotations

import re
from typing import Any

import orjson

from .errors import InvalidJSON, InvalidUTF8, SerializationFailed

# Salvages the id of a frame whose JSON is broken, so the client gets an error reply
# instead of waiting for its timeout. Only used when exactly one integer id is visible.
_ID_PATTERN = re.compile(rb'"id"\s*:\s*(-?\d{1,19})\b')


def decode(payload: bytes) -> Any:
    """Decodes one frame's payload; raises InvalidUTF8 or InvalidJSON with a clear message."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as utf_exc:
            raise InvalidUTF8(f"Frame is not valid UTF-8 (byte {utf_exc.start})") from None
        raise InvalidJSON(f"Frame is not valid JSON: {exc}") from None


def salvage_id(payload: bytes) -> int | None:
    """Finds the request id in an undecodable frame, if it is unambiguous."""
    found = _ID_PATTERN.findall(payload[:4096])
    return int(found[0]) if len(found) == 1 else None


def encode(value: Any) -> bytes:
    """Encodes a reply; non-JSON values raise SerializationFailed instead of being dropped."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise SerializationFailed(f"Result is not JSON-serializable: {exc}") from None
