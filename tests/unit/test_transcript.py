"""The transcript format: writing, streaming reads, and every way a file can be bad."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge.record.transcript import (FORMAT_NAME, FORMAT_VERSION, EndEntry, LMCallEntry, TranscriptError,
                                      TranscriptWriter, make_header)
from bridge.record.reader import read_transcript, summarize


def write_sample(path: Path) -> None:
    header = make_header(mode="pool-worker", worker_id="w-1", argv=["--mode", "pool-worker"], ignore=["result.x"])
    with TranscriptWriter(path, header) as writer:
        writer.frame("in", 0.5, {"id": 1, "command": "ping", "args": {"session_id": "s1"}})
        writer.frame("out", 0.9, {"id": 1, "success": True, "result": {"status": "ok"}})
        writer.frame("in", 1.0, None, raw=b'{"id": 2, "command": ')
        writer.frame("in", 1.1, None, raw=b"\xff\xfe not utf-8")
        writer.lm_call({"key": "abc", "request_id": 1, "request": {"model": "m", "messages": [], "params": {}},
                        "response": {"outputs": ["hi"], "usage": {}}})


def test_round_trip_keeps_header_frames_raw_bytes_and_cassette(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_sample(path)
    transcript = read_transcript(path)
    assert transcript.header["format"] == FORMAT_NAME and transcript.header["version"] == FORMAT_VERSION
    assert transcript.header["mode"] == "pool-worker" and transcript.header["worker_id"] == "w-1"
    assert set(transcript.header["versions"]) >= {"dspex", "dspy", "python"}
    assert transcript.ignore == ["result.x"]
    entries = list(transcript)
    kinds = [type(e).__name__ for e in entries]
    assert kinds == ["FrameEntry"] * 4 + ["LMCallEntry", "EndEntry"]
    first, reply, broken, binary = entries[:4]
    assert first.direction == "in" and first.frame["command"] == "ping" and first.offset_ms == 0.5
    assert reply.direction == "out" and reply.frame["result"] == {"status": "ok"}
    assert broken.raw == b'{"id": 2, "command": ' and broken.payload() == broken.raw
    assert binary.raw == b"\xff\xfe not utf-8"
    assert isinstance(entries[4], LMCallEntry) and entries[4].key == "abc"
    assert isinstance(entries[5], EndEntry) and entries[5].record["frames"] == 4
    assert [e.line for e in entries] == [2, 3, 4, 5, 6, 7]
    summary = summarize(path)
    assert (summary.frames_in, summary.frames_out, summary.lm_calls) == (3, 1, 1)
    assert summary.complete and summary.sessions == {"s1"}


def test_kind_filters_and_replay_frames_cut_exact_request_bytes(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_sample(path)
    transcript = read_transcript(path)
    assert [e.key for e in transcript.lm_calls()] == ["abc"]
    assert len(list(transcript.frames())) == 4
    rows = list(transcript.replay_frames())
    direction, frame, raw, line, frame_bytes = rows[0]
    assert (direction, line, raw) == ("in", 2, None)
    # The bytes cut from the line are the frame exactly as encoded.
    assert frame_bytes == orjson.dumps(frame)
    assert orjson.loads(frame_bytes) == {"id": 1, "command": "ping", "args": {"session_id": "s1"}}
    assert rows[2][2] == b'{"id": 2, "command": ' and rows[3][2] == b"\xff\xfe not utf-8"


def test_each_line_is_on_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TranscriptWriter(path, make_header(mode="standalone", worker_id=None, argv=[]))
    writer.frame("in", 1.0, {"id": 1, "command": "ping"})
    # Read with a separate handle while the writer is still open: the line is there.
    assert [e.frame["id"] for e in read_transcript(path).frames()] == [1]
    writer.close()
    writer.close()  # idempotent


def test_torn_last_line_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_sample(path)
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]) + lines[3][:15])  # killed mid-write of line 4
    transcript = read_transcript(path)
    entries = list(transcript)
    assert len(entries) == 2 and transcript.torn
    assert len(list(read_transcript(path).replay_frames())) == 2


@pytest.mark.parametrize("content, line, fragment", [
    (None, None, "no such file"),
    (b"", 1, "empty file"),
    (b"hello\n", 1, "not JSON"),
    (b'{"format": "other", "version": 1}\n', 1, "not a dspex transcript"),
    (b'{"format": "dspex-transcript", "version": 99}\n', 1, "format version 99 is newer"),
    (b'{"format": "dspex-transcript", "version": "1"}\n', 1, "no integer format version"),
    (b'{"format": "dspex-transcript", "version": 1, "ignore": "x"}\n', 1, "'ignore' must be a list"),
])
def test_bad_files_raise_transcript_error_naming_file_and_line(tmp_path: Path, content: bytes | None,
                                                               line: int | None, fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TranscriptError) as info:
        list(read_transcript(path))
    assert info.value.line == line and fragment in info.value.message
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad_line, fragment", [
    (b'{"type": "frame", "dir": "in", "ms": 1, "frame": {"id": 1}', "corrupt line"),
    (b'[1, 2]', "not an object"),
    (b'{"type": "frame", "dir": "sideways", "ms": 1, "frame": {}}', "no valid 'dir'"),
    (b'{"type": "frame", "dir": "in", "frame": {}}', "numeric 'ms'"),
    (b'{"type": "frame", "dir": "in", "ms": 1}', "neither 'frame' nor"),
    (b'{"type": "frame", "dir": "in", "ms": 1, "raw_b64": "@@@"}', "not valid base64"),
    (b'{"type": "lm_call", "key": 5}', "'key' must be a string"),
    (b'{"type": "mystery"}', "unknown entry type"),
])
def test_bad_middle_line_names_its_line(tmp_path: Path, bad_line: bytes, fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    write_sample(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + bad_line + b"\n" + b"".join(lines[2:]))
    with pytest.raises(TranscriptError) as info:
        list(read_transcript(path))
    assert info.value.line == 3 and fragment in info.value.message
    with pytest.raises(TranscriptError):
        list(read_transcript(path).replay_frames())


def test_directory_is_not_a_transcript(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match="is a directory"):
        read_transcript(tmp_path)


def test_writer_rejects_unknown_direction(tmp_path: Path) -> None:
    with TranscriptWriter(tmp_path / "t.jsonl", make_header(mode="standalone", worker_id=None, argv=[])) as writer:
        with pytest.raises(ValueError):
            writer.frame("sideways", 0.0, {})
