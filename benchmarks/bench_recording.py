"""Recording overhead on the engine benchmark's pipelined figure, through real Erlang ports.

Runs `benchmarks/port_bench.exs --record-overhead DIR`: the BEAM opens two `dspex serve`
workers as the port benchmark does, one plain and one with DSPEX_RECORD=DIR/, and keeps 64
pings in flight against each in turn, alternating which goes first, for --pairs pairs. Each
run also reports the CPU the worker (all threads) and its transcript writer process spent
per ping. Target: the recorded worker's pipelined figure at most 15% below the plain one's.
The transcript is then checked to hold every ping and every reply.

    python benchmarks/bench_recording.py [--pairs 10] [--pipelined 50000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run_port_bench import bench_env  # noqa: E402
from bridge.record.reader import summarize  # noqa: E402

TARGET_DROP = 0.15


def run_pairs(pairs: int, pipelined: int, warm_up: int, record_dir: Path | None) -> dict:
    elixir = shutil.which("elixir")
    if elixir is None:
        raise SystemExit("bench_recording: elixir is not installed (apt-get install elixir erlang-jiffy)")
    out = Path(tempfile.mkdtemp()) / "record_overhead.json"
    argv = [elixir, str(ROOT / "benchmarks" / "port_bench.exs"), "--python", sys.executable,
            "--record-overhead", str(record_dir or "none"), "--pairs", str(pairs), "--pipelined", str(pipelined),
            "--warm-up", str(warm_up), "--out", str(out), "--root", str(ROOT)]
    completed = subprocess.run(argv, cwd=str(ROOT), env=bench_env())
    if completed.returncode != 0 or not out.exists():
        raise SystemExit(f"bench_recording: port_bench.exs failed (exit {completed.returncode})")
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--pipelined", type=int, default=50_000, help="pings per measured run")
    parser.add_argument("--warm-up", type=int, default=5_000, help="pings before each measured run")
    parser.add_argument("--no-record", action="store_true",
                        help="record in neither worker: how far two plain workers' pairs differ by chance")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record_dir = None if options.no_record else Path(tmp) / "transcripts"
        raw = run_pairs(options.pairs, options.pipelined, options.warm_up, record_dir)
        summaries = [summarize(f) for f in sorted(record_dir.glob("*.jsonl"))] if record_dir else []
    pairs = raw["pairs"]
    # Every measured run also sends the warm-up pings; before them come the first ping and
    # the pings that wait for DSPy to load, after them the shutdown.
    expected = options.pairs * (options.pipelined + options.warm_up) + 3
    complete = options.no_record or (len(summaries) == 1 and summaries[0].complete and
                                     summaries[0].frames_in == summaries[0].frames_out >= expected)
    drops = [1 - p["recorded"]["rate"] / p["plain"]["rate"] for p in pairs]
    plain_rate = statistics.median(p["plain"]["rate"] for p in pairs)
    recorded_rate = statistics.median(p["recorded"]["rate"] for p in pairs)
    print(f"pipelined pings through Erlang ports, 64 in flight, {options.pipelined:,} per run, "
          f"{options.pairs} alternating pairs")
    print("pair  plain/s   recorded/s  drop   worker CPU µs/ping plain / recorded + writer   switches/ping")
    for number, (pair, drop) in enumerate(zip(pairs, drops), 1):
        plain, recorded = pair["plain"], pair["recorded"]
        print(f"{number:>4}  {plain['rate']:>8,.0f}  {recorded['rate']:>10,.0f}  {100 * drop:>4.1f}%  "
              f"{plain['worker_cpu_us']:.2f} / {recorded['worker_cpu_us']:.2f} + {recorded['writer_cpu_us']:.2f}"
              f"   {plain['worker_switches_per_ping']:.3f} / {recorded['worker_switches_per_ping']:.3f}")
    median_drop = statistics.median(drops)
    print(f"median plain {plain_rate:,.0f}/s, recorded {recorded_rate:,.0f}/s; median of the pair drops "
          f"{100 * median_drop:.1f}% (range {100 * min(drops):.1f} to {100 * max(drops):.1f}%), "
          f"target ≤ {100 * TARGET_DROP:.0f}%")
    print(f"CPU per ping (medians): plain worker "
          f"{statistics.median(p['plain']['worker_cpu_us'] for p in pairs):.2f} µs, recorded worker "
          f"{statistics.median(p['recorded']['worker_cpu_us'] for p in pairs):.2f} µs, writer process "
          f"{statistics.median(p['recorded']['writer_cpu_us'] for p in pairs):.2f} µs, of which during the run "
          f"{statistics.median(p['recorded']['writer_cpu_during_us'] for p in pairs):.2f} µs")
    print(f"transcript holds every ping and reply (at least {expected:,} each): {complete}")
    if not complete:
        return 2
    return 0 if median_drop <= TARGET_DROP else 1


if __name__ == "__main__":
    raise SystemExit(main())
