"""Fault injection against real `dspex serve` subprocesses: drains that run out of time,
LM servers that never finish, hostile per-call options, and the exit after `shutdown`."""

from __future__ import annotations

import pytest

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bridge.wire.client import WorkerClient, dspex_serve_argv
from bridge.wire.framing import pack
from fixtures import ROOT, ok, worker_env

SECRET = "sk-fault-secret-778899"


def lm_program(worker: WorkerClient, server: Any, model: str, **lm: Any) -> None:
    ok(worker.request("configure_lm", {"model": f"openai/{model}", "api_base": server.base_url,
                                       "api_key": SECRET, "num_retries": 0, **lm}, timeout=30))
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}, timeout=30))


def start_slow_calls(worker: WorkerClient, server: Any, count: int) -> list[Any]:
    """`count` execute_program calls, all of them waiting on the LM server."""
    before = len(server.requests)
    futures = [worker.submit("execute_program", {"program_id": "p", "inputs": {"question": f"q{i}"}})
               for i in range(count)]
    deadline = time.monotonic() + 20
    while len(server.requests) < before + count:
        assert time.monotonic() < deadline, "the calls never reached the LM server"
        time.sleep(0.01)
    return futures


def assert_each_answered_once(worker: WorkerClient, futures: list[Any], error_types: set[str]) -> None:
    ids = []
    for future in futures:
        reply = future.result(0)  # already there: written before the worker exited
        assert reply["success"] is False and reply["error_type"] in error_types, reply
        assert isinstance(reply["error"], str) and reply["error"]
        ids.append(reply["id"])
    assert len(set(ids)) == len(futures)
    assert worker._unmatched == []  # no second (late) reply for any of them


# ------------------------------------------------------------------ 9.7 drains


@pytest.mark.slow
def test_sigterm_drain_timeout_answers_every_call_in_flight(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker("--drain-timeout", "1", "--no-warm")
    lm_program(worker, openai_server, "delay-8000")
    futures = start_slow_calls(worker, openai_server, 32)
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(6) == 0
    assert time.monotonic() - started < 4  # the drain timeout, not the 8 s calls
    time.sleep(0.2)  # let the client's reader take the last frames off the pipe
    assert_each_answered_once(worker, futures, {"shutting_down", "cancelled"})
    assert "within 1 s" in futures[0].result(0)["error"]


def test_eof_grace_answers_every_call_in_flight(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker("--no-warm")
    lm_program(worker, openai_server, "delay-8000")
    futures = start_slow_calls(worker, openai_server, 8)
    worker.close_input()
    assert worker.process.wait(5) == 0
    time.sleep(0.2)
    assert_each_answered_once(worker, futures, {"shutting_down", "cancelled"})
    assert "input ended" in futures[0].result(0)["error"]


MIDDLE = """
import os, subprocess, sys, time
# The worker's stdout comes back to the test through this process's stdout (inherited);
# stdin stays open in the test, so only this parent's death can end the worker.
worker = subprocess.Popen(sys.argv[1:])
print(worker.pid, file=sys.stderr, flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_parent_death_answers_every_call_in_flight(tmp_path: Path, openai_server: Any) -> None:
    argv = [sys.executable, "-c", MIDDLE, *dspex_serve_argv("--no-warm", "--no-control")]
    worker = WorkerClient(argv, env=worker_env(), stderr=subprocess.PIPE, cwd=str(ROOT))
    try:
        lm_program(worker, openai_server, "delay-8000")
        futures = start_slow_calls(worker, openai_server, 4)
        worker_pid = int(worker.process.stderr.readline())
        worker.process.kill()  # the middle process, the worker's parent
        worker.process.wait(5)
        for future in futures:
            future.result(5)
        assert_each_answered_once(worker, futures, {"shutting_down", "cancelled"})
        assert "parent died" in futures[0].result(0)["error"]
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{worker_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.close_input()


# ------------------------------------------------------------ 9.8 total deadline


@pytest.mark.slow
def test_lm_timeout_bounds_a_dripping_server(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker("--no-warm")
    lm_program(worker, openai_server, "drip-300", timeout=2)
    started = time.monotonic()
    pending = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "q"}})
    # Meanwhile the worker answers health checks.
    for _ in range(3):
        time.sleep(0.3)
        assert ok(worker.request("ping", timeout=2))["status"] == "ok"
    reply = pending.result(10)
    elapsed = time.monotonic() - started
    assert reply["success"] is False and reply["error_type"] == "lm_error", reply
    assert "timed out after 2 s" in reply["error"]
    assert SECRET not in reply["error"]
    assert elapsed < 4.5, elapsed  # 2 s deadline plus slack; dripping the whole body takes minutes
    assert ok(worker.request("ping", timeout=2))["status"] == "ok"


# ----------------------------------------------------------- 9.10 options allow-list


def test_options_cannot_steer_the_lm_call(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker("--no-warm")
    lm_program(worker, openai_server, "local-model")
    execute = {"program_id": "p", "inputs": {"question": "q"}}
    before = len(openai_server.requests)
    for hostile in ({"api_base": "http://127.0.0.2:9/v1"}, {"base_url": "http://127.0.0.2:9/v1"},
                    {"api_key": "sk-other"}, {"mock_response": "forged"}, {"headers": {"x": "y"}},
                    {"extra_headers": {"x": "y"}}, {"model": "openai/other"}, {"cache": True},
                    {"timeout": 999}, {"num_retries": 9}, [["api_base", "http://127.0.0.2:9/v1"]],
                    [{"temperature": 0.5, "mock_response": "forged"}]):
        reply = worker.request("execute_program", {**execute, "options": hostile}, timeout=30)
        assert reply["success"] is False and reply["error_type"] == "invalid_arguments", (hostile, reply)
        name = next(iter(hostile)) if isinstance(hostile, dict) else (
            hostile[0][0] if isinstance(hostile[0], list) else "mock_response")
        assert repr(name) in reply["error"], reply
    for bad, fragment in (({"temperature": "hot"}, "'temperature' must be a number"),
                          ({"temperature": 7}, "between 0 and 2"), ({"n": 1.5}, "whole number"),
                          ({"max_tokens": True}, "whole number"), ({"stop": [1]}, "list of at most 16 strings"),
                          ({"logprobs": "yes"}, "true or false")):
        reply = worker.request("execute_program", {**execute, "options": bad}, timeout=30)
        assert reply["error_type"] == "invalid_arguments" and fragment in reply["error"], reply
    assert len(openai_server.requests) == before  # nothing refused ever reached an LM
    # Generation settings still pass, and reach the LM request.
    good = {"temperature": 0.7, "max_tokens": 50, "top_p": 0.9, "seed": 7, "stop": ["\n\n\n"]}
    assert ok(worker.request("execute_program", {**execute, "options": good}, timeout=30))["outputs"] == {
        "answer": "answer for question=q"}
    body = openai_server.requests[-1]["body"]
    assert body["temperature"] == 0.7 and body["seed"] == 7 and body["top_p"] == 0.9, body
    assert 50 in (body.get("max_tokens"), body.get("max_completion_tokens")), body
    assert [r["authorization"] for r in openai_server.requests[before:]] == [f"Bearer {SECRET}"]


def test_request_api_base_without_key_gets_no_environment_key(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker("--no-warm", env=worker_env(OPENAI_API_KEY="sk-env-only-for-openai-0001"))
    ok(worker.request("configure_lm", {"model": "openai/local-model", "api_base": openai_server.base_url,
                                       "num_retries": 0}, timeout=30))
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}, timeout=30))
    before = len(openai_server.requests)
    ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "q"}}, timeout=30))
    assert [r["authorization"] for r in openai_server.requests[before:]] == ["Bearer dspex-no-key"]


# ------------------------------------------------------------ 10.5 exit latency


def _exit_latency(tmp_path: Path) -> float:
    proc = subprocess.Popen(dspex_serve_argv("--mode", "pool-worker"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=worker_env(
                                XDG_RUNTIME_DIR=str(tmp_path)), cwd=ROOT, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None

    def request(payload: bytes) -> dict[str, Any]:
        proc.stdin.write(pack(payload))
        length = int.from_bytes(proc.stdout.read(4), "big")
        return orjson.loads(proc.stdout.read(length))

    try:
        assert request(b'{"id":0,"command":"ping","args":{"initialization":true}}')["success"]
        assert request(b'{"id":1,"command":"shutdown","args":{}}')["result"]["status"] == "shutting_down"
        time.sleep(0.001)  # what DSPex's pool does on Application.stop
        started = time.monotonic()
        proc.stdin.close()
        assert proc.wait(5) == 0
        return time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_exit_soon_after_shutdown_and_eof(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    latencies = [_exit_latency(runtime) for _ in range(20)]
    print(f"exit after shutdown+EOF: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 0.5, latencies  # a hang bound, not a benchmark
