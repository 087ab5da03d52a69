"""The private pipe from a worker to its transcript writer: its record format, and the
decoder that turns records back into groups of frames."""

from __future__ import annotations

import logging
import struct
from typing import Any

import orjson

from ..wire.framing import DEFAULT_MAX_FRAME, FrameReader
from .scrubbing import BatchFormatter, Group

log = logging.getLogger("dspex.record")

# The private pipe from a worker to its transcript writer process: records of
# kind (1 byte), offset in ms (float64), length (uint32), body. Kinds: b"I"/b"O" the framed
# bytes of one read / one write as they crossed the port, b"i"/b"o" one frame's payload
# read or written alone, b"l" an LM call, b"s" the secret values registered so far, b"d"
# recording stopped early (its footer: why and when), b"e" the end (a clean close).
RECORD = struct.Struct(">cdI")
# An in-process engine's frame taps say "in"/"out" for one payload.
TAP_CODES = {"in": b"i", "out": b"o"}
_SINGLE_DIRECTIONS = {code: direction for direction, code in TAP_CODES.items()}


class RecordDecoder:
    """Turns pipe records back into groups of frames (for the writer process, and for
    the in-process fallback, which formats the same records itself)."""

    def __init__(self, formatter: BatchFormatter) -> None:
        self.formatter = formatter
        # Each direction's stream is split into frames as the server split it: a read may
        # end inside a frame, which the next read completes.
        self.streams = {b"I": ("in", FrameReader(DEFAULT_MAX_FRAME)), b"O": ("out", FrameReader(DEFAULT_MAX_FRAME))}
        self.footer: dict[str, Any] | None = None  # from the end record of a clean close
        self.stopped: dict[str, Any] | None = None  # from a b"d" record: nothing after it is recorded

    def decode(self, code: bytes, offset_ms: float, body: bytes) -> list[Group]:
        """The groups one record holds (none for control records: secrets, the end)."""
        if self.stopped is not None and code not in (b"e", b"s"):
            return []  # a stream cut short must not go on past its gap
        direction = _SINGLE_DIRECTIONS.get(code)
        if direction is not None:
            return [(direction, offset_ms, [body])]
        stream = self.streams.get(code)
        if stream is not None:
            direction, reader = stream
            oversized = reader.oversized
            frames = reader.feed(body)
            if reader.oversized != oversized:  # a skipped frame is not recorded
                frames = [frame for frame in frames if type(frame) is bytes]
            return [(direction, offset_ms, frames)]
        if code == b"l":
            return [("lm", offset_ms, [orjson.loads(body)])]
        if code == b"s":
            # Applies to the whole batch the writer is making, frames before it included:
            # scrubbing more than needed is harmless, less never is.
            self.formatter.set_secrets(orjson.loads(body))
        elif code == b"e":
            self.footer = orjson.loads(body)
        elif code == b"d":
            self.stopped = orjson.loads(body)
        else:
            log.error("unknown record %r in the recording pipe; skipped", code)
        return []

    def end_line(self, cut_short: str | None = None) -> dict[str, Any]:
        """The footer of the transcript's end line: `complete` says whether it holds the
        whole conversation; otherwise `reason` says why not, `recorded_until_ms` from when."""
        if cut_short is None and self.stopped is None and self.footer is not None:
            return {**self.footer, "complete": True}
        footer: dict[str, Any] = dict(self.footer or {})
        footer.update(self.stopped or {"reason": cut_short or "the worker ended without closing the recording"})
        footer["complete"] = False
        return footer


def stop_record(offset_ms: float, reason: str) -> bytes:
    body = orjson.dumps({"recorded_until_ms": round(offset_ms, 3), "reason": reason})
    return RECORD.pack(b"d", offset_ms, len(body)) + body
