"""`dspex demo`: a newcomer's first look, with no API key and no network.

Spawns `dspex serve` exactly as Elixir would and walks a short session against the
built-in mock LM. It prints one readable line per request (what was asked, what came
back, how long it took); `--json` prints the raw request and reply frames instead, one
JSON object a line, for whoever wants to see the wire.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from bridge.wire.client import WorkerClient, dspex_serve_argv
from dspex_cli.env import Environment
from dspex_cli.exit_status import ExitStatus


def _ping(result: dict[str, Any]) -> str:
    loaded = "loaded" if result.get("dspy_loaded") else "not loaded yet (imported on first use)"
    return f"worker {result.get('worker_id')}, {result.get('mode')} mode, DSPy {loaded}"


def _configure_lm(result: dict[str, Any]) -> str:
    return f"default LM: {result.get('model')} (offline mock, no key needed)"


def _create_program(result: dict[str, Any]) -> str:
    return f"program {result.get('program_id')!r}: {result.get('signature_def')} ({result.get('program_type')})"


def _execute_program(result: dict[str, Any]) -> str:
    outputs = result.get("outputs") or {}
    shown = ", ".join(f"{name} = {orjson.dumps(value).decode()}" for name, value in outputs.items()
                      if name != "reasoning")
    return shown + (" (and its reasoning)" if "reasoning" in outputs else "")


def _list_programs(result: dict[str, Any]) -> str:
    programs = result.get("programs") or []
    names = ", ".join(f"{p.get('program_id')} (run {p.get('execution_count')}x)" for p in programs)
    return f"{result.get('total_count', len(programs))} program(s): {names or 'none'}"


def _get_stats(result: dict[str, Any]) -> str:
    usage = result.get("usage") or {}
    return (f"{result.get('command_count')} commands, {result.get('error_count')} errors, "
            f"{result.get('lm_calls')} LM call(s), {usage.get('total_tokens', 0)} tokens")


def _shutdown(result: dict[str, Any]) -> str:
    return f"{result.get('status')}, {result.get('sessions_cleaned')} session(s) cleaned"


# The session, in order: command, arguments, and how to say in one line what came back.
STEPS: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]] = [
    ("ping", {"initialization": True}, _ping),
    ("configure_lm", {"model": "mock"}, _configure_lm),
    ("create_program", {"id": "qa", "signature": "question -> answer, confidence: float",
                        "program_type": "chain_of_thought"}, _create_program),
    ("execute_program", {"program_id": "qa", "inputs": {"question": "What does DSPy stand for?"}},
     _execute_program),
    ("list_programs", {}, _list_programs),
    ("get_stats", {}, _get_stats),
    ("shutdown", {}, _shutdown),
]


def _json_line(env: Environment, value: Any) -> None:
    env.write(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")


def run_demo(as_json: bool = False, env: Environment | None = None) -> int:
    """Runs the session; returns ExitStatus.FAILURE if the worker refused a step."""
    from rich.markup import escape

    env = env or Environment.from_process()
    console = env.console()
    if not as_json:
        console.print("[bold]dspex demo[/]: spawning `dspex serve --mode standalone`, as an Elixir port "
                      "would, with the offline mock LM")
    width = max(len(command) for command, _, _ in STEPS)
    with WorkerClient(dspex_serve_argv("--mode", "standalone", "--worker-id", "demo")) as worker:
        for step, (command, args, describe) in enumerate(STEPS, start=1):
            started = time.perf_counter()
            reply = worker.request(command, args, request_id=step, timeout=60)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if as_json:
                _json_line(env, {"id": step, "command": command, "args": args})
                _json_line(env, reply)
            ok = reply.get("success") is True
            if not ok:
                message = f"{command} failed: {reply.get('error_type')}: {reply.get('error')}"
                if as_json:
                    env.error_line("dspex demo", message)
                else:
                    console.print(f"[red]✗ {escape(message)}[/]")
                return ExitStatus.FAILURE
            if not as_json:
                summary = describe(reply.get("result") or {})
                if step == 1:
                    summary += "; the time includes the worker's start"
                console.print(f"{step} [cyan]{command:<{width}}[/] [green]ok[/] {elapsed_ms:7.1f} ms  "
                              f"{escape(summary)}")
    if not as_json:
        console.print("[bold green]Done.[/] The worker answered every request and exited. "
                      "Full replies: dspex demo --json")
    return ExitStatus.OK
