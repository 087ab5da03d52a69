"""Recording overhead: pipelined pings per second with and without `--record`.

A Python client keeps 64 pings in flight against a real `dspex serve` subprocess (the
port framing over pipes) and counts replies per second; the same run is repeated with
`--record DIR`, alternating, and the medians are compared. Recording is meant to stay
off the hot path, so the drop should be small (target: at most 15%).

    python benchmarks/bench_recording.py [--pings 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bridge.client import dspex_serve_argv  # noqa: E402
from bridge.framing import FrameReader, pack  # noqa: E402
from bridge.transcript import summarize  # noqa: E402

IN_FLIGHT = 64


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux /proc, clock ticks)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pings_per_second(extra: list[str], pings: int) -> tuple[float, float]:
    """Spawns a worker, keeps IN_FLIGHT pings outstanding until `pings` replies came back."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), DSPEX_LOG_LEVEL="warning")
    process = subprocess.Popen(dspex_serve_argv("--no-control", "--no-warm", *extra), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
    assert process.stdin is not None and process.stdout is not None
    write, read = process.stdin.fileno(), process.stdout.fileno()
    reader = FrameReader()

    def frames(first_id: int, count: int) -> bytes:
        return b"".join(pack(orjson.dumps({"id": first_id + n, "command": "ping", "args": {}})) for n in range(count))

    def receive() -> int:
        got = 0
        while got == 0:
            chunk = os.read(read, 1 << 20)
            if not chunk:
                raise RuntimeError("worker closed its output")
            got = sum(1 for _ in reader.feed(chunk))
        return got

    os.write(write, frames(0, 1))  # the worker is up and answering
    receive()
    sent = received = 0
    cpu_before = cpu_seconds(process.pid)
    started = time.perf_counter()
    batch = min(IN_FLIGHT, pings)
    os.write(write, frames(1, batch))
    sent += batch
    while received < pings:
        got = receive()
        received += got
        more = min(got, pings - sent)
        if more > 0:
            os.write(write, frames(sent + 1, more))
            sent += more
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(process.pid) - cpu_before
    process.stdin.close()
    process.wait(10)
    return pings / elapsed, cpu / pings * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    plain: list[float] = []
    recorded: list[float] = []
    plain_cpu: list[float] = []
    recorded_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(options.rounds):
            rate, cpu = pings_per_second([], options.pings)
            plain.append(rate)
            plain_cpu.append(cpu)
            rate, cpu = pings_per_second(["--record", directory + os.sep], options.pings)
            recorded.append(rate)
            recorded_cpu.append(cpu)
        files = sorted(Path(directory).glob("*.jsonl"))
        frames = [summarize(f) for f in files]
        complete = all(s.complete and s.frames_in == s.frames_out == options.pings + 1 for s in frames)
    base, rec = statistics.median(plain), statistics.median(recorded)
    print(f"pipelined pings ({IN_FLIGHT} in flight, {options.pings} per run, {options.rounds} rounds, medians)")
    print(f"  without --record: {base:,.0f} pings/s  (runs: {', '.join(f'{r:,.0f}' for r in plain)})")
    print(f"  with --record:    {rec:,.0f} pings/s  (runs: {', '.join(f'{r:,.0f}' for r in recorded)})")
    print(f"  drop: {100 * (1 - rec / base):.1f}%   every frame recorded: {complete}")
    print(f"  worker CPU per ping (median): {statistics.median(plain_cpu):.1f} µs without, "
          f"{statistics.median(recorded_cpu):.1f} µs with --record "
          f"(the transcript writer process is not counted: it runs on the other core)")
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
