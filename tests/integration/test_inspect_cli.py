"""`dspex inspect` driven as a user would: subprocesses against real workers and transcripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fixtures import wait_for
from fixtures import ROOT, worker_env
from rich.console import Console

from bridge.control.client import ControlClient
from dspex_cli.inspect_cmd import collect_dashboard
from dspex_cli.inspect_views import dashboard

SECRET = "sk-test-secret-123456"  # the api_key of the lm_args fixture


def cli_env(runtime: Path) -> dict[str, str]:
    return worker_env(XDG_RUNTIME_DIR=str(runtime), COLUMNS="200", NO_COLOR="1")


def inspect(runtime: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dspex_cli", "inspect", *args], capture_output=True, text=True,
                          env=cli_env(runtime), cwd=str(ROOT), timeout=timeout)


def inspect_many(runtime: Path, *calls: tuple[str, ...], timeout: float = 60) -> list[subprocess.CompletedProcess[str]]:
    """Runs several `dspex inspect` at once (each is a cold Python start; together they overlap)."""
    procs = [subprocess.Popen([sys.executable, "-m", "dspex_cli", "inspect", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=cli_env(runtime), cwd=str(ROOT))
             for args in calls]
    results = []
    for args, proc in zip(calls, procs):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dspex inspect: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def busy_worker(start, lm_args: dict):
    """A worker with an LM (real HTTP to the local server), a program and two executions."""
    worker = start("--worker-id", "busy-one", "--mode", "pool-worker")
    assert worker.request("configure_lm", {**lm_args, "session_id": "sess-a"})["success"]
    assert worker.request("create_program", {"id": "summarise", "signature": "text -> summary",
                                             "session_id": "sess-a"})["success"]
    for text in ("first text", "second text"):
        reply = worker.request("execute_program", {"program_id": "summarise", "inputs": {"text": text},
                                                   "session_id": "sess-a"})
        assert reply["success"], reply
    return worker


def test_no_workers(runtime: Path) -> None:
    result = inspect(runtime)
    assert result.returncode == 0 and "No live dspex workers" in result.stdout
    assert json.loads(inspect(runtime, "--json").stdout) == []


@pytest.mark.slow
def test_worker_list_table_and_json(busy_worker, runtime: Path) -> None:
    result = inspect(runtime)
    assert result.returncode == 0, result.stderr
    assert str(busy_worker.pid) in result.stdout and "busy-one" in result.stdout
    assert "pool-worker" in result.stdout
    [entry] = json.loads(inspect(runtime, "--json").stdout)
    assert {"pid", "worker_id", "mode", "socket"} <= set(entry)
    assert entry["pid"] == busy_worker.pid and entry["worker_id"] == "busy-one"
    assert entry["mode"] == "pool-worker" and entry["socket"].endswith(f"{busy_worker.pid}.sock")


@pytest.mark.slow
def test_worker_overview_by_pid_id_and_socket(busy_worker, runtime: Path, lm_args: dict) -> None:
    socket_path = str(runtime / "dspex" / f"{busy_worker.pid}.sock")
    specs = (str(busy_worker.pid), "busy-one", "busy", socket_path)
    for spec, result in zip(specs, inspect_many(runtime, *[(spec,) for spec in specs])):
        assert result.returncode == 0, (spec, result.stderr)
        out = result.stdout
        for expected in ("busy-one", "pool-worker", "sess-a", "summarise", "text: str -> summary: str",
                         lm_args["model"], "nothing in flight"):
            assert expected in out, (spec, expected)
    data = json.loads(inspect(runtime, "busy-one", "--json").stdout)
    assert {"pid", "worker_id", "mode", "uptime", "sessions", "programs", "inflight"} <= set(data)
    assert data["pid"] == busy_worker.pid and data["worker_id"] == "busy-one" and data["uptime"] > 0
    [program] = data["programs"]
    assert program["program_id"] == "summarise" and program["execution_count"] == 2
    assert data["inflight"] == []
    assert [s["session_id"] for s in data["sessions"]] == ["sess-a"]


@pytest.mark.slow
def test_each_view_and_no_secret_anywhere(busy_worker, runtime: Path) -> None:
    views = ("status", "sessions", "programs", "inflight", "jobs", "frames", "lm")
    calls = [("busy-one", view, "--limit", "200") for view in views]
    # JSON of the other views is checked in test_control.py, in-process.
    json_views = ("status", "frames", "lm")
    calls += [("busy-one", view, "--limit", "200", "--json") for view in json_views]
    results = inspect_many(runtime, *calls, ("busy-one",))
    outputs = {}
    for index, view in enumerate(views):
        text = results[index]
        assert text.returncode == 0, (view, text.stderr)
        as_json = results[len(views) + json_views.index(view)] if view in json_views else None
        if as_json is not None:
            assert as_json.returncode == 0, (view, as_json.stderr)
        outputs[view] = (text.stdout, json.loads(as_json.stdout) if as_json is not None else None)
    assert "errors by type" in outputs["status"][0] and outputs["status"][1]["counters"]["lm_calls"] == 2
    assert "configure_lm" in outputs["frames"][0] and "execute_program" in outputs["frames"][0]
    frames = outputs["frames"][1]["frames"]
    assert any(f.get("latency_ms") for f in frames if f["direction"] == "out")
    configure = next(f for f in frames if f.get("command") == "configure_lm")
    assert configure["frame"]["args"]["api_key"] == "[REDACTED]"  # it was in the frame, and is hidden
    calls = outputs["lm"][1]["calls"]
    assert len(calls) == 2 and "second text" in calls[-1]["prompt_preview"]
    assert "second text" in outputs["lm"][0]
    everything = json.dumps(outputs) + results[-1].stdout
    assert SECRET not in everything


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(start, runtime: Path, tmp_path: Path) -> None:
    worker = start("--worker-id", "target")
    not_transcript = tmp_path / "notes.jsonl"
    not_transcript.write_text('{"hello": "world"}\n')
    cases = [
        (("nobody",), "no live dspex worker matches 'nobody'"),
        (("target", "bogus"), "unknown view 'bogus'"),
        (("target", "--limit", "lots"), "--limit must be a whole number"),
        (("target", "--follow", "--watch"), "cannot be combined"),
        (("target", "--bogus-flag"), "unknown option '--bogus-flag'"),
        ((str(not_transcript),), "not a dspex transcript"),
        ((str(tmp_path / "nothing.sock"),), "no such control socket"),
    ]
    for (args, fragment), result in zip(cases, inspect_many(runtime, *[args for args, _ in cases])):
        assert_one_line_error(result, fragment)
    # A dead worker's socket: SIGKILL leaves it behind.
    sock = str(runtime / "dspex" / f"{worker.pid}.sock")
    worker.process.kill()
    worker.process.wait(5)
    assert_one_line_error(inspect(runtime, sock), "stale socket")
    assert_one_line_error(inspect(runtime, str(worker.pid)), "gone")
    assert not os.path.exists(sock)  # the reader cleaned up after the dead worker


def test_follow_streams_until_the_worker_stops(start, runtime: Path) -> None:
    worker = start("--worker-id", "followed")
    follower = subprocess.Popen([sys.executable, "-m", "dspex_cli", "inspect", "followed", "--follow", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(runtime))
    try:
        # Ping until the follower prints something: then its subscription is live.
        subscribed = threading.Event()

        def ping_until_subscribed() -> None:
            while not subscribed.is_set():
                worker.request("ping")
                time.sleep(0.05)

        pinger = threading.Thread(target=ping_until_subscribed, daemon=True)
        pinger.start()
        first = follower.stdout.readline()
        subscribed.set()
        pinger.join(5)
        assert json.loads(first)["event"] == "frame"
        worker.request("configure_lm", {"model": "mock", "api_key": "sk-follow-secret-987654"})
        worker.request("create_program", {"id": "fp", "signature": "q -> a"})
        worker.request("execute_program", {"program_id": "fp", "inputs": {"q": "streamed?"}})
        worker.close()
        out, err = follower.communicate(timeout=15)
    finally:
        follower.kill()
    events = [json.loads(line) for line in [first, *out.splitlines()] if line.strip()]
    kinds = {e["event"] for e in events}
    assert {"frame", "lm_call"} <= kinds
    commands = [e["data"].get("command") for e in events if e["event"] == "frame" and e["data"]["direction"] == "in"]
    assert commands[-3:] == ["configure_lm", "create_program", "execute_program"]
    assert "sk-follow-secret-987654" not in out
    assert follower.returncode == 1
    assert err.strip().splitlines() == ["dspex inspect: worker followed (pid %d) stopped" % worker.pid]


def test_watch_dashboard_renders_live_state(start, runtime: Path, lm_args: dict) -> None:
    worker = start("--worker-id", "watched")
    assert worker.request("configure_lm", {**lm_args, "model": "openai/local-delay-200",
                                           "session_id": "wsess"})["success"]
    assert worker.request("create_program", {"id": "slowprog", "signature": "q -> a",
                                             "session_id": "wsess"})["success"]
    assert worker.request("execute_program", {"program_id": "slowprog", "inputs": {"q": "one"},
                                              "session_id": "wsess"})["success"]
    running = worker.submit("execute_program", {"program_id": "slowprog", "inputs": {"q": "two"},
                                                "session_id": "wsess"})
    with ControlClient(runtime / "dspex" / f"{worker.pid}.sock") as client:
        snapshot = wait_for(lambda: (s := collect_dashboard(client))["inflight"] and s, interval=0.01)
    console = Console(record=True, width=100, color_system=None)
    console.print(dashboard(snapshot))
    screen = console.export_text()
    assert running.result(10)["success"]
    assert "watched" in screen and f"pid {worker.pid}" in screen
    assert "wsess" in screen and "slowprog" in screen
    assert "execute_program" in screen.split("in flight", 1)[1]  # the running request is listed
    assert "LM latency" in screen and "openai/local-delay-200" in screen
    p50 = snapshot["status"]["lm_latency_ms"]["p50"]
    assert p50 >= 200  # the local server slept 200 ms
    assert SECRET not in screen
    assert max(len(line) for line in screen.splitlines()) <= 100


@pytest.mark.slow
def test_watch_exits_with_one_line_when_the_worker_stops(start, runtime: Path) -> None:
    worker = start("--worker-id", "vanishing")
    watcher = subprocess.Popen([sys.executable, "-m", "dspex_cli", "inspect", "vanishing", "--watch"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(runtime))
    with ControlClient(runtime / "dspex" / f"{worker.pid}.sock") as client:
        # Our own connection plus the watcher's: the dashboard is being drawn.
        wait_for(lambda: client.call("status")["control_connections"] >= 2, timeout=20, interval=0.05)
    time.sleep(1.2)  # at least one refresh after the first frame
    assert watcher.poll() is None
    worker.close()
    out, err = watcher.communicate(timeout=15)
    assert watcher.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "vanishing" in lines[0] and "stopped during --watch" in lines[0]
    assert "Traceback" not in out + err
    assert "vanishing" in out  # the dashboard was drawn before the worker went


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_transcript_views(spawn_worker, runtime: Path, tmp_path: Path) -> None:
    transcript = tmp_path / "session.jsonl"
    worker = spawn_worker("--worker-id", "recorded", "--record", str(transcript),
                          env=worker_env(XDG_RUNTIME_DIR=str(runtime)))
    assert worker.request("configure_lm", {"model": "mock", "api_key": "sk-recorded-secret-55555",
                                           "session_id": "t1"})["success"]
    assert worker.request("create_program", {"id": "tp", "signature": "question -> answer",
                                             "session_id": "t1"})["success"]
    for q in ("a?", "b?"):
        assert worker.request("execute_program", {"program_id": "tp", "inputs": {"question": q},
                                                  "session_id": "t1"})["success"]
    assert not worker.request("execute_program", {"program_id": "ghost", "inputs": {},
                                                  "session_id": "t1"})["success"]
    assert worker.close() == 0
    result = inspect(runtime, str(transcript))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("dspex-transcript", "recorded", "t1", "tp", "question: str -> answer: str",
                     "execute_program", "program_not_found", "mock"):
        assert expected in out, expected
    report = json.loads(inspect(runtime, str(transcript), "--json").stdout)
    assert report["counts"]["requests"] == 5 and report["counts"]["errors"] == 1
    assert report["counts"]["lm_calls"] == 2 and report["complete"] is True
    [program] = report["programs"]
    assert program["program_id"] == "tp" and program["execution_count"] == 2
    replies = [f for f in report["timeline"] if f["direction"] == "out"]
    assert len(replies) == 5 and all(f["latency_ms"] >= 0 for f in replies)
    [session] = report["sessions"]
    assert session["session_id"] == "t1" and session["lm"] == "mock" and session["errors"] == 1
    timeline = inspect(runtime, str(transcript), "timeline")
    assert timeline.returncode == 0 and "create_program" in timeline.stdout
    lm = json.loads(inspect(runtime, str(transcript), "lm", "--json").stdout)["lm"]
    assert len(lm) == 2 and "b?" in lm[-1]["prompt_preview"]
    assert "sk-recorded-secret-55555" not in out + json.dumps(report)
    assert_one_line_error(inspect(runtime, str(transcript), "inflight"), "unknown transcript view")
    assert_one_line_error(inspect(runtime, str(transcript), "--watch"), "need a live worker")


def test_long_worker_ids_and_socket_paths_are_not_wrapped_in_a_pipe(start, runtime: Path) -> None:
    """A pipe gets every row whole (no fold at 80 columns), even without COLUMNS set."""
    worker_id = "worker-" + "with-a-long-descriptive-name-" * 4
    worker = start("--worker-id", worker_id)
    socket_path = str(runtime / "dspex" / f"{worker.pid}.sock")
    env = worker_env(XDG_RUNTIME_DIR=str(runtime), NO_COLOR="1")
    env.pop("COLUMNS", None)
    result = subprocess.run([sys.executable, "-m", "dspex_cli", "inspect"], capture_output=True, text=True,
                            env=env, cwd=str(ROOT), timeout=30)
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if str(worker.pid) in line]
    assert worker_id in row and socket_path in row and len(row) > 80
