"""`:replay` never damages a live worker, `--read-only`, and the confirmation before a
destructive command (issue 10.3): real consoles, real `dspex serve` workers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fixtures import ROOT
from test_repl_pipe import repl_env, replies, run_repl
from test_repl_terminal import Console

TRANSCRIPT = ROOT / "recordings" / "pool_session.jsonl"  # ends in cleanup_session and shutdown
FRAMES_IN = 15


@pytest.fixture
def live_worker(tmp_path: Path, spawn_worker):
    """A worker holding an app's state: a program in session_alice (a name the transcript uses too)."""
    (tmp_path / "run").mkdir(exist_ok=True, mode=0o700)
    worker = spawn_worker(env=repl_env(tmp_path))
    assert worker.request("configure_lm", {"model": "mock"})["success"]
    assert worker.request("create_program", {"id": "app_prog", "signature": "q -> a",
                                             "session_id": "session_alice"})["success"]
    return worker


def _app_state_intact(worker) -> None:
    assert worker.process.poll() is None, "the live worker exited"
    programs = worker.request("list_programs", {"session_id": "session_alice"})["result"]["programs"]
    assert [p["id"] for p in programs] == ["app_prog"]


def test_in_process_replay_leaves_the_consoles_programs_alone(tmp_path: Path) -> None:
    result = run_repl(tmp_path, f":lm mock\nqa = q -> a: int\n:replay {TRANSCRIPT}\n:programs\nqa(q='still here')\n")
    _, created, replayed, programs, executed = replies(result)
    assert created["success"]
    assert replayed["meta"] == "replay" and replayed["result"]["where"] == "a scratch engine"
    assert replayed["result"]["replies"] == replayed["result"]["total"] == FRAMES_IN
    assert [p["id"] for p in programs["result"]["programs"]] == ["qa"]
    assert executed["success"] and isinstance(executed["result"]["outputs"]["a"], int)


@pytest.mark.slow
def test_replay_from_an_attached_console_runs_in_a_scratch_worker(tmp_path: Path, live_worker) -> None:
    result = run_repl(tmp_path, f":replay {TRANSCRIPT}\nping\n", "--attach", str(live_worker.pid))
    replayed, ping = replies(result)
    assert replayed["result"]["where"] == "a scratch worker", replayed
    assert replayed["result"]["replies"] == FRAMES_IN and replayed["result"]["skipped"] == []
    assert ping["success"]
    _app_state_intact(live_worker)
    sessions = {s["session_id"] for s in live_worker.request("list_sessions")["result"]["sessions"]}
    assert "session_bob" not in sessions and "session_carol" not in sessions


@pytest.fixture
def hostile_transcript(tmp_path: Path, spawn_worker) -> Path:
    """A real recording (mock LM) that ends by cleaning two sessions up and shutting down."""
    path = tmp_path / "hostile.jsonl"
    recorder = spawn_worker("--no-control", "--record", str(path))
    for command, args in [("configure_lm", {"model": "mock"}),
                          ("create_program", {"id": "replayed", "signature": "q -> a", "session_id": "session_alice"}),
                          ("create_program", {"id": "mine", "signature": "q -> a", "session_id": "session_new"}),
                          ("execute_program", {"program_id": "mine", "inputs": {"q": "x"}, "session_id": "session_new"}),
                          ("cleanup_session", {"session_id": "session_alice"}),
                          ("cleanup_session", {"session_id": "session_new"}),
                          ("cleanup", {}), ("shutdown", {})]:
        assert recorder.request(command, args)["success"], command
    assert recorder.process.wait(10) == 0
    return path


@pytest.mark.slow
def test_into_attached_needs_confirmation_and_never_cleans_what_it_did_not_create(
        tmp_path: Path, live_worker, hostile_transcript: Path) -> None:
    refused = run_repl(tmp_path, f":replay {hostile_transcript} --into-attached\n", "--attach", str(live_worker.pid))
    [reply] = replies(refused)
    assert reply["success"] is False and reply["error_type"] == "refused"
    sessions = {s["session_id"] for s in live_worker.request("list_sessions")["result"]["sessions"]}
    assert "session_new" not in sessions  # nothing was sent

    confirmed = run_repl(tmp_path, f":replay {hostile_transcript} --into-attached\nping\n", "--attach",
                         str(live_worker.pid), "--yes")
    replayed, ping = replies(confirmed)
    result = replayed["result"]
    assert result["where"].startswith("attached worker") and result["replies"] == result["total"] == 8
    # Not sent: the whole-worker commands, and the cleanup of a session that was there before.
    assert sorted((s["command"], s["id"]) for s in result["skipped"]) == sorted(
        [("cleanup", 7), ("shutdown", 8), ("cleanup_session", 5)]), result["skipped"]
    assert ping["success"] and live_worker.process.poll() is None
    alice = live_worker.request("list_programs", {"session_id": "session_alice"})["result"]["programs"]
    assert sorted(p["id"] for p in alice) == ["app_prog", "replayed"]  # the app's program survived
    # session_new was the replay's own: its cleanup was sent, so nothing of it is left.
    assert live_worker.request("list_programs", {"session_id": "session_new"})["result"]["programs"] == []
    # The comparison is real: the skipped commands show as differences.
    assert {m["command"] for m in result["mismatches"]} >= {"cleanup", "shutdown", "cleanup_session"}


def test_read_only_console_sends_reads_and_refuses_everything_else(tmp_path: Path, live_worker) -> None:
    script = ("list_programs session_id=session_alice\nping\n"
              "create_program id=x signature='q -> a'\nshutdown\ncleanup\n:lm mock\n"
              f":replay {TRANSCRIPT} --into-attached\n")
    result = run_repl(tmp_path, script, "--attach", str(live_worker.pid), "--read-only", "--yes")
    listed, ping, *refused = replies(result)
    assert [p["id"] for p in listed["result"]["programs"]] == ["app_prog"] and ping["success"]
    assert [r["error_type"] for r in refused] == ["refused"] * 5, refused
    assert "Read-only console: create_program" in refused[0]["error"]
    assert result.returncode == 1
    _app_state_intact(live_worker)
    assert [p["id"] for p in live_worker.request("list_programs")["result"]["programs"]] == []


def test_read_only_without_attach_is_a_usage_error(tmp_path: Path) -> None:
    result = run_repl(tmp_path, "", "--read-only")
    assert result.returncode == 2 and "--read-only needs --attach" in result.stderr


def test_a_pipe_never_runs_a_destructive_command_on_an_attached_worker_unasked(tmp_path: Path,
                                                                             live_worker) -> None:
    result = run_repl(tmp_path, "cleanup\nshutdown\nping\n", "--attach", str(live_worker.pid))
    cleanup, shutdown, ping = replies(result)
    assert cleanup["error_type"] == shutdown["error_type"] == "refused"
    assert "--yes" in cleanup["suggestion"]
    assert ping["success"]
    _app_state_intact(live_worker)


@pytest.mark.slow
def test_terminal_asks_before_a_destructive_command_and_shows_replay_progress(tmp_path: Path, live_worker,
                                                                             monkeypatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # where the worker's socket is listed
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    console = Console(home, "--attach", str(live_worker.pid))
    try:
        console.send("cleanup_session session_id=session_alice\r")
        console.wait_for("You're about to run a destructive command: cleanup_session. "
                         "Do you want to proceed? [y/N]")
        console.run("n", "was not sent to the attached worker (answered no)")
        _app_state_intact(live_worker)
        console.send("delete_program program_id=app_prog session_id=session_alice\r")
        console.wait_for("destructive command: delete_program")
        console.run("y", "deleted")
        screen = console.run(f":replay {TRANSCRIPT}", "every reply matched")
        assert f"replay {TRANSCRIPT.name}: {FRAMES_IN}/{FRAMES_IN} replies" in screen
        assert "a scratch worker" in screen
        assert console.exit() == 0
    finally:
        if console.child.isalive():
            console.child.terminate(force=True)
    assert live_worker.process.poll() is None
    assert live_worker.request("list_programs", {"session_id": "session_alice"})["result"]["programs"] == []


@pytest.mark.slow
def test_a_spawn_console_replays_in_a_fresh_worker_of_the_same_command(tmp_path: Path) -> None:
    spawn = f"{sys.executable} -m dspex_cli serve --no-control"
    result = run_repl(tmp_path, f"qa = q -> a\n:replay {TRANSCRIPT}\n:programs\n", "--spawn", spawn)
    _, replayed, programs = replies(result)
    assert replayed["result"]["where"] == "a scratch worker"
    assert replayed["result"]["replies"] == FRAMES_IN
    assert [p["id"] for p in programs["result"]["programs"]] == ["qa"]  # the console's worker kept its state
