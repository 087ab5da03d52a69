"""docs/elixir.md's GenServer runs through a real BEAM exactly as the page writes it.

The blocks are cut out of the page at test time, so the page and the test cannot drift:
tests/elixir/genserver_example.exs reads config/runtime.exs, opens a plain port, starts
MyApp.DSPy under MyApp.Application's supervisor, runs the page's calls (mock LM), kills
the worker with SIGKILL and checks {:worker_exited, 137} and the restart, then stops the
application and checks that terminate/2 shut the worker down.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fixtures import ROOT, worker_env
from doc_examples import doc_test
from openai_server import LocalOpenAIServer
from test_elixir_client import _elixir

SCRIPT = ROOT / "tests" / "elixir" / "genserver_example.exs"
SUMMARY = re.compile(r"^elixir docs: (\d+) passed, (\d+) failed$", re.M)
# Each block of the page, by the name of its doc-test marker, and the file the script reads.
BLOCKS = {"runtime-config": "runtime.exs", "plain-port": "plain_port.exs", "genserver": "genserver.ex",
          "application": "application.ex", "usage": "usage.exs"}


def _dspex_executable(tmp_path: Path) -> str:
    """The dspex console script of this interpreter, as a release would name it; a venv
    without one (a source checkout) gets an exec wrapper, which keeps the worker's pid."""
    script = Path(sys.executable).with_name("dspex")
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    wrapper = tmp_path / "dspex"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m dspex_cli "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _frames(transcript: Path) -> list[dict]:
    records = [orjson.loads(line) for line in transcript.read_bytes().splitlines() if line.strip()]
    return [record for record in records if record.get("type") == "frame"]


@pytest.mark.slow
def test_elixir_md_genserver_runs_supervised_through_the_beam(openai_server: LocalOpenAIServer,
                                                                tmp_path: Path) -> None:
    elixir = _elixir()
    blocks = tmp_path / "blocks"
    blocks.mkdir()
    for label, file_name in BLOCKS.items():
        (blocks / file_name).write_text(doc_test("elixir.md", f"elixir {label}").body)
    transcripts = tmp_path / "transcripts"
    env = worker_env(DSPEX_LOG_LEVEL="warning", DSPEX_EXECUTABLE=_dspex_executable(tmp_path),
                     DSPEX_RECORD=f"{transcripts}/", XDG_RUNTIME_DIR=str(tmp_path),
                     HOME=os.environ.get("HOME", str(tmp_path)))
    completed = subprocess.run([elixir, str(SCRIPT), str(blocks), "--slow-api-base", openai_server.base_url],
                               cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240)
    output = completed.stdout + completed.stderr
    transcript = f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr[-4000:]}"
    summary = SUMMARY.search(completed.stdout)
    assert summary is not None, f"the script printed no summary\n{transcript}"
    assert completed.returncode == 0 and int(summary.group(2)) == 0, transcript
    assert int(summary.group(1)) == 15, transcript  # every step ran all of its checks
    # The supervisor's report names the real reason; terminate/2 did not crash on a closed port.
    assert "{:worker_exited, 137}" in output, transcript
    assert "ArgumentError" not in output, transcript

    # One transcript per worker: the plain port's, the killed one's, the restarted one's.
    files = sorted(transcripts.glob("*.jsonl"))
    assert len(files) == 3, files
    shut_down = [path for path in files
                 if any(f["dir"] == "in" and f["frame"].get("command") == "shutdown"
                        and f["frame"].get("id") == 999_999 for f in _frames(path))]
    # Only the restarted worker, stopped with the application, got terminate/2's shutdown.
    assert len(shut_down) == 1, files
    replies = [f["frame"] for f in _frames(shut_down[0]) if f["dir"] == "out"]
    assert any(r["id"] == 999_999 and r["result"]["status"] == "shutting_down" for r in replies)


def test_elixir_md_blocks_are_the_ones_the_script_reads() -> None:
    """The GenServer on the page has the fixes the script relies on (a guard against a
    page edit that keeps the markers but drops the behaviour)."""
    genserver = doc_test("elixir.md", "elixir genserver").body
    assert "Process.flag(:trap_exit, true)" in genserver
    assert "{:stop, {:worker_exited, status}" in genserver
    assert "Port.info(port) != nil" in genserver
    assert "def child_spec(opts)" in genserver
    assert "find_executable" not in genserver
    usage = doc_test("elixir.md", "elixir usage").body
    assert '"model" => "mock"' in usage



def test_elixir_md_running_pools_gives_every_worker_its_default_lm(tmp_path: Path) -> None:
    block = tmp_path / "running_pools.exs"
    block.write_text(doc_test("elixir.md", "elixir running-pools").body)
    env = worker_env(DSPEX_LOG_LEVEL="warning", DSPEX_EXECUTABLE=_dspex_executable(tmp_path),
                     XDG_RUNTIME_DIR=str(tmp_path), HOME=os.environ.get("HOME", str(tmp_path)))
    env.pop("OPENAI_API_KEY", None)
    completed = subprocess.run([_elixir(), str(ROOT / "tests" / "elixir" / "running_pools.exs"), str(block)],
                               capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert SUMMARY.search(completed.stdout).groups() == ("2", "0"), completed.stdout


@pytest.mark.slow
def test_elixir_md_compiled_programs_travel_across_two_nodes(openai_server: LocalOpenAIServer,
                                                             tmp_path: Path) -> None:
    """Two Erlang nodes on loopback, each owning a worker: the compiled program's document
    goes from node A to node B in a message and serves the same outputs there."""
    block = tmp_path / "programs_across_nodes.ex"
    block.write_text(doc_test("elixir.md", "elixir programs-across-nodes").body)
    env = worker_env(DSPEX_LOG_LEVEL="warning", DSPEX_EXECUTABLE=_dspex_executable(tmp_path),
                     XDG_RUNTIME_DIR=str(tmp_path), HOME=os.environ.get("HOME", str(tmp_path)))
    completed = subprocess.run([_elixir(), str(ROOT / "tests" / "elixir" / "programs_across_nodes.exs"), str(block),
                                openai_server.base_url], capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert SUMMARY.search(completed.stdout).groups() == ("4", "0"), completed.stdout
