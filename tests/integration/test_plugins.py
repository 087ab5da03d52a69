"""Plugins: the @command decorator, --plugin, DSPEX_PLUGINS, broken plugins, the docs example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge import Engine, EngineConfig
from bridge.wire.client import dspex_serve_argv
from bridge.registry import Registry, command
from fixtures import ROOT, ok, worker_env

from fixtures import PLUGINS  # noqa: E402


def test_decorated_handler_runs_through_the_engine() -> None:
    registry = Registry()

    @command("double", registry=registry, scheduling="read")
    def double(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """Doubles n in the caller's session."""
        return {"n": args["n"] * 2, "session": ctx.session_id, "request": ctx.request_id}

    engine = Engine(EngineConfig(), registry=registry)
    try:
        reply = engine.call("double", {"n": 21, "session_id": "s"}, request_id=5)
        assert ok(reply) == {"n": 42, "session": "s", "request": 5}
        # A private registry adds to the core's commands: an engine always answers ping.
        assert ok(engine.call("ping"))["status"] == "ok"
        assert "double" not in Engine(EngineConfig(), adapters=[]).registry
    finally:
        engine.close()


def test_plugin_flag_registers_commands(spawn_worker: Any) -> None:
    worker = spawn_worker("--plugin", "sample_plugin", env=worker_env(PLUGINS))
    result = ok(worker.request("sample_echo", {"text": "hi", "session_id": "s1"}, timeout=10))
    assert result == {"text": "hi", "session_id": "s1", "plugin": "sample_plugin"}
    # Built-ins are still there next to the plugin's commands.
    assert ok(worker.request("ping", timeout=5))["status"] == "ok"


def test_dspex_plugins_env_registers_commands(spawn_worker: Any) -> None:
    worker = spawn_worker(env=worker_env(PLUGINS, DSPEX_PLUGINS=" sample_plugin , "))
    assert ok(worker.request("sample_echo", {"text": "env"}, timeout=10))["text"] == "env"
    reply = worker.request("sample_quota", timeout=10)
    assert reply["error_type"] == "quota_exceeded" and reply["error"] == "Quota exceeded for this session"
    reply = worker.request("sample_unserializable", timeout=10)
    assert reply["success"] is False and reply["error_type"] == "serialization_error"
    assert ok(worker.request("ping", timeout=5))["status"] == "ok"  # still serving


def test_same_plugin_from_flag_and_env_loads_once(spawn_worker: Any) -> None:
    worker = spawn_worker("--plugin", "sample_plugin", env=worker_env(PLUGINS, DSPEX_PLUGINS="sample_plugin"))
    assert ok(worker.request("sample_echo", {"text": "once"}, timeout=10))["text"] == "once"


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("module, reason", [
    ("broken_plugin", "RuntimeError: this plugin is broken on purpose"),
    ("no_such_plugin_module", "ModuleNotFoundError"),
])
def test_broken_plugin_is_a_clear_error_and_exit_2(how: str, module: str, reason: str) -> None:
    argv = dspex_serve_argv("--plugin", module) if how == "flag" else dspex_serve_argv()
    env = worker_env(PLUGINS, DSPEX_PLUGINS=module) if how == "env" else worker_env(PLUGINS)
    proc = subprocess.run(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert proc.returncode == 2
    stderr = proc.stderr.decode()
    assert "dspex serve: cannot load plugin:" in stderr and reason in stderr
    assert "Traceback" not in stderr
    assert proc.stdout == b""  # nothing on the protocol channel


def test_commands_listing_includes_plugin() -> None:
    proc = subprocess.run([sys.executable, "-m", "dspex_cli", "commands", "--markdown", "--plugin", "sample_plugin"],
                          env=worker_env(PLUGINS), cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "| `sample_echo` | read | `text`*: string | Echoes text back with the request's session. |" in text
    assert "`execute_program`" in text


def _docs_example() -> str:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    section = docs.split("## A complete example", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/plugins.md lost its example"
    return match.group(1)


def test_docs_example_plugin_works(spawn_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "text_tools.py").write_text(_docs_example())
    worker = spawn_worker("--plugin", "text_tools", env=worker_env(tmp_path))
    assert ok(worker.request("word_count", {"text": "one two three"}, timeout=10)) == {"words": 3, "chars": 13}
    reply = worker.request("word_count", {}, timeout=10)
    assert reply["error_type"] == "invalid_arguments" and reply["error"] == "word_count: 'text' is required (string)"
    reply = worker.request("word_count", {"text": "x" * 10_001}, timeout=10)
    assert reply["error_type"] == "text_too_long"
    assert ok(worker.request("add_note", {"note": "a", "session_id": "s"}, timeout=10))["notes"] == ["a"]
    assert ok(worker.request("add_note", {"note": "b", "session_id": "s"}, timeout=10))["notes"] == ["a", "b"]
    assert ok(worker.request("add_note", {"note": "c"}, timeout=10))["notes"] == ["c"]
    assert worker.request("summarize", {"text": "t"}, timeout=30)["error_type"] == "lm_not_configured"
    ok(worker.request("configure_lm", {"model": "mock"}, timeout=30))
    summary = ok(worker.request("summarize", {"text": "DSPy programs LMs."}, timeout=30))
    assert summary["model"] == "mock" and summary["summary"].startswith("mock summary ")
