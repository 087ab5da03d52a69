"""docs/elixir.md's two-way GenServer (streaming into a mailbox, Elixir tools and metric,
cancel on timeout and on a dead caller) runs through a real BEAM exactly as the page
writes it: tests/elixir/twoway_genserver.exs takes the blocks cut out of the page here."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from doc_examples import doc_test
from fixtures import ROOT, worker_env
from openai_server import LocalOpenAIServer
from test_docs_elixir import _dspex_executable
from test_elixir_client import _elixir

SCRIPT = ROOT / "tests" / "elixir" / "twoway_genserver.exs"
SUMMARY = re.compile(r"^elixir two-way docs: (\d+) passed, (\d+) failed$", re.M)


@pytest.mark.slow
def test_elixir_md_two_way_genserver_runs_through_the_beam(openai_server: LocalOpenAIServer, tmp_path: Path) -> None:
    elixir = _elixir()
    blocks = tmp_path / "blocks"
    blocks.mkdir()
    (blocks / "genserver.ex").write_text(doc_test("elixir.md", "elixir twoway-genserver").body)
    (blocks / "usage.exs").write_text(doc_test("elixir.md", "elixir twoway-usage").body)
    env = worker_env(DSPEX_LOG_LEVEL="warning", DSPEX_EXECUTABLE=_dspex_executable(tmp_path),
                     XDG_RUNTIME_DIR=str(tmp_path), HOME=os.environ.get("HOME", str(tmp_path)))
    completed = subprocess.run([elixir, str(SCRIPT), str(blocks), openai_server.base_url], cwd=str(tmp_path),
                               env=env, capture_output=True, text=True, timeout=180)
    transcript = f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr[-4000:]}"
    summary = SUMMARY.search(completed.stdout)
    assert summary is not None, f"the script printed no summary\n{transcript}"
    assert completed.returncode == 0 and int(summary.group(2)) == 0, transcript
    assert int(summary.group(1)) == 12, transcript  # every step ran all of its checks
    assert "sk-docs-two-way-secret" not in completed.stdout + completed.stderr


def test_the_page_s_genserver_has_what_the_script_relies_on() -> None:
    genserver = doc_test("elixir.md", "elixir twoway-genserver").body
    assert "Process.monitor(caller)" in genserver and '"cancel"' in genserver
    assert "Task.start" in genserver and '"callback_id"' in genserver
