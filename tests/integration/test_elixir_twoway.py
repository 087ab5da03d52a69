"""A real BEAM client speaks two-way frames: tests/elixir/twoway_client.exs under `elixir`.

Through an Erlang port ({:packet, 4}, jiffy) against the local OpenAI-compatible server:
streamed events, a ReAct program whose two tools are Elixir functions, an evaluate with an
Elixir metric, a cancelled slow request, an expired deadline, and no event for a request
that asked for none.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import ROOT, worker_env
from openai_server import LocalOpenAIServer
from test_elixir_client import _elixir

SCRIPT = ROOT / "tests" / "elixir" / "twoway_client.exs"
SUMMARY = re.compile(r"^elixir two-way: (\d+) passed, (\d+) failed$", re.M)


@pytest.mark.slow
def test_beam_client_speaks_two_way_frames(openai_server: LocalOpenAIServer, tmp_path: Path) -> None:
    elixir = _elixir()
    before = len(openai_server.requests)
    env = worker_env(DSPEX_LOG_LEVEL="warning", HOME=os.environ.get("HOME", str(tmp_path)))
    completed = subprocess.run([elixir, str(SCRIPT), "--python", sys.executable, "--api-base", openai_server.base_url,
                                "--root", str(ROOT)], cwd=str(ROOT), env=env, capture_output=True, text=True,
                               timeout=180)
    transcript = f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr[-4000:]}"
    summary = SUMMARY.search(completed.stdout)
    assert summary is not None, f"the Elixir client printed no summary\n{transcript}"
    passed, failed = int(summary.group(1)), int(summary.group(2))
    assert completed.returncode == 0 and failed == 0, transcript
    assert passed >= 30, transcript  # far fewer means a section stopped early
    # The agent's prompts reached the local server: its tools' answers were in them.
    prompts = [str(r["body"].get("messages")) for r in openai_server.requests[before:]]
    assert any("WHERE IS BOB" in prompt for prompt in prompts)
    assert "sk-elixir-two-way-secret" not in completed.stdout + completed.stderr
