"""What the tests share besides pytest fixtures: paths, the worker environment and reply
helpers. Test files import from here (`from fixtures import ok`), never from conftest.

Importing it makes the test tree importable (openai_server, doc_examples, fuzz, the
helpers of test modules) and keeps the suite off the internet: DSPy's price-list
download is off, and no provider key from the developer's shell leaks into tests.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PLUGINS = TESTS / "plugins"
ELIXIR = TESTS / "elixir"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
for _name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
    os.environ.pop(_name, None)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Polls until predicate() is truthy and returns its value; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def worker_env(*import_paths: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker subprocess: this checkout (and any extra folders, such
    as the test plugins) importable, info logs, plus `extra` variables."""
    env = dict(os.environ)
    paths = [*(str(p) for p in import_paths), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("DSPEX_LOG_LEVEL", "info")
    env.update(extra)
    return env


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    """The result of a successful reply; fails the test with the reply otherwise."""
    assert reply["success"] is True, reply
    return reply["result"]


def sample_tools_worker(spawn: Callable[..., Any], server: Any, model: str) -> Any:
    """A worker with the sample tools plugin whose LM is `model` on the local server."""
    client = spawn("--plugin", "sample_tools", env=worker_env(PLUGINS))
    ok(client.request("configure_lm", {"model": model, "api_base": server.base_url,
                                       "api_key": "sk-test-secret-123456"}, timeout=60))
    return client


def copy_transcript_with(path: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Copies a transcript, letting `edit(entry)` change each decoded line after the header
    (the replay tests tamper with recorded answers this way)."""
    import orjson

    lines = path.read_bytes().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        entry = orjson.loads(line)
        edit(entry)
        out.append(orjson.dumps(entry))
    target.write_bytes(b"\n".join(out) + b"\n")
    return target
