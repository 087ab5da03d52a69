"""The port framing: a 4-byte big-endian length, then the payload.

`FrameReader` parses frames out of a byte stream incrementally and never allocates for
a frame larger than the limit: it skips such a frame's bytes as they arrive, so the
stream stays in sync and the worker keeps serving.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
HEADER_SIZE = 4
_HEADER = struct.Struct(">I")
# Reads a frame's length at an offset of a buffer (for callers that peek before cutting).
unpack_length = _HEADER.unpack_from
# A frame's header for a payload of n bytes: the one place the header layout is written.
header = _HEADER.pack


def pack(payload: bytes) -> bytes:
    """One frame: header and payload as a single buffer, so one write sends it whole."""
    return _HEADER.pack(len(payload)) + payload


def pack_many(payloads: list[bytes]) -> bytes:
    """Several frames as one buffer, for one write of a batch of replies."""
    # Headers and payloads interleaved by C-level loops (map, slice assignment), then one
    # join: no Python bytecode and no intermediate bytes object per reply.
    parts: list[bytes] = payloads * 2
    parts[::2] = map(_HEADER.pack, map(len, payloads))
    parts[1::2] = payloads
    return b"".join(parts)


class Oversized:
    """Stands in for a frame that exceeded the limit and was skipped (a plain immutable
    value, not a dataclass: see bridge.plain_record)."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        object.__setattr__(self, "length", length)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Oversized is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is Oversized and other.length == self.length  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((Oversized, self.length))

    def __repr__(self) -> str:
        return f"Oversized(length={self.length})"


class FrameReader:
    """Incremental frame parser fed with arbitrary chunks of the stream."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._skip = 0  # bytes still to discard of an oversized frame
        self.oversized = 0  # frames skipped so far: lets callers skip filtering when none
        # Bytes of an unfinished frame (buffered or still to skip); non-zero at end of
        # input means a truncated frame. A plain attribute, kept by feed(): the serve loop
        # reads it for every request.
        self.pending = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes | Oversized]:
        """Each complete frame (or an Oversized marker) found after adding chunk, in order.

        A list rather than a generator: callers take every frame anyway, and a loop that
        appends is cheaper per frame than one that yields (the recorder's writer splits
        every frame of a busy worker's streams again).
        """
        if self._skip:
            dropped = min(self._skip, len(chunk))
            self._skip -= dropped
            chunk = chunk[dropped:]
        buffer = self._buffer
        # With nothing pending, frames are cut straight from the chunk: no copy into the
        # buffer and back out for the common case of reads that end on a frame boundary.
        if buffer:
            buffer += chunk
            data: bytes | bytearray | memoryview = buffer
        else:
            data = chunk
        frames: list[bytes | Oversized] = []
        append = frames.append
        # A slice of bytes is bytes already (the serve loop's reads); only a slice of the
        # buffer or of a memoryview needs the copy.
        sliced_bytes = type(data) is bytes
        unpack = _HEADER.unpack_from
        limit = self.max_frame_size
        start = 0
        end = len(data)
        while start + 4 <= end:
            (length,) = unpack(data, start)
            if length > limit:
                skipped = min(length, end - start - 4)
                start += 4 + skipped
                self._skip = length - skipped
                self.oversized += 1
                append(Oversized(length))
                continue
            stop = start + 4 + length
            if stop > end:
                break
            append(data[start + 4:stop] if sliced_bytes else bytes(data[start + 4:stop]))
            start = stop
        if data is buffer:
            del buffer[:start]
        elif start < end:
            buffer += data[start:]
        self.pending = len(buffer) + self._skip
        return frames


def write_all(fd: int, data: bytes) -> None:
    """Writes every byte; pipes may accept only part of a large buffer per call."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_frames(fd: int, max_frame_size: int = DEFAULT_MAX_FRAME) -> Iterator[bytes | Oversized]:
    """Blocking iterator over frames from fd until end of input (used by clients and tests)."""
    reader = FrameReader(max_frame_size)
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return
        yield from reader.feed(chunk)
