"""`dspex shim`: a launcher that passes DSPex's environment check and serves frames."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge.wire.client import WorkerClient
from fixtures import ROOT, worker_env


def shim_text() -> str:
    proc = subprocess.run([sys.executable, "-m", "dspex_cli", "shim"], env=worker_env(), cwd=ROOT,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def test_shim_passes_the_dspex_environment_check() -> None:
    text = shim_text()
    # The three strings DSPex greps its bridge script for.
    for needle in ("class DSPyBridge", "def handle_command", "def main()"):
        assert needle in text
    assert text.startswith(f"#!{sys.executable}\n")
    compile(text, "shim.py", "exec")


def test_shim_script_serves_frames(tmp_path: Path) -> None:
    script = tmp_path / "dspy_bridge.py"
    script.write_text(shim_text())
    stderr = open(tmp_path / "shim.stderr", "wb")
    # Run from elsewhere, as DSPex would: only the interpreter ties it to this install.
    env = worker_env()
    env.pop("PYTHONPATH", None)
    with WorkerClient([sys.executable, str(script), "--mode", "pool-worker", "--worker-id", "shimmed"],
                      env=env, stderr=stderr, cwd=str(tmp_path)) as worker:
        reply = worker.request("ping", {"initialization": True}, request_id=0, timeout=10)
        assert reply["success"] and reply["result"]["status"] == "ok"
        assert reply["result"]["mode"] == "pool-worker" and reply["result"]["worker_id"] == "shimmed"
        assert worker.request("get_stats", timeout=10)["result"]["command_count"] == 2
    assert worker.process.returncode == 0


def test_shim_output_option_writes_an_executable(tmp_path: Path) -> None:
    target = tmp_path / "bridge.py"
    proc = subprocess.run([sys.executable, "-m", "dspex_cli", "shim", "--output", str(target)], env=worker_env(),
                          cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == shim_text()
    assert os.access(target, os.X_OK)
    with WorkerClient([str(target)], env=worker_env(), stderr=subprocess.DEVNULL) as worker:
        assert worker.request("ping", timeout=10)["result"]["status"] == "ok"
