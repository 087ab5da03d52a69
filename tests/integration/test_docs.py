"""The docs cannot drift from the code: the command table, the error codes, the result
keys, and every fenced example of protocol.md, plugins.md, inspect.md and elixir.md."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import doc_examples
from bridge import errors
from bridge.wire.client import WorkerClient
from bridge.errors import BridgeError
from fixtures import ROOT, ok, wait_for, worker_env
from doc_examples import doc_test, fences
from openai_server import LocalOpenAIServer

PROTOCOL = ROOT / "docs" / "protocol.md"


def test_protocol_md_has_the_current_command_table() -> None:
    proc = subprocess.run([sys.executable, "-m", "dspex_cli", "commands", "--markdown"], env=worker_env(),
                          cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    generated = proc.stdout.decode()
    assert generated.startswith("| command | scheduling | arguments | what it does |")
    doc = PROTOCOL.read_text()
    match = re.search(r"<!-- commands:start -->\n(.*?)<!-- commands:end -->", doc, re.S)
    assert match, "docs/protocol.md lost its command table markers"
    assert match.group(1) == generated, (
        "docs/protocol.md is out of date: regenerate its table with `python -m dspex_cli commands --markdown`")


def test_protocol_md_lists_every_error_type() -> None:
    doc = PROTOCOL.read_text()
    table = doc.split("## Error types", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    codes = {cls.error_type for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.BridgeError)}
    from bridge.adapters import default_adapters

    for adapter in default_adapters():  # each adapter's own codes (DSPy: program_not_found, ...)
        codes |= {cls.error_type for cls in adapter.error_types()}
    assert codes == documented


def test_generated_table_rows_have_four_cells() -> None:
    proc = subprocess.run([sys.executable, "-m", "dspex_cli", "commands", "--markdown"], env=worker_env(),
                          cwd=ROOT, capture_output=True, timeout=60, text=True)
    for line in proc.stdout.splitlines():
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        assert len(cells) == 4, line


# ---------------------------------------------------------------------------------------
# Every fenced example runs, or says why it cannot (tests/doc_examples.py has the markers).

# The doc-test labels each page must carry, and so the runners below that consume them;
# docs/elixir.md's elixir blocks are run by tests/integration/test_docs_elixir.py through the BEAM.
RUN_BY_TESTS = {
    "adapters.md": {"python notebook-adapter"},  # run by tests/adapters/python/test_python_adapter.py
    "protocol.md": {"json request", "json reply-success", "json reply-failure",
                    "json compile-request", "json program-document",  # tests/adapters/dspy/test_portable.py
                    "exchange evaluate"},  # run by tests/adapters/dspy/test_evaluate.py
    "plugins.md": {"python plugin-shape", "python raises", "sh loading-plugins", "python text-tools",
                   "sh serve-text-tools", "exchange text-tools",
                   "python tools-plugin",  # run by tests/adapters/dspy/test_tools.py
                   "python metric-plugin"},  # run by tests/adapters/dspy/test_evaluate.py
    "inspect.md": {"sh inspect-forms", "python control-client"},
    "elixir.md": {"elixir runtime-config", "elixir plain-port", "elixir genserver", "elixir application",
                  "elixir usage", "sh shim", "sh inspect-w1", "elixir running-pools", "elixir programs-across-nodes",
                  "elixir twoway-genserver", "elixir twoway-usage"},  # tests/integration/test_docs_elixir_twoway.py
}
# Values that differ from run to run: a number in the doc stands for any number here.
VARYING_NUMBERS = {"timestamp", "execution_time", "duration_ms", "uptime",
                   "prompt_tokens", "completion_tokens", "total_tokens"}
STREAMING_FLAGS = ("--follow", "--watch")


@pytest.mark.parametrize("page", sorted(RUN_BY_TESTS))
def test_every_example_is_run_or_marked_not_a_test(page: str) -> None:
    labels = []
    for fence in fences(page):
        where = f"docs/{page}:{fence.line}"
        assert fence.marker is not None, (
            f"{where}: put <!-- doc-test: KIND NAME --> (and a runner in tests/integration/test_docs.py) or "
            "<!-- not-a-test: REASON --> on the line before this fence")
        assert fence.label, f"{where}: the marker needs a label or a reason"
        if fence.marker == "doc-test":
            labels.append(fence.label)
    assert sorted(labels) == sorted(RUN_BY_TESTS[page]), (
        f"docs/{page}: labels without a runner, or runners without a label: {set(labels) ^ RUN_BY_TESTS[page]}")


def test_fence_reader_tells_the_markers_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- not-a-test: needs an API key -->\n```sh\nexport X=1\n```\n\n```python\nx = 1\n```\n"
                    "<!-- doc-test: sh one -->\n```sh\ntrue\n```\n")
    monkeypatch.setattr(doc_examples, "DOCS", tmp_path)
    found = doc_examples.fences("page.md")
    assert [(f.marker, f.label, f.lang, f.body) for f in found] == [
        ("not-a-test", "needs an API key", "sh", "export X=1\n"), (None, "", "python", "x = 1\n"),
        ("doc-test", "sh one", "sh", "true\n")]


def assert_matches(actual: Any, shown: Any, where: str = "reply") -> None:
    """`actual` (a real reply) is what the doc shows: "..." matches any value, a "..." key
    allows other keys, and numbers under VARYING_NUMBERS keys may differ."""
    if shown == "...":
        return
    if isinstance(shown, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        keys = set(shown) - {"..."}
        assert keys <= set(actual), f"{where}: the reply lacks {sorted(keys - set(actual))}: {actual}"
        if "..." not in shown:
            assert set(actual) == keys, f"{where}: the doc does not show {sorted(set(actual) - keys)}"
        for key in keys:
            if key in VARYING_NUMBERS and isinstance(shown[key], (int, float)):
                assert isinstance(actual[key], (int, float)) and not isinstance(actual[key], bool), where
            else:
                assert_matches(actual[key], shown[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(actual) == len(shown), f"{where}: {actual!r}"
        for index, (real, doc) in enumerate(zip(actual, shown)):
            assert_matches(real, doc, f"{where}[{index}]")
    else:
        assert actual == shown and type(actual) is type(shown), f"{where}: {actual!r} != {shown!r}"


def test_assert_matches_catches_differences() -> None:
    assert_matches({"a": 1, "timestamp": 2.5, "b": {"c": "x"}}, {"a": 1, "timestamp": 1.0, "b": "..."})
    assert_matches({"a": 1, "z": 2}, {"a": 1, "...": "..."})
    for actual, shown in [({"a": 2}, {"a": 1}), ({"a": 1, "z": 2}, {"a": 1}), ({}, {"a": "..."}),
                          ({"timestamp": "x"}, {"timestamp": 1.0}), ({"a": 1.0}, {"a": 1}), ([1], [1, 2])]:
        with pytest.raises(AssertionError):
            assert_matches(actual, shown)


def send_request(worker: WorkerClient, request: dict[str, Any]) -> dict[str, Any]:
    """Sends a doc's request as written (its id and extra top-level keys included)."""
    extra = {key: value for key, value in request.items() if key not in ("id", "command", "args")}
    return worker.submit(request["command"], request.get("args"), request_id=request["id"],
                         extra=extra).result(timeout=60)


def test_protocol_json_examples_are_what_a_worker_sends(spawn_worker: Any,
                                                         openai_server: LocalOpenAIServer) -> None:
    request = json.loads(doc_test("protocol.md", "json request").body)
    success = json.loads(doc_test("protocol.md", "json reply-success").body)
    failure = json.loads(doc_test("protocol.md", "json reply-failure").body)
    worker = spawn_worker()
    # The setup the page names: program qa, a question -> answer Predict; LM openai/gpt-4o-mini,
    # served here by the local OpenAI-compatible server through DSPy's real HTTP client.
    ok(worker.request("configure_lm", {"model": "openai/gpt-4o-mini", "api_base": openai_server.base_url,
                                       "api_key": "sk-docs-test-key", "cache": False}, timeout=60))
    ok(worker.request("create_program", {"id": "qa", "signature": "question -> answer"}, timeout=60))
    assert_matches(send_request(worker, request), success)
    ok(worker.request("delete_program", {"program_id": "qa"}, timeout=30))
    assert_matches(send_request(worker, request), failure)


def _documented_result_keys() -> dict[str, set[str]]:
    """The top-level keys named in protocol.md's result table (parentheses explain, not list)."""
    table = PROTOCOL.read_text().split("## Result keys", 1)[1].split("\n## ", 1)[0]
    keys: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `(\w+)` \|(.*)\|\s*$", table, re.M):
        command, cells = row
        keys[command] = set(re.findall(r"`(\w+)`", re.sub(r"\([^()]*\)", "", cells)))
    return keys


def test_protocol_result_keys_are_the_real_ones(spawn_worker: Any) -> None:
    documented = _documented_result_keys()
    worker = spawn_worker("--worker-id", "w-docs")
    session = {"session_id": "s"}
    calls = [("ping", {}), ("configure_lm", {"model": "mock"}),
             ("create_program", {"id": "qa", "signature": "question -> answer", **session}),
             ("execute_program", {"program_id": "qa", "inputs": {"question": "q"}, **session}),
             ("list_programs", session), ("get_program_info", {"program_id": "qa", **session}),
             ("update_session_data", {"key": "k", "value": 1, **session}),
             ("get_session_data", {"key": "k", **session}), ("list_sessions", {}), ("get_stats", {}),
             ("delete_program", {"program_id": "qa", **session}), ("cleanup_session", session),
             ("cleanup", {}), ("reset_state", {}), ("shutdown", {})]
    assert {name for name, _ in calls} == set(documented)
    for name, args in calls:
        result = ok(worker.request(name, args, timeout=60))
        assert set(result) == documented[name], (
            f"{name}: the table says {sorted(documented[name])}, the worker sent {sorted(result)}")


def _shell_env(tmp_path: Path, *import_paths: Path, **extra: str) -> dict[str, str]:
    """A shell that finds this interpreter's `dspex` first, as a user's would."""
    env = worker_env(*import_paths, **extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("XDG_RUNTIME_DIR", str(tmp_path))
    return env


def run_shell_example(body: str, cwd: Path, env: dict[str, str],
                      substitutions: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """Runs each command line of a shell example (comments dropped, the doc's placeholders
    replaced); a command must exit 0, and a --follow/--watch one must still be streaming
    after two seconds. Returns each line's stdout."""
    outputs: dict[str, str] = {}
    for raw in body.splitlines():
        line = re.sub(r"(^|\s+)#.*$", "", raw).strip()
        if not line:
            continue
        for placeholder, value in substitutions:
            line = line.replace(placeholder, value)
        if any(flag in line.split() for flag in STREAMING_FLAGS):
            process = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            try:
                time.sleep(2.0)
                assert process.poll() is None, f"{line!r} stopped streaming: {process.stderr.read()!r}"
            finally:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
                process.stderr.close()
            continue
        proc = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, f"{line!r} exited {proc.returncode}: {proc.stderr[-2000:]}"
        outputs[line] = proc.stdout
    return outputs


def _import_doc_module(tmp_path: Path, name: str, source: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugins_md_shape_example_is_a_working_plugin(spawn_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "shape_plugin.py").write_text(doc_test("plugins.md", "python plugin-shape").body)
    worker = spawn_worker("--plugin", "shape_plugin", env=worker_env(tmp_path))
    assert ok(worker.request("name", {"text": "t"}, timeout=10)) == {"anything": "JSON-able"}
    reply = worker.request("name", {}, timeout=10)
    assert reply["error_type"] == "invalid_arguments"


def test_plugins_md_error_example_raises_its_code(tmp_path: Path) -> None:
    with pytest.raises(BridgeError) as raised:
        _import_doc_module(tmp_path, "quota_example", doc_test("plugins.md", "python raises").body)
    assert raised.value.error_type == "quota_exceeded" and str(raised.value) == "Quota exceeded for this session"


def test_plugins_md_loading_lines_run(tmp_path: Path) -> None:
    (tmp_path / "my_plugins").mkdir()
    (tmp_path / "my_plugins" / "text_tools.py").write_text(doc_test("plugins.md", "python text-tools").body)
    (tmp_path / "other_module.py").write_text(doc_test("plugins.md", "python plugin-shape").body)
    outputs = run_shell_example(doc_test("plugins.md", "sh loading-plugins").body, tmp_path,
                                _shell_env(tmp_path, tmp_path))
    listing = next(out for line, out in outputs.items() if line.startswith("dspex commands"))
    assert "word_count" in listing and "summarize" in listing and "execute_program" in listing
    # `dspex serve` with its input closed loads the plugins, answers nothing and exits 0.
    assert all(out == "" for line, out in outputs.items() if "serve" in line)


def test_plugins_md_running_example(spawn_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "text_tools.py").write_text(doc_test("plugins.md", "python text-tools").body)
    run_shell_example(doc_test("plugins.md", "sh serve-text-tools").body, tmp_path, _shell_env(tmp_path))
    worker = spawn_worker("--plugin", "text_tools", env=worker_env(tmp_path))
    exchange = doc_test("plugins.md", "exchange text-tools").body.splitlines()
    requests = [json.loads(line[2:]) for line in exchange if line.startswith("> ")]
    replies = [json.loads(line[2:]) for line in exchange if line.startswith("< ")]
    assert len(requests) == len(replies) == 4 and len(exchange) == 8
    for request, shown in zip(requests, replies):
        assert_matches(send_request(worker, request), shown, f"reply to {request['command']}")


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_inspect_md_command_forms_run(start: Any, runtime: Path, tmp_path: Path) -> None:
    worker = start("--worker-id", "pool-worker-3")
    ok(worker.request("configure_lm", {"model": "mock"}, timeout=30))
    recorder = start("--record", str(tmp_path / "run.jsonl"))
    ok(recorder.request("ping"))
    recorder.close(timeout=10)
    substitutions = [("/run/user/1000/dspex/4242.sock", str(runtime / "dspex" / f"{worker.pid}.sock")),
                     ("4242", str(worker.pid)), ("[VIEW]", "")]
    outputs = run_shell_example(doc_test("inspect.md", "sh inspect-forms").body, tmp_path,
                                _shell_env(tmp_path, XDG_RUNTIME_DIR=str(runtime)), substitutions)
    assert f"{worker.pid}" in outputs["dspex inspect"] and "pool-worker-3" in outputs["dspex inspect"]
    assert any('"worker_id": "pool-worker-3"' in out or '"worker_id":"pool-worker-3"' in out
               for line, out in outputs.items() if "--json" in line)


def test_inspect_md_python_example_runs(start: Any, runtime: Path, tmp_path: Path) -> None:
    worker = start()
    code = doc_test("inspect.md", "python control-client").body.replace('"4242"', f'"{worker.pid}"')
    process = subprocess.Popen([sys.executable, "-u", "-c", code], cwd=tmp_path,
                               env=worker_env(XDG_RUNTIME_DIR=str(runtime)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        # The example ends in a subscription that prints each frame event: make some.
        def frame_printed() -> bool:
            ok(worker.request("ping", timeout=5))
            return process.poll() is not None or any(line.startswith("frame ") for line in printed)
        wait_for(frame_printed, timeout=20, interval=0.3)
        assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
    finally:
        process.kill()
        process.communicate(timeout=10)
    assert any(line.startswith("frame ") and '"ping"' in line.replace("'", '"') for line in printed), printed


def test_elixir_md_shim_line_runs(tmp_path: Path) -> None:
    (tmp_path / "priv" / "python").mkdir(parents=True)  # a DSPex app's tree
    run_shell_example(doc_test("elixir.md", "sh shim").body, tmp_path, _shell_env(tmp_path))
    launcher = (tmp_path / "priv" / "python" / "dspy_bridge.py").read_text()
    assert all(marker in launcher for marker in ("class DSPyBridge", "def handle_command", "def main()"))


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_elixir_md_inspect_lines_run(start: Any, runtime: Path, tmp_path: Path) -> None:
    worker = start("--worker-id", "w1")
    ok(worker.request("configure_lm", {"model": "mock"}, timeout=30))
    outputs = run_shell_example(doc_test("elixir.md", "sh inspect-w1").body, tmp_path,
                                _shell_env(tmp_path, XDG_RUNTIME_DIR=str(runtime)))
    assert "w1" in outputs["dspex inspect"] and str(worker.pid) in outputs["dspex inspect"]
