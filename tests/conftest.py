"""pytest fixtures: the local OpenAI-compatible server and worker subprocesses. Plain
helpers (paths, worker_env, ok, wait_for) live in fixtures.py."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path


import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import ROOT, wait_for, worker_env  # noqa: E402  (the suite's shared helpers)
from openai_server import LocalOpenAIServer  # noqa: E402

from bridge.wire.client import WorkerClient, dspex_serve_argv  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (CI does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests (optimizers) run in CI and with --slow; the default suite stays short."""
    import os

    if config.getoption("--slow") or os.environ.get("DSPEX_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --slow or DSPEX_SLOW=1 (CI runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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


def _spawner(directory: Path) -> Iterator[Callable[..., WorkerClient]]:
    """Spawns `dspex serve` subprocesses (stdin held by the test, as a port would), their
    stderr kept in `directory`; closes them all at the end."""
    workers: list[WorkerClient] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> WorkerClient:
        stderr = open(directory / f"worker-{len(workers)}.stderr", "wb")
        client = WorkerClient(dspex_serve_argv(*args), env=env or worker_env(), stderr=stderr, cwd=str(ROOT))
        client.stderr_path = Path(stderr.name)  # type: ignore[attr-defined]
        workers.append(client)
        return client

    yield spawn
    for client in workers:
        client.close(timeout=5)


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerClient]]:
    """Spawns `dspex serve` subprocesses for one test."""
    yield from _spawner(tmp_path)


@pytest.fixture(scope="module")
def module_spawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WorkerClient]]:
    """Spawns workers that a module's tests share: for parametrised refusals, each of which
    would otherwise pay a worker's start and DSPy's import (about a second) to be refused."""
    yield from _spawner(tmp_path_factory.mktemp("shared-workers"))


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
