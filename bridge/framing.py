"""The port framing: a 4-byte big-endian length, then the payload.

`FrameReader` parses frames out of a byte stream incrementally and never allocates for
a frame larger than the limit: it skips such a frame's bytes as they arrive, so the
stream stays in sync and the worker keeps serving.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


def pack(payload: bytes) -> bytes:
    """One frame: header and payload as a single buffer, so one write sends it whole."""
    return _HEADER.pack(len(payload)) + payload


@dataclass(frozen=True)
class Oversized:
    """Stands in for a frame that exceeded the limit and was skipped."""

    length: int


class FrameReader:
    """Incremental frame parser fed with arbitrary chunks of the stream."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._skip = 0  # bytes still to discard of an oversized frame

    def feed(self, chunk: bytes) -> Iterator[bytes | Oversized]:
        """Yields each complete frame (or an Oversized marker) found after adding chunk."""
        if self._skip:
            dropped = min(self._skip, len(chunk))
            self._skip -= dropped
            chunk = chunk[dropped:]
        buffer = self._buffer
        buffer += chunk
        start = 0
        end = len(buffer)
        while end - start >= 4:
            (length,) = _HEADER.unpack_from(buffer, start)
            if length > self.max_frame_size:
                available = end - start - 4
                skipped = min(length, available)
                start += 4 + skipped
                self._skip = length - skipped
                yield Oversized(length)
                continue
            if end - start - 4 < length:
                break
            yield bytes(buffer[start + 4:start + 4 + length])
            start += 4 + length
        if start:
            del buffer[:start]

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame; non-zero at end of input means a truncated frame."""
        return len(self._buffer) + self._skip


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
