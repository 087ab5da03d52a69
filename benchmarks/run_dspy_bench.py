"""The DSPy jobs benchmark: `python benchmarks/run_dspy_bench.py [--runs 3]`.

The same `evaluate_program` (500 examples, 16 threads) and `bootstrap_few_shot` compile
(50 examples) run natively in one Python process (benchmarks/dspy_jobs_native.py) and
through `dspex serve` behind a real Erlang port (benchmarks/dspy_jobs.exs), side by side
in each run, against the local test server answering in 20 ms. Writes the "DSPy jobs"
section of docs/benchmarks.md. Exit status 0 when the target (port within 1.05 × native
wall time, median over the runs) is met, 1 when missed, 2 when the run failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from dspy_jobs_data import dataset  # noqa: E402
from run_port_bench import start_lm_server  # noqa: E402  (the same local LM server, its own process)
from learnable_task import right_answer  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- dspy-jobs-bench:start (written by benchmarks/run_dspy_bench.py) -->"
END_MARK = "<!-- dspy-jobs-bench:end -->"
TARGET = 1.05


def env() -> dict[str, str]:
    out = dict(os.environ, PYTHONPATH=str(ROOT), LITELLM_LOCAL_MODEL_COST_MAP="True", DSPEX_LOG_LEVEL="warning")
    out.pop("OPENAI_API_KEY", None)
    return out


def run_native(url: str, model: str, examples: int, threads: int, train: int) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dspy_jobs_native.py"), url, model,
                          str(examples), str(threads), str(train)], capture_output=True, text=True, env=env(),
                         cwd=str(ROOT), timeout=1200)
    if out.returncode != 0:
        raise SystemExit(f"run_dspy_bench: native side failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_port(url: str, model: str, data_file: Path, threads: int) -> dict:
    elixir = shutil.which("elixir")
    if elixir is None:
        raise SystemExit("run_dspy_bench: `elixir` is missing (apt-get install elixir erlang-jiffy)")
    out = subprocess.run([elixir, str(ROOT / "benchmarks" / "dspy_jobs.exs"), sys.executable, str(ROOT), url, model,
                          str(data_file), str(threads)], capture_output=True, text=True, env=env(), cwd=str(ROOT),
                         timeout=1200)
    if out.returncode != 0:
        raise SystemExit(f"run_dspy_bench: port side failed: {out.stdout[-1000:]}{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(runs: list[dict], args: argparse.Namespace) -> tuple[str, bool]:
    def figure(key: str) -> tuple[float, float, float, list[float]]:
        ratios = [r["port"][key] / r["native"][key] for r in runs]
        return (statistics.median(r["native"][key] for r in runs), statistics.median(r["port"][key] for r in runs),
                statistics.median(ratios), ratios)

    rows, passed = [], True
    for key, label in (("evaluate_s", f"evaluate_program, {args.examples} examples, {args.threads} threads"),
                       ("compile_s", f"bootstrap_few_shot compile, {args.train} examples")):
        native, port, ratio, ratios = figure(key)
        ok = ratio <= TARGET
        passed &= ok
        rows.append(f"| {label} | {native:.3f} s | {port:.3f} s | {ratio:.3f}× ({min(ratios):.3f}–{max(ratios):.3f}) "
                    f"| ≤ {TARGET} × | {'pass' if ok else '**FAIL**'} |")
    ping_max = max(r["port"]["ping_during_compile_max_us"] for r in runs) / 1000
    ping_p50 = statistics.median(r["port"]["ping_during_compile_p50_us"] for r in runs) / 1000
    rows.append(f"| ping while a compile runs (50 pings, worst of {len(runs)} runs) | - | p50 {ping_p50:.2f} ms, "
                f"max {ping_max:.2f} ms | - | ≤ 10 ms | {'pass' if ping_max <= 10 else '**FAIL**'} |")
    passed &= ping_max <= 10
    scores = sorted({(r["native"]["evaluate_score"], r["port"]["evaluate_score"]) for r in runs})
    demos = sorted({(r["native"]["demos"], r["port"]["demos"]) for r in runs})
    uname = platform.uname()
    section = f"""{START_MARK}
## DSPy jobs: evaluate and compile, native vs through the port

Command: `python benchmarks/run_dspy_bench.py --runs {len(runs)}`. Run on {dt.date.today().isoformat()}, a
{os.cpu_count()}-core {uname.machine} machine (Linux {uname.release}), Python {platform.python_version()}.

The same work, side by side in each run (native first, then the port, alternating nothing
else): `dspy.Evaluate` and `dspy.BootstrapFewShot` called directly in one Python process
(`benchmarks/dspy_jobs_native.py`), and `evaluate_program` / `compile_program` with
`wait: true` sent by Elixir through a real Erlang port to `dspex serve`
(`benchmarks/dspy_jobs.exs`), timed from the request's send to its reply. Both use DSPy's
real HTTP client against `tests/openai_server.py` in its own process, model
`openai/learn-delay-20` (every answer takes 20 ms; half the questions are answered right
untaught), no LM cache, and the same exact-match metric. The port side's DSPy import and
first call happen before the timed requests.

| work | native | through the port | port / native (lowest–highest run) | target | pass |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Each figure is the median over {len(runs)} runs; the ratio is taken within each run. Scores
(native, port): {scores}; demos chosen (native, port): {demos}.
{END_MARK}
"""
    return section, passed


def write_doc(section: str) -> None:
    text = DOC.read_text()
    if START_MARK in text:
        head, _, rest = text.partition(START_MARK)
        _, _, tail = rest.partition(END_MARK + "\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--train", type=int, default=50)
    parser.add_argument("--model", default="openai/learn-delay-20")
    parser.add_argument("--no-doc", action="store_true", help="print, do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    server, url = start_lm_server()
    try:
        with tempfile.TemporaryDirectory(prefix="dspex-dspy-bench-") as tmp:
            data_file = Path(tmp) / "data.json"
            data_file.write_text(json.dumps({"devset": dataset(args.examples, right_answer),
                                             "trainset": dataset(args.train, right_answer)}))
            runs = []
            for index in range(args.runs):
                native = run_native(url, args.model, args.examples, args.threads, args.train)
                port = run_port(url, args.model, data_file, args.threads)
                print(f"run {index + 1}: native {native} port {port}", flush=True)
                runs.append({"native": native, "port": port})
    finally:
        server.kill()
    section, passed = render(runs, args)
    print(section)
    if not args.no_doc:
        write_doc(section)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"dspy_jobs-{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(runs, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
