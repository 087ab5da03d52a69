"""Does `dspex top` slow the pool down? `python benchmarks/bench_top.py`

Spawns ten `dspex serve` workers and measures the ping round trip p50 of one of them with
no inspector, then with `dspex top` watching all ten at its default refresh (1 s) in a real
terminal (a pty, so it runs its live screen, not the one-off snapshot), in alternating rounds
so drift on the machine hits both sides alike. The target: within 1.10x of no inspector.
Writes the "top" section of docs/benchmarks.md (other sections are kept). Exit status 0 when
the target is met, 1 when missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import pty
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.wire.client import WorkerClient, dspex_serve_argv  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- top-bench:start (written by benchmarks/bench_top.py) -->"
END_MARK = "<!-- top-bench:end -->"
TARGET_RATIO = 1.10
WORKERS = 10


def ping_p50(worker: WorkerClient, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        worker.request("ping")
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def start_top(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """`dspex top` on a pty of 200x50, its screen output read and thrown away."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "dspex_cli", "top"], stdin=follower, stdout=follower,
                            stderr=subprocess.DEVNULL, env=env, cwd=str(ROOT), start_new_session=True)
    os.close(follower)
    return proc, leader


def drain(fd: int) -> int:
    read = 0
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return read
        if not chunk:
            return read
        read += len(chunk)


def run(rounds: int, pings: int) -> dict[str, object]:
    runtime = tempfile.mkdtemp(prefix="dxt")
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime, LITELLM_LOCAL_MODEL_COST_MAP="True", TERM="xterm",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    workers = [WorkerClient(dspex_serve_argv("--mode", "pool-worker", "--worker-id", f"bench-{i}"), env=env,
                            stderr=subprocess.DEVNULL) for i in range(WORKERS)]
    try:
        for worker in workers:
            worker.request("ping")
        measured = workers[0]
        time.sleep(3)  # the background DSPy import of every worker is done
        ping_p50(measured, pings)  # warm-up
        without: list[float] = []
        with_top: list[float] = []
        screen_bytes = 0
        for _ in range(rounds):
            without.append(ping_p50(measured, pings))
            top, leader = start_top(env)
            time.sleep(2.5)  # started, found all ten, refreshing
            screen_bytes += drain(leader)
            with_top.append(ping_p50(measured, pings))
            screen_bytes += drain(leader)
            os.write(leader, b"q")
            top.wait(10)
            os.close(leader)
        return {"without": without, "with": with_top, "screen_bytes": screen_bytes,
                "p50_without": statistics.median(without), "p50_with": statistics.median(with_top)}
    finally:
        for worker in workers:
            worker.close()


def write_section(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{START_MARK}\n{text.rstrip()}\n{END_MARK}\n"
    if START_MARK in doc and END_MARK in doc:
        head, rest = doc.split(START_MARK, 1)
        doc = head + block + rest.split(END_MARK, 1)[1].lstrip("\n")
    else:
        doc = doc.rstrip("\n") + "\n\n" + block
    DOC.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pings", type=int, default=6000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    options = parser.parse_args()
    result = run(options.rounds, options.pings)
    ratio = result["p50_with"] / result["p50_without"]  # type: ignore[operator]
    met = ratio <= TARGET_RATIO
    rows = "\n".join(f"| {i + 1} | {a:.1f} | {b:.1f} |" for i, (a, b) in
                     enumerate(zip(result["without"], result["with"])))  # type: ignore[arg-type]
    text = f"""## top: ping round trip while `dspex top` watches ten workers

`python benchmarks/bench_top.py` ({dt.date.today()}, {platform.machine()}, {os.cpu_count()} cores, Python
{platform.python_version()}): ten `dspex serve` workers; the ping round trip of one of them,
{options.pings} pings per round, with no inspector and with `dspex top` on a 200x50 pty at its
default 1 s refresh (it asks every worker for `status` and `inflight` each second), in alternating rounds.

| round | p50 without (µs) | p50 with `dspex top` (µs) |
|---|---|---|
{rows}

Median of rounds: **{result['p50_without']:.1f} µs** without, **{result['p50_with']:.1f} µs** with:
ratio **{ratio:.3f}** (target ≤ {TARGET_RATIO}: {'met' if met else 'MISSED'}).
"""
    print(text)
    if not options.no_write:
        write_section(text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
