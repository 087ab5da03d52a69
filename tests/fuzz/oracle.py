"""What the fuzzer expects of the worker, worked out independently of the worker's code.

A reference framing parser (the contract's 4-byte big-endian length, frames above the
limit skipped) says which frames the worker will see in a byte stream, and a strict
JSON reading of each frame says which replies it owes: exactly one for an integer or
string id in a decodable object, at most one for ids that only an undecodable frame
shows (the worker may salvage them) or ids of other scalar types.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_HEADER = struct.Struct(">I")
# Generous on purpose: any id the worker might salvage from a broken frame is allowed.
_SALVAGE_INT = re.compile(rb'"id"\s*:\s*(-?\d+)(?![\d.eE])')
_SALVAGE_STR = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.)*")')
# The oracle reads 10,000-deep frames with the stdlib parser: deep enough to tell a
# 500-level frame (which the worker must answer) from a 10,000-level one (which it may refuse).
_RECURSION_LIMIT = 3000
# A frame holding a number beyond a double's range (`1e999`) is refused by orjson; the
# worker still reads its id, of any type, and answers it. (False would relax the oracle
# to "may answer", which was needed until that was fixed.)
OUT_OF_RANGE_NUMBERS_OWE_REPLY = True

IdKey = tuple[str, Any]


def id_key(value: Any) -> IdKey:
    """A reply id as a dictionary key that keeps `1`, `1.0` and `true` apart."""
    return (type(value).__name__, value)


@dataclass
class Expectations:
    """Replies a stream of frames owes: `required` exactly, `allowed` at most."""

    required: Counter = field(default_factory=Counter)
    allowed: Counter = field(default_factory=Counter)

    def add(self, other: "Expectations") -> None:
        self.required.update(other.required)
        self.allowed.update(other.allowed)


class ReferenceFramer:
    """The contract's framing, written from the contract rather than from bridge/wire/framing.py."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self.buffer = b""
        self.skip = 0

    def feed(self, data: bytes) -> list[bytes | None]:
        """Complete frames found (None for a skipped oversized frame)."""
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
        buffer = self.buffer + data
        frames: list[bytes | None] = []
        pos = 0
        while len(buffer) - pos >= 4:
            (length,) = _HEADER.unpack_from(buffer, pos)
            if length > self.max_frame_size:
                taken = min(length, len(buffer) - pos - 4)
                self.skip = length - taken
                pos += 4 + taken
                frames.append(None)
                continue
            if pos + 4 + length > len(buffer):
                break
            frames.append(buffer[pos + 4:pos + 4 + length])
            pos += 4 + length
        self.buffer = buffer[pos:]
        return frames

    def bytes_to_sync(self, pad: bytes) -> bytes | None:
        """Filler that ends the frame in progress, or None when that would take too long
        (a header whose length is far beyond the limit cannot be skipped cheaply)."""
        if self.skip:
            return pad * self.skip if self.skip <= 3 * self.max_frame_size else None
        if not self.buffer:
            return b""
        if len(self.buffer) < 4:
            header = self.buffer + b"\0" * (4 - len(self.buffer))
            (length,) = _HEADER.unpack(header)
            if length > 3 * self.max_frame_size:
                return None
            # Within the limit the frame needs `length` bytes; beyond it, as many are skipped.
            return b"\0" * (4 - len(self.buffer)) + pad * length
        (length,) = _HEADER.unpack_from(self.buffer)
        return pad * (length - (len(self.buffer) - 4))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _float(text: str, out_of_range: list[str]) -> float:
    value = float(text)
    if math.isinf(value):
        out_of_range.append(text)
    return value


def _salvageable(payload: bytes) -> Expectations:
    out = Expectations()
    for match in _SALVAGE_INT.finditer(payload):
        out.allowed[id_key(int(match.group(1)))] += 1
    for match in _SALVAGE_STR.finditer(payload):
        try:
            out.allowed[id_key(json.loads(match.group(1)))] += 1
        except (ValueError, RecursionError):
            pass
    return out


def frame_expectations(payload: bytes) -> Expectations:
    """The replies one frame's payload owes."""
    try:
        text = payload.decode("utf-8")
        old_limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old_limit, _RECURSION_LIMIT))
        try:
            out_of_range: list[str] = []
            value = json.loads(text, parse_constant=_reject_constant,
                               parse_float=lambda t: _float(t, out_of_range))
        finally:
            sys.setrecursionlimit(old_limit)
        # A lone surrogate (`"\ud800"`) is JSON grammar but not Unicode text.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        return _salvageable(payload)
    out = Expectations()
    if type(value) is dict and "id" in value:
        request_id = value["id"]
        if type(request_id) in (int, str):
            if out_of_range and not OUT_OF_RANGE_NUMBERS_OWE_REPLY:
                out.allowed[id_key(request_id)] += 1
            else:
                out.required[id_key(request_id)] += 1
        elif type(request_id) in (float, bool):
            out.allowed[id_key(request_id)] += 1
    return out


def parse_reply_stream(data: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """Every reply frame of a worker's stdout, and what is wrong with the stream if anything:
    a partial frame, a frame that is not strict JSON, a reply without the contract's shape."""
    replies: list[dict[str, Any]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            return replies, f"stdout ends inside a frame header at byte {pos}"
        (length,) = _HEADER.unpack_from(data, pos)
        if pos + 4 + length > len(data):
            return replies, f"stdout ends inside a frame of {length} bytes at byte {pos}"
        payload = data[pos + 4:pos + 4 + length]
        pos += 4 + length
        problem = reply_problem(payload)
        if problem:
            return replies, f"{problem}: {payload[:300]!r}"
        replies.append(json.loads(payload))
    return replies, None


def reply_problem(payload: bytes) -> str | None:
    """Why a reply frame breaks the contract, or None."""
    try:
        reply = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeError, ValueError) as exc:
        return f"reply is not strict JSON ({exc})"
    if type(reply) is not dict:
        return "reply is not an object"
    if "id" not in reply or type(reply["id"]) not in (int, str, float, bool):
        return "reply has no usable id"
    if reply.get("success") is True:
        if type(reply.get("result")) is not dict:
            return "success reply without an object result"
    elif reply.get("success") is False:
        if type(reply.get("error")) is not str:
            return "error reply without a string error"
    else:
        return "reply without a boolean success"
    if type(reply.get("timestamp")) not in (int, float):
        return "reply without a numeric timestamp"
    return None
