"""JSON codec for frames: orjson both ways, strict about what a request may be.

orjson holds integers of at most 64 bits: it reads larger ones as floats and refuses
to write them. The contract echoes ids exactly, so frames whose id came back as a float
are read again by the standard library (exact integers), and replies that orjson cannot
write go through the standard library too. Both slow paths run only for such frames.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from ..errors import InvalidJSON, InvalidUTF8, SerializationFailed

# Salvages the id of a frame whose JSON is broken, so the client gets an error reply
# instead of waiting for its timeout. Only used when exactly one integer id is visible;
# the scan is bounded to the frame's first 4 KiB and each match to 40 digits.
_ID_PATTERN = re.compile(rb'"id"\s{0,64}:\s{0,64}(-?\d{1,40})(?![\d.eE])')
_SALVAGE_WINDOW = 4096
_ANY_ID_KEY = re.compile(rb'"id"\s{0,64}:')


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


def decode_exact(payload: bytes, fast: Any) -> Any:
    """The request again with integers beyond 64 bits kept exact, when its id needs it.

    `fast` is orjson's reading of the same payload; it is returned when the standard
    library cannot do better (deep nesting, or the id really is a float).
    """
    try:
        exact = json.loads(payload)
    except (ValueError, RecursionError):
        return fast
    return exact if isinstance(exact, dict) and isinstance(exact.get("id"), int) else fast


def decode_reply(data: bytes) -> Any:
    """Reads back a reply this worker encoded, its id exact even beyond 64 bits."""
    reply = orjson.loads(data)
    if isinstance(reply, dict) and type(reply.get("id")) is float:
        reply = decode_exact(data, reply)
    return reply


def id_of_out_of_range_json(payload: bytes) -> Any:
    """The id of an object that is valid JSON but holds a number orjson refuses (1e999,
    -1e400), read by the standard library; None for anything else. Only for frames
    orjson already refused, so the slow parser never runs on ordinary traffic."""
    try:
        request = json.loads(payload, parse_constant=_refuse_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    if not isinstance(request, dict):
        return None
    request_id = request.get("id")
    return request_id if type(request_id) in (int, str) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def salvage_id(payload: bytes) -> int | None:
    """Finds the request id in an undecodable frame, if it is unambiguous: the only "id" key
    in the window, with an integer value (a string id beside an integer "id" nested in the
    args must not make the nested one the reply's id)."""
    window = payload[:_SALVAGE_WINDOW]
    found = _ID_PATTERN.findall(window)
    if len(found) != 1 or len(_ANY_ID_KEY.findall(window)) != 1:
        return None
    return int(found[0])


def _reject(value: Any) -> Any:
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def encode(value: Any) -> bytes:
    """Encodes a reply; non-JSON values raise SerializationFailed instead of being dropped."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise SerializationFailed(f"Result is not JSON-serializable: {exc}") from None
    try:  # an integer beyond 64 bits: exact in the standard library's encoder
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                          default=_reject).encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise SerializationFailed(f"Result is not JSON-serializable: {exc}") from None
