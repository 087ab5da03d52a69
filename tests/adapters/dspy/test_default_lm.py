"""A worker's own default LM (`dspex serve --lm MODEL`, DSPEX_LM_*), through real subprocesses."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from bridge.wire.client import dspex_serve_argv
from fixtures import ROOT, ok, worker_env

KEY = "sk-default-lm-env-key-4242"


def test_flag_gives_the_worker_an_lm_without_configure_lm(spawn_worker: Any, openai_server: Any) -> None:
    env = worker_env(DSPEX_LM_API_BASE=openai_server.base_url, DSPEX_LM_TEMPERATURE="0.3",
                     DSPEX_LM_NUM_RETRIES="0", OPENAI_API_KEY=KEY, DSPEX_LOG_LEVEL="debug")
    worker = spawn_worker("--lm", "openai/local-model", env=env)
    ping = ok(worker.request("ping", timeout=5))
    assert ping["lm_model"] == "openai/local-model"
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}, timeout=30))
    before = len(openai_server.requests)
    result = ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "dusk"}}, timeout=30))
    # The local server computes its answer from the request: the default LM really was called.
    assert result["outputs"] == {"answer": "answer for question=dusk"}
    sent = openai_server.requests[before:]
    assert len(sent) == 1 and sent[0]["authorization"] == f"Bearer {KEY}"
    assert sent[0]["body"]["model"] == "local-model" and sent[0]["body"]["temperature"] == 0.3
    assert ok(worker.request("get_stats", timeout=5))["lm_model"] == "openai/local-model"
    # configure_lm still overrides it; reset_state returns to it.
    ok(worker.request("configure_lm", {"model": "mock"}, timeout=30))
    assert ok(worker.request("ping", timeout=5))["lm_model"] == "mock"
    ok(worker.request("reset_state", timeout=30))
    assert ok(worker.request("ping", timeout=5))["lm_model"] == "openai/local-model"
    assert worker.close() == 0
    stderr = worker.stderr_path.read_text()
    assert "DEBUG" in stderr and KEY not in stderr  # remembered as a secret, never logged


def test_env_lm_is_built_lazily(spawn_worker: Any, openai_server: Any) -> None:
    env = worker_env(DSPEX_LM="openai/local-model", DSPEX_LM_API_BASE=openai_server.base_url,
                     OPENAI_API_KEY=KEY)
    worker = spawn_worker("--no-warm", env=env)
    assert ok(worker.request("ping", timeout=5))["lm_model"] == "openai/local-model"
    # Start-up did not import DSPy for it.
    assert ok(worker.request("ping", timeout=5))["dspy_loaded"] is False
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}, timeout=30))
    result = ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "dawn"}}, timeout=30))
    assert result["outputs"] == {"answer": "answer for question=dawn"} and result["model"] == "openai/local-model"


def test_without_a_default_there_is_no_lm(spawn_worker: Any) -> None:
    worker = spawn_worker("--no-warm")
    assert "lm_model" not in ok(worker.request("ping", timeout=5))
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}, timeout=30))
    reply = worker.request("execute_program", {"program_id": "p", "inputs": {"question": "q"}}, timeout=30)
    assert reply["error_type"] == "lm_not_configured" and "No LM is loaded." in reply["error"]


@pytest.mark.parametrize("argv, env, fragment", [
    (["--lm", "not a model"], {}, "must not contain whitespace"),
    (["--lm", "mystery-model"], {}, "Cannot tell the provider"),
    ([], {"DSPEX_LM": "openai/x", "DSPEX_LM_TEMPERATURE": "hot"}, "DSPEX_LM_TEMPERATURE ('temperature') must be a number"),
    ([], {"DSPEX_LM": "openai/x", "DSPEX_LM_MAX_TOKENS": "-5"}, "DSPEX_LM_MAX_TOKENS"),
    ([], {"DSPEX_LM": "openai/x", "DSPEX_LM_TIMEOUT": "0"}, "DSPEX_LM_TIMEOUT"),
    ([], {"DSPEX_LM": "openai/x", "DSPEX_LM_NUM_RETRIES": "99"}, "DSPEX_LM_NUM_RETRIES"),
    ([], {"DSPEX_LM": "openai/x", "DSPEX_LM_API_BASE": "ftp://x"}, "DSPEX_LM_API_BASE"),
    ([], {"DSPEX_LM_TEMPERATURE": "0.5"}, "no model"),
])
def test_invalid_default_lm_exits_2(argv: list[str], env: dict[str, str], fragment: str) -> None:
    proc = subprocess.run(dspex_serve_argv(*argv), env=worker_env(**env), cwd=ROOT, stdin=subprocess.PIPE,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "invalid default LM" in proc.stderr and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
