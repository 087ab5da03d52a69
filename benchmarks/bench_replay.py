"""Replay speed: frames per second of an in-process replay of a 10,000-frame transcript.

The transcript is recorded first by the real recorder, from an engine driven with a mix
of what a busy pool sends (pings, stats, session data, program listings, errors, a few
LM-backed executions against the offline mock LM over ten sessions; per 100 requests: 45
pings, 10 get_stats, 10 update_session_data, 10 get_session_data, 10 list_programs,
5 get_program_info, 5 list_sessions, 4 error replies, one unknown command, and one
execute_program per 500), up to 8 requests in flight at a time. Then it is replayed in-process, cassette and comparison included.

    python benchmarks/bench_replay.py [--frames 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bridge import Engine, EngineConfig  # noqa: E402
from bridge.record.recorder import start_recording  # noqa: E402
from bridge.replay import replay_transcript  # noqa: E402
from bridge.record.reader import summarize  # noqa: E402

SESSIONS = [f"session_{n}" for n in range(10)]
OBSERVERS = ("get_stats", "list_sessions")


def request_mix(count: int) -> list[dict]:
    """`count` requests: set-up per session, then a repeating mix of cheap and LM commands."""
    requests: list[dict] = [{"command": "configure_lm", "args": {"model": "mock"}}]
    for session in SESSIONS:
        requests.append({"command": "create_program", "args": {
            "id": "classify", "session_id": session, "signature": "text -> label, score: float"}})
    cycle = 0
    while len(requests) < count:
        session = SESSIONS[cycle % len(SESSIONS)]
        step = cycle % 20
        if step < 9:
            requests.append({"command": "ping", "args": {}})
        elif step < 11:
            requests.append({"command": "get_stats", "args": {}})
        elif step < 13:
            requests.append({"command": "update_session_data", "args": {
                "session_id": session, "key": f"k{cycle % 7}", "value": {"n": cycle}}})
        elif step < 15:
            requests.append({"command": "get_session_data", "args": {"session_id": session, "key": "k1"}})
        elif step < 17:
            requests.append({"command": "list_programs", "args": {"session_id": session}})
        elif step < 18:
            requests.append({"command": "get_program_info", "args": {"session_id": session, "program_id": "classify"}})
        elif step < 19:
            requests.append({"command": "list_sessions", "args": {}})
        elif cycle % 500 == 19:
            requests.append({"command": "execute_program", "args": {
                "session_id": session, "program_id": "classify", "inputs": {"text": f"ticket {cycle}"}}})
        elif cycle % 100 == 39:
            requests.append({"command": "no_such_command", "args": {}})
        else:
            requests.append({"command": "delete_program", "args": {"session_id": session, "program_id": "missing"}})
        cycle += 1
    return requests[:count]


def record(path: Path, frames: int, in_flight: int = 8) -> None:
    """Drives a recording engine with frames/2 requests, `in_flight` at a time."""
    engine = Engine(EngineConfig(worker_id="bench-worker"))
    close = start_recording(engine, str(path))
    slots = threading.Semaphore(in_flight)
    done = threading.Event()
    remaining = [frames // 2]
    lock = threading.Lock()

    def on_reply(_payload: bytes) -> None:
        slots.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    for index, request in enumerate(request_mix(frames // 2)):
        if request["command"] in OBSERVERS:
            # Like a careful client, read worker-wide counters only when nothing is in
            # flight; otherwise what they show depends on thread timing, run to run.
            for _ in range(in_flight):
                slots.acquire()
            for _ in range(in_flight):
                slots.release()
        slots.acquire()
        frame = {"id": index + 1, **request}
        engine.submit_frame(orjson.dumps(frame), on_reply)
    done.wait(120)
    engine.wait_idle(10)
    close()
    engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.jsonl"
        record(path, options.frames)
        summary = summarize(path)
        frames = summary.frames_in + summary.frames_out
        print(f"transcript: {frames} frames ({summary.frames_in} requests), {summary.lm_calls} LM calls, "
              f"{path.stat().st_size / 1e6:.1f} MB")
        replay_transcript(str(path))  # warm-up: DSPy import and first program builds
        rates = []
        cpu_rates = []
        for _ in range(options.runs):
            cpu = time.process_time()
            result = replay_transcript(str(path))
            cpu = time.process_time() - cpu
            if not result.ok:
                print(f"replay found differences: {result.mismatches[:3]} {result.error}")
                return 1
            rates.append(result.frames / result.duration_s)
            cpu_rates.append(result.frames / cpu)
        print(f"in-process replay: median {statistics.median(rates):,.0f} frames/s wall clock "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {options.runs} runs)")
        print(f"                   median {statistics.median(cpu_rates):,.0f} frames per CPU second "
              f"(what the figure would be on an otherwise idle core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
