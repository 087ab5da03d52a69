"""The streaming benchmark (issue 13): `python benchmarks/run_stream_bench.py [--runs 30] [--burst 2048]`.

In one run, against one asyncio LM server (benchmarks/async_lm_server.py, measured alone
first so it is known not to be the bottleneck):
- time to first chunk of a streamed execute_program through a real Erlang port
  (benchmarks/stream_bench.exs) vs the same program streamed natively in Python
  (`dspy.streamify`, this file's `native` mode), target at most 2 ms more;
- a callback's round trip (client answer -> next callback event, tests/plugins/twoway_plugin.py's
  tw_ask answered from Elixir) vs a ping's, target at most 1.5x;
- 2,048 execute_program in flight against an LM answering in 200 ms: done within 1.0 s,
  worker threads under 100, RSS growth under 150 MB;
- a cancelled request's reply within 5 ms of the cancel.
Writes the "Streaming" section of docs/benchmarks.md (between its marks only). Exit status
0 when every target is met, 1 when one is missed, 2 when the run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- stream-bench:start (written by benchmarks/run_stream_bench.py) -->"
END_MARK = "<!-- stream-bench:end -->"


def env() -> dict[str, str]:
    out = dict(os.environ, PYTHONPATH=str(ROOT), LITELLM_LOCAL_MODEL_COST_MAP="True", DSPEX_LOG_LEVEL="warning")
    out.pop("OPENAI_API_KEY", None)
    return out


def native_ttfc(url: str, runs: int) -> list[float]:
    """The same program streamed in this process: call -> first chunk, in ms."""
    import dspy

    lm = dspy.LM("openai/stream-bench", api_base=url, api_key="sk-bench-not-a-key", cache=False)
    predict = dspy.Predict("question -> answer")

    async def one(question: str) -> float:
        started = time.perf_counter()
        # A listener serves one stream; the worker builds its own per request the same way.
        program = dspy.streamify(predict, stream_listeners=[dspy.streaming.StreamListener("answer")],
                                 is_async_program=True)
        first = None
        async for value in program(question=question):
            if first is None and isinstance(value, dspy.streaming.StreamResponse) and value.chunk:
                first = time.perf_counter() - started
        assert first is not None, "no chunk streamed"
        return first * 1000

    async def all_runs() -> list[float]:
        with dspy.context(lm=lm):
            await one("warm-up")
            return [await one(f"stream number {run}") for run in range(1, runs + 1)]

    return asyncio.run(all_runs())


def native_burst(url: str, count: int) -> float:
    """`count` Predict calls at once with DSPy's acall in this process (connection pools
    widened as the worker widens them), in seconds: what DSPy alone costs on this machine."""
    import dspy

    sys.path.insert(0, str(ROOT))
    from bridge.adapters.dspy.lm_calls import widen_connection_pools

    widen_connection_pools(count)
    lm = dspy.LM("openai/delay-200", api_base=url, api_key="sk-bench-not-a-key", cache=False)
    predict = dspy.Predict("question -> answer")

    async def burst() -> float:
        with dspy.context(lm=lm):
            await predict.acall(question="warm-up")
            started = time.perf_counter()
            await asyncio.gather(*(predict.acall(question=f"burst {i}") for i in range(count)))
            return time.perf_counter() - started

    return asyncio.run(burst())


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "async_lm_server.py")],
                              stdout=subprocess.PIPE, text=True, cwd=str(ROOT), env=env())
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        server.kill()
        raise SystemExit(f"run_stream_bench: the LM server did not start (printed {url!r})")
    return server, url


def run_json(argv: list[str], timeout: float) -> dict:
    out = subprocess.run(argv, capture_output=True, text=True, env=env(), cwd=str(ROOT), timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"run_stream_bench: {argv[1]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(runs: int, burst: int) -> dict:
    server, url = start_server()
    try:
        alone = run_json([sys.executable, str(ROOT / "benchmarks" / "async_lm_server.py"), "--self-test", str(burst),
                          "--url", url], 120)
        native = run_json([sys.executable, __file__, "native", url, str(runs), str(burst)], 300)
        port = run_json(["elixir", str(ROOT / "benchmarks" / "stream_bench.exs"), sys.executable, str(ROOT), url,
                         str(runs), str(burst)], 600)
    finally:
        server.terminate()
        server.wait(10)
    native_p50 = statistics.median(native["ttfc_ms"])
    return {"server_alone_s": alone["seconds"], "native_ttfc_ms_p50": native_p50, "native_burst_s": native["burst_s"],
            **port,
            "ttfc_extra_ms": port["ttfc_ms_p50"] - native_p50,
            "callback_over_ping": port["callback_ms_p50"] / port["ping_ms_p50"],
            "rss_growth_mb": (port["rss_max_kb"] - port["rss_before_kb"]) / 1024, "load_average": os.getloadavg()[0]}


def verdicts(r: dict) -> list[tuple[str, str, str, bool]]:
    return [
        ("time to first chunk, port minus native (p50)", f"{r['ttfc_extra_ms']:+.2f} ms "
         f"({r['ttfc_ms_p50']:.2f} vs {r['native_ttfc_ms_p50']:.2f} ms)", "<= 2 ms", r["ttfc_extra_ms"] <= 2.0),
        ("callback round trip / ping round trip (p50)", f"{r['callback_over_ping']:.2f}x "
         f"({r['callback_ms_p50'] * 1000:.0f} vs {r['ping_ms_p50'] * 1000:.0f} µs)", "<= 1.5x",
         r["callback_over_ping"] <= 1.5),
        (f"{r['burst']} execute_program in flight, LM 200 ms: wall time", f"{r['burst_s']:.2f} s "
         f"({r['burst_failures']} failed)", "<= 1.0 s", r["burst_s"] <= 1.0 and r["burst_failures"] == 0),
        ("  worker threads during the burst (max)", f"{r['threads_max']} (before: {r['threads_before']})", "< 100",
         r["threads_max"] < 100),
        ("  worker RSS growth during the burst", f"{r['rss_growth_mb']:.0f} MB", "< 150 MB",
         r["rss_growth_mb"] < 150),
        ("cancelled request's reply after the cancel (p50 / max)",
         f"{r['cancel_ms_p50']:.2f} / {r['cancel_ms_max']:.2f} ms", "<= 5 ms", r["cancel_ms_max"] <= 5.0),
    ]


def section(r: dict, runs: int) -> str:
    rows = "\n".join(f"| {name} | {value} | {target} | {'met' if met else '**missed**'} |"
                     for name, value, target, met in verdicts(r))
    load = r.get("load_average", os.getloadavg()[0])
    return f"""{START_MARK}
## Streaming, callbacks, the asyncio lane, cancel (issue 13)

Command: `python benchmarks/run_stream_bench.py --runs {runs} --burst {r['burst']}`. Run on
{dt.date.today().isoformat()}, {os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()},
{shutil.which('elixir') and 'Elixir/OTP from the system'}; load average {load:.1f} when it ran. Everything
goes through one `dspex serve` opened as an Erlang port (`benchmarks/stream_bench.exs`, `{{:packet, 4}}`,
jiffy) against `benchmarks/async_lm_server.py`, an asyncio server answering like the test server
(alone it answers {r['burst']} concurrent 200 ms calls in {r['server_alone_s']:.2f} s, so it is not the
bottleneck). The native side streams the same Predict program with `dspy.streamify` in one
Python process against the same server, in the same run, and runs the same burst with
`asyncio.gather` over `Predict.acall`: DSPy alone took {r['native_burst_s']:.2f} s for it.

| measure | result | target | |
|---|---|---|---|
{rows}

All medians over {runs} runs (pings: {runs * 5}; callbacks: {r['callbacks']} answer-to-next-callback gaps
of `tw_ask` calling 10 client tools in turn). The burst's requests were all written in
{r['burst_send_s']:.2f} s.

What the numbers say:
- The burst target is out of reach of DSPy 3.4 on this machine, not of the port: DSPy's own
  per-call work (adapter formatting and parsing, lm15 request building, usage) costs about
  3.5 ms of CPU per `acall` here, so {r['burst']} calls need seconds of CPU on 2 cores even
  natively in one process ({r['native_burst_s']:.2f} s above, same server, same run). The native
  side widens DSPy's connection pools through the adapter's own function, which also applies
  the adapter's two changes to DSPy (a bounded LM history; model metadata looked up once per
  model, bridge/adapters/dspy/model_metadata.py): without the second, DSPy walks its whole
  price map for this unlisted model 2-4 times per call, and the same burst took 15-21 s
  natively and through the port in the runs before it (2026-12-01). The worker adds its own
  per-request work on top (validation, the per-request LM copy, the observer that records each
  call for inspect and usage, replies). The lane itself holds: none of the requests failed,
  the threads stayed few and RSS modest (tests/adapters/dspy/test_async_lane.py checks that
  500+ calls are at the LM server at the same moment).
- The callback ratio moves a lot from run to run on this shared 2-core machine (1.51x, 1.67x,
  1.70x, 0.34x, 1.35x and 2.27x in six runs on 2026-12-01): a callback's round trip wakes
  a waiting request thread, whose wake-up latency depends on what else the cores are doing.
  Treat the target as not reliably met.
{END_MARK}"""


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if START_MARK in doc and END_MARK in doc:
        head, _, rest = doc.partition(START_MARK)
        _, _, tail = rest.partition(END_MARK)
        doc = head + text + tail
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "native":
        print(json.dumps({"ttfc_ms": native_ttfc(sys.argv[2], int(sys.argv[3])),
                          "burst_s": native_burst(sys.argv[2], int(sys.argv[4]))}))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--burst", type=int, default=2048)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--from-json", metavar="PATH", help="render the section from a saved result instead")
    args = parser.parse_args()
    try:
        result = json.loads(Path(args.from_json).read_text()) if args.from_json else measure(args.runs, args.burst)
    except (SystemExit, subprocess.TimeoutExpired) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    for name, value, target, met in verdicts(result):
        print(f"{'met   ' if met else 'MISSED'} {name}: {value} (target {target})")
    if not args.no_write:
        write_doc(section(result, args.runs))
    return 0 if all(v[3] for v in verdicts(result)) else 1


if __name__ == "__main__":
    sys.exit(main())
