"""The transcript writer on its own: the pipe records, when lines are written, what is scrubbed."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson
import pytest

from bridge.record import writer as recording
from bridge.wire.framing import FrameReader, pack
from bridge.record.records import RECORD as _RECORD
from bridge.record.scrubbing import BatchFormatter
from bridge.record.writer import write_transcript
from bridge.record.transcript import EndEntry, FrameEntry, TranscriptWriter
from bridge.record.reader import read_transcript


def record(code: bytes, offset_ms: float, body: bytes) -> bytes:
    return _RECORD.pack(code, offset_ms, len(body)) + body


def ping(rid: int) -> bytes:
    return orjson.dumps({"id": rid, "command": "ping", "args": {}})


def reply(rid: int) -> bytes:
    return orjson.dumps({"id": rid, "success": True, "result": {"status": "ok"}})


def new_transcript(tmp_path: Path) -> Path:
    path = tmp_path / "t.jsonl"
    TranscriptWriter(path, {"mode": "test"}).detach()
    return path


class WriterThread:
    """write_transcript on a thread, fed through a real pipe like the writer process."""

    def __init__(self, path: Path) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.thread = threading.Thread(target=write_transcript, args=(str(path), self.read_fd), daemon=True)
        self.thread.start()

    def send(self, data: bytes) -> None:
        os.write(self.write_fd, data)

    def close(self) -> None:
        os.close(self.write_fd)
        self.thread.join(10)
        assert not self.thread.is_alive()
        os.close(self.read_fd)


def frames_in(path: Path) -> list[tuple[str, int]]:
    return [(entry.direction, entry.frame["id"]) for entry in read_transcript(path) if isinstance(entry, FrameEntry)]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_stream_records_are_split_into_frames_across_reads(tmp_path: Path) -> None:
    path = new_transcript(tmp_path)
    writer = WriterThread(path)
    stream = b"".join(pack(ping(rid)) for rid in range(1, 4))
    # The worker's read ended inside the third frame; the next read brought the rest.
    writer.send(record(b"I", 1.0, stream[:-5]) + record(b"I", 2.0, stream[-5:]))
    writer.send(record(b"o", 3.0, reply(1)) + record(b"O", 4.0, pack(reply(2)) + pack(reply(3))))
    writer.send(record(b"e", 5.0, b'{"ms": 5.0}'))
    writer.close()
    assert frames_in(path) == [("in", 1), ("in", 2), ("in", 3), ("out", 1), ("out", 2), ("out", 3)]
    entries = list(read_transcript(path))
    assert [e.offset_ms for e in entries[:3]] == [1.0, 1.0, 2.0]  # a frame is timed by the read that completed it
    assert read_transcript(path).header["mode"] == "test"


def test_lines_follow_once_the_worker_pauses_without_closing(tmp_path: Path) -> None:
    path = new_transcript(tmp_path)
    writer = WriterThread(path)
    writer.send(record(b"i", 1.0, ping(7)) + record(b"o", 1.5, reply(7)))
    wait_for(lambda: frames_in(path) == [("in", 7), ("out", 7)], timeout=5)
    writer.close()


def test_a_busy_worker_still_gets_lines_once_the_backlog_is_full(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording, "BACKLOG_LIMIT", 4096)
    monkeypatch.setattr(recording, "QUIET_SECONDS", 30.0)  # never quiet during this test
    path = new_transcript(tmp_path)
    writer = WriterThread(path)
    rid = 0
    deadline = time.monotonic() + 10
    # A stream with no pause: lines must still appear while it goes on.
    while not frames_in(path):
        assert time.monotonic() < deadline, "nothing written while the backlog was full"
        rid += 1
        writer.send(record(b"i", float(rid), ping(rid)))
        time.sleep(0.001)
    writer.close()
    assert [r for _, r in frames_in(path)] == list(range(1, rid + 1))


def test_a_record_cut_off_by_a_dying_worker_loses_only_itself(tmp_path: Path) -> None:
    path = new_transcript(tmp_path)
    writer = WriterThread(path)
    writer.send(record(b"i", 1.0, ping(1)) + record(b"o", 2.0, reply(1)) + record(b"i", 3.0, ping(2))[:-4])
    writer.close()
    assert frames_in(path) == [("in", 1), ("out", 1)]
    *_, end = read_transcript(path)
    assert isinstance(end, EndEntry) and not end.complete  # no clean close: marked incomplete
    assert end.record["reason"] == "the worker ended without closing the recording"


def test_unknown_records_are_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    path = new_transcript(tmp_path)
    writer = WriterThread(path)
    writer.send(record(b"?", 1.0, b"junk") + record(b"i", 2.0, ping(3)))
    writer.close()
    assert frames_in(path) == [("in", 3)]


class Collect:
    frames = 0
    lm_calls = 0

    def encode_entry(self, entry: dict) -> bytes:
        return orjson.dumps(entry) + b"\n"


def formatted(formatter: BatchFormatter, payload: bytes) -> dict:
    return orjson.loads(formatter.format([("in", 1.0, [payload])]))["frame"]


def test_frames_that_fold_alike_are_still_checked_for_registered_secrets() -> None:
    formatter = BatchFormatter(Collect())  # type: ignore[arg-type]
    # Digits fold to 0, so these two frames look alike to the marker memo...
    assert formatted(formatter, b'{"id":1,"note":"hunter00xyz"}')["note"] == "hunter00xyz"
    formatter.set_secrets(["hunter42xyz"])
    # ...but a registered secret is searched in the raw bytes, every time.
    assert formatted(formatter, b'{"id":2,"note":"hunter42xyz"}')["note"] == "[REDACTED]"


def test_the_memo_never_hides_a_secret_key_name_or_key_shape() -> None:
    formatter = BatchFormatter(Collect())  # type: ignore[arg-type]
    assert formatted(formatter, b'{"id":1,"args":{"name":"x"}}')["args"] == {"name": "x"}
    assert formatted(formatter, b'{"id":2,"args":{"API_KEY":"x"}}')["args"] == {"API_KEY": "[REDACTED]"}
    assert formatted(formatter, b'{"id":3,"args":{"name":"sk-abcdefghijklmnop"}}')["args"] == {"name": "[REDACTED]"}
    # A raw line break cannot stay in a JSON Lines line: the frame is re-encoded.
    assert formatter.format([("in", 1.0, [b'{"id":4,\n"args":{}}'])]).count(b"\n") == 1


def test_frame_reader_keeps_frames_when_the_callers_buffer_is_reused() -> None:
    reader = FrameReader()
    buffer = bytearray(pack(b"first") + pack(b"second")[:6])
    frames = reader.feed(memoryview(buffer))
    buffer[:] = b"\x00" * len(buffer)  # the server reuses its read buffer
    assert frames == [b"first"]
    assert reader.feed(pack(b"second")[6:]) == [b"second"]
    assert reader.pending == 0


def test_without_a_writer_process_the_recorder_writes_the_same_lines(tmp_path: Path) -> None:
    from bridge import Engine, EngineConfig
    from bridge.record.recorder import Recorder

    engine = Engine(EngineConfig(worker_id="fallback"))
    recorder = Recorder(engine, str(tmp_path / "t.jsonl"), subprocess_writer=False)
    try:
        assert engine.call("ping", request_id=5)["success"]
        assert engine.call("configure_lm", {"model": "mock/x", "api_key": "sk-fallback-0123456789"},
                           request_id=6)["success"]
    finally:
        recorder.close()
        engine.close()
    assert recorder._process is None
    text = (tmp_path / "t.jsonl").read_text()
    assert "sk-fallback-0123456789" not in text
    assert frames_in(tmp_path / "t.jsonl") == [("in", 5), ("out", 5), ("in", 6), ("out", 6)]
    assert list(read_transcript(tmp_path / "t.jsonl"))[-1].__class__.__name__ == "EndEntry"


def test_a_stopped_writer_never_stops_serving_recording_ends_marked_incomplete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from bridge import Engine, EngineConfig
    from bridge.record.recorder import Recorder

    monkeypatch.setattr(Recorder, "MAX_PENDING", 64)
    monkeypatch.setattr(Recorder, "MAX_UNSENT_BYTES", 256 << 10)
    engine = Engine(EngineConfig(worker_id="flooded"))
    recorder = Recorder(engine, str(tmp_path / "t.jsonl"))
    wait_for(lambda: recorder._process is not None)
    writer_process = recorder._process
    os.kill(writer_process.pid, signal.SIGSTOP)  # the writer reads nothing from now on
    calls = 30_000  # far more than the 1 MiB pipe, the byte bound and the 64-entry queue hold
    done = threading.Event()

    def flood() -> None:
        for rid in range(calls):
            engine.call("ping", request_id=rid)
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(60), "serving waited for a stopped writer"
    assert recorder.stopped_reason and "fell behind" in recorder.stopped_reason
    assert recorder._tap not in engine.frame_taps and not engine.listeners  # taps are off
    assert len(recorder._pending) <= 64 + 1 and recorder._unsent_bytes <= (256 << 10) + (1 << 20)
    os.kill(writer_process.pid, signal.SIGCONT)
    recorder.close()
    engine.close()
    writer_process.wait(15)
    ids = [rid for direction, rid in frames_in(tmp_path / "t.jsonl") if direction == "in"]
    assert 0 < len(ids) < calls and ids == list(range(len(ids)))  # an unbroken start, then nothing
    *_, end = read_transcript(tmp_path / "t.jsonl")
    assert isinstance(end, EndEntry) and end.complete is False
    assert "fell behind" in end.record["reason"] and end.record["recorded_until_ms"] > 0
    assert end.record["frames"] >= len(ids)


def test_closing_never_kills_a_writer_that_is_still_finishing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from bridge import Engine, EngineConfig
    from bridge.record.recorder import Recorder
    from bridge.record.transcript import EndEntry

    monkeypatch.setattr(Recorder, "CLOSE_WAIT_SECONDS", 0.3)
    engine = Engine(EngineConfig(worker_id="slow-writer"))
    recorder = Recorder(engine, str(tmp_path / "t.jsonl"))
    wait_for(lambda: recorder._process is not None)
    writer_process = recorder._process
    os.kill(writer_process.pid, signal.SIGSTOP)
    for rid in range(50):
        engine.call("ping", request_id=rid)
    started = time.monotonic()
    recorder.close()  # the writer cannot finish while stopped: close gives up waiting
    assert time.monotonic() - started < 5
    engine.close()
    assert writer_process.poll() is None  # ...but left it alive
    os.kill(writer_process.pid, signal.SIGCONT)
    writer_process.wait(10)
    entries = list(read_transcript(tmp_path / "t.jsonl"))
    assert isinstance(entries[-1], EndEntry)
    assert [rid for direction, rid in frames_in(tmp_path / "t.jsonl") if direction == "in"] == list(range(50))


def test_a_malformed_control_record_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = new_transcript(tmp_path)
    writer = WriterThread(path)
    writer.send(record(b"l", 1.0, b"{not json") + record(b"s", 1.5, b"[") + record(b"i", 2.0, ping(9)))
    writer.close()
    assert frames_in(path) == [("in", 9)]


def test_the_writer_process_reports_a_failing_disk_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from fixtures import worker_env

    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full to stand for a full disk")
    completed = subprocess.run([sys.executable, "-m", "bridge.record.writer", str(full)],
                               input=record(b"i", 1.0, ping(1)) * 20_000, capture_output=True,
                               env=worker_env(), timeout=60)
    assert completed.returncode == 1
    lines = completed.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "writing stopped" in lines[0] and "No space left" in lines[0], lines
