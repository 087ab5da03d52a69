"""The port benchmark in one command: `python benchmarks/run_port_bench.py`.

Starts the local OpenAI-compatible server (tests/openai_server.py) as its own process, runs
benchmarks/port_bench.exs under `elixir` (which drives `dspex serve` and the floor worker
through real Erlang ports), judges each figure against its target, prints a table and
rewrites the "Port" section of docs/benchmarks.md (other sections are kept).
Exit status: 0 when every target is met, 1 when one is missed, 2 when the run failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- port-bench:start (written by benchmarks/run_port_bench.py) -->"
END_MARK = "<!-- port-bench:end -->"
DOC_HEADER = """# Benchmarks

Each section is written by the command it names, from a real run on the machine it names.
"""


@dataclass
class Figure:
    name: str
    floor: str
    target: str
    result: str
    passed: bool
    original: str


def start_lm_server() -> tuple[subprocess.Popen[str], str]:
    """The LM server runs in its own process so its threads never share our GIL or the BEAM's."""
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "openai_server.py"), "--port", "0"],
                              stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        server.kill()
        raise SystemExit(f"run_port_bench: the local LM server did not start (printed {url!r})")
    return server, url


# Bytecode for the workers goes here, not into the source tree (see bench_env).
PYCACHE = Path(tempfile.gettempdir()) / "dspex-bench-pycache"


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    # An installed dspex has its bytecode compiled; a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 compiles every bridge module on every spawn, which once made
    # a third of the measured start-up. The workers keep their bytecode in a cache of the
    # benchmark's own, filled by precompile() before anything is measured.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env.setdefault("DSPEX_LOG_LEVEL", "warning")
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        env.pop(name, None)
    return env


def precompile() -> None:
    """Imports what a worker ever imports, so each module's bytecode is in the cache."""
    code = ("import bridge.engine, bridge.adapters, bridge.control, bridge.record.recorder, bridge.serve.server, dspex_cli.main, "
            "dspex_cli.serve_cmd, dspy, litellm, orjson")
    subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=bench_env(), check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "bridge"), str(ROOT / "dspex_cli"),
                    str(ROOT / "benchmarks")], cwd=str(ROOT), env=bench_env(), check=True,
                   stdout=subprocess.DEVNULL)


def run_beam_side(api_base: str, quick: bool) -> dict:
    elixir = shutil.which("elixir")
    if elixir is None:
        raise SystemExit("run_port_bench: elixir is not installed (apt-get install elixir erlang-jiffy)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "port_bench.json"
        argv = [elixir, str(ROOT / "benchmarks" / "port_bench.exs"), "--python", sys.executable,
                "--api-base", api_base, "--out", str(out), "--root", str(ROOT)]
        if quick:
            argv += ["--spawns", "4", "--pings", "1000", "--pipelined", "10000", "--rounds", "1", "--rtt-spawns", "1"]
        completed = subprocess.run(argv, cwd=str(ROOT), env=bench_env())
        if completed.returncode != 0 or not out.exists():
            raise SystemExit(f"run_port_bench: port_bench.exs failed (exit {completed.returncode})")
        return json.loads(out.read_text())


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def spread(values: list[float], fmt: str) -> str:
    """`1.02× (0.98–1.10 over 3 runs)`: the median and the range of per-run values."""
    if len(values) == 1:
        return format(values[0], fmt) + "×"
    return (f"{format(median(values), fmt)}× ({format(min(values), fmt)}–{format(max(values), fmt)} "
            f"over {len(values)} runs)")


def early_p99(raw: dict, worker: str) -> float:
    """The median over a run's fresh spawns of the p99 of the first pings after spawn."""
    return median([sample["p99"] for sample in raw["early_ping_p99_us"][worker]])


def judge(raws: list[dict]) -> list[Figure]:
    """Each figure is the median over the runs of the ratio dspex/floor taken within one run:
    the machine is shared, so only figures measured side by side in one run compare."""
    spawn = [(r["spawn_first_ping_ms"]["dspex"]["median"], r["spawn_first_ping_ms"]["floor"]["median"]) for r in raws]
    rtt = [(r["ping_rtt_us"]["dspex"]["p50"], r["ping_rtt_us"]["floor"]["p50"]) for r in raws]
    early = [(early_p99(r, "dspex"), early_p99(r, "floor")) for r in raws]
    early_nw = [(early_p99(r, "dspex_no_warm"), early_p99(r, "floor")) for r in raws]
    rate = [(r["pipelined_pings_per_s"]["dspex"], r["pipelined_pings_per_s"]["floor"]) for r in raws]
    rss = [r["rss_after_33_calls_bytes"] for r in raws]
    concurrent = [t for r in raws for t in r["concurrent_32_execute_ms"]]
    during = [trial for r in raws for trial in r["ping_during_lm_call"]]
    worst_during = max(trial["ping_ms"] for trial in during)
    all_first = all(trial["ping_first"] for trial in during)
    worst_concurrent = max(concurrent) / 1000

    def ratios(pairs: list[tuple[float, float]]) -> list[float]:
        return [d / f for d, f in pairs]

    def mid(pairs: list[tuple[float, float]]) -> tuple[float, float]:
        return median([d for d, _ in pairs]), median([f for _, f in pairs])

    spawn_d, spawn_f = mid(spawn)
    rtt_d, rtt_f = mid(rtt)
    early_d, early_f = mid(early)
    rate_d, rate_f = mid(rate)
    rss_mid = median(rss)
    early_count = raws[0].get("early_pings", 5000)
    return [
        Figure("spawn → first ping reply (median)", f"{spawn_f:.1f} ms", "≤ 1.5 × floor",
               f"{spawn_d:.1f} ms, {spread(ratios(spawn), '.2f')}", median(ratios(spawn)) <= 1.5, "423 ms"),
        Figure("ping round trip p50", f"{rtt_f:.1f} µs", "≤ 1.1 × floor",
               f"{rtt_d:.1f} µs, {spread(ratios(rtt), '.2f')}", median(ratios(rtt)) <= 1.1, "166 µs"),
        Figure(f"ping p99 over the first {early_count:,} pings after spawn (DSPy warming)", f"{early_f:.0f} µs",
               "≤ 3 × floor", f"{early_d:.0f} µs, {spread(ratios(early), '.1f')}",
               median(ratios(early)) <= 3, "-"),
        Figure("the same, dspex without its warm-up (`--no-warm`), for comparison", f"{early_f:.0f} µs", "-",
               f"{mid(early_nw)[0]:.0f} µs, {spread(ratios(early_nw), '.1f')}", True, "-"),
        Figure("pipelined pings/s, 64 in flight", f"{rate_f:,.0f}/s", "≥ 0.8 × floor",
               f"{rate_d:,.0f}/s, {spread(ratios(rate), '.2f')}", median(ratios(rate)) >= 0.8, "5,950/s"),
        Figure("32 concurrent execute_program, LM 200 ms (worst round)", "-", "≤ 0.6 s",
               f"{worst_concurrent:.3f} s ({len(concurrent)} rounds)", worst_concurrent <= 0.6, "6.5 s"),
        Figure("ping during a 500 ms LM call (worst of trials)", "-", "answered first, ≤ 10 ms",
               f"{worst_during:.2f} ms, {'always first' if all_first else 'NOT always first'} "
               f"({len(during)} trials)", all_first and worst_during <= 10, "delayed 450 ms"),
        # VmRSS is reported in KiB; "MB" in the target and the original's 71 MB are MiB.
        Figure("RSS after 33 executed calls", f"{median([r['floor_rss_bytes'] for r in raws]) / 2**20:.0f} MiB",
               "≤ 70 MiB", f"{rss_mid / 2**20:.1f} MiB ({min(rss) / 2**20:.1f}–{max(rss) / 2**20:.1f})",
               rss_mid <= 70 * 2**20, "71 MiB"),
    ]


def render_table(figures: list[Figure], before: list[Figure] | None = None) -> str:
    """One row per figure; with `before`, the same figures of the earlier code beside them."""
    head = "| figure | floor | target | " + ("before | " if before else "") + "result | pass | original worker |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for index, f in enumerate(figures):
        earlier = f"{before[index].result} | " if before else ""
        lines.append(f"| {f.name} | {f.floor} | {f.target} | {earlier}{f.result} | "
                     f"{'-' if f.target == '-' else 'pass' if f.passed else '**FAIL**'} | {f.original} |")
    return "\n".join(lines)


def versions(raw: dict) -> dict[str, str]:
    try:
        import dspy  # noqa: F401  (only its version is read, for the record)
        dspy_version = getattr(sys.modules["dspy"], "__version__", "?")
    except ImportError:
        dspy_version = "not installed"
    return {"python": platform.python_version(), "otp": raw["otp_release"], "elixir": raw["elixir_version"],
            "dspy": dspy_version, "cores": str(os.cpu_count()), "kernel": platform.release(),
            "machine": platform.machine()}


def render_section(figures: list[Figure], raws: list[dict], quick: bool, before: list[Figure] | None,
                   before_label: str, notes: str = "") -> str:
    raw = raws[0]
    v = versions(raw)
    today = dt.date.today().isoformat()
    spawn = raw["spawn_first_ping_ms"]
    return f"""{START_MARK}
## Port: `dspex serve` through a real Erlang port

Command: `python benchmarks/run_port_bench.py --runs {len(raws)}`{' --quick' if quick else ''}. Run on {today}, a {v['cores']}-core
{v['machine']} machine (Linux {v['kernel']}), Python {v['python']}, Erlang/OTP {v['otp']}, Elixir {v['elixir']},
DSPy {v['dspy']}.

`benchmarks/port_bench.exs` opens each worker with
`Port.open({{:spawn_executable, python}}, [:binary, :exit_status, {{:packet, 4}}, {{:args, ...}}])`, as
the DSPex library does. The worker is `{{python}} -m dspex_cli serve --mode pool-worker` (the real
interpreter, no shell shim). The floor is `benchmarks/floor_worker.py`, a Python worker that only
reads a frame, decodes it with orjson, builds a reply, encodes it and writes it, measured in
the same run by the same BEAM code. LM calls go through DSPy's real HTTP client to
`tests/openai_server.py`, run as its own process; model `openai/delay-200` makes it answer in
200 ms and `openai/delay-500` in 500 ms.

{render_table(figures, before)}

{before_note(before_label) if before else ''}Each figure is the median, over {len(raws)} runs of the whole benchmark, of the ratio dspex / floor
measured side by side within one run (in brackets: the lowest and highest run); the machine is
shared with other work, so absolute figures move from run to run and only same-run ratios
compare. The floor and result columns give the median absolute values.

How each figure is taken:
- spawn → first ping: `Port.open` to the reply of the pool's init ping (id 0), {len(spawn['dspex']['samples'])}
  spawns of each worker, alternating, after one unmeasured spawn of each; each port is closed and
  its process gone before the next spawn.
- first pings after spawn: {raw.get('early_pings', 5000):,} pings one at a time, from the reply to the
  init ping on (none unmeasured), on {len(raw['early_ping_p99_us']['dspex'])} fresh spawns of each worker, alternating; the
  figure is the median over the spawns of each spawn's p99. `dspex serve` imports DSPy in the
  background during these pings (it starts after the first reply): this is what a health
  monitor sees of a freshly spawned worker.
- ping round trip: on {raw['ping_rtt_us'].get('spawns', 1)} fresh spawns of each worker, alternating, each spawn's
  pings one at a time after 500 unmeasured ones ({raw['ping_rtt_us']['dspex']['count']:,} in all, pooled), taken
  once DSPy's background import has finished ({raw['dspy_warm_ms']} ms after the first ping here, the median;
  `ping` reports `dspy_loaded`). Several spawns because one process's figure depends on where the
  kernel places it next to the BEAM.
- pipelined: on the same spawns, {raw['pipelined_pings_per_s']['count']:,} pings with 64 in flight (each reply sends
  the next ping) after 5,000 unmeasured ones; the median rate over the spawns.
- concurrency: `configure_lm`, `create_program`, one warm-up `execute_program`, then rounds of 32
  `execute_program` sent at once; the time runs from the first send to the last reply, and
  every output is checked against what the server computes.
- RSS: VmRSS of the worker's OS process (`/proc/PID/status`) right after the warm-up call and
  the first round (33 executed calls); `get_stats` reported {raw['get_stats_rss_bytes'] / 2**20:.1f} MiB at the end.
- ping during an LM call: `execute_program` against the 500 ms model, a `ping` 100 ms later;
  the ping's reply must be the next frame to arrive.

{missed_note(figures)}The "original worker" column is the Python worker shipped with the DSPex library, measured
once, before dspex existed, on the same kind of machine with the same kind of BEAM client;
this command does not run it again.
{notes_block(notes)}{END_MARK}"""


def notes_block(notes: str) -> str:
    """Hand-written findings (--notes FILE) placed at the end of the generated section, so
    what bounds a missed target stays next to the figures it explains."""
    return f"\n{notes.strip()}\n" if notes.strip() else ""


def before_note(label: str) -> str:
    return (f"The before column is {label}, measured by the same command on the same machine "
            "(`--before-json`); only its ratios compare with this run's.\n\n")


def missed_note(figures: list[Figure]) -> str:
    missed = [f.name for f in figures if not f.passed]
    if not missed:
        return "Every target was met in this run.\n\n"
    return ("Targets missed in this run: " + "; ".join(missed) + ". The machine's load average "
            f"when the run ended was {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n\n")


def write_doc(section: str) -> None:
    """Replaces only the Port section; sections other benchmarks appended stay as they are."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else DOC_HEADER
    pattern = re.compile(re.escape(START_MARK) + r".*?" + re.escape(END_MARK), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        # The Port section goes first, right after the file's header paragraph.
        head, sep, rest = text.partition("\n## ")
        text = head.rstrip("\n") + "\n\n" + section + "\n" + (("\n## " + rest) if sep else "")
    DOC.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--runs", type=int, default=3, help="whole runs; figures are medians over them (default 3)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw figures (a list, one per run) to this file")
    parser.add_argument("--from-json", type=Path, help="judge and document figures saved by --json, no run")
    parser.add_argument("--before-json", type=Path,
                        help="figures saved by --json from earlier code, shown in a before column")
    parser.add_argument("--before-label", default="the code before this change",
                        help="what the before column measured, for the doc")
    parser.add_argument("--notes", type=Path,
                        help="markdown with findings about this run, appended to the doc section")
    options = parser.parse_args()
    if options.from_json:
        raws = json.loads(options.from_json.read_text())
    else:
        precompile()
        server, api_base = start_lm_server()
        raws = []
        try:
            for run in range(max(1, options.runs)):
                raws.append(run_beam_side(api_base, options.quick))
                print(f"run_port_bench: run {run + 1} of {options.runs} done", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(5)
    raws = raws if isinstance(raws, list) else [raws]
    figures = judge(raws)
    before = None
    if options.before_json:
        earlier = json.loads(options.before_json.read_text())
        before = judge(earlier if isinstance(earlier, list) else [earlier])
    print(render_table(figures, before))
    if options.json:
        options.json.write_text(json.dumps(raws, indent=2))
    if not options.no_doc:
        notes = options.notes.read_text() if options.notes else ""
        write_doc(render_section(figures, raws, options.quick, before, options.before_label, notes))
        print(f"\nwrote {DOC.relative_to(ROOT)}")
    return 0 if all(f.passed for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
