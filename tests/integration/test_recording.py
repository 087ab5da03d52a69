"""Recording real `dspex serve` workers: what lands in the file, and what never does."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from bridge import Engine, EngineConfig
from bridge.wire.framing import pack
from bridge.record.scrubbing import scrub_payload
from bridge.record.recorder import start_recording
from bridge.record.transcript import EndEntry, FrameEntry, LMCallEntry
from bridge.record.reader import read_transcript
from fixtures import worker_env

SECRETS = ("sk-test-secret-123456", "hunter2-password-value", "tok-nested-9876", "Bearer abcdefghijklmnop",
           "plain-secret-in-raw-frame")


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_recorded_worker_writes_frames_and_cassette_with_secrets_scrubbed(spawn_worker, lm_args, tmp_path: Path,
                                                                          openai_server) -> None:
    path = tmp_path / "session.jsonl"
    worker = spawn_worker("--record", str(path), "--worker-id", "rec-1", "--no-control")
    assert worker.request("ping", {}, request_id=1)["success"]
    assert worker.request("configure_lm", lm_args, request_id=2)["success"]
    # Secrets in places no schema names: nested, under secret names, in a header-like key.
    secret_args = {"session_id": "s1", "auth": {"password": SECRETS[1], "nested": {"auth_token": SECRETS[2]},
                                               "Authorization": SECRETS[3], "note": "visible"}}
    assert worker.request("ping", secret_args, request_id=3)["success"]
    # A frame that is not JSON still has its secret scrubbed from the raw text.
    worker.send_raw(pack(b'{"id": 4, "command": "configure_lm", "args": {"api_key": "%s"' % SECRETS[4].encode()))
    assert worker.expect(4).result(10)["error_type"] == "invalid_json"
    assert worker.request("create_program", {"id": "qa", "signature": "question -> answer"}, request_id=5)["success"]
    reply = worker.request("execute_program", {"program_id": "qa", "inputs": {"question": "Why?"}},
                           request_id=6, timeout=60)
    assert reply["success"], reply
    assert worker.close() == 0

    data = path.read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in data, secret
    assert b"[REDACTED]" in data and b"visible" in data

    transcript = read_transcript(path)
    header = transcript.header
    assert header["worker_id"] == "rec-1" and header["mode"] == "standalone"
    assert "--worker-id" in header["argv"] and header["versions"]["dspex"]
    entries = list(transcript)
    frames = [e for e in entries if isinstance(e, FrameEntry)]
    assert [(f.direction, (f.frame or {}).get("id")) for f in frames if f.decoded][:2] == [("in", 1), ("out", 1)]
    offsets = [f.offset_ms for f in frames]
    assert offsets == sorted(offsets)
    raw = [f for f in frames if not f.decoded]
    assert len(raw) == 1 and b"[REDACTED]" in raw[0].raw
    calls = [e for e in entries if isinstance(e, LMCallEntry)]
    assert len(calls) == 1
    call = calls[0].record
    assert call["request_id"] == 6 and len(call["key"]) == 32
    assert call["request"]["model"] == "openai/local-model"
    assert "[[ ## answer ## ]]" in call["response"]["outputs"][0]
    assert call["usage"]["total_tokens"] > 0
    assert entries[-1].record["frames"] == len(frames)


def test_record_env_directory_gets_one_file_per_worker(spawn_worker, tmp_path: Path) -> None:
    directory = tmp_path / "recs"
    directory.mkdir()
    env = worker_env(DSPEX_RECORD=str(directory), DSPEX_RECORD_IGNORE="result.outputs.reasoning")
    first = spawn_worker("--worker-id", "alpha", "--no-control", env=env)
    second = spawn_worker("--worker-id", "beta", "--no-control", env=env)
    for client in (first, second):
        assert client.request("ping", {}, request_id=7)["success"]
        assert client.close() == 0
    names = sorted(p.name for p in directory.iterdir())
    assert len(names) == 2 and names[0].startswith("alpha-") and names[1].startswith("beta-")
    for name in names:
        transcript = read_transcript(directory / name)
        assert transcript.ignore == ["result.outputs.reasoning"]
        assert sum(1 for _ in transcript.frames()) == 2


def test_killed_worker_leaves_a_readable_transcript(spawn_worker, tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    worker = spawn_worker("--record", str(path), "--no-control")
    for rid in range(1, 6):
        assert worker.request("ping", {}, request_id=rid)["success"]
    # Lines are flushed as written: all ten frames reach the file without any close.
    wait_for(lambda: sum(1 for _ in read_transcript(path).frames()) == 10)
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(5)
    # The writer process outlives the worker only to write what it got and an end line.
    wait_for(lambda: isinstance(list(read_transcript(path))[-1], EndEntry))
    *frames, end = read_transcript(path)
    assert len(frames) == 10 and all(isinstance(e, FrameEntry) for e in frames)
    assert end.complete is False and end.record["reason"] == "the worker ended without closing the recording"


def test_unwritable_record_path_logs_and_keeps_serving(spawn_worker, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    worker = spawn_worker("--record", str(blocker / "sub" / "t.jsonl"), "--no-control")
    assert worker.request("ping", {}, request_id=1)["result"]["status"] == "ok"
    worker.close()
    assert "cannot record" in worker.stderr_path.read_text()


def test_in_process_calls_are_recorded_as_frames(tmp_path: Path) -> None:
    engine = Engine(EngineConfig(worker_id="inproc"))
    close = start_recording(engine, str(tmp_path / "t.jsonl"), ignore=["result.uptime"])
    assert engine.call("ping", request_id=41)["success"]
    close()
    close()  # idempotent
    engine.close()
    transcript = read_transcript(tmp_path / "t.jsonl")
    assert transcript.ignore == ["result.uptime"]
    assert [(f.direction, f.frame["id"]) for f in transcript.frames()] == [("in", 41), ("out", 41)]
    assert engine.frame_taps == [] and engine.listeners == []


def test_scrub_payload_handles_json_text_and_binary() -> None:
    frame, raw = scrub_payload(b'{"id": 1, "args": {"api_key": "k-123456789", "my_secret": "s", "max_tokens": 5}}')
    # Exact names only: "my_secret" is no name a secret is given under, so it is kept.
    assert raw is None and frame["args"] == {"api_key": "[REDACTED]", "my_secret": "s", "max_tokens": 5}
    frame, raw = scrub_payload(b'{"id": 1, "args": {"Password": "pw-hidden", "x": 1')
    assert frame is None and b"pw-hidden" not in raw and b'"Password": "[REDACTED]"' in raw
    frame, raw = scrub_payload(b'\xff{"token": "t0k3n-value"}')
    assert raw.startswith(b"\xff") and b"t0k3n-value" not in raw
    # A key-shaped value under an innocent name is caught by its shape.
    assert scrub_payload(b'{"a": "use sk-abcdefghijklmnop here"}')[0]["a"] == "use [REDACTED] here"
