"""A real BEAM client walks the wire contract: tests/elixir/contract_client.exs under `elixir`.

The Elixir script opens `dspex serve` as an Erlang port ({:packet, 4}, JSON through
Debian's erlang-jiffy), exactly as the DSPex library does, and talks to the local
OpenAI-compatible server of this suite, so DSPy's real HTTP path answers its calls.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import ROOT, worker_env
from openai_server import LocalOpenAIServer

SCRIPT = ROOT / "tests" / "elixir" / "contract_client.exs"
SUMMARY = re.compile(r"^elixir contract: (\d+) passed, (\d+) failed$", re.M)


def _elixir() -> str:
    """The elixir executable; a missing one skips locally but fails in CI, which must run this."""
    found = shutil.which("elixir")
    if found is None:
        message = "elixir is not installed (apt-get install elixir erlang-jiffy)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the BEAM contract test")
        pytest.skip(message)
    return found


@pytest.mark.slow
def test_beam_client_walks_the_contract(openai_server: LocalOpenAIServer, tmp_path: Path) -> None:
    elixir = _elixir()
    requests_before = len(openai_server.requests)
    env = worker_env(DSPEX_LOG_LEVEL="warning", HOME=os.environ.get("HOME", str(tmp_path)))
    completed = subprocess.run(
        [elixir, str(SCRIPT), "--python", sys.executable, "--api-base", openai_server.base_url,
         "--root", str(ROOT)],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=240,
    )
    transcript = f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr[-4000:]}"
    summary = SUMMARY.search(completed.stdout)
    assert summary is not None, f"the Elixir client printed no summary\n{transcript}"
    passed, failed = int(summary.group(1)), int(summary.group(2))
    assert completed.returncode == 0 and failed == 0, transcript
    # The walk has over a hundred checks; a much shorter run means sections were skipped.
    assert passed >= 100, transcript

    # The executions really reached the local server through DSPy's HTTP client.
    served = openai_server.requests[requests_before:]
    models = {request["body"].get("model") for request in served}
    assert {"local-model", "session-model", "delay-500"} <= models, models
    # The key travels only in the Authorization header to the LM, never back to Elixir.
    assert "sk-elixir-contract-secret" not in completed.stdout
    assert "sk-elixir-contract-secret" not in completed.stderr


def test_beam_client_reports_a_failed_check(tmp_path: Path) -> None:
    """The script fails loudly when the worker misbehaves (here: a worker that cannot start)."""
    elixir = _elixir()
    broken_python = tmp_path / "python"
    broken_python.write_text("#!/bin/sh\nexit 3\n")
    broken_python.chmod(0o755)
    completed = subprocess.run(
        [elixir, str(SCRIPT), "--python", str(broken_python), "--api-base", "http://127.0.0.1:9/v1",
         "--root", str(ROOT)],
        cwd=str(ROOT), env=worker_env(), capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode != 0, completed.stdout
    summary = SUMMARY.search(completed.stdout)
    assert summary is not None and int(summary.group(2)) > 0, completed.stdout
    assert "worker exited with status 3" in completed.stdout
