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


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env.setdefault("DSPEX_LOG_LEVEL", "warning")
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        env.pop(name, None)
    return env


def run_beam_side(api_base: str, quick: bool) -> dict:
    elixir = shutil.which("elixir")
    if elixir is None:
        raise SystemExit("run_port_bench: elixir is not installed (apt-get install elixir erlang-jiffy)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "port_bench.json"
        argv = [elixir, str(ROOT / "benchmarks" / "port_bench.exs"), "--python", sys.executable,
                "--api-base", api_base, "--out", str(out), "--root", str(ROOT)]
        if quick:
            argv += ["--spawns", "4", "--pings", "1000", "--pipelined", "10000", "--rounds", "1"]
        completed = subprocess.run(argv, cwd=str(ROOT), env=bench_env())
        if completed.returncode != 0 or not out.exists():
            raise SystemExit(f"run_port_bench: port_bench.exs failed (exit {completed.returncode})")
        return json.loads(out.read_text())


def judge(raw: dict) -> list[Figure]:
    spawn = raw["spawn_first_ping_ms"]
    rtt = raw["ping_rtt_us"]
    rate = raw["pipelined_pings_per_s"]
    concurrent = raw["concurrent_32_execute_ms"]
    during = raw["ping_during_lm_call"]
    rss = raw["rss_after_33_calls_bytes"]
    spawn_d, spawn_f = spawn["dspex"]["median"], spawn["floor"]["median"]
    rtt_d, rtt_f = rtt["dspex"]["p50"], rtt["floor"]["p50"]
    worst_during = max(trial["ping_ms"] for trial in during)
    all_first = all(trial["ping_first"] for trial in during)
    worst_concurrent = max(concurrent) / 1000
    return [
        Figure("spawn → first ping reply (median)", f"{spawn_f:.1f} ms", f"≤ 4 × floor = {4 * spawn_f:.1f} ms",
               f"{spawn_d:.1f} ms ({spawn_d / spawn_f:.1f}×)", spawn_d <= 4 * spawn_f, "423 ms"),
        Figure("ping round trip p50", f"{rtt_f:.1f} µs", f"≤ 1.5 × floor = {1.5 * rtt_f:.1f} µs",
               f"{rtt_d:.1f} µs ({rtt_d / rtt_f:.2f}×; p99 {rtt['dspex']['p99']:.0f} µs)",
               rtt_d <= 1.5 * rtt_f, "166 µs"),
        Figure("pipelined pings/s, 64 in flight", f"{rate['floor']:,.0f}/s",
               f"≥ 0.2 × floor = {0.2 * rate['floor']:,.0f}/s",
               f"{rate['dspex']:,.0f}/s ({rate['dspex'] / rate['floor']:.2f}×)",
               rate["dspex"] >= 0.2 * rate["floor"], "5,950/s"),
        Figure("32 concurrent execute_program, LM 200 ms (worst round)", "-", "≤ 0.6 s",
               f"{worst_concurrent:.3f} s (rounds: {', '.join(f'{t / 1000:.3f}' for t in concurrent)})",
               worst_concurrent <= 0.6, "6.5 s"),
        Figure("ping during a 500 ms LM call (worst of trials)", "-", "answered first, ≤ 10 ms",
               f"{worst_during:.2f} ms, {'always first' if all_first else 'NOT always first'} "
               f"({len(during)} trials)", all_first and worst_during <= 10, "delayed 450 ms"),
        # VmRSS is reported in KiB; "MB" in the target and the original's 71 MB are MiB.
        Figure("RSS after 33 executed calls", f"{raw['floor_rss_bytes'] / 2**20:.0f} MiB", "≤ 100 MiB",
               f"{rss / 2**20:.1f} MiB ({rss / 1e6:.1f} million bytes)", rss <= 100 * 2**20, "71 MiB"),
    ]


def render_table(figures: list[Figure]) -> str:
    lines = ["| figure | floor | target | result | pass | original worker |", "|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f.name} | {f.floor} | {f.target} | {f.result} | "
                     f"{'pass' if f.passed else '**FAIL**'} | {f.original} |")
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


def render_section(figures: list[Figure], raw: dict, quick: bool) -> str:
    v = versions(raw)
    today = dt.date.today().isoformat()
    spawn = raw["spawn_first_ping_ms"]
    return f"""{START_MARK}
## Port: `dspex serve` through a real Erlang port

Command: `python benchmarks/run_port_bench.py`{' --quick' if quick else ''}. Run on {today}, a {v['cores']}-core
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

{render_table(figures)}

How each figure is taken:
- spawn → first ping: `Port.open` to the reply of the pool's init ping (id 0), {len(spawn['dspex']['samples'])}
  spawns of each worker, alternating, after one unmeasured spawn of each; each port is closed and
  its process gone before the next spawn.
- ping round trip: {raw['ping_rtt_us']['dspex']['count']} pings one at a time after 500 unmeasured ones, taken
  once DSPy's background import has finished ({raw['dspy_warm_ms']} ms after the first ping here;
  `ping` reports `dspy_loaded`).
- pipelined: {raw['pipelined_pings_per_s']['count']:,} pings with 64 in flight (each reply sends the next ping),
  after 5,000 unmeasured ones.
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
{END_MARK}"""


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
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--from-json", type=Path, help="judge and document figures saved by --json, no run")
    options = parser.parse_args()
    if options.from_json:
        raw = json.loads(options.from_json.read_text())
    else:
        server, api_base = start_lm_server()
        try:
            raw = run_beam_side(api_base, options.quick)
        finally:
            server.terminate()
            server.wait(5)
    figures = judge(raw)
    print(render_table(figures))
    if options.json:
        options.json.write_text(json.dumps(raw, indent=2))
    if not options.no_doc:
        write_doc(render_section(figures, raw, options.quick))
        print(f"\nwrote {DOC.relative_to(ROOT)}")
    return 0 if all(f.passed for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
