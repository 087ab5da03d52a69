"""The adapter seam: a framework plugs in as an Adapter, and the core knows no DSPy.

A tiny adapter (tests/plugins/tally) is served through a real `dspex serve` with nothing
of DSPy loaded; a static check proves that no module of bridge/ outside
bridge/adapters/dspy/ imports DSPy or the DSPy adapter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from bridge import Engine, EngineConfig
from fixtures import ROOT, ok, worker_env

from fixtures import PLUGINS  # noqa: E402
DSPY_ADAPTER = ROOT / "bridge" / "adapters" / "dspy"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_core_module_imports_dspy_or_the_dspy_adapter() -> None:
    offenders = []
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        if DSPY_ADAPTER in path.parents:
            continue
        for name in _imports(path):
            if name == "dspy" or name.startswith(("dspy.", "litellm", "bridge.adapters.dspy")):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def test_the_check_would_see_an_import() -> None:
    assert "bridge.adapters.dspy.loader" in _imports(DSPY_ADAPTER / "commands.py")
    assert "dspy" in _imports(PLUGINS / "litellm_debug.py")  # an import inside a function counts too


def test_two_engines_share_no_adapter_state() -> None:
    first, second = Engine(EngineConfig(worker_id="a")), Engine(EngineConfig(worker_id="b"))
    try:
        assert first.adapter("dspy") is not second.adapter("dspy")
        ok(first.call("configure_lm", {"model": "mock"}))
        assert first.adapter("dspy").default_lm is not None and second.adapter("dspy").default_lm is None
        assert first.registry is not second.registry
    finally:
        first.close()
        second.close()


def test_an_engine_without_adapters_still_serves_the_core() -> None:
    engine = Engine(EngineConfig(), adapters=[])
    try:
        assert set(ok(engine.call("ping"))) == {"status", "timestamp", "uptime", "mode", "worker_id"}
        assert engine.call("configure_lm", {"model": "mock"})["error_type"] == "unknown_command"
        assert ok(engine.call("cleanup")) == {"status": "cleaned"}
    finally:
        engine.close()


def test_a_tiny_adapter_through_a_real_worker_without_dspy(spawn_worker) -> None:
    worker = spawn_worker("--plugin", "tiny_adapter", "--adapters", "tally", "--no-control",
                          env=worker_env(PLUGINS))
    ping = ok(worker.request("ping"))
    assert ping["tally_ready"] is True and "dspy_loaded" not in ping
    assert ok(worker.request("tally_add", {"n": 2, "session_id": "a"}))["total"] == 2
    assert ok(worker.request("tally_add", {"n": 5, "session_id": "a"}))["total"] == 7
    assert ok(worker.request("tally_add", {"n": 1, "session_id": "b"}))["total"] == 1
    assert worker.request("tally_add", {"n": 2000, "session_id": "b"})["error_type"] == "tally_overflow"
    sessions = {s["session_id"]: s["tally"] for s in ok(worker.request("list_sessions"))["sessions"]}
    assert sessions == {"a": 7, "b": 1}
    stats = ok(worker.request("get_stats"))
    assert stats["tally_sessions"] == 2 and stats["dspy_imported"] is False and "programs_count" not in stats
    assert worker.request("configure_lm", {"model": "mock"})["error_type"] == "unknown_command"
    assert ok(worker.request("cleanup_session", {"session_id": "a"})) == {
        "status": "cleaned", "session_id": "a", "tally_dropped": 7}
    assert ok(worker.request("cleanup"))["tally_dropped"] == 1
    assert ok(worker.request("reset_state"))["tallies_reset"] == 1
    # Some time for a background warm-up to start, had anything scheduled one.
    assert ok(worker.request("get_stats"))["dspy_imported"] is False
    assert worker.close() == 0


def test_an_unknown_adapter_name_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "dspex_cli", "serve", "--adapters", "nope"], cwd=ROOT,
                          env=worker_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.PIPE)
    assert done.returncode == 2 and "unknown adapter 'nope'" in done.stderr and "dspy" in done.stderr
