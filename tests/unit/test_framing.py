"""The port framing: 4-byte big-endian length, incremental parsing, the size limit."""

from __future__ import annotations

import os
import struct

import pytest

from bridge.wire.framing import DEFAULT_MAX_FRAME, FrameReader, Oversized, pack, read_frames, write_all


def test_pack_is_big_endian_length_then_payload() -> None:
    assert pack(b"abc") == b"\x00\x00\x00\x03abc"
    assert pack(b"") == b"\x00\x00\x00\x00"
    payload = b"x" * 70_000
    assert pack(payload)[:4] == struct.pack(">I", 70_000)


def test_default_limit_is_64_mib() -> None:
    assert DEFAULT_MAX_FRAME == 64 * 1024 * 1024
    assert FrameReader().max_frame_size == DEFAULT_MAX_FRAME


def test_reader_yields_frames_split_at_every_byte_boundary() -> None:
    frames = [b'{"id":1}', b"", b"\xff" * 300, b"tail"]
    stream = b"".join(pack(f) for f in frames)
    reader = FrameReader()
    got: list[bytes | Oversized] = []
    for byte in range(len(stream)):
        got.extend(reader.feed(stream[byte:byte + 1]))
    assert got == frames
    assert reader.pending == 0


def test_reader_yields_many_frames_from_one_chunk() -> None:
    frames = [str(i).encode() * (i + 1) for i in range(50)]
    reader = FrameReader()
    assert list(reader.feed(b"".join(pack(f) for f in frames))) == frames


def test_partial_frame_is_pending_until_complete() -> None:
    reader = FrameReader()
    data = pack(b"hello world")
    assert list(reader.feed(data[:7])) == []
    assert reader.pending == 7
    assert list(reader.feed(data[7:])) == [b"hello world"]
    assert reader.pending == 0


def test_oversized_frame_is_skipped_and_stream_stays_in_sync() -> None:
    reader = FrameReader(max_frame_size=10)
    big = pack(b"y" * 11)
    assert list(reader.feed(big + pack(b"ok"))) == [Oversized(11), b"ok"]
    # Exactly the limit is accepted.
    assert list(reader.feed(pack(b"z" * 10))) == [b"z" * 10]


def test_oversized_frame_skipped_across_chunks_without_buffering_it() -> None:
    reader = FrameReader(max_frame_size=16)
    header = struct.pack(">I", 1_000_000)
    got = list(reader.feed(header + b"a" * 100))
    assert got == [Oversized(1_000_000)]
    # The skipped bytes are not kept in memory.
    assert len(reader._buffer) == 0
    remaining = 1_000_000 - 100
    assert reader.pending == remaining
    got = list(reader.feed(b"a" * (remaining - 1)))
    assert got == [] and reader.pending == 1
    assert list(reader.feed(b"a" + pack(b"next"))) == [b"next"]
    assert reader.pending == 0


def test_huge_length_header_does_not_allocate() -> None:
    reader = FrameReader(max_frame_size=1024)
    got = list(reader.feed(b"\xff\xff\xff\xff"))
    assert got == [Oversized(0xFFFFFFFF)]
    assert reader.pending == 0xFFFFFFFF


def test_write_all_and_read_frames_over_a_pipe() -> None:
    read_fd, write_fd = os.pipe()
    try:
        frames = [b"a" * 5, b"b" * 100_000]
        # Larger than a pipe buffer would hold at once; write from a thread.
        import threading

        writer = threading.Thread(target=lambda: (write_all(write_fd, b"".join(pack(f) for f in frames)),
                                                  os.close(write_fd)))
        writer.start()
        assert list(read_frames(read_fd)) == frames
        writer.join()
    finally:
        os.close(read_fd)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65_535, 65_536, 16_777_216])
def test_header_encodes_length_exactly(size: int) -> None:
    header = struct.pack(">I", size)
    reader = FrameReader(max_frame_size=size)
    # A header alone is a complete frame only when the length is zero.
    assert list(reader.feed(header)) == ([] if size else [b""])
    assert reader.pending == (4 if size else 0)
    if size <= 65_536:
        assert pack(b"q" * size)[:4] == header
