"""`dspex serve` as a subprocess speaking frames: bad input, fd 1, lifecycle, concurrency, secrets."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import Future
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.wire.client import WorkerClient, WorkerGone, dspex_serve_argv
from bridge.wire.framing import pack
from fixtures import ROOT, ok, worker_env

from fixtures import PLUGINS  # noqa: E402
SECRET = "sk-test-secret-123456"


def error_reply(worker: WorkerClient, raw: bytes, request_id: Any, error_type: str) -> str:
    future = worker.expect(request_id)
    worker.send_raw(pack(raw))
    reply = future.result(10)
    assert reply["id"] == request_id
    assert reply["success"] is False and reply["error_type"] == error_type, reply
    assert isinstance(reply["error"], str) and reply["error"]
    assert isinstance(reply["timestamp"], float)
    return reply["error"]


def wait_exit(worker: WorkerClient, timeout: float) -> int:
    return worker.process.wait(timeout)


def wait_for_lm_request(server: Any, count_before: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(server.requests) <= count_before:
        assert time.monotonic() < deadline, "the worker never called the LM"
        time.sleep(0.005)


def setup_program(worker: WorkerClient, server: Any, model: str, session: str | None = None) -> None:
    args: dict[str, Any] = {"model": f"openai/{model}", "api_base": server.base_url, "api_key": SECRET,
                            "num_retries": 0}
    extra = {"session_id": session} if session else {}
    ok(worker.request("configure_lm", {**args, **extra}, timeout=30))
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer", **extra}, timeout=30))


# ----------------------------------------------------------------------- startup


def test_first_ping_is_answered(spawn_worker: Any) -> None:
    worker = spawn_worker("--mode", "pool-worker", "--worker-id", "w-1")
    reply = worker.request("ping", {"initialization": True, "worker_id": "w-1"}, request_id=0, timeout=5)
    result = ok(reply)
    assert reply["id"] == 0
    assert result["status"] == "ok" and result["mode"] == "pool-worker" and result["worker_id"] == "w-1"
    assert isinstance(result["uptime"], float)
    assert worker.close() == 0


def test_unknown_flag_exits_2_with_a_suggestion() -> None:
    proc = subprocess.run(dspex_serve_argv("--recrod", "/tmp/x.jsonl"), env=worker_env(), cwd=ROOT,
                          stdin=subprocess.PIPE, capture_output=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == b""
    stderr = proc.stderr.decode()
    assert stderr.startswith("usage: dspex serve")
    assert "unrecognized arguments: --recrod /tmp/x.jsonl" in stderr and "did you mean --record?" in stderr
    # No abbreviations either: "--rec" is not silently taken for --record.
    short = subprocess.run(dspex_serve_argv("--rec", "x"), env=worker_env(), cwd=ROOT, stdin=subprocess.PIPE,
                           capture_output=True, timeout=30)
    assert short.returncode == 2 and b"unrecognized arguments: --rec" in short.stderr


def test_help_explains_the_default_lm_and_the_drain() -> None:
    proc = subprocess.run(dspex_serve_argv("--help"), env=worker_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0
    for text in ("--lm MODEL", "DSPEX_LM_API_BASE", "DSPEX_LM_TIMEOUT", "OPENAI_API_KEY", "shutting_down",
                 "dspex repl", "--drain-timeout"):
        assert text in proc.stdout + proc.stderr, text  # fd 1 of `dspex serve` is stderr


def test_on_a_terminal_it_says_it_is_a_port_worker() -> None:
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "dspex_cli", "serve"], env=worker_env(), cwd=str(ROOT),
                          timeout=20, encoding="utf-8")
    child.expect("port worker")
    line = child.before + child.after + child.readline()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert "dspex repl" in line


# ----------------------------------------------------------------- bad input


def test_every_bad_input_gets_an_answer_or_is_counted(spawn_worker: Any) -> None:
    worker = spawn_worker("--plugin", "sample_plugin", env=worker_env(PLUGINS))
    ok(worker.request("ping", timeout=5))
    # Where the id is known: an error reply with a stable error_type.
    assert "not valid JSON" in error_reply(worker, b'{"id": 11, "command": "ping", ', 11, "invalid_json")
    assert "UTF-8" in error_reply(worker, b'{"id": 12, "command": "p\xffng"}', 12, "invalid_utf8")
    assert "'command'" in error_reply(worker, b'{"id": 13}', 13, "invalid_request")
    assert "'command'" in error_reply(worker, b'{"id": 14, "command": 5}', 14, "invalid_request")
    assert "'args' must be an object" in error_reply(worker, b'{"id": 15, "command": "ping", "args": [1]}',
                                                     15, "invalid_arguments")
    assert "'args' must be an object" in error_reply(worker, b'{"id": 16, "command": "ping", "args": "x"}',
                                                     16, "invalid_arguments")
    assert error_reply(worker, b'{"id": 17, "command": "fly_to_moon"}', 17,
                       "unknown_command") == "Unknown command: fly_to_moon"
    assert "not JSON-serializable" in error_reply(
        worker, b'{"id": 18, "command": "sample_unserializable"}', 18, "serialization_error")
    assert "not an object" in error_reply(worker, b'{"id": 19, "command": "sample_not_a_dict"}', 19,
                                          "internal_error")
    assert error_reply(worker, b'{"id": 20, "command": "sample_quota"}', 20,
                       "quota_exceeded") == "Quota exceeded for this session"
    assert "RuntimeError: plugin bug" in error_reply(worker, b'{"id": 21, "command": "sample_crash"}', 21,
                                                     "internal_error")
    assert "'text' is required" in error_reply(worker, b'{"id": 22, "command": "sample_echo", "args": {}}',
                                               22, "invalid_arguments")
    # args null is the same as no args.
    null_args = worker.expect(23)
    worker.send_raw(pack(b'{"id": 23, "command": "ping", "args": null}'))
    assert ok(null_args.result(10))["status"] == "ok"
    # Where no id is known: nothing to answer; counted, and serving goes on.
    for raw in (b"not json at all", b"\xff\xfe\xfd", b"[1, 2, 3]", b'"just a string"',
                b'{"command": "ping"}', b'{"id": null, "command": "ping"}', b'{"id": [1], "command": "ping"}'):
        worker.send_raw(pack(raw))
    stats = ok(worker.request("get_stats", request_id=24, timeout=10))
    assert stats["protocol_errors"] == 7
    by_type = stats["errors_by_type"]
    assert by_type["invalid_json"] == 2 and by_type["invalid_utf8"] == 2
    assert by_type["invalid_request"] == 2 + 5
    assert by_type["unknown_command"] == 1 and by_type["serialization_error"] == 1
    assert by_type["quota_exceeded"] == 1 and by_type["invalid_arguments"] == 3
    assert worker.close() == 0
    stderr = worker.stderr_path.read_text()
    assert "dropped frame (invalid_request)" in stderr and "dropped frame (invalid_json)" in stderr
    assert "Traceback" not in stderr


def test_oversized_frame_is_skipped_and_next_frame_answered(spawn_worker: Any) -> None:
    worker = spawn_worker("--max-frame-size", "1024")
    ok(worker.request("ping", timeout=5))
    big = orjson.dumps({"id": 50, "command": "ping", "args": {"pad": "x" * 5000}})
    # Header and body in separate writes, like a slow pipe: the skip spans reads.
    worker.send_raw(pack(big)[:2000])
    time.sleep(0.05)
    worker.send_raw(pack(big)[2000:] + pack(orjson.dumps({"id": 51, "command": "ping"})))
    assert ok(worker.expect(51).result(10))["status"] == "ok"
    # A frame at the limit still works.
    just_fits = {"id": 52, "command": "ping", "args": {"pad": ""}}
    just_fits["args"]["pad"] = "y" * (1024 - len(orjson.dumps(just_fits)))
    assert len(orjson.dumps(just_fits)) == 1024
    assert ok(worker.submit_request(just_fits).result(10))["status"] == "ok"
    # A header claiming 4 GiB is skipped without allocating; the stream stays usable after it.
    stats = ok(worker.request("get_stats", timeout=10))
    assert stats["errors_by_type"] == {"frame_too_large": 1} and stats["protocol_errors"] == 1
    assert 50 not in [r.get("id") for r in worker._unmatched]
    assert worker.close() == 0
    assert "exceeds the limit of 1024" in worker.stderr_path.read_text()


def test_frames_around_the_read_sizes_are_answered_alone_and_in_bursts(spawn_worker: Any) -> None:
    # The reader reads 448 bytes at a time while requests come alone and 64 KiB after a
    # burst (bridge/serve/server.py): frames on each side of both sizes, sent alone, then a
    # burst of mixed sizes in one write, are all answered.
    worker = spawn_worker("--no-warm")
    for request_id, size in enumerate([0, 300, 400, 405, 406, 448, 1000, 70_000, 200_000, 10]):
        assert ok(worker.request("ping", {"pad": "x" * size}, request_id=request_id, timeout=10))["status"] == "ok"
    burst = [{"id": 100 + n, "command": "ping", "args": {"pad": "y" * (n * 37 % 900)}} for n in range(50)]
    futures = [worker.expect(request["id"]) for request in burst]
    worker.send_raw(b"".join(pack(orjson.dumps(request)) for request in burst))
    assert [future.result(10)["id"] for future in futures] == [request["id"] for request in burst]
    assert worker.close() == 0


def test_truncated_frame_at_end_of_input(spawn_worker: Any) -> None:
    worker = spawn_worker()
    ok(worker.request("ping", timeout=5))
    worker.send_raw(struct.pack(">I", 100) + b'{"id": 60, "comm')
    worker.close_input()
    assert wait_exit(worker, 5) == 0
    stderr = worker.stderr_path.read_text()
    assert "truncated_frame" in stderr and "Input ended inside a frame" in stderr


def test_max_frame_size_option_is_validated(tmp_path: Path) -> None:
    proc = subprocess.run(dspex_serve_argv("--max-frame-size", "2"), env=worker_env(), cwd=ROOT,
                          capture_output=True, timeout=30)
    assert proc.returncode == 2 and b"--max-frame-size must be at least 16" in proc.stderr


# --------------------------------------------------------------------- fd 1


def test_stdout_writes_from_plugins_go_to_stderr(spawn_worker: Any) -> None:
    worker = spawn_worker("--plugin", "sample_plugin", env=worker_env(PLUGINS))
    assert ok(worker.request("sample_print", timeout=10)) == {"printed": True}
    # The frame stream is intact: the next request parses and matches.
    assert ok(worker.request("sample_echo", {"text": "après"}, timeout=10))["text"] == "après"
    assert worker._unmatched == []
    assert worker.close() == 0
    stderr = worker.stderr_path.read_text()
    for text in ("PRINTED-BY-PLUGIN", "SYS-STDOUT-BY-PLUGIN", "OS-WRITE-1-BY-PLUGIN"):
        assert text in stderr


# ---------------------------------------------------------------- lifecycle


def test_eof_exits_promptly_with_an_lm_call_in_flight(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker()
    setup_program(worker, openai_server, "delay-3000")
    before = len(openai_server.requests)
    pending = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "slow"}})
    wait_for_lm_request(openai_server, before)
    started = time.monotonic()
    worker.close_input()
    assert wait_exit(worker, 5) == 0
    assert time.monotonic() - started < 1.0
    # Answered before the exit, once the grace after end of input ran out.
    reply = pending.result(1)
    assert reply["success"] is False and reply["error_type"] == "shutting_down", reply


def sigterm_during_sleep(spawn_worker: Any, ms: int) -> tuple[Any, Any]:
    """A worker sent SIGTERM while a `sample_sleep` of `ms` is in flight: (worker, its reply)."""
    worker = spawn_worker("--plugin", "sample_plugin", "--no-warm", env=worker_env(PLUGINS))
    ok(worker.request("ping", timeout=5))
    pending = worker.submit("sample_sleep", {"ms": ms})
    time.sleep(0.1)
    worker.process.send_signal(signal.SIGTERM)
    return worker, pending


def test_sigterm_drains_in_flight_work_then_exits(spawn_worker: Any) -> None:
    worker, pending = sigterm_during_sleep(spawn_worker, 700)
    time.sleep(0.05)
    # While draining: no new work, but health checks still answer.
    assert worker.request("sample_echo", {"text": "late"}, timeout=5)["error_type"] == "shutting_down"
    assert ok(worker.request("ping", timeout=5))["status"] == "shutting_down"
    assert ok(pending.result(5)) == {"slept_ms": 700}
    assert wait_exit(worker, 5) == 0
    assert "draining (SIGTERM)" in worker.stderr_path.read_text()


def test_second_sigterm_exits_at_once(spawn_worker: Any) -> None:
    worker, pending = sigterm_during_sleep(spawn_worker, 5000)
    time.sleep(0.2)
    assert worker.process.poll() is None  # the first signal waits for the work in flight
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    code = wait_exit(worker, 5)
    assert time.monotonic() - started < 1.0
    assert code == 1  # forced: in-flight work was abandoned
    with pytest.raises(WorkerGone):
        pending.result(1)


def test_shutdown_replies_then_exits_after_in_flight_work(spawn_worker: Any) -> None:
    worker = spawn_worker("--mode", "pool-worker", "--plugin", "sample_plugin", "--no-warm", env=worker_env(PLUGINS))
    ok(worker.request("update_session_data", {"session_id": "s", "key": "k", "value": 1}, timeout=10))
    pending = worker.submit("sample_sleep", {"ms": 400})
    result = ok(worker.request("shutdown", {"worker_id": "w9"}, timeout=5))
    assert result == {"status": "shutting_down", "worker_id": "w9", "mode": "pool-worker", "sessions_cleaned": 1}
    assert worker.process.poll() is None
    assert ok(pending.result(5)) == {"slept_ms": 400}
    # Exits on its own, stdin still open (as the pool waits 1 s before closing the port).
    assert wait_exit(worker, 3) == 0


MIDDLE = """
import subprocess, sys, time
worker = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
# The test's ping reaches the worker through the stdin we share; its reply proves the
# worker is serving before we announce it.
length = int.from_bytes(worker.stdout.read(4), "big")
worker.stdout.read(length)
print(worker.pid, flush=True)
time.sleep(60)
"""


def test_worker_exits_when_its_parent_dies(tmp_path: Path) -> None:
    # The middle process shares its stdin (our pipe, kept open) with the worker, so only
    # the parent's death, never end of input, can make the worker leave.
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, *dspex_serve_argv("--no-warm")], env=worker_env(),
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=open(tmp_path / "middle.stderr", "wb"))
    worker_pid = None
    try:
        assert middle.stdin is not None and middle.stdout is not None
        middle.stdin.write(pack(b'{"id": 0, "command": "ping"}'))
        middle.stdin.flush()
        worker_pid = int(middle.stdout.readline())
        assert _alive(worker_pid)
        middle.kill()
        middle.wait(5)
        deadline = time.monotonic() + 5
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker_pid), "worker outlived its parent"
    finally:
        if worker_pid is not None and _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
        if middle.stdin:
            middle.stdin.close()
        if middle.poll() is None:
            middle.kill()
    assert "parent process" in (tmp_path / "middle.stderr").read_text()


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's corpse waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# -------------------------------------------------------------- concurrency


@pytest.fixture(scope="module")
def lm_worker(openai_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerClient]:
    """One worker with a slow (500 ms) session and a 200 ms session, shared by the concurrency tests."""
    stderr = open(tmp_path_factory.mktemp("lm_worker") / "worker.stderr", "wb")
    worker = WorkerClient(dspex_serve_argv(), env=worker_env(), stderr=stderr, cwd=str(ROOT))
    setup_program(worker, openai_server, "delay-500", session="slow")
    setup_program(worker, openai_server, "delay-200", session="fast")
    yield worker
    assert worker.close() == 0


def test_ping_answered_during_an_lm_call(lm_worker: WorkerClient, openai_server: Any) -> None:
    order: list[str] = []
    before = len(openai_server.requests)
    execute = lm_worker.submit("execute_program", {"program_id": "p", "session_id": "slow",
                                                   "inputs": {"question": "q"}})
    execute.add_done_callback(lambda _: order.append("execute"))
    wait_for_lm_request(openai_server, before)
    ping = lm_worker.submit("ping")
    ping.add_done_callback(lambda _: order.append("ping"))
    assert ok(ping.result(5))["status"] == "ok"
    assert ok(execute.result(10))["outputs"] == {"answer": "answer for question=q"}
    assert order == ["ping", "execute"]


def test_32_concurrent_executes_overlap(lm_worker: WorkerClient) -> None:
    args = {"program_id": "p", "session_id": "fast"}
    ok(lm_worker.request("execute_program", {**args, "inputs": {"question": "warm"}}, timeout=30))
    started = time.monotonic()
    futures: list[Future] = [lm_worker.submit("execute_program", {**args, "inputs": {"question": f"q{i}"}})
                             for i in range(32)]
    replies = [f.result(30) for f in futures]
    elapsed = time.monotonic() - started
    for i, reply in enumerate(replies):
        assert ok(reply)["outputs"] == {"answer": f"answer for question=q{i}"}
    # One at a time would take 32 × 0.2 = 6.4 s; overlapping calls take about one delay.
    assert elapsed < 3.0


# ------------------------------------------------------------------ secrets


def test_api_key_never_in_frames_or_logs(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker("--log-level", "debug", env=worker_env(DSPEX_LOG_LEVEL="debug"))
    replies = []
    base = {"api_base": openai_server.base_url, "api_key": SECRET, "num_retries": 0}
    replies.append(worker.request("configure_lm", {**base, "model": "openai/fail-500"}, timeout=30))
    replies.append(worker.request("create_program", {"id": "p", "signature": "question -> answer"}, timeout=30))
    failed = worker.request("execute_program", {"program_id": "p", "inputs": {"question": "q"}}, timeout=30)
    assert failed["success"] is False and failed["error_type"] == "lm_error"
    replies.append(failed)
    replies.append(worker.request("configure_lm", {**base, "model": "openai/ok", "temperature": "hot"}, timeout=30))
    replies.append(worker.request("configure_lm", {**base, "model": "openai/ok", "test_call": True}, timeout=30))
    replies.append(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "again"}}, timeout=30))
    replies.append(worker.request("list_sessions", timeout=10))
    # A broken frame that quotes the key: its error reply must not echo it.
    bad = worker.expect(99)
    worker.send_raw(pack(b'{"id": 99, "command": "configure_lm", "args": {"api_key": "' + SECRET.encode() + b'", '))
    replies.append(bad.result(10))
    assert worker.close() == 0
    assert any(r["success"] for r in replies) and any(not r["success"] for r in replies)
    assert SECRET not in orjson.dumps(replies).decode()
    assert SECRET not in orjson.dumps(worker._unmatched).decode()
    stderr = worker.stderr_path.read_text()
    assert "DEBUG" in stderr  # the debug level really was on
    assert SECRET not in stderr
    # And the key did reach the LM server, so it was really in play.
    assert any(r["authorization"] == f"Bearer {SECRET}" for r in openai_server.requests)
