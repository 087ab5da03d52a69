"""Does inspection slow a worker down? `python benchmarks/bench_inspect.py`

Spawns `dspex serve` (Python client over the port, as bridge.wire.client does it), measures the
ping round trip p50 with no inspector, then with an inspector process polling the control
socket at 10 Hz (`status`, `inflight` and `frames` each tick, as `dspex inspect` would),
in alternating rounds so drift on the machine hits both sides alike. The target: with the
poller, p50 stays within 10% of without. Writes the "Inspect" section of docs/benchmarks.md
(other sections are kept). Exit status 0 when the target is met, 1 when missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.wire.client import WorkerClient, dspex_serve_argv  # noqa: E402
from bridge.control.client import ControlClient  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- inspect-bench:start (written by benchmarks/bench_inspect.py) -->"
END_MARK = "<!-- inspect-bench:end -->"
TARGET_RATIO = 1.10


def poll(socket_path: str, hz: float) -> None:
    """The inspector: polls until stdin closes, then prints how many ticks it made."""
    client = ControlClient(socket_path)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    ticks = 0
    period = 1.0 / hz
    next_tick = time.monotonic()
    while not stop.is_set():
        client.call("status")
        client.call("inflight")
        client.call("frames", {"limit": 20})
        ticks += 1
        next_tick += period
        stop.wait(max(0.0, next_tick - time.monotonic()))
    print(ticks, flush=True)


def ping_p50(worker: WorkerClient, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        worker.request("ping")
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def run(rounds: int, pings: int, hz: float) -> dict[str, float | int | list[float]]:
    runtime = tempfile.mkdtemp(prefix="dxb")
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime, LITELLM_LOCAL_MODEL_COST_MAP="True",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    worker = WorkerClient(dspex_serve_argv("--mode", "pool-worker"), env=env, stderr=subprocess.DEVNULL)
    try:
        worker.request("ping")
        socket_path = os.path.join(runtime, "dspex", f"{worker.pid}.sock")
        deadline = time.monotonic() + 15
        while not os.path.exists(socket_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        with ControlClient(socket_path) as probe:
            # DSPy imports in the background after the first request; measure after that.
            while not probe.call("status").get("dspy_loaded") and time.monotonic() < deadline:
                time.sleep(0.05)
        ping_p50(worker, pings)  # warm-up
        without: list[float] = []
        with_poller: list[float] = []
        ticks = 0
        for _ in range(rounds):
            without.append(ping_p50(worker, pings))
            poller = subprocess.Popen([sys.executable, __file__, "--poll", socket_path, "--hz", str(hz)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            time.sleep(0.3)  # the poller has connected and is ticking
            with_poller.append(ping_p50(worker, pings))
            out, _ = poller.communicate("", timeout=10)
            ticks += int(out.strip() or 0)
        return {"without": without, "with": with_poller, "ticks": ticks,
                "p50_without": statistics.median(without), "p50_with": statistics.median(with_poller)}
    finally:
        worker.close()


def write_section(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{START_MARK}\n{text.rstrip()}\n{END_MARK}\n"
    if START_MARK in doc and END_MARK in doc:
        head, rest = doc.split(START_MARK, 1)
        tail = rest.split(END_MARK, 1)[1].lstrip("\n")
        doc = head + block + tail
    else:
        doc = doc.rstrip("\n") + "\n\n" + block
    DOC.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll", metavar="SOCKET", help=argparse.SUPPRESS)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--pings", type=int, default=8000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    options = parser.parse_args()
    if options.poll:
        poll(options.poll, options.hz)
        return 0
    result = run(options.rounds, options.pings, options.hz)
    ratio = result["p50_with"] / result["p50_without"]
    passed = ratio <= TARGET_RATIO
    seconds = options.rounds * options.pings * result["p50_with"] / 1e6
    lines = [
        "## Inspect: ping round trip while an inspector polls at 10 Hz",
        "",
        f"Command: `python benchmarks/bench_inspect.py`. Run on {dt.date.today().isoformat()}, "
        f"{os.cpu_count()}-core {platform.machine()} (Linux {platform.release()}), Python {platform.python_version()}.",
        "",
        "A Python client (`bridge.wire.client.WorkerClient`, frames over the worker's stdin/stdout) sends "
        f"pings one at a time, {options.pings} per round, in {options.rounds} rounds without and "
        f"{options.rounds} rounds with an inspector process polling the control socket at {options.hz:g} Hz "
        "(`status`, `inflight`, `frames` with 20 frames, each tick), alternating. The figure is the median "
        "of the rounds' p50s.",
        "",
        "| figure | without inspector | with inspector at 10 Hz | target | result |",
        "|---|---|---|---|---|",
        f"| ping round trip p50 | {result['p50_without']:.1f} µs | {result['p50_with']:.1f} µs | "
        f"≤ 1.10 × without | {ratio:.3f}× {'pass' if passed else '**FAIL**'} |",
        "",
        "Per round, p50 µs without: " + ", ".join(f"{x:.1f}" for x in result["without"])  # type: ignore[union-attr]
        + "; with: " + ", ".join(f"{x:.1f}" for x in result["with"])  # type: ignore[union-attr]
        + f". The inspector made {result['ticks']} polls (3 requests each) in about {seconds:.1f} s of pinging.",
    ]
    text = "\n".join(lines)
    print(text)
    if not options.no_write:
        write_section(text)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
