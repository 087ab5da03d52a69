"""`dspex repl` with stdin not a terminal: one command per line in, one JSON line out,
run as real subprocesses (in-process engine, --spawn, --attach)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fixtures import ROOT, worker_env

SECRET = "sk-test-secret-123456"  # the api_key of the lm_args fixture


def repl_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    return worker_env(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_STATE_HOME=str(home / "state"),
                      XDG_RUNTIME_DIR=str(tmp_path / "run"), **extra)


def run_repl(tmp_path: Path, text: str, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "run").mkdir(exist_ok=True, mode=0o700)
    return subprocess.run([sys.executable, "-m", "dspex_cli", "repl", *args], input=text, capture_output=True,
                          text=True, env=repl_env(tmp_path, **env), cwd=str(tmp_path), timeout=timeout)


def replies(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_printf_ping_pipe(tmp_path: Path) -> None:
    result = run_repl(tmp_path, "ping\n")
    assert result.returncode == 0, result.stderr
    [reply] = replies(result)
    assert reply["success"] is True and reply["result"]["status"] == "ok" and reply["id"] == 1
    assert "Traceback" not in result.stderr


def test_an_unfinished_line_does_not_swallow_the_commands_after_it(tmp_path: Path) -> None:
    result = run_repl(tmp_path, '{bad json\nping\nexecute_program {"program_id": "p"\nget_stats\n')
    out = replies(result)
    assert len(out) == 4, result.stdout
    assert out[0]["success"] is False and out[2]["success"] is False
    assert out[1]["result"]["status"] == "ok"
    assert "command_count" in out[3]["result"]


def test_one_json_line_per_command_and_errors_as_json(tmp_path: Path) -> None:
    script = "\n".join([
        "ping",
        "pnig",
        "configure_lm modle=mock",
        ":lm mock",
        "qa = question -> answer: int",
        'qa(question="hello")',
        'execute_program {"program_id": "qa",',
        '  "inputs": {"question": "multi"}}',
        "execute_program program_id=nope",
        ":session s2",
        "list_programs",
        ":programs",
        'create_program {"signature": ',
    ]) + "\n"
    result = run_repl(tmp_path, script)
    out = replies(result)
    assert len(out) == 12, result.stdout
    assert out[0]["success"]
    assert out[1] == {"success": False, "error": "Unknown command: pnig", "error_type": "parse_error",
                      "suggestion": "did you mean 'ping'?"}
    assert out[2]["error"] == "configure_lm has no argument 'modle'" and "'model'" in out[2]["suggestion"]
    assert out[3]["result"]["model"] == "mock"
    assert out[4]["result"]["signature_def"] == "question: str -> answer: int"
    assert isinstance(out[5]["result"]["outputs"]["answer"], int)
    assert out[6]["success"] and isinstance(out[6]["result"]["outputs"]["answer"], int)
    assert out[7]["error_type"] == "program_not_found" and ":programs" in out[7]["suggestion"]
    assert out[8]["meta"] == "info" and out[8]["result"] == {"session": "s2"}
    assert out[9]["result"]["session_id"] == "s2" and out[9]["result"]["programs"] == []
    assert out[10]["meta"] == "programs" and out[10]["result"]["session_id"] == "s2"
    assert out[11]["success"] is False and out[11]["error_type"] == "parse_error"  # input ended inside the JSON
    assert result.returncode == 1  # something failed
    assert "Traceback" not in result.stderr


def test_a_program_against_the_local_openai_server(tmp_path: Path, lm_args: dict, openai_server) -> None:
    before = len(openai_server.requests)
    script = (f":lm {lm_args['model']} api_base={lm_args['api_base']} api_key={lm_args['api_key']}\n"
              "count = text -> length: int\n"
              'count(text="abcdefg")\n'
              ":history 1\n")
    result = run_repl(tmp_path, script)
    assert result.returncode == 0, result.stdout + result.stderr
    configured, created, executed, history = replies(result)
    assert configured["result"]["lm"]["api_key_set"] is True
    # The server answers an int field with the total length of the inputs: 7 here.
    assert executed["result"]["outputs"] == {"length": 7}
    assert executed["result"]["usage"]["total_tokens"] > 0
    assert len(openai_server.requests) == before + 1
    [call] = history["result"]
    assert call["model"] == lm_args["model"] and "abcdefg" in call["prompt"]
    assert SECRET not in result.stdout and SECRET not in result.stderr


def test_missing_lm_gets_the_how_to(tmp_path: Path) -> None:
    result = run_repl(tmp_path, "qa = q -> a\nqa(q='x')\n")
    error = replies(result)[1]
    assert error["error_type"] == "lm_not_configured" and ":lm mock" in error["suggestion"]


def test_spawned_worker_target(tmp_path: Path) -> None:
    command = f"{sys.executable} -m dspex_cli serve"
    result = run_repl(tmp_path, "ping\n:lm mock\nqa = q -> a: int\nqa(q='four')\n", "--spawn", command)
    assert result.returncode == 0, result.stdout + result.stderr
    ping, _, _, executed = replies(result)
    assert ping["result"]["worker_id"] != replies(run_repl(tmp_path, "ping\n"))[0]["result"]["worker_id"]
    assert isinstance(executed["result"]["outputs"]["a"], int)


def test_attach_to_a_live_worker_and_to_a_dead_one(tmp_path: Path, spawn_worker) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    worker = spawn_worker(env=repl_env(tmp_path))
    assert worker.request("ping")["success"]
    worker.request("configure_lm", {"model": "mock"})
    result = run_repl(tmp_path, "ping\nqa = q -> a\nqa(q='x')\n", "--attach", str(worker.pid))
    assert result.returncode == 0, result.stdout + result.stderr
    ping, created, executed = replies(result)
    assert [r["id"] for r in (ping, created, executed)] == [1, 2, 3]  # the console's ids, kept by exec
    assert ping["result"]["worker_id"] == worker.request("ping")["result"]["worker_id"]
    assert executed["result"]["outputs"]["a"]
    # What the console did happened inside the worker.
    programs = worker.request("list_programs")["result"]["programs"]
    assert [p["id"] for p in programs] == ["qa"]

    dead = run_repl(tmp_path, "ping\nping\n", "--attach", "999999")
    assert dead.returncode == 1
    first, second = replies(dead)
    assert first["success"] is False and "dspex inspect" in first["suggestion"]
    assert second["success"] is False  # still answering, not exited
    assert "Traceback" not in dead.stderr


def test_usage_errors_of_the_command_line(tmp_path: Path) -> None:
    result = run_repl(tmp_path, "", "--attach", "1", "--spawn", "x")
    assert result.returncode == 2 and "not allowed with" in result.stderr
    assert "Traceback" not in result.stderr


def test_plugin_commands_are_known_and_a_broken_plugin_is_reported(tmp_path: Path) -> None:
    plugins = str(ROOT / "tests" / "plugins")
    result = run_repl(tmp_path, 'sample_echo text="a b c"\nsample_echo txt=1\n', "--plugin", "sample_plugin",
                      "--plugin", "broken_plugin", PYTHONPATH=plugins + ":" + str(ROOT))
    echoed, misspelt = replies(result)
    assert echoed["result"]["text"] == "a b c"
    assert misspelt["error"] == "sample_echo has no argument 'txt'" and "'text'" in misspelt["suggestion"]
    assert "plugin broken_plugin not loaded" in result.stderr and "Traceback" not in result.stderr
