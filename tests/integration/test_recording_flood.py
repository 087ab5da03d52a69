"""A real BEAM floods a recording worker with pipelined pings: every frame must be recorded.

Runs the recording benchmark's BEAM side (benchmarks/port_bench.exs --record-overhead) at
a small size. What is asserted is correctness, never speed: the transcript of the
recorded worker holds every ping the BEAM sent and every reply, in a complete file.
"""

from __future__ import annotations

import pytest

import json
import subprocess
import sys
from pathlib import Path

from fixtures import ROOT, worker_env
from bridge.record.transcript import FrameEntry
from bridge.record.reader import read_transcript
from test_elixir_client import _elixir


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_every_pipelined_frame_from_a_beam_is_recorded(tmp_path: Path) -> None:
    elixir = _elixir()
    record_dir = tmp_path / "transcripts"
    out = tmp_path / "overhead.json"
    completed = subprocess.run(
        [elixir, str(ROOT / "benchmarks" / "port_bench.exs"), "--python", sys.executable,
         "--record-overhead", str(record_dir), "--pairs", "2", "--pipelined", "3000", "--warm-up", "500",
         "--out", str(out), "--root", str(ROOT)],
        cwd=str(ROOT), env=worker_env(DSPEX_LOG_LEVEL="warning"), capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-4000:]
    pairs = json.loads(out.read_text())["pairs"]
    assert len(pairs) == 2 and all(pair["recorded"]["writer_cpu_us"] > 0 for pair in pairs)
    assert all(pair["plain"]["writer_cpu_us"] == 0 for pair in pairs)  # the plain worker has no writer
    [path] = list(record_dir.glob("*.jsonl"))
    transcript = read_transcript(path)
    entries = list(transcript)
    assert type(entries[-1]).__name__ == "EndEntry" and not transcript.torn
    frames = [entry for entry in entries if isinstance(entry, FrameEntry)]
    requests = [f.frame for f in frames if f.direction == "in"]
    replies = [f.frame for f in frames if f.direction == "out"]
    # Per run: the warm-up and the measured pings, each id from 1 up, pipelined 64 at a time.
    pings = [r["id"] for r in requests if r["command"] == "ping" and not r["args"]]
    assert pings.count(1) >= 4 and len(pings) >= 2 * (3000 + 500)
    assert len(replies) == len(requests)
    assert all(reply["success"] for reply in replies)
    # Each reply answers a request that came before it.
    pending: dict[int, int] = {}
    for frame in frames:
        rid = frame.frame["id"]
        if frame.direction == "in":
            pending[rid] = pending.get(rid, 0) + 1
        else:
            assert pending.get(rid, 0) > 0, f"reply {rid} recorded before its request"
            pending[rid] -= 1
    assert not any(pending.values())
