"""Time from spawning `dspex repl` in a pseudo-terminal to its first prompt on screen.

Each run uses fresh HOME/XDG directories (so the first-run config file is written, as
for a new user) and waits for the prompt text `dspex> `, then presses Ctrl-D. DSPy is
loaded after the prompt appears, so it is not part of this figure by design; the second
figure, time to the first `ping` reply, shows the engine is usable at once too.

    python benchmarks/bench_repl_startup.py [--runs 15] [--json]

CPU time (user + system, from /proc) at the prompt is reported too: on a busy
machine it moves far less than the wall-clock figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pexpect

ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used: less sensitive to a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(command: list[str]) -> tuple[float, float, float]:
    home = Path(tempfile.mkdtemp(prefix="dspex-repl-bench-"))
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_STATE_HOME=str(home / "state"), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1",
               PYTHONPATH=str(ROOT))
    try:
        started = time.perf_counter()
        child = pexpect.spawn(command[0], command[1:], env=env, dimensions=(40, 120),
                              encoding="utf-8", timeout=20)
        child.expect("dspex> ")
        to_prompt = time.perf_counter() - started
        cpu = _cpu_seconds(child.pid)
        child.send("ping\r")
        child.expect("uptime")
        to_ping = time.perf_counter() - started
        child.expect("dspex> ")
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
        child.close()
        return to_prompt, to_ping, cpu
    finally:
        shutil.rmtree(home, ignore_errors=True)


START, END = "<!-- repl-bench:start (written by benchmarks/bench_repl_startup.py) -->", "<!-- repl-bench:end -->"


def write_docs(results: dict[str, dict[str, float]], load: float) -> None:
    """Replaces this benchmark's section of docs/benchmarks.md (appended the first time)."""
    import platform

    rows = "\n".join(f"| `{label}` | {r['prompt_median_ms']} ms | {r['prompt_min_ms']}–{r['prompt_max_ms']} ms "
                     f"| {r['prompt_cpu_median_ms']} ms | {r['first_ping_median_ms']} ms |"
                     for label, r in results.items())
    runs = next(iter(results.values()))["runs"]
    section = f"""{START}
## REPL: start-up to the first prompt

Command: `python benchmarks/bench_repl_startup.py --write`. Run on {time.strftime('%Y-%m-%d')}, \
{os.cpu_count()}-core {platform.machine()} ({platform.system()} {platform.release()}), \
Python {platform.python_version()}; load average {load:.1f} when it ran (other work on the machine).

Each run spawns the console in a pseudo-terminal (pexpect, 120×40) with fresh HOME and XDG
directories (the first-run config file is written), and measures the time until the prompt
`dspex> ` has been drawn; then it types `ping` and measures until the reply shows. The CPU
column is user + system time of the process at the prompt (from `/proc`), which a busy machine
inflates far less than wall time. {runs} runs per line; target: first prompt ≤ 500 ms.

| command | first prompt, median | min–max | CPU at prompt | first `ping` reply |
|---|---|---|---|---|
{rows}

DSPy is imported on a background thread started after the first prompt is drawn, and the
engine, rich and the command registry are loaded on first use, so what precedes the prompt
is the interpreter, prompt_toolkit and the console's own modules. `dspex repl` skips the
typer CLI (whose parameter handling alone imports pydantic, about 0.25 s of CPU): the
console script hands `repl` to the console's own option parser, as it does `serve`.
{END}
"""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        before, _, rest = text.partition(START)
        _, _, after = rest.partition(END)
        text = before + section.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true", help="put the results into docs/benchmarks.md")
    args = parser.parse_args()
    dspex = shutil.which("dspex")
    commands = {"dspex repl (console script)": [dspex, "repl"]} if dspex else {}
    commands["python -m dspex_cli.repl (no typer)"] = [sys.executable, "-m", "dspex_cli.repl"]
    one_run(next(iter(commands.values())))  # warm the OS file cache
    results = {}
    for label, command in commands.items():
        prompts, pings, cpus = zip(*(one_run(command) for _ in range(args.runs)))
        results[label] = {
            "runs": args.runs,
            "prompt_median_ms": round(statistics.median(prompts) * 1000, 1),
            "prompt_min_ms": round(min(prompts) * 1000, 1),
            "prompt_max_ms": round(max(prompts) * 1000, 1),
            "prompt_cpu_median_ms": round(statistics.median(cpus) * 1000, 1),
            "first_ping_median_ms": round(statistics.median(pings) * 1000, 1),
        }
    if args.write:
        write_docs(results, os.getloadavg()[0])
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for label, row in results.items():
            print(f"{label}: first prompt median {row['prompt_median_ms']} ms "
                  f"(min {row['prompt_min_ms']}, max {row['prompt_max_ms']}, {row['runs']} runs; "
                  f"CPU used by then {row['prompt_cpu_median_ms']} ms); "
                  f"first ping reply median {row['first_ping_median_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
