"""Shared fixtures: the local OpenAI-compatible server and worker subprocesses."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_server import LocalOpenAIServer  # noqa: E402

from bridge.wire.client import WorkerClient, dspex_serve_argv  # noqa: E402

# Nothing in the suite may reach the internet: DSPy's price-list download is off,
# and no provider key from the developer's shell leaks into tests.
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


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    """A private XDG_RUNTIME_DIR per test, so tests never see each other's workers."""
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def openai_server() -> Iterator[LocalOpenAIServer]:
    """A local OpenAI-compatible server on 127.0.0.1 (real HTTP for dspy.LM)."""
    server = LocalOpenAIServer().start()
    yield server
    server.shutdown()


@pytest.fixture
def lm_args(openai_server: LocalOpenAIServer) -> dict[str, str]:
    """configure_lm args that point DSPy's real HTTP client at the local server."""
    return {"model": "openai/local-model", "api_base": openai_server.base_url, "api_key": "sk-test-secret-123456"}


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


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator:
    """Spawns `dspex serve` subprocesses (stdin held by the test, as a port would)."""
    workers: list[WorkerClient] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> WorkerClient:
        stderr = open(tmp_path / f"worker-{len(workers)}.stderr", "wb")
        client = WorkerClient(dspex_serve_argv(*args), env=env or worker_env(), stderr=stderr, cwd=str(ROOT))
        client.stderr_path = Path(stderr.name)  # type: ignore[attr-defined]
        workers.append(client)
        return client

    yield spawn
    for client in workers:
        client.close(timeout=5)


@pytest.fixture
def start(spawn_worker: Callable[..., WorkerClient], runtime: Path) -> Callable[..., WorkerClient]:
    """Spawns workers whose control sockets live in the test's own runtime dir, and waits
    until each has published its discovery file."""
    def start_worker(*args: str) -> WorkerClient:
        client = spawn_worker(*args, env=worker_env(XDG_RUNTIME_DIR=str(runtime)))
        assert client.request("ping")["success"]
        wait_for(lambda: (runtime / "dspex" / f"{client.pid}.json").exists())
        return client
    return start_worker
